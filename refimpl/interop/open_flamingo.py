"""open_flamingo's PerceiverResampler (mlfoundations/open_flamingo, open_flamingo/src/helpers.py)
<-> refimpl.

open_flamingo took flamingo-pytorch's resampler (same layer keys, same math: see
refimpl.interop.flamingo_pytorch) and made both embedding tables optional:

    frame_embs (F_max, D)          row f added to every token of frame f   (max_num_frames)
    media_time_embs (T_max, 1, D)  row t added to every token of item t    (max_num_media)

Its T is the number of media items (images or videos), its F the frames of each, v the
tokens per frame. Its input x (b, T, F, v, D) is refimpl's x (B, I, T, S, D) as it stands
(I = open_flamingo's T, refimpl's T = its F), and its output (b, T, R, D) is refimpl's
(B, I, R, D):

| open_flamingo                 | refimpl                                            |
|-------------------------------|----------------------------------------------------|
| frame_embs (F_max, D)         | time_embeds,  config.num_time_embeds = F_max       |
| media_time_embs (T_max, 1, D) | media_embeds (T_max, D), num_media_embeds = T_max  |
| layers.{i}.*, norm.*, latents | as in flamingo-pytorch                             |

Without media_time_embs, refimpl's config has num_media_embeds = None and the same x works:
I is then one more batch axis. Config switches: activation="gelu", norm="layernorm" with
eps 1e-5, kv_heads None, no qk_norm, latents in the keys. Pass `heads`, which the shapes
cannot tell; it has no default (the module's own default, 8, would silently give a wrong
config for a module built with another count).
"""

import functools
import importlib.metadata
import importlib.util

from ..config import ResamplerConfig
from . import _driving, _state_dict
from ._state_dict import PER_ITEM, SAME
from .flamingo_pytorch import LAYERNORM_EPS, layer_layout, layer_problems, layer_sizes, layers_spec

PEER = "open_flamingo's PerceiverResampler"


# ---- compare: recognising and driving the module

NAME = "open_flamingo"


def recognises(module):
    """True for open_flamingo's PerceiverResampler (its tables are frame_embs and media_time_embs)."""
    return (
        type(module).__name__ == "PerceiverResampler"
        and hasattr(module, "frame_embs")
        and hasattr(module, "media_time_embs")
    )


def drive(module, x, mask):
    """compare's view of the module: x (b, T, F, v, D) is refimpl's (B, I, T, S, D) as it stands; no mask."""
    _driving.check_no_mask(mask, PEER)
    config, _ = from_open_flamingo(
        module.state_dict(), heads=module.layers[0][0].heads, eps=_driving.layer_norm_eps(module)
    )
    return _driving.drive(module, layers_spec(config, _layout(config), None), x, None, what=PEER)


def from_open_flamingo(state_dict, *, heads, eps=1e-5, prefix=""):
    """(config, params) from the state dict of open_flamingo's PerceiverResampler.

    state_dict: its `module.state_dict()` (torch tensors on any device, any float dtype) or
        the same names mapped to NumPy arrays; with `prefix`, only keys that start with it
        are read, the prefix stripped (e.g. "vision_encoder.perceiver." or "perceiver.").
    heads: H, which the shapes cannot tell (to_q has H * Dh rows); eps: its LayerNorms' eps.
    returns a ResamplerConfig with every size read off the tensors (num_time_embeds from
    frame_embs, num_media_embeds from media_time_embs, None where absent) and refimpl's
    params (float64 copies, projections (in, out)). Raises ValueError listing every
    missing, unexpected and mis-shaped key; a whole model's state dict without `prefix`, or
    another peer's, gets one line naming the prefix or the peer.
    """
    _state_dict.check_holds_resampler(state_dict, NAME, prefix)
    state = _state_dict.read(state_dict, prefix)
    config = ResamplerConfig(
        **layer_sizes(state, heads),
        num_time_embeds=_state_dict.size(state, ("frame_embs", 0)) if "frame_embs" in state else None,
        num_media_embeds=_state_dict.size(state, ("media_time_embs", 0)) if "media_time_embs" in state else None,
        activation="gelu",
        norm="layernorm",
        norm_eps=eps,
    )
    return config, _state_dict.to_params(state, _layout(config), config, PEER, prefix)


