"""The Numba attention backward: gradients of the fused kernel, the softmax recomputed per key block.

The forward pass (refimpl.kernels) computed, for each query row i,

    s_ij = scale * q_i . k_j,   P_ij = exp(s_ij - m_i) / l_i  (0 where masked),   out_i = sum_j P_ij v_j

and kept only out and the softmax statistics m_i (row max) and l_i (row sum), never the
(M, N) weights P. Given the gradient dout of a loss with respect to out, the chain rule
through out = P V and through the softmax gives

    dV = P^T dout                      (N, Dv)
    dP = dout V^T                      (M, N)
    dS = P * (dP - Delta),   Delta_i = sum_j P_ij dP_ij = dout_i . out_i
    dQ = dS K * scale                  (M, Dh)
    dK = dS^T Q * scale                (N, Dh)

(dS_ij = P_ij (dP_ij - sum_j' P_ij' dP_ij') is the softmax's Jacobian applied to dP; the sum
is dout_i . sum_j' P_ij' v_j' = dout_i . out_i, a Dv-term dot product instead of an N-term one.)

As flash attention does, this kernel never holds P, dP or dS whole: it walks the keys in
blocks of KEY_BLOCK, recomputes the block's scores from q and k and its weights from the
saved m and l (one exp per entry, no new max or sum), and from them the block's dP and dS.
Every quantity of a key block (its rows of dK and dV) is complete once that block is done;
dQ sums over all blocks. Memory: a few (M, KEY_BLOCK) and (Dh, KEY_BLOCK) buffers per thread.

The batch entries (batch x heads, flattened) are independent and run in parallel; each owns
its slices of dq, dk and dv, so no two threads write the same memory. The five products per block
reuse the forward kernel's blocked loop (`_add_product`), each operand laid out so that the
innermost loop runs over contiguous memory: the KEY_BLOCK keys, or the head width for dQ.
"""

import math

import numba
import numpy as np

# Numba compiles these into this module's kernel, and its cache checks only this file's date:
# after editing them in kernels.py, clear the cache (NUMBA_CACHE_DIR, or __pycache__ here).
from .kernels import (
    _FASTMATH,
    KEY_BLOCK,
    _add_product,
    _exp_shifted,
    _flat_batch,
    _flat_mask,
    _mask_scores,
    _transpose_into,
)


@numba.njit(parallel=True, cache=True)
def _attention_backward_kernel(q, k, v, mask, scale, out, row_max, row_sum, dout, dq, dk, dv):
    """q (B, M, Dh), k (B, N, Dh), v (B, N, Dv), mask (1|B, 1|M, N|0), out (B, M, Dv),
    row_max, row_sum (B, M), dout (B, M, Dv) -> dq (B, M, Dh), dk (B, N, Dh), dv (B, N, Dv).

    The batch entries are independent and run in parallel.
    """
    for b in numba.prange(q.shape[0]):
        _attend_backward(
            q[b],
            k[b],
            v[b],
            mask[b % mask.shape[0]],
            scale,
            out[b],
            row_max[b],
            row_sum[b],
            dout[b],
            dq[b],
            dk[b],
            dv[b],
        )


