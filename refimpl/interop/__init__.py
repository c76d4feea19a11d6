"""Weights in and out of the published resamplers, and `compare` for any resampler: one
module per peer.

    from refimpl import interop
    config, params = interop.from_idefics2(module.state_dict(), heads=16)   # sizes read off the tensors
    x, mask = context.numpy()[:, None], attention_mask.numpy()[:, None] == 1       # (B, 1, S, D), (B, 1, S)
    expected = refimpl.perceiver_resampler(params, x, config, mask=mask)     # (B, R, D), float64
    module.load_state_dict(interop.to_idefics2(config, params), strict=True)  # and back

`from_<peer>(state_dict, *, heads, eps, prefix="")` (Kosmos-2's, which has no norm, takes no
eps) returns `(config, params)`: every size (D, depth, R, Dh = q rows / H, Hkv, F, the
embedding tables, qk_norm, the input and output widths) is read off the tensors; you give
only what shapes cannot tell, the head count and the norms' eps. torch tensors (any device
or float dtype) and NumPy arrays both work; params come out float64, projections (in, out).
A state dict that does not fit raises ValueError naming every missing, unexpected and
mis-shaped key. `to_<peer>(config, params, *, dtype=None)` returns the state dict (torch
tensors, float64 by default) that the peer's module loads with strict=True, and raises
ValueError where the peer cannot express the config.

How each peer's input maps onto refimpl's x (..., [I,] T, S, D) and mask, and the config
switches each peer sets (T is refimpl's frames axis; open_flamingo's own T is media items):

- open_flamingo PerceiverResampler (`open_flamingo`)
  - its input: x (b, T media, F frames, v, D)
  - refimpl x: x as is: (B, I, T, S, D)
  - refimpl mask: none
  - config switches: gelu; layernorm, eps 1e-5; num_time_embeds = len(frame_embs), num_media_embeds =
    len(media_time_embs), each None where absent
- flamingo-pytorch PerceiverResampler (`flamingo_pytorch`)
  - its input: x (b, times, n, D) or (b, n, D)
  - refimpl x: x[:, :, None]: (B, I, 1, S, D); x[:, None, None] for (b, n, D)
  - refimpl mask: none
  - config switches: gelu; layernorm, eps 1e-5; num_media_embeds = len(media_pos_emb), always set
- HF IDEFICS IdeficsPerceiverResampler (`idefics`)
  - its input: context (bsz, seq, D)
  - refimpl x: context[:, None]: (B, 1, S, D)
  - refimpl mask: none
  - config switches: relu; layernorm, eps 1e-5; qk_norm = qk_layer_norms_perceiver; ff_mult 4
- HF Idefics2 Idefics2PerceiverResampler (`idefics2`)
  - its input: context (bsz, seq, D), attention_mask (bsz, seq), 1 = real
  - refimpl x: context[:, None]: (B, 1, S, D)
  - refimpl mask: attention_mask[:, None] == 1
  - config switches: swiglu; rmsnorm, eps rms_norm_eps (1e-6), norm_dtype "float32"; kv_heads = num_key_value_heads
    (None where = heads); ff_mult 4
- HF Kosmos-2 Kosmos2ImageToTextProjection (`kosmos2`)
  - its input: features (bsz, seq, D_in)
  - refimpl x: features[:, None]: (B, 1, S, D_in)
  - refimpl mask: none
  - config switches: media_dim = D_in, media_proj_bias (dense); attn_bias; depth 1; no pre_norm, attn_residual,
    feed_forward, final_norm; latents in K/V
- HF Evolla EvollaSequenceCompressorResampler (`evolla`)
  - its input: embeds (bsz, seq, D), mask (bsz, seq), 1 = real
  - refimpl x: embeds[:, None]: (B, 1, S, D)
  - refimpl mask: mask[:, None] == 1
  - config switches: gelu; layernorm, eps 1e-5; no final_norm; out_dim = hidden_size with bias (protein_projector),
    out_norm (norm)
- Qwen-VL Resampler, hub-only code (`qwen_vl`)
  - its input: x (B, L = h*h, D_in)
  - refimpl x: x[:, None]: (B, 1, L, D_in), grid (h, h)
  - refimpl mask: none
  - config switches: layernorm, eps 1e-6; media_dim (kv_proj, no bias); attn_bias; depth 1; no residual,
    feed_forward, final_norm; latents not in K/V; positions "keys_and_queries", pos_grid = sqrt(R)
- MiniCPM-V 2.5/2.6 Resampler, hub-only (`minicpm_v`)
  - its input: x (B, L, D_in), tgt_sizes (B, 2) (h, w)
  - refimpl x: x[:, None]: (B, 1, L, D_in), grid tgt_sizes
  - refimpl mask: t < h*w per image, (B, 1, L)
  - config switches: as Qwen-VL but positions "keys" (each image's table), final_norm (ln_post), out_dim = D, no
    bias (x @ proj)

Outputs: open_flamingo (b, T, R, D) and flamingo-pytorch (b, times, R, D) are refimpl's
(B, I, R, D); the others' (bsz, R, D) (Evolla's (bsz, R, Do)) are refimpl's (B, R, D). The
Flamingo four put the latents among the keys (latents_in_kv=True) and normalise before each
block and at the end; the later four make the choices in ResamplerConfig's second table.
compare takes MiniCPM-V's tgt_sizes as its `mask`. Qwen-VL's and MiniCPM-V's code ships
only with their checkpoints: refimpl knows them by layout (refimpl.interop.hub_standins
holds our layout-faithful stand-ins for them).

`compare(module, x, *, mask=None, spec=None)` runs one of these modules (or refimpl.torch's)
and refimpl on the same input and prints, row by row, how far apart they are (the media after
the embeddings, each layer's attention and feed-forward outputs and the latents after each
residual, the final norm, the output; each the module's own value, recorded with hooks), the
bound from TOLERANCES and a verdict naming the first row over it (refimpl.interop.compare).
For a module refimpl does not know, `spec=ModuleSpec(...)` describes it: its config, where
its weights are, which submodules are layer i's blocks (refimpl.interop.module_spec).
`compare_grads(module, x, mask=None, spec=None)` does the same for the gradients, parameter by
parameter in backward order, against refimpl.grad (refimpl.interop.compare_grads).

Each peer's module (`open_flamingo`, `flamingo_pytorch`, `idefics`, `idefics2`, `kosmos2`,
`evolla`, `qwen_vl`, `minicpm_v`, and `refimpl_torch` for refimpl.torch's own) owns
everything about it: from_/to_ its state dict, `recognises(module)`, and
`drive(module, x, mask)`, which maps its input onto refimpl's and names its blocks as a
ModuleSpec. compare, compare_grads and `python -m refimpl verify` find the peers through one
closed registry (refimpl/interop/_registry.py): a new peer is one new module and one line
there.

`python -m refimpl verify CHECKPOINT --peer NAME` finds a peer's resampler in a checkpoint
file (a whole model's too), builds the peer's module with its weights and compares it with
refimpl (refimpl.interop.verify).

The language model's side has importers too, for refimpl.gated_xattn_dense: each
`from_<layer>(state_dict, *, heads, ..., prefix="")` returns `(config, params)` with a
refimpl.GatedXattnConfig, and its `to_<layer>(config, params, *, dtype=None)` twin writes
the state dict back. The inputs map onto gated_xattn_dense's hidden (B, L, Dt), visual
(B, Nv, Dv) and mask (B, L, Nv), True = may see:

- flamingo-pytorch (and open_flamingo) GatedCrossAttentionBlock (`gated_flamingo_pytorch`)
  - its inputs -> refimpl hidden, visual, mask: x; media (b, T, m, Dv) -> (b, T*m, Dv); media_locations ->
    cumsum(...) == (or >=) item index
  - switches it sets: layernorm 1e-5, gelu, blind_rows "zero" ("uniform" without only_attend_immediate_media)
- HF IDEFICS IdeficsGatedCrossAttentionLayer (`gated_idefics`)
  - its inputs -> refimpl hidden, visual, mask: hidden_states; image_hidden_states; image_attention_mask[:, 0] == 0
  - switches it sets: rmsnorm, swiglu, qk_norm "rmsnorm" if qk_layer_norms, vector_gates if alpha_type "vector",
    blind_rows "zero"
- HF Mllama MllamaCrossAttentionDecoderLayer (`mllama`)
  - its inputs -> refimpl hidden, visual, mask: hidden_states; cross_attention_states; the (b, L, I, tiles) 0/1 mask
    repeated over each tile's tokens
  - switches it sets: rmsnorm, qk_norm "rmsnorm", kv_heads, swiglu, blind_rows "attend_all", zero_blind_ff

`import refimpl` does not import this package (`from refimpl import interop` does), and
importing it imports no torch: only `to_<peer>` does, to build the tensors.
"""

