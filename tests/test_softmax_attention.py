"""refimpl.softmax and refimpl.attention (NumPy backend unless a test says otherwise),
against the naive loops of tests/naive.py and against their defining properties."""

import naive
import numpy as np
import pytest
from helpers import assert_close, attention_cases, random_mask, seeds
from hypothesis import given
from hypothesis import strategies as st

import refimpl

BACKENDS = ["numpy", "numba"]

# ---------------------------------------------------------------- strategies


@st.composite
def softmax_cases(draw, magnitude=None):
    """(x, axis, mask or None): x of 1-3 axes of sizes 1..7, entries of scale `magnitude`."""
    shape = tuple(draw(st.lists(st.integers(1, 7), min_size=1, max_size=3)))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    rng = np.random.default_rng(draw(seeds))
    scale = magnitude if magnitude is not None else draw(st.sampled_from([0.1, 1.0, 30.0]))
    x = scale * rng.standard_normal(shape)
    mask = None
    if draw(st.booleans()):
        mask_shape = list(shape)
        other_axes = [a for a in range(len(shape)) if a != axis % len(shape)]
        if other_axes and draw(st.booleans()):  # a mask that broadcasts along another axis
            mask_shape[draw(st.sampled_from(other_axes))] = 1
        mask = random_mask(rng, tuple(mask_shape), axis=axis)
    return x, axis, mask


# ---------------------------------------------------------------- softmax


@given(case=softmax_cases())
def test_softmax_matches_naive_exponentials(case):
    x, axis, mask = case
    assert_close(refimpl.softmax(x, axis=axis, mask=mask), naive.softmax(x, axis=axis, mask=mask))


@given(case=softmax_cases())
def test_softmax_slices_sum_to_one(case):
    x, axis, mask = case
    p = refimpl.softmax(x, axis=axis, mask=mask)
    assert_close(p.sum(axis=axis), np.ones(np.delete(x.shape, axis % x.ndim)), what="sums")


@given(case=softmax_cases())
def test_softmax_masked_entries_are_exactly_zero(case):
    x, axis, mask = case
    p = refimpl.softmax(x, axis=axis, mask=mask)
    if mask is not None:
        assert (p[~np.broadcast_to(mask, x.shape)] == 0.0).all()
    assert (p >= 0).all()


@given(case=softmax_cases(), seed=seeds)
def test_softmax_ignores_the_scores_of_masked_entries(case, seed):
    x, axis, mask = case
    if mask is None:
        mask = random_mask(np.random.default_rng(seed), x.shape, axis=axis)
    garbage = np.where(np.broadcast_to(mask, x.shape), x, 1e3 * np.random.default_rng(seed).standard_normal(x.shape))
    assert_close(refimpl.softmax(garbage, axis=axis, mask=mask), refimpl.softmax(x, axis=axis, mask=mask))


@given(seed=seeds, n=st.integers(2, 12))
def test_softmax_with_mask_equals_softmax_over_the_allowed_entries(seed, n):
    rng = np.random.default_rng(seed)
    x, mask = rng.standard_normal(n), random_mask(rng, (n,))
    assert_close(refimpl.softmax(x, mask=mask)[mask], refimpl.softmax(x[mask]))


@given(case=softmax_cases(magnitude=1.0), shift=st.floats(750, 1000) | st.floats(-1000, -750))
def test_softmax_is_unchanged_by_a_shift_too_large_for_a_plain_exp(case, shift):
    # exp(750) overflows float64: only the max-subtracted softmax survives this shift
    x, axis, mask = case
    assert_close(refimpl.softmax(x + shift, axis=axis, mask=mask), refimpl.softmax(x, axis=axis, mask=mask))


@given(case=softmax_cases(magnitude=1e4))
def test_softmax_scores_of_magnitude_1e4_stay_finite(case):
    x, axis, mask = case
    p = refimpl.softmax(x, axis=axis, mask=mask)
    assert np.isfinite(p).all()
    assert_close(p, naive.softmax(x, axis=axis, mask=mask))


@given(case=softmax_cases(), data=st.data())
def test_softmax_raises_for_a_slice_with_nothing_allowed(case, data):
    x, axis, _ = case
    mask = np.ones(x.shape, dtype=bool)
    rows = np.moveaxis(mask, axis, -1)
    row = tuple(data.draw(st.integers(0, size - 1)) for size in rows.shape[:-1])
    rows[row] = False
    with pytest.raises(ValueError, match="mask allows no entry"):
        refimpl.softmax(x, axis=axis, mask=mask)


def test_softmax_of_an_empty_axis_raises():
    with pytest.raises(ValueError, match="no entries along axis"):
        refimpl.softmax(np.zeros((3, 0)))


@given(case=softmax_cases())
def test_softmax_upcasts_float16_input_to_float64(case):
    x, axis, mask = case
    x16 = x.astype(np.float16)
    p = refimpl.softmax(x16, axis=axis, mask=mask)
    assert p.dtype == np.float64
    assert_close(p, refimpl.softmax(x16.astype(np.float64), axis=axis, mask=mask))


# ---------------------------------------------------------------- attention


