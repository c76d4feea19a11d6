"""Exercises of notebook 6 (training a tiny resampler), with worked solutions.

    fourier_positions(grid, frequencies)    where each patch is, as Fourier features of its centre
    interpolate_time_embeds(table, frames)  a learned time-embedding table stretched to more frames

Each `check_<name>(fn)` runs `fn` on seeded inputs (grids that are not square, one row or
one column, tables shrunk and stretched, Flamingo's 8 -> 30 frames) and compares it with
refimpl: refimpl.tiny.model.positions and refimpl.interpolate_time_embeds.
"""

import numpy as np

from ..resampler import interpolate_time_embeds as reference_interpolate_time_embeds
from ..tiny.model import positions as reference_positions
from ..tolerances import TOLERANCES
from . import agree, call, check

# the same float64 arithmetic in another order: rounding only (about 1e-16; a 10% mistake
# is 1e11 times larger)
BOUND = TOLERANCES[("float64", "same math in another order")]


# ---------------------------------------------------------------- worked solutions


def fourier_positions(grid, frequencies):
    """Fourier features of the patch centres of an (h, w) grid: (S, 4 * frequencies), S = h*w.

    Patch (r, c) is row s = r * w + c. Its centre, as fractions of the image's height and
    width, is u = (r + 1/2) / h, v = (c + 1/2) / w, and its features are, for k = 0 .. K-1
    (K = frequencies), in this order:

        [sin(pi 2^k u) for k] + [cos(pi 2^k u) for k] + [sin(pi 2^k v) for k] + [cos(pi 2^k v) for k]
    """
    h, w = grid
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")  # (h, w) each: patch (r, c)
    u = ((rows + 0.5) / h).reshape(-1, 1)  # (S, 1), row-major like the patches
    v = ((cols + 0.5) / w).reshape(-1, 1)  # (S, 1)
    angles = np.pi * 2.0 ** np.arange(frequencies)  # (K,): pi, 2 pi, 4 pi, ...
    return np.concatenate(
        [np.sin(u * angles), np.cos(u * angles), np.sin(v * angles), np.cos(v * angles)], axis=-1
    )  # (S, 4K)


def interpolate_time_embeds(table, frames):
    """A learned time-embedding table (Tmax, D) stretched (or shrunk) to (frames, D), linearly.

    Row j of the result is read at position x_j = j * (Tmax - 1) / (frames - 1) of the old
    table (so the first and last rows are kept): with i = floor(x_j) (at most Tmax - 2) and
    a = x_j - i,

        out[j] = (1 - a) * table[i] + a * table[i + 1].
    """
    t_max = len(table)
    where = np.linspace(0.0, t_max - 1, frames)  # (frames,): x_j, from 0 to Tmax - 1
    below = np.minimum(np.floor(where).astype(int), t_max - 2)  # (frames,): i, so that i + 1 exists
    share = (where - below)[:, None]  # (frames, 1): a, the share of the next row
    return (1 - share) * table[below] + share * table[below + 1]  # (frames, D)


# ---------------------------------------------------------------- checks


def check_fourier_positions(fn):
    """Check a student's fourier_positions against refimpl.tiny.model.positions."""
    return check("fourier_positions", fn, fourier_positions, _test_fourier_positions)


def check_interpolate_time_embeds(fn):
    """Check a student's interpolate_time_embeds against refimpl.interpolate_time_embeds."""
    return check("interpolate_time_embeds", fn, interpolate_time_embeds, _test_interpolate_time_embeds)


def _test_fourier_positions(fn):
    cases = [((6, 9), 4), ((16, 10), 4), ((1, 5), 3), ((7, 1), 2), ((4, 4), 6)]  # (grid, frequencies)
    hint = (
        "u = (r + 0.5) / h and v = (c + 0.5) / w for patch (r, c), rows in row-major order (r * w + c); "
        "angles pi * 2**k for k < frequencies; columns sin(u), cos(u), sin(v), cos(v), each block over k"
    )
    errors = []
    for grid, frequencies in cases:
        what = f"grid {grid}, frequencies {frequencies}"
        actual = call(what, hint, fn, grid, frequencies)
        errors.append(agree(f"case '{what}'", actual, reference_positions(grid, frequencies), BOUND, hint=hint))
    return f"{len(cases)} grids (non-square, one row, one column), max error {max(errors):.0e} <= {BOUND:g}"


def _test_interpolate_time_embeds(fn):
    rng = np.random.default_rng(60)
    cases = {  # what -> (table, frames)
        "table (4, 64) -> 8 frames (this notebook)": (rng.standard_normal((4, 64)), 8),
        "table (8, 12) -> 30 frames (Flamingo: trained on 8, run on 30)": (rng.standard_normal((8, 12)), 30),
        "table (5, 6) -> 5 frames (unchanged)": (rng.standard_normal((5, 6)), 5),
        "table (6, 3) -> 3 frames (shrunk)": (rng.standard_normal((6, 3)), 3),
        "table (2, 7) -> 9 frames (two rows)": (rng.standard_normal((2, 7)), 9),
    }
    hint = (
        "row j is read at x = j * (Tmax - 1) / (frames - 1) (np.linspace(0, Tmax - 1, frames)); "
        "mix rows floor(x) and floor(x) + 1 with weights 1 - a and a, a = x - floor(x), "
        "and keep floor(x) <= Tmax - 2 so the last row does not read past the table"
    )
    errors = []
    for what, (table, frames) in cases.items():
        actual = call(what, hint, fn, table, frames)
        errors.append(
            agree(f"case '{what}'", actual, reference_interpolate_time_embeds(table, frames), BOUND, hint=hint)
        )
    return f"{len(cases)} tables (stretched, kept, shrunk), max error {max(errors):.0e} <= {BOUND:g}"
