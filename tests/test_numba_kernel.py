"""backend="numba" (the fused online-softmax kernel of refimpl/kernels.py) against
backend="numpy": attention alone, multi-head attention, the whole resampler and the gated
block, within TOLERANCES[("float64", "numba vs numpy")].

The kernel walks the keys in blocks of 256 and handles four query rows at a time, so the
sizes here include N > 256 with a partial last block, N an exact multiple of 256, and M
not a multiple of 4.
"""

import numpy as np
import pytest
from helpers import (
    FLOAT32_BACKENDS,
    FLOAT32_VS_FLOAT64,
    assert_close,
    attention_cases,
    batch_shapes,
    multi_head_cases,
    norms_resolve_their_inputs,
    random_mask,
    resampler_cases,
    resampler_configs,
    seeds,
)
from hypothesis import assume, given
from hypothesis import strategies as st

import refimpl
from refimpl.tolerances import float32_backends_bound

KEY_BLOCK = 256  # the kernel's block of keys (refimpl/kernels.py); the sizes below straddle it
KEY_COUNTS = [1, 3, 255, 256, 257, 300, 511, 512, 513, 600]


def both_backends(function, *args, **kwargs):
    return function(*args, backend="numpy", **kwargs), function(*args, backend="numba", **kwargs)


# ---------------------------------------------------------------- attention


@given(case=attention_cases(max_queries=13, max_keys=600))
def test_numba_attention_equals_numpy(case):
    q, k, v, mask, scale = case
    expected, actual = both_backends(refimpl.attention, q, k, v, mask=mask, scale=scale)
    assert_close(actual, expected, scale=np.abs(v).max())


@given(case=attention_cases(max_queries=13, min_keys=KEY_BLOCK + 1, max_keys=600, masked=True))
def test_numba_attention_equals_numpy_over_several_key_blocks_with_masks(case):
    q, k, v, mask, scale = case
    expected, actual = both_backends(refimpl.attention, q, k, v, mask=mask, scale=scale)
    assert_close(actual, expected, scale=np.abs(v).max())


@given(case=attention_cases(max_queries=13, max_keys=600, v_batch_like_k=True))
def test_numba_attention_weights_equal_numpy(case):
    q, k, v, mask, scale = case
    (_, expected), (_, actual) = both_backends(refimpl.attention, q, k, v, mask=mask, scale=scale, return_weights=True)
    assert_close(actual, expected)


@pytest.mark.parametrize("n_keys", KEY_COUNTS)
@pytest.mark.parametrize("n_queries", [1, 4, 5, 7])
def test_numba_attention_equals_numpy_for_block_edge_sizes(n_queries, n_keys):
    rng = np.random.default_rng(1000 * n_queries + n_keys)
    q, k, v = (
        rng.standard_normal((2, 3, n_queries, 5)),
        rng.standard_normal((2, 3, n_keys, 5)),
        rng.standard_normal((2, 3, n_keys, 7)),
    )
    mask = random_mask(rng, (2, 1, n_queries, n_keys), p_true=0.5)
    expected, actual = both_backends(refimpl.attention, q, k, v, mask=mask)
    assert_close(actual, expected, scale=np.abs(v).max())


@pytest.mark.parametrize("n_keys", [k for k in KEY_COUNTS if k > KEY_BLOCK])
def test_numba_attention_with_keys_allowed_only_in_the_partial_last_block(n_keys):
    rng = np.random.default_rng(n_keys)
    q, k, v = rng.standard_normal((6, 4)), rng.standard_normal((n_keys, 4)), rng.standard_normal((n_keys, 3))
    mask = np.zeros((6, n_keys), dtype=bool)
    last_block = (n_keys - 1) // KEY_BLOCK * KEY_BLOCK
    mask[:, last_block:] = rng.random((6, n_keys - last_block)) < 0.5
    mask[:, -1] = True
    expected, actual = both_backends(refimpl.attention, q, k, v, mask=mask)
    assert_close(actual, expected, scale=np.abs(v).max())


