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
later (`weights_from_stats`), which is what a flash-attention backward pass does
(refimpl/kernels_backward.py).

Speed comes from memory layout, not cleverness: each key block is copied, transposed,
into a small contiguous buffer (Dh, KEY_BLOCK), and its values into (KEY_BLOCK, Dv), so
every inner loop runs over contiguous memory and compiles to SIMD instructions; the
block stays in cache while all M queries use it, and each pass of a product handles two
rows and four terms at once (`_add_product`), so that each load feeds several
multiplications. (refimpl/kernels_backward.py, the gradients, reuses these pieces.)
"""

import math
import os

import numba
import numpy as np

from .attention import check_scores_fit

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
        _transpose_into(k[j0 : j0 + n_valid], k_block[:, :n_valid])  # copy the block into contiguous buffers
        v_block[:n_valid] = v[j0 : j0 + n_valid]
        scores[:] = zero
        _add_product(scaled_q, k_block, scores, KEY_BLOCK)  # (M, KB) scores
        for i in range(n_queries):
            row = scores[i]  # (KB,)
            _mask_scores(row, mask, i, j0, n_valid)
            block_max = row.max()
            if block_max == -np.inf:  # nothing allowed for query i in this block
                row[:] = zero
                continue
            if block_max > row_max[i]:
                correction = math.exp(row_max[i] - block_max)  # 0 on the first block, where acc and l are 0
                row_sum[i] *= correction
                acc[i] *= correction
                row_max[i] = block_max
            _exp_shifted(row, row_max[i], exponent_bits)  # exp(s_ij - m_i)
            total = zero
            for j in range(KEY_BLOCK):
                total += row[j]
            row_sum[i] += total
        _add_product(scores, v_block, acc, value_dim)  # (M, Dv) acc += P @ V_block
    for i in range(n_queries):
        out[i] = acc[i] / row_sum[i]


@numba.njit(cache=True, inline="always")
def _mask_scores(row, mask, i, j0, n_valid):
    """Set to -inf, in query i's scores row (KB,) for keys j0.., those its mask forbids and
    the padding past n_valid in the last block: exp gives them exactly 0 and the max ignores
    them. mask (1|M, N|0); an empty mask means none."""
    row[n_valid:] = -np.inf
    if mask.shape[1] > 0:
        mask_row = mask[i % mask.shape[0]]  # (N,)
        for j in range(n_valid):
            if not mask_row[j0 + j]:
                row[j] = -np.inf


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _exp_shifted(row, shift, exponent_bits):
    """row = exp(row - shift) in place, for row (KB,) <= shift; exponent_bits is int32 scratch (KB,).

    float32: a polynomial exp that compiles to SIMD instructions (`_exp_float32`);
    float64: C's exp, accurate to within an ulp, for the 1e-12 agreement.
    """
    if row.itemsize == 4:
        for j in range(row.shape[0]):
            row[j] -= shift
        _exp_float32(row, exponent_bits)
    else:
        for j in range(row.shape[0]):
            row[j] = math.exp(row[j] - shift)


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


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _add_product(a, b, out, n_cols):
    """out (R, n_cols) += a (R, C) @ b (C, n_cols): the scores q k^T and the values P V.

    Two rows of `a` and four of `b` per pass over two rows of out: each element of out is
    loaded and stored once per four multiply-adds, and each element of b loaded serves both
    rows, so the loop is bound by the arithmetic rather than by loads and stores. The row
    past the last pair and the terms past the last multiple of 4 come one at a time at the end.

    n_cols is b's and out's width, passed so that a call with the constant KEY_BLOCK gives
    the compiler a fixed trip count (it unrolls the inner loop fully: 1.3-1.5x, measured).
    """
    n_rows, inner = a.shape
    paired_rows, blocked_inner = n_rows - n_rows % 2, inner - inner % 4
    for i in range(0, paired_rows, 2):
        out0, out1 = out[i], out[i + 1]  # (n_cols,) each
        for t in range(0, blocked_inner, 4):
            b0, b1, b2, b3 = b[t], b[t + 1], b[t + 2], b[t + 3]  # (n_cols,) each
            a00, a01, a02, a03 = a[i, t], a[i, t + 1], a[i, t + 2], a[i, t + 3]
            a10, a11, a12, a13 = a[i + 1, t], a[i + 1, t + 1], a[i + 1, t + 2], a[i + 1, t + 3]
            for j in range(n_cols):
                out0[j] += a00 * b0[j] + a01 * b1[j] + a02 * b2[j] + a03 * b3[j]
                out1[j] += a10 * b0[j] + a11 * b1[j] + a12 * b2[j] + a13 * b3[j]
    for i in range(n_rows):  # the last row if R is odd, and every row's last C % 4 terms
        out_i = out[i]
        for t in range(blocked_inner if i < paired_rows else 0, inner):
            a_it, b_t = a[i, t], b[t]
            for j in range(n_cols):
                out_i[j] += a_it * b_t[j]


@numba.njit(cache=True, inline="always")
def _transpose_into(src, dst):
    """dst (C, R) = src (R, C)^T, a row of dst at a time: contiguous writes, strided reads.

    Copying a block of keys in, 2-3x faster than writing a column of dst at a time (measured).
    """
    for t in range(dst.shape[0]):
        dst_t = dst[t]  # (R,)
        for j in range(dst.shape[1]):
            dst_t[j] = src[j, t]


def attention(q, k, v, mask, scale):
    """Run the kernel on checked arguments (see `refimpl.attention`).

    q (..., M, Dh), k (..., N, Dh), v (..., N, Dv), mask None or bool broadcastable to
    (..., M, N) with an allowed key in every row. Returns out (..., M, Dv) and the softmax
    statistics row_max, row_sum (..., M).

    The running numerator sum_j exp(s_ij - m_i) v_j sums up to N terms of size up to max |v|
    (where the NumPy path's normalised weights keep every sum within max |v|), so for v near
    the largest float it can overflow; then the kernel runs again on v * 2^-e, e the binary
    exponent of max |v|, and the output is scaled back by 2^e: a power of 2 scales exactly,
    so the output is what it would have been in a wider float range. The scores cannot
    overflow: ValueError where they could (`refimpl.attention.check_scores_fit`, the same
    check as the NumPy path's).
    """
    check_scores_fit(q, k, scale)
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    n_batch = math.prod(batch)
    n_queries, n_keys, value_dim = q.shape[-2], k.shape[-2], v.shape[-1]
    dtype = q.dtype
    q_flat, k_flat, v_flat = (_flat_batch(x, batch) for x in (q, k, v))  # (B, M, Dh), (B, N, Dh), (B, N, Dv)
    out = np.empty((n_batch, n_queries, value_dim), dtype)
    row_max = np.empty((n_batch, n_queries), dtype)
    row_sum = np.empty((n_batch, n_queries), dtype)
    flat_mask = _flat_mask(mask, batch, n_queries, n_keys)
    _attention_kernel(q_flat, k_flat, v_flat, flat_mask, dtype.type(scale), out, row_max, row_sum)
    if not np.isfinite(out).all():  # a running numerator passed the float range (large v): run again, scaled
        exponent = int(np.frexp(max(float(v.max()), -float(v.min())))[1])
        _attention_kernel(
            q_flat, k_flat, np.ldexp(v_flat, -exponent), flat_mask, dtype.type(scale), out, row_max, row_sum
        )
        out = np.ldexp(out, exponent)
    return (
        out.reshape(batch + (n_queries, value_dim)),
        row_max.reshape(batch + (n_queries,)),
        row_sum.reshape(batch + (n_queries,)),
    )


def _flat_batch(array, batch, core_ndim=2):
    """`array` (..., *core) broadcast to batch + core and flattened to a (B, *core) kernel array;
    core is the last `core_ndim` axes (2 for matrices, 1 for per-row statistics)."""
    core = array.shape[array.ndim - core_ndim :]
    if array.shape != batch + core:
        array = np.broadcast_to(array, batch + core)
    return _kernel_array(array.reshape((math.prod(batch),) + core))


def _flat_mask(mask, batch, n_queries, n_keys):
    """The mask as a (1|B, 1|M, N) kernel array; (1, 1, 0) for no mask.

    A mask that does not vary along an axis keeps that axis at size 1, so a key-padding
    mask (..., 1, N) costs B*N bytes, never B*M*N.
    """
    if mask is None:
        return np.ones((1, 1, 0), dtype=np.bool_)
    rows = n_queries if mask.ndim >= 2 and mask.shape[-2] > 1 else 1
    flat = np.broadcast_to(mask, batch + (rows, n_keys))  # (..., 1|M, N), a view
    if not any(size > 1 for size in mask.shape[:-2]):  # the same for every batch entry
        flat = flat[(0,) * len(batch)][None] if math.prod(batch) else flat.reshape(0, rows, n_keys)
    return _kernel_array(flat.reshape(-1, rows, n_keys))


def _kernel_array(array):
    """`array` as the kernels take every array: C-contiguous and writable (copied if not).

    Numba compiles a kernel once per combination of its arguments' types, and an array's
    type includes its layout and whether it is read-only (as np.broadcast_to's views are).
    Passing only contiguous, writable arrays keeps that to one compiled version per dtype,
    instead of one for every mix of flags, each taking seconds to compile.
    """
    if array.flags.c_contiguous and array.flags.writeable:
        return array
    return np.array(array, order="C")


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
