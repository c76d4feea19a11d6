"""Backward passes of refimpl.layers: projections, norms, activations, the feed-forward block.

A backward function takes the forward function's inputs and the upstream gradient
dout = dL/dy of some scalar loss L with respect to the forward's output y, and returns
dL/d(input) and dL/d(parameter) for each parameter, every gradient shaped like what it is
the gradient of. What it needs from the forward pass (a normalised x, a pre-activation)
it recomputes with refimpl.layers' own functions. Like refimpl.layers, every function here
takes checked arrays (the public entry points in refimpl.grad check them).

A parameter used at every position of the leading axes `...` (a projection, a norm's
weight) gets the sum of the gradients from every position. Axis letters: D model width,
F feed-forward width; In and Out a projection's input and output widths.
"""

import numpy as np

from ..layers import ACTIVATIONS, NORMALIZERS, erfc, layer_normalize, norm, rms_normalize, sigmoid, silu
from .broadcast import sum_to_shape


def linear_backward(x, weight, dout):
    """Backward of y = x @ weight:   x (..., In), weight (In, Out), dout (..., Out).

        dx = dout @ weight^T                                  (..., In)
        dweight = sum over ... of x^T dout                    (In, Out)

    returns dx, dweight.
    """
    dx = dout @ weight.T  # (..., In)
    leading = tuple(range(x.ndim - 1))
    dweight = np.tensordot(x, dout, axes=(leading, leading))  # (In, Out), summed over ...
    return dx, dweight


def layer_normalize_backward(normalised, inv_std, dnormalised):
    """Backward of xhat = (x - mean(x)) * inv_std, inv_std = 1 / sqrt(var(x) + eps), over the last axis.

        dx = inv_std * (g - mean(g) - xhat * mean(g * xhat)),   g = dL/dxhat, means over D

    since dxhat_j/dx_i = inv_std * (delta_ij - 1/D - xhat_i xhat_j / D): the mean moves
    every xhat_j alike, and the variance scales them all, in proportion to xhat_j.
    normalised: xhat (..., D)   inv_std (..., 1)   dnormalised: g (..., D) -> dx (..., D).
    """
    mean_g = dnormalised.mean(axis=-1, keepdims=True)  # (..., 1)
    mean_g_xhat = np.einsum("...d,...d->...", dnormalised, normalised)[..., None] / normalised.shape[-1]  # (..., 1)
    return inv_std * (dnormalised - mean_g - normalised * mean_g_xhat)  # (..., D)


def rms_normalize_backward(normalised, inv_rms, dnormalised):
    """Backward of xhat = x * inv_rms, inv_rms = 1 / sqrt(mean(x^2) + eps), over the last axis.

        dx = inv_rms * (g - xhat * mean(g * xhat)),   g = dL/dxhat, mean over D

    since dxhat_j/dx_i = inv_rms * (delta_ij - xhat_i xhat_j / D): LayerNorm's without the mean.
    normalised: xhat (..., D)   inv_rms (..., 1)   dnormalised: g (..., D) -> dx (..., D).
    """
    mean_g_xhat = np.einsum("...d,...d->...", dnormalised, normalised)[..., None] / normalised.shape[-1]  # (..., 1)
    return inv_rms * (dnormalised - normalised * mean_g_xhat)  # (..., D)


NORMALIZE_BACKWARDS = {"layernorm": layer_normalize_backward, "rmsnorm": rms_normalize_backward}


def layer_norm_backward(x, weight, dout, eps):
    """Backward of y = layer_norm(x, weight, bias, eps) = xhat * weight + bias.

        dweight = sum over ... of dout * xhat,   dbias = sum over ... of dout
        dx = layer_normalize_backward(xhat, inv_std, dout * weight)

    x (..., D), weight (D,), dout (..., D) -> dx (..., D), dweight (D,), dbias (D,).
    """
    normalised, inv_std = layer_normalize(x, eps)  # (..., D), (..., 1)
    dx = layer_normalize_backward(normalised, inv_std, dout * weight)
    return dx, sum_to_shape(dout * normalised, weight.shape), sum_to_shape(dout, weight.shape)


def rms_norm_backward(x, weight, dout, eps):
    """Backward of y = rms_norm(x, weight, eps) = xhat * weight.

        dweight = sum over ... of dout * xhat,   dx = rms_normalize_backward(xhat, inv_rms, dout * weight)

    x (..., D), weight (D,), dout (..., D) -> dx (..., D), dweight (D,).
    """
    normalised, inv_rms = rms_normalize(x, eps)  # (..., D), (..., 1)
    return rms_normalize_backward(normalised, inv_rms, dout * weight), sum_to_shape(dout * normalised, weight.shape)


