"""refimpl.grad: the backward pass of the reference, in NumPy (float64).

Given the upstream gradient dout = dL/d(output) of some scalar loss L, each function returns
the gradients of L for the forward function's inputs and parameters, each shaped like what
it is the gradient of (an input broadcast in the forward pass gets its gradients summed):

    softmax_backward(weights, dweights, axis=-1)                  -> dscores
    attention_backward(q, k, v, dout, *, mask, scale, backend)    -> dq, dk, dv
    multi_head_attention_backward(params, queries, context, dout, *, heads, ...)
                                                                  -> dqueries, dcontext, dparams
    perceiver_resampler_backward(params, x, config, dout, *, mask, grid, backend)
                                                                  -> dx, dparams
    value_and_grad(params, x, config, loss, *, mask, grid, backend)
                                                                  -> value, dx, dparams

dparams has the names of params. The arguments are checked as in the forward functions,
and dout must have the forward output's shape. The backward of each piece (projection,
norms, activations, feed-forward block) is in refimpl.grad.layers, on checked arrays like
refimpl.layers; the backward of broadcasting, sum_to_shape, in refimpl.grad.broadcast. Each
backward recomputes what it needs with refimpl's own forward functions (through the documented
seams refimpl.resampler.resample_with_trace and friends, never their underscore names).

The tests check every gradient against central finite differences and against torch's
autograd through refimpl.torch (TOLERANCES["float64", "gradient vs ..."]).

    >>> import numpy as np, refimpl
    >>> config = refimpl.ResamplerConfig(dim=8, depth=2, heads=2, dim_head=4, num_latents=3)
    >>> params = refimpl.init_resampler(config, seed=0)
    >>> x = np.random.default_rng(0).standard_normal((2, 1, 5, 8))     # (B, T, S, D)
    >>> dout = np.ones((2, 3, 8))                                       # dL/d(latents), (B, R, D)
    >>> dx, dparams = refimpl.grad.perceiver_resampler_backward(params, x, config, dout)
    >>> dx.shape, dparams.keys() == params.keys()
    ((2, 1, 5, 8), True)
"""

from .attention import attention_backward, softmax_backward
from .losses import mean_squared_error
from .multi_head import multi_head_attention_backward
from .resampler import perceiver_resampler_backward, value_and_grad

__all__ = [
    "attention_backward",
    "mean_squared_error",
    "multi_head_attention_backward",
    "perceiver_resampler_backward",
    "softmax_backward",
    "value_and_grad",
]
