"""Where the float range ends: finite inputs whose intermediate values would overflow are
computed right, or raise naming the argument; never a finite wrong answer or NaN.

- LayerNorm and RMSNorm are invariant to the scale of a row (eps scaled with it): rows whose
  squares overflow (x * 1e155 in float64, x * 1e19 in float32) are computed scaled down.
- Attention scores q k^T * scale beyond the float range (q, k ~ 1e200) have no answer to give
  (their softmax is decided by rounding): both backends raise the same ValueError, on the
  same condition, and compute alike everywhere below it.
"""

import dataclasses

import numpy as np
import pytest
from helpers import FLOAT32_BACKENDS, FLOAT32_VS_FLOAT64, FLOAT64, assert_close, seeds
from hypothesis import given
from hypothesis import strategies as st

import refimpl
from refimpl.grad import attention_backward
from refimpl.layers import layer_norm, rms_norm

NORMS = {
    "layernorm": lambda x, weight, bias, eps: layer_norm(x, weight, bias, eps),
    "rmsnorm": lambda x, weight, bias, eps: rms_norm(x, weight, eps),
}


def norm_case(seed, dim, dtype=np.float64):
    """x (3, 4, D) standard normal, a norm weight U(0.5, 1.5) and bias N(0, 0.1^2), in `dtype`."""
    rng = np.random.default_rng(seed)
    x, weight, bias = rng.standard_normal((3, 4, dim)), rng.uniform(0.5, 1.5, dim), rng.normal(0, 0.1, dim)
    return x.astype(dtype), weight.astype(dtype), bias.astype(dtype)


# ---------------------------------------------------------------- norms


@pytest.mark.parametrize("kind", NORMS)
@given(seed=seeds, dim=st.integers(2, 40), power=st.integers(0, 300))
def test_a_norm_of_x_times_c_is_the_norm_of_x_with_eps_divided_by_c_squared(kind, seed, dim, power):
    # c = 10^power up to 1e300: the squares of x * c overflow float64 from c ~ 1e154 on
    x, weight, bias = norm_case(seed, dim)
    c = 10.0**power
    scaled = NORMS[kind](x * c, weight, bias, 1e-5)
    assert_close(scaled, NORMS[kind](x, weight, bias, 1e-5 / c / c), what=f"{kind} of x * 1e{power}")


@pytest.mark.parametrize("kind", NORMS)
@given(seed=seeds, dim=st.integers(2, 40), power=st.integers(0, 37))
def test_a_float32_norm_of_x_times_c_is_close_to_the_float64_norm(kind, seed, dim, power):
    # the squares of x * c overflow float32 from c ~ 1e18 on
    x, weight, bias = norm_case(seed, dim)
    x = x * 10.0**power
    x32, weight32, bias32 = (a.astype(np.float32) for a in (x, weight, bias))
    assert_close(NORMS[kind](x32, weight32, bias32, 1e-5), NORMS[kind](x, weight, bias, 1e-5), FLOAT32_VS_FLOAT64)


@pytest.mark.parametrize("kind", NORMS)
def test_a_norm_of_a_row_near_the_largest_float_is_right(kind):
    # the sum of the row overflows too (LayerNorm's mean), not only the squares
    x, weight, bias = norm_case(0, 16)
    x = x / np.abs(x).max() * np.finfo(np.float64).max
    expected = NORMS[kind](x / 2.0**1000, weight, bias, 1e-5 / 2.0**1000 / 2.0**1000)
    assert_close(NORMS[kind](x, weight, bias, 1e-5), expected)


@pytest.mark.parametrize("kind", NORMS)
def test_a_norm_of_tiny_rows_beside_huge_ones_keeps_eps(kind):
    # rows below 1 are not scaled: eps still counts for them (x * 1e-3 has var ~ eps * 0.1)
    x, weight, bias = norm_case(1, 8)
    x[0] *= 1e200
    x[1] *= 1e-3
    expected = np.concatenate(
        [NORMS[kind](x[:1] / 1e200, weight, bias, 1e-5 / 1e200 / 1e200), NORMS[kind](x[1:], weight, bias, 1e-5)]
    )
    assert_close(NORMS[kind](x, weight, bias, 1e-5), expected)


