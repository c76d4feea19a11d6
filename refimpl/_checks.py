"""Argument checks shared by every public function.

Every public entry point checks its arguments once, here, and the private
helpers behind it trust them. A message names the argument, what was expected
and what came, e.g.::

    x must have shape (..., T, S, D) with D = config.dim = 64; got (2, 7, 48)
"""

import numbers

import numpy as np

COMPUTE_DTYPES = (np.float32, np.float64)


def compute_dtype(dtype):
    """The arithmetic dtype: float64 (the reference) or float32 (to emulate float32 arithmetic)."""
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64; got {dtype!r}") from None
    if resolved.type not in COMPUTE_DTYPES:
        raise ValueError(f"dtype must be float32 or float64; got {resolved}")
    return resolved.type


def float_array(name, value, dtype):
    """`value` as a finite ndarray of `dtype`; any real floating input dtype is accepted and cast.

    Raises TypeError for integer, boolean, complex or object input and ValueError for NaN or
    inf (also where a value overflows `dtype` when cast).
    """
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(
            f"{name} must be a real floating-point array (float16, float32 or float64); "
            f"got dtype {array.dtype}"
        )
    with np.errstate(over="ignore"):  # an overflow to inf is reported just below
        array = array.astype(dtype, copy=False)
    # min and max propagate NaN and reach any inf, without allocating an array of flags
    if array.size and not (np.isfinite(array.min()) and np.isfinite(array.max())):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise ValueError(
            f"{name} must be finite; got {bad} NaN or inf value(s)"
            + (f" (after casting to {np.dtype(dtype)})" if array.dtype != np.asarray(value).dtype else "")
        )
    return array


def bool_array(name, value, meaning):
    """`value` as a boolean ndarray; `meaning` says what True means, for the message."""
    array = np.asarray(value)
    if array.dtype != np.bool_:
        raise TypeError(f"{name} must be a boolean array ({meaning}); got dtype {array.dtype}")
    return array


def ndim_at_least(name, array, ndim, layout):
    if array.ndim < ndim:
        raise ValueError(f"{name} must have shape {layout}; got {array.shape}")


def has_shape(name, array, shape, layout):
    """Check that `array` has exactly `shape`; `layout` names its axes (no broadcasting)."""
    if array.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {layout} = {tuple(shape)}; got {array.shape}")


def broadcasts_to(name, array, shape, layout):
    """Check that `array` broadcasts to `shape` without changing it (no silent growth)."""
    try:
        grown = np.broadcast_shapes(array.shape, shape)
    except ValueError:
        grown = None
    if grown != tuple(shape):
        raise ValueError(
            f"{name} must be broadcastable to {layout} = {tuple(shape)}; got {array.shape}"
        )


def positive_number(name, value):
    """A positive finite real number (TypeError for a non-number, ValueError for a bad one)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number; got {type(value).__name__} {value!r}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number; got {value!r}")
    return value


def positive_int(name, value):
    """An int >= 1 (TypeError for a non-int, bools included; ValueError below 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1; got {value}")
    return int(value)


def one_of(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_fits(subject, found, expected):
    """Raise ValueError `subject` plus a list of every name of `expected` (name -> shape)
    missing from `found` (name -> shape), every name of `found` not expected, and every
    shape that differs, in the dicts' order; return quietly if everything fits."""
    missing = [name for name in expected if name not in found]
    unexpected = [name for name in found if name not in expected]
    misshaped = [f"{name}: expected {shape}, got {found[name]}" for name, shape in expected.items() if name in found and found[name] != shape]
    problems = [
        f"{label}: {separator.join(items)}"
        for label, items, separator in (("missing", missing, ", "), ("unexpected", unexpected, ", "), ("mis-shaped", misshaped, "; "))
        if items
    ]
    if problems:
        raise ValueError(f"{subject}:\n  " + "\n  ".join(problems))
