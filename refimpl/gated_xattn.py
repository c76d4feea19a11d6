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
the feed-forward is pre-norm; by default a text token that may see no visual token at all
(text before the first image) gets no attention output.

The published gated layers differ in a handful of switches (GatedXattnConfig); each has a
column here, and refimpl.interop reads and writes their weights:

| switch        | Flamingo, open_flamingo | flamingo-pytorch        | HF IDEFICS        | HF Mllama (Llama 3.2 Vision) |
|---------------|-------------------------|-------------------------|-------------------|------------------------------|
| norm          | layernorm 1e-5          | layernorm 1e-5          | rmsnorm 1e-6      | rmsnorm 1e-5                 |
| qk_norm       | none                    | none                    | rmsnorm, optional | rmsnorm                      |
| Hkv           | = H                     | = H                     | = H               | < H                          |
| activation    | gelu                    | gelu                    | swiglu            | swiglu                       |
| gates         | scalar                  | scalar                  | scalar or vector  | scalar                       |
| blind_rows    | "zero"                  | "zero" or "uniform" (*) | "zero"            | "attend_all"                 |
| zero_blind_ff | no                      | no                      | no                | yes                          |

A blind row is a text token that the mask lets see no visual token (text before the first
image). "zero": it gets no attention output; "attend_all": its mask is lifted and it attends
to every visual token; "uniform": equal weights on every visual token (the mean of the
values); zero_blind_ff: its feed-forward output is 0 too.
(*) flamingo-pytorch with only_attend_immediate_media=False, whose all-masked scores tie.

