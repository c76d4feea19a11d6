"""Backward pass of the Perceiver Resampler (refimpl.perceiver_resampler): the gradients of
a scalar loss for the media features x and for every parameter.

The forward pass, as refimpl.resampler runs it:

    media = flatten(x [@ media_proj] + media_embeds[i] + time_embeds[t])   (..., N, D)
    latents = params["latents"], one copy per batch entry                 (..., R, D)
    for each layer:
        latents = [latents +] attention_block(media, latents)   (the residual: attn_residual)
        latents = latents + feed_forward(latents)               (feed_forward)
    out = [out_norm(] [norm(latents)] [@ out_proj] [)]          (final_norm, out_dim, out_norm)

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
from ..params import param_shapes
from ..resampler import (
    attention_block_inputs,
    checked_arguments,
    first_layer_inputs,
    positions_for,
    resample_with_trace,
)
from .attention import check_backend
from .broadcast import sum_to_shape
from .layers import feed_forward_backward, linear_backward, norm_backward
from .multi_head import _multi_head_attention_backward


def perceiver_resampler_backward(params, x, config, dout, *, mask=None, grid=None, backend="numpy"):
    """The gradients of refimpl.perceiver_resampler for x and every parameter.

    params, x, config, mask, grid, backend: as for refimpl.perceiver_resampler, with its checks
        (it computes in float64).
    dout: (..., R, D) (D = out_dim with config.out_dim), the output's shape: dL/d(latents)
        of some scalar loss L.
    returns dx, shaped like x, and dparams, a dict with the names of params, each gradient
    shaped like its parameter, all float64.

    A token that the mask marks as padding has no influence on the output, and its
    gradient in dx is exactly 0; so is that of a time- or media-embedding row that no
    token uses. The sin-cos positions are constants: they have no gradient.
    """
    check_backend(backend)
    params, x, mask = checked_arguments(params, x, config, mask=mask, grid=grid, backend=backend)
    dout = _checks.float_array("dout", dout, np.float64)
    _checks.has_shape(
        "dout", dout, x.shape[:-3] + (config.num_latents, config.out_width), "(..., R, D), the output's shape"
    )
    _, saved = _forward(params, x, config, mask, grid, backend)
    return _backward(params, x, config, saved, dout, backend)


def value_and_grad(params, x, config, loss, *, mask=None, grid=None, backend="numpy"):
    """A scalar loss of the resampler's output, and its gradients, in one forward and one backward pass.

    loss: a function latents (..., R, D) -> (value, dlatents), a scalar loss and its
        gradient dL/d(latents), of the latents' shape; e.g. refimpl.grad.mean_squared_error(target).
    params, x, config, mask, grid, backend: as for refimpl.perceiver_resampler.
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
    params, x, mask = checked_arguments(params, x, config, mask=mask, grid=grid, backend=backend)
    latents, saved = _forward(params, x, config, mask, grid, backend)
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
    (..., N [+ R]) or None as every layer sees them; positions, (key, query) positions or
    Nones (from positions_for); attention_inputs and ff_inputs, the latents (..., R, D)
    entering each layer's attention and feed-forward blocks (ff_inputs empty without
    feed_forward); latents, the last layer's output; normed, the final norm's output (or
    latents without one); projected, the output projection's (or None)."""

    media: np.ndarray
    key_mask: np.ndarray | None
    positions: tuple
    attention_inputs: list
    ff_inputs: list
    latents: np.ndarray
    normed: np.ndarray
    projected: np.ndarray | None


def _forward(params, x, config, mask, grid, backend):
    """The forward pass on checked arguments: returns the output (..., R, D) and _Saved.

    It runs refimpl's own forward (refimpl.resampler.resample_with_trace) and reads the
    latents entering each block off its rows: the initial latents enter attention 0; the
    latents after attention i (its residual row, or its own row without the residual) enter
    feed-forward i; layer i's output (the feed-forward residual row, or the latents after the
    attention without a feed-forward) enters attention i + 1, and the last enter the final norm.
    """
    out, trace = resample_with_trace(params, x, config, mask=mask, grid=grid, backend=backend)
    rows = {(row.block, row.layer): row.value for row in trace}
    media, key_mask, latents = first_layer_inputs(params, x, config, mask=mask)
    after_attention = [
        rows["attention residual" if config.attn_residual else "attention", i] for i in range(config.depth)
    ]
    outputs = (
        [rows["feed-forward residual", i] for i in range(config.depth)] if config.feed_forward else after_attention
    )
    last = outputs[-1]
    normed = rows["final norm", None] if config.final_norm else last
    return out, _Saved(
        media,
        key_mask,
        positions_for(config, grid, x.shape, mask),
        [latents, *outputs[:-1]],
        after_attention if config.feed_forward else [],
        last,
        normed,
        rows.get(("output projection", None)),
    )


