"""Hugging Face Evolla's EvollaSequenceCompressorResampler
(transformers/models/evolla/modeling_evolla.py) <-> refimpl.

Evolla resamples a protein language model's residues, not an image's patches:
`EvollaSequenceCompressorResampler(EvollaConfig(...))` takes embeds (bsz, seq, D), one row
per residue, and mask (bsz, seq), 1 = a real residue, 0 = padding, and returns (bsz, R, Do),
Do = config.hidden_size (the language model's width). In refimpl's axes one frame of seq
tokens,

    refimpl x = embeds[:, None]          (B, T = 1, S = seq, D)
    refimpl mask = mask[:, None] == 1     (B, 1, seq), True = real
    output (bsz, R, Do)                   = refimpl's (B, R, Do)

| Evolla key                                    | refimpl name                            |
|-----------------------------------------------|-----------------------------------------|
| latents (R, D)                                | latents                                 |
| layers.{i}.0.norm_media / norm_latents (LayerNorm) | layers.{i}.attn.norm_media / norm_latents |
| layers.{i}.0.to_q.weight (H*Dh, D)            | layers.{i}.attn.wq (transposed)         |
| layers.{i}.0.to_kv.weight (2*H*Dh, D)         | layers.{i}.attn.wk, .wv: first half keys|
| layers.{i}.0.to_out.weight (D, H*Dh)          | layers.{i}.attn.wo (transposed)         |
| layers.{i}.1.norm (LayerNorm)                 | layers.{i}.ff.norm                      |
| layers.{i}.1.fc1.weight (F, D)  (GELU after)  | layers.{i}.ff.w_in (transposed)         |
| layers.{i}.1.fc2.weight (D, F)                | layers.{i}.ff.w_out (transposed)        |
| protein_projector.weight (Do, D) / .bias (Do,)| out_proj.weight (transposed) / .bias    |
| norm (LayerNorm over Do)                      | out_norm                                |

Config switches: flamingo-pytorch's layers (activation="gelu", exact; norm="layernorm", eps
1e-5, nn.LayerNorm's default; latents in the keys and values), final_norm=False, out_dim =
hidden_size with out_proj_bias, out_norm. Its attention fills the scores of padding with
-1e4 rather than -inf, after subtracting each row's maximum: their weights are exp(-1e4),
which is 0 in float32 and float64, as refimpl's mask gives. Inside EvollaForProteinText2Text
the keys start with "model.protein_encoder.sequence_compressor_resampler.".
"""

import numpy as np

from ..config import ResamplerConfig
from . import _driving, _state_dict
from ._state_dict import FUSED_KV, LINEAR, SAME
from .module_spec import ModuleSpec, Point

PEER = "Evolla's EvollaSequenceCompressorResampler"
LAYERNORM_EPS = 1e-5  # nn.LayerNorm's default, which Evolla keeps
SWITCHES = dict(
    activation="gelu", norm="layernorm", latents_in_kv=True, final_norm=False, out_proj_bias=True, out_norm=True
)


# ---- compare: recognising and driving the module

NAME = "evolla"


def recognises(module):
    """True for transformers' EvollaSequenceCompressorResampler."""
    return type(module).__name__ == "EvollaSequenceCompressorResampler"


def drive(module, x, mask):
    """compare's view of the module: embeds (bsz, seq, D) is refimpl's x[:, None], its mask
    (bsz, seq), 1 = real (all ones where mask is None), refimpl's mask[:, None] == 1."""
    config, _ = from_evolla(module.state_dict(), heads=module.layers[0][0].heads, eps=_driving.layer_norm_eps(module))
    spec = ModuleSpec(
        config=config,
        layout=_layout(config),
        attention="layers.{i}.0",  # EvollaSequenceCompressorAttention(x, latents, mask)
        feed_forward="layers.{i}.1",
        final_norm=None,
        layer_input=Point("layers.{i}.0", 1),
        media=Point("layers.0.0", 0),
        output_projection="protein_projector",
        output_norm="norm",
        call=_call,
        to_refimpl=lambda x, mask: (x[:, None], (np.ones(x.shape[:2]) if mask is None else mask)[:, None] == 1),
    )
    return _driving.drive(module, spec, x, mask, what=PEER)


def _call(module, embeds, mask):
    import torch

    return module(
        embeds, torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device) if mask is None else mask
    )


def from_evolla(state_dict, *, heads, eps=LAYERNORM_EPS, prefix=""):
    """(config, params) from the state dict of Evolla's EvollaSequenceCompressorResampler.

    state_dict: its `module.state_dict()` (torch tensors on any device, any float dtype) or
        the same names mapped to NumPy arrays; with `prefix`, only keys that start with it
        are read, the prefix stripped (e.g. "model.protein_encoder.sequence_compressor_resampler.").
    heads: H (config.resampler_heads), which the shapes cannot tell; eps: its LayerNorms'.
    returns a ResamplerConfig with every size read off the tensors (out_dim from
    protein_projector) and refimpl's params (float64 copies, projections (in, out)).
    Raises ValueError listing every missing, unexpected and mis-shaped key; a whole model's
    state dict without `prefix`, or another peer's, gets one line naming the prefix or the peer.
    """
    _state_dict.check_holds_resampler(state_dict, NAME, prefix)
    state = _state_dict.read(state_dict, prefix)
    dim = _state_dict.size(state, ("latents", 1), ("layers.0.0.to_q.weight", 1), ("protein_projector.weight", 1))
    inner = _state_dict.size(state, ("layers.0.0.to_q.weight", 0), ("layers.0.0.to_out.weight", 1), default=None)
    ff_dim = _state_dict.size(state, ("layers.0.1.fc1.weight", 0), ("layers.0.1.fc2.weight", 1))
    config = ResamplerConfig(
        dim=dim,
        depth=_state_dict.depth(state, r"layers\.(\d+)\."),
        heads=heads,
        dim_head=1 if inner is None else _state_dict.heads_divide(inner, heads, "layers.0.0.to_q.weight"),
        num_latents=_state_dict.size(state, ("latents", 0)),
        ff_mult=_state_dict.ff_mult(ff_dim, dim),
        norm_eps=eps,
        out_dim=_state_dict.size(state, ("protein_projector.weight", 0), ("norm.weight", 0)),
        **SWITCHES,
    )
    return config, _state_dict.to_params(state, _layout(config), config, PEER, prefix)


