"""Backward passes of softmax and scaled dot-product attention (refimpl.attention).

    forward:   s = q k^T * scale            (..., M, N)
               p = softmax(s, masked)       (..., M, N), rows sum to 1
               out = p v                    (..., M, Dv)
    backward:  dv = p^T dout                (..., N, Dv)
               dp = dout v^T                (..., M, N)
               ds = p * (dp - rowsum(dp * p))    (softmax_backward)
               dq = ds k * scale,   dk = ds^T q * scale

A masked entry has p = 0, so ds = 0 there: a masked key gets no gradient from that query,
which is exact, since its score never reached the output.

Axis letters: M queries, N keys, Dh query/key width, Dv value width; `...` batch axes,
which broadcast between q, k and v as in the forward pass. An input that was broadcast
along a batch axis gets the sum of the gradients along it, so dq has q's shape, dk k's,
dv v's.
"""

import numpy as np

from .. import _checks
from ..attention import attention_on_checked, checked_attention_arguments, numba_kernels
from ..attention import check_backend as check_forward_backend
from .broadcast import sum_to_shape


def softmax_backward(weights, dweights, axis=-1):
    """The gradient of the scores from the gradient of the softmax weights.

        ds_i = p_i * (dp_i - sum_j dp_j p_j)        (sums along `axis`)

    from dp_j/ds_i = p_j * (delta_ij - p_i). Masked entries (p = 0) get ds = 0.

    weights: p = softmax(s, axis, mask), any shape.   dweights: dL/dp, p's shape.
    returns dL/ds, p's shape, float64.
    """
    weights = _checks.float_array("weights", weights, np.float64)
    dweights = _checks.float_array("dweights", dweights, np.float64)
    _checks.has_shape("dweights", dweights, weights.shape, "weights.shape")
    return _softmax_backward(weights, dweights, axis)


def _softmax_backward(weights, dweights, axis):
    """softmax_backward on checked arrays."""
    return weights * (dweights - np.sum(dweights * weights, axis=axis, keepdims=True))


def attention_backward(q, k, v, dout, *, mask=None, scale=None, backend="numpy"):
    """The gradients of scaled dot-product attention (refimpl.attention) for its inputs.

        out = softmax(q k^T * scale, masked) v;   given dout = dL/dout, returns
        dq = ds k * scale,  dk = ds^T q * scale,  dv = p^T dout,   ds = softmax_backward(p, dout v^T)

    q: (..., M, Dh)   k: (..., N, Dh)   v: (..., N, Dv)   mask: bool, broadcastable to (..., M, N),
    with the argument checks and broadcasting of refimpl.attention (scale = Dh ** -0.5 for None).
    dout: (..., M, Dv), the output's shape, with the broadcast batch axes of q, k and v.
    returns dq, dk, dv, shaped like q, k, v, float64: summed over the batch axes along which
    each was broadcast.

    backend="numpy" forms the weights p; backend="numba" runs the streaming kernel forward
    (refimpl.kernels) for the output and the softmax statistics, and the backward kernel
    (refimpl.kernels_backward), which recomputes p block by block from them.
    """
    check_backend(backend)
    q, k, v, mask, scale = checked_attention_arguments(q, k, v, mask=mask, scale=scale)
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    dout = _checks.float_array("dout", dout, np.float64)
    _checks.has_shape("dout", dout, batch + (q.shape[-2], v.shape[-1]), "(..., M, Dv), attention's output")
    return _attention_backward(q, k, v, mask, scale, dout, backend)


def _attention_backward(q, k, v, mask, scale, dout, backend="numpy"):
    """attention_backward on checked arguments: dout (..., M, Dv) has the full broadcast batch."""
    if backend == "numba":
        batch = dout.shape[:-2]
        q_full, k_full, v_full = (np.broadcast_to(a, batch + a.shape[-2:]) for a in (q, k, v))  # views
        out, row_max, row_sum = numba_kernels().attention(q_full, k_full, v_full, mask, scale)
        dq, dk, dv = numba_backward_kernels().attention_backward(
            q_full, k_full, v_full, mask, scale, out, row_max, row_sum, dout
        )  # (..., M, Dh), (..., N, Dh), (..., N, Dv), the full batch
    else:
        _, weights = attention_on_checked(q, k, v, mask=mask, scale=scale)  # p (..., M, N), the full batch
        dv = np.swapaxes(weights, -1, -2) @ dout  # (..., N, Dv)
        dweights = dout @ np.swapaxes(v, -1, -2)  # (..., M, N)
        dscores = _softmax_backward(weights, dweights, -1) * scale  # (..., M, N), d(q k^T)
        dq = dscores @ k  # (..., M, Dh)
        dk = np.swapaxes(dscores, -1, -2) @ q  # (..., N, Dh)
    return sum_to_shape(dq, q.shape), sum_to_shape(dk, k.shape), sum_to_shape(dv, v.shape)


def check_backend(backend):
    """Check `backend` for a backward pass: "numba" needs Numba and refimpl.kernels_backward."""
    check_forward_backend(backend)
    if backend == "numba":
        numba_backward_kernels()


def numba_backward_kernels():
    """The module refimpl.kernels_backward, or an ImportError that says what is missing."""
    try:
        from .. import kernels_backward
    except ImportError as exc:
        raise ImportError(
            "backend='numba' for a backward pass needs the numba package and refimpl.kernels_backward, "
            f"which could not be imported ({exc}); install numba (pip install numba) or use backend='numpy'"
        ) from exc
    return kernels_backward
