"""Qwen-VL's `Resampler` (the model's visual.py, on the model hub) <-> refimpl.

Qwen-VL's code ships with its checkpoints (trust_remote_code), not in a package, so refimpl
knows it by its layout and its forward: `Resampler(grid_size=G, embed_dim=D, num_heads=H,
kv_dim=D_in)` takes x (B, L, D_in), the vision tower's L = h * w patches of a square h = w
grid, and returns (B, R = G*G, D): one cross-attention (torch.nn.MultiheadAttention) of the
normalised learned queries, plus the G x G sin-cos table, over the normalised projected
patches, plus the table bicubic-resized to h x w where h differs from G:

    refimpl x = x[:, None]             (B, T = 1, S = L, D_in = media_dim), no mask
    refimpl grid = (h, h), h = sqrt(L)
    output (B, R, D)                   = refimpl's (B, R, D)

| Qwen-VL key                                   | refimpl name                             |
|-----------------------------------------------|------------------------------------------|
| pos_embed (G*G, D)                            | none: refimpl computes it (sincos_2d), checked on import |
| query (R, D)                                  | latents                                  |
| kv_proj.weight (D, D_in), no bias             | media_proj.weight (transposed); absent (nn.Identity) where D_in = D |
| attn.in_proj_weight (3D, D)                   | layers.0.attn.wq, wk, wv (transposed): thirds |
| attn.in_proj_bias (3D,)                       | layers.0.attn.bq, bk, bv: thirds         |
| attn.out_proj.weight (D, D) / .bias (D,)      | layers.0.attn.wo (transposed) / .bo      |
| ln_q (LayerNorm, eps 1e-6)                    | layers.0.attn.norm_latents               |
| ln_kv (LayerNorm, eps 1e-6)                   | layers.0.attn.norm_media                 |

Config switches: depth 1, latents_in_kv=False, attn_bias, norm="layernorm" with eps 1e-6,
attn_residual=False, feed_forward=False, final_norm=False, positions="keys_and_queries" with
pos_grid = G, media_dim = D_in (None where kv_proj is an identity); H * Dh = D.

Qwen-VL computes its table in float32 (NumPy) and resizes it in float32 (`.float()` before
F.interpolate) whatever the model's dtype: a stored pos_embed is within 1e-5 of refimpl's
float64 table, and where the grid is resized a float64 module is held to the float32
positions' bound. Inside Qwen-VL's model the keys start with "transformer.visual.attn_pool.".
"""

import math

import numpy as np

from ..config import ResamplerConfig
from ..positions import sincos_2d
from . import _driving, _state_dict
from ._state_dict import FIXED, FUSED_QKV, FUSED_QKV_BIAS, LINEAR, SAME
from .module_spec import ModuleSpec, Point

PEER = "Qwen-VL's Resampler"
LAYERNORM_EPS = 1e-6  # norm_layer = partial(nn.LayerNorm, eps=1e-6)
# a table computed in float32, as Qwen-VL's is, is within 1.8e-6 of the float64 one at
# G = 16, D = 4096 (9.3e-6 at G = 70); a table in another layout differs by about 1
TABLE_ATOL = 2e-5
SWITCHES = dict(
    depth=1,
    latents_in_kv=False,
    attn_bias=True,
    norm="layernorm",
    attn_residual=False,
    feed_forward=False,
    final_norm=False,
    positions="keys_and_queries",
)
POSITIONS_KEY64 = ("float64", "module with float32 sin-cos positions vs refimpl")


# ---- compare: recognising and driving the module

NAME = "qwen_vl"


def recognises(module):
    """True for a module laid out as Qwen-VL's Resampler: a class named Resampler with a
    pos_embed parameter and no ln_post (MiniCPM-V's has one)."""
    names = dict(module.named_parameters())
    return type(module).__name__ == "Resampler" and "pos_embed" in names and not hasattr(module, "ln_post")


def drive(module, x, mask):
    """compare's view of the module: x (B, L, D_in) is refimpl's x[:, None] on the grid
    (sqrt(L), sqrt(L)); no mask. In float64, a module that holds refimpl's float64 table
    (to_qwen_vl's) on the table's grid is held to 1e-10; one whose table was made in float32
    (Qwen-VL's own), or which resizes it (in float32), to the float32 sin-cos positions' bound."""
    _driving.check_no_mask(mask, PEER)
    config, _ = from_qwen_vl(module.state_dict(), heads=module.attn.num_heads, eps=_driving.layer_norm_eps(module))
    side = square_side(x.shape[1])
    spec = ModuleSpec(**mha_spec(config, _layout(config)), to_refimpl=lambda x, mask: (x[:, None], None, (side, side)))
    table = _driving.numpy(module.pos_embed)
    exact = side == config.pos_grid and np.abs(table - sincos_2d(config.dim, side, side)).max() <= 1e-15
    key64 = _driving.GENERIC_KEY64 if exact else POSITIONS_KEY64  # a float32-made table, or a float32 resize
    return _driving.drive(module, spec, x, None, what=PEER, tolerance_key64=key64)


