"""Fixed 2-D sin-cos positions over a patch grid (Qwen-VL, MiniCPM-V), and their bicubic resize.

The table has one row per patch of an h x w grid, row-major (patch (r, c) is row r*w + c),
in the MAE layout: the first D/2 channels encode the column c, the last D/2 the row r, each
as [sin(p * omega), cos(p * omega)] with omega_k = 10000 ** (-k / (D/4)), k < D/4.

Where positions are on (config.positions), the resampler adds a table to the inputs of the
key projection (and of the query projection): this module also checks the `grid` argument
of perceiver_resampler and builds the positions of every media token from it.

Axis letters: T frames, S spatial tokens per frame, N = T*S, R latents, D width.
"""

import numpy as np

from . import _checks

CUBIC_A = -0.75  # the cubic convolution kernel's parameter that torch's bicubic uses


def sincos_1d(dim, positions):
    """[sin(p * omega), cos(p * omega)] for positions p (L,) -> (L, dim), omega_k = 10000 ** (-k / (dim/2))."""
    omega = 1.0 / 10000.0 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2))  # (dim/2,)
    angles = np.asarray(positions, dtype=np.float64)[:, None] * omega  # (L, dim/2)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)  # (L, dim)


def sincos_2d(dim, h, w):
    """The 2-D sin-cos table of an h x w grid: (h*w, dim), row r*w + c for patch (r, c);
    channels [:dim/2] encode the column c, [dim/2:] the row r. dim must be divisible by 4."""
    dim, h, w = (_checks.positive_int(name, value) for name, value in (("dim", dim), ("h", h), ("w", w)))
    if dim % 4:
        raise ValueError(f"dim must be divisible by 4 (sin and cos of the column and of the row); got {dim}")
    rows, cols = np.divmod(np.arange(h * w), w)  # (h*w,) each
    return np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=-1)  # (h*w, dim)


def cubic_weights(size_in, size_out):
    """(size_out, size_in): the bicubic interpolation of one axis as a matrix, as torch's
    interpolate(mode="bicubic", align_corners=False) computes it.

    Output j reads the input at x = (j + 0.5) * size_in / size_out - 0.5, from the four
    samples floor(x) - 1 ... floor(x) + 2 (indices clamped to the borders), weighted by the
    cubic convolution kernel (A = -0.75) at their distances from x.
    """
    x = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5  # (size_out,) source positions
    first = np.floor(x)
    t = x - first  # (size_out,) in [0, 1): the distances are t + 1, t, 1 - t, 2 - t
    taps = np.stack(
        [_cubic_far(t + 1), _cubic_near(t), _cubic_near(1 - t), _cubic_far(2 - t)], axis=-1
    )  # (size_out, 4)
    index = np.clip(first[:, None].astype(int) + np.arange(-1, 3), 0, size_in - 1)  # (size_out, 4)
    weights = np.zeros((size_out, size_in))
    np.add.at(weights, (np.arange(size_out)[:, None], index), taps)
    return weights


def _cubic_near(d):
    """The cubic convolution kernel for distances 0 <= d <= 1: (A + 2) d^3 - (A + 3) d^2 + 1."""
    return ((CUBIC_A + 2) * d - (CUBIC_A + 3)) * d * d + 1


def _cubic_far(d):
    """The cubic convolution kernel for distances 1 < d < 2: A d^3 - 5A d^2 + 8A d - 4A."""
    return ((CUBIC_A * d - 5 * CUBIC_A) * d + 8 * CUBIC_A) * d - 4 * CUBIC_A


def resize_positions(table, old_grid, new_grid):
    """A position table of an h0 x w0 grid resized to h x w by bicubic interpolation, as
    torch.nn.functional.interpolate(mode="bicubic", align_corners=False) resizes the table
    laid out as an image (1, D, h0, w0) (Qwen-VL's get_abs_pos).

    table: (h0*w0, D), row r*w0 + c for patch (r, c). old_grid (h0, w0), new_grid (h, w).
    returns (h*w, D) float64; the table itself (copied) where the grids are equal.
    """
    table = _checks.float_array("table", table, np.float64)
    (h0, w0), (h, w) = (_grid_pair(name, grid) for name, grid in (("old_grid", old_grid), ("new_grid", new_grid)))
    if table.ndim != 2 or table.shape[0] != h0 * w0:
        raise ValueError(
            f"table must have shape (h0*w0, D) = ({h0 * w0}, D) for old_grid = ({h0}, {w0}); got {table.shape}"
        )
    if (h0, w0) == (h, w):
        return table.copy()
    image = table.reshape(h0, w0, -1)  # (h0, w0, D)
    resized = np.einsum("yi,xj,ijd->yxd", cubic_weights(h0, h), cubic_weights(w0, w), image)  # (h, w, D)
    return resized.reshape(h * w, -1)


