"""The resampler's rivals, for notebook 8's ablation: other ways to turn N = T*S tokens into R.

Each pooler has the resampler's interface, tokens (B, T, S, D) -> (B, R, D), with R fixed
whatever the image's size, and goes into the tiny model in the resampler's place:

    model = ablation_model("mlp", TinyConfig())     # encoder -> MLPPooler -> head
    logits = model(images)                           # images of any size, as before

    "resampler"    the Perceiver Resampler: R learned latents cross-attend to the N tokens
    "mean"         adaptive grid mean pooling: the mean over each cell of a gh x gw = R grid
                   over the image (any size, any aspect ratio), then an MLP on the R cells
    "mlp"          a per-token MLP on all N tokens, then the mean over each cell
    "transformer"  self-attention over all N tokens (a plain pre-norm Transformer), then
                   the mean over each cell

The three rivals get from N tokens to R by averaging over the cells of an adaptive grid
over the image: cell (i, j) of gh x gw covers the patch rows floor(i h / gh) to
ceil((i + 1) h / gh) and likewise the columns, as torch's adaptive_avg_pool2d does. That
needs the patch grid (h, w), which the tokens (B, T, S, D) do not carry (S = h*w does not
say h): the pooler reads it from the encoder, through a forward hook that `ablation_model`
registers (`GridPooler.take_grid`), or from `pooler.grid` set by hand.

Parameters are matched on the pooler part: `matched_pooler` gives each rival the
feed-forward width F that brings its parameter count closest to the resampler's
(exactly equal for TinyConfig(), within 1% for the other sizes the tests try). Encoder and
head are the same in every variant, so the whole models differ by as much as their poolers.

Axis letters: B batch, T frames, S patches per frame on an (h, w) grid, N = T*S tokens,
R output tokens on a (gh, gw) grid of cells, H heads, Dh head width, D width, F
feed-forward width.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..params import param_shapes
from ..torch import CrossAttention, FeedForward, Norm, to_state_dict
from .model import init_tiny_model
from .torch import TinyModel

KINDS = ("resampler", "mean", "mlp", "transformer")


def cell_grid(num_tokens):
    """(gh, gw), gh * gw = num_tokens, gh <= gw, the factor pair closest to square:
    16 -> (4, 4), 8 -> (2, 4), 32 -> (4, 8), 7 -> (1, 7)."""
    if not isinstance(num_tokens, int) or num_tokens < 1:
        raise ValueError(f"num_tokens must be a positive int; got {num_tokens!r}")
    gh = max(d for d in range(1, math.isqrt(num_tokens) + 1) if num_tokens % d == 0)
    return gh, num_tokens // gh


def pool_to_grid(tokens, grid, cells):
    """Mean of the tokens over each cell of an adaptive cells = (gh, gw) grid (and over frames).

    tokens: (B, T, S, D) with S = h*w patches per frame in row-major order, grid = (h, w).
    returns (B, gh*gw, D), cells in row-major order: cell (i, j) is the mean over the frames
    and over patch rows floor(i h / gh) .. ceil((i + 1) h / gh) - 1, columns likewise.
    Any (h, w) works, also smaller than (gh, gw) (a patch then serves several cells).
    """
    batch, _, patches, dim = tokens.shape
    h, w = grid
    if h * w != patches:
        raise ValueError(f"tokens have S = {patches} patches per frame, but grid = {tuple(grid)} has {h * w}")
    maps = tokens.mean(dim=1).reshape(batch, h, w, dim).permute(0, 3, 1, 2)  # (B, D, h, w)
    pooled = F.adaptive_avg_pool2d(maps, cells)  # (B, D, gh, gw)
    return pooled.flatten(2).transpose(1, 2)  # (B, gh*gw, D)


class GridPooler(nn.Module):
    """What the three rivals share: R output tokens on a (gh, gw) grid of cells, the patch
    grid (h, w) of the current input in `.grid`, and the final LayerNorm (as the resampler's)."""

    def __init__(self, dim, num_tokens):
        super().__init__()
        self.num_tokens, self.cells, self.grid = num_tokens, cell_grid(num_tokens), None
        self.norm = Norm(dim)

    def take_grid(self, module, inputs, output):
        """A forward hook for the tiny model's encoder, whose output is (tokens, grid)."""
        self.grid = output[1]

    def pool(self, tokens):
        """tokens (B, T, S, D) -> (B, R, D), the mean over each cell of the current grid."""
        if tokens.ndim != 4:
            raise ValueError(f"tokens must have shape (B, T, S, D); got {tuple(tokens.shape)}")
        if self.grid is None:
            raise ValueError(
                f"{type(self).__name__} needs the patch grid (h, w): build the model with ablation_model, "
                "or set pooler.grid = (h, w) before calling it"
            )
        return pool_to_grid(tokens, self.grid, self.cells)


def _blocks(dim, ff_dim, depth):
    """depth pre-norm feed-forward blocks (refimpl.torch.FeedForward, gelu), each used as x + ff(x)."""
    return nn.ModuleList(FeedForward(dim, ff_dim) for _ in range(depth))


class MeanPooler(GridPooler):
    """Pool first, then think: the mean over each of R cells, then depth residual per-token
    feed-forward blocks, then a LayerNorm. No token ever sees another token.

    forward(tokens (B, T, S, D)) -> (B, R, D)
    """

    def __init__(self, dim, num_tokens, *, depth=2, ff_dim=256):
        super().__init__(dim, num_tokens)
        self.blocks = _blocks(dim, ff_dim, depth)

    def forward(self, tokens):
        x = self.pool(tokens)  # (B, R, D)
        for ff in self.blocks:
            x = x + ff(x)  # (B, R, D), each token on its own
        return self.norm(x)


class MLPPooler(GridPooler):
    """Think first, then pool: depth residual per-token feed-forward blocks on all N tokens,
    then the mean over each of R cells, then a LayerNorm. Its cost grows with N.

    forward(tokens (B, T, S, D)) -> (B, R, D)
    """

    def __init__(self, dim, num_tokens, *, depth=2, ff_dim=256):
        super().__init__(dim, num_tokens)
        self.blocks = _blocks(dim, ff_dim, depth)

    def forward(self, tokens):
        x = tokens
        for ff in self.blocks:
            x = x + ff(x)  # (B, T, S, D), each token on its own
        return self.norm(self.pool(x))  # (B, R, D)


class TransformerPooler(GridPooler):
    """A plain pre-norm Transformer over all N = T*S tokens (self-attention: every token
    attends to every token, N^2 scores per head), then the mean over each of R cells, then
    a LayerNorm.

    forward(tokens (B, T, S, D)) -> (B, R, D)
    """

    def __init__(self, dim, num_tokens, *, depth=2, heads=4, dim_head=16, ff_dim=128):
        super().__init__(dim, num_tokens)
        self.layers = nn.ModuleList(
            nn.ModuleDict(
                {
                    "norm": Norm(dim),
                    "attn": CrossAttention(dim, dim, heads=heads, dim_head=dim_head),
                    "ff": FeedForward(dim, ff_dim),
                }
            )
            for _ in range(depth)
        )

    def forward(self, tokens):
        batch, frames, patches, dim = tokens.shape
        x = tokens.reshape(batch, frames * patches, dim)  # (B, N, D)
        for layer in self.layers:
            h = layer["norm"](x)  # (B, N, D)
            x = x + layer["attn"](h, h)[0]  # (B, N, D): queries, keys and values all from the tokens
            x = x + layer["ff"](x)  # (B, N, D)
        return self.norm(self.pool(x.reshape(batch, frames, patches, dim)))  # (B, R, D)


def count_parameters(module):
    """The number of learnable numbers in `module` (a parameter shared by two layers counts once)."""
    return sum(p.numel() for p in module.parameters())


def resampler_parameters(config):
    """The parameter count of the tiny model's resampler (from refimpl's table of shapes)."""
    return sum(math.prod(shape) for shape in param_shapes(config.resampler).values())


def make_pooler(kind, config, ff_dim):
    """A rival pooler ("mean", "mlp" or "transformer") with the sizes of `config`
    (D, R, depth, and for the Transformer H and Dh) and feed-forward width ff_dim."""
    sizes = {"depth": config.depth, "ff_dim": ff_dim}
    if kind == "mean":
        return MeanPooler(config.dim, config.num_latents, **sizes)
    if kind == "mlp":
        return MLPPooler(config.dim, config.num_latents, **sizes)
    if kind == "transformer":
        return TransformerPooler(config.dim, config.num_latents, heads=config.heads, dim_head=config.dim_head, **sizes)
    raise ValueError(f"kind must be one of {KINDS[1:]}; got {kind!r}")


def matched_ff_dim(kind, config, budget=None):
    """The feed-forward width F that brings the rival's parameter count closest to `budget`
    (default: the resampler's). The count is affine in F, a + b F: two counts give a and b."""
    budget = resampler_parameters(config) if budget is None else budget
    a_plus_b, a_plus_2b = (count_parameters(make_pooler(kind, config, f)) for f in (1, 2))
    slope = a_plus_2b - a_plus_b
    return max(1, round((budget - (a_plus_b - slope)) / slope))


def matched_pooler(kind, config, *, seed=0):
    """A rival pooler whose parameter count is the closest to the resampler's, its
    projections drawn N(0, 1 / fan_in) from `seed` as refimpl.tiny initialises the resampler's."""
    pooler = make_pooler(kind, config, matched_ff_dim(kind, config))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in pooler.modules():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, module.in_features**-0.5, generator=generator)
    return pooler


def ablation_model(kind, config, *, seed=0, dtype=torch.float32):
    """The tiny model with the pooler `kind` (one of KINDS) in the resampler's place.

    Encoder and head start from refimpl.tiny's init_tiny_model(config, seed) in every
    variant; "resampler" is exactly TinyModel.from_refimpl of those parameters. A rival gets
    the patch grid from the encoder through a forward hook.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    params = init_tiny_model(config, seed)
    if kind == "resampler":
        return TinyModel.from_refimpl(config, params, dtype=dtype)
    pooler = matched_pooler(kind, config, seed=seed)
    model = TinyModel(config, pooler=pooler).to(dtype)
    shared = {name: value for name, value in to_state_dict(params, dtype).items() if not name.startswith("resampler.")}
    missing, unexpected = model.load_state_dict(shared, strict=False)
    assert not unexpected and all(name.startswith("resampler.") for name in missing)
    model.encoder.register_forward_hook(pooler.take_grid)
    return model
