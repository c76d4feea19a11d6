"""A Perceiver Resampler written here from the Flamingo paper's description, with names of its
own (no peer's class): the module a user brings to `refimpl.interop.compare` with a spec.

    x (B, T, S, D) -> embed: + frame_table[t]  -> flatten to media (B, N, D)
    latents = queries, one copy per batch entry (B, R, D)
    each of blocks.{i}:  latents = latents + attn(media, latents)     pre-norm, fused qkv
                         latents = latents + mlp(latents)             pre-norm, exact GELU
    out_norm(latents)

OWN_SPEC(config) describes it to compare; `own_module(seed)` builds a small one, float64,
every parameter random (no norm weight 1, no bias 0).
"""

import torch
from torch import nn

import refimpl
from refimpl.interop import ModuleSpec, Point


class FrameEmbedding(nn.Module):
    """x (B, T, S, D) + frame_table[t] for every token of frame t."""

    def __init__(self, frames, dim):
        super().__init__()
        self.frame_table = nn.Parameter(torch.zeros(frames, dim))

    def forward(self, x):
        return x + self.frame_table[: x.shape[-3], None, :]  # (B, T, S, D) + (T, 1, D)


class Attend(nn.Module):
    """attn(q = ln(latents), kv = [ln(media); ln(latents)]) with one fused qkv projection."""

    def __init__(self, dim, heads, dim_head, eps):
        super().__init__()
        self.heads, self.dim_head, self.scale = heads, dim_head, dim_head**-0.5
        self.latents_in_kv = True
        self.ln_media = nn.LayerNorm(dim, eps=eps)
        self.ln_latents = nn.LayerNorm(dim, eps=eps)
        self.qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)  # rows: queries, keys, values
        self.proj = nn.Linear(heads * dim_head, dim, bias=False)

    def forward(self, media, latents):
        media, latents = self.ln_media(media), self.ln_latents(latents)  # (B, N, D), (B, R, D)
        tokens = torch.cat([media, latents], dim=1) if self.latents_in_kv else media  # (B, N [+ R], D)
        q = self.qkv(latents).chunk(3, dim=-1)[0]  # (B, R, H*Dh)
        _, k, v = self.qkv(tokens).chunk(3, dim=-1)  # (B, N [+ R], H*Dh) each
        q, k, v = (t.unflatten(-1, (self.heads, self.dim_head)).transpose(1, 2) for t in (q, k, v))  # (B, H, *, Dh)
        weights = self.normalise(q @ k.transpose(-1, -2) * self.scale)  # (B, H, R, N [+ R])
        return self.proj((weights @ v).transpose(1, 2).flatten(-2))  # (B, R, D)

    def normalise(self, scores):
        """The attention weights: a softmax over the keys."""
        return scores.softmax(dim=-1)


class MLP(nn.Module):
    """ln, up (D -> F), exact GELU, down (F -> D)."""

    def __init__(self, dim, hidden, eps):
        super().__init__()
        self.ln = nn.LayerNorm(dim, eps=eps)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.act = nn.GELU()
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, latents):
        return self.down(self.act(self.up(self.ln(latents))))


class Block(nn.Module):
    def __init__(self, dim, heads, dim_head, hidden, eps):
        super().__init__()
        self.attn = Attend(dim, heads, dim_head, eps)
        self.mlp = MLP(dim, hidden, eps)

    def forward(self, media, latents):
        latents = latents + self.attn(media, latents)
        return latents + self.mlp(latents)


class OwnResampler(nn.Module):
    """x (B, T, S, D) -> (B, R, D)."""

    def __init__(self, *, dim, depth, heads, dim_head, num_latents, frames, hidden, eps=1e-5):
        super().__init__()
        self.queries = nn.Parameter(torch.zeros(num_latents, dim))
        self.embed = FrameEmbedding(frames, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, dim_head, hidden, eps) for _ in range(depth))
        self.out_norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x):
        media = self.embed(x).flatten(1, 2)  # (B, T, S, D) -> (B, N, D), frame-major
        latents = self.queries.expand(x.shape[0], -1, -1)  # (B, R, D)
        for block in self.blocks:
            latents = block(media, latents)
        return self.out_norm(latents)


def own_layout(config):
    """Where OwnResampler's weights are, as refimpl names: {its key: (kind, refimpl names)}."""
    layout = {"queries": ("same", ("latents",)), "embed.frame_table": ("same", ("time_embeds",))}
    for i in range(config.depth):
        ours, attn, mlp = f"layers.{i}", f"blocks.{i}.attn", f"blocks.{i}.mlp"
        norms = {
            f"{attn}.ln_media": f"{ours}.attn.norm_media",
            f"{attn}.ln_latents": f"{ours}.attn.norm_latents",
            f"{mlp}.ln": f"{ours}.ff.norm",
        }
        for norm, refimpl_norm in norms.items():
            layout[f"{norm}.weight"] = ("same", (f"{refimpl_norm}.weight",))
            layout[f"{norm}.bias"] = ("same", (f"{refimpl_norm}.bias",))
        layout[f"{attn}.qkv.weight"] = ("fused_qkv", (f"{ours}.attn.wq", f"{ours}.attn.wk", f"{ours}.attn.wv"))
        layout[f"{attn}.proj.weight"] = ("linear", (f"{ours}.attn.wo",))
        layout[f"{mlp}.up.weight"] = ("linear", (f"{ours}.ff.w_in",))
        layout[f"{mlp}.down.weight"] = ("linear", (f"{ours}.ff.w_out",))
    return layout | {"out_norm.weight": ("same", ("norm.weight",)), "out_norm.bias": ("same", ("norm.bias",))}


def own_spec(config):
    """The ModuleSpec that tells compare how to read and run OwnResampler."""
    return ModuleSpec(
        config=config,
        layout=own_layout(config),
        attention="blocks.{i}.attn",
        feed_forward="blocks.{i}.mlp",  # its input is the latents after the attention residual
        final_norm="out_norm",
        layer_input=Point("blocks.{i}", "latents"),
        media="embed",
    )


OWN_CONFIG = refimpl.ResamplerConfig(dim=12, depth=3, heads=3, dim_head=5, num_latents=7, ff_mult=2, num_time_embeds=4)


def own_module(seed=0, dtype=torch.float64):
    """OwnResampler for OWN_CONFIG, every parameter N(0, 0.5^2), the norm weights around 1."""
    config = OWN_CONFIG
    module = OwnResampler(
        dim=config.dim,
        depth=config.depth,
        heads=config.heads,
        dim_head=config.dim_head,
        num_latents=config.num_latents,
        frames=config.num_time_embeds,
        hidden=config.ff_dim,
    ).to(dtype)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            value = 0.5 * torch.randn(parameter.shape, generator=generator, dtype=dtype)
            parameter.copy_(value + 1 if parameter.ndim == 1 and name.endswith("weight") else value)
    return module
