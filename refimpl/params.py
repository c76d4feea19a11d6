"""The parameters of a Perceiver Resampler: names, shapes, random initialisation, checks.

Parameters live in a flat dict[str, np.ndarray]. Names and shapes, for layer i in
range(depth) (D = dim, R = num_latents, H = heads, Hkv = kv heads, Dh = dim_head,
F = ff_dim, Tmax = num_time_embeds, Imax = num_media_embeds):

| name                                       | shape        | when                        |
|--------------------------------------------|--------------|-----------------------------|
| latents                                    | (R, D)       | always                      |
| time_embeds                                | (Tmax, D)    | num_time_embeds is not None |
| media_embeds                               | (Imax, D)    | num_media_embeds is not None|
| layers.{i}.attn.norm_media.weight / .bias  | (D,)         | bias with layernorm only    |
| layers.{i}.attn.norm_latents.weight / .bias| (D,)         | bias with layernorm only    |
| layers.{i}.attn.wq                         | (D, H*Dh)    | always                      |
| layers.{i}.attn.wk, layers.{i}.attn.wv     | (D, Hkv*Dh)  | always                      |
| layers.{i}.attn.wo                         | (H*Dh, D)    | always                      |
| layers.{i}.attn.q_norm.weight / .bias      | (Dh,)        | qk_norm                     |
| layers.{i}.attn.k_norm.weight / .bias      | (Dh,)        | qk_norm                     |
| layers.{i}.ff.norm.weight / .bias          | (D,)         | bias with layernorm only    |
| layers.{i}.ff.w_in, layers.{i}.ff.w_out    | (D, F), (F, D) | activation != "swiglu"    |
| layers.{i}.ff.w_gate, .w_up, .w_down       | (D, F), (D, F), (F, D) | activation == "swiglu" |
| norm.weight / .bias                        | (D,)         | bias with layernorm only    |

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

    shapes = {"latents": (config.num_latents, d)}
    if config.num_time_embeds is not None:
        shapes["time_embeds"] = (config.num_time_embeds, d)
    if config.num_media_embeds is not None:
        shapes["media_embeds"] = (config.num_media_embeds, d)
    for i in range(config.depth):
        attn, ff = f"layers.{i}.attn", f"layers.{i}.ff"
        shapes |= norm(f"{attn}.norm_media") | norm(f"{attn}.norm_latents")
        shapes |= {f"{attn}.wq": (d, inner_q), f"{attn}.wk": (d, inner_kv), f"{attn}.wv": (d, inner_kv), f"{attn}.wo": (inner_q, d)}
        if config.qk_norm:  # always a LayerNorm, as in IDEFICS
            shapes |= norm(f"{attn}.q_norm", config.dim_head, ("weight", "bias"))
            shapes |= norm(f"{attn}.k_norm", config.dim_head, ("weight", "bias"))
        shapes |= norm(f"{ff}.norm")
        if config.activation == "swiglu":
            shapes |= {f"{ff}.w_gate": (d, config.ff_dim), f"{ff}.w_up": (d, config.ff_dim), f"{ff}.w_down": (config.ff_dim, d)}
        else:
            shapes |= {f"{ff}.w_in": (d, config.ff_dim), f"{ff}.w_out": (config.ff_dim, d)}
    return shapes | norm("norm")


def init_resampler(config, seed=0):
    """Random parameters for `config`: a flat dict[str, np.ndarray] of float64 arrays.

    Everything is random, the norm scales and shifts too, so that no test passes because
    a scale happened to be 1 or a shift 0:
      projections  N(0, 1 / fan_in)    (fan_in = the first axis)
      norm weights U(0.5, 1.5)          norm biases N(0, 0.1^2)
      latents, time_embeds, media_embeds  N(0, 1)
    """
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(config).items():
        if name.endswith(".weight"):
            params[name] = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(".bias"):
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
            raise TypeError(f"params must have str keys (parameter names such as 'latents'); got the key {key!r} ({type(key).__name__})")
    found = {name: np.shape(value) for name, value in sorted(params.items(), key=lambda item: str(item[0]))}
    _checks.check_fits(f"params do not fit {what}", found, dict(sorted(expected.items())))
    return {name: _checks.float_array(f"params[{name!r}]", params[name], dtype) for name in expected}
