"""The Perceiver Resampler (Flamingo, Alayrac et al. 2022, Fig. 5 and Appendix A.1.1).

The paper's pseudo-code, which `perceiver_resampler` follows line by line:

    def perceiver_resampler(
        x_f,              # The [T, S, d] visual features (T=time, S=space)
        time_embeddings,  # The [T, 1, d] time pos embeddings.
        x,                # R learned latents of shape [R, d]
        num_layers,       # Number of layers
    ):
        # Add the time position embeddings and flatten.
        x_f = x_f + time_embeddings
        x_f = flatten(x_f)  # [T, S, d] -> [T * S, d]
        # Apply the Perceiver Resampler layers.
        for i in range(num_layers):
            # Attention.
            x = x + attention_i(q=x, kv=concat([x_f, x]))
            # Feed forward.
            x = x + ffw_i(x)
        return x

As in every public implementation, the attention and feed-forward blocks normalise
their inputs first (pre-norm) and the output gets a final norm. The config's switches
(refimpl.config) add what later members do: an input projection of the media, biases on
the attention's projections, sin-cos positions on the keys (and queries), an output
projection and norm; or leave out the norms, the residual or the feed-forward.

Axis letters: B... batch axes, T frames, S spatial tokens per frame, N = T*S media
tokens, R latents, H heads, D width; I media items, where config.num_media_embeds is set.
"""

from typing import NamedTuple

import numpy as np

from . import _checks
from .attention import check_backend
from .config import check_config
from .layers import feed_forward, norm
from .multi_head import _multi_head_attention
from .params import check_params, param_shapes
from .positions import check_grid, media_positions


def perceiver_resampler(
    params, x, config, *, mask=None, grid=None, backend="numpy", return_attention=False, dtype=np.float64
):
    """Resample media features to R latent tokens.

    x: (..., T, S, D) media features: any leading batch axes, T frames, S tokens per frame.
        With config.num_media_embeds, (..., I, T, S, D): I media items resampled separately,
        item i's tokens shifted by params["media_embeds"][i].
        With config.media_dim, x is (..., T, S, media_dim), projected to D first.
    mask: bool (..., T, S), True = a real token, False = padding; None = all real. With a
        mask, inputs of different sizes batch together, padded to a common T and S.
    grid: with config.positions only: each image's patch grid, (h, w) for the whole batch or
        an int array (..., 2) per image (MiniCPM-V's tgt_sizes); the first h*w of the S tokens
        of a frame are its patches, row-major, and those past h*w are padding the mask marks.
    params: from `init_resampler(config)` (names and shapes in `refimpl.params`).
    returns latents (..., R, D) ((..., R, out_dim) with config.out_dim); with `return_attention`,
    also a list with one array per layer of the attention weights (..., H, R, N [+ R]): N = T*S media tokens in
    frame-major order (token t*S + s), then the R latents if config.latents_in_kv.

    Computes in `dtype`: float64 (the reference) whatever the input's float dtype, or
    float32 to emulate float32 arithmetic. params are cast, never modified.

    Each layer:  latents += attn(q = norm(latents), kv = concat(norm(media), norm(latents)))
                 latents += ffw(latents)
    and at the end latents = norm(latents). With the switches: media = x @ media_proj first;
    no norms (pre_norm=False); latents = attn(...) (attn_residual=False); no ffw
    (feed_forward=False); no final norm; then latents @ out_proj (out_dim) and out_norm;
    positions p added to the keys' inputs, k = (norm(media) + p) @ wk, v = norm(media) @ wv.
    """
    params, x, mask = checked_arguments(params, x, config, mask=mask, grid=grid, backend=backend, dtype=dtype)
    return _resample(params, x, config, mask, grid, backend, return_attention)


# ---- the seam for refimpl.grad and refimpl.interop: the checked arguments and the trace


def checked_arguments(params, x, config, *, mask=None, grid=None, backend="numpy", dtype=np.float64):
    """perceiver_resampler's arguments checked, with its errors: returns (params, x, mask),
    params and x cast to `dtype` (float64 or float32), mask boolean (..., T, S) or None.
    The grid is checked (positions_for takes it on).

    refimpl.grad and refimpl.interop check their arguments with it, as perceiver_resampler does.
    """
    check_backend(backend)
    check_config(config)
    dtype = _checks.compute_dtype(dtype)
    x = _checks.float_array("x", x, dtype, "(..., T, S, D)")
    if mask is not None:
        mask = _checks.bool_array("mask", mask, "True = real token")
    _checks.resampler_input(x.shape, None if mask is None else mask.shape, config)
    if config.norm_dtype is not None:
        _checks.fits_dtype(
            "x", x, config.norm_dtype, f"config.norm_dtype = {config.norm_dtype!r}: the norms compute in it"
        )
    if not config.latents_in_kv:
        _checks.resampler_items_have_tokens(x.shape, None if mask is None else ~mask.any(axis=(-1, -2)))
    check_grid(grid, x.shape, mask, config)
    return check_params(params, param_shapes(config), dtype, f"the config {config}"), x, mask


