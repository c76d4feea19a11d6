"""What a resampler's attention does, measured: entropy, overlap, where the weight lands (NumPy).

Notebook 7 reads the tiny model's attention maps with these. A map is one latent's attention
row in one layer and head, (N [+ R],): N = T*S media tokens first, then the R latents when
they are among the keys (refimpl's layout). The functions take any leading axes, e.g. the
(B, H, R, N + R) weights that `tiny_model(..., return_attention=True)` returns per layer.

    patch_coverage(mask, patch)       (..., height, width) bool -> (..., S) fraction of each patch covered
    quadrant_coverage(grid)           (4, S) fraction of each patch in each quadrant of the image
    latent_mass(weights, R)           (...,) the weight on the last R keys (the latents)
    media_attention(weights, R)       (..., N) the first N weights, renormalised to sum 1
    attention_entropy(weights)        (...,) -sum p log p in nats; log N for uniform weights, 0 for one-hot
    attention_mass(weights, coverage) (...,) the share of the weight on covered tokens
    mass_ratio(weights, coverage)     (...,) that share over the covered share of the tokens; 1 = chance
    pairwise_jensen_shannon(maps)     (..., M, M) JS divergence in bits between every two maps; 0 = identical
    mean_off_diagonal(matrix)         (...,) the mean of a square matrix's off-diagonal entries

Every function renormalises its weights over the last axis where it needs a distribution,
so a slice of an attention row (its media part) can go in as it is. Axis letters: B batch,
T frames, S patches per frame on an (h, w) grid, N = T*S media tokens, R latents, H heads.
"""

import numpy as np

from .. import _checks

__all__ = [
    "attention_entropy",
    "attention_mass",
    "latent_mass",
    "mass_ratio",
    "mean_off_diagonal",
    "media_attention",
    "pairwise_jensen_shannon",
    "patch_coverage",
    "quadrant_coverage",
]


# ---------------------------------------------------------------- where things are


def patch_coverage(mask, patch):
    """The fraction of each patch's pixels where `mask` is True: (..., height, width) -> (..., S).

        coverage[..., r * w + c] = mean(mask[..., r*p:(r+1)*p, c*p:(c+1)*p]),   p = patch

    S = h * w patches in row-major order, (h, w) = (height // p, width // p): the order of
    refimpl.tiny.model.patchify, so coverage[..., s] belongs to media token s. E.g. the
    coloured shapes of refimpl.scenes: patch_coverage((seg >= 0) & (seg < 4), 8).
    """
    mask = _checks.bool_array("mask", mask, "True = covered pixel")
    patch = _checks.positive_int("patch", patch)
    _checks.ndim_at_least("mask", mask, 2, "(..., height, width)")
    *lead, height, width = mask.shape
    if height % patch or width % patch or height == 0 or width == 0:
        raise ValueError(
            f"mask must have shape (..., height, width) with height and width positive multiples of "
            f"patch = {patch}; got {mask.shape}"
        )
    h, w = height // patch, width // patch
    blocks = mask.reshape(*lead, h, patch, w, patch)  # (..., h, p, w, p)
    return blocks.mean(axis=(-3, -1)).reshape(*lead, h * w)  # (..., S)


def quadrant_coverage(grid):
    """The fraction of each patch inside each quadrant of the image: (4, S), S = h * w.

    Quadrants in the order of refimpl.scenes.QUADRANTS: top left, top right, bottom left,
    bottom right. Patch (r, c) spans rows [r, r + 1) and columns [c, c + 1) of an h x w grid;
    the image splits at h / 2 and w / 2, so on an odd side the middle patch is split half and
    half. Each column of the result sums to 1 and each quadrant covers a quarter of the image.
    """
    if len(grid) != 2:
        raise ValueError(f"grid must be (h, w), the patches along each side; got {grid!r}")
    h, w = (_checks.positive_int("grid", side) for side in grid)
    top = np.clip(h / 2 - np.arange(h), 0.0, 1.0)  # (h,) share of patch row r above the middle
    left = np.clip(w / 2 - np.arange(w), 0.0, 1.0)  # (w,) share of patch column c left of the middle
    rows = np.stack([top, top, 1 - top, 1 - top])  # (4, h)
    cols = np.stack([left, 1 - left, left, 1 - left])  # (4, w)
    return (rows[:, :, None] * cols[:, None, :]).reshape(4, h * w)  # (4, S)


# ---------------------------------------------------------------- media and latents


def latent_mass(weights, num_latents):
    """The attention weight on the latents, the last R keys: (..., N + R) -> (...,).

        latent_mass = sum_{j >= N} weights[..., j]

    For softmax rows (sum 1) it is the share of each row that reads the latents, not the media.
    """
    weights, num_latents = _weights_and_latents(weights, num_latents)
    return weights[..., weights.shape[-1] - num_latents :].sum(axis=-1)  # (...,)


def media_attention(weights, num_latents):
    """The weights on the media, renormalised: (..., N + R) -> (..., N), each row summing to 1.

        media[..., n] = weights[..., n] / sum_{m < N} weights[..., m],   N = keys - R

    Where the attention that goes to the image goes, whatever share the latents took.
    """
    weights, num_latents = _weights_and_latents(weights, num_latents)
    media = weights[..., : weights.shape[-1] - num_latents]  # (..., N)
    if media.shape[-1] == 0:
        raise ValueError(
            f"weights has no media keys: {weights.shape[-1]} keys, all of them latents (R = {num_latents})"
        )
    return _normalised("the media part of weights", media)


def _weights_and_latents(weights, num_latents):
    weights = _nonnegative("weights", weights, "(..., N + R)")
    num_latents = _checks.positive_int("num_latents", num_latents)
    if num_latents > weights.shape[-1]:
        raise ValueError(
            f"weights must have at least R = num_latents = {num_latents} keys on its last axis (N + R); got "
            f"{weights.shape}"
        )
    return weights, num_latents


# ---------------------------------------------------------------- how spread out


def attention_entropy(weights):
    """The entropy of each attention row, in nats: (..., N) -> (...,).

        H(p) = -sum_n p_n log p_n,   p = weights / sum(weights) over the last axis,  0 log 0 = 0

    0 when one key gets all the weight, log N when all N keys get 1/N; exp(H) is the number
    of keys that uniform weights would need for the same entropy (the "perplexity").

    >>> float(attention_entropy(np.full(8, 1 / 8)) / np.log(8))
    1.0
    >>> float(attention_entropy(np.array([0.0, 1.0, 0.0])))
    0.0
    """
    p = _normalised("weights", _nonnegative("weights", weights, "(..., N)"))
    return 0.0 - _p_log_p(p).sum(axis=-1)  # (...,); 0.0 - x, not -x, so a one-hot row gives 0.0, not -0.0


def _p_log_p(p):
    """p log p elementwise with 0 log 0 = 0 (its limit), without a warning."""
    return p * np.log(np.where(p > 0, p, 1.0))


# ---------------------------------------------------------------- where the weight lands


def attention_mass(weights, coverage):
    """The share of each row's weight on covered tokens: (..., N), (..., N) -> (...,).

        mass = sum_n p_n c_n,   p = weights / sum(weights) over the last axis

    coverage: in [0, 1], the fraction of token n that shows the thing looked for (e.g. from
    patch_coverage); weights and coverage broadcast together, e.g. (B, H, R, N) and (B, 1, 1, N).
    """
    p, coverage = _weights_and_coverage(weights, coverage)
    return np.einsum("...n,...n->...", *np.broadcast_arrays(p, coverage))  # (...,)


def mass_ratio(weights, coverage):
    """Attention mass on the covered tokens over their share of the tokens: (...,).

        ratio = sum_n p_n c_n / mean_n c_n,   p = weights / sum(weights) over the last axis

    1 for uniform weights (chance), up to 1 / mean(c) when all the weight is on fully covered
    tokens, 0 when none is. Shapes as in attention_mass; every row's coverage must be
    positive somewhere (the ratio is undefined where nothing is covered).
    """
    p, coverage = _weights_and_coverage(weights, coverage)
    share = coverage.mean(axis=-1)  # (...,) broadcastable to the result
    if not (share > 0).all():
        raise ValueError(
            f"coverage must be positive somewhere in every row; {int((share <= 0).sum())} of its "
            f"{share.size} rows (shape {coverage.shape}) cover nothing, where the ratio is undefined"
        )
    return attention_mass(p, coverage) / share  # (...,)


def _weights_and_coverage(weights, coverage):
    p = _normalised("weights", _nonnegative("weights", weights, "(..., N)"))
    coverage = _checks.float_array("coverage", coverage, np.float64)
    _checks.ndim_at_least("coverage", coverage, 1, "(..., N)")
    if coverage.shape[-1] != p.shape[-1]:
        raise ValueError(
            f"coverage must have N = {p.shape[-1]} entries on its last axis, as weights {p.shape}; got {coverage.shape}"
        )
    try:
        np.broadcast_shapes(p.shape, coverage.shape)
    except ValueError:
        raise ValueError(f"weights {p.shape} and coverage {coverage.shape} must broadcast together") from None
    if coverage.size and (coverage.min() < 0 or coverage.max() > 1):
        raise ValueError(
            f"coverage must lie in [0, 1] (a covered fraction); got values from {coverage.min():g} to "
            f"{coverage.max():g}"
        )
    return p, coverage


# ---------------------------------------------------------------- how alike the maps are


def pairwise_jensen_shannon(maps):
    """The Jensen-Shannon divergence, in bits, between every two maps: (..., M, N) -> (..., M, M).

        JS(p, q) = (KL(p || m) + KL(q || m)) / 2 = H(m) - (H(p) + H(q)) / 2,   m = (p + q) / 2

    with each map renormalised to sum 1 and logarithms base 2. Symmetric, 0 on the diagonal,
    0 for identical maps and 1 for maps with no key in common, in between otherwise; it never
    exceeds the total variation distance sum_n |p_n - q_n| / 2 (Lin 1991). Latents whose maps
    have collapsed into one have JS near 0 between every two of them.
    """
    p = _normalised("maps", _nonnegative("maps", maps, "(..., M, N)"))
    _checks.ndim_at_least("maps", p, 2, "(..., M, N)")
    entropy = -_p_log_p(p).sum(axis=-1)  # (..., M) in nats
    divergence = np.empty(p.shape[:-1] + p.shape[-2:-1])  # (..., M, M)
    for i in range(p.shape[-2]):  # one row of the matrix at a time: (..., M, N) in memory, not (..., M, M, N)
        mixture = (p[..., i : i + 1, :] + p) / 2  # (..., M, N)
        mixed = -_p_log_p(mixture).sum(axis=-1)  # (..., M)
        divergence[..., i, :] = mixed - (entropy[..., i : i + 1] + entropy) / 2
    divergence = np.clip(divergence / np.log(2), 0.0, 1.0)  # bits; rounding can stray below 0 by 1e-16
    idx = np.arange(p.shape[-2])
    divergence[..., idx, idx] = 0.0  # exactly
    return divergence


def mean_off_diagonal(matrix):
    """The mean of the entries off the diagonal of each square matrix: (..., M, M) -> (...,), M >= 2."""
    matrix = _checks.float_array("matrix", matrix, np.float64)
    _checks.ndim_at_least("matrix", matrix, 2, "(..., M, M)")
    m = matrix.shape[-1]
    if matrix.shape[-2] != m or m < 2:
        raise ValueError(f"matrix must be square, (..., M, M) with M >= 2; got {matrix.shape}")
    diagonal = np.trace(matrix, axis1=-2, axis2=-1)  # (...,)
    return (matrix.sum(axis=(-2, -1)) - diagonal) / (m * (m - 1))  # (...,)


# ---------------------------------------------------------------- checks


def _nonnegative(name, weights, layout):
    """weights as float64, at least 1-D with a non-empty last axis, no negative entry."""
    weights = _checks.float_array(name, weights, np.float64)
    _checks.ndim_at_least(name, weights, 1, layout)
    if weights.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one entry on its last axis {layout}; got {weights.shape}")
    if weights.size and weights.min() < 0:
        raise ValueError(f"{name} must be non-negative (attention weights); got a minimum of {weights.min():g}")
    return weights


def _normalised(name, weights):
    """Rows (last axis) scaled to sum 1; a row with no weight at all is an error."""
    total = weights.sum(axis=-1, keepdims=True)  # (..., 1)
    if not (total > 0).all():
        raise ValueError(
            f"every row of {name} must have a positive sum; "
            f"{int((total <= 0).sum())} of shape {weights.shape[:-1]} do not"
        )
    return weights / total
