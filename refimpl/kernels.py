"""The Numba attention kernel: an online (running-max) softmax that streams over the keys.

    out_i = sum_j exp(s_ij - m_i) v_j / sum_j exp(s_ij - m_i),   s_ij = scale * q_i . k_j

The NumPy path forms the whole (M, N) score matrix s before the softmax. This kernel
never does: it walks the keys in blocks of KEY_BLOCK and keeps, for each query row i,
three running quantities over the keys seen so far,

    m   = max_j s_ij                       (the running max)
    l   = sum_j exp(s_ij - m)              (the running denominator)
    acc = sum_j exp(s_ij - m) v_j          (the running numerator, a Dv-vector)

When a block raises the max from m to m', everything summed under m is rescaled by
exp(m - m'), after which l and acc are exactly what they would have been had m' been
known from the start. At the end out_i = acc / l. Memory: one (M, KEY_BLOCK) score
block per thread instead of (M, N); the threads split the flattened batch axes
(batch x heads). Masked keys (and the padding of the last block) score -inf, so
exp gives them exactly 0 and the max ignores them.

The kernel returns m and l as well: with them the weights can be recomputed exactly
later (`weights_from_stats`), which is what a flash-attention backward pass does.

Speed comes from memory layout, not cleverness: each key block is copied, transposed,
into a small contiguous buffer (Dh, KEY_BLOCK), and its values into (KEY_BLOCK, Dv), so
every inner loop runs over contiguous memory and compiles to SIMD instructions; the
block stays in cache while all M queries use it, and four query rows (or four keys)
share each load.
"""

import math
import os

import numba
import numpy as np

# Numba's own thread pool rather than OpenMP, unless the user chose: measured 10-25% faster
# on this kernel, and it does not contend with torch's OpenMP threads in the same process.
# (Numba fixes its threading layer at the first parallel launch in a process.)
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

KEY_BLOCK = 256  # keys per block; a multiple of 4
_FASTMATH = {"reassoc", "contract", "nsz"}  # let sums be reordered for SIMD; no NaN/inf assumptions


@numba.njit(parallel=True, cache=True)
def _attention_kernel(q, k, v, mask, scale, out, row_max, row_sum):
    """q (B, M, Dh), k (B, N, Dh), v (B, N, Dv), mask (1|B, 1|M, N|0) -> out (B, M, Dv), row_max, row_sum (B, M).

    The batch entries are independent and run in parallel.
    """
    for b in numba.prange(q.shape[0]):
        _attend(q[b], k[b], v[b], mask[b % mask.shape[0]], scale, out[b], row_max[b], row_sum[b])


@numba.njit(cache=True, fastmath=_FASTMATH)
def _attend(q, k, v, mask, scale, out, row_max, row_sum):
    """One batch entry: q (M, Dh), k (N, Dh), v (N, Dv), mask (1|M, N|0); an empty mask means none."""
    n_queries, head_dim = q.shape
    n_keys, value_dim = v.shape
    has_mask = mask.shape[1] > 0
    zero = scale * 0  # 0 in the compute dtype, so that float32 arithmetic stays float32
    scaled_q = q * scale  # (M, Dh)
    k_block = np.zeros((head_dim, KEY_BLOCK), dtype=q.dtype)  # (Dh, KB) keys, transposed
    v_block = np.zeros((KEY_BLOCK, value_dim), dtype=q.dtype)  # (KB, Dv)
    scores = np.empty((n_queries, KEY_BLOCK), dtype=q.dtype)  # (M, KB), then the weights
    acc = np.zeros((n_queries, value_dim), dtype=q.dtype)  # (M, Dv), running numerators
    exponent_bits = np.empty(KEY_BLOCK, dtype=np.int32)  # scratch for _exp_float32
    row_max[:] = -np.inf
    row_sum[:] = zero
    for j0 in range(0, n_keys, KEY_BLOCK):
        n_valid = min(KEY_BLOCK, n_keys - j0)
        for j in range(n_valid):  # copy the block into contiguous buffers
            k_block[:, j] = k[j0 + j]
            v_block[j] = v[j0 + j]
        _block_scores(scaled_q, k_block, scores)  # (M, KB)
        for i in range(n_queries):
            row = scores[i]  # (KB,)
            row[n_valid:] = -np.inf  # padding of the last block: exp gives exactly 0
            if has_mask:
                mask_row = mask[i % mask.shape[0]]  # (N,)
                for j in range(n_valid):
                    if not mask_row[j0 + j]:
                        row[j] = -np.inf
            block_max = row.max()
            if block_max == -np.inf:  # nothing allowed for query i in this block
                row[:] = zero
                continue
            if block_max > row_max[i]:
                correction = math.exp(row_max[i] - block_max)  # 0 on the first block, where acc and l are 0
                row_sum[i] *= correction
                acc[i] *= correction
                row_max[i] = block_max
            total = zero
            if q.itemsize == 4:  # float32: a polynomial exp that compiles to SIMD instructions
                for j in range(KEY_BLOCK):
                    row[j] -= row_max[i]
                _exp_float32(row, exponent_bits)
                for j in range(KEY_BLOCK):
                    total += row[j]
            else:  # float64: C's exp, accurate to within an ulp, for the 1e-12 agreement
                for j in range(KEY_BLOCK):
                    row[j] = math.exp(row[j] - row_max[i])
                    total += row[j]
            row_sum[i] += total
        _accumulate_values(scores, v_block, acc)  # acc += P @ V_block
    for i in range(n_queries):
        out[i] = acc[i] / row_sum[i]