def to_evolla(config, params, *, dtype=None):
    """The state dict (torch tensors of `dtype`, default torch.float64) that
    `EvollaSequenceCompressorResampler(EvollaConfig(protein_encoder_config=dict(hidden_size=D),
    hidden_size=Do, resampler_depth=depth, resampler_dim_head=Dh, resampler_heads=H,
    resampler_num_latents=R, resampler_ff_mult=ff_mult))` loads with strict=True.

    Raises ValueError if Evolla cannot express `config` (see the module docstring).
    """
    _state_dict.check_config(config)
    wanted = dict(
        SWITCHES,
        norm_eps=LAYERNORM_EPS,
        norm_dtype=None,
        qk_norm=False,
        kv_heads=None,
        attn_bias=False,
        pre_norm=True,
        attn_residual=True,
        feed_forward=True,
    )
    problems = _state_dict.differences(config, wanted, PEER)
    if config.out_dim is None:
        problems.append(f"out_dim = None; {PEER} always projects its output (protein_projector)")
    problems += [
        f"{name} = {getattr(config, name)!r}; {PEER} has none"
        for name in ("num_time_embeds", "num_media_embeds", "media_dim", "positions")
        if getattr(config, name) is not None
    ]
    _state_dict.check_expressible(config, PEER, problems)
    return _state_dict.to_state_dict(params, config, _layout(config), dtype)


def _layout(config):
    layout = {"latents": (SAME, ("latents",))}
    for i in range(config.depth):
        attn, ff, ours = f"layers.{i}.0", f"layers.{i}.1", f"layers.{i}"
        layout |= _state_dict.norm(f"{attn}.norm_media", f"{ours}.attn.norm_media")
        layout |= _state_dict.norm(f"{attn}.norm_latents", f"{ours}.attn.norm_latents")
        layout |= {
            f"{attn}.to_q.weight": (LINEAR, (f"{ours}.attn.wq",)),
            f"{attn}.to_kv.weight": (FUSED_KV, (f"{ours}.attn.wk", f"{ours}.attn.wv")),
            f"{attn}.to_out.weight": (LINEAR, (f"{ours}.attn.wo",)),
        }
        layout |= _state_dict.norm(f"{ff}.norm", f"{ours}.ff.norm")
        layout |= {
            f"{ff}.fc1.weight": (LINEAR, (f"{ours}.ff.w_in",)),
            f"{ff}.fc2.weight": (LINEAR, (f"{ours}.ff.w_out",)),
        }
    layout |= _state_dict.norm("norm", "out_norm")
    return layout | {
        "protein_projector.weight": (LINEAR, ("out_proj.weight",)),
        "protein_projector.bias": (SAME, ("out_proj.bias",)),
    }


# ---------------------------------------------------------------- verify
# finding the resampler in a checkpoint and building the peer's module

KEY_PREFIXES = (
    "model.protein_encoder.sequence_compressor_resampler.",
    "protein_encoder.sequence_compressor_resampler.",
    "",
)
DEFAULT_EPS = LAYERNORM_EPS
DEFAULT_HEADS = 8  # EvollaConfig's resampler_heads


def find_prefix(keys):
    """Where Evolla's resampler sits among a state dict's `keys`, or None: layers.0.1.fc1.weight
    beside latents and protein_projector.weight."""
    return _state_dict.find_prefix(
        keys, "layers.0.1.fc1.weight", also=("latents", "protein_projector.weight"), known=KEY_PREFIXES
    )


def settings_from_hf_config(hf_config):
    """{heads, eps} for from_evolla as EvollaModel reads them from its config.json (a dict):
    resampler_heads (8 where absent); eps is nn.LayerNorm's default, 1e-5, whatever the config says."""
    return dict(heads=hf_config.get("resampler_heads", DEFAULT_HEADS), eps=LAYERNORM_EPS)


def build_module(config, params, *, dtype, hf_config=None):
    """transformers' EvollaSequenceCompressorResampler holding `params`, in `dtype`, in eval
    mode (ImportError if transformers is not installed). `hf_config` is not read."""
    state_dict = to_evolla(config, params, dtype=dtype)
    from transformers import EvollaConfig
    from transformers.models.evolla.modeling_evolla import EvollaSequenceCompressorResampler

    evolla_config = EvollaConfig(
        protein_encoder_config=dict(hidden_size=config.dim),
        hidden_size=config.out_dim,
        resampler_depth=config.depth,
        resampler_dim_head=config.dim_head,
        resampler_heads=config.heads,
        resampler_num_latents=config.num_latents,
        resampler_ff_mult=config.ff_mult,
    )
    return _state_dict.load_module(EvollaSequenceCompressorResampler(evolla_config), state_dict)


def sample_input(config, rng):
    """(embeds, mask): embeds (bsz, seq, D) = (2, 9, D) from `rng`, and mask (bsz, seq) with
    the last 4 residues of the second row padding (0)."""
    mask = np.ones((2, 9), dtype=np.int64)
    mask[1, 5:] = 0
    return rng.standard_normal((2, 9, config.dim)), mask
