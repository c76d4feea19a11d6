"""Hugging Face IDEFICS's IdeficsPerceiverResampler (transformers/models/idefics/perceiver.py)
<-> refimpl.

`IdeficsPerceiverResampler(config, embed_dim, depth, n_heads, head_dim, n_latents)` takes
context (bsz, seq, D) and returns (bsz, R, D): in refimpl's axes one frame of seq tokens,

    refimpl x = context[:, None]     (B, T = 1, S = seq, D),  no mask

| IDEFICS key                                     | refimpl name                          |
|-------------------------------------------------|---------------------------------------|
| latents (R, D)                                  | latents                               |
| blocks.{i}.0.context_layer_norm.weight / .bias  | layers.{i}.attn.norm_media.*          |
| blocks.{i}.0.latents_layer_norm.weight / .bias  | layers.{i}.attn.norm_latents.*        |
| blocks.{i}.0.q_layer_norm.weight / .bias (Dh,)  | layers.{i}.attn.q_norm.*  (qk_norm)   |
| blocks.{i}.0.k_layer_norm.weight / .bias (Dh,)  | layers.{i}.attn.k_norm.*  (qk_norm)   |
| blocks.{i}.0.q_proj / k_proj / v_proj.weight    | layers.{i}.attn.wq / wk / wv (transposed) |
| blocks.{i}.0.output_proj.weight                 | layers.{i}.attn.wo (transposed)       |
| blocks.{i}.1.ln.weight / .bias                  | layers.{i}.ff.norm.*                  |
| blocks.{i}.1.fc.weight (F, D)                   | layers.{i}.ff.w_in (transposed)       |
| blocks.{i}.1.c_proj.weight (D, F)  (ReLU between)| layers.{i}.ff.w_out (transposed)     |
| layer_norm.weight / .bias                       | norm.*                                |

Config switches: activation="relu", norm="layernorm" with eps 1e-5 (nn.LayerNorm's
default, also for the q/k norms), qk_norm = whether q_layer_norm/k_layer_norm exist
(perceiver_config.qk_layer_norms_perceiver), kv_heads None, latents in the keys, no
embeddings. IDEFICS's MLP is 4 * vision_config.embed_dim wide and normalises over
vision_config.embed_dim, which must equal embed_dim: so ff_mult = 4 in the real model
(import reads F off the tensors; export insists on 4). Inside IdeficsModel the resampler's
keys start with "perceiver_resampler." (pass it as `prefix`).
"""

import re

from ..config import ResamplerConfig
from . import _driving, _state_dict
from ._state_dict import LINEAR, SAME
from .module_spec import ModuleSpec, Point

PEER = "IDEFICS's IdeficsPerceiverResampler"
LAYERNORM_EPS = 1e-5  # nn.LayerNorm's default, which IDEFICS keeps
FF_MULT = 4  # IdeficsMLP: intermediate size 4 * vision_config.embed_dim


# ---- compare: recognising and driving the module

NAME = "idefics"


def recognises(module):
    """True for transformers' IdeficsPerceiverResampler."""
    return type(module).__name__ == "IdeficsPerceiverResampler"


def drive(module, x, mask):
    """compare's view of the module: context (bsz, seq, D) is refimpl's x[:, None]; no mask."""
    _driving.check_no_mask(mask, PEER)
    config, _ = from_idefics(module.state_dict(), heads=module.n_heads, eps=_driving.layer_norm_eps(module))
    spec = ModuleSpec(
        config=config,
        layout=_layout(config),
        attention="blocks.{i}.0",  # IdeficsPerceiverAttention(context, latents)
        feed_forward="blocks.{i}.1",
        final_norm="layer_norm",
        layer_input=Point("blocks.{i}.0", 1),
        media=Point("blocks.0.0", 0),
        to_refimpl=lambda x, mask: (x[:, None], None),  # (B, T = 1, S, D)
    )
    return _driving.drive(module, spec, x, None, what=PEER)


def from_idefics(state_dict, *, heads, eps=1e-5, prefix=""):
    """(config, params) from the state dict of IDEFICS's IdeficsPerceiverResampler.

    state_dict: its `module.state_dict()` (torch tensors on any device, any float dtype) or
        the same names mapped to NumPy arrays; with `prefix`, only keys that start with it
        are read, the prefix stripped ("model.perceiver_resampler." in a full checkpoint).
    heads: H (perceiver_config.resampler_n_heads), which the shapes cannot tell; eps: its
        LayerNorms' eps.
    returns a ResamplerConfig with every size read off the tensors (qk_norm where the q/k
    layer norms exist) and refimpl's params (float64 copies, projections (in, out)).
    Raises ValueError listing every missing, unexpected and mis-shaped key; a whole model's
    state dict without `prefix`, or another peer's, gets one line naming the prefix or the peer.
    """
    _state_dict.check_holds_resampler(state_dict, NAME, prefix)
    state = _state_dict.read(state_dict, prefix)
    dim = _state_dict.size(state, ("latents", 1), ("layer_norm.weight", 0), ("blocks.0.0.q_proj.weight", 1))
    inner = _state_dict.size(state, ("blocks.0.0.q_proj.weight", 0), ("blocks.0.0.output_proj.weight", 1), default=None)
    ff_dim = _state_dict.size(state, ("blocks.0.1.fc.weight", 0), ("blocks.0.1.c_proj.weight", 1))
    config = ResamplerConfig(
        dim=dim,
        depth=_state_dict.depth(state, r"blocks\.(\d+)\."),
        heads=heads,
        dim_head=1 if inner is None else _state_dict.heads_divide(inner, heads, "blocks.0.0.q_proj.weight"),
        num_latents=_state_dict.size(state, ("latents", 0)),
        ff_mult=_state_dict.ff_mult(ff_dim, dim),
        activation="relu",
        norm="layernorm",
        norm_eps=eps,
        qk_norm=any(re.match(r"blocks\.\d+\.0\.[qk]_layer_norm\.", key) for key in state),
    )
    return config, _state_dict.to_params(state, _layout(config), config, PEER, prefix)


