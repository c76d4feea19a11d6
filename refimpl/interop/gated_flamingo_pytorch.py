"""flamingo-pytorch 0.1.2's GatedCrossAttentionBlock (lucidrains/flamingo-pytorch,
flamingo_pytorch/flamingo_pytorch.py) <-> refimpl.gated_xattn_dense.

`GatedCrossAttentionBlock(dim=Dt, dim_head=Dh, heads=H, ff_mult=F/Dt,
only_attend_immediate_media=...)` takes x (b, L, Dt), media (b, T media items, m, Dt) and
media_locations (b, L), True where a media item sits in the text. Text token l's "time" is
the number of media items at or before it (cumsum of media_locations); it may see item t
(1-based) where time = t (only_attend_immediate_media=True, the default) or time >= t. In
refimpl's terms

    refimpl hidden = x                                   (B, L, Dt)
    refimpl visual = media.reshape(b, T * m, Dt)         (B, Nv, Dv = Dt)
    refimpl mask   = op(cumsum(media_locations)[:, :, None], repeat(1..T, m)[None, None, :])
                     (B, L, Nv), op = "==" or ">="

Text before the first media item (time 0) sees nothing. With only_attend_immediate_media
its attention weights are set to 0 (no attention output: blind_rows="zero"); without, its
scores are all filled with the same -max, tie, and the softmax puts equal weight on every
media token (the mean of the values: blind_rows="uniform"). (A token after more media
locations than there are items, time > T, sees nothing either, but is not zeroed even with
only_attend_immediate_media: give media_locations at most T marks per row.)

| flamingo-pytorch key                  | refimpl name                           |
|---------------------------------------|----------------------------------------|
| attn_gate (1,), ff_gate (1,)          | attn_gate (), ff_gate ()               |
| attn.norm.weight / .bias (LayerNorm)  | attn.norm.weight / .bias               |
| attn.to_q.weight (H*Dh, Dt)           | attn.wq (transposed)                   |
| attn.to_kv.weight (2*H*Dh, Dt)        | attn.wk, attn.wv: first half keys      |
| attn.to_out.weight (Dt, H*Dh)         | attn.wo (transposed)                   |
| ff.0.weight / .bias (LayerNorm)       | ff.norm.weight / .bias                 |
| ff.1.weight (F, Dt), ff.3.weight (Dt, F) (GELU at ff.2) | ff.w_in, ff.w_out (transposed) |

Config switches: layernorm eps 1e-5, gelu, Dv = Dt, Hkv = H, no q/k norm, scalar gates.

open_flamingo's GatedCrossAttentionBlock (open_flamingo/src/helpers.py) computes the same
with the same keys, and a visual width of its own (dim_visual: to_kv is (2*H*Dh, Dv)), which
the import reads off to_kv; inside open_flamingo's model a block's keys start with
"...gated_cross_attn_layers.{i}." (pass `prefix`). The export writes flamingo-pytorch's
block, Dv = Dt.
"""

from ..gated_xattn import GatedXattnConfig, gated_xattn_param_shapes
from . import _state_dict
from ._state_dict import FUSED_KV, GATE, LINEAR

PEER = "flamingo-pytorch's GatedCrossAttentionBlock"
LAYERNORM_EPS = 1e-5  # nn.LayerNorm's default


def from_flamingo_pytorch_gated_xattn(state_dict, *, heads, only_attend_immediate_media=True, prefix=""):
    """(config, params) for refimpl.gated_xattn_dense from the state dict of flamingo-pytorch's
    GatedCrossAttentionBlock.

    state_dict: its `module.state_dict()` (torch tensors on any device, any float dtype) or
        the same names mapped to NumPy arrays, or open_flamingo's block's; with `prefix`,
        only the keys that start with it are read, the prefix stripped.
    heads: H, which the shapes cannot tell (to_q has H * Dh rows).
    only_attend_immediate_media: the module's flag (not in the state dict), which decides
        what text before the first media item gets (see the module docstring).
    returns a GatedXattnConfig with Dt, Dv, Dh and F read off the tensors, and refimpl's params
    (float64 copies, projections (in, out)). Raises ValueError listing every missing,
    unexpected and mis-shaped key.
    """
    state = _state_dict.read(state_dict, prefix)
    dim = _state_dict.size(state, ("attn.norm.weight", 0), ("attn.to_q.weight", 1))
    inner = _state_dict.size(state, ("attn.to_q.weight", 0), ("attn.to_out.weight", 1), default=None)
    config = GatedXattnConfig(
        dim=dim,
        dim_visual=_state_dict.size(state, ("attn.to_kv.weight", 1), default=dim),
        heads=heads,
        dim_head=1 if inner is None else _state_dict.heads_divide(inner, heads, "attn.to_q.weight"),
        ff_dim=_state_dict.size(state, ("ff.1.weight", 0), ("ff.3.weight", 1)),
        activation="gelu",
        norm="layernorm",
        norm_eps=LAYERNORM_EPS,
        blind_rows="zero" if only_attend_immediate_media else "uniform",
    )
    return config, _state_dict.to_params(state, LAYOUT, config, PEER, prefix, gated_xattn_param_shapes(config))


def to_flamingo_pytorch_gated_xattn(config, params, *, dtype=None):
    """The state dict (torch tensors of `dtype`, default torch.float64) that
    `GatedCrossAttentionBlock(dim=Dt, dim_head=Dh, heads=H, ff_mult=F / Dt,
    only_attend_immediate_media=config.blind_rows == "zero")` loads with strict=True (its
    FeedForward is int(Dt * ff_mult) wide: check that this is F where F / Dt is not exact).

    Raises ValueError if the block cannot express `config` (see the module docstring).
    """
    if not isinstance(config, GatedXattnConfig):
        raise TypeError(f"config must be a refimpl.GatedXattnConfig; got {type(config).__name__}")
    wanted = dict(
        activation="gelu",
        norm="layernorm",
        norm_eps=LAYERNORM_EPS,
        qk_norm=None,
        vector_gates=False,
        zero_blind_ff=False,
    )
    problems = _state_dict.differences(config, wanted, PEER)
    if config.dim_visual != config.dim:
        problems.append(
            f"dim_visual = {config.dim_visual}; {PEER}'s to_kv reads media of the text width dim = {config.dim}"
        )
    if config.num_kv_heads != config.heads:
        problems.append(f"kv_heads = {config.kv_heads}; {PEER} has one key/value head per query head")
    if config.blind_rows == "attend_all":
        problems.append(f"blind_rows = 'attend_all'; {PEER} zeroes text without media, or gives it uniform weights")
    _state_dict.check_expressible(config, PEER, problems)
    return _state_dict.to_state_dict(params, config, LAYOUT, dtype, gated_xattn_param_shapes(config))


LAYOUT = {
    "attn_gate": (GATE, ("attn_gate",)),
    "ff_gate": (GATE, ("ff_gate",)),
    **_state_dict.norm("attn.norm", "attn.norm"),
    "attn.to_q.weight": (LINEAR, ("attn.wq",)),
    "attn.to_kv.weight": (FUSED_KV, ("attn.wk", "attn.wv")),
    "attn.to_out.weight": (LINEAR, ("attn.wo",)),
    **_state_dict.norm("ff.0", "ff.norm"),
    "ff.1.weight": (LINEAR, ("ff.w_in",)),
    "ff.3.weight": (LINEAR, ("ff.w_out",)),
}
