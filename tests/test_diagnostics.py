"""refimpl.tiny.diagnostics: hand-computed small cases, the properties each measure promises
(uniform weights have entropy log N and mass ratio 1, one-hot weights entropy 0, JS is
symmetric, bounded and below the total variation), and argument errors that say what is wrong."""

import numpy as np
import pytest
from helpers import batch_shapes, seeds
from hypothesis import given
from hypothesis import strategies as st

from refimpl.tiny.diagnostics import (
    attention_entropy,
    attention_mass,
    latent_mass,
    mass_ratio,
    mean_off_diagonal,
    media_attention,
    pairwise_jensen_shannon,
    patch_coverage,
    quadrant_coverage,
)
from refimpl.tiny.model import patchify

EXACT = 1e-12  # float64 sums of a few terms


def distributions(rng, shape, zeros=0.0):
    """Random rows (last axis) summing to 1, a share `zeros` of their entries exactly 0 (never a whole row)."""
    p = rng.random(shape) ** 3
    p[rng.random(shape) < zeros] = 0.0
    p[..., 0] += p.sum(axis=-1) == 0  # a row left with nothing gets its first key back
    return p / p.sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------- patch_coverage


def test_patch_coverage_hand_computed():
    mask = np.zeros((4, 6), bool)
    mask[0, 0] = True  # 1 of patch (0, 0)'s 4 pixels
    mask[2:4, 4:6] = True  # all of patch (1, 2)
    mask[1, 2:4] = True  # 2 pixels of patch (0, 1)
    expected = np.array([0.25, 0.5, 0.0, 0.0, 0.0, 1.0])  # (S,) = (2 * 3,), row-major
    np.testing.assert_array_equal(patch_coverage(mask, 2), expected)


@given(seeds, batch_shapes(max_dims=2), st.integers(1, 4), st.integers(1, 4), st.integers(1, 5))
def test_patch_coverage_follows_patchify_order_and_keeps_the_covered_share(seed, lead, h, w, patch):
    rng = np.random.default_rng(seed)
    mask = rng.random((*lead, h * patch, w * patch)) < 0.3
    coverage = patch_coverage(mask, patch)  # (..., S)
    pixels, grid = patchify(np.repeat(mask[..., None], 3, axis=-1).astype(float), patch)  # (..., S, 3 p p)
    assert grid == (h, w) and coverage.shape == (*lead, h * w)
    np.testing.assert_allclose(coverage, pixels.mean(axis=-1), rtol=0, atol=EXACT)
    np.testing.assert_allclose(coverage.mean(axis=-1), mask.mean(axis=(-2, -1)), rtol=0, atol=EXACT)


def test_patch_coverage_rejects_a_size_that_is_not_a_multiple_of_the_patch():
    with pytest.raises(ValueError, match=r"multiples of patch = 4; got \(2, 8, 6\)"):
        patch_coverage(np.zeros((2, 8, 6), bool), 4)
    with pytest.raises(TypeError, match="mask must be a boolean array"):
        patch_coverage(np.zeros((8, 8)), 4)


# ---------------------------------------------------------------- quadrant_coverage


def test_quadrant_coverage_of_an_even_grid_is_one_hot():
    quadrants = quadrant_coverage((2, 4))  # patches 0-3 top row, 4-7 bottom row
    np.testing.assert_array_equal(quadrants[0], [1, 1, 0, 0, 0, 0, 0, 0])  # top left
    np.testing.assert_array_equal(quadrants[1], [0, 0, 1, 1, 0, 0, 0, 0])  # top right
    np.testing.assert_array_equal(quadrants[2], [0, 0, 0, 0, 1, 1, 0, 0])  # bottom left
    np.testing.assert_array_equal(quadrants[3], [0, 0, 0, 0, 0, 0, 1, 1])  # bottom right


def test_quadrant_coverage_splits_the_middle_patch_of_an_odd_grid():
    quadrants = quadrant_coverage((3, 3))  # (4, 9)
    np.testing.assert_allclose(quadrants[:, 4], 0.25, rtol=0, atol=EXACT)  # the centre patch: a quarter each
    np.testing.assert_allclose(quadrants[:, 1], [0.5, 0.5, 0, 0], rtol=0, atol=EXACT)  # top middle: left and right
    np.testing.assert_allclose(quadrants[:, 0], [1, 0, 0, 0], rtol=0, atol=EXACT)


@given(st.integers(1, 9), st.integers(1, 9))
def test_quadrant_coverage_partitions_every_patch_into_four_equal_quarters(h, w):
    quadrants = quadrant_coverage((h, w))
    assert quadrants.shape == (4, h * w) and quadrants.min() >= 0
    np.testing.assert_allclose(quadrants.sum(axis=0), 1.0, rtol=0, atol=EXACT)
    np.testing.assert_allclose(quadrants.mean(axis=1), 0.25, rtol=0, atol=EXACT)


def test_quadrant_coverage_rejects_a_bad_grid():
    with pytest.raises(ValueError, match=r"grid must be \(h, w\)"):
        quadrant_coverage((4,))
    with pytest.raises(ValueError, match="grid must be >= 1"):
        quadrant_coverage((4, 0))