# Constants of _exp_float32, as float32 so that its arithmetic stays float32 (8 SIMD lanes).
_LOG2E = np.float32(1.4426950408889634)  # 1 / ln 2
_LN2_HI, _LN2_LO = np.float32(0.693359375), np.float32(-2.12194440e-4)  # ln 2 = HI + LO, HI exact in 9 bits
_C0, _C1, _C2 = np.float32(1.9875691500e-4), np.float32(1.3981999507e-3), np.float32(8.3334519073e-3)
_C3, _C4, _C5 = np.float32(4.1665795894e-2), np.float32(1.6666665459e-1), np.float32(5.0000001201e-1)
_HALF, _ONE, _ZERO = np.float32(0.5), np.float32(1.0), np.float32(0.0)
_UNDERFLOW, _MIN_EXPONENT = np.float32(-87.0), np.float32(-126.0)


@numba.njit(cache=True, fastmath=_FASTMATH)
def _exp_float32(x, exponent_bits):
    """x = exp(x) in place, for a float32 array of x <= 0; exponent_bits is int32 scratch of x's size.

    C's expf is a function call per element, which the compiler cannot turn into SIMD code
    without a vector math library; this is the same algorithm (Cephes' expf) written out:

        exp(x) = 2^n * exp(r),   n = round(x / ln 2),   r = x - n ln 2  in [-ln2/2, ln2/2]

    exp(r) is a degree-7 polynomial (relative error under 3e-7, a few float32 ulps) and 2^n
    is built directly from its bits: exponent field n + 127, shifted past the 23 mantissa
    bits. Below x = -87, where exp(x) < 2^-125 leaves float32's normal range, the result is
    0: next to the softmax's largest term, exp(0) = 1, such a term is invisible anyway.
    """
    for j in range(x.shape[0]):
        value = x[j]
        n = np.floor(value * _LOG2E + _HALF)
        r = value - n * _LN2_HI - n * _LN2_LO
        polynomial = (((((_C0 * r + _C1) * r + _C2) * r + _C3) * r + _C4) * r + _C5) * r * r + r + _ONE
        x[j] = polynomial if value > _UNDERFLOW else _ZERO
        exponent_bits[j] = (np.int32(max(n, _MIN_EXPONENT)) + 127) << 23
    two_to_the_n = exponent_bits.view(np.float32)
    for j in range(x.shape[0]):
        x[j] *= two_to_the_n[j]


@numba.njit(cache=True, fastmath=_FASTMATH)
def _block_scores(scaled_q, k_block, scores):
    """scores (M, KB) = scaled_q (M, Dh) @ k_block (Dh, KB); four query rows share each key load."""
    n_queries, head_dim = scaled_q.shape
    scores[:] = 0.0
    i = 0
    while i + 4 <= n_queries:
        s0, s1, s2, s3 = scores[i], scores[i + 1], scores[i + 2], scores[i + 3]
        for t in range(head_dim):
            a0, a1, a2, a3 = scaled_q[i, t], scaled_q[i + 1, t], scaled_q[i + 2, t], scaled_q[i + 3, t]
            keys_t = k_block[t]  # (KB,)
            for j in range(KEY_BLOCK):
                s0[j] += a0 * keys_t[j]
                s1[j] += a1 * keys_t[j]
                s2[j] += a2 * keys_t[j]
                s3[j] += a3 * keys_t[j]
        i += 4
    for i in range(i, n_queries):  # the last M % 4 rows
        for t in range(head_dim):
            a = scaled_q[i, t]
            keys_t = k_block[t]
            for j in range(KEY_BLOCK):
                scores[i, j] += a * keys_t[j]