def resample_with_trace(params, x, config, *, mask=None, grid=None, backend="numpy"):
    """perceiver_resampler in float64, with every intermediate value: returns (output, trace).

    params, x, config, mask, grid, backend: as for perceiver_resampler (checked by checked_arguments).
    output: (..., R, D or out_dim). trace: a list of TraceRow(block, layer, value), in the order the
    forward pass computes them, each row there only where the config has its block:

    | block                    | layer | value                                              |
    |--------------------------|-------|----------------------------------------------------|
    | "media"                  | None  | media after the input projection and the embeddings (..., N, D), frame-major |
    | "attention"              | i     | attn(q = norm(latents), kv = ...), before the residual (..., R, D) |
    | "attention residual"     | i     | latents + that: the latents after the residual (attn_residual) |
    | "feed-forward"           | i     | ffw(latents), before the residual (feed_forward)   |
    | "feed-forward residual"  | i     | latents + that: layer i's output (feed_forward)    |
    | "final norm"             | None  | norm(latents) (final_norm)                         |
    | "output projection"      | None  | latents @ out_proj [+ bias] (..., R, out_dim) (out_dim) |
    | "output norm"            | None  | norm over out_dim of that (out_norm)               |

    The last row is the output. Without attn_residual the latents after layer i's attention
    are its "attention" row itself. refimpl.interop.compare sets a module's values beside
    these; refimpl.grad's backward pass reads the latents entering each block off them.
    """
    params, x, mask = checked_arguments(params, x, config, mask=mask, grid=grid, backend=backend)
    trace = []
    return _resample(params, x, config, mask, grid, backend, False, trace), trace


class TraceRow(NamedTuple):
    """One intermediate value of the forward pass (see resample_with_trace)."""

    block: str
    layer: int | None
    value: np.ndarray


def _resample(params, x, config, mask, grid, backend, return_attention, trace=None):
    """The resampler on checked arguments; with a list `trace`, appends the TraceRows of
    resample_with_trace to it."""
    media, key_mask, latents = first_layer_inputs(params, x, config, mask=mask)
    positions = tuple(
        None if p is None else p.astype(x.dtype, copy=False) for p in positions_for(config, grid, x.shape, mask)
    )
    record = trace.append if trace is not None else lambda row: None
    record(TraceRow("media", None, media))
    attention_maps = []
    norm_options = (config.norm, config.norm_eps, config.norm_dtype)
    for i in range(config.depth):
        attn_out, weights = _attention_block(
            params, f"layers.{i}.attn.", media, latents, key_mask, positions, config, backend, return_attention
        )
        record(TraceRow("attention", i, attn_out))
        if config.attn_residual:
            latents = latents + attn_out  # (..., R, D)
            record(TraceRow("attention residual", i, latents))
        else:
            latents = attn_out  # (..., R, D)
        if config.feed_forward:
            ff_prefix = f"layers.{i}.ff."
            ff_out = feed_forward(
                params, ff_prefix, latents, config.activation, *norm_options, pre_norm=config.pre_norm
            )
            latents = latents + ff_out  # (..., R, D)
            record(TraceRow("feed-forward", i, ff_out))
            record(TraceRow("feed-forward residual", i, latents))
        attention_maps.append(weights)
    if config.final_norm:
        latents = norm(params, "norm.", latents, *norm_options)  # (..., R, D)
        record(TraceRow("final norm", None, latents))
    if config.out_dim is not None:
        latents = output_projection(params, latents, config.out_proj_bias)  # (..., R, Do)
        record(TraceRow("output projection", None, latents))
        if config.out_norm:
            latents = norm(params, "out_norm.", latents, *norm_options)  # (..., R, Do)
            record(TraceRow("output norm", None, latents))
    return (latents, attention_maps) if return_attention else latents


def output_projection(params, latents, bias):
    """latents (..., R, D) @ out_proj.weight (D, Do) [+ out_proj.bias (Do,)] -> (..., R, Do)."""
    out = latents @ params["out_proj.weight"]
    return out + params["out_proj.bias"] if bias else out


def positions_for(config, grid, x_shape, mask=None):
    """The positions of a checked call: (key_positions (..., N, D) or None, query_positions
    (R, D) or None), from the grid (see refimpl.positions.media_positions)."""
    grid = check_grid(grid, x_shape, mask, config)
    if grid is None:
        return None, None
    return media_positions(config, grid, x_shape[-3], x_shape[-2])


