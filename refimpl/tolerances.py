"""How close is close enough: one table of tolerances, used by the tests and the notebooks.

All comparisons use one error measure, the norm-relative error

    relative_error(actual, reference) = max |actual - reference| / max |reference|

which, unlike an elementwise relative error, does not blow up where a reference entry
happens to be near zero. Each entry bounds that error for one comparison.
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
}


def relative_error(actual, reference):
    """max |actual - reference| / max |reference|, in float64; shapes must match exactly."""
    actual, reference = np.asarray(actual, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if actual.shape != reference.shape:
        raise ValueError(f"actual must have the reference's shape {reference.shape}; got {actual.shape}")
    scale = np.abs(reference).max(initial=0.0)
    diff = np.abs(actual - reference).max(initial=0.0)
    return diff / scale if scale > 0 else diff
