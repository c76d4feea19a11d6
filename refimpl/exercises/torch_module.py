"""Exercises of notebook 5, the Perceiver Resampler in PyTorch.

    from refimpl.exercises import torch_module as ex

attention_torch(q, k, v, mask=None)
    scaled dot-product attention with the softmax written out (and a mask), in torch;
    checked against refimpl.attention.
feed_forward_torch(x, norm_weight, norm_bias, w_in, w_out, eps=1e-5)
    the resampler's pre-norm feed-forward block (LayerNorm, exact GELU) on weights in
    refimpl's (in, out) layout; checked against refimpl's feed-forward block.

Every check runs in float64 on the CPU, on non-square shapes, and wants a float64 tensor back.
"""

import numpy as np
import torch
import torch.nn.functional as F

from ..attention import attention as reference_attention
from ..layers import feed_forward as reference_feed_forward
from ..tolerances import TOLERANCES
from . import agree, call, check, likely_mistake

BOUND = TOLERANCES["float64", "torch vs numpy"]  # the same float64 math in torch and NumPy: 1e-12


def attention_torch(q, k, v, mask=None):
    """Scaled dot-product attention, the softmax written out.

        out = softmax(q k^T / sqrt(Dh), masked) v

    q: (..., M, Dh)   k: (..., N, Dh)   v: (..., N, Dv)   tensors of one float dtype
    mask: bool tensor broadcastable to (..., M, N), True = the query may attend to the key;
        every query may attend to at least one key.
    returns (..., M, Dv)
    """
    scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5  # (..., M, N)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # a masked key: exp(-inf) = 0 below
    scores = scores - scores.amax(dim=-1, keepdim=True)  # (..., M, N), <= 0: exp cannot overflow
    weights = scores.exp()
    weights = weights / weights.sum(dim=-1, keepdim=True)  # (..., M, N), rows sum to 1
    return weights @ v  # (..., M, Dv)


def check_attention_torch(fn):
    return check("attention_torch", fn, attention_torch, _test_attention_torch)


def _test_attention_torch(fn):
    rng = np.random.default_rng(5)
    q = rng.standard_normal((2, 3, 5, 8))  # (B, H, M, Dh)
    k = rng.standard_normal((2, 3, 7, 8))  # (B, H, N, Dh)
    v = rng.standard_normal((2, 3, 7, 6))  # (B, H, N, Dv), Dv != Dh
    query_mask = rng.random((5, 7)) < 0.6  # (M, N), the same for every batch item and head
    query_mask[:, 0] = True  # every query may attend to a key
    padding = np.ones((2, 1, 1, 7), dtype=bool)  # (B, 1, 1, N): item 1 has 3 padding keys
    padding[1, ..., 4:] = False
    cases = {
        "no mask": (q, k, v, None),
        "one query, one key": (q[..., :1, :], k[..., :1, :], v[..., :1, :], None),
        "mask (M, N), broadcast over batch and heads": (q, k, v, query_mask),
        "padding mask (B, 1, 1, N)": (q, k, v, padding),
        "huge scores (up to ~1e3: subtract the row max)": (40.0 * q, 10.0 * k, v, None),
    }
    general = (
        "scores = q @ k.transpose(-1, -2) / sqrt(Dh), Dh = q.shape[-1]; masked scores to -inf (True = may attend); "
        "subtract each row's max, exp, divide by the row sum; then weights @ v; return a float64 tensor"
    )
    inverted = (
        "the mask is inverted: True means may attend, so fill the scores where the mask is False (~mask) with -inf"
    )
    missing_scale = "divide the scores by sqrt(Dh), Dh = q.shape[-1], before the softmax"
    errors = []
    for name, (q_, k_, v_, mask) in cases.items():
        expected = reference_attention(q_, k_, v_, mask=mask)
        args = [torch.from_numpy(a.copy()) for a in (q_, k_, v_)]
        out = _float64_numpy(
            call(name, general, fn, *args, mask=None if mask is None else torch.from_numpy(mask.copy())), name, general
        )
        scale = np.abs(v_).max()
        mistakes = [(missing_scale, reference_attention(q_, k_, v_, mask=mask, scale=1.0))]
        if mask is not None and (~mask).any(axis=-1).all():  # every row still allows a key with the mask inverted
            mistakes.append((inverted, reference_attention(q_, k_, v_, mask=~mask)))
        hint = likely_mistake(out, mistakes, general, BOUND, scale=scale)
        errors.append(agree(f"case '{name}'", out, expected, BOUND, scale=scale, hint=hint))
    return f"{len(cases)} cases, max error {max(errors):.0e} <= {BOUND:g} (relative to max |v|)"