def _grid_pair(name, grid):
    """(h, w) as two positive ints."""
    if np.shape(grid) != (2,):
        raise ValueError(f"{name} must be a pair (h, w); got {grid!r}")
    return tuple(_checks.positive_int(f"{name}[{i}]", side) for i, side in enumerate(grid))


# ---- the resampler's `grid` argument, and the positions of every media token


def check_grid(grid, x_shape, mask, config):
    """perceiver_resampler's `grid` checked against x (..., T, S, D) and mask (..., T, S) or None:
    returns an int array (..., 2) of every image's (h, w) (broadcast over the batch axes), or None.

    Raises ValueError where positions are off and a grid came, where they are on and none
    came, where an h or w is below 1, where h*w > S, where h*w < S without a mask, and where
    the mask marks a token past h*w as real.
    """
    if config.positions is None:
        if grid is not None:
            raise ValueError(f"grid is for configs with positions; config.positions is None, got grid={grid!r}")
        return None
    if grid is None:
        raise ValueError(
            f"grid must be given with config.positions = {config.positions!r}: "
            "(h, w) or an int array (..., 2) per image"
        )
    grid = np.asarray(grid)
    batch, n_space = tuple(x_shape[:-3]), x_shape[-2]
    if not np.issubdtype(grid.dtype, np.integer) or grid.ndim < 1 or grid.shape[-1] != 2:
        raise ValueError(
            f"grid must be (h, w) or an int array (..., 2) per image, ... = {batch}; "
            f"got {grid.tolist()!r} (dtype {grid.dtype})"
        )
    try:
        grid = np.broadcast_to(grid, batch + (2,))
    except ValueError:
        raise ValueError(
            f"grid must be (h, w) or an int array (..., 2) with ... = x.shape[:-3] = {batch}; got shape {grid.shape}"
        ) from None
    check_grid_sides({(int(h), int(w)) for h, w in grid.reshape(-1, 2)}, n_space, masked=mask is not None)
    if mask is not None:
        sizes = grid[..., 0] * grid[..., 1]  # (...,) h*w
        past = np.arange(n_space) >= sizes[..., None, None]  # (..., 1, S): tokens past h*w
        if (mask & past).any():
            raise ValueError("mask must mark the tokens past each image's h*w (grid) as padding (False); some are True")
    return grid


def check_grid_sides(sides, n_space, *, masked):
    """The checks of check_grid that read only the grid: sides, a collection of every image's
    (h, w) as ints, against S = n_space tokens per frame, with or without a mask. Plain
    Python on ints, so that torch.compile can trace it (refimpl.torch)."""
    small = sorted({side for pair in sides for side in pair if side < 1})
    if small:
        raise ValueError(f"grid must hold sides h, w >= 1; got {small}")
    sizes = [h * w for h, w in sides]
    if sizes and max(sizes) > n_space:
        raise ValueError(f"grid must have h*w <= S = {n_space} (x's tokens per frame); got h*w = {max(sizes)}")
    if not masked and sizes and min(sizes) < n_space:
        raise ValueError(
            f"grid must have h*w = S = {n_space} without a mask (tokens past h*w are padding); got h*w = {min(sizes)}"
        )


def media_positions(config, grid, n_frames, n_space):
    """The positions added to the key projection's inputs, for every media token, and the
    queries' (or None): grid from check_grid (..., 2) -> (..., N, D) zero past each image's
    h*w, and (R, D) for positions="keys_and_queries", else None.

    positions="keys": sincos_2d(D, h, w) of each image's grid. "keys_and_queries": the table
    of the pos_grid x pos_grid grid, bicubic-resized to (h, w) where it differs.
    """
    batch = grid.shape[:-1]
    keys = np.zeros(batch + (n_space, config.dim))  # (..., S, D)
    for h, w in {tuple(int(side) for side in pair) for pair in grid.reshape(-1, 2)}:
        table = _table(config, h, w)  # (h*w, D)
        where = (grid[..., 0] == h) & (grid[..., 1] == w)  # (...,)
        keys[where, : h * w] = table
    keys = np.broadcast_to(keys[..., None, :, :], batch + (n_frames, n_space, config.dim))  # (..., T, S, D)
    keys = keys.reshape(batch + (n_frames * n_space, config.dim))  # (..., N, D), frame-major
    queries = (
        sincos_2d(config.dim, config.pos_grid, config.pos_grid) if config.positions == "keys_and_queries" else None
    )
    return keys, queries


def _table(config, h, w):
    """The key positions of an h x w image (h*w, D)."""
    if config.pos_grid is None:
        return sincos_2d(config.dim, h, w)
    side = config.pos_grid
    return resize_positions(sincos_2d(config.dim, side, side), (side, side), (h, w))
