"""The parameters of a Perceiver Resampler: names, shapes, random initialisation, checks.

Parameters live in a flat dict[str, np.ndarray]. Names and shapes, for layer i in
range(depth) (D = dim, R = num_latents, H = heads, Hkv = kv heads, Dh = dim_head,
F = ff_dim, Tmax = num_time_embeds, Imax = num_media_embeds):

| name                                       | shape        | when                        |
|--------------------------------------------|--------------|-----------------------------|
| media_proj.weight / .bias                  | (Dm, D), (D,)| media_dim (bias: media_proj_bias) |
| latents                                    | (R, D)       | always                      |
| time_embeds                                | (Tmax, D)    | num_time_embeds is not None |
| media_embeds                               | (Imax, D)    | num_media_embeds is not None|
| layers.{i}.attn.norm_media.weight / .bias  | (D,)         | pre_norm; bias with layernorm only |
| layers.{i}.attn.norm_latents.weight / .bias| (D,)         | pre_norm; bias with layernorm only |
| layers.{i}.attn.wq                         | (D, H*Dh)    | always                      |
| layers.{i}.attn.wk, layers.{i}.attn.wv     | (D, Hkv*Dh)  | always                      |
| layers.{i}.attn.wo                         | (H*Dh, D)    | always                      |
| layers.{i}.attn.bq; .bk, .bv; .bo          | (H*Dh,); (Hkv*Dh,); (D,) | attn_bias       |
| layers.{i}.attn.q_norm.weight / .bias      | (Dh,)        | qk_norm                     |
| layers.{i}.attn.k_norm.weight / .bias      | (Dh,)        | qk_norm                     |
| layers.{i}.ff.norm.weight / .bias          | (D,)         | feed_forward and pre_norm; bias with layernorm only |
| layers.{i}.ff.w_in, layers.{i}.ff.w_out    | (D, F), (F, D) | feed_forward, activation != "swiglu" |
| layers.{i}.ff.w_gate, .w_up, .w_down       | (D, F), (D, F), (F, D) | feed_forward, activation == "swiglu" |
| norm.weight / .bias                        | (D,)         | final_norm; bias with layernorm only |
| out_proj.weight / .bias                    | (D, Do), (Do,) | out_dim (bias: out_proj_bias) |
| out_norm.weight / .bias                    | (Do,)        | out_norm; bias with layernorm only |

(Dm = media_dim, Do = out_dim.) The sin-cos positions (config.positions) are computed, not
parameters.

Projection weights are stored (in, out), so a projection is `x @ w` (torch's
nn.Linear.weight is the transpose). Heads are contiguous slices of a projection's
output: head h of `x @ wq` is columns h*Dh ... (h+1)*Dh - 1.
"""

import numpy as np

from . import _checks
from .config import check_config


def param_shapes(config):
    """dict name -> shape of every parameter that `config` needs (see the module's table)."""
    check_config(config)
    d, inner_q, inner_kv = config.dim, config.heads * config.dim_head, config.num_kv_heads * config.dim_head
    norm_names = ("weight", "bias") if config.norm == "layernorm" else ("weight",)

    def norm(prefix, width=d, names=norm_names):
        return {f"{prefix}.{name}": (width,) for name in names}

    shapes = {}
    if config.media_dim is not None:
        shapes["media_proj.weight"] = (config.media_dim, d)
        if config.media_proj_bias:
            shapes["media_proj.bias"] = (d,)
    shapes["latents"] = (config.num_latents, d)
    if config.num_time_embeds is not None:
        shapes["time_embeds"] = (config.num_time_embeds, d)
    if config.num_media_embeds is not None:
        shapes["media_embeds"] = (config.num_media_embeds, d)
    for i in range(config.depth):
        attn, ff = f"layers.{i}.attn", f"layers.{i}.ff"
        if config.pre_norm:
            shapes |= norm(f"{attn}.norm_media") | norm(f"{attn}.norm_latents")
        shapes |= {
            f"{attn}.wq": (d, inner_q),
            f"{attn}.wk": (d, inner_kv),
            f"{attn}.wv": (d, inner_kv),
            f"{attn}.wo": (inner_q, d),
        }
        if config.attn_bias:
            shapes |= {
                f"{attn}.bq": (inner_q,),
                f"{attn}.bk": (inner_kv,),
                f"{attn}.bv": (inner_kv,),
                f"{attn}.bo": (d,),
            }
        if config.qk_norm:  # always a LayerNorm, as in IDEFICS
            shapes |= norm(f"{attn}.q_norm", config.dim_head, ("weight", "bias"))
            shapes |= norm(f"{attn}.k_norm", config.dim_head, ("weight", "bias"))
        if not config.feed_forward:
            continue
        if config.pre_norm:
            shapes |= norm(f"{ff}.norm")
        if config.activation == "swiglu":
            shapes |= {
                f"{ff}.w_gate": (d, config.ff_dim),
                f"{ff}.w_up": (d, config.ff_dim),
                f"{ff}.w_down": (config.ff_dim, d),
            }
        else:
            shapes |= {f"{ff}.w_in": (d, config.ff_dim), f"{ff}.w_out": (config.ff_dim, d)}
    if config.final_norm:
        shapes |= norm("norm")
    if config.out_dim is not None:
        shapes["out_proj.weight"] = (d, config.out_dim)
        if config.out_proj_bias:
            shapes["out_proj.bias"] = (config.out_dim,)
        if config.out_norm:
            shapes |= norm("out_norm", config.out_dim)
    return shapes


PROJECTION_MATRICES = ("media_proj.weight", "out_proj.weight")  # (in, out) like the w* projections
ATTENTION_BIASES = ("bq", "bk", "bv", "bo")


def init_resampler(config, seed=0):
    """Random parameters for `config`: a flat dict[str, np.ndarray] of float64 arrays.

    Everything is random, the norm scales and shifts too, so that no test passes because
    a scale happened to be 1 or a shift 0:
      projections  N(0, 1 / fan_in)    (fan_in = the first axis; media_proj.weight, out_proj.weight too)
      norm weights U(0.5, 1.5)          biases N(0, 0.1^2) (norms', projections')
      latents, time_embeds, media_embeds  N(0, 1)
    """
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(config).items():
        if name.endswith(".weight") and name not in PROJECTION_MATRICES:
            params[name] = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(".bias") or name.rsplit(".", 1)[-1] in ATTENTION_BIASES:
            params[name] = rng.normal(0.0, 0.1, shape)
        elif name in ("latents", "time_embeds", "media_embeds"):
            params[name] = rng.standard_normal(shape)
        else:
            params[name] = rng.normal(0.0, shape[0] ** -0.5, shape)
    return params


def check_params(params, expected, dtype, what):
    """`params` checked against `expected` (name -> shape) and cast to `dtype`, in a new dict
    (the caller's arrays are never modified); `what` names what the shapes come from.

    Raises ValueError listing every missing, unexpected and mis-shaped name at once, and
    TypeError/ValueError for a non-float or non-finite array.
    """
    if not hasattr(params, "keys"):
        raise TypeError(f"params must be a dict of arrays (from init_resampler); got {type(params).__name__}")
    for key in params:
        if not isinstance(key, str):
            raise TypeError(
                f"params must have str keys (parameter names such as 'latents'); got the key {key!r} "
                f"({type(key).__name__})"
            )
    found = {name: np.shape(value) for name, value in sorted(params.items(), key=lambda item: str(item[0]))}
    _checks.check_fits(f"params do not fit {what}", found, dict(sorted(expected.items())))
    return {name: _checks.float_array(f"params[{name!r}]", params[name], dtype) for name in expected}
