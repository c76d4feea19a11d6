"""Hugging Face Kosmos-2's Kosmos2ImageToTextProjection
(transformers/models/kosmos2/modeling_kosmos2.py) <-> refimpl.

`Kosmos2ImageToTextProjection(Kosmos2Config(...))` takes features (bsz, seq, D_in), the
vision tower's output, and returns (hidden_states (bsz, R, D), attention weights): one
cross-attention of R learned queries over the projected features joined by the queries
themselves. In refimpl's axes one frame of seq tokens,

    refimpl x = features[:, None]      (B, T = 1, S = seq, D_in = media_dim),  no mask
    output hidden_states (bsz, R, D)   = refimpl's (B, R, D)

| Kosmos-2 key                                  | refimpl name                         |
|-----------------------------------------------|--------------------------------------|
| dense.weight (D, D_in) / .bias (D,)           | media_proj.weight (transposed) / .bias |
| latent_query (R, D)                           | latents                              |
| x_attn.q_proj / k_proj / v_proj.weight (D, D) | layers.0.attn.wq / wk / wv (transposed) |
| x_attn.q_proj / k_proj / v_proj.bias (D,)     | layers.0.attn.bq / bk / bv           |
| x_attn.out_proj.weight (D, D) / .bias (D,)    | layers.0.attn.wo (transposed) / .bo  |

Config switches: media_dim = vision_config.hidden_size with media_proj_bias, latents in the
keys and values (the raw latent_query joined to the projected features), attn_bias, depth 1,
pre_norm=False, attn_residual=False, feed_forward=False, final_norm=False. H * Dh = D
(KosmosTextAttention's head_dim = embed_dim // heads). With no norm, there is no eps to give
(refimpl's norm settings are unused). Inside Kosmos2Model and
Kosmos2ForConditionalGeneration the keys start with "image_to_text_projection.".
"""

from ..config import ResamplerConfig
from . import _driving, _state_dict
from ._state_dict import LINEAR, SAME
from .module_spec import ModuleSpec, Point

PEER = "Kosmos-2's Kosmos2ImageToTextProjection"
SWITCHES = dict(
    latents_in_kv=True,
    attn_bias=True,
    media_proj_bias=True,
    pre_norm=False,
    attn_residual=False,
    feed_forward=False,
    final_norm=False,
)


# ---- compare: recognising and driving the module

NAME = "kosmos2"


def recognises(module):
    """True for transformers' Kosmos2ImageToTextProjection."""
    return type(module).__name__ == "Kosmos2ImageToTextProjection"


def drive(module, x, mask):
    """compare's view of the module: features (bsz, seq, D_in) is refimpl's x[:, None]; no mask."""
    _driving.check_no_mask(mask, PEER)
    config, _ = from_kosmos2(module.state_dict(), heads=module.x_attn.num_heads)
    spec = ModuleSpec(
        config=config,
        layout=_layout(config),
        attention="x_attn",  # KosmosTextAttention(latent_query, encoder_hidden_states=...) -> (output, weights)
        feed_forward=None,
        final_norm=None,
        layer_input=Point("x_attn", "hidden_states"),
        media="dense",
        to_refimpl=lambda x, mask: (x[:, None], None),  # (B, T = 1, S, D_in)
    )
    return _driving.drive(module, spec, x, None, what=PEER)


def from_kosmos2(state_dict, *, heads, prefix=""):
    """(config, params) from the state dict of Kosmos-2's Kosmos2ImageToTextProjection.

    state_dict: its `module.state_dict()` (torch tensors on any device, any float dtype) or
        the same names mapped to NumPy arrays; with `prefix`, only keys that start with it
        are read, the prefix stripped (e.g. "image_to_text_projection.").
    heads: H (text_config.attention_heads), which the shapes cannot tell; Dh = D / H.
    returns a ResamplerConfig with every size read off the tensors and refimpl's params
    (float64 copies, projections (in, out)). Raises ValueError listing every missing,
    unexpected and mis-shaped key; a whole model's state dict without `prefix`, or another
    peer's, gets one line naming the prefix or the peer.
    """
    _state_dict.check_holds_resampler(state_dict, NAME, prefix)
    state = _state_dict.read(state_dict, prefix)
    dim = _state_dict.size(state, ("latent_query", 1), ("dense.weight", 0), ("x_attn.q_proj.weight", 1))
    inner = _state_dict.size(state, ("x_attn.q_proj.weight", 0), ("x_attn.out_proj.weight", 1), default=None)
    config = ResamplerConfig(
        dim=dim,
        depth=1,
        heads=heads,
        dim_head=1 if inner is None else _state_dict.heads_divide(inner, heads, "x_attn.q_proj.weight"),
        num_latents=_state_dict.size(state, ("latent_query", 0)),
        media_dim=_state_dict.size(state, ("dense.weight", 1)),
        **SWITCHES,
    )
    return config, _state_dict.to_params(state, _layout(config), config, PEER, prefix)