def norm_backward(params, prefix, x, kind, eps, norm_dtype, dout):
    """Backward of refimpl.layers.norm: the configured norm with parameters prefix + "weight"
    (and prefix + "bias" for LayerNorm).   x (..., D), dout (..., D).

    returns dx (..., D) and {prefix + "weight": (D,)[, prefix + "bias": (D,)]}.

    With norm_dtype="float32" the forward normalises in float32 and casts the result back;
    the backward does what autograd does through those casts (Idefics2's, in torch): the
    gradient of the normalisation is computed in float32 and cast back, so it carries
    float32 rounding (about 1e-7 relative), while the scale's and shift's gradients stay
    in x's dtype.
    """
    weight = params[prefix + "weight"]
    low = x if norm_dtype is None else x.astype(norm_dtype)  # the dtype the forward normalises in
    normalised, inv_scale = NORMALIZERS[kind](low, eps)  # (..., D), (..., 1)
    high = normalised.astype(x.dtype, copy=False)  # (..., D), what the scale and shift see
    grads = {prefix + "weight": sum_to_shape(dout * high, weight.shape)}
    if kind == "layernorm":
        grads[prefix + "bias"] = sum_to_shape(dout, weight.shape)
    dnormalised = (dout * weight).astype(low.dtype, copy=False)  # (..., D)
    dx = NORMALIZE_BACKWARDS[kind](normalised, inv_scale, dnormalised).astype(x.dtype, copy=False)
    return dx, grads


def gelu_backward(x, dout):
    """Backward of the exact GELU, y = x * Phi(x):   dx = dout * (Phi(x) + x * phi(x)),

    Phi(x) = erfc(-x / sqrt(2)) / 2 the normal CDF, phi(x) = exp(-x^2 / 2) / sqrt(2 pi) its density.
    """
    cdf = 0.5 * erfc(-x / np.sqrt(2.0, dtype=x.dtype))
    density = np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi, dtype=x.dtype)
    return dout * (cdf + x * density)


def relu_backward(x, dout):
    """Backward of y = max(x, 0):   dx = dout where x > 0, else 0 (0 at x = 0, as in torch)."""
    return np.where(x > 0, dout, 0.0)


def squared_relu_backward(x, dout):
    """Backward of y = max(x, 0)^2:   dx = dout * 2 max(x, 0)."""
    return dout * (2.0 * np.maximum(x, 0))


def silu_backward(x, dout):
    """Backward of y = x * sigmoid(x):   dx = dout * sigmoid(x) * (1 + x * sigmoid(-x)),

    from sigmoid' = sigmoid * (1 - sigmoid) and 1 - sigmoid(x) = sigmoid(-x) (no cancellation).
    """
    return dout * sigmoid(x) * (1.0 + x * sigmoid(-x))


ACTIVATION_BACKWARDS = {"gelu": gelu_backward, "relu": relu_backward, "squared_relu": squared_relu_backward}


def feed_forward_backward(params, prefix, x, activation, norm_kind, eps, norm_dtype, dout, *, pre_norm=True):
    """Backward of refimpl.layers.feed_forward (the pre-norm MLP, without the residual).

    plain:   h = norm(x), a = h @ w_in, y = act(a) @ w_out
             dw_out = sum act(a)^T dout,  da = act'(a) * (dout @ w_out^T),  dw_in = sum h^T da,  dh = da @ w_in^T
    swiglu:  gate = h @ w_gate, up = h @ w_up, y = (silu(gate) * up) @ w_down
             dhidden = dout @ w_down^T,  dgate = silu'(gate) * up * dhidden,  dup = silu(gate) * dhidden
             dh = dgate @ w_gate^T + dup @ w_up^T
    and dx from dh through the norm (norm_backward).

    x (..., D), dout (..., D) -> dx (..., D) and the gradients {prefix + name: shaped like
    the parameter} of the block's parameters (its norm's included). pre_norm=False: h = x.
    """
    h = norm(params, prefix + "norm.", x, norm_kind, eps, norm_dtype) if pre_norm else x  # (..., D)
    grads = {}
    if activation == "swiglu":
        gate, up = h @ params[prefix + "w_gate"], h @ params[prefix + "w_up"]  # (..., F) each
        silu_gate = silu(gate)  # (..., F)
        dhidden, grads[prefix + "w_down"] = linear_backward(silu_gate * up, params[prefix + "w_down"], dout)  # (..., F)
        dh_gate, grads[prefix + "w_gate"] = linear_backward(
            h, params[prefix + "w_gate"], silu_backward(gate, dhidden * up)
        )
        dh_up, grads[prefix + "w_up"] = linear_backward(h, params[prefix + "w_up"], dhidden * silu_gate)
        dh = dh_gate + dh_up  # (..., D)
    else:
        pre_activation = h @ params[prefix + "w_in"]  # (..., F)
        hidden = ACTIVATIONS[activation](pre_activation)  # (..., F)
        dhidden, grads[prefix + "w_out"] = linear_backward(hidden, params[prefix + "w_out"], dout)  # (..., F)
        dpre_activation = ACTIVATION_BACKWARDS[activation](pre_activation, dhidden)  # (..., F)
        dh, grads[prefix + "w_in"] = linear_backward(h, params[prefix + "w_in"], dpre_activation)  # (..., D)
    if not pre_norm:
        return dh, grads
    dx, norm_grads = norm_backward(params, prefix + "norm.", x, norm_kind, eps, norm_dtype, dh)
    return dx, grads | norm_grads