Axis letters: L text tokens, Dt text width, Nv visual tokens (e.g. R per image, several
images concatenated), Dv visual width, H heads, Hkv key/value heads, Dh head width,
F feed-forward width.
"""

import dataclasses
import numbers

import numpy as np

from . import _checks
from .attention import check_backend
from .layers import feed_forward, norm
from .multi_head import _multi_head_attention, head_dim_from, split_heads
from .params import check_params

ACTIVATIONS = ("gelu", "relu", "squared_relu", "swiglu")
NORMS = ("layernorm", "rmsnorm")
BLIND_ROWS = ("zero", "attend_all", "uniform")


@dataclasses.dataclass(frozen=True)
class GatedXattnConfig:
    """Sizes and switches of one gated cross-attention block; invalid values raise at construction.

    dim: Dt, the text width. dim_visual: Dv, the visual tokens' width.
    heads: H query heads; dim_head: Dh (H * Dh need not equal Dt);
    kv_heads: Hkv key/value heads dividing H (grouped-query attention: query head h reads
        key/value head h // (H / Hkv)); None means Hkv = H.
    ff_dim: F, the feed-forward hidden width; None means 4 * Dt.
    activation: "gelu" (exact), "relu", "squared_relu" (act(x W_in) W_out) or "swiglu"
        (silu(x W_gate) * (x W_up) W_down).
    norm: the text norms before the attention and the feed-forward, "layernorm" (scale and
        shift) or "rmsnorm" (scale); norm_eps their epsilon.
    qk_norm: None, or the kind of norm ("layernorm" or "rmsnorm", eps norm_eps, over Dh)
        applied to each head's queries and keys before the scores.
    vector_gates: the gates are (Dt,), one per channel (IDEFICS's alpha_type="vector"),
        instead of scalars.
    blind_rows: what the attention gives a text row that the mask lets see no visual token:
        "zero" (no attention output: Flamingo, IDEFICS), "attend_all" (the row's mask is
        lifted and it attends to every visual token: Mllama), or "uniform" (equal weights on
        every visual token, the mean of the values: flamingo-pytorch with
        only_attend_immediate_media=False, whose all-masked scores tie).
    zero_blind_ff: the feed-forward output of such a row is 0 too (Mllama's
        full_text_row_masked_out_mask).
    """

    dim: int
    dim_visual: int
    heads: int = 8
    dim_head: int = 64
    kv_heads: int | None = None
    ff_dim: int | None = None
    activation: str = "gelu"
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    qk_norm: str | None = None
    vector_gates: bool = False
    blind_rows: str = "zero"
    zero_blind_ff: bool = False

    def __post_init__(self):
        for name in ("dim", "dim_visual", "heads", "dim_head"):
            _checks.positive_int(name, getattr(self, name))
        for name in ("kv_heads", "ff_dim"):
            if getattr(self, name) is not None:
                _checks.positive_int(name, getattr(self, name))
        if self.kv_heads is not None and self.heads % self.kv_heads:
            raise ValueError(f"kv_heads must divide heads = {self.heads}; got {self.kv_heads}")
        _checks.one_of("activation", self.activation, ACTIVATIONS)
        _checks.one_of("norm", self.norm, NORMS)
        _checks.positive_number("norm_eps", self.norm_eps)
        _checks.one_of("qk_norm", self.qk_norm, (None,) + NORMS)
        _checks.one_of("blind_rows", self.blind_rows, BLIND_ROWS)
        for name in ("vector_gates", "zero_blind_ff"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False; got {getattr(self, name)!r}")

    @property
    def num_kv_heads(self) -> int:
        """Hkv: the number of key/value heads."""
        return self.heads if self.kv_heads is None else self.kv_heads

    @property
    def num_ff(self) -> int:
        """F: the feed-forward hidden width."""
        return 4 * self.dim if self.ff_dim is None else self.ff_dim


def gated_xattn_param_shapes(config):
    """dict name -> shape of the parameters of the block that `config` describes.

    attn.norm.weight (Dt,) [and .bias, layernorm], attn.wq (Dt, H*Dh), attn.wk and attn.wv
    (Dv, Hkv*Dh), attn.wo (H*Dh, Dt), [attn.q_norm / attn.k_norm .weight (Dh,) and .bias
    (layernorm)], attn_gate () or (Dt,), ff.norm.weight (Dt,) [and .bias], ff.w_in (Dt, F)
    and ff.w_out (F, Dt), or for swiglu ff.w_gate, ff.w_up (Dt, F) and ff.w_down (F, Dt),
    ff_gate () or (Dt,).
    """
    if not isinstance(config, GatedXattnConfig):
        raise TypeError(f"config must be a refimpl.GatedXattnConfig; got {type(config).__name__}")
    dim, ff_dim = config.dim, config.num_ff
    inner, kv_inner = config.heads * config.dim_head, config.num_kv_heads * config.dim_head  # H*Dh, Hkv*Dh
    gate = (dim,) if config.vector_gates else ()

    def norm_shapes(prefix, width, kind):
        return {f"{prefix}.weight": (width,)} | ({f"{prefix}.bias": (width,)} if kind == "layernorm" else {})

    shapes = norm_shapes("attn.norm", dim, config.norm)
    shapes |= {
        "attn.wq": (dim, inner),
        "attn.wk": (config.dim_visual, kv_inner),
        "attn.wv": (config.dim_visual, kv_inner),
    }
    shapes["attn.wo"] = (inner, dim)
    if config.qk_norm is not None:
        for which in ("attn.q_norm", "attn.k_norm"):
            shapes |= norm_shapes(which, config.dim_head, config.qk_norm)
    shapes |= {"attn_gate": gate} | norm_shapes("ff.norm", dim, config.norm)
    if config.activation == "swiglu":
        shapes |= {"ff.w_gate": (dim, ff_dim), "ff.w_up": (dim, ff_dim), "ff.w_down": (ff_dim, dim)}
    else:
        shapes |= {"ff.w_in": (dim, ff_dim), "ff.w_out": (ff_dim, dim)}
    return shapes | {"ff_gate": gate}


def init_gated_xattn(config, *, gate=0.0, seed=0):
    """Random parameters for the block `config` describes, with both gates at `gate`
    (Flamingo initialises them at 0; every entry of a vector gate is `gate`).

    projections N(0, 1/fan_in), norm weights U(0.5, 1.5), norm biases N(0, 0.1^2).
    """
    shapes = gated_xattn_param_shapes(config)  # checks the config
    if isinstance(gate, bool) or not isinstance(gate, numbers.Real):
        raise TypeError(f"gate must be a number; got {type(gate).__name__} {gate!r}")
    if not np.isfinite(gate):
        raise ValueError(f"gate must be a finite number; got {gate!r}")
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in shapes.items():
        if name.endswith("_gate"):
            params[name] = np.full(shape, float(gate))
        elif name.endswith(".weight"):
            params[name] = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(".bias"):
            params[name] = rng.normal(0.0, 0.1, shape)
        else:
            params[name] = rng.normal(0.0, shape[0] ** -0.5, shape)
    return params


def _default_config(dim, dim_visual, heads, dim_head, ff_mult):
    """The Flamingo block (layernorm, gelu, scalar gates) with F = dim * ff_mult, a whole number."""
    ff_dim = _checks.positive_int("dim", dim) * _checks.positive_number("ff_mult", ff_mult)
    if ff_dim != round(ff_dim):
        raise ValueError(f"ff_mult must make dim * ff_mult a whole number; got {dim} * {ff_mult} = {ff_dim}")
    return GatedXattnConfig(dim, dim_visual, heads=heads, dim_head=dim_head, ff_dim=round(dim * ff_mult))


def gated_xattn_dense_shapes(dim, dim_visual, *, heads=8, dim_head=64, ff_mult=4):
    """dict name -> shape of the default (Flamingo) block's parameters (D = dim, Dv =
    dim_visual, F = round(dim * ff_mult)); `gated_xattn_param_shapes` for any GatedXattnConfig.

    attn.norm.weight/.bias (D,), attn.wq (D, H*Dh), attn.wk and attn.wv (Dv, H*Dh),
    attn.wo (H*Dh, D), attn_gate (), ff.norm.weight/.bias (D,), ff.w_in (D, F),
    ff.w_out (F, D), ff_gate ().
    """
    return gated_xattn_param_shapes(_default_config(dim, dim_visual, heads, dim_head, ff_mult))


def init_gated_xattn_dense(dim, dim_visual, *, heads=8, dim_head=64, ff_mult=4, gate=0.0, seed=0):
    """Random parameters for the default (Flamingo) block, with both gates at `gate`
    (Flamingo initialises them at 0); `init_gated_xattn` for any GatedXattnConfig.

    projections N(0, 1/fan_in), norm weights U(0.5, 1.5), norm biases N(0, 0.1^2).
    """
    return init_gated_xattn(_default_config(dim, dim_visual, heads, dim_head, ff_mult), gate=gate, seed=seed)


def gated_xattn_dense(
    params, hidden, visual, config=None, *, heads=None, mask=None, norm_eps=None, backend="numpy", dtype=np.float64
):
    """One gated cross-attention block: the text hidden states attend to the visual tokens.

        y = hidden + tanh(attn_gate) * attn(q = norm(hidden), kv = visual)
        y = y + tanh(ff_gate) * ffw(y)                   (ffw: norm, then an MLP)

    hidden: (..., L, Dt) the language model's hidden states.
    visual: (..., Nv, Dv) visual tokens, e.g. the resampler's (..., R, D) output; batch
        axes broadcast against hidden's.
    config: a GatedXattnConfig, or None for the Flamingo block (LayerNorm, GELU, scalar
        gates, Hkv = H) with the sizes read off params (Dh off attn.wq, F off ff.w_in).
    heads, norm_eps: without a config, H (default 8) and the LayerNorms' eps (default
        1e-5); with one, leave them None (or give the config's values).
    mask: bool, broadcastable to (..., L, Nv), True = text token may see visual token
        (Flamingo lets each text token see only the image just before it). A text token
        that may see none is a blind row, handled as config.blind_rows and
        config.zero_blind_ff say (by default it gets no attention output, as in open_flamingo).
    params: from `init_gated_xattn(config)` (`init_gated_xattn_dense` for the default
        block; shapes in `gated_xattn_param_shapes`).
    returns (..., L, Dt), in `dtype` (float64 by default).
    """
    check_backend(backend)
    dtype = _checks.compute_dtype(dtype)
    hidden = _checks.float_array("hidden", hidden, dtype, "(..., L, Dt)")
    visual = _checks.float_array("visual", visual, dtype, "(..., Nv, Dv)")
    _checks.ndim_at_least("hidden", hidden, 2, "(..., L, Dt)")
    _checks.ndim_at_least("visual", visual, 2, "(..., Nv, Dv)")
    for name, array, layout in (("hidden", hidden, "(..., L, Dt)"), ("visual", visual, "(..., Nv, Dv)")):
        if array.shape[-1] == 0:
            raise ValueError(f"{name} must have shape {layout} with a width >= 1; got {array.shape}")
    config = resolve_config(config, heads, norm_eps, params, hidden.shape[-1], visual.shape[-1])
    params = check_params(params, gated_xattn_param_shapes(config), dtype, f"the config {config}")
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
        mask = mask | ~sees_something[..., None]  # blind rows attend anywhere (then are zeroed, by default)
        if visual.shape[-2] == 0 and config.blind_rows != "zero":
            raise ValueError(f"visual has Nv = 0 tokens, which blind_rows = {config.blind_rows!r} cannot attend to")
    elif visual.shape[-2] == 0:
        raise ValueError("visual has Nv = 0 tokens; pass a mask to mark text tokens that see none")

    attended = np.zeros_like(hidden)  # (..., L, Dt); stays 0 for text that sees no visual token
    if sees_something.any() or config.blind_rows != "zero":
        normed = norm(params, "attn.norm.", hidden, config.norm, config.norm_eps)  # (..., L, Dt)
        attended, _ = _multi_head_attention(
            params,
            "attn.",
            normed,
            visual,
            heads=config.heads,
            kv_heads=config.num_kv_heads,
            mask=mask,
            qk_norm_eps=None if config.qk_norm is None else config.norm_eps,
            qk_norm_kind=config.qk_norm,
            backend=backend,
        )  # (..., L, Dt)
        if config.blind_rows == "zero":
            attended = np.where(sees_something[..., None], attended, 0.0)
        elif config.blind_rows == "uniform":
            attended = np.where(sees_something[..., None], attended, _mean_of_values(params, visual, config))
    hidden = hidden + np.tanh(params["attn_gate"]) * attended
    fed = feed_forward(params, "ff.", hidden, config.activation, config.norm, config.norm_eps)  # (..., L, Dt)
    if config.zero_blind_ff:
        fed = np.where(sees_something[..., None], fed, 0.0)
    return hidden + np.tanh(params["ff_gate"]) * fed


def resolve_config(config, heads, norm_eps, params, dim, dim_visual):
    """The GatedXattnConfig that gated_xattn_dense(params, hidden, visual, config, heads=heads,
    norm_eps=norm_eps) runs, with Dt = dim and Dv = dim_visual the inputs' widths: `config`
    checked against heads, norm_eps (each None or the config's value) and the widths, or,
    for None, the default block with Dh and F read off `params` (also refimpl.torch's)."""
    if config is None:
        heads = 8 if heads is None else _checks.positive_int("heads", heads)
        norm_eps = 1e-5 if norm_eps is None else _checks.positive_number("norm_eps", norm_eps)
        has_ff = hasattr(params, "get") and np.ndim(params.get("ff.w_in")) == 2
        ff_dim = np.shape(params["ff.w_in"])[-1] if has_ff else 4 * dim
        dim_head = head_dim_from(params, "attn.wq", heads) if hasattr(params, "keys") else 1
        return GatedXattnConfig(
            dim, dim_visual, heads=heads, dim_head=dim_head, ff_dim=max(ff_dim, 1), norm_eps=norm_eps
        )
    if not isinstance(config, GatedXattnConfig):
        raise TypeError(f"config must be a refimpl.GatedXattnConfig or None; got {type(config).__name__}")
    for name, value in (("heads", heads), ("norm_eps", norm_eps)):
        if value is not None and value != getattr(config, name):
            raise ValueError(
                f"{name} must be None or config.{name} = {getattr(config, name)} with a config; got {value!r}"
            )
    if dim != config.dim:
        raise ValueError(f"hidden must have shape (..., L, Dt) with Dt = config.dim = {config.dim}; got width {dim}")
    if dim_visual != config.dim_visual:
        raise ValueError(
            f"visual must have shape (..., Nv, Dv) with Dv = config.dim_visual = {config.dim_visual}; got width "
            f"{dim_visual}"
        )
    return config


def _mean_of_values(params, visual, config):
    """What uniform weights give: every head's mean of its values, through the output projection.

    visual (..., Nv, Dv) -> (..., 1, Dt); query head h takes key/value head h // (H / Hkv).
    """
    values = split_heads(visual @ params["attn.wv"], config.num_kv_heads).mean(axis=-2)  # (..., Hkv, Dh)
    values = np.repeat(values, config.heads // config.num_kv_heads, axis=-2)  # (..., H, Dh)
    return values.reshape(*values.shape[:-2], 1, -1) @ params["attn.wo"]  # (..., 1, Dt)