@given(case=attention_cases())
def test_attention_output_shape_is_batch_by_queries_by_value_width(case):
    q, k, v, mask, scale = case
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    out = refimpl.attention(q, k, v, mask=mask, scale=scale)
    assert out.shape == batch + (q.shape[-2], v.shape[-1])
    assert out.dtype == np.float64


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=attention_cases())
def test_attention_weights_have_the_broadcast_batch_shape(backend, case):
    # docstring: "The batch axes `...` of q, k and v broadcast", weights (..., M, N)
    q, k, v, mask, scale = case
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    _, weights = refimpl.attention(q, k, v, mask=mask, scale=scale, backend=backend, return_weights=True)
    assert weights.shape == batch + (q.shape[-2], k.shape[-2])


@given(case=attention_cases())
def test_attention_matches_naive(case):
    q, k, v, mask, scale = case
    expected, _ = naive.attention(q, k, v, mask=mask, scale=scale)
    assert_close(refimpl.attention(q, k, v, mask=mask, scale=scale), expected)


@given(case=attention_cases(v_batch_like_k=True))
def test_attention_weights_match_naive(case):
    q, k, v, mask, scale = case
    _, expected = naive.attention(q, k, v, mask=mask, scale=scale)
    _, weights = refimpl.attention(q, k, v, mask=mask, scale=scale, return_weights=True)
    assert_close(weights, expected)


@given(case=attention_cases(masked=False))
def test_attention_default_scale_is_inverse_sqrt_of_head_width(case):
    q, k, v, _, _ = case
    expected, _ = naive.attention(q, k, v, scale=1.0 / np.sqrt(q.shape[-1]))
    assert_close(refimpl.attention(q, k, v), expected)


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=attention_cases())
def test_attention_weight_rows_sum_to_one(backend, case):
    q, k, v, mask, scale = case
    _, weights = refimpl.attention(q, k, v, mask=mask, scale=scale, backend=backend, return_weights=True)
    assert_close(weights.sum(axis=-1), np.ones(weights.shape[:-1]), what="row sums")


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=attention_cases(masked=True))
def test_attention_masked_weights_are_exactly_zero(backend, case):
    q, k, v, mask, scale = case
    _, weights = refimpl.attention(q, k, v, mask=mask, scale=scale, backend=backend, return_weights=True)
    assert (weights[~np.broadcast_to(mask, weights.shape)] == 0.0).all()
    assert (weights >= 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=attention_cases())
def test_attention_output_is_weights_times_values(backend, case):
    q, k, v, mask, scale = case
    out, weights = refimpl.attention(q, k, v, mask=mask, scale=scale, backend=backend, return_weights=True)
    assert_close(out, np.einsum("...mn,...nd->...md", weights, v))


@pytest.mark.parametrize("backend", BACKENDS)
@given(seed=seeds, m=st.integers(1, 6), n=st.integers(2, 9), d=st.integers(1, 8), dv=st.integers(1, 8))
def test_attention_ignores_keys_and_values_that_are_masked(backend, seed, m, n, d, dv):
    rng = np.random.default_rng(seed)
    q, k, v = rng.standard_normal((2, m, d)), rng.standard_normal((2, n, d)), rng.standard_normal((2, n, dv))
    keep = random_mask(rng, (2, 1, n))
    padded = ~keep[:, 0, :, None]  # (2, n, 1)
    k_garbage = np.where(padded, 1e3 * rng.standard_normal(k.shape), k)
    v_garbage = np.where(padded, 1e3 * rng.standard_normal(v.shape), v)
    assert_close(
        refimpl.attention(q, k_garbage, v_garbage, mask=keep, backend=backend),
        refimpl.attention(q, k, v, mask=keep, backend=backend),
    )


@pytest.mark.parametrize("backend", BACKENDS)
@given(seed=seeds, m=st.integers(1, 6), n=st.integers(1, 300), d=st.integers(1, 6))
def test_attention_scores_of_magnitude_1e4_stay_finite(backend, seed, m, n, d):
    # integer q and k of magnitude 50..100: the scores (up to 6e4) are exact integers in any
    # order of summation, so the comparison measures the softmax, not the rounding of q.k
    rng = np.random.default_rng(seed)
    q, k = (rng.choice([-1.0, 1.0], shape) * rng.integers(50, 101, shape) for shape in ((m, d), (n, d)))
    k[0] = np.sign(q[0]) * np.abs(k[0])  # q_0 . k_0 = sum |q_0| |k_0| >= 2500 d
    v = rng.standard_normal((n, 3))
    out = refimpl.attention(q, k, v, scale=1.0, backend=backend)
    assert np.isfinite(out).all()
    expected, _ = naive.attention(q, k, v, scale=1.0)
    assert_close(out, expected)


@given(case=attention_cases())
def test_attention_upcasts_float16_input_to_float64(case):
    q, k, v, mask, scale = case
    q16, k16, v16 = (a.astype(np.float16) for a in (q, k, v))
    out = refimpl.attention(q16, k16, v16, mask=mask, scale=scale)
    assert out.dtype == np.float64
    expected, _ = naive.attention(q16, k16, v16, mask=mask, scale=scale)
    assert_close(out, expected)


@given(seed=seeds, m=st.integers(1, 5), n=st.integers(1, 6), d=st.integers(1, 6))
def test_attention_scale_multiplies_the_scores(seed, m, n, d):
    rng = np.random.default_rng(seed)
    q, k, v = rng.standard_normal((m, d)), rng.standard_normal((n, d)), rng.standard_normal((n, 2))
    assert_close(refimpl.attention(q, k, v, scale=2.5), refimpl.attention(2.5 * q, k, v, scale=1.0))
