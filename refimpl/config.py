"""ResamplerConfig: every size and switch of a Perceiver Resampler, validated once.

The published resamplers differ in a handful of switches; each has a row here:

| variant               | activation     | norm      | kv_heads | qk_norm  | latents_in_kv | embeddings            |
|-----------------------|----------------|-----------|----------|----------|---------------|-----------------------|
| Flamingo (paper)      | "squared_relu" | layernorm | = heads  | no       | yes           | time                  |
| flamingo-pytorch      | "gelu"         | layernorm | = heads  | no       | yes           | media                 |
| open_flamingo         | "gelu"         | layernorm | = heads  | no       | yes           | time (frames), media  |
| HF IDEFICS            | "relu"         | layernorm | = heads  | optional | yes           | none                  |
| HF Idefics2           | "swiglu"       | rmsnorm * | < heads  | no       | yes           | none                  |
| Perceiver / Qwen-VL   | any            | any       | any      | any      | no            | any                   |

* normalising in float32 (norm_dtype="float32"), whatever the model's dtype.
"""

from dataclasses import dataclass

from ._checks import positive_int, positive_number

ACTIVATIONS = ("gelu", "squared_relu", "relu", "swiglu")
NORMS = ("layernorm", "rmsnorm")


@dataclass(frozen=True)
class ResamplerConfig:
    """Sizes and switches of a Perceiver Resampler; invalid values raise at construction.

    dim: D, the width of the media features, the latents and the output.
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
            raise ValueError(f"ff_mult must make dim * ff_mult a whole number; got {self.dim} * {self.ff_mult} = {ff_dim}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}; got {self.activation!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}; got {self.norm!r}")
        positive_number("norm_eps", self.norm_eps)
        if self.norm_dtype not in (None, "float32"):
            raise ValueError(f"norm_dtype must be None or 'float32'; got {self.norm_dtype!r}")
        for name in ("qk_norm", "latents_in_kv"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False; got {getattr(self, name)!r}")

    @property
    def num_kv_heads(self) -> int:
        """Hkv: the number of key/value heads."""
        return self.heads if self.kv_heads is None else self.kv_heads

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
