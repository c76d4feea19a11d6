"""Exercises of notebook 10, "Gradients: the attention backward by hand, and training in NumPy".

    softmax_backward(p, dp)                              the softmax's backward, without its Jacobian
    attention_backward(q, k, v, dout, scale, mask=None)  dq, dk, dv of scaled dot-product attention
    bce_with_logits(logits, labels)                      the training loss and its gradient

Each `check_<name>(fn)` runs `fn` on seeded random inputs (non-square, batched, masked keys,
large logits) and compares it with refimpl.grad (softmax_backward, attention_backward) or
with torch's autograd (the loss). The functions without `check_` are the worked solutions:
`??ex.softmax_backward` shows one.
"""

import numpy as np

from ..attention import softmax
from ..grad import attention_backward as reference_attention_backward
from ..grad import softmax_backward as reference_softmax_backward
from ..tolerances import TOLERANCES
from . import agree, call, check

# the same float64 math as refimpl.grad (or torch) in another order, as for torch's autograd
# against refimpl.grad (about 1e-15 is typical here; a 10% mistake is 1e9 times larger)
BOUND = TOLERANCES[("float64", "gradient vs torch autograd")]


# ---------------------------------------------------------------- worked solutions


def softmax_backward(p, dp):
    """The gradient of the scores from that of the softmax weights, over the last axis.

        ds = p * (dp - rowsum(dp * p))

    which is the softmax's Jacobian diag(p) - p p^T applied to dp, row by row, without forming it.
    p: softmax weights (..., N) (0 where masked).   dp: dL/dp, (..., N).   returns dL/ds (..., N).
    """
    row_dot = np.sum(dp * p, axis=-1, keepdims=True)  # (..., 1): p . dp, one number per row
    return p * (dp - row_dot)  # (..., N); 0 wherever p is 0, so masked scores get no gradient


def attention_backward(q, k, v, dout, scale, mask=None):
    """The gradients of out = softmax(q k^T * scale, masked) v for q, k and v.

        p = softmax(q k^T * scale)   dv = p^T dout   dp = dout v^T
        ds = p * (dp - rowsum(dp * p))   dq = ds k * scale   dk = ds^T q * scale

    q: (..., M, Dh)   k: (..., N, Dh)   v: (..., N, Dv)   dout: (..., M, Dv), the same batch axes.
    mask: bool broadcastable to (..., M, N) (True = may attend), or None.
    returns dq (..., M, Dh), dk (..., N, Dh), dv (..., N, Dv).
    """
    k_t = np.swapaxes(k, -1, -2)  # (..., Dh, N); k.T would reverse the batch axes too
    p = softmax(q @ k_t * scale, mask=mask)  # (..., M, N), the forward's weights, recomputed
    dv = np.swapaxes(p, -1, -2) @ dout  # (..., N, Dv)
    dp = dout @ np.swapaxes(v, -1, -2)  # (..., M, N)
    ds = softmax_backward(p, dp)  # (..., M, N), 0 at masked entries
    dq = ds @ k * scale  # (..., M, Dh)
    dk = np.swapaxes(ds, -1, -2) @ q * scale  # (..., N, Dh)
    return dq, dk, dv


def bce_with_logits(logits, labels):
    """The mean binary cross-entropy of logits against 0/1 labels, and its gradient.

        loss = mean(softplus(z) - y z),   softplus(z) = log(1 + exp(z))
        dloss/dz = (sigmoid(z) - y) / (B Q)

    logits: z (B, Q).   labels: y (B, Q), bool or 0/1.   returns (loss as a float, dlogits (B, Q)).
    """
    y = np.asarray(labels, dtype=np.float64)  # (B, Q), True -> 1.0
    loss = np.mean(np.logaddexp(0.0, logits) - y * logits)  # logaddexp(0, z) = log(e^0 + e^z), never overflows
    sigmoid = np.exp(-np.logaddexp(0.0, -logits))  # 1 / (1 + exp(-z)), without overflow for large -z
    return float(loss), (sigmoid - y) / logits.size  # the mean divides every term by B Q


# ---------------------------------------------------------------- checks


def check_softmax_backward(fn):
    return check("softmax_backward", fn, softmax_backward, _test_softmax_backward)


def check_attention_backward(fn):
    return check("attention_backward", fn, attention_backward, _test_attention_backward)


def check_bce_with_logits(fn):
    return check("bce_with_logits", fn, bce_with_logits, _test_bce_with_logits)


def _unpack(what, result, count, hint):
    if not isinstance(result, tuple | list) or len(result) != count:
        raise AssertionError(f"case '{what}': expected a tuple of {count}; got {type(result).__name__}. {hint}")
    return result


