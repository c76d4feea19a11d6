"""Exercises of notebook 11 (the resampler family), with worked solutions and checks.

    sincos_2d(dim, h, w)              the 2-D sin-cos position table of an h x w patch grid
    cubic_weights(size_in, size_out)  one axis of a bicubic resize as a (size_out, size_in) matrix

The table (Qwen-VL's and MiniCPM-V's positions, the MAE layout) has one row per patch, row
major (patch (r, c) is row r*w + c); its first dim/2 channels encode the column c, the last
dim/2 the row r, each as [sin(p * omega), cos(p * omega)], omega_k = 10000 ** (-k / (dim/4)).
Qwen-VL resizes its table to another grid bicubically (torch's interpolate(mode="bicubic",
align_corners=False)); that resize is one matrix per axis, the second exercise.

The checks compare with refimpl (`refimpl.sincos_2d`, `refimpl.resize_positions`) in float64.

Usage, in the notebook:

    from refimpl.exercises import family as ex
    ex.check_sincos_2d(sincos_2d)
"""

import numpy as np

from ..positions import resize_positions
from ..positions import sincos_2d as reference_sincos_2d
from ..tolerances import TOLERANCES
from . import agree, call, check, likely_mistake

# the same float64 math as refimpl's, computed by another function
BOUND = TOLERANCES["float64", "same math in another order"]


# ---------------------------------------------------------------- sincos_2d


