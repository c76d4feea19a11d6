"""Backward pass of the Perceiver Resampler (refimpl.perceiver_resampler): the gradients of
a scalar loss for the media features x and for every parameter.

The forward pass, as refimpl.resampler runs it:

    media = flatten(x + media_embeds[i] + time_embeds[t])         (..., N, D)
    latents = params["latents"], one copy per batch entry           (..., R, D)
    for each layer:
        latents = latents + attention_block(media, latents)
        latents = latents + feed_forward(latents)
    out = norm(latents)

and the backward pass runs it in reverse. A residual sum y = x + f(x) sends its gradient
down both ways, dx = dy + f's backward(dy); the media feed every layer's attention, so
their gradient is the sum over the layers; the latents, the embedding rows and the norms'
weights are shared by every batch entry (and token), so theirs are sums too.

Axis letters: B... batch axes, I media items, T frames, S spatial tokens per frame,
N = T*S media tokens, R latents, D width.
"""

from typing import NamedTuple

import numpy as np

from .. import _checks
from ..layers import norm
from ..params import param_shapes
from ..resampler import checked_arguments, first_layer_inputs, resample_with_trace
from .broadcast import sum_to_shape
from .attention import check_backend
from .layers import feed_forward_backward, norm_backward
from .multi_head import _multi_head_attention_backward


def perceiver_resampler_backward(params, x, config, dout, *, mask=None, backend="numpy"):
    """The gradients of refimpl.perceiver_resampler for x and every parameter.

    params, x, config, mask, backend: as for refimpl.perceiver_resampler, with its checks
        (it computes in float64).
    dout: (..., R, D), the output's shape: dL/d(latents) of some scalar loss L.
    returns dx, shaped like x, and dparams, a dict with the names of params, each gradient
    shaped like its parameter, all float64.

    A token that the mask marks as padding has no influence on the output, and its
    gradient in dx is exactly 0; so is that of a time- or media-embedding row that no
    token uses.
    """
    check_backend(backend)
    params, x, mask = checked_arguments(params, x, config, mask=mask, backend=backend)
    dout = _checks.float_array("dout", dout, np.float64)
    _checks.has_shape("dout", dout, x.shape[:-3] + (config.num_latents, config.dim), "(..., R, D), the output's shape")
    _, saved = _forward(params, x, config, mask, backend)
    return _backward(params, x, config, saved, dout, backend)


def value_and_grad(params, x, config, loss, *, mask=None, backend="numpy"):
    """A scalar loss of the resampler's output, and its gradients, in one forward and one backward pass.

    loss: a function latents (..., R, D) -> (value, dlatents), a scalar loss and its
        gradient dL/d(latents), of the latents' shape; e.g. refimpl.grad.mean_squared_error(target).
    params, x, config, mask, backend: as for refimpl.perceiver_resampler.
    returns (value, dx, dparams): the loss's value, and the gradients as from
    perceiver_resampler_backward(..., dout=dlatents).

        >>> import numpy as np, refimpl
        >>> from refimpl.grad import mean_squared_error, value_and_grad
        >>> config = refimpl.ResamplerConfig(dim=8, depth=2, heads=2, dim_head=4, num_latents=3)
        >>> params = refimpl.init_resampler(config, seed=0)
        >>> x = np.random.default_rng(0).standard_normal((2, 1, 5, 8))    # (B, T, S, D)
        >>> value, dx, dparams = value_and_grad(params, x, config, mean_squared_error(np.zeros((2, 3, 8))))
        >>> dx.shape, dparams["layers.0.attn.wq"].shape
        ((2, 1, 5, 8), (8, 8))
    """
    check_backend(backend)
    if not callable(loss):
        raise TypeError(f"loss must be a function latents -> (value, dlatents); got {type(loss).__name__}")
    params, x, mask = checked_arguments(params, x, config, mask=mask, backend=backend)
    latents, saved = _forward(params, x, config, mask, backend)
    result = loss(latents)
    if not isinstance(result, tuple) or len(result) != 2:
        raise TypeError(f"loss must return a pair (value, dlatents); got {type(result).__name__}")
    value, dlatents = result
    dlatents = _checks.float_array("the dlatents that loss returned", dlatents, np.float64)
    _checks.has_shape("the dlatents that loss returned", dlatents, latents.shape, "(..., R, D), the latents' shape")
    dx, dparams = _backward(params, x, config, saved, dlatents, backend)
    return value, dx, dparams


class _Saved(NamedTuple):
    """What the backward pass keeps from the forward: media (..., N, D) and key_mask
    (..., N [+ R]) or None as every layer sees them; block_inputs, the latents (..., R, D)
    entering each block (attention 0, feed-forward 0, attention 1, ...); and latents, the
    latents before the final norm."""

    media: np.ndarray
    key_mask: np.ndarray | None
    block_inputs: list
    latents: np.ndarray