# ---------------------------------------------------------------- latents and media


def test_latent_mass_and_media_attention_hand_computed():
    weights = np.array([[0.1, 0.3, 0.2, 0.15, 0.25], [0.5, 0.5, 0.0, 0.0, 0.0]])  # N = 3, R = 2
    np.testing.assert_allclose(latent_mass(weights, 2), [0.4, 0.0], rtol=0, atol=EXACT)
    np.testing.assert_allclose(media_attention(weights, 2), [[1 / 6, 0.5, 1 / 3], [0.5, 0.5, 0.0]], rtol=0, atol=EXACT)


@given(seeds, batch_shapes(max_dims=3), st.integers(1, 20), st.integers(1, 6))
def test_media_attention_rescales_the_weight_the_latents_leave(seed, lead, n_media, n_latents):
    weights = distributions(np.random.default_rng(seed), (*lead, n_media + n_latents), zeros=0.2)
    if (weights[..., :n_media].sum(axis=-1) == 0).any():
        weights[..., 0] += 0.1
        weights /= weights.sum(axis=-1, keepdims=True)
    media, mass = media_attention(weights, n_latents), latent_mass(weights, n_latents)
    assert media.shape == (*lead, n_media) and mass.shape == lead
    np.testing.assert_allclose(media.sum(axis=-1), 1.0, rtol=0, atol=EXACT)
    np.testing.assert_allclose(media * (1 - mass)[..., None], weights[..., :n_media], rtol=0, atol=EXACT)


def test_latent_mass_rejects_more_latents_than_keys():
    with pytest.raises(ValueError, match=r"at least R = num_latents = 5 keys .* got \(2, 4\)"):
        latent_mass(np.full((2, 4), 0.25), 5)
    with pytest.raises(ValueError, match="no media keys"):
        media_attention(np.full((2, 4), 0.25), 4)


# ---------------------------------------------------------------- attention_entropy


def test_attention_entropy_hand_computed():
    weights = np.array([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.5, 0.25, 0.25, 0.0], [0.0, 0.0, 1.0, 0.0]])
    np.testing.assert_allclose(
        attention_entropy(weights), [np.log(2), np.log(4), 1.5 * np.log(2), 0.0], rtol=0, atol=EXACT
    )


@given(batch_shapes(max_dims=3), st.integers(1, 300))
def test_uniform_weights_have_entropy_log_n(lead, n):
    np.testing.assert_allclose(attention_entropy(np.full((*lead, n), 1.0 / n)), np.log(n), rtol=EXACT, atol=EXACT)


@given(seeds, batch_shapes(max_dims=2), st.integers(1, 50))
def test_one_hot_weights_have_entropy_zero(seed, lead, n):
    weights = np.zeros((*lead, n))
    np.put_along_axis(weights, np.random.default_rng(seed).integers(n, size=(*lead, 1)), 1.0, axis=-1)
    entropy = attention_entropy(weights)
    assert entropy.shape == lead and not entropy.any()


@given(seeds, batch_shapes(max_dims=2), st.integers(1, 40), st.floats(0.5, 20.0))
def test_entropy_lies_between_zero_and_log_n_and_ignores_scale_and_order(seed, lead, n, scale):
    rng = np.random.default_rng(seed)
    p = distributions(rng, (*lead, n), zeros=0.3)
    entropy = attention_entropy(p)
    assert (entropy >= -EXACT).all() and (entropy <= np.log(n) + EXACT).all()
    np.testing.assert_allclose(attention_entropy(scale * p), entropy, rtol=0, atol=1e-12)  # renormalised
    np.testing.assert_allclose(attention_entropy(p[..., rng.permutation(n)]), entropy, rtol=0, atol=1e-12)


