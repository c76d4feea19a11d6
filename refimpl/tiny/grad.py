"""Backward pass of the tiny model (refimpl.tiny.model) for its training loss, in NumPy (float64).

The loss is the one the course trains with (refimpl.tiny.train): the mean binary
cross-entropy of the logits against the yes/no answers, over the B x Q questions.

    forward:   inputs = [patch pixels, Fourier positions]        (B, T, S, P + 4*frequencies)
               pre = inputs W_in + b_in,  hidden = gelu(pre)       (B, T, S, D)
               tokens = hidden W_out + b_out                       (B, T, S, D)
               latents = perceiver_resampler(tokens)               (B, R, D)
               logits = flatten(latents) W_head + b_head           (B, Q)
               loss = mean over B, Q of softplus(z) - y z          (z = logits, y = labels)
    backward:  dlogits = (sigmoid(z) - y) / (B Q)
               dW_head = flatten(latents)^T dlogits,   db_head = sum over B of dlogits
               dlatents = dlogits W_head^T, unflattened            (B, R, D)
               dtokens, dresampler = refimpl.grad (the resampler's backward)
               dhidden, dW_out = linear_backward(hidden, W_out, dtokens),  db_out = sum of dtokens
               dpre = gelu_backward(pre, dhidden)
               dW_in = inputs^T dpre (linear_backward),  db_in = sum of dpre

Every piece's backward is refimpl.grad's: the resampler's (value_and_grad, which runs its
forward once and keeps what its backward needs) and refimpl.grad.layers' linear_backward
and gelu_backward; what is new here is only the loss's gradient and the wiring.

The loss's gradient: with sigma = sigmoid, d/dz [softplus(z) - y z] = sigma(z) - y, and the
mean divides by the number of terms, B Q. (softplus(z) - y z is -[y log sigma(z) + (1 - y)
log(1 - sigma(z))] rewritten so that no log of a rounded-to-0 probability is taken.)

    >>> import numpy as np
    >>> from refimpl.tiny.model import TinyConfig, init_tiny_model
    >>> from refimpl.tiny.grad import tiny_value_and_grad
    >>> config = TinyConfig(dim=8, depth=1, heads=2, dim_head=4, num_latents=3, patch=4, outputs=5)
    >>> params = init_tiny_model(config, seed=0)
    >>> images = np.random.default_rng(0).random((2, 8, 12, 3))        # (B, height, width, 3)
    >>> labels = np.zeros((2, 5), dtype=bool)                          # (B, Q)
    >>> loss, grads = tiny_value_and_grad(params, images, labels, config)
    >>> grads.keys() == params.keys(), grads["head.w_out"].shape
    (True, (24, 5))

Axis letters: B batch, T frames, S patches per frame, P pixel values per patch, D width,
R latents, Q questions.
"""

import numpy as np

from .. import _checks
from ..grad import value_and_grad
from ..grad.broadcast import sum_to_shape
from ..grad.layers import gelu_backward, linear_backward
from ..layers import gelu, sigmoid
from ..params import check_params
from .model import RESAMPLER, checked_images, encoder_inputs, head, resampler_params, tiny_param_shapes


def binary_cross_entropy_with_logits(logits, labels):
    """The mean binary cross-entropy of logits against 0/1 labels, and its gradient.

        loss = mean(softplus(z) - y z),   dloss/dz = (sigmoid(z) - y) / z.size

    (torch.nn.functional.binary_cross_entropy_with_logits, mean reduction.)
    logits: z, (B, Q) float.   labels: y, (B, Q), bool or numbers that are all 0 or 1.
    returns (loss as a float, dlogits (B, Q) float64).
    """
    logits = _checks.float_array("logits", logits, np.float64)
    labels = _checked_labels(labels, logits.shape, "logits.shape")
    return _binary_cross_entropy_with_logits(logits, labels)