def _backward(params, x, config, saved, dout, backend):
    """The backward pass: dout (..., R, D) -> dx (x's shape), dparams (param_shapes(config)'s names)."""
    norm_options = (config.norm, config.norm_eps, config.norm_dtype)
    grads = {}
    dlatents = dout  # (..., R, D or Do)
    if config.out_dim is not None:
        if config.out_norm:
            dlatents, norm_grads = norm_backward(
                params, "out_norm.", saved.projected, *norm_options, dlatents
            )  # (..., R, Do)
            grads |= norm_grads
        if config.out_proj_bias:
            grads["out_proj.bias"] = sum_to_shape(dlatents, params["out_proj.bias"].shape)
        dlatents, grads["out_proj.weight"] = linear_backward(
            saved.normed, params["out_proj.weight"], dlatents
        )  # (..., R, D)
    if config.final_norm:
        dlatents, norm_grads = norm_backward(params, "norm.", saved.latents, *norm_options, dlatents)  # (..., R, D)
        grads |= norm_grads
    dmedia = np.zeros_like(saved.media)  # (..., N, D)
    for i in reversed(range(config.depth)):
        if config.feed_forward:
            dff_input, ff_grads = feed_forward_backward(
                params,
                f"layers.{i}.ff.",
                saved.ff_inputs[i],
                config.activation,
                *norm_options,
                dlatents,
                pre_norm=config.pre_norm,
            )
            dlatents = dlatents + dff_input  # the residual: latents + ff(latents)
            grads |= ff_grads
        dmedia_i, dattention_input, attention_grads = _attention_block_backward(
            params, f"layers.{i}.attn.", saved, saved.attention_inputs[i], config, backend, dlatents
        )
        # the residual latents + attn(media, latents) sends dlatents down both ways; without it, only through attn
        dlatents = dlatents + dattention_input if config.attn_residual else dattention_input
        dmedia += dmedia_i
        grads |= attention_grads
    grads["latents"] = sum_to_shape(dlatents, params["latents"].shape)  # (R, D), summed over the batch

    dprojected = dmedia.reshape(
        x.shape[:-1] + (config.dim,)
    )  # (..., T, S, D); the embeddings were added after the projection
    if config.num_time_embeds is not None:  # row t was added to every token of frame t
        n_frames = x.shape[-3]
        grads["time_embeds"] = np.zeros_like(params["time_embeds"])  # (Tmax, D), 0 for the unused rows
        grads["time_embeds"][:n_frames] = sum_to_shape(dprojected, (n_frames, 1, config.dim))[:, 0]
    if config.num_media_embeds is not None:  # row i was added to every token of item i
        n_items = x.shape[-4]
        grads["media_embeds"] = np.zeros_like(params["media_embeds"])  # (Imax, D), 0 for the unused rows
        grads["media_embeds"][:n_items] = sum_to_shape(dprojected, (n_items, 1, 1, config.dim))[:, 0, 0]
    dx = dprojected
    if config.media_dim is not None:  # media = x @ media_proj.weight [+ media_proj.bias]
        dx, grads["media_proj.weight"] = linear_backward(x, params["media_proj.weight"], dprojected)  # (..., T, S, Dm)
        if config.media_proj_bias:
            grads["media_proj.bias"] = sum_to_shape(dprojected, params["media_proj.bias"].shape)
    return dx, {name: grads[name] for name in param_shapes(config)}


def _attention_block_backward(params, prefix, saved, latents, config, backend, dout):
    """Backward of resampler._attention_block: attn(q = norm(latents) [+ pq], kv = concat(norm(media),
    norm(latents)), k += pk).

    saved: the media (..., N, D), key_mask and positions as the forward used them; latents
    (..., R, D), dout (..., R, D) -> dmedia (..., N, D), dlatents (..., R, D), {name: gradient}
    for the block's parameters. With the latents among the keys, norm(latents) gets gradients
    both as queries and as keys; without pre_norm the norms are identities.
    """
    norm_options = (config.norm, config.norm_eps, config.norm_dtype)
    queries, context = attention_block_inputs(params, prefix, saved.media, latents, config)
    key_positions, query_positions = saved.positions
    dqueries, dcontext, grads = _multi_head_attention_backward(
        params,
        prefix,
        queries if query_positions is None else queries + query_positions,
        context,
        dout,
        heads=config.heads,
        kv_heads=config.num_kv_heads,
        mask=None if saved.key_mask is None else saved.key_mask[..., None, :],  # (..., 1, N [+ R])
        qk_norm_eps=config.norm_eps if config.qk_norm else None,
        backend=backend,
        bias=config.attn_bias,
        key_positions=key_positions,
    )
    n_media = saved.media.shape[-2]
    dnormed_latents = dqueries + dcontext[..., n_media:, :] if config.latents_in_kv else dqueries  # (..., R, D)
    dnormed_media = dcontext[..., :n_media, :]  # (..., N, D)
    if not config.pre_norm:
        return dnormed_media, dnormed_latents, grads
    dmedia, media_norm_grads = norm_backward(params, prefix + "norm_media.", saved.media, *norm_options, dnormed_media)
    dlatents, latents_norm_grads = norm_backward(
        params, prefix + "norm_latents.", latents, *norm_options, dnormed_latents
    )
    return dmedia, dlatents, grads | media_norm_grads | latents_norm_grads
