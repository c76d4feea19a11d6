"""Exercises of notebook 2, cross-attention and multi-head attention.

    split_heads(x, heads)                  (..., L, H*Dh) -> (..., H, L, Dh)
    merge_heads(x)                         (..., H, L, Dh) -> (..., L, H*Dh)
    grouped_query_cross_attention(latents, media, wq, wk, wv, wo, heads, kv_heads)
                                           (..., R, D), (..., N, D) -> (..., R, D), Hkv <= H

Each check compares with refimpl: `refimpl.multi_head.split_heads` / `merge_heads` (the
helpers `refimpl.multi_head_attention` itself uses) and `refimpl.multi_head_attention`, on
non-square shapes (R != N, H*Dh != D, H != Dh) so that a wrong transpose cannot hide.
"""

import numpy as np

from ..attention import attention
from ..multi_head import merge_heads as _reference_merge_heads
from ..multi_head import multi_head_attention
from ..multi_head import split_heads as _reference_split_heads
from ..tolerances import TOLERANCES
from . import agree, call, check, likely_mistake

# A reshape or a transpose moves numbers without rounding them: the answer is exact.
EXACT = 0.0
# float64 attention computed in another order (BLAS sums, another batching): about 1e-16 in
# practice; 1e-12 leaves room for other BLAS builds and is still far below a wrong answer.
FLOAT64_BOUND = TOLERANCES["float64", "same math in another order"]


# ---- split_heads -------------------------------------------------------------------------


def split_heads(x, heads):
    """(..., L, H*Dh) -> (..., H, L, Dh): head h is columns h*Dh ... (h+1)*Dh - 1 of x."""
    *batch, length, width = x.shape
    head_dim = width // heads
    x = x.reshape(*batch, length, heads, head_dim)  # (..., L, H, Dh): cut each row into H pieces
    return np.swapaxes(x, -2, -3)  # (..., H, L, Dh): the head axis in front of the tokens


def check_split_heads(fn):
    return check("split_heads", fn, split_heads, _test_split_heads)