def first_layer_inputs(params, x, config, *, mask=None):
    """The first layer's inputs, on arguments from checked_arguments: the media tokens with
    their embeddings added, flattened frame-major; the keys' mask; the latents, one copy per
    batch entry (a view).

    x (..., T, S, D) (D = media_dim with an input projection), mask (..., T, S) or None ->
    media (..., N, D), key_mask (..., N [+ R]) or None, latents (..., R, D).
    """
    if config.media_dim is not None:
        x = x @ params["media_proj.weight"]  # (..., T, S, Dm) @ (Dm, D)
        if config.media_proj_bias:
            x = x + params["media_proj.bias"]  # (..., T, S, D)
    *batch, n_frames, n_space, dim = x.shape
    if config.num_media_embeds is not None:
        x = x + params["media_embeds"][: x.shape[-4], None, None, :]  # (..., I, T, S, D) + (I, 1, 1, D)
    if config.num_time_embeds is not None:
        x = x + params["time_embeds"][:n_frames, None, :]  # (..., T, S, D) + (T, 1, D)
    media = x.reshape(*batch, n_frames * n_space, dim)  # (..., N, D), frame-major
    media_mask = None if mask is None else mask.reshape(*batch, n_frames * n_space)  # (..., N)
    latents = np.broadcast_to(params["latents"], (*batch, config.num_latents, dim))  # (..., R, D)
    key_mask = media_mask
    if config.latents_in_kv and media_mask is not None:  # the latents are always real
        key_mask = np.concatenate([media_mask, np.ones((*batch, config.num_latents), dtype=bool)], axis=-1)
    return media, key_mask, latents


def attention_block_inputs(params, prefix, media, latents, config):
    """The attention block's queries and context before the positions: norm(latents) (..., R, D)
    and concat(norm(media), norm(latents)) (..., N [+ R], D) (no norms without config.pre_norm,
    no latents in the context without config.latents_in_kv)."""
    if config.pre_norm:
        norm_options = (config.norm, config.norm_eps, config.norm_dtype)
        media = norm(params, prefix + "norm_media.", media, *norm_options)  # (..., N, D)
        latents = norm(params, prefix + "norm_latents.", latents, *norm_options)  # (..., R, D)
    context = np.concatenate([media, latents], axis=-2) if config.latents_in_kv else media  # (..., N [+ R], D)
    return latents, context


def _attention_block(params, prefix, media, latents, key_mask, positions, config, backend, return_weights):
    """attn(q = norm(latents) [+ pq], kv = concat(norm(media), norm(latents)), k += pk) without the residual.

    media (..., N, D), latents (..., R, D), key_mask (..., N [+ R]) or None, positions
    (key (..., N, D) or None, query (R, D) or None) from positions_for.
    returns (..., R, D) and the weights (..., H, R, N [+ R]) or None.
    """
    queries, context = attention_block_inputs(params, prefix, media, latents, config)
    key_positions, query_positions = positions
    return _multi_head_attention(
        params,
        prefix,
        queries if query_positions is None else queries + query_positions,
        context,
        heads=config.heads,
        kv_heads=config.num_kv_heads,
        mask=None if key_mask is None else key_mask[..., None, :],  # (..., 1, N [+ R])
        qk_norm_eps=config.norm_eps if config.qk_norm else None,
        backend=backend,
        return_weights=return_weights,
        bias=config.attn_bias,
        key_positions=key_positions,
    )


def interpolate_time_embeds(time_embeds, frames):
    """A time-embedding table stretched to `frames` rows by linear interpolation.

    Flamingo's video models train on 8 frames and, at inference, take 30 (3 frames a second)
    by linearly interpolating the learned time embeddings of the resampler (the Flamingo
    paper's appendix on video inputs, paraphrased). The first and last rows are kept and row
    j of the result is read at position j * (Tmax - 1) / (frames - 1) of the old table, so the
    clip's start and end keep their embeddings and the frames between spread evenly.

    time_embeds: (Tmax, D), Tmax >= 2. frames: the new number of rows, >= 2 (fewer rows than
    Tmax shrink the table the same way). Returns (frames, D) float64.
    """
    time_embeds = _checks.float_array("time_embeds", time_embeds, np.float64)
    frames = _checks.positive_int("frames", frames)
    if time_embeds.ndim != 2 or len(time_embeds) < 2:
        raise ValueError(f"time_embeds must have shape (Tmax, D) with Tmax >= 2; got {time_embeds.shape}")
    if frames < 2:
        raise ValueError(f"frames must be at least 2 (a first and a last frame); got {frames}")
    where = np.linspace(0, len(time_embeds) - 1, frames)  # (frames,) positions in the old table
    below = np.minimum(np.floor(where).astype(int), len(time_embeds) - 2)
    above = where - below  # (frames,) in [0, 1]: the share of the next row
    return time_embeds[below] * (1 - above[:, None]) + time_embeds[below + 1] * above[:, None]  # (frames, D)
