"""Softmax and scaled dot-product attention: the NumPy reference, and the dispatch to Numba.

Axis letters (one table for the whole project): M queries, N keys, Dh query/key
width, Dv value width; the leading `...` are batch axes (batch, heads, ...).
"""

import numpy as np

from . import _checks

BACKENDS = ("numpy", "numba")


def softmax(x, axis=-1, mask=None, *, dtype=np.float64):
    """Numerically stable softmax along `axis`, with an optional mask.

        softmax(x)_j = exp(x_j - m) / sum_k exp(x_k - m),   m = max_k x_k

    The sums and the max run over the allowed entries only (mask True); masked entries
    get exactly 0. Subtracting the max changes nothing mathematically (it cancels between
    numerator and denominator) but keeps exp from overflowing: exp(1000) is inf in float64.

    x: float array, any shape.   mask: bool, broadcastable to x.shape, True = allowed.
    returns an array of x's shape in `dtype` whose slices along `axis` sum to 1.

    Raises ValueError where a slice along `axis` has no allowed entry: the softmax of
    nothing is undefined, and a silent NaN or uniform row would hide the bug.
    """
    dtype = _checks.compute_dtype(dtype)
    x = _checks.float_array("x", x, dtype)
    axis = _checks.axis_index("axis", axis, x.ndim)
    if mask is not None:
        mask = _checks.bool_array("mask", mask, "True = allowed")
        _checks.broadcasts_to("mask", mask, x.shape, "x.shape")
        _check_rows_allowed(mask, x.shape, axis)
    elif x.shape[axis] == 0:
        raise ValueError(f"x has no entries along axis {axis}; the softmax of nothing is undefined")
    return _softmax(x, axis, mask)


def _softmax(x, axis, mask):
    """The softmax on checked arguments: every slice along `axis` has an allowed entry."""
    if mask is not None:
        x = np.where(mask, x, -np.inf)
    with np.errstate(over="ignore"):  # a difference past the float range is -inf, and exp(-inf) = 0 is right
        e = x - x.max(axis=axis, keepdims=True)  # <= 0, with 0 at the max
    np.exp(e, out=e)  # in place; masked: exp(-inf) = 0 exactly
    e /= e.sum(axis=axis, keepdims=True)  # the max contributes 1, so the sum is >= 1
    return e


def _check_rows_allowed(mask, shape, axis):
    """Raise ValueError if any slice of `mask` (broadcast to `shape`) along `axis` is all False."""
    empty = ~np.broadcast_to(mask, shape).any(axis=axis)
    if empty.any():
        first = tuple(int(i) for i in np.argwhere(empty)[0])
        raise ValueError(
            f"mask allows no entry in {int(empty.sum())} row(s) (the first at index {first}); "
            "every query needs at least one key it may attend to"
        )


def attention(q, k, v, *, mask=None, scale=None, backend="numpy", return_weights=False, dtype=np.float64):
    """Scaled dot-product attention.

        out = softmax(q k^T * scale, masked) v,      scale = Dh ** -0.5 by default

    q: (..., M, Dh)   k: (..., N, Dh)   v: (..., N, Dv)
    mask: bool, broadcastable to (..., M, N), True = query may attend to key.
    The batch axes `...` of q, k and v broadcast against each other (as in `np.matmul`).
    returns out (..., M, Dv), and the weights (..., M, N) too if `return_weights`.

    Why the scale: for q and k with independent unit-variance entries, q.k is a sum of Dh
    terms of variance 1, so its variance is Dh; multiplying by Dh ** -0.5 brings it back
    to 1 and keeps the softmax out of its saturated, near one-hot regime.

    backend="numpy" forms the (..., M, N) score matrix; backend="numba" streams over the
    keys with an online softmax (refimpl.kernels) and never holds it. Both compute in
    `dtype` (float64 by default, float32 to emulate float32 arithmetic).
    """
    check_backend(backend)
    q, k, v, mask, scale = _checked(q, k, v, mask, scale, dtype)
    out, weights = _attention(q, k, v, mask, scale, backend, return_weights)
    return (out, weights) if return_weights else out


