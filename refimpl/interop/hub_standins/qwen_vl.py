"""A stand-in for Qwen-VL's `Resampler` (its visual.py on the model hub), with its state dict
and forward:

    pos_embed (G*G, D)   the 2-D sin-cos table of a G x G grid (a parameter, not trained)
    query (R = G*G, D)   the learned queries
    kv_proj              nn.Linear(kv_dim, D, bias=False), or nn.Identity() where kv_dim = D
    attn                 torch.nn.MultiheadAttention(D, heads): in_proj_weight (3D, D),
                         in_proj_bias (3D,), out_proj.weight (D, D), out_proj.bias (D,)
    ln_q, ln_kv          nn.LayerNorm(D, eps=1e-6)

forward(x (B, L, kv_dim)) -> (B, R, D):
    k_pos = pos_embed, resized by bicubic interpolation (in float32) to sqrt(L) x sqrt(L)
            where that is not G x G
    x = ln_kv(kv_proj(x))
    q = ln_q(query)
    out = attn(query = q + pos_embed, key = x + k_pos, value = x)     (no residual, no MLP)
"""

import math
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from .sincos import sincos_table

LAYER_NORM_EPS_1E6 = partial(nn.LayerNorm, eps=1e-6)  # the norm_layer default, built once


def key_positions(table, tokens):
    """`table` (G*G, D) as it is where tokens = G*G, else resized to the sqrt(tokens)-sided
    square grid: bicubic, align_corners=False, computed in float32, cast back."""
    side, new_side = round(math.sqrt(table.shape[0])), round(math.sqrt(tokens))
    if side == new_side:
        return table
    grid = table.float().reshape(1, side, side, -1).permute(0, 3, 1, 2)  # (1, D, G, G)
    resized = F.interpolate(grid, size=(new_side, new_side), mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1).flatten(0, 2).to(table.dtype)  # (new_side**2, D)


class Resampler(nn.Module):
    def __init__(self, grid_size, embed_dim, num_heads, kv_dim=None, norm_layer=LAYER_NORM_EPS_1E6):
        super().__init__()
        self.num_queries = grid_size**2
        table = torch.from_numpy(sincos_table(embed_dim, grid_size, grid_size)).reshape(-1, embed_dim)
        self.pos_embed = nn.Parameter(table.float(), requires_grad=False)
        self.query = nn.Parameter(torch.zeros(self.num_queries, embed_dim))
        nn.init.trunc_normal_(self.query, std=0.02)
        self.kv_proj = (
            nn.Linear(kv_dim, embed_dim, bias=False) if kv_dim is not None and kv_dim != embed_dim else nn.Identity()
        )
        self.attn = nn.MultiheadAttention(embed_dim, num_heads)
        self.ln_q = norm_layer(embed_dim)
        self.ln_kv = norm_layer(embed_dim)

    def forward(self, x, attn_mask=None):
        k_pos = key_positions(self.pos_embed, x.shape[1])  # (L, D)
        x = self.ln_kv(self.kv_proj(x)).permute(1, 0, 2)  # (L, B, D): sequence first
        q = self.ln_q(self.query)  # (R, D)
        batch = x.shape[1]
        out = self.attn(
            q[:, None].expand(-1, batch, -1) + self.pos_embed[:, None],  # (R, B, D)
            x + k_pos[:, None],  # (L, B, D)
            x,
            attn_mask=attn_mask,
        )[0]
        return out.permute(1, 0, 2)  # (B, R, D)
