"""flamingo-pytorch 0.1.2's PerceiverResampler (lucidrains/flamingo-pytorch,
flamingo_pytorch/flamingo_pytorch.py) <-> refimpl.

Its input is x (b, times, n, D), or (b, n, D) for one media item: `times` media items, each
resampled on its own, with row i of media_pos_emb (num_media_embeds, 1, D) added to every
token of item i (always: the table always exists). In refimpl's axes that is

    refimpl x = x[:, :, None]        (B, I = times, T = 1, S = n, D), config.num_media_embeds set
    output (b, times, R, D)          = refimpl's (B, I, R, D)

(for a 3-d x, x[:, None, None], and the output's axis 1 has length 1 in both).

| flamingo-pytorch key                         | refimpl name                            |
|----------------------------------------------|-----------------------------------------|
| latents (R, D)                               | latents                                 |
| media_pos_emb (Imax, 1, D)                   | media_embeds (Imax, D)                  |
| layers.{i}.0.norm_media.weight / .bias       | layers.{i}.attn.norm_media.weight/.bias |
| layers.{i}.0.norm_latents.weight / .bias     | layers.{i}.attn.norm_latents.*          |
| layers.{i}.0.to_q.weight (H*Dh, D)           | layers.{i}.attn.wq (transposed)         |
| layers.{i}.0.to_kv.weight (2*H*Dh, D)        | layers.{i}.attn.wk, .wv: first half keys|
| layers.{i}.0.to_out.weight (D, H*Dh)         | layers.{i}.attn.wo (transposed)         |
| layers.{i}.1.0.weight / .bias (LayerNorm)    | layers.{i}.ff.norm.weight / .bias       |
| layers.{i}.1.1.weight (F, D)                 | layers.{i}.ff.w_in (transposed)         |
| layers.{i}.1.3.weight (D, F)  (GELU at 1.2)  | layers.{i}.ff.w_out (transposed)        |
| norm.weight / .bias                          | norm.weight / .bias                     |

Config switches: activation="gelu" (exact, nn.GELU()), norm="layernorm" with eps 1e-5
(nn.LayerNorm's default), kv_heads None, no qk_norm, latents in the keys, num_media_embeds.
The state dict cannot tell the head count: pass it (it has no default here: the module's
own, 8, would silently give a wrong config for a module built with another count).
open_flamingo's resampler (refimpl.interop.open_flamingo) has the same layer keys.
"""

from ..config import ResamplerConfig
from . import _driving, _state_dict
from ._state_dict import FUSED_KV, LINEAR, PER_ITEM, SAME
from .module_spec import ModuleSpec, Point

PEER = "flamingo-pytorch's PerceiverResampler"
LAYERNORM_EPS = 1e-5  # nn.LayerNorm's default, which flamingo-pytorch and open_flamingo keep


# ---- compare: recognising and driving the module

NAME = "flamingo_pytorch"


def recognises(module):
    """True for flamingo-pytorch's PerceiverResampler (its media table is media_pos_emb)."""
    return type(module).__name__ == "PerceiverResampler" and hasattr(module, "media_pos_emb")


def drive(module, x, mask):
    """compare's view of the module: x (b, times, n, D) or (b, n, D), no mask."""
    _driving.check_no_mask(mask, PEER)
    config, _ = from_flamingo_pytorch(
        module.state_dict(), heads=module.layers[0][0].heads, eps=_driving.layer_norm_eps(module)
    )
    return _driving.drive(module, layers_spec(config, _layout(config), _to_refimpl), x, None, what=PEER)


def _to_refimpl(x, mask):
    return (x[:, :, None] if x.ndim == 4 else x[:, None, None]), None  # (B, I, T = 1, S, D)


def layers_spec(config, layout, to_refimpl):
    """The ModuleSpec of a flamingo-pytorch-style module: PerceiverAttention(x, latents) at
    layers.{i}.0, the FeedForward at layers.{i}.1, the final LayerNorm at norm; the media
    after the embeddings are layer 0's attention's x."""
    return ModuleSpec(
        config=config,
        layout=layout,
        attention="layers.{i}.0",
        feed_forward="layers.{i}.1",
        final_norm="norm",
        layer_input=Point("layers.{i}.0", 1),
        media=Point("layers.0.0", 0),
        to_refimpl=to_refimpl,
    )


def from_flamingo_pytorch(state_dict, *, heads, eps=1e-5, prefix=""):
    """(config, params) from the state dict of flamingo-pytorch's PerceiverResampler.

    state_dict: its `module.state_dict()` (torch tensors on any device, any float dtype) or
        the same names mapped to NumPy arrays; with `prefix`, only keys that start with it
        are read, the prefix stripped (e.g. "perceiver_resampler." inside a larger model).
    heads: H, which the shapes cannot tell (to_q has H * Dh rows); eps: its LayerNorms' eps.
    returns a ResamplerConfig with every size read off the tensors, and refimpl's params
    (float64 copies, projections (in, out)). Raises ValueError listing every missing,
    unexpected and mis-shaped key; a whole model's state dict without `prefix`, or another
    peer's, gets one line naming the prefix or the peer.
    """
    _state_dict.check_holds_resampler(state_dict, NAME, prefix)
    state = _state_dict.read(state_dict, prefix)
    config = ResamplerConfig(
        **layer_sizes(state, heads),
        num_media_embeds=_state_dict.size(state, ("media_pos_emb", 0)),
        activation="gelu",
        norm="layernorm",
        norm_eps=eps,
    )
    return config, _state_dict.to_params(state, _layout(config), config, PEER, prefix)