@numba.njit(cache=True, fastmath=_FASTMATH)
def _accumulate_values(weights, v_block, acc):
    """acc (M, Dv) += weights (M, KB) @ v_block (KB, Dv); four keys per pass over an acc row."""
    for i in range(weights.shape[0]):
        p, acc_row = weights[i], acc[i]
        for j in range(0, KEY_BLOCK, 4):
            p0, p1, p2, p3 = p[j], p[j + 1], p[j + 2], p[j + 3]
            v0, v1, v2, v3 = v_block[j], v_block[j + 1], v_block[j + 2], v_block[j + 3]
            for t in range(acc_row.shape[0]):
                acc_row[t] += p0 * v0[t] + p1 * v1[t] + p2 * v2[t] + p3 * v3[t]


def attention(q, k, v, mask, scale):
    """Run the kernel on checked arguments (see `refimpl.attention`).

    q (..., M, Dh), k (..., N, Dh), v (..., N, Dv), mask None or bool broadcastable to
    (..., M, N) with an allowed key in every row. Returns out (..., M, Dv) and the softmax
    statistics row_max, row_sum (..., M).
    """
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    n_batch = math.prod(batch)
    (n_queries, head_dim), n_keys, value_dim = q.shape[-2:], k.shape[-2], v.shape[-1]
    dtype = q.dtype
    # contiguous (B, ., .) arrays: one compiled version of the kernel per dtype, not per layout
    q_flat = np.ascontiguousarray(np.broadcast_to(q, batch + q.shape[-2:]).reshape(n_batch, n_queries, head_dim))
    k_flat = np.ascontiguousarray(np.broadcast_to(k, batch + k.shape[-2:]).reshape(n_batch, n_keys, head_dim))
    v_flat = np.ascontiguousarray(np.broadcast_to(v, batch + v.shape[-2:]).reshape(n_batch, n_keys, value_dim))
    out = np.empty((n_batch, n_queries, value_dim), dtype)
    row_max = np.empty((n_batch, n_queries), dtype)
    row_sum = np.empty((n_batch, n_queries), dtype)
    flat_mask = _flat_mask(mask, batch, n_queries, n_keys)
    _attention_kernel(q_flat, k_flat, v_flat, flat_mask, dtype.type(scale), out, row_max, row_sum)
    return (
        out.reshape(batch + (n_queries, value_dim)),
        row_max.reshape(batch + (n_queries,)),
        row_sum.reshape(batch + (n_queries,)),
    )


def _flat_mask(mask, batch, n_queries, n_keys):
    """The mask as a contiguous (1|B, 1|M, N) array; (1, 1, 0) for no mask.

    A mask that does not vary along an axis keeps that axis at size 1, so a key-padding
    mask (..., 1, N) costs B*N bytes, never B*M*N.
    """
    if mask is None:
        return np.ones((1, 1, 0), dtype=np.bool_)
    rows = n_queries if mask.ndim >= 2 and mask.shape[-2] > 1 else 1
    flat = np.broadcast_to(mask, batch + (rows, n_keys))  # (..., 1|M, N), a view
    if not any(size > 1 for size in mask.shape[:-2]):  # the same for every batch entry
        flat = flat[(0,) * len(batch)][None] if math.prod(batch) else flat.reshape(0, rows, n_keys)
    return np.ascontiguousarray(flat.reshape(-1, rows, n_keys))


def weights_from_stats(q, k, mask, scale, row_max, row_sum):
    """The attention weights (..., M, N) from the kernel's softmax statistics.

        p_ij = exp(s_ij - m_i) / l_i,   0 where masked

    Recomputing the scores is how flash attention avoids storing the (M, N) matrix between
    the forward and the backward pass; here it also checks the statistics.
    """
    scores = q @ np.swapaxes(k, -1, -2) * scale  # (..., M, N)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    return np.exp(scores - row_max[..., None]) / row_sum[..., None]


@numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)
def erfc(x):
    """The complementary error function elementwise (NumPy has none): C's erfc, compiled (for the exact GELU)."""
    return math.erfc(x)
