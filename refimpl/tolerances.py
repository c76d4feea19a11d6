"""How close is close enough: one table of tolerances, used by the tests and the notebooks.

All comparisons use one error measure, the norm-relative error

    relative_error(actual, reference) = max |actual - reference| / max |reference|

which, unlike an elementwise relative error, does not blow up where a reference entry
happens to be near zero. Each entry bounds that error for one comparison.

For attention itself the scale is the values', max |v|: each output row is a weighted
mean of the rows of v, so its rounding error is a fraction of max |v|, however much the
mean cancels. (A mean of 500 values of size 1 that comes out at 4e-6 is still only
accurate to about 1e-16 * 1, not 1e-16 * 4e-6.) Pass `scale=np.abs(v).max()` there.
"""

import numpy as np

TOLERANCES = {
    # the same float64 math in another order (Numba's blocked online softmax, BLAS sums)
    ("float64", "numba vs numpy"): 1e-12,
    # float32 arithmetic (dtype=np.float32) against the float64 reference; the float32
    # unit roundoff is 6e-8, amplified by the softmax and six layers of sums of width D
    ("float32", "vs float64 reference"): 1e-4,
    # both backends in float32: each differs from float64 by rounding in its own order
    ("float32", "numba vs numpy"): 1e-5,
    # refimpl.torch in float64 on the CPU against the NumPy reference
    ("float64", "torch vs numpy"): 1e-12,
    # refimpl.torch on a GPU (TF32 off) against the float64 reference
    ("float32", "torch GPU vs float64 reference"): 1e-4,
    # bfloat16 keeps 8 significant bits: unit roundoff 4e-3, amplified through the layers
    ("bfloat16", "torch GPU vs float64 reference"): 2e-2,
    # its attention weights in bfloat16: a weight is exp(score - max) / sum, and a score s
    # carries an absolute error of about |s| * 4e-3, which becomes that relative error in the
    # weight; with q/k LayerNorms (IDEFICS) scores reach about sqrt(Dh) = 8 (2.2e-2 measured, H100)
    ("bfloat16", "torch GPU attention weights vs float64 reference"): 5e-2,
    # another float64 implementation of the same math vs refimpl: a peer's torch module
    # (refimpl.interop: open_flamingo, flamingo-pytorch, IDEFICS, Idefics2 with its norms
    # patched to float64), or torch's multi-head attention, whose output projection can
    # cancel to well below the size of the terms it sums
    ("float64", "another implementation vs refimpl"): 1e-10,
    # Idefics2's module in float64, whose RMSNorm computes in float32 whatever the dtype,
    # vs refimpl: torch and NumPy sum the float32 mean of squares in different orders, so
    # the float32 roundings differ (about 2e-7 measured, norm_dtype "float32" or None alike)
    ("float64", "Idefics2 module (float32 RMSNorm) vs refimpl"): 1e-6,
    # a float64 module that builds its 2-D sin-cos positions in float32 whatever its dtype
    # (MiniCPM-V's table; Qwen-VL's bicubic resize of its table), vs refimpl's float64
    # positions: the keys carry float32 rounding, small configs (D = 16, grids up to 5 x 5;
    # at most 1.6e-7 measured, Qwen-VL resizing a 3 x 3 table to 5 x 5)
    ("float64", "module with float32 sin-cos positions vs refimpl"): 1e-6,
    # a peer's torch module in float32 vs the float64 reference on the same (float32)
    # weights and inputs, small configs (depth 2, D = 12)
    ("float32", "peer module vs float64 reference"): 1e-5,
    # refimpl.grad's gradients, as directional derivatives along random directions u (one per
    # input), vs central finite differences in float64 at steps 1e-6 and 5e-7, Richardson-
    # extrapolated, relative to the size of the terms they sum (scale = sum |gradient * u|):
    # their truncation (step^4) and rounding (1e-16 / step) errors are about 1e-10 of that
    # (at most 6e-8 measured); a kink (relu's) is kept out of their reach, and so are norms
    # over 1 or 2 entries (their output hardly depends on their input, and is too steep)
    ("float64", "gradient vs central finite differences"): 1e-6,
    # refimpl.grad's gradients vs torch's autograd through refimpl.torch in float64, each
    # gradient norm-relative to its own size (or to 1% of the largest, for one that is 0 in
    # exact arithmetic and rounding noise on both sides): the same math in another order,
    # through a backward pass that sums over batch entries, tokens and layers
    ("float64", "gradient vs torch autograd"): 1e-10,
}


def relative_error(actual, reference, scale=None):
    """max |actual - reference| / scale, in float64, with scale = max |reference| by default.

    Shapes must match exactly. A zero scale gives the absolute error.
    """
    actual, reference = np.asarray(actual, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if actual.shape != reference.shape:
        raise ValueError(f"actual must have the reference's shape {reference.shape}; got {actual.shape}")
    scale = np.abs(reference).max(initial=0.0) if scale is None else float(scale)
    diff = np.abs(actual - reference).max(initial=0.0)
    return diff / scale if scale > 0 else diff
