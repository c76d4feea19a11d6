"""The Numba attention backward (refimpl/kernels_backward.py) against a NumPy backward written
here from the formulas, against torch's autograd, in float32 against float64, and through
refimpl.grad (backend="numba" against backend="numpy").

The kernel walks the keys in blocks of 256 and recomputes each block's weights from the
forward kernel's saved row max and row sum, so the sizes here straddle the block edges
(N = 1, 255, 256, 257, 600), the masks leave some rows a single allowed key, and M, Dh and
Dv are odd, unequal and not multiples of the kernel's 2 x 4 blocking.

Error measure. Each gradient is a sum of products, some of which cancel: with one key, dq
and dk are exactly 0 (the softmax of one score is 1 whatever the score), and any rounding
noise is infinitely large relative to max |reference|. So each gradient is measured relative
to the size of the terms it sums (as attention's output is relative to max |v|; see
refimpl/tolerances.py): the same formulas on absolute values, |P|^T |dout| for dv and so on
(`term_scales`). The classic error bound of a sum of products is a few ulps of exactly that.
"""

import numpy as np
import pytest
import torch
from helpers import FLOAT32_BACKENDS, FLOAT32_VS_FLOAT64, assert_close, attention_cases, random_mask, seeds
from hypothesis import given, settings

from refimpl import kernels, kernels_backward
from refimpl.grad import attention_backward

# up to 600 keys per example: fewer examples than the suite's 50 keep these properties to seconds;
# the block edges and mask kinds are covered exhaustively by the parametrized test below
LARGE_CASES = settings(max_examples=20)

GRADIENTS = ("dq", "dk", "dv")


# ---------------------------------------------------------------- the reference, from the formulas


def numpy_backward(q, k, v, mask, scale, dout):
    """dq, dk, dv (full broadcast batch) from the formulas, forming the (..., M, N) matrices.

    P = softmax(q k^T * scale, masked),   out = P v,   Delta_i = dout_i . out_i
    dV = P^T dout,   dP = dout V^T,   dS = P * (dP - Delta),   dQ = dS K * scale,   dK = dS^T Q * scale
    """
    weights, out = weights_and_output(q, k, v, mask, scale)  # (..., M, N), (..., M, Dv)
    delta = np.sum(dout * out, axis=-1, keepdims=True)  # (..., M, 1)
    dv = np.swapaxes(weights, -1, -2) @ dout  # (..., N, Dv)
    dweights = dout @ np.swapaxes(v, -1, -2)  # (..., M, N)
    dscores = weights * (dweights - delta)  # (..., M, N)
    dq = dscores @ k * scale  # (..., M, Dh)
    dk = np.swapaxes(dscores, -1, -2) @ q * scale  # (..., N, Dh)
    return dq, dk, dv  # the full batch: dscores and dout have it


def weights_and_output(q, k, v, mask, scale):
    scores = q @ np.swapaxes(k, -1, -2) * scale  # (..., M, N)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)  # (..., M, N), 0 where masked
    return weights, weights @ v  # (..., M, Dv)


def term_scales(q, k, v, mask, scale, dout, summed_to=None):
    """For dq, dk and dv, the largest sum of |terms| (module docstring): the formulas on
    absolute values. summed_to: the shapes to which the gradients are summed over broadcast
    batch axes (q's, k's, v's), or None for the full batch."""
    weights, out = weights_and_output(q, k, v, mask, scale)
    abs_dout = np.abs(dout)
    abs_dscores = weights * (
        abs_dout @ np.swapaxes(np.abs(v), -1, -2) + np.sum(abs_dout * np.abs(out), axis=-1, keepdims=True)
    )
    sizes = (
        abs_dscores @ np.abs(k) * scale,  # dq (..., M, Dh)
        np.swapaxes(abs_dscores, -1, -2) @ np.abs(q) * scale,  # dk (..., N, Dh)
        np.swapaxes(weights, -1, -2) @ abs_dout,  # dv (..., N, Dv)
    )
    if summed_to is not None:
        sizes = (sum_to_shape(size, shape) for size, shape in zip(sizes, summed_to, strict=True))
    return tuple(size.max() for size in sizes)


def sum_to_shape(grad, shape):
    """Sum a full-batch gradient over the axes along which an input of `shape` was broadcast."""
    summed = grad.sum(axis=tuple(range(grad.ndim - len(shape))))
    return summed.sum(
        axis=tuple(a for a, size in enumerate(shape) if size == 1 and summed.shape[a] != 1), keepdims=True
    )


def full_batch(*arrays):
    """The arrays (..., ., .) broadcast to their common batch axes."""
    batch = np.broadcast_shapes(*(a.shape[:-2] for a in arrays))
    return tuple(np.broadcast_to(a, batch + a.shape[-2:]) for a in arrays)


def kernel_backward(q, k, v, mask, scale, dout, dtype=np.float64):
    """Forward kernel, then the backward kernel, on inputs cast to `dtype`."""
    q, k, v, dout = (np.asarray(a, dtype) for a in (q, k, v, dout))
    out, row_max, row_sum = kernels.attention(q, k, v, mask, scale)
    return kernels_backward.attention_backward(q, k, v, mask, scale, out, row_max, row_sum, dout)


