"""The token budget: what a language model pays to read an image through gated cross-attention.

A GATED XATTN-DENSE block (refimpl.gated_xattn_dense) reads Nv visual tokens: every patch of
the image (Nv = N, which grows with the image's area) or the resampler's output (Nv = R,
whatever the image). Its cross-attention, counted in FLOPs (2 per multiply-add, the matrix
products only: the norms, the softmax and the gates are left out, as torch's FLOP counter
leaves them out), for L text tokens of width Dt reading Nv visual tokens of width Dv, with H
heads of width Dh:

    queries      2 L Dt (H Dh)          per text token
    keys, values 2 * 2 Nv Dv (H Dh)     per image, once: then cached while the text goes on
    scores       2 L Nv (H Dh)          per text token
    weighted sum 2 L Nv (H Dh)          per text token
    output       2 L (H Dh) Dt          per text token

so each text token costs 4 H Dh (Dt + Nv) FLOPs, and the cache of keys and values holds
2 Nv H Dh numbers, in each block. Both grow linearly with Nv; reading every patch costs the
same as reading R tokens exactly when N = R.

    cost = XAttnCost(dim=48, dim_visual=64, heads=4, dim_head=16)
    cost.flops_per_text_token(4096)              # 1,060,864: a 512 x 512 image in 8 x 8 patches
    cost.kv_cache_bytes(16, itemsize=4)          # 8,192: R = 16 tokens in float32

Axis letters: L text tokens, Dt text width, Nv visual tokens (N patches, or R latents),
Dv visual width, H heads, Dh head width.
"""

from dataclasses import dataclass

from .._checks import positive_int


@dataclass(frozen=True)
class XAttnCost:
    """The cost of one cross-attention from text (width `dim`, Dt) to visual tokens (width
    `dim_visual`, Dv) with `heads` heads (H) of width `dim_head` (Dh), as in
    refimpl.gated_xattn_dense_shapes; invalid sizes raise at construction.

    >>> cost = XAttnCost(dim=48, dim_visual=64, heads=4, dim_head=16)
    >>> cost.flops_per_text_token(16), cost.flops_per_text_token(4096)
    (16384, 1060864)
    >>> cost.kv_cache_bytes(4096, itemsize=4)
    2097152
    """

    dim: int
    dim_visual: int
    heads: int
    dim_head: int

    def __post_init__(self):
        for name in ("dim", "dim_visual", "heads", "dim_head"):
            positive_int(name, getattr(self, name))

    @property
    def inner(self):
        """H * Dh, the width of the queries, keys and values."""
        return self.heads * self.dim_head

    def flops(self, text_tokens, visual_tokens):
        """dict part -> FLOPs of the cross-attention for L = text_tokens reading Nv =
        visual_tokens (one sequence, one image's tokens): "queries" 2 L Dt H Dh, "keys_values"
        4 Nv Dv H Dh, "scores" and "weighted_sum" 2 L Nv H Dh each, "output" 2 L H Dh Dt."""
        L = positive_int("text_tokens", text_tokens)
        Nv = positive_int("visual_tokens", visual_tokens)
        return {
            "queries": 2 * L * self.dim * self.inner,
            "keys_values": 2 * 2 * Nv * self.dim_visual * self.inner,
            "scores": 2 * L * Nv * self.inner,
            "weighted_sum": 2 * L * Nv * self.inner,
            "output": 2 * L * self.inner * self.dim,
        }

    def flops_per_text_token(self, visual_tokens):
        """FLOPs one more text token costs with the keys and values cached: 4 H Dh (Dt + Nv)."""
        parts = self.flops(1, visual_tokens)
        return sum(parts.values()) - parts["keys_values"]

    def kv_cache_bytes(self, visual_tokens, *, itemsize=4):
        """Bytes of the cached keys and values, 2 Nv H Dh numbers of `itemsize` bytes (4 for
        float32)."""
        return 2 * positive_int("visual_tokens", visual_tokens) * self.inner * positive_int("itemsize", itemsize)