def _test_split_heads(fn):
    rng = np.random.default_rng(20)
    cases = [  # (shape of x, heads)
        ((7, 12), 3),  # L = 7 tokens, 3 heads of width 4
        ((2, 5, 30), 5),  # a batch axis; 5 heads of width 6
        ((2, 3, 4, 6), 2),  # two batch axes
        ((9, 8), 1),  # one head: only a new axis
        ((6, 4), 4),  # Dh = 1
    ]
    general = "head h must be columns h*Dh ... (h+1)*Dh - 1 of x, and the result (..., H, L, Dh)"
    for shape, heads in cases:
        x = rng.standard_normal(shape)
        what = f"split_heads(x of shape {shape}, heads={heads})"
        actual = call(what, general, fn, x, heads)
        *batch, length, width = shape
        mistakes = [
            (
                "reshape x to (..., L, H, Dh) first (each row cut into H pieces), then swap the L and H axes; "
                "reshaping straight to (..., H, L, Dh) mixes the tokens of different rows into one head",
                x.reshape(*batch, heads, length, width // heads),
            )
        ]
        hint = likely_mistake(actual, mistakes, general, EXACT)
        agree(f"case '{what}'", actual, _reference_split_heads(x, heads), EXACT, hint=hint)
    return f"{len(cases)} cases, exact"


# ---- merge_heads -------------------------------------------------------------------------


def merge_heads(x):
    """(..., H, L, Dh) -> (..., L, H*Dh): the inverse of split_heads, heads side by side in each row."""
    *batch, heads, length, head_dim = x.shape
    x = np.swapaxes(x, -2, -3)  # (..., L, H, Dh): tokens first again
    return x.reshape(*batch, length, heads * head_dim)  # (..., L, H*Dh): the H pieces of a row, concatenated


def check_merge_heads(fn):
    return check("merge_heads", fn, merge_heads, _test_merge_heads)


def _test_merge_heads(fn):
    rng = np.random.default_rng(21)
    shapes = [  # (..., H, L, Dh)
        (3, 7, 4),
        (2, 5, 7, 6),  # a batch axis
        (2, 3, 2, 4, 3),  # two batch axes
        (1, 9, 8),  # one head
        (4, 6, 1),  # Dh = 1
    ]
    general = "row l of the result must be head 0's row l, then head 1's, ..., shape (..., L, H*Dh)"
    for shape in shapes:
        x = rng.standard_normal(shape)
        what = f"merge_heads(x of shape {shape})"
        actual = call(what, general, fn, x)
        *batch, heads, length, head_dim = shape
        mistakes = [
            (
                "swap the H and L axes first (to (..., L, H, Dh)), then reshape to (..., L, H*Dh); "
                "reshaping (..., H, L, Dh) straight to (..., L, H*Dh) puts rows of one head side by side",
                x.reshape(*batch, length, heads * head_dim),
            )
        ]
        hint = likely_mistake(actual, mistakes, general, EXACT)
        agree(f"case '{what}'", actual, _reference_merge_heads(x), EXACT, hint=hint)
    return f"{len(shapes)} cases, exact"


# ---- grouped_query_cross_attention --------------------------------------------------------


def grouped_query_cross_attention(latents, media, wq, wk, wv, wo, heads, kv_heads):
    """Multi-head cross-attention with Hkv <= H key/value heads (grouped-query attention).

        Q = latents @ wq  -> H heads      K = media @ wk, V = media @ wv  -> Hkv heads
        head_h = softmax(Q_h K_g^T / sqrt(Dh)) V_g,   g = h // G,  G = H / Hkv
        out = concat_h(head_h) @ wo

    latents (..., R, D)   media (..., N, D)
    wq (D, H*Dh)   wk, wv (D, Hkv*Dh)   wo (H*Dh, D)
    returns (..., R, D)
    """
    group = heads // kv_heads  # G query heads share each key/value head
    q = split_heads(latents @ wq, heads)  # (..., H, R, Dh)
    k = split_heads(media @ wk, kv_heads)  # (..., Hkv, N, Dh)
    v = split_heads(media @ wv, kv_heads)  # (..., Hkv, N, Dh)
    # repeat each key/value head G times: heads 0..G-1 get kv head 0, the next G kv head 1, ...
    k = np.repeat(k, group, axis=-3)  # (..., H, N, Dh)
    v = np.repeat(v, group, axis=-3)  # (..., H, N, Dh)
    out = attention(q, k, v)  # (..., H, R, Dh), every head at once: H is a batch axis
    return merge_heads(out) @ wo  # (..., R, D)


def check_grouped_query_cross_attention(fn):
    return check(
        "grouped_query_cross_attention", fn, grouped_query_cross_attention, _test_grouped_query_cross_attention
    )


def _mistaken(params, latents, media, heads, kv_heads, *, tile=False, unscaled=False):
    """What the layer computes with a likely mistake: query head h reading key/value head
    h % Hkv (np.tile where np.repeat belongs), and/or the scores not divided by sqrt(Dh)."""
    head_dim = params["wq"].shape[1] // heads
    q = _reference_split_heads(latents @ params["wq"], heads)  # (..., H, R, Dh)
    k = _reference_split_heads(media @ params["wk"], kv_heads)  # (..., Hkv, N, Dh)
    v = _reference_split_heads(media @ params["wv"], kv_heads)  # (..., Hkv, N, Dh)
    group = heads // kv_heads
    if tile:  # (..., H, N, Dh): head h gets kv head h % Hkv
        reps = (1,) * (k.ndim - 3) + (group, 1, 1)
        k, v = np.tile(k, reps), np.tile(v, reps)
    else:  # (..., H, N, Dh): head h gets kv head h // G
        k, v = np.repeat(k, group, axis=-3), np.repeat(v, group, axis=-3)
    out = attention(q, k, v, scale=1.0 if unscaled else head_dim**-0.5)  # (..., H, R, Dh)
    return _reference_merge_heads(out) @ params["wo"]  # (..., R, D)


def _test_grouped_query_cross_attention(fn):
    rng = np.random.default_rng(22)
    cases = [  # (batch, R, N, D, H, Hkv, Dh)
        ((), 5, 23, 12, 4, 2, 5),  # two groups of two query heads
        ((2,), 3, 17, 10, 6, 3, 4),  # a batch axis; groups of two
        ((), 4, 19, 9, 4, 1, 3),  # Hkv = 1: every query head shares one key/value head
        ((2,), 6, 11, 8, 3, 3, 5),  # Hkv = H: plain multi-head attention
        ((), 3, 1, 7, 2, 1, 4),  # N = 1: every weight is 1, the output is that token's value
    ]
    general = (
        "Q = latents @ wq in H heads, K and V = media @ wk, media @ wv in Hkv heads; query head h reads "
        "key/value head h // (H / Hkv); softmax(Q K^T / sqrt(Dh)) V per head; heads merged, then @ wo"
    )
    head_mapping = (
        "query head h must use key/value head h // (H / Hkv): the G = H / Hkv query heads of a group are "
        "neighbours (np.repeat(k, G, axis=-3)); np.tile gives head h the key/value head h % Hkv"
    )
    missing_scale = "divide the scores by sqrt(Dh) (Dh = wq.shape[1] // heads) before the softmax"
    worst = 0.0
    for batch, n_latents, n_media, dim, heads, kv_heads, head_dim in cases:
        latents = rng.standard_normal(batch + (n_latents, dim))
        media = rng.standard_normal(batch + (n_media, dim))
        params = {
            "wq": rng.normal(0, dim**-0.5, (dim, heads * head_dim)),
            "wk": rng.normal(0, dim**-0.5, (dim, kv_heads * head_dim)),
            "wv": rng.normal(0, dim**-0.5, (dim, kv_heads * head_dim)),
            "wo": rng.normal(0, (heads * head_dim) ** -0.5, (heads * head_dim, dim)),
        }
        what = f"latents {latents.shape}, media {media.shape}, H = {heads}, Hkv = {kv_heads}, Dh = {head_dim}"
        weights = (params[name] for name in ("wq", "wk", "wv", "wo"))
        ours = call(what, general, fn, latents, media, *weights, heads, kv_heads)
        expected = multi_head_attention(params, latents, media, heads=heads, kv_heads=kv_heads)
        mistakes = [
            (missing_scale, _mistaken(params, latents, media, heads, kv_heads, unscaled=True)),
            (head_mapping, _mistaken(params, latents, media, heads, kv_heads, tile=True)),
            (
                f"{head_mapping}; and {missing_scale}",
                _mistaken(params, latents, media, heads, kv_heads, tile=True, unscaled=True),
            ),
        ]
        hint = likely_mistake(ours, mistakes, general, FLOAT64_BOUND)
        worst = max(worst, agree(f"case '{what}'", ours, expected, FLOAT64_BOUND, hint=hint))
    return f"{len(cases)} cases, max error {worst:.1g} <= {FLOAT64_BOUND:g}"
