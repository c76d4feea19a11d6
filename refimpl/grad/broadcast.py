"""The backward pass of broadcasting: a sum over the axes it added or stretched.

Where the forward pass uses one array for many batch entries (a shared mask aside: the
latents, an embedding table's row, a norm's weight, attention's q, k or v with a batch
axis of size 1), every use sends a gradient back, and the array's gradient is their sum.
"""


def sum_to_shape(grad, shape):
    """The adjoint of np.broadcast_to(a, grad.shape) for an array a of `shape`.

        grad (..., *shape broadcast) -> (*shape): summed over the leading axes that
        broadcasting added, and over each axis that it stretched from size 1.

    e.g. grad (B, H, R, Dh) and shape (1, R, Dh) -> summed over B and H, returned as (1, R, Dh).
    """
    added = grad.ndim - len(shape)
    summed = grad.sum(axis=tuple(range(added)))  # the added leading axes
    stretched = tuple(axis for axis, size in enumerate(shape) if size == 1 and summed.shape[axis] != 1)
    return summed.sum(axis=stretched, keepdims=True)  # (*shape)