def sincos_2d(dim, h, w):
    """The 2-D sin-cos table of an h x w grid: (h*w, dim), dim divisible by 4.

    For patch (r, c), row r*w + c, with omega_k = 10000 ** (-k / (dim/4)), k < dim/4:

        [sin(c omega), cos(c omega), sin(r omega), cos(r omega)]    each dim/4 wide
    """
    omega = 10000.0 ** (-np.arange(dim // 4) / (dim / 4))  # (dim/4,)
    rows, cols = np.divmod(np.arange(h * w), w)  # (h*w,) each: patch r*w + c
    col_angles = cols[:, None] * omega  # (h*w, dim/4)
    row_angles = rows[:, None] * omega  # (h*w, dim/4)
    return np.concatenate([np.sin(col_angles), np.cos(col_angles), np.sin(row_angles), np.cos(row_angles)], axis=-1)


def _rows_first(dim, h, w):
    """The likely mistake: the row in the first half of the channels, the column in the second."""
    table = reference_sincos_2d(dim, h, w)  # (h*w, dim)
    return np.concatenate([table[:, dim // 2 :], table[:, : dim // 2]], axis=-1)


def _interleaved(dim, h, w):
    """The likely mistake: sin and cos interleaved channel by channel (sin, cos, sin, cos, ...)."""
    table = reference_sincos_2d(dim, h, w).reshape(h * w, 2, 2, dim // 4)  # (h*w, axis, sin/cos, k)
    return np.swapaxes(table, -1, -2).reshape(h * w, dim)


def _test_sincos_2d(fn):
    # (dim, h, w): non-square grids, so rows and columns cannot be swapped unnoticed
    cases = [(8, 3, 5), (16, 4, 4), (12, 1, 7), (32, 6, 2), (64, 16, 16)]
    general = (
        "row r*w + c holds [sin(c omega), cos(c omega), sin(r omega), cos(r omega)], each dim/4 wide, "
        "omega_k = 10000 ** (-k / (dim/4)): the column in the first half of the channels, the row in the second"
    )
    rows_first = "the first half of the channels encodes the column c, the second half the row r"
    interleaved = "sin and cos are blocks, not interleaved: [sin(c omega) (dim/4), cos(c omega) (dim/4), ...]"
    worst = 0.0
    for dim, h, w in cases:
        what = f"dim={dim}, h={h}, w={w}"
        table = call(what, general, fn, dim, h, w)
        mistakes = [(rows_first, _rows_first(dim, h, w)), (interleaved, _interleaved(dim, h, w))]
        hint = likely_mistake(table, mistakes, general, BOUND)
        worst = max(worst, agree(f"case '{what}'", table, reference_sincos_2d(dim, h, w), BOUND, hint=hint))
    return f"{len(cases)} grids, max error {worst:.0e} <= {BOUND:g}"


def check_sincos_2d(fn):
    """Test fn(dim, h, w) -> (h*w, dim) against refimpl.sincos_2d."""
    return check("sincos_2d", fn, sincos_2d, _test_sincos_2d)


# ---------------------------------------------------------------- cubic_weights


def cubic_weights(size_in, size_out):
    """One axis of a bicubic resize (align_corners=False, torch's kernel A = -0.75) as a matrix
    (size_out, size_in): resized = weights @ samples.

    Output j reads the input at x = (j + 0.5) * size_in / size_out - 0.5, from the samples
    i = floor(x) - 1 .. floor(x) + 2 (clamped to 0 .. size_in - 1), with the cubic kernel at
    the distance d = |x - i|:

        k(d) = (A + 2) d^3 - (A + 3) d^2 + 1     for d <= 1
        k(d) = A d^3 - 5A d^2 + 8A d - 4A        for 1 < d < 2
    """
    a = -0.75
    x = (np.arange(size_out) + 0.5) * size_in / size_out - 0.5  # (size_out,) where each output reads
    first = np.floor(x).astype(int)  # (size_out,)
    weights = np.zeros((size_out, size_in))
    for j in range(size_out):
        for i in range(first[j] - 1, first[j] + 3):
            d = abs(x[j] - i)
            k = (a + 2) * d**3 - (a + 3) * d**2 + 1 if d <= 1 else a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
            weights[j, min(max(i, 0), size_in - 1)] += k  # a sample past the border is the border's
    return weights


def _corners_aligned(size_in, size_out):
    """The likely mistake: align_corners=True, x = j (size_in - 1) / (size_out - 1)."""
    x = np.arange(size_out) * ((size_in - 1) / max(size_out - 1, 1))
    first = np.floor(x).astype(int)
    t = x - first
    taps = np.stack([_kernel(t + 1), _kernel(t), _kernel(1 - t), _kernel(2 - t)], axis=-1)  # (size_out, 4)
    weights = np.zeros((size_out, size_in))
    index = np.clip(first[:, None] + np.arange(-1, 3), 0, size_in - 1)
    np.add.at(weights, (np.arange(size_out)[:, None], index), taps)
    return weights


def _kernel(d, a=-0.75):
    """The cubic convolution kernel at distances d (0 <= d < 2)."""
    near = (a + 2) * d**3 - (a + 3) * d**2 + 1
    far = a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
    return np.where(d <= 1, near, far)


def _resized(axis_weights, table, old_grid, new_grid):
    """A (h0*w0, D) table resized with the per-axis matrices axis_weights(size_in, size_out)."""
    (h0, w0), (h, w) = old_grid, new_grid
    image = table.reshape(h0, w0, -1)  # (h0, w0, D)
    rows, cols = np.asarray(axis_weights(h0, h), dtype=np.float64), np.asarray(axis_weights(w0, w), dtype=np.float64)
    if rows.shape != (h, h0) or cols.shape != (w, w0):
        raise AssertionError(
            f"cubic_weights must return (size_out, size_in): got {rows.shape} for ({h0} -> {h}), "
            f"{cols.shape} for ({w0} -> {w})"
        )
    return np.einsum("yi,xj,ijd->yxd", rows, cols, image).reshape(h * w, -1)  # (h*w, D)


def _test_cubic_weights(fn):
    # (old grid, new grid): up, down, unchanged, from one row, to a much larger grid
    cases = [((3, 3), (5, 5)), ((4, 6), (2, 3)), ((4, 4), (4, 4)), ((1, 3), (2, 7)), ((16, 16), (24, 20))]
    general = (
        "output j reads the input at x = (j + 0.5) * size_in / size_out - 0.5; weigh the samples floor(x) - 1 .. "
        "floor(x) + 2 by the cubic kernel at |x - i| (A = -0.75), a sample past the border counting as the border's"
    )
    corners = (
        "align_corners=False: output j reads x = (j + 0.5) * size_in / size_out - 0.5, "
        "not j (size_in - 1) / (size_out - 1)"
    )
    worst = 0.0
    for old_grid, new_grid in cases:
        what = f"{old_grid} -> {new_grid}"
        table = reference_sincos_2d(8, *old_grid)  # (h0*w0, 8)
        expected = resize_positions(table, old_grid, new_grid)  # refimpl, (h*w, 8)
        resized = call(what, general, _resized, fn, table, old_grid, new_grid)
        hint = likely_mistake(
            resized, [(corners, _resized(_corners_aligned, table, old_grid, new_grid))], general, BOUND
        )
        worst = max(worst, agree(f"case '{what}'", resized, expected, BOUND, hint=hint))
    return f"{len(cases)} resizes of a sin-cos table, max error {worst:.0e} <= {BOUND:g}"


def check_cubic_weights(fn):
    """Test fn(size_in, size_out) -> (size_out, size_in), applied along both axes of a position
    table, against refimpl.resize_positions (torch's bicubic, align_corners=False)."""
    return check("cubic_weights", fn, cubic_weights, _test_cubic_weights)