def square_side(tokens):
    """h for L = h * h tokens; ValueError where L is not a square (Qwen-VL's grids are)."""
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ValueError(f"x must have a square number of tokens (an h x h grid of patches) for {PEER}; got {tokens}")
    return side


def mha_spec(config, layout):
    """The ModuleSpec fields of a Qwen-VL-style resampler: one sequence-first
    nn.MultiheadAttention at attn (its (R, B, D) output turned to (B, R, D)), the media
    after kv_proj, no feed-forward."""
    return dict(
        config=config,
        layout=layout,
        attention="attn",
        feed_forward=None,
        final_norm="ln_post" if config.final_norm else None,
        layer_input=Point("attn", "query"),  # one layer: never read
        media="kv_proj",
        record=lambda block, value: value.transpose(0, 1) if block == "attention" else value,
    )


def from_qwen_vl(state_dict, *, heads, eps=LAYERNORM_EPS, prefix=""):
    """(config, params) from the state dict of Qwen-VL's Resampler.

    state_dict: its `module.state_dict()` (torch tensors on any device, any float dtype) or
        the same names mapped to NumPy arrays; with `prefix`, only keys that start with it
        are read, the prefix stripped (e.g. "transformer.visual.attn_pool.").
    heads: H (visual.output_dim // 128 in Qwen-VL), which the shapes cannot tell; eps: its
        LayerNorms' (1e-6).
    returns a ResamplerConfig with every size read off the tensors (pos_grid = sqrt(R)) and
    refimpl's params (float64 copies, projections (in, out)). pos_embed must be the 2-D sin-cos
    table (to 2e-5). Raises ValueError listing every missing, unexpected and mis-shaped key;
    a whole model's state dict without `prefix`, or another peer's, gets one line naming the
    prefix or the peer.
    """
    _state_dict.check_holds_resampler(state_dict, NAME, prefix)
    state = _state_dict.read(state_dict, prefix)
    config = ResamplerConfig(**mha_sizes(state, heads), pos_grid=_pos_grid(state), norm_eps=eps, **SWITCHES)
    layout = _layout(config)
    params = _state_dict.to_params(state, layout, config, PEER, prefix)
    _state_dict.check_fixed(state, layout, prefix)
    return config, params


def _pos_grid(state):
    """G, the side of the queries' (and table's) square grid: R = G * G."""
    queries = _state_dict.size(state, ("query", 0), ("pos_embed", 0))
    side = math.isqrt(queries)
    if side * side != queries:
        raise ValueError(
            f"query must have G*G rows (a G x G grid of queries, as pos_embed has) for {PEER}; got {queries}"
        )
    return side


def mha_sizes(state, heads):
    """dim, heads, dim_head (D / H), num_latents and media_dim (None without kv_proj), read
    off the tensors of a Qwen-VL-style resampler."""
    dim = _state_dict.size(state, ("query", 1), ("attn.out_proj.weight", 0), ("ln_kv.weight", 0))
    inner = _state_dict.size(state, ("attn.in_proj_weight", 0), default=None)
    dim_head = (
        1
        if inner is None
        else _state_dict.heads_divide(
            inner // 3 if inner % 3 == 0 else inner, heads, "attn.in_proj_weight", "3 * H * Dh"
        )
    )
    media_dim = _state_dict.size(state, ("kv_proj.weight", 1), default=None)
    return dict(
        dim=dim, heads=heads, dim_head=dim_head, num_latents=_state_dict.size(state, ("query", 0)), media_dim=media_dim
    )


def to_qwen_vl(config, params, *, dtype=None):
    """The state dict (torch tensors of `dtype`, default torch.float64) that
    `Resampler(grid_size=G, embed_dim=D, num_heads=H, kv_dim=D_in)` (Qwen-VL's visual.py)
    loads with strict=True; its pos_embed is refimpl's float64 sincos_2d(D, G, G).

    Raises ValueError if Qwen-VL cannot express `config` (see the module docstring).
    """
    _state_dict.check_config(config)
    problems = mha_problems(config, dict(SWITCHES, norm_eps=LAYERNORM_EPS), PEER)
    _state_dict.check_expressible(config, PEER, problems)
    return _state_dict.to_state_dict(params, config, _layout(config), dtype)