def resampler_case(**switches):
    """No time or media embeddings, so that the media enter only through their norm, and an
    eps far below the variance of x, so that the norm of x * c is the norm of x."""
    config = refimpl.ResamplerConfig(dim=12, depth=2, heads=3, dim_head=5, num_latents=4, norm_eps=1e-30, **switches)
    x = np.random.default_rng(7).standard_normal((2, 3, 5, 12))
    return config, refimpl.init_resampler(config, seed=7), x


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_the_resampler_of_x_times_1e155_equals_the_resampler_of_x(norm, backend):
    config, params, x = resampler_case(norm=norm)
    expected = refimpl.perceiver_resampler(params, x, config, backend=backend)
    assert_close(refimpl.perceiver_resampler(params, x * 1e155, config, backend=backend), expected)


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_the_float32_resampler_of_x_times_1e19_is_close_to_float64(norm):
    config, params, x = resampler_case(norm=norm)
    expected = refimpl.perceiver_resampler(params, x * 1e19, config)
    assert_close(refimpl.perceiver_resampler(params, x * 1e19, config, dtype=np.float32), expected, FLOAT32_VS_FLOAT64)


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_the_resampler_with_float32_norms_of_x_times_1e19_is_close_to_float64_norms(norm):
    config, params, x = resampler_case(norm=norm)
    expected = refimpl.perceiver_resampler(params, x * 1e19, config)
    actual = refimpl.perceiver_resampler(params, x * 1e19, dataclasses.replace(config, norm_dtype="float32"))
    assert_close(actual, expected, FLOAT32_VS_FLOAT64)


# ---------------------------------------------------------------- attention

SCORES_OVERFLOW = (
    r"q and k give attention scores q k\^T \* scale beyond the {} range: Dh \* max\|q\| \* max\|k\| \* max\(scale, 1\)"
)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_attention_whose_scores_overflow_raises_naming_q_and_k(backend, dtype):
    rng = np.random.default_rng(0)
    size = 1e200 if dtype == np.float64 else 1e25
    q, k, v = rng.standard_normal((3, 4)) * size, rng.standard_normal((5, 4)) * size, rng.standard_normal((5, 2))
    with pytest.raises(ValueError, match=SCORES_OVERFLOW.format(np.dtype(dtype))):
        refimpl.attention(q, k, v, backend=backend, dtype=dtype)


@given(seed=seeds, dh=st.integers(1, 9), margin=st.floats(-3.0, 3.0), scale=st.sampled_from([None, 1e-3, 1e3]))
def test_both_backends_end_the_float_range_at_the_same_place(seed, dh, margin, scale):
    # q and k sized so that Dh * max|q| * max|k| * max(scale, 1) is 10^margin times the largest
    # float: both backends raise above it; below, both compute, finite and alike
    rng = np.random.default_rng(seed)
    q, k, v = rng.standard_normal((4, dh)), rng.standard_normal((7, dh)), rng.standard_normal((7, 3))
    limit = float(np.finfo(np.float64).max)
    size = np.sqrt(limit / (dh * max(scale or dh**-0.5, 1.0))) * 10.0 ** (margin / 2)
    q, k = q / np.abs(q).max() * size, k / np.abs(k).max() * size
    overflows = (
        dh * float(np.abs(q).max()) * float(np.abs(k).max()) * max(scale or dh**-0.5, 1.0) > limit
    )  # as refimpl computes it
    outcomes = []
    for backend in ("numpy", "numba"):
        try:
            outcomes.append(refimpl.attention(q, k, v, scale=scale, backend=backend))
        except ValueError as error:
            assert overflows and "beyond the float64 range" in str(error), str(error)
            outcomes.append(None)
    assert (outcomes[0] is None) == (outcomes[1] is None) == overflows
    if not overflows:
        assert_close(outcomes[1], outcomes[0], scale=np.abs(v).max())


def test_multi_head_attention_whose_scores_overflow_raises():
    rng = np.random.default_rng(1)
    params = {
        name: rng.standard_normal(shape)
        for name, shape in (("wq", (6, 8)), ("wk", (3, 8)), ("wv", (3, 8)), ("wo", (8, 6)))
    }
    queries, context = rng.standard_normal((5, 6)) * 1e160, rng.standard_normal((7, 3)) * 1e160
    with pytest.raises(ValueError, match=SCORES_OVERFLOW.format("float64")):
        refimpl.multi_head_attention(params, queries, context, heads=2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numba_attention_of_values_near_the_largest_float_equals_numpy(dtype):
    # equal scores: each output is the mean of N = 600 values of up to a quarter of the largest
    # float; the kernel's unnormalised sum of them would overflow, the NumPy path's weighted one not
    rng = np.random.default_rng(2)
    q, k = np.zeros((3, 4)), rng.standard_normal((600, 4))
    v = rng.uniform(0.5, 1.0, (600, 5)) * float(np.finfo(dtype).max) / 4
    expected = refimpl.attention(q, k, v, dtype=dtype)
    actual = refimpl.attention(q, k, v, dtype=dtype, backend="numba")
    assert np.isfinite(expected).all()
    assert_close(actual, expected, FLOAT64 if dtype == np.float64 else FLOAT32_BACKENDS, scale=np.abs(v).max())


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_the_attention_gradient_whose_scores_overflow_raises_alike(backend):
    rng = np.random.default_rng(3)
    q, k, v = rng.standard_normal((3, 4)) * 1e200, rng.standard_normal((5, 4)) * 1e200, rng.standard_normal((5, 2))
    with pytest.raises(ValueError, match=SCORES_OVERFLOW.format("float64")):
        attention_backward(q, k, v, np.ones((3, 2)), backend=backend)