def random_dout(rng, q, k, v):
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    return rng.standard_normal(batch + (q.shape[-2], v.shape[-1]))


def assert_gradients_close(actual, expected, scales, key=("float64", "numba vs numpy")):
    for name, a, e, s in zip(GRADIENTS, actual, expected, scales, strict=True):
        assert_close(a, e, key, what=name, scale=s)


def resolved(scale, q):
    """The scale attention uses: Dh ** -0.5 for None."""
    return q.shape[-1] ** -0.5 if scale is None else scale


# ---------------------------------------------------------------- float64 against the formulas


@LARGE_CASES
@given(case=attention_cases(max_queries=13, max_keys=600), seed=seeds)
def test_numba_backward_equals_numpy_formulas(case, seed):
    q, k, v, mask, scale = case
    scale = resolved(scale, q)
    dout = random_dout(np.random.default_rng(seed), q, k, v)
    actual = kernel_backward(q, k, v, mask, scale, dout)
    assert_gradients_close(actual, numpy_backward(q, k, v, mask, scale, dout), term_scales(q, k, v, mask, scale, dout))


MASKS = ["none", "key padding (..., 1, N)", "full (M, N)", "one key per row"]


def block_edge_case(n_keys, mask_kind, seed):
    """q (2, 3, 7, 5), k (1, 3, N, 5), v (3, N, 6), dout (2, 3, 7, 6), and a mask of `mask_kind`."""
    rng = np.random.default_rng(seed)
    q, k, v = (
        rng.standard_normal((2, 3, 7, 5)),
        rng.standard_normal((1, 3, n_keys, 5)),
        rng.standard_normal((3, n_keys, 6)),
    )
    mask = None
    if mask_kind == "key padding (..., 1, N)":
        mask = random_mask(rng, (2, 1, 1, n_keys), p_true=0.6)
    elif mask_kind == "full (M, N)":
        mask = random_mask(rng, (7, n_keys), p_true=0.5)
    elif mask_kind == "one key per row":  # the first key, the last (in the last block), and others
        allowed = np.concatenate([[0, n_keys - 1], rng.integers(n_keys, size=2 * 3 * 7 - 2)]).reshape(2, 3, 7, 1)
        mask = np.arange(n_keys) == allowed  # (2, 3, 7, N)
    return q, k, v, mask, 0.7, random_dout(rng, q, k, v)


@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("n_keys", [1, 255, 256, 257, 600])
def test_numba_backward_equals_numpy_formulas_across_key_block_edges(n_keys, mask_kind):
    q, k, v, mask, scale, dout = block_edge_case(n_keys, mask_kind, seed=n_keys)
    actual = kernel_backward(q, k, v, mask, scale, dout)
    assert [a.shape for a in actual] == [(2, 3, 7, 5), (2, 3, n_keys, 5), (2, 3, n_keys, 6)]  # the full batch
    assert_gradients_close(actual, numpy_backward(q, k, v, mask, scale, dout), term_scales(q, k, v, mask, scale, dout))


def test_numba_backward_with_one_key_gives_zero_dq_and_dk():
    # the softmax of a single score is 1 whatever the score: dq = dk = 0, and dv = sum_i dout_i
    q, k, v, mask, scale, dout = block_edge_case(1, "none", seed=0)
    dq, dk, dv = kernel_backward(q, k, v, mask, scale, dout)
    dq_scale, dk_scale, _ = term_scales(q, k, v, mask, scale, dout)
    assert_close(dq, np.zeros_like(dq), what="dq", scale=dq_scale)
    assert_close(dk, np.zeros_like(dk), what="dk", scale=dk_scale)
    assert_close(dv, dout.sum(axis=-2, keepdims=True), what="dv")


def test_numba_backward_at_the_benchmark_shape():
    # M = Dh = Dv = 64: every product runs its blocked 2 x 4 loop, without the remainders
    rng = np.random.default_rng(64)
    q, k, v = rng.standard_normal((2, 64, 64)), rng.standard_normal((2, 600, 64)), rng.standard_normal((2, 600, 64))
    dout, scale = rng.standard_normal((2, 64, 64)), 64**-0.5
    actual = kernel_backward(q, k, v, None, scale, dout)
    assert_gradients_close(actual, numpy_backward(q, k, v, None, scale, dout), term_scales(q, k, v, None, scale, dout))


@pytest.mark.parametrize("n_keys", [5, 257, 600])
def test_numba_backward_with_scores_of_magnitude_1e4(n_keys):
    # integer q and k: scores ~1e4, exact in any order of summation, so the reference's
    # softmax and the kernel's (recomputed from the saved max and sum) see the same scores
    rng = np.random.default_rng(n_keys)
    q, k = (rng.choice([-1.0, 1.0], shape) * rng.integers(50, 101, shape) for shape in ((3, 5, 6), (3, n_keys, 6)))
    k[:, -1] = np.sign(q[:, 0]) * np.abs(k[:, -1])  # q_0 . k_last = sum |q_0| |k_last| >= 1.5e4
    v, dout = rng.standard_normal((3, n_keys, 4)), rng.standard_normal((3, 5, 4))
    actual = kernel_backward(q, k, v, None, 1.0, dout)
    assert all(np.isfinite(g).all() for g in actual)
    assert_gradients_close(actual, numpy_backward(q, k, v, None, 1.0, dout), term_scales(q, k, v, None, 1.0, dout))


