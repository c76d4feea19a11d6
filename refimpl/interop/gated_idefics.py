"""Hugging Face IDEFICS's IdeficsGatedCrossAttentionLayer
(transformers/models/idefics/modeling_idefics.py) <-> refimpl.gated_xattn_dense.

The layer takes hidden_states (bsz, L, Dt), image_hidden_states (bsz, Nv, Dv) (IdeficsModel
concatenates the images' tokens, I * R of them), image_attention_mask (bsz, 1, L, Nv), 0 where
a token may see an image token and finfo.min where not (IdeficsModel builds it from its
(bsz, L, I) 0/1 mask, each image's column repeated over its R tokens), and
cross_attention_gate (bsz, L), 1 where the row sees some image token, else 0. In refimpl's terms

    refimpl hidden = hidden_states                         (B, L, Dt)
    refimpl visual = image_hidden_states                   (B, Nv, Dv)
    refimpl mask   = image_attention_mask[:, 0] == 0       (B, L, Nv)
                   = np.repeat(mask_per_image, R, axis=-1) == 1

A row that sees no image token has every score pushed to finfo.min, which ties them
(uniform weights), and then its attention output is filled with 0 where cross_attention_gate
is 0: no attention output, as refimpl's blind_rows="zero" (IdeficsModel's gate is exactly
"sees something"). Its feed-forward runs as for any row.

| IDEFICS key                                         | refimpl name                        |
|-----------------------------------------------------|-------------------------------------|
| alpha_cross_attn, alpha_dense (1,) or (1, 1, Dt)    | attn_gate, ff_gate () or (Dt,)      |
| input_layernorm.weight (RMSNorm)                    | attn.norm.weight                    |
| cross_attn.q_proj.weight (H*Dh, Dt)                 | attn.wq (transposed)                |
| cross_attn.k_proj / v_proj.weight (H*Dh, Dv)        | attn.wk / attn.wv (transposed)      |
| cross_attn.o_proj.weight (Dt, H*Dh)                 | attn.wo (transposed)                |
| cross_attn.q_layer_norm / k_layer_norm.weight (Dh,) | attn.q_norm / attn.k_norm.weight    |
| post_attention_layernorm.weight (RMSNorm)           | ff.norm.weight                      |
| mlp.gate_proj / up_proj.weight (F, Dt)              | ff.w_gate / ff.w_up (transposed)    |
| mlp.down_proj.weight (Dt, F)                        | ff.w_down (transposed)              |

Config switches: rmsnorm with eps = rms_norm_eps (1e-6 by default), swiglu (hidden_act
"silu"), Hkv = H, qk_norm "rmsnorm" where qk_layer_norms (the q/k norm keys are there),
vector_gates where alpha_type="vector" (the alphas are (1, 1, Dt)), Dv =
vision_config.embed_dim. IdeficsAttention has Dh = Dt / H. IdeficsRMSNorm computes the
mean of squares in float32 whatever the model's dtype; refimpl in the compute dtype (about
1e-7 apart in float64). Inside IdeficsModel the layers are gated_cross_attn_layers.{i}.:
pass `prefix`.
"""

from ..gated_xattn import GatedXattnConfig, gated_xattn_param_shapes
from . import _state_dict
from ._state_dict import GATE, LINEAR

PEER = "IDEFICS's IdeficsGatedCrossAttentionLayer"