def feed_forward_torch(x, norm_weight, norm_bias, w_in, w_out, eps=1e-5):
    """The resampler's feed-forward block, pre-norm, without the residual:

        gelu(layer_norm(x) @ w_in) @ w_out,   layer_norm(x) = (x - mean) / sqrt(var + eps) * norm_weight + norm_bias

    x: (..., D)   norm_weight, norm_bias: (D,)   w_in: (D, F)   w_out: (F, D)
    The weights come in refimpl's (in, out) layout (nn.Linear stores the transpose, (out, in)).
    GELU is the exact one, x * Phi(x) with the normal CDF Phi (torch's default, not the tanh
    approximation). returns (..., D)
    """
    h = F.layer_norm(x, x.shape[-1:], norm_weight, norm_bias, eps)  # (..., D)
    h = F.gelu(h @ w_in)  # (..., F), exact GELU
    return h @ w_out  # (..., D)


def check_feed_forward_torch(fn):
    return check("feed_forward_torch", fn, feed_forward_torch, _test_feed_forward_torch)


def _test_feed_forward_torch(fn):
    rng = np.random.default_rng(6)
    dim, ff_dim = 12, 30  # D != F: a weight used in the wrong layout cannot multiply

    def params(scale=1.0):
        return {
            "norm.weight": rng.uniform(0.5, 1.5, dim),  # not 1 and 0: a forgotten scale or shift shows
            "norm.bias": rng.normal(0.0, 0.1, dim),
            "w_in": scale * rng.normal(0.0, dim**-0.5, (dim, ff_dim)),  # (D, F)
            "w_out": rng.normal(0.0, ff_dim**-0.5, (ff_dim, dim)),  # (F, D)
        }

    cases = {
        "x (R, D) = (5, 12)": (rng.standard_normal((5, dim)), params(), 1e-5),
        "x (B, R, D) = (2, 3, 12), eps 1e-6": (3.0 * rng.standard_normal((2, 3, dim)) + 1.0, params(), 1e-6),
        "large pre-activations (where tanh-GELU is off)": (rng.standard_normal((4, dim)), params(scale=4.0), 1e-5),
    }
    general = (
        "h = F.layer_norm(x, x.shape[-1:], norm_weight, norm_bias, eps); h = F.gelu(h @ w_in) (exact GELU); "
        "return h @ w_out; the weights come in (in, out) layout: h @ w_in, not h @ w_in.T as for nn.Linear's (out, in)"
    )
    errors = []
    for name, (x, p, eps) in cases.items():
        expected = reference_feed_forward(p, "", x, "gelu", "layernorm", eps)
        t = {key: torch.from_numpy(value.copy()) for key, value in p.items()}
        x_t = torch.from_numpy(x.copy())
        out = call(name, general, fn, x_t, t["norm.weight"], t["norm.bias"], t["w_in"], t["w_out"], eps=eps)
        out = _float64_numpy(out, name, general)
        normed = F.layer_norm(x_t, x_t.shape[-1:], t["norm.weight"], t["norm.bias"], eps)  # (..., D)
        mistakes = [
            (
                "use the exact GELU, F.gelu(h) = h * Phi(h), not the tanh approximation (approximate='tanh')",
                (F.gelu(normed @ t["w_in"], approximate="tanh") @ t["w_out"]).numpy(),
            ),
            (
                "the block is pre-norm: apply the LayerNorm (with its weight and bias) to x before w_in",
                (F.gelu(x_t @ t["w_in"]) @ t["w_out"]).numpy(),
            ),
            (
                "the LayerNorm has a weight and a bias: layer_norm(x) * norm_weight + norm_bias",
                (F.gelu(F.layer_norm(x_t, x_t.shape[-1:], eps=eps) @ t["w_in"]) @ t["w_out"]).numpy(),
            ),
            (
                "the block returns gelu(layer_norm(x) @ w_in) @ w_out, without adding x (the residual is the layer's)",
                expected + x,
            ),
        ]
        hint = likely_mistake(out, mistakes, general, BOUND)
        errors.append(agree(f"case '{name}'", out, expected, BOUND, hint=hint))
    return f"{len(cases)} cases, max error {max(errors):.0e} <= {BOUND:g}"


def _float64_numpy(out, case, hint):
    """The student's result as a NumPy array, after checking it is a float64 tensor."""
    assert isinstance(out, torch.Tensor), f"case '{case}': return a torch tensor; got {type(out).__name__}. {hint}"
    assert out.dtype == torch.float64, f"case '{case}': the inputs are float64, the result is {out.dtype}. {hint}"
    return out.detach().cpu().numpy()