def _test_softmax_backward(fn):
    rng = np.random.default_rng(1)
    mask = rng.random((4, 9)) < 0.6
    mask[:, 0] = True  # every row allows a key
    cases = {  # what -> scores (the weights are their softmax), mask
        "p (5, 7)": (rng.standard_normal((5, 7)), None),
        "batched p (2, 3, 4, 9), rows along the last axis": (2 * rng.standard_normal((2, 3, 4, 9)), None),
        "p (4, 9) with masked entries (p = 0 there)": (rng.standard_normal((4, 9)), mask),
        "one key per row, p (6, 1) = 1": (rng.standard_normal((6, 1)), None),
    }
    hint = (
        "ds = p * (dp - sum(dp * p, axis=-1, keepdims=True)): the Jacobian diag(p) - p p^T of each row "
        "applied to that row's dp; the sum runs over the keys (the last axis)"
    )
    errors = []
    for what, (scores, mask) in cases.items():
        p = softmax(scores, mask=mask)  # (..., N)
        dp = rng.standard_normal(p.shape)  # (..., N)
        actual = call(what, hint, fn, p, dp)
        errors.append(agree(f"case '{what}'", actual, reference_softmax_backward(p, dp), BOUND, hint=hint))
        if mask is not None:
            masked = np.abs(np.asarray(actual)[~mask])
            assert not masked.any(), (
                f"case '{what}': masked scores must get exactly 0; got up to {masked.max():.1e}. {hint}"
            )
    return f"{len(cases)} cases, max error {max(errors):.0e} <= {BOUND:g}, masked scores exactly 0"


def _test_attention_backward(fn):
    normal = np.random.default_rng(2).standard_normal
    padding = np.arange(9) < np.array([9, 5])[:, None, None, None]  # (2, 1, 1, 9): 9 and 5 real keys
    cases = {  # what -> (q, k, v, dout, scale, mask)
        "q (5, 4), k (7, 4), v (7, 3), scale 1/sqrt(4)": (
            normal((5, 4)),
            normal((7, 4)),
            normal((7, 3)),
            normal((5, 3)),
            0.5,
            None,
        ),
        "q (3, 6), k (8, 6), v (8, 2), scale 0.3 (not 1/sqrt(Dh))": (
            normal((3, 6)),
            normal((8, 6)),
            normal((8, 2)),
            normal((3, 2)),
            0.3,
            None,
        ),
        "batched q (2, 3, 4, 8), k (2, 3, 9, 8), v (2, 3, 9, 5), padding mask (2, 1, 1, 9)": (
            normal((2, 3, 4, 8)),
            normal((2, 3, 9, 8)),
            normal((2, 3, 9, 5)),
            normal((2, 3, 4, 5)),
            8**-0.5,
            padding,
        ),
    }
    hint = (
        "p = softmax(q k^T * scale, masked); dv = p^T dout; dp = dout v^T; ds = p * (dp - rowsum(dp * p)); "
        "dq = ds k * scale; dk = ds^T q * scale; transpose the last two axes only (np.swapaxes(x, -1, -2))"
    )
    errors = []
    for what, (q, k, v, dout, scale, mask) in cases.items():
        args = (q, k, v, dout, scale) if mask is None else (q, k, v, dout, scale, mask)
        actual = _unpack(what, call(what, hint, fn, *args), 3, hint)
        expected = reference_attention_backward(q, k, v, dout, mask=mask, scale=scale)
        for name, a, e in zip(("dq", "dk", "dv"), actual, expected):
            errors.append(agree(f"case '{what}', {name}", a, e, BOUND, hint=hint))
        if mask is not None:  # the 4 padding keys of batch entry 1 never reach the output
            for name, a in zip(("dk", "dv"), actual[1:]):
                padded = np.abs(np.asarray(a)[1, :, 5:])
                assert not padded.any(), (
                    f"case '{what}': {name} of the padding keys must be exactly 0; got up to {padded.max():.1e}. {hint}"
                )
    return f"{len(cases)} cases x (dq, dk, dv), max error {max(errors):.0e} <= {BOUND:g}, padding keys exactly 0"


def _test_bce_with_logits(fn):
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(3)
    cases = {  # what -> (logits, labels)
        "logits (8, 16), bool labels": (rng.standard_normal((8, 16)), rng.random((8, 16)) < 0.3),
        "logits (3, 5), float 0/1 labels": (
            2 * rng.standard_normal((3, 5)),
            (rng.random((3, 5)) < 0.5).astype(np.float64),
        ),
        "large logits (4, 6), up to about +-100": (40 * rng.standard_normal((4, 6)), rng.random((4, 6)) < 0.5),
    }
    hint = (
        "loss = mean(log(1 + exp(z)) - y z), with log(1 + exp(z)) as np.logaddexp(0, z) so that it cannot overflow; "
        "dlogits = (sigmoid(z) - y) / z.size: the mean divides by the number of logits"
    )
    errors = []
    for what, (logits, labels) in cases.items():
        loss, dlogits = _unpack(what, call(what, hint, fn, logits, labels), 2, hint)
        z = torch.tensor(logits, requires_grad=True)
        expected = F.binary_cross_entropy_with_logits(z, torch.as_tensor(labels, dtype=torch.float64))
        expected.backward()
        errors.append(agree(f"case '{what}', loss", loss, expected.item(), BOUND, hint=hint))
        errors.append(agree(f"case '{what}', dlogits", dlogits, z.grad.numpy(), BOUND, hint=hint))
    return f"{len(cases)} cases x (loss, dlogits) against torch's autograd, max error {max(errors):.0e} <= {BOUND:g}"