@pytest.mark.parametrize("n_keys", [k for k in KEY_COUNTS if k > KEY_BLOCK])
def test_numba_attention_with_keys_allowed_only_in_the_first_block(n_keys):
    rng = np.random.default_rng(n_keys)
    q, k, v = rng.standard_normal((5, 4)), rng.standard_normal((n_keys, 4)), rng.standard_normal((n_keys, 3))
    mask = np.zeros((5, n_keys), dtype=bool)
    mask[:, : KEY_BLOCK // 2] = True
    expected, actual = both_backends(refimpl.attention, q, k, v, mask=mask)
    assert_close(actual, expected, scale=np.abs(v).max())


@pytest.mark.parametrize("direction", ["rising", "falling"])
@pytest.mark.parametrize("n_keys", [300, 600])
def test_numba_attention_rescales_when_a_later_block_raises_the_max(direction, n_keys):
    # scores rise (or fall) steadily with the key index, up to 60: every block raises
    # the running max (or none does), so the exp(m - m') correction is exercised
    rng = np.random.default_rng(n_keys)
    ramp = np.linspace(0.0, 60.0, n_keys)
    ramp = ramp if direction == "rising" else ramp[::-1]
    q = np.ones((5, 1)) * np.array([[1.0], [0.5], [0.25], [2.0], [1.5]])
    k = ramp[:, None]
    v = rng.standard_normal((n_keys, 3))
    expected, actual = both_backends(refimpl.attention, q, k, v, scale=1.0)
    assert_close(actual, expected, scale=np.abs(v).max())


@pytest.mark.parametrize("n_keys", [5, 257, 600])
def test_numba_attention_scores_of_magnitude_1e4_stay_finite(n_keys):
    # integer q and k: the scores (magnitude ~1e4) are exact in either backend's order of summation
    rng = np.random.default_rng(n_keys)
    q, k = (rng.choice([-1.0, 1.0], shape) * rng.integers(50, 101, shape) for shape in ((3, 5, 6), (3, n_keys, 6)))
    k[:, -1] = np.sign(q[:, 0]) * np.abs(k[:, -1])  # q_0 . k_last = sum |q_0| |k_last| >= 1.5e4
    v = rng.standard_normal((3, n_keys, 4))
    expected, actual = both_backends(refimpl.attention, q, k, v, scale=1.0)
    assert np.isfinite(actual).all()
    assert_close(actual, expected, scale=np.abs(v).max())


@given(case=attention_cases(max_queries=13, max_keys=600))
def test_numba_attention_in_float32_equals_numpy_in_float32(case):
    q, k, v, mask, scale = case
    expected, actual = both_backends(refimpl.attention, q, k, v, mask=mask, scale=scale, dtype=np.float32)
    assert actual.dtype == np.float32
    assert_close(actual, expected, FLOAT32_BACKENDS, scale=np.abs(v).max())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_score", [10.0, 1e2, 1e3, 1e4])
def test_numba_attention_in_float32_equals_numpy_within_the_bound_for_its_score_range(max_score, seed):
    # N = 4096 keys, Dh = 48 (a scale that is no power of 2, so the backends round their scores
    # differently), q and k sized so that the largest |q k^T * scale| is max_score: the bound
    # grows with the scores (refimpl/tolerances.py), 1e-5 alone is exceeded from about 50 on
    rng = np.random.default_rng(seed)
    q, k, v = rng.standard_normal((16, 48)), rng.standard_normal((4096, 48)), rng.standard_normal((4096, 16))
    size = np.sqrt(max_score / np.abs(q @ k.T * 48**-0.5).max())
    q, k = q * size, k * size
    expected, actual = both_backends(refimpl.attention, q, k, v, dtype=np.float32)
    scores = np.abs(q @ k.T * 48**-0.5).max()  # max_score, up to rounding
    error, bound = refimpl.relative_error(actual, expected, np.abs(v).max()), float32_backends_bound(scores)
    assert error <= bound, f"relative error {error:.3g} > float32_backends_bound({scores:.4g}) = {bound:.3g}"


@given(case=attention_cases(max_queries=13, max_keys=600))
def test_numba_attention_in_float32_is_close_to_float64(case):
    q, k, v, mask, scale = case
    actual = refimpl.attention(q, k, v, mask=mask, scale=scale, backend="numba", dtype=np.float32)
    assert_close(actual, refimpl.attention(q, k, v, mask=mask, scale=scale), FLOAT32_VS_FLOAT64, scale=np.abs(v).max())


def test_numba_agrees_with_numpy_relative_to_the_values_on_an_output_that_cancels_to_nearly_zero():
    # the one output, a weighted mean of 505 values of size ~1, is -3.8e-6: both backends
    # are as accurate as float64 allows, but only relative to max |v|, the scale of the terms
    # summed (seed found by searching 20000; see refimpl/tolerances.py)
    rng = np.random.default_rng(17947)
    q, k, v = rng.standard_normal((1, 6)), rng.standard_normal((505, 6)), rng.standard_normal((505, 1))
    expected, actual = both_backends(refimpl.attention, q, k, v)
    assert np.abs(expected).max() < 1e-5  # it does cancel
    assert_close(actual, expected, scale=np.abs(v).max())


@pytest.mark.parametrize(
    "mask_shape", [(1, 1, 4, 6), (1, 4, 6), (1, 1, 1, 6), (3, 1, 1, 6), (2, 1, 4, 6), (6,), (4, 6)]
)
def test_numba_attention_accepts_every_mask_shape_that_broadcasts(mask_shape):
    # the issue: mask boolean broadcastable to (..., M, N); here (..., M, N) = (3, 2, 4, 6)
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((3, 2, 4, 5)), rng.standard_normal((3, 2, 6, 5)), rng.standard_normal((3, 2, 6, 7))
    if mask_shape[0] == 2:
        mask_shape = (1,) + mask_shape[1:]
    mask = random_mask(rng, mask_shape)
    expected, actual = both_backends(refimpl.attention, q, k, v, mask=mask)
    assert_close(actual, expected, scale=np.abs(v).max())


# ---------------------------------------------------------------- multi-head attention


@given(case=multi_head_cases(max_keys=600, masked=False))
def test_numba_multi_head_attention_equals_numpy(case):
    params, queries, context, options = case
    expected, actual = both_backends(refimpl.multi_head_attention, params, queries, context, **options)
    assert_close(actual, expected)


@given(case=multi_head_cases(max_keys=600, masked=True))
def test_numba_multi_head_attention_with_mask_equals_numpy(case):
    params, queries, context, options = case
    expected, actual = both_backends(refimpl.multi_head_attention, params, queries, context, **options)
    assert_close(actual, expected)


# ---------------------------------------------------------------- the resampler


@given(case=resampler_cases(masked=False))
def test_numba_resampler_equals_numpy(case):
    config, params, x, mask = case
    expected, actual = both_backends(refimpl.perceiver_resampler, params, x, config, mask=mask)
    assert_close(actual, expected)


@given(case=resampler_cases(masked=True))
def test_numba_resampler_with_mask_equals_numpy(case):
    config, params, x, mask = case
    expected, actual = both_backends(refimpl.perceiver_resampler, params, x, config, mask=mask)
    assert_close(actual, expected)


@pytest.mark.parametrize("activation", ["gelu", "squared_relu", "relu", "swiglu"])
@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
@given(data=st.data())
def test_numba_resampler_equals_numpy_for_every_activation_and_norm(activation, norm, data):
    configs = resampler_configs(activation=activation, norm=norm)
    config, params, x, mask = data.draw(resampler_cases(configs=configs))
    expected, actual = both_backends(refimpl.perceiver_resampler, params, x, config, mask=mask)
    assert_close(actual, expected)


@given(case=resampler_cases(max_frames=3, min_space=90, max_space=200, batch=batch_shapes(max_dims=1, max_side=2)))
def test_numba_resampler_equals_numpy_with_several_key_blocks(case):
    config, params, x, mask = case
    expected, actual = both_backends(refimpl.perceiver_resampler, params, x, config, mask=mask)
    assert_close(actual, expected)


@given(case=resampler_cases())
def test_numba_resampler_attention_maps_equal_numpy(case):
    config, params, x, mask = case
    (_, expected), (_, actual) = both_backends(
        refimpl.perceiver_resampler, params, x, config, mask=mask, return_attention=True
    )
    assert len(actual) == len(expected) == config.depth
    for layer, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert_close(a, e, what=f"layer {layer}")


@given(case=resampler_cases())
def test_numba_resampler_in_float32_equals_numpy_in_float32(case):
    config, params, x, mask = case
    # a LayerNorm over 1 or 2 entries amplifies rounding by up to 1/sqrt(eps) near a tie, so two
    # float32 orders of summation can differ by more than the bound there (found: D = 2, 1.05e-5)
    assume(norms_resolve_their_inputs(config))
    expected, actual = both_backends(refimpl.perceiver_resampler, params, x, config, mask=mask, dtype=np.float32)
    assert_close(actual, expected, FLOAT32_BACKENDS)


# ---------------------------------------------------------------- the gated block


@given(seed=seeds, masked=st.booleans(), n_visual=st.integers(1, 300), gate=st.floats(-2, 2))
def test_numba_gated_xattn_dense_equals_numpy(seed, masked, n_visual, gate):
    rng = np.random.default_rng(seed)
    params = refimpl.init_gated_xattn_dense(10, 7, heads=3, dim_head=5, ff_mult=2, gate=gate, seed=seed % 1000)
    hidden, visual = rng.standard_normal((2, 9, 10)), rng.standard_normal((2, n_visual, 7))
    mask = rng.random((2, 9, n_visual)) < 0.6 if masked else None
    expected, actual = both_backends(refimpl.gated_xattn_dense, params, hidden, visual, heads=3, mask=mask)
    assert_close(actual, expected)


def test_float32_exp_is_within_a_few_ulps_of_exp_and_exactly_zero_below_the_normal_range():
    from refimpl import kernels

    x = np.concatenate([np.linspace(-86.99, 0.0, 100_001), [-np.inf, -1e4, -88.0, -87.0]]).astype(np.float32)
    y = x.copy()
    kernels._exp_float32(y, np.empty(x.size, dtype=np.int32))
    exact = np.exp(x.astype(np.float64))
    normal = x > -87.0
    assert y.dtype == np.float32
    assert (np.abs(y[normal] - exact[normal]) / exact[normal]).max() <= 4e-7  # a few float32 ulps (1.2e-7)
    assert (y[~normal] == 0.0).all()
    assert y[x == 0.0][0] == 1.0
