"""Checks for the course's exercises: a student's function against refimpl.

Each notebook has a module here (`refimpl.exercises.attention` for notebook 1, ...) holding,
for every exercise, the worked solution and a check:

    from refimpl.exercises import attention as ex

    def stable_softmax(scores):          # the student's version, a stub at first
        raise NotImplementedError
    ex.check_stable_softmax(stable_softmax)

A check runs the function on seeded random inputs (non-square shapes, so a transpose cannot
hide) and edge cases, compares with refimpl under a stated bound and prints one line. A wrong
answer raises AssertionError saying what differed. A stub that raises NotImplementedError is
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


def agree(what, actual, expected, bound, scale=None):
    """Assert relative_error(actual, expected, scale) <= bound with a message naming `what`; return the error."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    assert np.isfinite(actual).all(), f"{what}: contains NaN or inf"
    error = relative_error(actual, expected, scale)
    assert error <= bound, f"{what}: relative error {error:.2g} > {bound:g}"
    return error
