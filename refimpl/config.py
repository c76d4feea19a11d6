"""ResamplerConfig: every size and switch of a Perceiver Resampler, validated once.

The published resamplers differ in a handful of switches; each has a row here:

| variant               | activation     | norm      | kv_heads | qk_norm  | latents_in_kv | embeddings            |
|-----------------------|----------------|-----------|----------|----------|---------------|-----------------------|
| Flamingo (paper)      | "squared_relu" | layernorm | = heads  | no       | yes           | time                  |
| flamingo-pytorch      | "gelu"         | layernorm | = heads  | no       | yes           | media                 |
| open_flamingo         | "gelu"         | layernorm | = heads  | no       | yes           | time (frames), media  |
| HF IDEFICS            | "relu"         | layernorm | = heads  | optional | yes           | none                  |
| HF Idefics2           | "swiglu"       | rmsnorm * | < heads  | no       | yes           | none                  |
| Perceiver             | any            | any       | any      | any      | no            | any                   |

* normalising in float32 (norm_dtype="float32"), whatever the model's dtype.

The learned-query resamplers of 2023-2024 make further choices (a blank cell: the default;
"-": not applicable):

| switch                   | Kosmos-2   | Evolla               | Qwen-VL            | MiniCPM-V                |
|--------------------------|------------|----------------------|--------------------|--------------------------|
| media_dim (bias)         | yes (bias) |                      | yes (no bias)      | yes (no bias)            |
| attn_bias                | True       |                      | True               | True                     |
| pre_norm                 | False      |                      |                    |                          |
| attn_residual            | False      |                      | False              | False                    |
| feed_forward             | False      |                      | False              | False                    |
| final_norm               | False      | False                | False              |                          |
| out_dim (bias, out_norm) |            | yes (bias, out_norm) |                    | = dim (no bias)          |
| positions                |            |                      | "keys_and_queries" | "keys" (per-image h x w) |
| pos_grid                 |            |                      | yes                |                          |
| latents_in_kv            | yes        | yes                  | no                 | no                       |

Defaults (no media_dim, attn_bias=False, pre_norm, attn_residual, feed_forward, final_norm,
no out_dim, positions=None) are the Flamingo family above, bit for bit.
"""

from dataclasses import dataclass

from ._checks import positive_int, positive_number

ACTIVATIONS = ("gelu", "squared_relu", "relu", "swiglu")
NORMS = ("layernorm", "rmsnorm")
POSITIONS = (None, "keys", "keys_and_queries")