# ---------------------------------------------------------------- against torch's autograd


@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("n_keys", [1, 257, 600])
def test_numba_backward_equals_torch_autograd_through_explicit_softmax(n_keys, mask_kind):
    # torch broadcasts q (2, 3, ...) against k (1, 3, ...) and v (3, ...) and sums each
    # input's gradient over its broadcast axes: the kernel's full-batch gradients, summed so
    q, k, v, mask, scale, dout = block_edge_case(n_keys, mask_kind, seed=10 + n_keys)
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    scores = tq @ tk.transpose(-1, -2) * scale
    if mask is not None:
        scores = scores.masked_fill(~torch.from_numpy(np.asarray(mask)), float("-inf"))
    (torch.softmax(scores, dim=-1) @ tv).backward(torch.from_numpy(dout))
    actual = tuple(
        sum_to_shape(grad, x.shape) for grad, x in zip(kernel_backward(q, k, v, mask, scale, dout), (q, k, v))
    )
    expected = tuple(t.grad.numpy() for t in (tq, tk, tv))
    assert_gradients_close(
        actual, expected, term_scales(q, k, v, mask, scale, dout, summed_to=(q.shape, k.shape, v.shape))
    )


@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("n_keys", [1, 257, 600])
def test_numba_backward_equals_torch_sdpa_autograd(n_keys, mask_kind):
    q, k, v, mask, scale, dout = block_edge_case(n_keys, mask_kind, seed=20 + n_keys)
    q, k, v = full_batch(q, k, v)  # SDPA's gradients are then the full-batch ones
    tq, tk, tv = (torch.tensor(np.ascontiguousarray(a), requires_grad=True) for a in (q, k, v))
    attn_mask = None if mask is None else torch.from_numpy(np.asarray(mask))  # True = may attend, as here
    out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=attn_mask, scale=scale)
    out.backward(torch.from_numpy(dout))
    actual = kernel_backward(q, k, v, mask, scale, dout)
    expected = tuple(t.grad.numpy() for t in (tq, tk, tv))
    assert_gradients_close(actual, expected, term_scales(q, k, v, mask, scale, dout))


# ---------------------------------------------------------------- float32


@LARGE_CASES
@given(case=attention_cases(max_queries=13, max_keys=600), seed=seeds)
def test_numba_backward_in_float32_equals_numpy_formulas_in_float32(case, seed):
    # both in float32, each rounding in its own order: TOLERANCES[("float32", "numba vs numpy")] = 1e-5
    q, k, v, mask, scale = case
    scale = resolved(scale, q)
    dout = random_dout(np.random.default_rng(seed), q, k, v)
    actual = kernel_backward(q, k, v, mask, scale, dout, dtype=np.float32)
    assert all(g.dtype == np.float32 for g in actual)
    q32, k32, v32, dout32 = (a.astype(np.float32) for a in (q, k, v, dout))
    expected = numpy_backward(q32, k32, v32, mask, np.float32(scale), dout32)
    assert_gradients_close(actual, expected, term_scales(q, k, v, mask, scale, dout), FLOAT32_BACKENDS)


@LARGE_CASES
@given(case=attention_cases(max_queries=13, max_keys=600), seed=seeds)
def test_numba_backward_in_float32_is_close_to_float64(case, seed):
    # float32 against the float64 kernel: TOLERANCES[("float32", "vs float64 reference")] = 1e-4
    q, k, v, mask, scale = case
    scale = resolved(scale, q)
    dout = random_dout(np.random.default_rng(seed), q, k, v)
    actual = kernel_backward(q, k, v, mask, scale, dout, dtype=np.float32)
    expected = kernel_backward(q, k, v, mask, scale, dout)
    assert_gradients_close(actual, expected, term_scales(q, k, v, mask, scale, dout), FLOAT32_VS_FLOAT64)


# ---------------------------------------------------------------- through refimpl.grad


@LARGE_CASES
@given(case=attention_cases(max_queries=13, max_keys=600), seed=seeds)
def test_grad_attention_backward_numba_equals_numpy(case, seed):
    # TOLERANCES[("float64", "numba vs numpy")] = 1e-12, each gradient relative to its terms
    # (summed over the axes along which its input was broadcast, as the gradients are)
    q, k, v, mask, scale = case
    dout = random_dout(np.random.default_rng(seed), q, k, v)
    expected = attention_backward(q, k, v, dout, mask=mask, scale=scale, backend="numpy")
    actual = attention_backward(q, k, v, dout, mask=mask, scale=scale, backend="numba")
    assert [a.shape for a in actual] == [q.shape, k.shape, v.shape]
    scales = term_scales(q, k, v, mask, resolved(scale, q), dout, summed_to=(q.shape, k.shape, v.shape))
    assert_gradients_close(actual, expected, scales)