def to_kosmos2(config, params, *, dtype=None):
    """The state dict (torch tensors of `dtype`, default torch.float64) that
    `Kosmos2ImageToTextProjection(Kosmos2Config(vision_config=dict(hidden_size=D_in),
    text_config=dict(embed_dim=D, attention_heads=H), latent_query_num=R))` loads with strict=True.

    Raises ValueError if Kosmos-2 cannot express `config` (see the module docstring).
    """
    _state_dict.check_config(config)
    problems = _state_dict.differences(config, dict(SWITCHES, depth=1, qk_norm=False, kv_heads=None), PEER)
    if config.heads * config.dim_head != config.dim:
        problems.append(f"heads * dim_head = {config.heads * config.dim_head}; {PEER} has H * Dh = D = {config.dim}")
    if config.media_dim is None:
        problems.append(f"media_dim = None; {PEER} always projects its input (dense)")
    problems += [
        f"{name} = {getattr(config, name)!r}; {PEER} has none"
        for name in ("num_time_embeds", "num_media_embeds", "out_dim", "positions")
        if getattr(config, name) is not None
    ]
    _state_dict.check_expressible(config, PEER, problems)
    return _state_dict.to_state_dict(params, config, _layout(config), dtype)


def _layout(config):
    layout = {
        "latent_query": (SAME, ("latents",)),
        "dense.weight": (LINEAR, ("media_proj.weight",)),
        "dense.bias": (SAME, ("media_proj.bias",)),
    }
    return layout | _attention_layout("x_attn", "layers.0.attn")


def _attention_layout(peer, ours):
    """KosmosTextAttention's four biased nn.Linear projections, in its order (k, v, q, out)."""
    layout = {}
    for name, weight, bias in (
        ("k_proj", "wk", "bk"),
        ("v_proj", "wv", "bv"),
        ("q_proj", "wq", "bq"),
        ("out_proj", "wo", "bo"),
    ):
        layout[f"{peer}.{name}.weight"] = (LINEAR, (f"{ours}.{weight}",))
        layout[f"{peer}.{name}.bias"] = (SAME, (f"{ours}.{bias}",))
    return layout


# ---------------------------------------------------------------- verify
# finding the resampler in a checkpoint and building the peer's module

KEY_PREFIXES = ("image_to_text_projection.", "")
SETTINGS = ("heads",)  # no norm: no eps
DEFAULT_EPS = None
DEFAULT_HEADS = 16  # Kosmos2TextConfig's attention_heads


def find_prefix(keys):
    """Where Kosmos-2's projection sits among a state dict's `keys`
    ("image_to_text_projection." in Kosmos2ForConditionalGeneration's), or None."""
    return _state_dict.find_prefix(
        keys, "x_attn.q_proj.weight", also=("latent_query", "dense.weight"), known=KEY_PREFIXES
    )


def settings_from_hf_config(hf_config):
    """{heads} for from_kosmos2 as Kosmos2Model reads it from its config.json (a dict):
    text_config.attention_heads (16 where absent)."""
    return dict(heads=(hf_config.get("text_config") or {}).get("attention_heads", DEFAULT_HEADS))


def build_module(config, params, *, dtype, hf_config=None):
    """transformers' Kosmos2ImageToTextProjection holding `params`, in `dtype`, in eval mode
    (ImportError if transformers is not installed), with SDPA attention. `hf_config` adds
    nothing the tensors and settings have not told."""
    state_dict = to_kosmos2(config, params, dtype=dtype)
    from transformers import Kosmos2Config
    from transformers.models.kosmos2.modeling_kosmos2 import Kosmos2ImageToTextProjection

    kosmos2_config = Kosmos2Config(
        vision_config=dict(hidden_size=config.media_dim),
        text_config=dict(embed_dim=config.dim, attention_heads=config.heads),
        latent_query_num=config.num_latents,
    )
    kosmos2_config.text_config._attn_implementation = "sdpa"
    return _state_dict.load_module(Kosmos2ImageToTextProjection(kosmos2_config), state_dict)


def sample_input(config, rng):
    """(features, None): features (bsz, seq, D_in) = (2, 9, D_in) from `rng`."""
    return rng.standard_normal((2, 9, config.media_dim)), None