def to_idefics(config, params, *, dtype=None):
    """The state dict (torch tensors of `dtype`, default torch.float64) that
    `IdeficsPerceiverResampler(idefics_config, embed_dim=D, depth=depth, n_heads=H,
    head_dim=Dh, n_latents=R)` loads with strict=True, where idefics_config has
    vision_config.embed_dim = D and perceiver_config.qk_layer_norms_perceiver = qk_norm.

    Raises ValueError if IDEFICS cannot express `config` (see the module docstring).
    """
    _state_dict.check_config(config)
    wanted = dict(activation="relu", norm="layernorm", norm_eps=LAYERNORM_EPS, norm_dtype=None, latents_in_kv=True)
    problems = _state_dict.differences(config, wanted, PEER)
    if config.num_kv_heads != config.heads:
        problems.append(
            f"kv_heads = {config.kv_heads} (grouped-query attention); {PEER} has one key/value head per query head"
        )
    problems += _state_dict.mlp_and_table_problems(config, PEER, FF_MULT)
    _state_dict.check_expressible(config, PEER, problems)
    return _state_dict.to_state_dict(params, config, _layout(config), dtype)


def _layout(config):
    layout = {"latents": (SAME, ("latents",))}
    for i in range(config.depth):
        attn, ff, ours = f"blocks.{i}.0", f"blocks.{i}.1", f"layers.{i}"
        layout |= _state_dict.norm(f"{attn}.context_layer_norm", f"{ours}.attn.norm_media")
        layout |= _state_dict.norm(f"{attn}.latents_layer_norm", f"{ours}.attn.norm_latents")
        if config.qk_norm:
            layout |= _state_dict.norm(f"{attn}.q_layer_norm", f"{ours}.attn.q_norm")
            layout |= _state_dict.norm(f"{attn}.k_layer_norm", f"{ours}.attn.k_norm")
        layout |= {
            f"{attn}.q_proj.weight": (LINEAR, (f"{ours}.attn.wq",)),
            f"{attn}.k_proj.weight": (LINEAR, (f"{ours}.attn.wk",)),
            f"{attn}.v_proj.weight": (LINEAR, (f"{ours}.attn.wv",)),
            f"{attn}.output_proj.weight": (LINEAR, (f"{ours}.attn.wo",)),
        }
        layout |= _state_dict.norm(f"{ff}.ln", f"{ours}.ff.norm")
        layout |= {
            f"{ff}.fc.weight": (LINEAR, (f"{ours}.ff.w_in",)),
            f"{ff}.c_proj.weight": (LINEAR, (f"{ours}.ff.w_out",)),
        }
    return layout | _state_dict.norm("layer_norm", "norm")


# ---------------------------------------------------------------- verify
# finding the resampler in a checkpoint and building the peer's module

KEY_PREFIXES = ("model.perceiver_resampler.", "perceiver_resampler.", "")  # IdeficsForVisionText2Text, IdeficsModel
DEFAULT_EPS = LAYERNORM_EPS
DEFAULT_HEADS = 16  # IdeficsPerceiverConfig's resampler_n_heads


def find_prefix(keys):
    """Where IDEFICS's resampler sits among a state dict's `keys`
    ("model.perceiver_resampler." in IdeficsForVisionText2Text's), or None."""
    return _state_dict.find_prefix(keys, "blocks.0.0.context_layer_norm.weight", also=("latents",), known=KEY_PREFIXES)


def settings_from_hf_config(hf_config):
    """{heads} for from_idefics as IdeficsModel reads it from its config.json (a dict):
    perceiver_config.resampler_n_heads (16 where absent). The config has no eps for the
    resampler: its LayerNorms keep torch's default, DEFAULT_EPS."""
    perceiver = hf_config.get("perceiver_config") or {}
    return dict(heads=perceiver.get("resampler_n_heads", DEFAULT_HEADS))


def build_module(config, params, *, dtype, hf_config=None):
    """transformers' IdeficsPerceiverResampler holding `params`, in `dtype`, in eval mode,
    built as IdeficsModel builds it (ImportError if transformers is not installed). Its
    IdeficsConfig is made from `config` (vision_config.embed_dim = D, qk_layer_norms_perceiver
    = qk_norm); `hf_config` adds nothing the tensors have not told."""
    state_dict = to_idefics(config, params, dtype=dtype)
    from transformers import IdeficsConfig
    from transformers.models.idefics.perceiver import IdeficsPerceiverResampler

    idefics_config = IdeficsConfig(
        vision_config={"embed_dim": config.dim}, perceiver_config={"qk_layer_norms_perceiver": config.qk_norm}
    )
    module = IdeficsPerceiverResampler(
        idefics_config,
        embed_dim=config.dim,
        depth=config.depth,
        n_heads=config.heads,
        head_dim=config.dim_head,
        n_latents=config.num_latents,
    )
    return _state_dict.load_module(module, state_dict)


def sample_input(config, rng):
    """(context, None): context (bsz, seq, D) = (2, 9, D) from `rng`."""
    return rng.standard_normal((2, 9, config.dim)), None