@dataclass(frozen=True)
class ResamplerConfig:
    """Sizes and switches of a Perceiver Resampler; invalid values raise at construction.

    dim: D, the width of the media features (unless media_dim is set), the latents and the
        output (unless out_dim is set).
    depth: number of layers, each attention then feed-forward.
    heads: H query heads. dim_head: Dh, the width of one head (H * Dh need not equal D).
    num_latents: R, the number of output tokens.
    ff_mult: feed-forward hidden width F = dim * ff_mult (must be a whole number).
    num_time_embeds: size of the learned time-embedding table (one row per frame), or
        None for no time embeddings (then the T*S tokens are an unordered set).
    num_media_embeds: size of a learned table with one row per media item, or None. With
        it, x is (..., I, T, S, D): I media items (images or videos), each resampled on its
        own, row i added to every token of item i (flamingo-pytorch's media_pos_emb,
        open_flamingo's media_time_embs; the Flamingo paper has no such table).
    kv_heads: Hkv key/value heads, dividing heads (grouped-query attention; query head h
        uses key/value head h // (H / Hkv)); None means Hkv = H.
    activation: "gelu" (exact, with erf), "squared_relu", "relu", or "swiglu"
        (gated SiLU: silu(x W_gate) * (x W_up)).
    norm: "layernorm" (scale and shift) or "rmsnorm" (scale only); norm_eps its epsilon.
    norm_dtype: None, or "float32" to normalise in float32 whatever the compute dtype (the
        learned scale is applied after, in the compute dtype), as Idefics2's RMSNorm does.
    qk_norm: a LayerNorm (over Dh, eps norm_eps) on each head's queries and keys.
    latents_in_kv: the latents join the keys and values (Flamingo) or not (Perceiver).
    attn_bias: biases on the q, k, v and output projections of every attention
        (params layers.{i}.attn.bq, .bk, .bv, .bo).
    media_dim: None, or the width of the incoming media: x is then (..., T, S, media_dim) and
        an input projection media_proj.weight (media_dim, D) maps it to D first (before the
        embeddings and positions are added); media_proj_bias: with a bias media_proj.bias (D,).
    pre_norm: the attention's norms of media and latents and the feed-forward's norm; False: none.
    attn_residual: latents = latents + attn(...); False: latents = attn(...).
    feed_forward: a feed-forward block in every layer; False: none (and no ff params).
    final_norm: the norm after the last layer.
    out_dim: None, or the width of an output projection after the final norm,
        out_proj.weight (D, out_dim); out_proj_bias: with a bias out_proj.bias (out_dim,);
        out_norm: then a norm of config.norm's kind over out_dim (out_norm.weight [, .bias]).
    positions: None; "keys": a fixed 2-D sin-cos table over each image's h x w patch grid
        (refimpl.sincos_2d) added to the inputs of the key projection (MiniCPM-V); or
        "keys_and_queries": the table of a pos_grid x pos_grid grid added to the keys' inputs
        (bicubic-resized to the image's h x w where they differ, refimpl.resize_positions)
        and to the queries' inputs (R = pos_grid**2; Qwen-VL). Never to the values' inputs.
        perceiver_resampler then takes the grid, `grid=(h, w)` or per image.
    pos_grid: the side of the table's grid, for positions="keys_and_queries" only.
    """

    dim: int
    depth: int = 6
    heads: int = 8
    dim_head: int = 64
    num_latents: int = 64
    ff_mult: float = 4
    num_time_embeds: int | None = None
    num_media_embeds: int | None = None
    kv_heads: int | None = None
    activation: str = "gelu"
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    norm_dtype: str | None = None
    qk_norm: bool = False
    latents_in_kv: bool = True
    attn_bias: bool = False
    media_dim: int | None = None
    media_proj_bias: bool = False
    pre_norm: bool = True
    attn_residual: bool = True
    feed_forward: bool = True
    final_norm: bool = True
    out_dim: int | None = None
    out_proj_bias: bool = True
    out_norm: bool = False
    positions: str | None = None
    pos_grid: int | None = None

    def __post_init__(self):
        for name in ("dim", "depth", "heads", "dim_head", "num_latents"):
            positive_int(name, getattr(self, name))
        for name in ("num_time_embeds", "num_media_embeds", "kv_heads"):
            if getattr(self, name) is not None:
                positive_int(name, getattr(self, name))
        if self.kv_heads is not None and self.heads % self.kv_heads:
            raise ValueError(f"kv_heads must divide heads = {self.heads}; got {self.kv_heads}")
        ff_dim = self.dim * positive_number("ff_mult", self.ff_mult)
        if ff_dim != round(ff_dim):
            raise ValueError(
                f"ff_mult must make dim * ff_mult a whole number; got {self.dim} * {self.ff_mult} = {ff_dim}"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}; got {self.activation!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}; got {self.norm!r}")
        positive_number("norm_eps", self.norm_eps)
        if self.norm_dtype not in (None, "float32"):
            raise ValueError(f"norm_dtype must be None or 'float32'; got {self.norm_dtype!r}")
        for name in self._SWITCHES:
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False; got {getattr(self, name)!r}")
        for name in ("media_dim", "out_dim", "pos_grid"):
            if getattr(self, name) is not None:
                positive_int(name, getattr(self, name))
        if self.media_proj_bias and self.media_dim is None:
            raise ValueError(
                "media_proj_bias=True needs media_dim (the input projection it is the bias of); got media_dim=None"
            )
        if self.out_norm and self.out_dim is None:
            raise ValueError("out_norm=True needs out_dim (the output projection it normalises); got out_dim=None")
        self._check_positions()

    _SWITCHES = (
        "qk_norm",
        "latents_in_kv",
        "attn_bias",
        "media_proj_bias",
        "pre_norm",
        "attn_residual",
        "feed_forward",
        "final_norm",
        "out_proj_bias",
        "out_norm",
    )

    def _check_positions(self):
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}; got {self.positions!r}")
        if self.positions is None:
            if self.pos_grid is not None:
                raise ValueError(
                    "pos_grid is the side of the position table; it needs positions='keys_and_queries', got "
                    f"positions=None and pos_grid={self.pos_grid}"
                )
            return
        if self.dim % 4:
            raise ValueError(
                f"positions need dim divisible by 4 (sin and cos of the column and of the row); got dim = {self.dim}"
            )
        if self.latents_in_kv:
            raise ValueError(
                f"positions={self.positions!r} needs latents_in_kv=False (the positions are the media tokens'); got "
                "latents_in_kv=True"
            )
        if self.positions == "keys" and self.pos_grid is not None:
            raise ValueError(
                "positions='keys' makes the table for each image's grid and takes no pos_grid; got "
                f"pos_grid={self.pos_grid}"
            )
        if self.positions == "keys_and_queries":
            if self.pos_grid is None:
                raise ValueError(
                    "positions='keys_and_queries' needs pos_grid, the side of the table's square grid; got None"
                )
            if self.num_latents != self.pos_grid**2:
                raise ValueError(
                    f"positions='keys_and_queries' needs num_latents = pos_grid**2 = {self.pos_grid**2}; got "
                    f"num_latents = {self.num_latents}"
                )

    @property
    def num_kv_heads(self) -> int:
        """Hkv: the number of key/value heads."""
        return self.heads if self.kv_heads is None else self.kv_heads

    @property
    def media_width(self) -> int:
        """The width of the incoming media: media_dim, or D without an input projection."""
        return self.dim if self.media_dim is None else self.media_dim

    @property
    def out_width(self) -> int:
        """The width of the output: out_dim, or D without an output projection."""
        return self.dim if self.out_dim is None else self.out_dim

    @property
    def ff_dim(self) -> int:
        """F: the feed-forward hidden width."""
        return round(self.dim * self.ff_mult)


def check_config(config):
    """`config` itself if it is a ResamplerConfig; TypeError naming what came otherwise."""
    if not isinstance(config, ResamplerConfig):
        hint = " (make one: refimpl.ResamplerConfig(**fields))" if isinstance(config, dict) else ""
        raise TypeError(f"config must be a refimpl.ResamplerConfig; got {type(config).__name__}{hint}")
    return config