def to_flamingo_pytorch(config, params, *, dtype=None):
    """The state dict (torch tensors of `dtype`, default torch.float64) that
    `flamingo_pytorch.PerceiverResampler(dim=D, depth=depth, dim_head=Dh, heads=H,
    num_latents=R, num_media_embeds=Imax, ff_mult=ff_mult)` loads with strict=True.

    Raises ValueError if flamingo-pytorch cannot express `config` (see the module docstring).
    """
    _state_dict.check_config(config)
    problems = layer_problems(config, PEER)
    if config.num_time_embeds is not None:
        problems.append(f"num_time_embeds = {config.num_time_embeds}; {PEER} has no time (frame) embeddings")
    if config.num_media_embeds is None:
        problems.append(f"num_media_embeds = None; {PEER} always adds media_pos_emb (set num_media_embeds)")
    _state_dict.check_expressible(config, PEER, problems)
    return _state_dict.to_state_dict(params, config, _layout(config), dtype)


def _layout(config):
    layout = {"latents": (SAME, ("latents",)), "media_pos_emb": (PER_ITEM, ("media_embeds",))}
    for i in range(config.depth):
        layout |= layer_layout(i)
    return layout | _state_dict.norm("norm", "norm")


# ---------------------------------------------------------------- shared with open_flamingo


def layer_layout(i):
    """Layer i's keys: PerceiverAttention at layers.{i}.0, the FeedForward nn.Sequential
    (LayerNorm, Linear, GELU, Linear) at layers.{i}.1."""
    attn, ff, ours = f"layers.{i}.0", f"layers.{i}.1", f"layers.{i}"
    return (
        _state_dict.norm(f"{attn}.norm_media", f"{ours}.attn.norm_media")
        | _state_dict.norm(f"{attn}.norm_latents", f"{ours}.attn.norm_latents")
        | {
            f"{attn}.to_q.weight": (LINEAR, (f"{ours}.attn.wq",)),
            f"{attn}.to_kv.weight": (FUSED_KV, (f"{ours}.attn.wk", f"{ours}.attn.wv")),
            f"{attn}.to_out.weight": (LINEAR, (f"{ours}.attn.wo",)),
        }
        | _state_dict.norm(f"{ff}.0", f"{ours}.ff.norm")
        | {f"{ff}.1.weight": (LINEAR, (f"{ours}.ff.w_in",)), f"{ff}.3.weight": (LINEAR, (f"{ours}.ff.w_out",))}
    )


def layer_sizes(state, heads):
    """dim, depth, heads, dim_head, num_latents and ff_mult, read off the tensors:
    D and R from latents (R, D), depth from the layer indices, Dh = to_q's rows / heads,
    F = the first feed-forward Linear's rows."""
    dim = _state_dict.size(state, ("latents", 1), ("norm.weight", 0), ("layers.0.0.to_q.weight", 1))
    inner = _state_dict.size(state, ("layers.0.0.to_q.weight", 0), ("layers.0.0.to_out.weight", 1), default=None)
    ff_dim = _state_dict.size(state, ("layers.0.1.1.weight", 0), ("layers.0.1.3.weight", 1))
    return dict(
        dim=dim,
        depth=_state_dict.depth(state, r"layers\.(\d+)\."),
        heads=heads,
        dim_head=1 if inner is None else _state_dict.heads_divide(inner, heads, "layers.0.0.to_q.weight"),
        num_latents=_state_dict.size(state, ("latents", 0)),
        ff_mult=_state_dict.ff_mult(ff_dim, dim),
    )


def layer_problems(config, peer):
    """What a flamingo-pytorch-style layer (LayerNorm eps 1e-5, GELU, one key/value head
    per query head, latents in the keys) cannot express in `config`."""
    problems = _state_dict.differences(
        config,
        dict(
            activation="gelu",
            norm="layernorm",
            norm_eps=LAYERNORM_EPS,
            norm_dtype=None,
            qk_norm=False,
            latents_in_kv=True,
        ),
        peer,
    )
    if config.num_kv_heads != config.heads:
        problems.append(
            f"kv_heads = {config.kv_heads} (grouped-query attention); {peer} has one key/value head per query head"
        )
    return problems


# ---------------------------------------------------------------- verify
# finding the resampler in a checkpoint and building the peer's module

KEY_PREFIXES = ("perceiver_resampler.", "")  # flamingo-pytorch's FlamingoPaLM: self.perceiver_resampler
DEFAULT_EPS = LAYERNORM_EPS


def find_prefix(keys):
    """Where flamingo-pytorch's resampler sits among a state dict's `keys`, or None:
    layers.0.0.to_kv.weight beside latents and media_pos_emb."""
    return _state_dict.find_prefix(
        keys, "layers.0.0.to_kv.weight", also=("latents", "media_pos_emb"), known=KEY_PREFIXES
    )


def build_module(config, params, *, dtype, hf_config=None):
    """flamingo-pytorch's own PerceiverResampler holding `params`, in `dtype`, in eval mode
    (ImportError if flamingo-pytorch is not installed). `hf_config` is not read."""
    state_dict = to_flamingo_pytorch(config, params, dtype=dtype)
    from flamingo_pytorch import PerceiverResampler

    module = PerceiverResampler(
        dim=config.dim,
        depth=config.depth,
        dim_head=config.dim_head,
        heads=config.heads,
        num_latents=config.num_latents,
        num_media_embeds=config.num_media_embeds,
        ff_mult=config.ff_mult,
    )
    return _state_dict.load_module(module, state_dict)


def sample_input(config, rng):
    """(x, None): x (b, times, n, D) = (2, 2, 9, D) from `rng`, times no more than the
    media_pos_emb table."""
    return rng.standard_normal((2, min(2, config.num_media_embeds), 9, config.dim)), None
