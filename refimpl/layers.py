"""The pieces of a resampler layer besides attention: norms, activations, the feed-forward
block. Every function here takes checked arrays (the public entry points check them).

Weights are stored (in, out), so a projection is `x @ w`; torch's nn.Linear stores
(out, in), so `w = linear.weight.T`. Axis letters: D model width, F feed-forward width.
"""

import functools
import math

import numpy as np


def layer_norm(x, weight, bias, eps):
    """LayerNorm over the last axis: (x - mean) / sqrt(var + eps) * weight + bias.

    x (..., D), weight (D,), bias (D,); var is the biased variance (divide by D), as in torch.
    """
    normalised, _ = layer_normalize(x, eps)  # (..., D), a new array: updated in place below
    normalised *= weight
    normalised += bias
    return normalised


def layer_normalize(x, eps):
    """LayerNorm's normalisation alone, and the inverse standard deviation it divides by:

        xhat = (x - mean) * inv_std,   inv_std = 1 / sqrt(var + eps)

    x (..., D) -> xhat (..., D) (a new array), inv_std (..., 1). The backward pass needs both.
    Rows whose sums or squares overflow are computed scaled (`_scaled_down`), exactly.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is caught just below
        centered = x - x.mean(axis=-1, keepdims=True)  # (..., D), a new array: updated in place below
        var = (
            np.einsum("...d,...d->...", centered, centered)[..., None] / x.shape[-1]
        )  # (..., 1), no (..., D) temporary
    if _overflowed(var, x):  # inf (or NaN from inf - inf) where |x| >= sqrt(max float / D)
        return _scaled_down(layer_normalize, x, eps)
    inv_std = 1.0 / np.sqrt(var + eps)  # (..., 1)
    centered *= inv_std
    return centered, inv_std


def rms_norm(x, weight, eps):
    """RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * weight.   x (..., D), weight (D,).

    Computed as x * (1 / sqrt(...)), the rounding of torch's x * rsqrt(...) in Idefics2.
    """
    normalised, _ = rms_normalize(x, eps)  # (..., D)
    return normalised * weight


def rms_normalize(x, eps):
    """RMSNorm's normalisation alone, and the inverse root mean square it multiplies by:

        xhat = x * inv_rms,   inv_rms = 1 / sqrt(mean(x^2) + eps)

    x (..., D) -> xhat (..., D), inv_rms (..., 1). The backward pass needs both.
    Rows whose squares overflow are computed scaled (`_scaled_down`), exactly.
    """
    with np.errstate(over="ignore"):  # an overflow is caught just below
        mean_square = np.einsum("...d,...d->...", x, x)[..., None] / x.shape[-1]  # (..., 1)
    if _overflowed(mean_square, x):  # inf where |x| >= sqrt(max float / D)
        return _scaled_down(rms_normalize, x, eps)
    inv_rms = 1.0 / np.sqrt(mean_square + eps)  # (..., 1)
    return x * inv_rms, inv_rms


def _overflowed(statistic, x):
    """True where a row of x (..., D) that is finite has a non-finite statistic (..., 1): its
    sums or squares passed the float range. (A row that is not finite, which only unchecked
    intermediate values can be, is left to give NaN, as it always did.)"""
    bad = ~np.isfinite(statistic[..., 0])  # (...)
    return bool(bad.any() and np.isfinite(x[bad]).all(axis=-1).any())


def _scaled_down(normalize, x, eps):
    """normalize(x, eps) for a finite x whose sums or squares overflow, computed on rows scaled below 1.

    A norm is unchanged when its row is scaled by c and its eps by c^2:

        (x - mean x) / sqrt(var x + eps) = (c x - mean(c x)) / sqrt(var(c x) + c^2 eps)

    (RMSNorm alike). Each row with max |x| >= 1 is scaled by c = 2^-e, e its max's binary
    exponent, so that its entries are below 1 and its squares cannot overflow; a power of 2
    scales exactly, so every sum, square root and quotient rounds as it would have unscaled,
    had the range been wide enough (only entries below 2^e times the smallest normal float
    round differently, and they are far too small to count). inv_std or inv_rms comes back
    in x's units (times c). Rows with max |x| < 1 are left as they are, so that eps is never
    scaled up (past the float range, for tiny rows). The scaled rows cannot overflow again.
    """
    exponent = np.maximum(np.frexp(np.abs(x).max(axis=-1, keepdims=True))[1], 0)  # (..., 1) ints
    scaled_eps = np.ldexp(np.asarray(eps, dtype=x.dtype), -2 * exponent)  # (..., 1), c^2 eps
    normalised, inverse = normalize(np.ldexp(x, -exponent), scaled_eps)  # rows now below 1
    return normalised, np.ldexp(inverse, -exponent)


def norm(params, prefix, x, kind, eps, norm_dtype=None):
    """The configured norm with the parameters `prefix + "weight"` (and `"bias"`, LayerNorm only).

    With norm_dtype="float32" the normalisation runs in float32 and the result is cast back
    before the learned scale (and shift), as in Idefics2's RMSNorm.
    """
    weight = params[prefix + "weight"]
    bias = params[prefix + "bias"] if kind == "layernorm" else np.zeros((), dtype=x.dtype)
    if norm_dtype is None:
        return layer_norm(x, weight, bias, eps) if kind == "layernorm" else rms_norm(x, weight, eps)
    normalised, _ = NORMALIZERS[kind](x.astype(norm_dtype), eps)
    return normalised.astype(x.dtype) * weight + bias


NORMALIZERS = {"layernorm": layer_normalize, "rmsnorm": rms_normalize}


def gelu(x):
    """The exact GELU (torch's default, open_flamingo's):

        x * Phi(x) = x/2 * (1 + erf(x / sqrt(2))) = x/2 * erfc(-x / sqrt(2))

    The erfc form keeps its relative accuracy for large negative x, where 1 + erf cancels.
    """
    return 0.5 * x * _erfc()(-x / np.sqrt(2.0, dtype=x.dtype))


def erfc(x):
    """The complementary error function 1 - erf(x), elementwise, in x's dtype: C's erfc,
    accurate also where erf(x) is close to 1 (refimpl.grad's GELU backward uses it too)."""
    return _erfc()(x)


@functools.cache
def _erfc():
    """An elementwise erfc (NumPy has none): C's erfc compiled by Numba where it is installed,
    else Python's math.erfc (the same C function, in float64) called element by element, slowly."""
    try:
        from .kernels import erfc
    except ImportError:
        return lambda x: np.vectorize(math.erfc, otypes=[x.dtype])(x)
    return erfc


def relu(x):
    """max(x, 0) (HF IDEFICS)."""
    return np.maximum(x, 0)


def squared_relu(x):
    """max(x, 0)^2 (the Flamingo paper)."""
    return np.maximum(x, 0) ** 2


def silu(x):
    """x * sigmoid(x)."""
    return x * sigmoid(x)


def sigmoid(x):
    """1 / (1 + exp(-x)), computed as exp(-log(1 + exp(-x))): no overflow, and no
    cancellation for large negative x (where 1 + tanh(x/2) would lose every digit)."""
    return np.exp(-np.logaddexp(0.0, -x))


ACTIVATIONS = {"gelu": gelu, "relu": relu, "squared_relu": squared_relu}


def feed_forward(params, prefix, x, activation, norm_kind, eps, norm_dtype=None, *, pre_norm=True):
    """Pre-norm MLP: x (..., D) -> (..., D), without the residual.

        plain:   act(norm(x) @ w_in) @ w_out                       w_in (D, F), w_out (F, D)
        swiglu:  (silu(h @ w_gate) * (h @ w_up)) @ w_down, h = norm(x)   (D, F), (D, F), (F, D)

    pre_norm=False: h = x, no norm.
    """
    h = norm(params, prefix + "norm.", x, norm_kind, eps, norm_dtype) if pre_norm else x  # (..., D)
    if activation == "swiglu":
        hidden = silu(h @ params[prefix + "w_gate"]) * (h @ params[prefix + "w_up"])  # (..., F)
        return hidden @ params[prefix + "w_down"]  # (..., D)
    hidden = ACTIVATIONS[activation](h @ params[prefix + "w_in"])  # (..., F)
    return hidden @ params[prefix + "w_out"]  # (..., D)
