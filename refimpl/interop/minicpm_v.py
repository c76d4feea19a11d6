"""MiniCPM-V 2.5/2.6's `Resampler` (the model's resampler.py, on the model hub) <-> refimpl.

MiniCPM-V's code ships with its checkpoints (trust_remote_code), not in a package, so refimpl
knows it by its layout and its forward: `Resampler(num_queries=R, embed_dim=D, num_heads=H,
kv_dim=D_in)` takes x (B, L, D_in) and tgt_sizes (B, 2): image b is an h_b x w_b grid of
patches, its tokens the first h_b * w_b of row b, the rest padding (L = the largest h_b * w_b).
It returns (B, R, D): one cross-attention (torch.nn.MultiheadAttention) of the normalised
learned queries over the normalised projected patches plus each image's own h_b x w_b sin-cos
table (keys only), with the padding masked, then ln_post and x @ proj:

    refimpl x = x[:, None]                          (B, T = 1, S = L, D_in = media_dim)
    refimpl mask[b, 0, t] = t < h_b * w_b           (B, 1, L), True = real
    refimpl grid = tgt_sizes                        (B, 2)
    output (B, R, D)                                = refimpl's (B, R, D)

| MiniCPM-V key                                 | refimpl name                             |
|-----------------------------------------------|------------------------------------------|
| query (R, D)                                  | latents                                  |
| kv_proj.weight (D, D_in), no bias             | media_proj.weight (transposed); absent (nn.Identity) where D_in = D |
| attn.in_proj_weight (3D, D) / in_proj_bias    | layers.0.attn.wq, wk, wv (transposed) / bq, bk, bv: thirds |
| attn.out_proj.weight (D, D) / .bias (D,)      | layers.0.attn.wo (transposed) / .bo      |
| ln_q, ln_kv (LayerNorm, eps 1e-6)             | layers.0.attn.norm_latents, norm_media   |
| ln_post (LayerNorm, eps 1e-6)                 | norm                                     |
| proj (D, D), applied as x @ proj              | out_proj.weight (as is: refimpl's is (in, out) too) |

Its sin-cos table is a buffer, not in the state dict. Config switches: as Qwen-VL's
(refimpl.interop.qwen_vl) but positions="keys" (each image's own table, no pos_grid; the
queries get none), final_norm (ln_post), out_dim = D with out_proj_bias=False.

MiniCPM-V computes its table in float32 (NumPy) whatever the model's dtype: a float64 module
is held to the float32 positions' bound. Inside MiniCPM-V's model the keys start with "resampler.".
"""

import numpy as np

from ..config import ResamplerConfig
from . import _driving, _state_dict
from ._state_dict import SAME
from .module_spec import ModuleSpec
from .qwen_vl import LAYERNORM_EPS, POSITIONS_KEY64, mha_layout, mha_problems, mha_sizes, mha_spec

PEER = "MiniCPM-V's Resampler"
SWITCHES = dict(
    depth=1,
    latents_in_kv=False,
    attn_bias=True,
    norm="layernorm",
    attn_residual=False,
    feed_forward=False,
    final_norm=True,
    out_proj_bias=False,
    positions="keys",
)


# ---- compare: recognising and driving the module

NAME = "minicpm_v"


def recognises(module):
    """True for a module laid out as MiniCPM-V's Resampler: a class named Resampler with
    ln_post and proj."""
    return type(module).__name__ == "Resampler" and hasattr(module, "ln_post") and hasattr(module, "proj")


def drive(module, x, mask):
    """compare's view of the module: x (B, L, D_in) is refimpl's x[:, None]; `mask` is the
    module's tgt_sizes (B, 2) (required), refimpl's grid, from which refimpl's mask follows.
    In float64 the module's float32 table bounds it (TOLERANCES' float32 sin-cos positions key)."""
    if mask is None:
        raise ValueError(f"mask must be {PEER}'s tgt_sizes (B, 2), each image's (h, w) in patches; got None")
    config, _ = from_minicpm_v(module.state_dict(), heads=module.attn.num_heads, eps=_driving.layer_norm_eps(module))
    spec = ModuleSpec(
        **mha_spec(config, _layout(config)), to_refimpl=_to_refimpl, call=lambda module, x, sizes: module(x, sizes)
    )
    return _driving.drive(module, spec, x, mask, what=PEER, tolerance_key64=POSITIONS_KEY64)


def _to_refimpl(x, tgt_sizes):
    """x (B, L, D_in) and tgt_sizes (B, 2) -> refimpl's x (B, 1, L, D_in), mask (B, 1, L), grid (B, 2)."""
    tgt_sizes = np.asarray(tgt_sizes)
    real = np.arange(x.shape[1]) < (tgt_sizes[:, 0] * tgt_sizes[:, 1])[:, None]  # (B, L)
    return x[:, None], real[:, None], tgt_sizes