def _binary_cross_entropy_with_logits(logits, labels):
    """binary_cross_entropy_with_logits on checked arrays: logits (B, Q), labels (B, Q) float64 0/1."""
    loss = np.mean(np.logaddexp(0.0, logits) - labels * logits)  # softplus(z) = log(1 + e^z), without overflow
    return float(loss), (sigmoid(logits) - labels) / logits.size  # (B, Q)


def tiny_value_and_grad(params, images, labels, config):
    """The tiny model's training loss and its gradient for every parameter, in float64.

    params: the tiny model's parameters (refimpl.tiny.model.tiny_param_shapes(config)).
    images: (B, height, width, 3), or (B, T, height, width, 3) clips when config.frames is set,
        with height and width multiples of config.patch (as for tiny_model).
    labels: (B, Q) answers, Q = config.outputs: bool, or numbers that are all 0 or 1.
    config: the TinyConfig.
    returns (loss, grads): the mean binary cross-entropy of tiny_model(params, images, config)
    against labels (a float), and a dict with the names of params, each gradient shaped like
    its parameter (float64).
    """
    images = checked_images(images, config)
    labels = _checked_labels(labels, (len(images), config.outputs), "(B, Q) with B = len(images), Q = config.outputs")
    params = check_params(params, tiny_param_shapes(config), np.float64, f"the tiny model {config}")

    # the encoder's forward, keeping what its backward needs (refimpl.tiny.model.encode's steps)
    inputs, _ = encoder_inputs(images, config)  # (B, T, S, P + 4 * frequencies)
    pre = inputs @ params["encoder.w_in"] + params["encoder.b_in"]  # (B, T, S, D)
    hidden = gelu(pre)  # (B, T, S, D)
    tokens = hidden @ params["encoder.w_out"] + params["encoder.b_out"]  # (B, T, S, D)

    # the resampler, the head and the loss: value_and_grad runs the resampler forward, calls
    # head_loss on its output, and back-propagates the dlatents it returns
    grads = {}

    def head_loss(latents):  # (B, R, D) -> (loss, dlatents (B, R, D))
        flat = latents.reshape(len(latents), -1)  # (B, R*D)
        logits = head(params, latents)  # (B, Q) = flat W_head + b_head
        loss, dlogits = _binary_cross_entropy_with_logits(logits, labels)  # float, (B, Q)
        dflat, grads["head.w_out"] = linear_backward(flat, params["head.w_out"], dlogits)  # (B, R*D), (R*D, Q)
        grads["head.b_out"] = dlogits.sum(axis=0)  # (Q,)
        return loss, dflat.reshape(latents.shape)

    loss, dtokens, dresampler = value_and_grad(resampler_params(params), tokens, config.resampler, head_loss)
    grads |= {RESAMPLER + name: value for name, value in dresampler.items()}

    # the encoder's backward
    dhidden, grads["encoder.w_out"] = linear_backward(hidden, params["encoder.w_out"], dtokens)  # (B, T, S, D), (D, D)
    grads["encoder.b_out"] = sum_to_shape(dtokens, params["encoder.b_out"].shape)  # (D,)
    dpre = gelu_backward(pre, dhidden)  # (B, T, S, D)
    _, grads["encoder.w_in"] = linear_backward(inputs, params["encoder.w_in"], dpre)  # (P + 4 * frequencies, D)
    grads["encoder.b_in"] = sum_to_shape(dpre, params["encoder.b_in"].shape)  # (D,)
    return loss, {name: grads[name] for name in params}


def _checked_labels(labels, shape, layout):
    """labels as float64 0/1 of exactly `shape`; `layout` names the shape for the message."""
    array = np.asarray(labels)
    if not (
        array.dtype == np.bool_ or np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise TypeError(f"labels must be a boolean or numeric array of 0/1 answers; got dtype {array.dtype}")
    _checks.has_shape("labels", array, shape, layout)
    array = array.astype(np.float64)
    if not np.isin(array, (0.0, 1.0)).all():
        bad = array[~np.isin(array, (0.0, 1.0))]
        raise ValueError(
            f"labels must all be 0 or 1 (False or True); got {bad.size} other value(s), e.g. {bad.flat[0]!r}"
        )
    return array