def _checked(q, k, v, mask, scale, dtype):
    """attention's arguments checked: q, k, v as finite arrays of `dtype` whose batch axes
    broadcast, mask boolean with an allowed key in every row, scale a positive number
    (Dh ** -0.5 for None). Returns (q, k, v, mask, scale)."""
    dtype = _checks.compute_dtype(dtype)
    q = _checks.float_array("q", q, dtype, "(..., M, Dh)")
    k = _checks.float_array("k", k, dtype, "(..., N, Dh)")
    v = _checks.float_array("v", v, dtype, "(..., N, Dv)")
    _checks.ndim_at_least("q", q, 2, "(..., M, Dh)")
    _checks.ndim_at_least("k", k, 2, "(..., N, Dh)")
    _checks.ndim_at_least("v", v, 2, "(..., N, Dv)")
    if q.shape[-1] == 0:
        raise ValueError(f"q must have shape (..., M, Dh) with Dh >= 1; got {q.shape}")
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"k must have shape (..., N, Dh) with Dh = q.shape[-1] = {q.shape[-1]}; got {k.shape}")
    if v.shape[-2] != k.shape[-2]:
        raise ValueError(f"v must have shape (..., N, Dv) with N = k.shape[-2] = {k.shape[-2]}; got {v.shape}")
    try:
        batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except ValueError:
        raise ValueError(
            f"the batch axes of q {q.shape[:-2]}, k {k.shape[:-2]} and v {v.shape[:-2]} do not broadcast"
        ) from None
    scores_shape = batch + (q.shape[-2], k.shape[-2])
    if mask is not None:
        mask = _checks.bool_array("mask", mask, "True = may attend")
        _checks.broadcasts_to("mask", mask, scores_shape, "(..., M, N)")
        _check_rows_allowed(mask, scores_shape, -1)
    elif k.shape[-2] == 0:
        raise ValueError("k has N = 0 keys; every query needs at least one key it may attend to")
    scale = q.shape[-1] ** -0.5 if scale is None else _checks.positive_number("scale", scale)
    return q, k, v, mask, scale


def _attention(q, k, v, mask, scale, backend="numpy", return_weights=True):
    """Attention on checked arguments: out (..., M, Dv), and weights (..., M, N) or None.

    The NumPy path always has the weights; the Numba kernel only keeps the softmax
    statistics, from which the weights are recomputed if asked for. Both raise the same
    ValueError where the scores could overflow (`check_scores_fit`; the kernel's wrapper
    checks for the Numba path, so that refimpl.grad's use of it is checked too).
    """
    if backend == "numba":
        kernels = numba_kernels()
        out, row_max, row_sum = kernels.attention(q, k, v, mask, scale)
        if not return_weights:
            return out, None
        return out, kernels.weights_from_stats(q, k, mask, scale, row_max, row_sum)
    check_scores_fit(q, k, scale)
    scores = q @ np.swapaxes(k, -1, -2) * scale  # (..., M, N), batch axes of q and k
    weights = _softmax(scores, -1, mask)  # (..., M, N), rows sum to 1
    out = weights @ v  # (..., M, Dv), batch axes of q, k and v
    return out, np.broadcast_to(weights, out.shape[:-1] + weights.shape[-1:])


def check_scores_fit(q, k, scale):
    """Raise ValueError where the scores q k^T * scale could overflow q's dtype.

    Every partial sum of a score, in any order of summation and before or after the
    scale, is at most Dh * max|q| * max|k| * max(scale, 1) in size; below the largest
    float, no backend overflows, and above it the check raises for both alike (so the
    NumPy and Numba paths end the float range at the same place). Scores that large are
    no attention to compute: their softmax is a one-hot decided by rounding, and the
    float64 path returned NaN for them. q (..., M, Dh), k (..., N, Dh), both checked.
    """
    limit = float(np.finfo(q.dtype).max)
    q_max, k_max = (max(float(a.max(initial=0.0)), -float(a.min(initial=0.0))) for a in (q, k))  # no |a| temporary
    bound = q.shape[-1] * q_max * k_max * max(scale, 1.0)  # Python floats: inf past the range, no warning
    if bound > limit:
        raise ValueError(
            f"q and k give attention scores q k^T * scale beyond the {q.dtype} range: Dh * max|q| * max|k| * "
            f"max(scale, 1) = {q.shape[-1]} * {q_max:.3g} * {k_max:.3g} * {max(scale, 1.0):.3g} = {bound:.3g} "
            f"> {limit:.3g}; scale q or k down (in multi-head attention and the resampler, q and k are the "
            "projected queries and keys)"
        )


def check_backend(backend):
    """Check `backend`; "numba" needs Numba installed (refimpl itself needs only NumPy)."""
    _checks.one_of("backend", backend, BACKENDS)
    if backend == "numba":
        numba_kernels()


def numba_kernels():
    """The module refimpl.kernels, or an ImportError that says how to get Numba."""
    try:
        from . import kernels
    except ImportError as exc:
        raise ImportError(
            "backend='numba' needs the numba package, which could not be imported "
            f"({exc}); install it (pip install numba) or use backend='numpy'"
        ) from exc
    return kernels


# ---- the seam for refimpl.grad: attention's checks, and attention on checked arguments


def checked_attention_arguments(q, k, v, *, mask=None, scale=None, dtype=np.float64):
    """attention's arguments checked, with its errors: returns (q, k, v, mask, scale), q, k
    and v cast to `dtype`, mask boolean with an allowed key in every row, scale a number
    (Dh ** -0.5 for None)."""
    return _checked(q, k, v, mask, scale, dtype)


def attention_on_checked(q, k, v, *, mask, scale, backend="numpy", return_weights=True):
    """attention on arguments from checked_attention_arguments: returns out (..., M, Dv) and
    the weights (..., M, N), or None for them on the Numba path without `return_weights`."""
    return _attention(q, k, v, mask, scale, backend, return_weights)
