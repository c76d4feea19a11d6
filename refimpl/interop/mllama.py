"""Hugging Face Mllama's (Llama 3.2 Vision) MllamaCrossAttentionDecoderLayer
(transformers/models/mllama/modeling_mllama.py) <-> refimpl.gated_xattn_dense.

The layer takes hidden_states (bsz, L, Dt), cross_attention_states (bsz, Nv, Dt) (the
projected vision tokens of every image and tile, Nv = I * tiles * tokens),
cross_attention_mask (bsz, 1, L, Nv) and full_text_row_masked_out_mask (bsz, 1, L, 1), both
from transformers' _prepare_cross_attention_mask on the (bsz, L, I, tiles) 0/1 mask: the
additive mask is 0 where a token may see a vision token and finfo.min where not, except
that a row that sees nothing is reset to all 0, and full_text_row_masked_out_mask is 1
where the row sees something, else 0. In refimpl's terms

    refimpl hidden = hidden_states                          (B, L, Dt)
    refimpl visual = cross_attention_states                 (B, Nv, Dv = Dt)
    refimpl mask   = np.repeat(mask_per_tile, tokens, axis=-1).reshape(B, L, Nv) == 1

A row that sees no image token (text before the first image) attends to every vision
token, since its mask row was reset (blind_rows="attend_all"), and its gated attention
output is added; then its feed-forward output is multiplied by
full_text_row_masked_out_mask, 0 (zero_blind_ff=True).

| Mllama key                                          | refimpl name                        |
|-----------------------------------------------------|-------------------------------------|
| cross_attn_attn_gate, cross_attn_mlp_gate (1,)      | attn_gate, ff_gate ()               |
| input_layernorm.weight (RMSNorm)                    | attn.norm.weight                    |
| cross_attn.q_proj.weight (H*Dh, Dt)                 | attn.wq (transposed)                |
| cross_attn.k_proj / v_proj.weight (Hkv*Dh, Dt)      | attn.wk / attn.wv (transposed)      |
| cross_attn.o_proj.weight (Dt, H*Dh)                 | attn.wo (transposed)                |
| cross_attn.q_norm / k_norm.weight (Dh,) (RMSNorm)   | attn.q_norm / attn.k_norm.weight    |
| post_attention_layernorm.weight (RMSNorm)           | ff.norm.weight                      |
| mlp.gate_proj / up_proj.weight (F, Dt)              | ff.w_gate / ff.w_up (transposed)    |
| mlp.down_proj.weight (Dt, F)                        | ff.w_down (transposed)              |

Config switches: rmsnorm with eps = rms_norm_eps (1e-5 by default), qk_norm "rmsnorm",
kv_heads = num_key_value_heads (None where = H; query head h reads key/value head
h // (H / Hkv), as repeat_kv does), swiglu (hidden_act "silu"), Dv = Dt, scalar gates,
blind_rows "attend_all", zero_blind_ff. MllamaTextCrossAttention has Dh = Dt / H.
MllamaTextRMSNorm normalises in float32 whatever the model's dtype; refimpl in the compute
dtype (about 1e-7 apart in float64). Inside MllamaTextModel the layer is layers.{i}. for
i in cross_attention_layers: pass `prefix`.
"""

from ..gated_xattn import GatedXattnConfig, gated_xattn_param_shapes
from . import _state_dict
from ._state_dict import GATE, LINEAR

PEER = "Mllama's MllamaCrossAttentionDecoderLayer"