def from_minicpm_v(state_dict, *, heads, eps=LAYERNORM_EPS, prefix=""):
    """(config, params) from the state dict of MiniCPM-V 2.5/2.6's Resampler.

    state_dict: its `module.state_dict()` (torch tensors on any device, any float dtype) or
        the same names mapped to NumPy arrays; with `prefix`, only keys that start with it
        are read, the prefix stripped (e.g. "resampler.").
    heads: H (embed_dim // 128 in MiniCPM-V), which the shapes cannot tell; eps: its
        LayerNorms' (1e-6).
    returns a ResamplerConfig with every size read off the tensors and refimpl's params
    (float64 copies, projections (in, out)). Raises ValueError listing every missing,
    unexpected and mis-shaped key; a whole model's state dict without `prefix`, or another
    peer's, gets one line naming the prefix or the peer.
    """
    _state_dict.check_holds_resampler(state_dict, NAME, prefix)
    state = _state_dict.read(state_dict, prefix)
    sizes = mha_sizes(state, heads)
    config = ResamplerConfig(**sizes, out_dim=sizes["dim"], norm_eps=eps, **SWITCHES)
    return config, _state_dict.to_params(state, _layout(config), config, PEER, prefix)


def to_minicpm_v(config, params, *, dtype=None):
    """The state dict (torch tensors of `dtype`, default torch.float64) that
    `Resampler(num_queries=R, embed_dim=D, num_heads=H, kv_dim=D_in)` (MiniCPM-V's
    resampler.py) loads with strict=True.

    Raises ValueError if MiniCPM-V cannot express `config` (see the module docstring).
    """
    _state_dict.check_config(config)
    problems = mha_problems(config, dict(SWITCHES, norm_eps=LAYERNORM_EPS, out_norm=False), PEER)
    if config.out_dim != config.dim:
        problems.append(f"out_dim = {config.out_dim}; {PEER}'s proj is (D, D), out_dim = dim = {config.dim}")
    _state_dict.check_expressible(config, PEER, problems)
    return _state_dict.to_state_dict(params, config, _layout(config), dtype)


def _layout(config):
    layout = mha_layout(config, after_query={"proj": (SAME, ("out_proj.weight",))})  # x @ proj: (in, out) already
    return layout | _state_dict.norm("ln_post", "norm")


# ---------------------------------------------------------------- verify
# finding the resampler in a checkpoint and building the peer's module

KEY_PREFIXES = ("resampler.", "")
DEFAULT_EPS = LAYERNORM_EPS


def find_prefix(keys):
    """Where MiniCPM-V's resampler sits among a state dict's `keys` ("resampler." in
    MiniCPM-V's), or None: attn.in_proj_weight beside query, ln_post and proj."""
    return _state_dict.find_prefix(
        keys, "attn.in_proj_weight", also=("query", "ln_post.weight", "proj"), known=KEY_PREFIXES
    )


def settings_from_hf_config(hf_config):
    """{heads, eps} for from_minicpm_v as MiniCPM-V builds its resampler from its config.json
    (a dict): heads = hidden_size // 128; eps 1e-6 (fixed in its code). heads is None where
    config.json has no hidden_size."""
    hidden_size = hf_config.get("hidden_size")
    return dict(heads=None if hidden_size is None else hidden_size // 128, eps=LAYERNORM_EPS)


def build_module(config, params, *, dtype, hf_config=None, module_class=None):
    """A module of `module_class` (a class with MiniCPM-V Resampler's constructor and layout,
    e.g. the Resampler of its resampler.py) holding `params`, in `dtype`, in eval mode.

    MiniCPM-V's code is not an installable package: without `module_class` this raises
    ImportError, and `python -m refimpl verify` does the shape check only."""
    state_dict = to_minicpm_v(config, params, dtype=dtype)
    if module_class is None:
        raise ImportError(
            "MiniCPM-V's Resampler ships only with its checkpoints (trust_remote_code)", name="MiniCPM-V's resampler.py"
        )
    module = module_class(
        num_queries=config.num_latents, embed_dim=config.dim, num_heads=config.heads, kv_dim=config.media_dim
    )
    return _state_dict.load_module(module, state_dict)


def sample_input(config, rng):
    """(x, tgt_sizes): x (B, L, D_in) = (2, 12, D_in) from `rng`, images of 3 x 4 and 2 x 5
    patches (the second padded from 10 to 12 tokens)."""
    return rng.standard_normal((2, 12, config.media_width)), np.array([[3, 4], [2, 5]])
