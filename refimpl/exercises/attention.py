"""Exercises of notebook 1, "Attention from scratch in NumPy".

    stable_softmax(scores)          a softmax over the last axis that cannot overflow
    masked_softmax(scores, mask)    the same, with keys masked out (True = may attend)
    attention(q, k, v, mask=None)   scaled dot-product attention, assembled from the two

Each `check_<name>(fn)` runs `fn` on seeded random inputs (non-square, batched, huge
scores, masked keys) and compares it with `refimpl.softmax` / `refimpl.attention`. The
functions without `check_` are the worked solutions: `??ex.stable_softmax` shows one.
"""

import numpy as np

from ..attention import attention as reference_attention
from ..attention import softmax as reference_softmax
from ..tolerances import TOLERANCES
from . import agree, call, check, likely_mistake

# the same float64 math as refimpl in another order (about 1e-16 is typical; a 10% mistake
# is 1e11 times larger)
BOUND = TOLERANCES[("float64", "same math in another order")]


# ---------------------------------------------------------------- worked solutions


def stable_softmax(scores):
    """scores (..., N) -> softmax over the last axis; subtract the row max first so exp never overflows.

    softmax(s)_j = exp(s_j - m) / sum_k exp(s_k - m),   m = max_k s_k
    """
    row_max = scores.max(axis=-1, keepdims=True)  # (..., 1)
    e = np.exp(scores - row_max)  # (..., N), every exponent <= 0: exp is at most 1, never inf
    return e / e.sum(axis=-1, keepdims=True)  # (..., N); the max contributes exp(0) = 1, so no 0 / 0


def masked_softmax(scores, mask):
    """scores (..., N), mask bool broadcastable to scores (True = may attend) -> weights (..., N).

    Masked entries get weight exactly 0; each row sums to 1 over its allowed entries.
    Every row must allow at least one entry.
    """
    scores = np.where(mask, scores, -np.inf)  # (..., N): exp(-inf) = 0, and -inf is never a row's max
    return stable_softmax(scores)  # (..., N)


def attention(q, k, v, mask=None):
    """Scaled dot-product attention: out = softmax(q k^T / sqrt(Dh), masked) v.

    q: (..., M, Dh)   k: (..., N, Dh)   v: (..., N, Dv)   mask: bool, broadcastable to (..., M, N)
    returns (..., M, Dv)
    """
    dh = q.shape[-1]
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(dh)  # (..., M, N); k.T would reverse the batch axes too
    if mask is None:
        weights = stable_softmax(scores)  # (..., M, N)
    else:
        weights = masked_softmax(scores, mask)  # (..., M, N), masked keys exactly 0
    return weights @ v  # (..., M, Dv): each output row is a weighted mean of the rows of v


# ---------------------------------------------------------------- checks


def check_stable_softmax(fn):
    return check("stable_softmax", fn, stable_softmax, _test_stable_softmax)


def check_masked_softmax(fn):
    return check("masked_softmax", fn, masked_softmax, _test_masked_softmax)


def check_attention(fn):
    return check("attention", fn, attention, _test_attention)


def _rows_allowed(rng, shape, p=0.6):
    """A random boolean mask of `shape` with at least one True in every row (last axis)."""
    mask = rng.random(shape) < p
    mask[..., 0] |= ~mask.any(axis=-1)  # a row with nothing allowed gets its first key back
    return mask


def _test_stable_softmax(fn):
    rng = np.random.default_rng(1)
    cases = {
        "scores (5, 7)": rng.standard_normal((5, 7)),
        "batched scores (2, 3, 4, 9), softmax over the last axis": 3 * rng.standard_normal((2, 3, 4, 9)),
        "one key per row, (6, 1)": rng.standard_normal((6, 1)),
        "huge scores (3, 11), entries up to about 3e4": 1e4 * rng.standard_normal((3, 11)),
        "very negative scores (4, 6), all near -1e4": -1e4 + rng.standard_normal((4, 6)),
    }
    hint = (
        "softmax runs over the last axis (keepdims=True keeps the row axis for broadcasting), "
        "and exp(1000) is inf, exp(-1000) is 0: subtract each row's max before exp"
    )
    errors = [
        agree(f"case '{what}'", call(what, hint, fn, s), reference_softmax(s), BOUND, hint=hint)
        for what, s in cases.items()
    ]
    return f"{len(cases)} cases, max error {max(errors):.0e} <= {BOUND:g}"


