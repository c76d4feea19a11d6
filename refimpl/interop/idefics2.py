"""Hugging Face Idefics2's Idefics2PerceiverResampler
(transformers/models/idefics2/modeling_idefics2.py) <-> refimpl.

`Idefics2PerceiverResampler(Idefics2PerceiverConfig(...))` takes context (bsz, seq, D) and
attention_mask (bsz, seq), 1 = a real token, 0 = padding, and returns (bsz, R, D): in
refimpl's axes one frame of seq tokens,

    refimpl x = context[:, None]                    (B, T = 1, S = seq, D)
    refimpl mask = attention_mask[:, None] == 1      (B, 1, seq), True = real

| Idefics2 key                                       | refimpl name                     |
|----------------------------------------------------|----------------------------------|
| latents (R, D)                                     | latents                          |
| layers.{i}.input_latents_norm.weight (RMSNorm)     | layers.{i}.attn.norm_latents.weight |
| layers.{i}.input_context_norm.weight (RMSNorm)     | layers.{i}.attn.norm_media.weight   |
| layers.{i}.self_attn.q_proj.weight (H*Dh, D)       | layers.{i}.attn.wq (transposed)  |
| layers.{i}.self_attn.k_proj / v_proj.weight (Hkv*Dh, D) | layers.{i}.attn.wk / wv (transposed) |
| layers.{i}.self_attn.o_proj.weight (D, H*Dh)       | layers.{i}.attn.wo (transposed)  |
| layers.{i}.post_attention_layernorm.weight         | layers.{i}.ff.norm.weight        |
| layers.{i}.mlp.gate_proj / up_proj.weight (F, D)   | layers.{i}.ff.w_gate / w_up (transposed) |
| layers.{i}.mlp.down_proj.weight (D, F)             | layers.{i}.ff.w_down (transposed)|
| norm.weight                                        | norm.weight                      |

Config switches: activation="swiglu" (Idefics2MLP with hidden_act="silu", the default; its
MLP with another hidden_act, gelu-gated say, refimpl cannot express, and compare refuses it),
norm="rmsnorm" with eps = rms_norm_eps (1e-6 by default), norm_dtype="float32",
kv_heads = num_key_value_heads (grouped-query attention; query head h uses key/value head
h // (H / Hkv), as transformers' repeat_kv does), no qk_norm, latents in the keys, no
embeddings, ff_mult = 4 (the MLP is 4 * hidden_size wide).

Idefics2RMSNorm casts its input to float32, normalises, and casts back before the learned
scale, whatever the model's dtype: in a float64 model the norms are float32 arithmetic.
norm_dtype="float32" makes refimpl do the same; norm_dtype=None normalises in the compute
dtype (what a float32 or a patched float64 model does). Inside Idefics2Model the
resampler's keys start with "connector.perceiver_resampler." (and with
"model.connector.perceiver_resampler." in Idefics2ForConditionalGeneration): pass `prefix`.
"""

import numpy as np

from ..config import ResamplerConfig
from . import _driving, _state_dict
from ._state_dict import LINEAR, SAME
from .module_spec import ModuleSpec, Point

PEER = "Idefics2's Idefics2PerceiverResampler"
FF_MULT = 4  # Idefics2PerceiverLayer: Idefics2MLP(intermediate_size=hidden_size * 4)


# ---- compare: recognising and driving the module

NAME = "idefics2"
TOLERANCE_KEY64 = ("float64", "Idefics2 module (float32 RMSNorm) vs refimpl")  # its RMSNorm computes in float32


def recognises(module):
    """True for transformers' Idefics2PerceiverResampler."""
    return type(module).__name__ == "Idefics2PerceiverResampler"


def drive(module, x, mask):
    """compare's view of the module: context (bsz, seq, D) is refimpl's x[:, None], its
    attention_mask (bsz, seq), 1 = real (all ones where mask is None), refimpl's mask[:, None] == 1.

    refimpl's "swiglu" is Idefics2's MLP with hidden_act "silu"; another hidden_act (a
    gelu-gated MLP, say) refimpl cannot express, and compare refuses it: ValueError.
    """
    hidden_act = module.config.hidden_act
    if hidden_act != "silu":
        raise ValueError(
            f"the module's config.hidden_act = {hidden_act!r}: its MLP is down(act(gate(x)) * up(x)) with that act, "
            "and refimpl's only gated MLP is activation='swiglu' (act = silu); compare cannot model it"
        )
    eps = _driving.common_eps([m for m in module.modules() if hasattr(m, "variance_epsilon")], "variance_epsilon")
    config, _ = from_idefics2(module.state_dict(), heads=module.config.resampler_n_heads, eps=eps)
    spec = ModuleSpec(
        config=config,
        layout=_layout(config),
        attention="layers.{i}.self_attn",  # returns (output, weights)
        attention_residual=Point("layers.{i}.post_attention_layernorm", 0),
        feed_forward="layers.{i}.mlp",
        final_norm="norm",
        layer_input=Point("layers.{i}", 0),
        media=Point("layers.0.input_context_norm", 0),
        call=_call,
        to_refimpl=lambda x, mask: (x[:, None], (np.ones(x.shape[:2]) if mask is None else mask)[:, None] == 1),
    )
    return _driving.drive(module, spec, x, mask, what=PEER, tolerance_key64=TOLERANCE_KEY64)


