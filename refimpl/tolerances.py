"""How close is close enough: one table of tolerances, used by the tests and the notebooks.

All comparisons use one error measure, the norm-relative error

    relative_error(actual, reference) = max |actual - reference| / max |reference|

which, unlike an elementwise relative error, does not blow up where a reference entry
happens to be near zero. Each entry bounds that error for one comparison.

Two entries combine: float32 Numba vs NumPy attention is bounded by
TOLERANCES[("float32", "numba vs numpy")] + TOLERANCES[("float32", "numba vs numpy, per
unit of max |scores|")] * max |scores| (`float32_backends_bound`), as float32 scores carry
a rounding error in proportion to their size.

For attention itself the scale is the values', max |v|: each output row is a weighted
mean of the rows of v, so its rounding error is a fraction of max |v|, however much the
mean cancels. (A mean of 500 values of size 1 that comes out at 4e-6 is still only
accurate to about 1e-16 * 1, not 1e-16 * 4e-6.) Pass `scale=np.abs(v).max()` there.
"""

import numpy as np

TOLERANCES = {
    # float64 math computed in another order without Numba: a NumPy function (a student's,
    # a notebook's, another batching or grouping of the sums, a loop against a BLAS product)
    # against refimpl's NumPy path; about 1e-16 is typical, a real mistake is 1e10 times larger
    ("float64", "same math in another order"): 1e-12,
    # the same float64 math in another order (Numba's blocked online softmax, BLAS sums)
    ("float64", "numba vs numpy"): 1e-12,
    # float32 arithmetic (dtype=np.float32) against the float64 reference; the float32
    # unit roundoff is 6e-8, amplified by the softmax and six layers of sums of width D
    ("float32", "vs float64 reference"): 1e-4,
    # both backends in float32: each differs from float64 by rounding in its own order;
    # this holds while the scores are small (max |q k^T * scale| up to about 50), and the
    # next entry adds to it in proportion to the largest score
    ("float32", "numba vs numpy"): 1e-5,
    # ... plus this times max |scores| (max over i, j of |q_i . k_j * scale|), for larger scores:
    # each backend rounds a score s in float32 to within a few |s| * 2^-24, in its own order,
    # and an error d in the scores moves the output by up to 2 max|d| max|v|, so no kernel can
    # hold a fixed bound against float32 NumPy. About 4 * 2^-24: measured up to 1.2 * 2^-24
    # (Dh <= 64) and 1.8 * 2^-24 (Dh = 200) at N = 4096 (2e-4 at |scores| 1e4, Dh = 48)
    ("float32", "numba vs numpy, per unit of max |scores|"): 2.4e-7,
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
    # float16 keeps 11 significant bits: unit roundoff 2^-11 = 4.9e-4, 8 times finer than
    # bfloat16's, but its largest finite value is 65504 (refimpl.torch raises rather than
    # return an output that overflowed). Measured with torch on a CPU, which computes float16
    # too (D = 256, depth 2, H = 4, Dh = 64, R = 16, x (4, 2, 100, 256), 80% of tokens real):
    # 0.8e-3 (Flamingo), 1.1e-3 (IDEFICS, q/k LayerNorms), 1.5e-3 (Idefics2, RMSNorm in
    # float32); bfloat16 on the same runs 7.5e-3 to 1.2e-2. Small configs (D < 8) can exceed
    # it: a norm over a few entries amplifies the rounding (up to 8e-2 measured at D = 3)
    ("float16", "torch GPU vs float64 reference"): 5e-3,
    # its attention weights, as bfloat16's but with 8 times finer rounding of the scores:
    # 1.7e-3 (Flamingo), 2.5e-3 (IDEFICS), 2.0e-3 (Idefics2) measured on the same CPU runs
    ("float16", "torch GPU attention weights vs float64 reference"): 1e-2,
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


def float32_backends_bound(max_score):
    """The bound on relative_error between float32 Numba and NumPy attention (scale max |v|)
    whose scores q k^T * scale reach max_score in size:

        1e-5 + 2.4e-7 * max_score   (the two TOLERANCES entries for float32 "numba vs numpy")
    """
    return (
        TOLERANCES[("float32", "numba vs numpy")]
        + TOLERANCES[("float32", "numba vs numpy, per unit of max |scores|")] * max_score
    )


def relative_error(actual, reference, scale=None):
    """max |actual - reference| / scale, in float64, with scale = max |reference| by default.

    Shapes must match exactly. A zero scale gives the absolute error. Real arrays only
    (float, int or bool): a complex array raises TypeError rather than losing its imaginary part.
    """
    actual, reference = (_real_float64(name, value) for name, value in (("actual", actual), ("reference", reference)))
    if actual.shape != reference.shape:
        raise ValueError(f"actual must have the reference's shape {reference.shape}; got {actual.shape}")
    scale = np.abs(reference).max(initial=0.0) if scale is None else float(scale)
    diff = np.abs(actual - reference).max(initial=0.0)
    return diff / scale if scale > 0 else diff


def _real_float64(name, value):
    """`value` as a float64 array; TypeError for complex, object or other non-real input."""
    array = np.asarray(value)
    if not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_
    ):
        raise TypeError(f"{name} must be a real array (float, int or bool); got dtype {array.dtype}")
    return array.astype(np.float64, copy=False)