@numba.njit(cache=True, fastmath=_FASTMATH)
def _attend_backward(q, k, v, mask, scale, out, row_max, row_sum, dout, dq, dk, dv):
    """One batch entry: q (M, Dh), k (N, Dh), v (N, Dv), mask (1|M, N|0) (empty: none),
    out, dout (M, Dv), row_max, row_sum (M,) -> dq (M, Dh), dk (N, Dh), dv (N, Dv)."""
    n_queries, head_dim = q.shape
    n_keys, value_dim = v.shape
    zero = scale * 0  # 0 in the compute dtype, so that float32 arithmetic stays float32
    scaled_q = q * scale  # (M, Dh), as in the forward pass, so that the scores match its own to rounding
    delta = np.zeros(n_queries, dtype=q.dtype)  # (M,) Delta_i = dout_i . out_i
    inverse_sum = np.empty(n_queries, dtype=q.dtype)  # (M,) 1 / l_i
    for i in range(n_queries):
        for t in range(value_dim):
            delta[i] += dout[i, t] * out[i, t]
        inverse_sum[i] = 1 / row_sum[i]
    k_block = np.zeros((head_dim, KEY_BLOCK), dtype=q.dtype)  # (Dh, KB) keys, transposed
    v_block = np.zeros((value_dim, KEY_BLOCK), dtype=q.dtype)  # (Dv, KB) values, transposed
    weights = np.empty((n_queries, KEY_BLOCK), dtype=q.dtype)  # (M, KB) the scores, then P
    grad_weights = np.empty((n_queries, KEY_BLOCK), dtype=q.dtype)  # (M, KB) dP, then dS
    dv_block = np.empty((value_dim, KEY_BLOCK), dtype=q.dtype)  # (Dv, KB) the block's dV, transposed
    dk_block = np.empty((head_dim, KEY_BLOCK), dtype=q.dtype)  # (Dh, KB) the block's dK, transposed
    dq_sum = np.zeros((n_queries, head_dim), dtype=q.dtype)  # (M, Dh) dS K, summed over the blocks
    exponent_bits = np.empty(KEY_BLOCK, dtype=np.int32)  # scratch for _exp_float32
    for j0 in range(0, n_keys, KEY_BLOCK):
        n_valid = min(KEY_BLOCK, n_keys - j0)
        keys = k[j0 : j0 + n_valid]  # (n_valid, Dh)
        # the block, transposed into contiguous buffers (in the last block the columns past
        # n_valid keep the previous block's keys and values: finite, and weighted by exactly 0)
        _transpose_into(keys, k_block[:, :n_valid])  # (Dh, KB)
        _transpose_into(v[j0 : j0 + n_valid], v_block[:, :n_valid])  # (Dv, KB)
        weights[:] = zero
        _add_product(scaled_q, k_block, weights, KEY_BLOCK)  # (M, KB) s = q k^T * scale
        for i in range(n_queries):  # P_ij = exp(s_ij - m_i) / l_i, 0 where masked or padding
            row = weights[i]  # (KB,)
            _mask_scores(row, mask, i, j0, n_valid)
            _exp_shifted(row, row_max[i], exponent_bits)
            for j in range(KEY_BLOCK):
                row[j] *= inverse_sum[i]
        grad_weights[:] = zero
        _add_product(dout, v_block, grad_weights, KEY_BLOCK)  # (M, KB) dP = dout V^T
        for i in range(n_queries):  # dS = P * (dP - Delta)
            p, grad_row, delta_i = weights[i], grad_weights[i], delta[i]
            for j in range(KEY_BLOCK):
                grad_row[j] = p[j] * (grad_row[j] - delta_i)
        dv_block[:] = zero
        _add_product(dout.T, weights, dv_block, KEY_BLOCK)  # (Dv, KB) dV^T = dout^T P
        dk_block[:] = zero
        _add_product(scaled_q.T, grad_weights, dk_block, KEY_BLOCK)  # (Dh, KB) dK^T = (q * scale)^T dS
        _add_product(grad_weights[:, :n_valid], keys, dq_sum, head_dim)  # (M, Dh) += dS K
        _transpose_into(dv_block[:, :n_valid], dv[j0 : j0 + n_valid])  # (n_valid, Dv)
        _transpose_into(dk_block[:, :n_valid], dk[j0 : j0 + n_valid])  # (n_valid, Dh)
    for i in range(n_queries):
        dq[i] = dq_sum[i] * scale


def attention_backward(q, k, v, mask, scale, out, row_max, row_sum, dout):
    """The gradients of `refimpl.kernels.attention`, on checked arguments.

    q (..., M, Dh), k (..., N, Dh), v (..., N, Dv), mask None or bool broadcastable to
    (..., M, N) with an allowed key in every row, scale > 0; out (..., M, Dv) and row_max,
    row_sum (..., M) as `kernels.attention(q, k, v, mask, scale)` returned them; dout, the
    gradient of a loss with respect to out, broadcastable to (..., M, Dv). All of one dtype
    (float32 or float64), the one computed in.

    Returns dq (..., M, Dh), dk (..., N, Dh), dv (..., N, Dv), all with the full batch shape
    `...` = the broadcast of q's, k's and v's batch axes. Where an input was broadcast along
    a batch axis, its gradient is the sum of the returned one over that axis (the caller's
    job: see refimpl.grad).

        P = exp(s - m) / l,   s = q k^T * scale,   Delta_i = dout_i . out_i
        dV = P^T dout,   dS = P * (dout V^T - Delta),   dQ = dS K * scale,   dK = dS^T Q * scale
    """
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    n_batch = math.prod(batch)
    (n_queries, head_dim), (n_keys, value_dim) = q.shape[-2:], v.shape[-2:]
    dtype = q.dtype
    q_flat, k_flat, v_flat = (_flat_batch(x, batch) for x in (q, k, v))  # (B, M, Dh), (B, N, Dh), (B, N, Dv)
    out_flat, dout_flat = (_flat_batch(x, batch) for x in (out, dout))  # (B, M, Dv)
    row_max_flat, row_sum_flat = (_flat_batch(x, batch, core_ndim=1) for x in (row_max, row_sum))  # (B, M)
    dq = np.empty((n_batch, n_queries, head_dim), dtype)
    dk = np.empty((n_batch, n_keys, head_dim), dtype)
    dv = np.empty((n_batch, n_keys, value_dim), dtype)
    flat_mask = _flat_mask(mask, batch, n_queries, n_keys)
    _attention_backward_kernel(
        q_flat,
        k_flat,
        v_flat,
        flat_mask,
        dtype.type(scale),
        out_flat,
        row_max_flat,
        row_sum_flat,
        dout_flat,
        dq,
        dk,
        dv,
    )
    return (
        dq.reshape(batch + (n_queries, head_dim)),
        dk.reshape(batch + (n_keys, head_dim)),
        dv.reshape(batch + (n_keys, value_dim)),
    )