def _test_masked_softmax(fn):
    rng = np.random.default_rng(2)
    huge = rng.standard_normal((4, 9))
    huge[:, 3] = 1e4  # a masked key with by far the largest score: it must not be the max that is subtracted
    key_mask = np.ones(9, dtype=bool)
    key_mask[3] = False
    padding = np.arange(10) < np.array([10, 6, 3])[:, None, None]  # (3, 1, 10): 10, 6 and 3 real keys
    single = np.zeros((5, 8), dtype=bool)
    single[np.arange(5), rng.permutation(8)[:5]] = True  # one allowed key per row: its weight is 1
    cases = {
        "scores (5, 7), a random mask (5, 7)": (rng.standard_normal((5, 7)), _rows_allowed(rng, (5, 7))),
        "batched scores (3, 4, 10), key padding mask (3, 1, 10)": (2 * rng.standard_normal((3, 4, 10)), padding),
        "scores (4, 9), masked key 3 has score 1e4, mask (9,)": (huge, key_mask),
        "scores (5, 8), one allowed key per row": (rng.standard_normal((5, 8)), single),
    }
    hint = (
        "set the masked scores to -inf before the softmax (np.where(mask, scores, -np.inf)), so they "
        "get weight exactly 0, the row max is taken over allowed keys only, and rows still sum to 1"
    )
    inverted = "the mask is inverted: True means may attend, so the scores where the mask is False get -inf"
    errors = []
    for what, (scores, mask) in cases.items():
        actual = call(what, hint, fn, scores, mask)
        expected = reference_softmax(scores, mask=mask)
        mistakes = [(inverted, reference_softmax(scores, mask=~mask))] if (~mask).any(axis=-1).all() else []
        errors.append(
            agree(f"case '{what}'", actual, expected, BOUND, hint=likely_mistake(actual, mistakes, hint, BOUND))
        )
        masked = np.abs(np.asarray(actual)[~np.broadcast_to(mask, expected.shape)])
        assert not masked.any(), (
            f"case '{what}': masked weights must be exactly 0; got up to {masked.max():.1e}. {hint}"
        )
    return f"{len(cases)} cases, max error {max(errors):.0e} <= {BOUND:g}, masked weights exactly 0"


def _test_attention(fn):
    normal = np.random.default_rng(3).standard_normal
    masked_k = normal((9, 8))
    masked_k[2] = 2e3  # key 2 matches every query below (entries near 2) with a score of about 1e4 ...
    cases = {  # what -> (q, k, v, mask)
        "q (5, 16), k (7, 16), v (7, 3)": (normal((5, 16)), normal((7, 16)), normal((7, 3)), None),
        "batched q (2, 3, 4, 8), k (2, 3, 9, 8), v (2, 3, 9, 5), padding mask (2, 1, 1, 9)": (
            normal((2, 3, 4, 8)),
            normal((2, 3, 9, 8)),
            normal((2, 3, 9, 5)),
            np.arange(9) < np.array([9, 5])[:, None, None, None],  # 9 and 5 real keys
        ),
        "large scores: q (4, 8), k (11, 8) with entries of size 30, v (11, 6)": (
            30 * normal((4, 8)),
            30 * normal((11, 8)),  # scores up to about 3e3
            normal((11, 6)),
            None,
        ),
        "q (4, 8), k (9, 8), v (9, 2), masked key 2 has scores near 1e4, mask (9,)": (
            2 + normal((4, 8)),
            masked_k,
            normal((9, 2)),
            np.arange(9) != 2,  # ... and is masked out
        ),
    }
    hint = (
        "scores = q @ swapaxes(k, -1, -2) / sqrt(Dh) with Dh = q.shape[-1]; a stable, masked softmax "
        "over the keys (the last axis; mask True = may attend); then weights @ v"
    )
    errors = []
    for what, (q, k, v, mask) in cases.items():
        actual = call(what, hint, fn, q, k, v) if mask is None else call(what, hint, fn, q, k, v, mask)
        expected = reference_attention(q, k, v, mask=mask)
        # each output row is a weighted mean of the rows of v: measure the error against max |v|
        scale = np.abs(v).max()
        mistakes = [
            ("divide the scores by sqrt(Dh), Dh = q.shape[-1]", reference_attention(q, k, v, mask=mask, scale=1.0))
        ]
        if mask is not None and np.broadcast_to(~mask, expected.shape[:-1] + (k.shape[-2],)).any(axis=-1).all():
            mistakes.append(("the mask is inverted: True means may attend", reference_attention(q, k, v, mask=~mask)))
        errors.append(
            agree(
                f"case '{what}'",
                actual,
                expected,
                BOUND,
                hint=likely_mistake(actual, mistakes, hint, BOUND, scale),
                scale=scale,
            )
        )
    return f"{len(cases)} cases, max error {max(errors):.0e} <= {BOUND:g} (relative to max |v|)"
