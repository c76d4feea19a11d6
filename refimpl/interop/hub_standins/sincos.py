"""The 2-D sin-cos table as Qwen-VL's and MiniCPM-V's own code builds it (the MAE recipe), in
NumPy float32 as theirs does: written from the description, independently of
refimpl.sincos_2d, so that the tests compare two separate computations.

For a grid of h rows and w columns and a width D (divisible by 4): a token at row r, column c
gets [sin(c * omega), cos(c * omega), sin(r * omega), cos(r * omega)], each D/4 wide, with
omega_k = 10000 ** (-k / (D/4)), k = 0 .. D/4 - 1: the first half of the channels encode the
column, the second half the row. Rows of the (h*w, D) table are row-major over (r, c).
"""

import numpy as np


def _one_axis(dim, positions):
    """(..., dim) = [sin(p * omega), cos(p * omega)] for positions p (...)."""
    omega = np.arange(dim // 2, dtype=np.float32) / np.float32(dim / 2.0)
    omega = (1.0 / 10000**omega).astype(np.float32)  # (dim/2,)
    angles = positions[..., None] * omega  # (..., dim/2)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)


def sincos_table(dim, h, w):
    """(h, w, dim) float32: the table for an h x w grid (columns first in the channels)."""
    rows, columns = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")  # (h, w)
    return np.concatenate([_one_axis(dim // 2, columns), _one_axis(dim // 2, rows)], axis=-1).astype(np.float32)
