"""refimpl: a float64 NumPy reference of the Perceiver Resampler (Flamingo), with Numba
as an accelerator. Readable first; usable as a numerical oracle for other implementations.

    >>> import numpy as np, refimpl
    >>> config = refimpl.ResamplerConfig(dim=32, depth=2, heads=4, dim_head=8, num_latents=5)
    >>> params = refimpl.init_resampler(config, seed=0)
    >>> x = np.random.default_rng(0).standard_normal((2, 1, 49, 32))   # (B, T, S, D)
    >>> refimpl.perceiver_resampler(params, x, config).shape           # (B, R, D)
    (2, 5, 32)

Importing refimpl needs only NumPy: Numba is imported when backend="numba" is asked for.
The backward pass (gradients for x and every parameter) is in refimpl.grad; the course's
generated data is in refimpl.scenes, and its small trained model in refimpl.tiny.
"""

from . import grad as grad
from .attention import attention, softmax
from .config import ResamplerConfig
from .gated_xattn import (
    GatedXattnConfig,
    gated_xattn_dense,
    gated_xattn_dense_shapes,
    gated_xattn_param_shapes,
    init_gated_xattn,
    init_gated_xattn_dense,
)
from .multi_head import multi_head_attention
from .params import init_resampler, param_shapes
from .positions import resize_positions, sincos_2d
from .resampler import interpolate_time_embeds, perceiver_resampler
from .tolerances import TOLERANCES, relative_error

__all__ = [
    "GatedXattnConfig",
    "TOLERANCES",
    "ResamplerConfig",
    "attention",
    "gated_xattn_dense",
    "gated_xattn_dense_shapes",
    "gated_xattn_param_shapes",
    "init_gated_xattn",
    "init_gated_xattn_dense",
    "init_resampler",
    "interpolate_time_embeds",
    "multi_head_attention",
    "param_shapes",
    "perceiver_resampler",
    "relative_error",
    "resize_positions",
    "sincos_2d",
    "softmax",
]
