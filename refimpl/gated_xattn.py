"""Flamingo's GATED XATTN-DENSE block: how a language model reads the R visual tokens.

The paper's pseudo-code (Flamingo, Fig. 4):

    def gated_xattn_dense(
        y,              # input language features
        x,              # input visual features
        alpha_xattn,    # xattn gating parameter - init at 0.
        alpha_dense,    # ffw gating parameter - init at 0.
    ):
        # 1. Gated Cross Attention
        y = y + tanh(alpha_xattn) * attention(q=y, kv=x)
        # 2. Gated Feed Forward (dense) Layer
        y = y + tanh(alpha_dense) * ffw(y)
        # Regular self-attention + FFW on language
        ...

With both gates at 0, tanh(0) = 0 and the block is the identity: inserting it into a
pretrained language model changes nothing until training opens the gates. As in
open_flamingo, the text (not the visual tokens) is normalised before the attention and
the feed-forward is pre-norm; a text token that may see no visual token at all (text
before the first image) gets no attention output.

Axis letters: L text tokens, Dt text width, Nv visual tokens (e.g. R per image, several
images concatenated), Dv visual width, H heads, Dh head width, F feed-forward width.
"""

import numbers

import numpy as np

from . import _checks
from .attention import check_backend
from .layers import feed_forward, layer_norm
from .multi_head import _multi_head_attention, head_dim_from
from .params import check_params


def gated_xattn_dense_shapes(dim, dim_visual, *, heads=8, dim_head=64, ff_mult=4):
    """dict name -> shape of the block's parameters (D = dim, Dv = dim_visual, F = dim * ff_mult).

    attn.norm.weight/.bias (D,), attn.wq (D, H*Dh), attn.wk and attn.wv (Dv, H*Dh),
    attn.wo (H*Dh, D), attn_gate (), ff.norm.weight/.bias (D,), ff.w_in (D, F),
    ff.w_out (F, D), ff_gate (). The sizes must be positive ints, and dim * ff_mult a whole number.
    """
    for name, size in (("dim", dim), ("dim_visual", dim_visual), ("heads", heads), ("dim_head", dim_head)):
        _checks.positive_int(name, size)
    ff_dim = dim * _checks.positive_number("ff_mult", ff_mult)
    if ff_dim != round(ff_dim):
        raise ValueError(f"ff_mult must make dim * ff_mult a whole number; got {dim} * {ff_mult} = {ff_dim}")
    inner, ff_dim = heads * dim_head, round(ff_dim)
    return {
        "attn.norm.weight": (dim,),
        "attn.norm.bias": (dim,),
        "attn.wq": (dim, inner),
        "attn.wk": (dim_visual, inner),
        "attn.wv": (dim_visual, inner),
        "attn.wo": (inner, dim),
        "attn_gate": (),
        "ff.norm.weight": (dim,),
        "ff.norm.bias": (dim,),
        "ff.w_in": (dim, ff_dim),
        "ff.w_out": (ff_dim, dim),
        "ff_gate": (),
    }


def init_gated_xattn_dense(dim, dim_visual, *, heads=8, dim_head=64, ff_mult=4, gate=0.0, seed=0):
    """Random parameters for the block, with both gates at `gate` (Flamingo initialises them at 0).

    projections N(0, 1/fan_in), norm weights U(0.5, 1.5), norm biases N(0, 0.1^2).
    """
    shapes = gated_xattn_dense_shapes(dim, dim_visual, heads=heads, dim_head=dim_head, ff_mult=ff_mult)  # checks the sizes
    if isinstance(gate, bool) or not isinstance(gate, numbers.Real):
        raise TypeError(f"gate must be a number; got {type(gate).__name__} {gate!r}")
    if not np.isfinite(gate):
        raise ValueError(f"gate must be a finite number; got {gate!r}")
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in shapes.items():
        if name.endswith("_gate"):
            params[name] = np.array(float(gate))
        elif name.endswith(".weight"):
            params[name] = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(".bias"):
            params[name] = rng.normal(0.0, 0.1, shape)
        else:
            params[name] = rng.normal(0.0, shape[0] ** -0.5, shape)
    return params


