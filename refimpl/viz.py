"""refimpl.viz: the one plotting helper of the course (matplotlib; `import refimpl` does not load it).

Every attention plot in the notebooks goes through these functions:

    matrix(weights)                          a (rows, columns) heat map: scores, weights, costs
    attention_map(weights, grid, image)      one latent's weights over the image's patch grid
    latent_maps(weights, grid, image)        every latent's map, one panel each
    layers_by_heads(maps, grid, latent)      one latent across layers (rows) and heads (columns)

Axis letters: T frames, S = h*w spatial tokens per frame on an (h, w) patch grid, N = T*S
media tokens, R latents, H heads. A resampler attention row has N + R entries when the
latents join the keys (media first, then latents); these functions use its first S (one
frame) or the frame asked for, and say how much weight went to the latents instead.
"""

import matplotlib.pyplot as plt
import numpy as np

from ._checks import float_array, positive_int

CMAP = "viridis"


def matrix(weights, *, ax=None, title=None, xlabel="key", ylabel="query", colorbar=True):
    """Heat map of a 2-D array, e.g. attention weights (M, N) or scores.

    weights: (rows, columns). Returns the matplotlib Axes.
    """
    weights = float_array("weights", weights, np.float64)
    if weights.ndim != 2:
        raise ValueError(f"weights must be 2-D (rows, columns); got shape {weights.shape}")
    ax = ax if ax is not None else plt.figure(figsize=(5, 4)).add_subplot()
    image = ax.imshow(weights, cmap=CMAP, aspect="auto", interpolation="nearest")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046)
    return ax


def _on_grid(weights, grid, frame, what):
    """weights (>= T*S,) of one query -> (h, w) map of frame `frame`, and the mass left out of it."""
    weights = float_array(what, weights, np.float64)
    if len(grid) != 2:
        raise ValueError(f"grid must be (h, w), the patches per frame along each side; got {grid!r}")
    h, w = (positive_int("grid", side) for side in grid)
    frame = int(frame)
    if weights.ndim != 1 or weights.shape[0] < (frame + 1) * h * w:
        raise ValueError(
            f"{what} must be one attention row with at least (frame + 1) * h * w = {(frame + 1) * h * w} "
            f"entries for grid = {tuple(grid)}, frame = {frame}; got shape {weights.shape}"
        )
    on_frame = weights[frame * h * w : (frame + 1) * h * w]
    return on_frame.reshape(h, w), float(weights.sum() - on_frame.sum())


def attention_map(weights, grid, image=None, *, frame=0, ax=None, title=None, alpha=0.6, vmax=None, min_elsewhere=5e-3):
    """One query's (one latent's) attention over the patch grid, over the image if given.

    weights: (N [+ R],) one attention row, media tokens first (row-major patches, frame by
    frame); grid: (h, w) patches per frame, S = h*w; image: (height, width[, 3]) drawn under
    the map, stretched to the same extent. vmax: the weight at the top of the colour scale
    (from 0), the same for every panel of a figure that shares a colour bar; None scales each
    map to its own range. Returns the Axes (the map is its last image); its title adds the
    weight that went elsewhere (other frames, the latents) when it is at least `min_elsewhere`
    (0: on every map that has an elsewhere).
    """
    on_grid, elsewhere = _on_grid(weights, grid, frame, "weights")
    ax = ax if ax is not None else plt.figure(figsize=(3, 3)).add_subplot()
    extent = (0, on_grid.shape[1], on_grid.shape[0], 0)
    if image is not None:
        ax.imshow(np.asarray(image), extent=extent, cmap="gray" if np.ndim(image) == 2 else None)
    scale = {} if vmax is None else {"vmin": 0.0, "vmax": float(vmax)}
    ax.imshow(
        on_grid, extent=extent, cmap=CMAP, alpha=alpha if image is not None else 1.0, interpolation="nearest", **scale
    )
    label = title or ""
    has_elsewhere = np.size(weights) > (int(frame) + 1) * on_grid.size or int(frame) > 0
    if has_elsewhere and elsewhere >= min_elsewhere:
        label = f"{label}{chr(10) if label else ''}{elsewhere:.0%} elsewhere"
    ax.set_title(label, fontsize=8)
    ax.set_xticks([]), ax.set_yticks([])
    return ax


def latent_maps(weights, grid, image=None, *, frame=0, latents=None, cols=8, size=1.6, suptitle=None):
    """Every latent's attention over the patch grid, one panel per latent.

    weights: (R, N [+ R]) one layer's weights, averaged over heads or of one head;
    latents: which latents to draw (default all). Returns the Figure.
    """
    weights = float_array("weights", weights, np.float64)
    if weights.ndim != 2:
        raise ValueError(f"weights must be (R, N [+ R]) for one layer and head; got shape {weights.shape}")
    latents = range(weights.shape[0]) if latents is None else list(latents)
    cols = min(positive_int("cols", cols), len(latents))
    rows = -(-len(latents) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows + 0.4 * bool(suptitle)), squeeze=False)
    for ax in axes.flat[len(latents) :]:
        ax.axis("off")
    for ax, latent in zip(axes.flat, latents):
        attention_map(weights[latent], grid, image, frame=frame, ax=ax, title=f"latent {latent}")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def layers_by_heads(maps, grid, latent, image=None, *, frame=0, size=1.6, suptitle=None):
    """One latent's attention in every layer (rows) and head (columns).

    maps: a list over layers of (H, R, N [+ R]) weights, as `perceiver_resampler(...,
    return_attention=True)` returns them for one batch item. Returns the Figure.
    """
    maps = [float_array("maps", layer, np.float64) for layer in maps]
    if not maps or any(layer.ndim != 3 for layer in maps):
        raise ValueError(
            f"maps must be a non-empty list of (H, R, N [+ R]) arrays; got shapes {[m.shape for m in maps]}"
        )
    heads = maps[0].shape[0]
    fig, axes = plt.subplots(
        len(maps), heads, figsize=(size * heads, size * len(maps) + 0.4 * bool(suptitle)), squeeze=False
    )
    for layer, row in enumerate(axes):
        for head, ax in enumerate(row):
            attention_map(maps[layer][head, latent], grid, image, frame=frame, ax=ax)
            if head == 0:
                ax.set_ylabel(f"layer {layer}", fontsize=8)
            if layer == 0:
                ax.set_title(f"head {head}\n{ax.get_title()}".strip(), fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig
