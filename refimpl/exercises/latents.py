"""Exercises of notebook 7, "What each latent attends to".

    patch_coverage(mask, patch)              the fraction of each patch that a mask covers, (..., S)
    attention_entropy(weights)               the entropy of each attention row, in nats
    object_mass_ratio(weights, coverage)     attention on covered tokens over their share of the image

Each `check_<name>(fn)` runs `fn` on seeded random inputs (non-square images, batched
weights, masked keys, one-hot and uniform rows, coverage to broadcast over heads and
latents) and compares it with `refimpl.tiny.diagnostics`. The functions without `check_` are
the worked solutions: `??ex.attention_entropy` shows one.
"""

import numpy as np

from ..scenes import make_scenes
from ..tiny import diagnostics
from ..tolerances import TOLERANCES
from . import agree, call, check

# the same float64 math in another order (sums over N terms); a 10% mistake is 1e11 times larger
BOUND = TOLERANCES[("float64", "same math in another order")]


# ---------------------------------------------------------------- worked solutions


def patch_coverage(mask, patch):
    """mask (..., height, width) bool, patch p -> (..., S): the fraction of each p x p patch's pixels that are True.

    S = h * w patches in row-major order, (h, w) = (height // p, width // p), so entry r * w + c
    is the mean of mask[..., r*p:(r+1)*p, c*p:(c+1)*p]: the order of the model's tokens.
    """
    *lead, height, width = mask.shape
    h, w = height // patch, width // patch
    blocks = mask.reshape(*lead, h, patch, w, patch)  # (..., h, p, w, p): pixel (r*p + i, c*p + j) at [r, i, c, j]
    covered = blocks.mean(axis=(-3, -1))  # (..., h, w): the mean over each patch's p x p pixels
    return covered.reshape(*lead, h * w)  # (..., S), row-major: patch (r, c) is token r * w + c


def attention_entropy(weights):
    """weights (..., N), rows summing to 1 -> (...,): the entropy of each row in nats.

    H(p) = -sum_n p_n log p_n,   with 0 log 0 = 0 (a masked key adds nothing)
    """
    safe = np.where(weights > 0, weights, 1.0)  # log(1) = 0 where p = 0, so 0 * log(0) never becomes nan
    return -(weights * np.log(safe)).sum(axis=-1)  # (...,)


def object_mass_ratio(weights, coverage):
    """weights (..., N) rows summing to 1, coverage (..., N) in [0, 1], broadcasting together -> (...,).

        ratio = (sum_n w_n c_n) / (mean_n c_n)

    The attention mass on the objects over the objects' share of the tokens: 1 is chance
    (what uniform attention gets), above 1 the row looks at the objects more than their size.
    """
    mass = (weights * coverage).sum(axis=-1)  # (...,) attention on the covered tokens, partial patches in part
    share = coverage.mean(axis=-1)  # (...,) the covered share of the tokens
    return mass / share  # (...,)


# ---------------------------------------------------------------- checks


def check_patch_coverage(fn):
    return check("patch_coverage", fn, patch_coverage, _test_patch_coverage)


def check_attention_entropy(fn):
    return check("attention_entropy", fn, attention_entropy, _test_attention_entropy)


def check_object_mass_ratio(fn):
    return check("object_mass_ratio", fn, object_mass_ratio, _test_object_mass_ratio)


def _softmax_rows(rng, shape, spread=3.0):
    scores = spread * rng.standard_normal(shape)
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _test_patch_coverage(fn):
    rng = np.random.default_rng(7)
    one_pixel = np.zeros((12, 20), bool)
    one_pixel[5, 13] = True  # patch (1, 3) of a 3 x 5 grid of 4 x 4 patches: token 1 * 5 + 3 = 8
    scenes = make_scenes(2, 32, 48, seed=3)
    cases = {  # what -> (mask, patch)
        "mask (12, 20), patch 4: one pixel set, in patch (row 1, column 3)": (one_pixel, 4),
        "random mask (24, 40), patch 8": (rng.random((24, 40)) < 0.3, 8),
        "batched masks (3, 16, 56), patch 8 (a 2 x 7 grid)": (rng.random((3, 16, 56)) < 0.5, 8),
        "clips (2, 3, 12, 18), patch 6": (rng.random((2, 3, 12, 18)) < 0.4, 6),
        "patch 1: every pixel its own patch, (5, 7)": (rng.random((5, 7)) < 0.5, 1),
        "the coloured shapes of two scenes (2, 32, 48), patch 8": (
            (scenes.segmentation >= 0) & (scenes.segmentation < 4),
            8,
        ),
    }
    hint = (
        "reshape to (..., h, p, w, p), average over the two p axes (-3 and -1), then flatten (h, w) "
        "row by row to S = h * w; a patch at (row r, column c) is token r * w + c"
    )
    errors = []
    for what, (mask, patch) in cases.items():
        actual = call(what, hint, fn, mask, patch)
        errors.append(
            agree(f"case '{what}'", actual, diagnostics.patch_coverage(mask, patch), BOUND, hint=hint, scale=1.0)
        )
    return f"{len(cases)} cases, max error {max(errors):.0e} <= {BOUND:g}"


def _test_attention_entropy(fn):
    rng = np.random.default_rng(8)
    masked = _softmax_rows(rng, (4, 6, 30))
    masked[..., 20:] = 0.0  # 10 masked keys per row: weight exactly 0 ...
    masked /= masked.sum(axis=-1, keepdims=True)  # ... the rest renormalised
    one_hot = np.zeros((5, 9))
    one_hot[np.arange(5), rng.permutation(9)[:5]] = 1.0
    cases = {
        "softmax rows (2, 4, 16, 50): (B, H, R, N)": _softmax_rows(rng, (2, 4, 16, 50)),
        "uniform rows (3, 192): entropy log 192": np.full((3, 192), 1 / 192),
        "one-hot rows (5, 9): entropy 0": one_hot,
        "rows (4, 6, 30) with 10 keys of weight exactly 0": masked,
        "peaked rows (3, 40), the smallest weights near 1e-130": _softmax_rows(rng, (3, 40), spread=50.0),
    }
    hint = (
        "H = -sum_n p_n log p_n over the last axis, in nats (np.log); where p_n = 0 the term is 0 "
        "(its limit), but 0 * log(0) is 0 * -inf = nan in NumPy: take the log of np.where(p > 0, p, 1)"
    )
    errors = []
    for what, weights in cases.items():
        actual = call(what, hint, fn, weights)
        # an entropy lies in [0, log N]: measure the error against log N
        errors.append(
            agree(
                f"case '{what}'",
                actual,
                diagnostics.attention_entropy(weights),
                BOUND,
                hint=hint,
                scale=np.log(weights.shape[-1]),
            )
        )
    return f"{len(cases)} cases, max error {max(errors):.0e} <= {BOUND:g} (relative to log N)"


def _test_object_mass_ratio(fn):
    rng = np.random.default_rng(9)
    covered = rng.random(24) < 0.25  # (N,) whole tokens covered or not
    covered[:2] = True
    on_objects = np.where(covered, rng.random((5, 24)), 0.0)  # (R, N) all the weight on covered tokens
    on_objects /= on_objects.sum(axis=-1, keepdims=True)
    scenes = make_scenes(3, 32, 40, seed=4)
    objects = diagnostics.patch_coverage((scenes.segmentation >= 0) & (scenes.segmentation < 4), 8)  # (B, S)
    cases = {  # what -> (weights, coverage)
        "uniform weights (6, 20): ratio 1": (np.full((6, 20), 1 / 20), rng.random(20)),
        "weights (2, 4, 16, 20) (B, H, R, N), coverage (2, 1, 1, 20) broadcast over heads and latents": (
            _softmax_rows(rng, (2, 4, 16, 20)),
            rng.random((2, 1, 1, 20)),
        ),
        "all the weight on covered tokens (5, 24): ratio up to N / covered": (on_objects, covered.astype(float)),
        "scenes' object coverage (3, 1, 1, 20), weights (3, 2, 7, 20)": (
            _softmax_rows(rng, (3, 2, 7, 20)),
            objects[:, None, None],
        ),
    }
    hint = (
        "ratio = sum_n w_n c_n / mean_n c_n, both over the last axis (N); multiply before summing so "
        "the coverage broadcasts over heads and latents, and divide by the share, not the count"
    )
    errors = []
    for what, (weights, coverage) in cases.items():
        actual = call(what, hint, fn, weights, coverage)
        errors.append(agree(f"case '{what}'", actual, diagnostics.mass_ratio(weights, coverage), BOUND, hint=hint))
    return f"{len(cases)} cases, max error {max(errors):.0e} <= {BOUND:g}"