def from_mllama_cross_attention(state_dict, *, heads, eps=1e-5, prefix=""):
    """(config, params) for refimpl.gated_xattn_dense from the state dict of Mllama's
    MllamaCrossAttentionDecoderLayer.

    state_dict: its `module.state_dict()` (torch tensors on any device, any float dtype) or
        the same names mapped to NumPy arrays; with `prefix`, only the keys that start with
        it are read, the prefix stripped (e.g. "model.language_model.layers.3.").
    heads: H (num_attention_heads), which the shapes cannot tell; Hkv is read off k_proj
        (Hkv * Dh rows). eps: rms_norm_eps.
    returns a GatedXattnConfig with Dt, Dh, Hkv (None where = H) and F read off the tensors,
    and refimpl's params (float64 copies, projections (in, out)). Raises ValueError listing
    every missing, unexpected and mis-shaped key.
    """
    state = _state_dict.read(state_dict, prefix)
    q_proj, k_proj = "cross_attn.q_proj.weight", "cross_attn.k_proj.weight"
    dim = _state_dict.size(state, ("input_layernorm.weight", 0), (q_proj, 1))
    inner = _state_dict.size(state, (q_proj, 0), ("cross_attn.o_proj.weight", 1), default=None)
    dim_head = 1 if inner is None else _state_dict.heads_divide(inner, heads, q_proj)
    kv_width = _state_dict.size(state, (k_proj, 0), ("cross_attn.v_proj.weight", 0), default=None)
    kv_heads = heads if kv_width is None else _state_dict.kv_heads_divide(kv_width, dim_head, heads, k_proj)
    config = GatedXattnConfig(
        dim=dim,
        dim_visual=dim,
        heads=heads,
        dim_head=dim_head,
        kv_heads=None if kv_heads == heads else kv_heads,
        ff_dim=_state_dict.size(state, ("mlp.gate_proj.weight", 0), ("mlp.down_proj.weight", 1)),
        activation="swiglu",
        norm="rmsnorm",
        norm_eps=eps,
        qk_norm="rmsnorm",
        blind_rows="attend_all",
        zero_blind_ff=True,
    )
    return config, _state_dict.to_params(state, LAYOUT, config, PEER, prefix, gated_xattn_param_shapes(config))


def to_mllama_cross_attention(config, params, *, dtype=None):
    """The state dict (torch tensors of `dtype`, default torch.float64) that
    `MllamaCrossAttentionDecoderLayer(MllamaTextConfig(hidden_size=Dt, num_attention_heads=H,
    num_key_value_heads=Hkv, intermediate_size=F, rms_norm_eps=norm_eps), layer_idx)` loads
    with strict=True.

    Raises ValueError if the layer cannot express `config` (see the module docstring).
    """
    if not isinstance(config, GatedXattnConfig):
        raise TypeError(f"config must be a refimpl.GatedXattnConfig; got {type(config).__name__}")
    wanted = dict(
        activation="swiglu",
        norm="rmsnorm",
        qk_norm="rmsnorm",
        vector_gates=False,
        blind_rows="attend_all",
        zero_blind_ff=True,
    )
    problems = _state_dict.differences(config, wanted, PEER)
    if config.dim_visual != config.dim:
        problems.append(
            f"dim_visual = {config.dim_visual}; {PEER}'s k_proj reads states of the text width dim = {config.dim}"
        )
    if config.heads * config.dim_head != config.dim:
        problems.append(
            f"heads * dim_head = {config.heads * config.dim_head}; {PEER}'s heads split the width dim = {config.dim}"
        )
    _state_dict.check_expressible(config, PEER, problems)
    return _state_dict.to_state_dict(params, config, LAYOUT, dtype, gated_xattn_param_shapes(config))


LAYOUT = {
    "cross_attn_attn_gate": (GATE, ("attn_gate",)),
    "cross_attn_mlp_gate": (GATE, ("ff_gate",)),
    **{f"cross_attn.{name}_proj.weight": (LINEAR, (f"attn.w{name}",)) for name in "qkvo"},
    **_state_dict.norm("cross_attn.q_norm", "attn.q_norm", bias=False),
    **_state_dict.norm("cross_attn.k_norm", "attn.k_norm", bias=False),
    **_state_dict.norm("input_layernorm", "attn.norm", bias=False),
    **{f"mlp.{name}_proj.weight": (LINEAR, (f"ff.w_{name}",)) for name in ("gate", "up", "down")},
    **_state_dict.norm("post_attention_layernorm", "ff.norm", bias=False),
}
