"""Checks for the course's exercises: a student's function against refimpl.

Each notebook has a module here (`refimpl.exercises.attention` for notebook 1, ...) holding,
for every exercise, the worked solution and a check:

    from refimpl.exercises import attention as ex

    def stable_softmax(scores):          # the student's version, a stub at first
        raise NotImplementedError
    ex.check_stable_softmax(stable_softmax)

A check runs the function on seeded random inputs (non-square shapes, so a transpose cannot
hide) and edge cases, through `call` (an exception in the student's code is reported with
the case that raised it), compares with refimpl under a stated bound and prints one line. A
wrong answer raises AssertionError saying which case differed and how, with a hint; where the
answer is what a likely mistake computes (an inverted mask, a missing scale, the wrong key/value
head for a query head), `likely_mistake` makes the hint name that mistake. A stub that raises NotImplementedError is
reported, and the worked solution is checked in its place, so every notebook runs top to
bottom as it ships, in CI too. The solution is `ex.<name>`: `??ex.stable_softmax` shows it.
"""

import numpy as np

from ..tolerances import relative_error


def check(name, student, solution, test):
    """Run `test(student)`; if the student's function is still a stub, `test(solution)` instead.

    test: fn -> a short description of what agreed (e.g. "6 cases, max error 2e-16 <= 1e-12"),
    raising AssertionError on a disagreement.
    """
    try:
        verdict = test(student)
    except NotImplementedError:
        print(f"{name}: not written yet; checking the worked solution instead (see ??ex.{solution.__name__})")
        verdict = test(solution)
        print(f"{name} (worked solution): {verdict}")
        return
    print(f"{name}: correct, {verdict}")


def agree(what, actual, expected, bound, scale=None, hint=None):
    """Assert relative_error(actual, expected, scale) <= bound with a message naming `what`
    (and ending with `hint`, a pointer for the student, if given); return the error."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    tail = f". {hint}" if hint else ""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}{tail}"
    assert np.isfinite(actual).all(), f"{what}: contains NaN or inf{tail}"
    error = relative_error(actual, expected, scale)
    assert error <= bound, f"{what}: relative error {error:.2g} > {bound:g}{tail}"
    return error


def likely_mistake(actual, mistakes, general, bound, scale=None):
    """The hint for an answer: that of the first likely mistake whose result `actual` equals
    (relative error <= bound), else `general`.

    mistakes: [(hint, what that mistake computes), ...], e.g. ("True means may attend: ...",
    the reference run with the mask inverted). So a hint names a mistake only when the
    answer is that mistake's result, and otherwise says what the function must do.
    """
    try:
        actual = np.asarray(actual, dtype=np.float64)
    except (TypeError, ValueError):  # not an array of numbers: the comparison will say so
        return general
    for hint, result in mistakes:
        result = np.asarray(result, dtype=np.float64)
        if (
            actual.shape == result.shape
            and np.isfinite(actual).all()
            and relative_error(actual, result, scale) <= bound
        ):
            return hint
    return general


def call(what, hint, fn, *args, **kwargs):
    """A student's fn(*args, **kwargs), on copies of the array arguments (so an answer that
    writes into its inputs cannot spoil the reference), with floating-point warnings silenced
    (a naive answer's overflow or log(0) shows in the comparison instead). An exception other
    than the stub's NotImplementedError becomes an AssertionError naming the case, with `hint`."""
    args = [np.array(a) if isinstance(a, np.ndarray) else a for a in args]
    kwargs = {key: np.array(a) if isinstance(a, np.ndarray) else a for key, a in kwargs.items()}
    try:
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)
    except NotImplementedError:
        raise
    except Exception as exc:
        raise AssertionError(f"case '{what}': raised {type(exc).__name__}: {exc}. {hint}") from exc
