"""A stand-in for MiniCPM-V 2.5/2.6's `Resampler` (its resampler.py on the model hub), with
its state dict and forward:

    query (R, D)         the learned queries
    kv_proj              nn.Linear(kv_dim, D, bias=False), or nn.Identity() where kv_dim = D
    attn                 torch.nn.MultiheadAttention(D, heads) (in_proj_weight/bias, out_proj)
    ln_q, ln_kv, ln_post nn.LayerNorm(D, eps=1e-6)
    proj (D, D)          the output projection, applied as x @ proj (no bias)

and a 2-D sin-cos table over a max_size grid, a buffer that is not in the state dict (made in
float32 and grown when an image is larger).

forward(x (B, L, kv_dim), tgt_sizes (B, 2) int: image b is h_b x w_b patches, its tokens the
first h_b * w_b of row b, the rest padding; L = max h_b * w_b) -> (B, R, D):
    k_pos[b] = the table cropped to h_b x w_b, flattened, zero past h_b * w_b
    key_padding_mask[b, t] = t >= h_b * w_b
    x = ln_kv(kv_proj(x))
    out = attn(query = ln_q(query), key = x + k_pos, value = x, key_padding_mask)
    return ln_post(out) @ proj
"""

from functools import partial

import torch
from torch import nn

from .sincos import sincos_table

LAYER_NORM_EPS_1E6 = partial(nn.LayerNorm, eps=1e-6)  # the norm_layer default, built once


class Resampler(nn.Module):
    def __init__(
        self,
        num_queries,
        embed_dim,
        num_heads,
        kv_dim=None,
        norm_layer=LAYER_NORM_EPS_1E6,
        max_size=(70, 70),
    ):
        super().__init__()
        self.num_queries, self.embed_dim, self.num_heads = num_queries, embed_dim, num_heads
        self.query = nn.Parameter(torch.zeros(num_queries, embed_dim))
        nn.init.trunc_normal_(self.query, std=0.02)
        self.kv_proj = (
            nn.Linear(kv_dim, embed_dim, bias=False) if kv_dim is not None and kv_dim != embed_dim else nn.Identity()
        )
        self.attn = nn.MultiheadAttention(embed_dim, num_heads)
        self.ln_q = norm_layer(embed_dim)
        self.ln_kv = norm_layer(embed_dim)
        self.ln_post = norm_layer(embed_dim)
        self.proj = nn.Parameter(embed_dim**-0.5 * torch.randn(embed_dim, embed_dim))
        self._make_table(max_size)

    def _make_table(self, max_size, device="cpu"):
        self.max_size = tuple(int(side) for side in max_size)
        table = torch.from_numpy(sincos_table(self.embed_dim, *self.max_size)).float().to(device)  # (h, w, D)
        self.register_buffer("pos_embed", table, persistent=False)

    def forward(self, x, tgt_sizes):
        if x.shape[0] != tgt_sizes.shape[0]:
            raise ValueError(f"x has {x.shape[0]} images but tgt_sizes {tgt_sizes.shape[0]}")
        batch, dtype = x.shape[0], x.dtype
        lengths = tgt_sizes[:, 0] * tgt_sizes[:, 1]  # (B,)
        largest = (int(tgt_sizes[:, 0].max()), int(tgt_sizes[:, 1].max()))
        if largest[0] > self.max_size[0] or largest[1] > self.max_size[1]:
            self._make_table(tuple(map(max, largest, self.max_size)), x.device)
        longest = int(lengths.max())
        key_padding_mask = torch.zeros((batch, longest), dtype=torch.bool, device=x.device)
        k_pos = torch.zeros((batch, longest, self.embed_dim), dtype=dtype, device=x.device)
        for b in range(batch):
            h, w = (int(side) for side in tgt_sizes[b])
            k_pos[b, : h * w] = self.pos_embed[:h, :w].reshape(h * w, -1).to(dtype)
            key_padding_mask[b, h * w :] = True
        x = self.ln_kv(self.kv_proj(x)).permute(1, 0, 2)  # (L, B, D)
        q = self.ln_q(self.query)  # (R, D)
        out = self.attn(
            q[:, None].expand(-1, batch, -1),  # (R, B, D)
            x + k_pos.permute(1, 0, 2),  # (L, B, D)
            x,
            key_padding_mask=key_padding_mask,
        )[0]
        x = self.ln_post(out.permute(1, 0, 2))  # (B, R, D)
        return x @ self.proj