from .compare import compare
from .compare_grads import compare_grads
from .evolla import from_evolla, to_evolla
from .flamingo_pytorch import from_flamingo_pytorch, to_flamingo_pytorch
from .gated_flamingo_pytorch import from_flamingo_pytorch_gated_xattn, to_flamingo_pytorch_gated_xattn
from .gated_idefics import from_idefics_gated_xattn, to_idefics_gated_xattn
from .idefics import from_idefics, to_idefics
from .idefics2 import from_idefics2, to_idefics2
from .kosmos2 import from_kosmos2, to_kosmos2
from .minicpm_v import from_minicpm_v, to_minicpm_v
from .mllama import from_mllama_cross_attention, to_mllama_cross_attention
from .module_spec import ModuleSpec, Point
from .open_flamingo import from_open_flamingo, to_open_flamingo
from .qwen_vl import from_qwen_vl, to_qwen_vl

__all__ = [
    "ModuleSpec",
    "Point",
    "compare",
    "compare_grads",
    "from_evolla",
    "from_flamingo_pytorch",
    "from_flamingo_pytorch_gated_xattn",
    "from_idefics",
    "from_idefics2",
    "from_idefics_gated_xattn",
    "from_kosmos2",
    "from_minicpm_v",
    "from_mllama_cross_attention",
    "from_open_flamingo",
    "from_qwen_vl",
    "to_evolla",
    "to_flamingo_pytorch",
    "to_flamingo_pytorch_gated_xattn",
    "to_idefics",
    "to_idefics2",
    "to_idefics_gated_xattn",
    "to_kosmos2",
    "to_minicpm_v",
    "to_mllama_cross_attention",
    "to_open_flamingo",
    "to_qwen_vl",
]