def mha_problems(config, wanted, peer):
    """What a Qwen-VL-style resampler (one nn.MultiheadAttention, H * Dh = D, no embeddings,
    kv_proj without bias) cannot express in `config`."""
    problems = _state_dict.differences(
        config, dict(wanted, norm_dtype=None, qk_norm=False, kv_heads=None, pre_norm=True, media_proj_bias=False), peer
    )
    if config.heads * config.dim_head != config.dim:
        problems.append(
            f"heads * dim_head = {config.heads * config.dim_head}; {peer}'s nn.MultiheadAttention has H * Dh = D = "
            f"{config.dim}"
        )
    if config.media_dim == config.dim:
        problems.append(f"media_dim = dim = {config.dim}; {peer}'s kv_proj is an identity there (use media_dim=None)")
    problems += [
        f"{name} = {getattr(config, name)!r}; {peer} has none"
        for name in ("num_time_embeds", "num_media_embeds")
        if getattr(config, name) is not None
    ]
    return problems


def _layout(config):
    table = sincos_2d(config.dim, config.pos_grid, config.pos_grid)  # (G*G, D)
    return {"pos_embed": (FIXED, _state_dict.Fixed(table, TABLE_ATOL)), **mha_layout(config)}


def mha_layout(config, after_query=None):
    """query, `after_query` (MiniCPM-V's proj), kv_proj (where media_dim), attn
    (nn.MultiheadAttention), ln_q and ln_kv: a Qwen-VL-style module's state-dict order."""
    layout = {"query": (SAME, ("latents",))} | (after_query or {})
    if config.media_dim is not None:
        layout["kv_proj.weight"] = (LINEAR, ("media_proj.weight",))
    attn = "layers.0.attn"
    layout |= {
        "attn.in_proj_weight": (FUSED_QKV, (f"{attn}.wq", f"{attn}.wk", f"{attn}.wv")),
        "attn.in_proj_bias": (FUSED_QKV_BIAS, (f"{attn}.bq", f"{attn}.bk", f"{attn}.bv")),
        "attn.out_proj.weight": (LINEAR, (f"{attn}.wo",)),
        "attn.out_proj.bias": (SAME, (f"{attn}.bo",)),
    }
    return layout | _state_dict.norm("ln_q", f"{attn}.norm_latents") | _state_dict.norm("ln_kv", f"{attn}.norm_media")


# ---------------------------------------------------------------- verify
# finding the resampler in a checkpoint and building the peer's module

KEY_PREFIXES = ("transformer.visual.attn_pool.", "visual.attn_pool.", "attn_pool.", "")
DEFAULT_EPS = LAYERNORM_EPS


def find_prefix(keys):
    """Where Qwen-VL's resampler sits among a state dict's `keys`
    ("transformer.visual.attn_pool." in Qwen-VL's), or None: attn.in_proj_weight beside
    query and pos_embed, and no ln_post (MiniCPM-V's)."""
    return _state_dict.find_prefix(
        keys, "attn.in_proj_weight", also=("query", "pos_embed"), never=("ln_post.weight",), known=KEY_PREFIXES
    )


def settings_from_hf_config(hf_config):
    """{heads, eps} for from_qwen_vl as Qwen-VL's VisionTransformer reads them from its
    config.json (a dict): heads = visual.output_dim // 128; eps 1e-6 (fixed in its code).
    heads is None where config.json has no visual.output_dim."""
    output_dim = (hf_config.get("visual") or {}).get("output_dim")
    return dict(heads=None if output_dim is None else output_dim // 128, eps=LAYERNORM_EPS)


def build_module(config, params, *, dtype, hf_config=None, module_class=None):
    """A module of `module_class` (a class with Qwen-VL Resampler's constructor and layout, e.g.
    the Resampler of its visual.py) holding `params`, in `dtype`, in eval mode.

    Qwen-VL's code is not an installable package: without `module_class` this raises
    ImportError, and `python -m refimpl verify` does the shape check only."""
    state_dict = to_qwen_vl(config, params, dtype=dtype)
    if module_class is None:
        raise ImportError(
            "Qwen-VL's Resampler ships only with its checkpoints (trust_remote_code)", name="Qwen-VL's visual.py"
        )
    module = module_class(
        grid_size=config.pos_grid, embed_dim=config.dim, num_heads=config.heads, kv_dim=config.media_dim
    )
    return _state_dict.load_module(module, state_dict)


def sample_input(config, rng):
    """(x, None): x (B, L, D_in) = (2, h*h, D_in) from `rng`, on an h x h grid one side larger
    than the table's (so the key positions are resized)."""
    side = config.pos_grid + 1
    return rng.standard_normal((2, side * side, config.media_width)), None