def _call(module, context, attention_mask):
    import torch

    if attention_mask is None:
        attention_mask = torch.ones(context.shape[:2], dtype=torch.long, device=context.device)
    return module(context, attention_mask)


def from_idefics2(state_dict, *, heads, eps=1e-6, norm_dtype="float32", prefix=""):
    """(config, params) from the state dict of Idefics2's Idefics2PerceiverResampler.

    state_dict: its `module.state_dict()` (torch tensors on any device, any float dtype) or
        the same names mapped to NumPy arrays; with `prefix`, only keys that start with it
        are read, the prefix stripped (e.g. "model.connector.perceiver_resampler.").
    heads: H (perceiver_config.resampler_n_heads), which the shapes cannot tell; Hkv is
        read off k_proj (Hkv * Dh rows). eps: rms_norm_eps. norm_dtype: "float32" (what
        Idefics2RMSNorm does) or None (normalise in the compute dtype).
    returns a ResamplerConfig with every size read off the tensors (kv_heads None where
    Hkv = H) and refimpl's params (float64 copies, projections (in, out)). Raises
    ValueError listing every missing, unexpected and mis-shaped key; a whole model's state
    dict without `prefix`, or another peer's, gets one line naming the prefix or the peer.
    """
    _state_dict.check_holds_resampler(state_dict, NAME, prefix)
    state = _state_dict.read(state_dict, prefix)
    dim = _state_dict.size(state, ("latents", 1), ("norm.weight", 0), ("layers.0.self_attn.q_proj.weight", 1))
    inner = _state_dict.size(
        state, ("layers.0.self_attn.q_proj.weight", 0), ("layers.0.self_attn.o_proj.weight", 1), default=None
    )
    dim_head = 1 if inner is None else _state_dict.heads_divide(inner, heads, "layers.0.self_attn.q_proj.weight")
    kv_width = _state_dict.size(
        state, ("layers.0.self_attn.k_proj.weight", 0), ("layers.0.self_attn.v_proj.weight", 0), default=None
    )
    kv_heads = _kv_heads(kv_width, dim_head, heads)
    ff_dim = _state_dict.size(state, ("layers.0.mlp.gate_proj.weight", 0), ("layers.0.mlp.up_proj.weight", 0))
    config = ResamplerConfig(
        dim=dim,
        depth=_state_dict.depth(state, r"layers\.(\d+)\."),
        heads=heads,
        dim_head=dim_head,
        num_latents=_state_dict.size(state, ("latents", 0)),
        ff_mult=_state_dict.ff_mult(ff_dim, dim),
        kv_heads=None if kv_heads == heads else kv_heads,
        activation="swiglu",
        norm="rmsnorm",
        norm_eps=eps,
        norm_dtype=norm_dtype,
    )
    return config, _state_dict.to_params(state, _layout(config), config, PEER, prefix)


