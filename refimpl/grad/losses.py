"""Ready-made scalar losses for refimpl.grad.value_and_grad.

A loss is a function latents (..., R, D) -> (value, dlatents): a scalar and its gradient
dvalue/dlatents, of the latents' shape. To use another, write such a function.
"""

import numpy as np

from .. import _checks


def mean_squared_error(target):
    """The loss latents -> mean((latents - target)^2), with its gradient 2 (latents - target) / size.

    target: the wanted latents, (..., R, D), float. The returned function raises ValueError
    for latents of another shape.

        >>> import numpy as np
        >>> loss = mean_squared_error(np.zeros((1, 2)))
        >>> loss(np.array([[1.0, 3.0]]))     # (1 + 9) / 2, and 2 * [1, 3] / 2
        (5.0, array([[1., 3.]]))
    """
    target = _checks.float_array("target", target, np.float64)
    if target.size == 0:
        raise ValueError(f"target must have at least one entry, for a mean; got shape {target.shape}")

    def loss(latents):
        if np.shape(latents) != target.shape:
            raise ValueError(f"target must have the latents' shape {np.shape(latents)}; got {target.shape}")
        error = np.asarray(latents, dtype=np.float64) - target  # (..., R, D)
        return float(np.mean(error * error)), 2.0 * error / error.size

    return loss