def gated_xattn_dense(params, hidden, visual, *, heads=8, mask=None, norm_eps=1e-5, backend="numpy", dtype=np.float64):
    """One GATED XATTN-DENSE block: the text hidden states attend to the visual tokens.

        y = hidden + tanh(attn_gate) * attn(q = LN(hidden), kv = visual)
        y = y + tanh(ff_gate) * ffw(y)                   (ffw: LN, Linear, GELU, Linear)

    hidden: (..., L, Dt) the language model's hidden states.
    visual: (..., Nv, Dv) visual tokens, e.g. the resampler's (..., R, D) output; batch
        axes broadcast against hidden's.
    mask: bool, broadcastable to (..., L, Nv), True = text token may see visual token
        (Flamingo lets each text token see only the image just before it). A text token
        that may see none gets no attention output (its row is skipped, as in open_flamingo).
    params: from `init_gated_xattn_dense` (shapes in `gated_xattn_dense_shapes`; the
        width of the heads, Dh, is read off attn.wq).
    returns (..., L, Dt), in `dtype` (float64 by default).
    """
    check_backend(backend)
    dtype = _checks.compute_dtype(dtype)
    hidden = _checks.float_array("hidden", hidden, dtype, "(..., L, Dt)")
    visual = _checks.float_array("visual", visual, dtype, "(..., Nv, Dv)")
    _checks.ndim_at_least("hidden", hidden, 2, "(..., L, Dt)")
    _checks.ndim_at_least("visual", visual, 2, "(..., Nv, Dv)")
    heads = _checks.positive_int("heads", heads)
    norm_eps = _checks.positive_number("norm_eps", norm_eps)
    for name, array, layout in (("hidden", hidden, "(..., L, Dt)"), ("visual", visual, "(..., Nv, Dv)")):
        if array.shape[-1] == 0:
            raise ValueError(f"{name} must have shape {layout} with a width >= 1; got {array.shape}")
    w_in_shape = np.shape(params["ff.w_in"]) if hasattr(params, "keys") and "ff.w_in" in params else ()
    ff_dim = w_in_shape[-1] if len(w_in_shape) == 2 and w_in_shape[-1] > 0 else 4 * hidden.shape[-1]  # else reported below
    expected = gated_xattn_dense_shapes(
        hidden.shape[-1],
        visual.shape[-1],
        heads=heads,
        dim_head=head_dim_from(params, "attn.wq", heads),
        ff_mult=ff_dim / hidden.shape[-1],
    )
    params = check_params(params, expected, dtype, f"hidden width Dt = {hidden.shape[-1]}, visual width Dv = {visual.shape[-1]}")
    try:
        batch = np.broadcast_shapes(hidden.shape[:-2], visual.shape[:-2])
    except ValueError:
        batch = None
    if batch != hidden.shape[:-2]:
        raise ValueError(
            f"visual must have batch axes that broadcast to hidden's {hidden.shape[:-2]}; got visual {visual.shape}"
        )
    scores_shape = hidden.shape[:-1] + visual.shape[-2:-1]  # (..., L, Nv)
    sees_something = np.ones(hidden.shape[:-1], dtype=bool)  # (..., L)
    if mask is not None:
        mask = _checks.bool_array("mask", mask, "True = text token may see visual token")
        _checks.broadcasts_to("mask", mask, scores_shape, "(..., L, Nv)")
        mask = np.broadcast_to(mask, scores_shape)
        sees_something = mask.any(axis=-1)
        mask = mask | ~sees_something[..., None]  # blind rows attend anywhere, then are zeroed
    elif visual.shape[-2] == 0:
        raise ValueError("visual has Nv = 0 tokens; pass a mask to mark text tokens that see none")

    attended = np.zeros_like(hidden)  # (..., L, Dt); stays 0 for text that sees no visual token
    if sees_something.any():
        normed = layer_norm(hidden, params["attn.norm.weight"], params["attn.norm.bias"], norm_eps)  # (..., L, Dt)
        attended, _ = _multi_head_attention(params, "attn.", normed, visual, heads=heads, kv_heads=heads, mask=mask, backend=backend)
        attended = np.where(sees_something[..., None], attended, 0.0)
    hidden = hidden + np.tanh(params["attn_gate"]) * attended
    return hidden + np.tanh(params["ff_gate"]) * feed_forward(params, "ff.", hidden, "gelu", "layernorm", norm_eps)