def to_open_flamingo(config, params, *, dtype=None):
    """The state dict (torch tensors of `dtype`, default torch.float64) that open_flamingo's
    `PerceiverResampler(dim=D, depth=depth, dim_head=Dh, heads=H, num_latents=R,
    max_num_media=config.num_media_embeds, max_num_frames=config.num_time_embeds,
    ff_mult=ff_mult)` loads with strict=True.

    Raises ValueError if open_flamingo cannot express `config` (see the module docstring).
    """
    _state_dict.check_config(config)
    _state_dict.check_expressible(config, PEER, layer_problems(config, PEER))
    return _state_dict.to_state_dict(params, config, _layout(config), dtype)


def _layout(config):
    layout = {"latents": (SAME, ("latents",))}
    if config.num_time_embeds is not None:
        layout["frame_embs"] = (SAME, ("time_embeds",))
    if config.num_media_embeds is not None:
        layout["media_time_embs"] = (PER_ITEM, ("media_embeds",))
    for i in range(config.depth):
        layout |= layer_layout(i)
    return layout | _state_dict.norm("norm", "norm")


# ---------------------------------------------------------------- verify
# finding the resampler in a checkpoint and building the peer's module

KEY_PREFIXES = ("perceiver.", "")  # open_flamingo's Flamingo model holds it as `self.perceiver`
DEFAULT_EPS = LAYERNORM_EPS


def find_prefix(keys):
    """Where open_flamingo's resampler sits among a state dict's `keys` ("perceiver." in a
    Flamingo model's), or None: layers.0.0.to_kv.weight beside latents, and no
    media_pos_emb (which would make it flamingo-pytorch's)."""
    return _state_dict.find_prefix(
        keys, "layers.0.0.to_kv.weight", also=("latents",), never=("media_pos_emb",), known=KEY_PREFIXES
    )


@functools.cache
def installed_helpers():
    """The installed open-flamingo's open_flamingo/src/helpers.py (its PerceiverResampler),
    loaded by its file path: the package's __init__ imports open_clip, which the resampler
    does not need and which is not installed beside it (open-flamingo pins torch 2.0.1, so
    it is installed with --no-deps). ImportError naming the package if it is absent."""
    try:
        files = importlib.metadata.distribution("open-flamingo").files or ()
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(
            "open_flamingo's PerceiverResampler needs the open-flamingo package: "
            "python -m pip install --no-deps open-flamingo (see the README's set-up line)",
            name="open_flamingo",
        ) from None
    path = next((file.locate() for file in files if str(file) == "open_flamingo/src/helpers.py"), None)
    if path is None:
        raise ImportError("the installed open-flamingo has no open_flamingo/src/helpers.py", name="open_flamingo")
    spec = importlib.util.spec_from_file_location("open_flamingo.src.helpers", path)
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    return helpers


def build_module(config, params, *, dtype, hf_config=None):
    """open_flamingo's own PerceiverResampler (the installed package's) holding `params`, in
    `dtype`, in eval mode. open_flamingo has no config.json: `hf_config` is not read."""
    state_dict = to_open_flamingo(config, params, dtype=dtype)
    module = installed_helpers().PerceiverResampler(
        dim=config.dim,
        depth=config.depth,
        dim_head=config.dim_head,
        heads=config.heads,
        num_latents=config.num_latents,
        max_num_media=config.num_media_embeds,
        max_num_frames=config.num_time_embeds,
        ff_mult=config.ff_mult,
    )
    return _state_dict.load_module(module, state_dict)


def sample_input(config, rng):
    """(x, None): x (b, T media, F frames, v, D) = (2, 2, 2, 9, D) from `rng`, with T and F
    no longer than the embedding tables (open_flamingo's T is media items, F frames)."""
    items = 2 if config.num_media_embeds is None else min(2, config.num_media_embeds)
    frames = 2 if config.num_time_embeds is None else min(2, config.num_time_embeds)
    return rng.standard_normal((2, items, frames, 9, config.dim)), None