def test_attention_entropy_rejects_what_is_not_a_distribution():
    with pytest.raises(ValueError, match="weights must be non-negative"):
        attention_entropy(np.array([0.5, 0.7, -0.2]))
    with pytest.raises(ValueError, match="must have a positive sum; 1 of shape"):
        attention_entropy(np.array([[0.5, 0.5], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="weights must be finite"):
        attention_entropy(np.array([0.5, np.nan]))
    with pytest.raises(TypeError, match="real floating-point"):
        attention_entropy(np.array([1, 0]))


# ---------------------------------------------------------------- attention_mass, mass_ratio


def test_mass_ratio_hand_computed():
    weights = np.array([[0.5, 0.25, 0.25, 0.0], [0.0, 0.0, 0.5, 0.5]])
    coverage = np.array([1.0, 0.5, 0.0, 0.0])  # a share of 1.5 / 4 = 0.375
    np.testing.assert_allclose(attention_mass(weights, coverage), [0.625, 0.0], rtol=0, atol=EXACT)
    np.testing.assert_allclose(mass_ratio(weights, coverage), [0.625 / 0.375, 0.0], rtol=0, atol=EXACT)


@given(seeds, batch_shapes(max_dims=2), st.integers(1, 60))
def test_uniform_attention_has_mass_ratio_one(seed, lead, n):
    coverage = np.random.default_rng(seed).random((*lead, n))
    np.testing.assert_allclose(mass_ratio(np.ones((*lead, n)), coverage), 1.0, rtol=1e-12, atol=0)


@given(seeds, st.integers(2, 40))
def test_all_weight_on_fully_covered_tokens_gives_one_over_the_share(seed, n):
    rng = np.random.default_rng(seed)
    covered = rng.random(n) < 0.3
    covered[0] = True
    weights = np.where(covered, rng.random(n) + 0.1, 0.0)
    np.testing.assert_allclose(mass_ratio(weights, covered.astype(float)), n / covered.sum(), rtol=1e-12, atol=0)


@given(seeds)
def test_mass_ratio_broadcasts_coverage_over_heads_and_latents(seed):
    rng = np.random.default_rng(seed)
    weights = distributions(rng, (3, 2, 5, 7))  # (B, H, R, N)
    coverage = rng.random((3, 1, 1, 7))  # (B, 1, 1, N)
    ratio = mass_ratio(weights, coverage)
    assert ratio.shape == (3, 2, 5)
    b, h, r = 2, 1, 3
    expected = (weights[b, h, r] * coverage[b, 0, 0]).sum() / coverage[b, 0, 0].mean()
    np.testing.assert_allclose(ratio[b, h, r], expected, rtol=1e-12, atol=0)
    regions = rng.random((4, 3, 1, 1, 7))  # K = 4 regions in front: (K, B, 1, 1, N)
    assert mass_ratio(weights, regions).shape == (4, 3, 2, 5)


def test_mass_ratio_rejects_bad_coverage():
    weights = np.full((2, 4), 0.25)
    with pytest.raises(ValueError, match="cover nothing"):
        mass_ratio(weights, np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        mass_ratio(weights, np.array([2.0, 0.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="N = 4 entries"):
        attention_mass(weights, np.ones(3))
    with pytest.raises(ValueError, match="must broadcast together"):
        attention_mass(weights, np.ones((3, 4)))


# ---------------------------------------------------------------- pairwise_jensen_shannon


def test_jensen_shannon_hand_computed():
    maps = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    # JS(p, q) = H(m) - (H(p) + H(q)) / 2 in bits; m = (0.75, 0.25) for the first two
    first_two = -(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25)) - 0.5
    expected = np.array([[0.0, first_two, 1.0], [first_two, 0.0, first_two], [1.0, first_two, 0.0]])
    np.testing.assert_allclose(pairwise_jensen_shannon(maps), expected, rtol=0, atol=EXACT)
    np.testing.assert_allclose(mean_off_diagonal(expected), (4 * first_two + 2) / 6, rtol=0, atol=EXACT)


@given(seeds, batch_shapes(max_dims=2), st.integers(1, 7), st.integers(1, 30))
def test_jensen_shannon_is_symmetric_bounded_and_below_total_variation(seed, lead, m, n):
    maps = distributions(np.random.default_rng(seed), (*lead, m, n), zeros=0.3)
    js = pairwise_jensen_shannon(maps)
    assert js.shape == (*lead, m, m)
    np.testing.assert_array_equal(js, np.swapaxes(js, -1, -2))
    assert not np.diagonal(js, axis1=-2, axis2=-1).any()
    assert (js >= 0).all() and (js <= 1).all()
    total_variation = np.abs(maps[..., :, None, :] - maps[..., None, :, :]).sum(axis=-1) / 2  # (..., M, M)
    assert (js <= total_variation + 1e-12).all()


@given(seeds, st.integers(2, 6), st.integers(2, 30))
def test_identical_maps_have_divergence_zero_and_disjoint_maps_one(seed, m, n):
    rng = np.random.default_rng(seed)
    same = np.repeat(distributions(rng, (1, n)), m, axis=0)  # collapsed: every map the same
    np.testing.assert_allclose(pairwise_jensen_shannon(same), 0.0, rtol=0, atol=1e-12)
    disjoint = np.zeros((m, m * n))
    for i in range(m):
        disjoint[i, i * n : (i + 1) * n] = distributions(rng, (n,))  # map i only on keys of its own
    off = ~np.eye(m, dtype=bool)
    np.testing.assert_allclose(pairwise_jensen_shannon(disjoint)[off], 1.0, rtol=0, atol=1e-12)


def test_mean_off_diagonal_leaves_out_the_diagonal():
    matrix = np.array([[9.0, 1.0, 2.0], [3.0, 9.0, 4.0], [5.0, 6.0, 9.0]])
    assert mean_off_diagonal(matrix) == pytest.approx(21 / 6, abs=EXACT)
    np.testing.assert_allclose(mean_off_diagonal(np.stack([matrix, 2 * matrix])), [21 / 6, 42 / 6], rtol=0, atol=EXACT)
    with pytest.raises(ValueError, match=r"square, \(\.\.\., M, M\) with M >= 2; got \(2, 3\)"):
        mean_off_diagonal(np.ones((2, 3)))