def _kv_heads(kv_width, dim_head, heads):
    """Hkv = k_proj's rows / Dh; ValueError where that is not a whole divisor of heads."""
    if kv_width is None:
        return heads
    if kv_width == 0 or kv_width % dim_head or heads % (kv_width // dim_head):
        raise ValueError(
            f"layers.0.self_attn.k_proj.weight has {kv_width} rows, which is not Hkv * Dh for a number of "
            f"key/value heads Hkv dividing heads = {heads} (Dh = {dim_head} from q_proj)"
        )
    return kv_width // dim_head


def to_idefics2(config, params, *, dtype=None):
    """The state dict (torch tensors of `dtype`, default torch.float64) that
    `Idefics2PerceiverResampler(Idefics2PerceiverConfig(hidden_size=D, resampler_n_latents=R,
    resampler_depth=depth, resampler_n_heads=H, resampler_head_dim=Dh,
    num_key_value_heads=Hkv, rms_norm_eps=norm_eps))` loads with strict=True.

    Raises ValueError if Idefics2 cannot express `config` (see the module docstring):
    among others, it needs norm_dtype="float32", since Idefics2RMSNorm always normalises
    in float32.
    """
    _state_dict.check_config(config)
    wanted = dict(activation="swiglu", norm="rmsnorm", norm_dtype="float32", qk_norm=False, latents_in_kv=True)
    problems = _state_dict.differences(config, wanted, PEER)
    problems += _state_dict.mlp_and_table_problems(config, PEER, FF_MULT)
    _state_dict.check_expressible(config, PEER, problems)
    return _state_dict.to_state_dict(params, config, _layout(config), dtype)


def _layout(config):
    layout = {"latents": (SAME, ("latents",))}
    for i in range(config.depth):
        peer, attn, ff = f"layers.{i}", f"layers.{i}.attn", f"layers.{i}.ff"
        layout |= _state_dict.norm(f"{peer}.input_latents_norm", f"{attn}.norm_latents", bias=False)
        layout |= _state_dict.norm(f"{peer}.input_context_norm", f"{attn}.norm_media", bias=False)
        layout |= {
            f"{peer}.self_attn.{name}.weight": (LINEAR, (f"{attn}.{ours}",))
            for name, ours in (("q_proj", "wq"), ("k_proj", "wk"), ("v_proj", "wv"), ("o_proj", "wo"))
        }
        layout |= _state_dict.norm(f"{peer}.post_attention_layernorm", f"{ff}.norm", bias=False)
        layout |= {
            f"{peer}.mlp.{name}.weight": (LINEAR, (f"{ff}.{ours}",))
            for name, ours in (("gate_proj", "w_gate"), ("up_proj", "w_up"), ("down_proj", "w_down"))
        }
    return layout | _state_dict.norm("norm", "norm", bias=False)


# ---------------------------------------------------------------- verify
# finding the resampler in a checkpoint and building the peer's module

KEY_PREFIXES = ("model.connector.perceiver_resampler.", "connector.perceiver_resampler.", "")
DEFAULT_EPS = None  # 1e-6 in Idefics2PerceiverConfig, but a whole model may take its text model's
DEFAULT_HEADS = 16  # Idefics2PerceiverConfig's resampler_n_heads
# what Idefics2Config fills in where config.json says nothing (transformers' defaults)
PERCEIVER_DEFAULTS = dict(hidden_size=4096, rms_norm_eps=1e-6, hidden_act="silu")
TEXT_DEFAULTS = dict(hidden_size=4096, rms_norm_eps=1e-5)  # where text_config is absent altogether


def find_prefix(keys):
    """Where Idefics2's resampler sits among a state dict's `keys`
    ("model.connector.perceiver_resampler." in Idefics2ForConditionalGeneration's), or None."""
    return _state_dict.find_prefix(keys, "layers.0.input_latents_norm.weight", also=("latents",), known=KEY_PREFIXES)


def settings_from_hf_config(hf_config):
    """{heads, eps} for from_idefics2 as Idefics2Model reads them from its config.json (a dict).

    heads = perceiver_config.resampler_n_heads (16 where absent). eps: Idefics2Config takes
    perceiver_config.rms_norm_eps, except where text_config's hidden_size differs from the
    perceiver's: it then replaces both with the text model's (hidden_size, rms_norm_eps).
    eps is None where the config does not say (a text_config without rms_norm_eps or
    hidden_size). ValueError for a hidden_act other than "silu", which refimpl's swiglu is.
    """
    perceiver = PERCEIVER_DEFAULTS | (hf_config.get("perceiver_config") or {})
    if perceiver["hidden_act"] != "silu":
        raise ValueError(
            f"config.json's perceiver_config.hidden_act is {perceiver['hidden_act']!r}; refimpl models Idefics2's "
            "MLP with 'silu' (swiglu) only"
        )
    text = hf_config.get("text_config")
    text = TEXT_DEFAULTS if text is None else text
    eps = perceiver["rms_norm_eps"]
    if text.get("hidden_size") != perceiver["hidden_size"]:
        eps = text.get("rms_norm_eps") if "hidden_size" in text else None
    return dict(heads=perceiver.get("resampler_n_heads", DEFAULT_HEADS), eps=eps)


def build_module(config, params, *, dtype, hf_config=None):
    """transformers' Idefics2PerceiverResampler holding `params`, in `dtype`, in eval mode
    (ImportError if transformers is not installed), its Idefics2PerceiverConfig made from
    `config`, with SDPA attention (the eager path computes its softmax in float32 even in a
    float64 model). `hf_config` adds nothing the tensors and settings have not told."""
    state_dict = to_idefics2(config, params, dtype=dtype)
    from transformers.models.idefics2.configuration_idefics2 import Idefics2PerceiverConfig
    from transformers.models.idefics2.modeling_idefics2 import Idefics2PerceiverResampler

    perceiver_config = Idefics2PerceiverConfig(
        hidden_size=config.dim,
        resampler_n_latents=config.num_latents,
        resampler_depth=config.depth,
        resampler_n_heads=config.heads,
        resampler_head_dim=config.dim_head,
        num_key_value_heads=config.num_kv_heads,
        rms_norm_eps=config.norm_eps,
        hidden_act="silu",
    )
    perceiver_config._attn_implementation = "sdpa"
    return _state_dict.load_module(Idefics2PerceiverResampler(perceiver_config), state_dict)


def sample_input(config, rng):
    """(context, attention_mask): context (bsz, seq, D) = (2, 9, D) from `rng`, and
    attention_mask (bsz, seq) with the last 3 tokens of the second row padding (0)."""
    attention_mask = np.ones((2, 9), dtype=np.int64)
    attention_mask[1, 6:] = 0
    return rng.standard_normal((2, 9, config.dim)), attention_mask