def _forward(params, x, config, mask, backend):
    """The forward pass on checked arguments: returns the output (..., R, D) and _Saved.

    It runs refimpl's own forward (refimpl.resampler.resample_with_trace), whose residual
    rows are the latents entering each block: the initial latents enter attention 0, the
    latents after attention i's residual enter feed-forward i, those after feed-forward i's
    enter attention i + 1, and the last enter the final norm.
    """
    out, trace = resample_with_trace(params, x, config, mask=mask, backend=backend)
    media, key_mask, latents = first_layer_inputs(params, x, config, mask=mask)
    residuals = [row.value for row in trace if row.block.endswith("residual")]  # (..., R, D) each
    return out, _Saved(media, key_mask, [latents, *residuals[:-1]], residuals[-1])


def _backward(params, x, config, saved, dout, backend):
    """The backward pass: dout (..., R, D) -> dx (x's shape), dparams (param_shapes(config)'s names)."""
    norm_options = (config.norm, config.norm_eps, config.norm_dtype)
    dlatents, grads = norm_backward(params, "norm.", saved.latents, *norm_options, dout)  # (..., R, D)
    dmedia = np.zeros_like(saved.media)  # (..., N, D)
    for i in reversed(range(config.depth)):
        attention_input, ff_input = saved.block_inputs[2 * i], saved.block_inputs[2 * i + 1]
        dff_input, ff_grads = feed_forward_backward(
            params, f"layers.{i}.ff.", ff_input, config.activation, *norm_options, dlatents
        )
        dlatents = dlatents + dff_input  # the residual: latents + ff(latents)
        dmedia_i, dattention_input, attention_grads = _attention_block_backward(
            params, f"layers.{i}.attn.", saved.media, attention_input, saved.key_mask, config, backend, dlatents
        )
        dlatents = dlatents + dattention_input  # the residual: latents + attn(media, latents)
        dmedia += dmedia_i
        grads |= ff_grads | attention_grads
    grads["latents"] = sum_to_shape(dlatents, params["latents"].shape)  # (R, D), summed over the batch

    dx = dmedia.reshape(x.shape)  # (..., T, S, D); the embeddings were added, so x gets the same gradient
    if config.num_time_embeds is not None:  # row t was added to every token of frame t
        n_frames = x.shape[-3]
        grads["time_embeds"] = np.zeros_like(params["time_embeds"])  # (Tmax, D), 0 for the unused rows
        grads["time_embeds"][:n_frames] = sum_to_shape(dx, (n_frames, 1, config.dim))[:, 0]
    if config.num_media_embeds is not None:  # row i was added to every token of item i
        n_items = x.shape[-4]
        grads["media_embeds"] = np.zeros_like(params["media_embeds"])  # (Imax, D), 0 for the unused rows
        grads["media_embeds"][:n_items] = sum_to_shape(dx, (n_items, 1, 1, config.dim))[:, 0, 0]
    return dx, {name: grads[name] for name in param_shapes(config)}


def _attention_block_backward(params, prefix, media, latents, key_mask, config, backend, dout):
    """Backward of resampler._attention_block: attn(q = norm(latents), kv = concat(norm(media), norm(latents))).

    media (..., N, D), latents (..., R, D), key_mask (..., N [+ R]) or None, dout (..., R, D)
    -> dmedia (..., N, D), dlatents (..., R, D), {name: gradient} for the block's parameters.
    With the latents among the keys, norm(latents) gets gradients both as queries and as keys.
    """
    norm_options = (config.norm, config.norm_eps, config.norm_dtype)
    normed_media = norm(params, prefix + "norm_media.", media, *norm_options)  # (..., N, D)
    normed_latents = norm(params, prefix + "norm_latents.", latents, *norm_options)  # (..., R, D)
    context = np.concatenate([normed_media, normed_latents], axis=-2) if config.latents_in_kv else normed_media
    dqueries, dcontext, grads = _multi_head_attention_backward(
        params,
        prefix,
        normed_latents,
        context,
        dout,
        heads=config.heads,
        kv_heads=config.num_kv_heads,
        mask=None if key_mask is None else key_mask[..., None, :],  # (..., 1, N [+ R])
        qk_norm_eps=config.norm_eps if config.qk_norm else None,
        backend=backend,
    )
    n_media = media.shape[-2]
    dnormed_latents = dqueries + dcontext[..., n_media:, :] if config.latents_in_kv else dqueries  # (..., R, D)
    dmedia, media_norm_grads = norm_backward(params, prefix + "norm_media.", media, *norm_options, dcontext[..., :n_media, :])
    dlatents, latents_norm_grads = norm_backward(params, prefix + "norm_latents.", latents, *norm_options, dnormed_latents)
    return dmedia, dlatents, grads | media_norm_grads | latents_norm_grads