def from_idefics_gated_xattn(state_dict, *, heads, eps=1e-6, prefix=""):
    """(config, params) for refimpl.gated_xattn_dense from the state dict of IDEFICS's
    IdeficsGatedCrossAttentionLayer.

    state_dict: its `module.state_dict()` (torch tensors on any device, any float dtype) or
        the same names mapped to NumPy arrays; with `prefix`, only the keys that start with
        it are read, the prefix stripped (e.g. "model.gated_cross_attn_layers.0.").
    heads: H (num_attention_heads), which the shapes cannot tell; eps: rms_norm_eps.
    returns a GatedXattnConfig with Dt, Dv, Dh, F, qk_norm and vector_gates read off the
    tensors, and refimpl's params (float64 copies, projections (in, out)). Raises
    ValueError listing every missing, unexpected and mis-shaped key.
    """
    state = _state_dict.read(state_dict, prefix)
    q_proj = "cross_attn.q_proj.weight"
    inner = _state_dict.size(state, (q_proj, 0), ("cross_attn.o_proj.weight", 1), default=None)
    config = GatedXattnConfig(
        dim=_state_dict.size(state, ("input_layernorm.weight", 0), (q_proj, 1)),
        dim_visual=_state_dict.size(state, ("cross_attn.k_proj.weight", 1), ("cross_attn.v_proj.weight", 1)),
        heads=heads,
        dim_head=1 if inner is None else _state_dict.heads_divide(inner, heads, q_proj),
        ff_dim=_state_dict.size(state, ("mlp.gate_proj.weight", 0), ("mlp.down_proj.weight", 1)),
        activation="swiglu",
        norm="rmsnorm",
        norm_eps=eps,
        qk_norm="rmsnorm" if "cross_attn.q_layer_norm.weight" in state else None,
        vector_gates=any(state[key].ndim == 3 for key in ("alpha_cross_attn", "alpha_dense") if key in state),
    )
    return config, _state_dict.to_params(state, _layout(config), config, PEER, prefix, gated_xattn_param_shapes(config))


def to_idefics_gated_xattn(config, params, *, dtype=None):
    """The state dict (torch tensors of `dtype`, default torch.float64) that
    `IdeficsGatedCrossAttentionLayer(IdeficsConfig(hidden_size=Dt, num_attention_heads=H,
    intermediate_size=F, rms_norm_eps=norm_eps, qk_layer_norms=qk_norm is not None,
    alpha_type="vector" if vector_gates else "float", vision_config={"embed_dim": Dv}))`
    loads with strict=True.

    Raises ValueError if the layer cannot express `config` (see the module docstring).
    """
    if not isinstance(config, GatedXattnConfig):
        raise TypeError(f"config must be a refimpl.GatedXattnConfig; got {type(config).__name__}")
    problems = _state_dict.differences(
        config, dict(activation="swiglu", norm="rmsnorm", blind_rows="zero", zero_blind_ff=False), PEER
    )
    if config.qk_norm not in (None, "rmsnorm"):
        problems.append(f"qk_norm = {config.qk_norm!r}; {PEER}'s q/k norms are RMSNorms")
    if config.num_kv_heads != config.heads:
        problems.append(f"kv_heads = {config.kv_heads}; {PEER} has one key/value head per query head")
    if config.heads * config.dim_head != config.dim:
        problems.append(
            f"heads * dim_head = {config.heads * config.dim_head}; {PEER}'s heads split the width dim = {config.dim}"
        )
    _state_dict.check_expressible(config, PEER, problems)
    return _state_dict.to_state_dict(params, config, _layout(config), dtype, gated_xattn_param_shapes(config))


def _layout(config):
    layout = {"alpha_cross_attn": (GATE, ("attn_gate",)), "alpha_dense": (GATE, ("ff_gate",))}
    layout |= {f"cross_attn.{name}_proj.weight": (LINEAR, (f"attn.w{name}",)) for name in "qkvo"}
    if config.qk_norm is not None:
        layout |= _state_dict.norm("cross_attn.q_layer_norm", "attn.q_norm", bias=False)
        layout |= _state_dict.norm("cross_attn.k_layer_norm", "attn.k_norm", bias=False)
    layout |= {f"mlp.{name}_proj.weight": (LINEAR, (f"ff.w_{name}",)) for name in ("gate", "down", "up")}
    layout |= _state_dict.norm("input_layernorm", "attn.norm", bias=False)
    return layout | _state_dict.norm("post_attention_layernorm", "ff.norm", bias=False)
