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


def float_array(name, value, dtype, layout=None):
    """`value` as a finite ndarray of `dtype`; any real floating input dtype is accepted and cast.

    Raises TypeError for integer, boolean, complex or object input, ValueError for a ragged
    nested sequence (`layout`, e.g. "(..., T, S, D)", says what shape was expected) and
    ValueError for NaN or inf (also where a finite value overflows `dtype` when cast).
    """
    array = as_array(name, value, layout)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(
            f"{name} must be a real floating-point array (float16, float32 or float64); got dtype {array.dtype}"
        )
    with np.errstate(over="ignore"):  # an overflow to inf is reported just below
        cast = array.astype(dtype, copy=False)
    if cast.size and not _all_finite(cast):
        bad = int(cast.size - np.count_nonzero(np.isfinite(cast)))
        made_by_cast = cast is not array and _all_finite(array)  # finite before, inf after
        raise ValueError(
            f"{name} must be finite; got {bad} NaN or inf value(s)"
            + (
                f" (after casting to {np.dtype(dtype)}: max |{name}| = {np.abs(array).max():.3g})"
                if made_by_cast
                else ""
            )
        )
    return cast


def _all_finite(array):
    """min and max propagate NaN and reach any inf, without allocating an array of flags."""
    return bool(np.isfinite(array.min()) and np.isfinite(array.max()))


def as_array(name, value, layout=None):
    """np.asarray(value), or a ValueError naming `name` for a ragged nested sequence (rows of
    different lengths), which NumPy cannot make an array of numbers from."""
    try:
        return np.asarray(value)
    except ValueError as exc:
        shape = f" of shape {layout}" if layout else ""
        raise ValueError(f"{name} must be an array{shape}; got a ragged nested sequence ({exc})") from None


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
        raise ValueError(f"{name} must be broadcastable to {layout} = {tuple(shape)}; got {array.shape}")


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


def axis_index(name, axis, ndim):
    """`axis` as an index in range(ndim) (negative counts from the end); TypeError for a
    non-int, ValueError out of range."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {type(axis).__name__} {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name} must be in [-{ndim}, {ndim}) for an array of {ndim} dimension(s); got {axis}")
    return int(axis) % ndim


def check_fits(subject, found, expected):
    """Raise ValueError `subject` plus a list of every name of `expected` (name -> shape)
    missing from `found` (name -> shape), every name of `found` not expected, and every
    shape that differs, in the dicts' order; return quietly if everything fits."""
    missing = [name for name in expected if name not in found]
    unexpected = [name for name in found if name not in expected]
    misshaped = [
        f"{name}: expected {shape}, got {found[name]}"
        for name, shape in expected.items()
        if name in found and found[name] != shape
    ]
    problems = [
        f"{label}: {separator.join(items)}"
        for label, items, separator in (
            ("missing", missing, ", "),
            ("unexpected", unexpected, ", "),
            ("mis-shaped", misshaped, "; "),
        )
        if items
    ]
    if problems:
        raise ValueError(f"{subject}:\n  " + "\n  ".join(problems))


# ---- the resampler's input: shared by refimpl.perceiver_resampler and refimpl.torch


def resampler_input(x_shape, mask_shape, config):
    """Check the shapes of x (..., [I,] T, S, D) and of its mask (..., [I,] T, S) (None for
    no mask) against `config`: the width, the time- and media-embedding tables' rows."""
    x_shape = tuple(x_shape)
    if len(x_shape) < 3 or x_shape[-1] != config.media_width:
        width = "D = config.dim" if config.media_dim is None else "D = config.media_dim"
        raise ValueError(f"x must have shape (..., T, S, D) with {width} = {config.media_width}; got {x_shape}")
    n_frames = x_shape[-3]
    if config.num_time_embeds is not None and n_frames > config.num_time_embeds:
        raise ValueError(
            f"x has T = {n_frames} frames (shape {x_shape}) but config.num_time_embeds = "
            f"{config.num_time_embeds}; the time-embedding table has no row for frame {config.num_time_embeds}"
        )
    if config.num_media_embeds is not None:
        if len(x_shape) < 4:
            raise ValueError(f"x must have shape (..., I, T, S, D) with config.num_media_embeds set; got {x_shape}")
        if x_shape[-4] > config.num_media_embeds:
            raise ValueError(
                f"x has I = {x_shape[-4]} media items (shape {x_shape}) but config.num_media_embeds = "
                f"{config.num_media_embeds}; the media-embedding table has no row for item {config.num_media_embeds}"
            )
    if mask_shape is not None and tuple(mask_shape) != x_shape[:-1]:
        raise ValueError(f"mask must have shape (..., T, S) = x.shape[:-1] = {x_shape[:-1]}; got {tuple(mask_shape)}")


def resampler_items_have_tokens(x_shape, empty):
    """Without the latents among the keys (config.latents_in_kv False), every batch item
    needs a real media token. empty: bool ndarray (...), True where an item's mask marks
    none, or None for no mask."""
    if x_shape[-3] * x_shape[-2] == 0:
        raise ValueError(
            f"x has no media tokens (T * S = 0, shape {tuple(x_shape)}) and config.latents_in_kv is False: "
            "the latents would have nothing to attend to"
        )
    if empty is not None and empty.any():
        first = tuple(int(i) for i in np.argwhere(empty)[0])
        raise ValueError(
            f"mask marks no real token in {int(empty.sum())} batch item(s) (the first at index {first}) "
            "and config.latents_in_kv is False: the latents would have nothing to attend to"
        )


def fits_dtype(name, array, dtype, why):
    """Raise ValueError where a (finite) `array` has values beyond the range of `dtype`;
    `why` says why it must fit."""
    limit = float(np.finfo(dtype).max)
    largest = max(float(array.max(initial=0.0)), -float(array.min(initial=0.0)))  # no |array| temporary
    if largest > limit:
        raise ValueError(f"{name} must fit {np.dtype(dtype)} ({why}); got max |{name}| = {largest:.3g} > {limit:.3g}")
