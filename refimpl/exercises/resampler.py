"""Exercises of notebook 4 (the Perceiver Resampler in NumPy), with worked solutions.

    patchify(image, patch)   an image (height, width, C) -> its patches (S, patch*patch*C), row-major
    pad_and_mask(features)   inputs of different sizes -> one padded batch and its mask
    count_params(config)     the number of parameters of a resampler, in closed form

Each `check_<name>(fn)` runs `fn` on seeded inputs with non-square shapes and compares it with
a reference: explicit loops over the patch grid (patchify), refimpl.perceiver_resampler on
each item alone (pad_and_mask), refimpl.param_shapes (count_params).
"""

import numpy as np

from ..config import ResamplerConfig
from ..params import init_resampler, param_shapes
from ..resampler import perceiver_resampler
from ..tolerances import TOLERANCES
from . import agree, call, check, likely_mistake

# float64, the same math in another order (a padded batch against one item alone)
BOUND = TOLERANCES["float64", "same math in another order"]

# ---------------------------------------------------------------- patchify


def patchify(image, patch):
    """Cut an image into square patches, row by row, each flattened.

    image: (height, width, C) with height and width multiples of `patch`.
    returns (S, patch * patch * C), S = h * w on the (h, w) = (height // patch, width // patch)
    grid: patch r * w + c is the block image[r*patch:(r+1)*patch, c*patch:(c+1)*patch, :]
    flattened in its own row-major order (pixel row, pixel column, channel).
    """
    height, width, channels = image.shape
    h, w = height // patch, width // patch
    blocks = image.reshape(h, patch, w, patch, channels)  # (h, p, w, p, C): split both sides
    blocks = blocks.transpose(0, 2, 1, 3, 4)  # (h, w, p, p, C): the grid axes first
    return blocks.reshape(h * w, patch * patch * channels)  # (S, p*p*C), row-major over the grid


def _patches_by_loops(image, patch):
    """The same patches, one by one with explicit loops: a reference that is easy to trust."""
    h, w = image.shape[0] // patch, image.shape[1] // patch
    rows = []
    for r in range(h):
        for c in range(w):
            rows.append(image[r * patch : (r + 1) * patch, c * patch : (c + 1) * patch, :].ravel())
    return np.stack(rows)


def _test_patchify(fn):
    rng = np.random.default_rng(40)
    cases = [((32, 48, 3), 16), ((15, 10, 2), 5), ((8, 8, 3), 8), ((12, 28, 1), 4)]
    general = (
        "patch r * w + c is image[r*p:(r+1)*p, c*p:(c+1)*p, :] flattened (pixel row, pixel column, channel); "
        "reshape to (h, p, w, p, C), bring the grid axes (h, w) to the front, then flatten"
    )
    no_transpose = (
        "a reshape alone keeps the pixels in the image's row order, so a 'patch' is a strip of pixel rows: "
        "reshape to (h, p, w, p, C), transpose to (h, w, p, p, C), then reshape to (h * w, p * p * C)"
    )
    for shape, patch in cases:
        image = rng.random(shape)
        what = f"patchify(image of shape {shape}, patch={patch})"
        actual = call(what, general, fn, image, patch)
        expected = _patches_by_loops(image, patch)
        hint = likely_mistake(actual, [(no_transpose, image.reshape(expected.shape))], general, 0.0)
        agree(f"case '{what}'", actual, expected, 0.0, hint=hint)
    return f"{len(cases)} images (non-square, 1 to 3 channels), exactly the patches of an explicit loop"


def check_patchify(fn):
    """Check a student's patchify against explicit loops over the patch grid."""
    return check("patchify", fn, patchify, _test_patchify)


# ---------------------------------------------------------------- pad_and_mask


def pad_and_mask(features):
    """Batch media items of different sizes: pad them to a common size and say which tokens are real.

    features: a list of B arrays (T_b, S_b, D): item b has T_b frames of S_b tokens each.
    returns x (B, Tmax, Smax, D) with item b in x[b, :T_b, :S_b] and zeros elsewhere (any
    finite value would do: the mask hides it), and mask (B, Tmax, Smax), bool, True exactly
    where x holds a real token.
    """
    t_max = max(item.shape[0] for item in features)
    s_max = max(item.shape[1] for item in features)
    dim = features[0].shape[-1]
    x = np.zeros((len(features), t_max, s_max, dim))  # (B, Tmax, Smax, D)
    mask = np.zeros((len(features), t_max, s_max), dtype=bool)  # (B, Tmax, Smax)
    for b, item in enumerate(features):
        frames, tokens = item.shape[:2]
        x[b, :frames, :tokens] = item
        mask[b, :frames, :tokens] = True
    return x, mask


def _test_pad_and_mask(fn):
    rng = np.random.default_rng(41)
    config = ResamplerConfig(
        dim=12, depth=2, heads=3, dim_head=5, num_latents=4, num_time_embeds=3, activation="squared_relu"
    )
    params = init_resampler(config, seed=41)
    cases = {
        "three items, (T, S) = (1, 7), (3, 5), (2, 9)": [(1, 7), (3, 5), (2, 9)],
        "one item, nothing to pad": [(2, 6)],
        "two items of the same size": [(1, 8), (1, 8)],
    }
    general = (
        "x (B, Tmax, Smax, D) holds item b in x[b, :T_b, :S_b] and a finite filler (0) elsewhere; "
        "mask (B, Tmax, Smax) is boolean, True exactly where x holds a real token"
    )
    inverted = "the mask is inverted: True means may attend, a real token; the padding is False"
    worst = 0.0
    for name, sizes in cases.items():
        features = [rng.standard_normal((frames, tokens, config.dim)) for frames, tokens in sizes]
        result = call(name, general, fn, features)
        assert isinstance(result, tuple | list) and len(result) == 2, (
            f"case '{name}': return (x, mask); got {type(result).__name__}. {general}"
        )
        x, mask = (np.asarray(item) for item in result)
        b_size, t_max, s_max = len(sizes), max(t for t, _ in sizes), max(s for _, s in sizes)
        expected_mask = np.zeros((b_size, t_max, s_max), dtype=bool)
        for b, (frames, tokens) in enumerate(sizes):
            expected_mask[b, :frames, :tokens] = True
        expected_shape = (b_size, t_max, s_max, config.dim)
        assert x.shape == expected_shape, f"case '{name}': x has shape {x.shape}, expected {expected_shape}. {general}"
        assert mask.dtype == bool, (
            f"case '{name}': mask must be boolean (True = real token); got dtype {mask.dtype}. {general}"
        )
        assert np.isfinite(x).all(), f"case '{name}': x holds NaN or inf; pad with a finite value such as 0"
        assert mask.shape == expected_mask.shape, (
            f"case '{name}': mask has shape {mask.shape}, expected {expected_mask.shape}. {general}"
        )
        hint = inverted if (mask == ~expected_mask).all() else general
        assert (mask == expected_mask).all(), (
            f"case '{name}': mask is wrong at {int((mask != expected_mask).sum())} of {mask.size} places; "
            f"mask[b] must be True exactly on item b's first T_b frames x S_b tokens. {hint}"
        )
        out = perceiver_resampler(params, x, config, mask=mask)  # (B, R, D)
        for b, item in enumerate(features):
            frames, tokens = item.shape[:2]
            agree(
                f"case '{name}': x[{b}, :{frames}, :{tokens}] (the real tokens)",
                x[b, :frames, :tokens],
                item,
                0.0,
                hint=general,
            )
            alone = perceiver_resampler(params, item, config)  # (R, D)
            what = f"case '{name}': resampler output of item {b}, padded+masked vs alone"
            worst = max(worst, agree(what, out[b], alone, BOUND, hint=general))
    return f"{len(cases)} batches, padded+masked = alone to {worst:.0e} <= {BOUND:g}"


def check_pad_and_mask(fn):
    """Check a student's pad_and_mask: shapes, mask, and refimpl's output per item, padded vs alone."""
    return check("pad_and_mask", fn, pad_and_mask, _test_pad_and_mask)


# ---------------------------------------------------------------- count_params


def count_params(config):
    """The number of parameters of a resampler with layernorm and a plain (non-swiglu) feed-forward.

    D = config.dim, R = num_latents, H = heads, Hkv = config.num_kv_heads, Dh = dim_head,
    F = config.ff_dim. Per layer: two LayerNorms before the attention (media, latents) and one
    before the feed-forward, each a weight and a bias of D; wq (D, H*Dh), wk and wv
    (D, Hkv*Dh), wo (H*Dh, D); w_in (D, F), w_out (F, D). Once: the latents (R, D), the final
    LayerNorm (2D), and a (Tmax, D) / (Imax, D) embedding table where num_time_embeds /
    num_media_embeds is set. returns an int.
    """
    d, inner_q, inner_kv = config.dim, config.heads * config.dim_head, config.num_kv_heads * config.dim_head
    norms = 3 * 2 * d  # norm_media, norm_latents, ff.norm: weight and bias each
    attention = d * inner_q + 2 * d * inner_kv + inner_q * d  # wq, wk, wv, wo
    feed_forward = 2 * d * config.ff_dim  # w_in, w_out
    total = config.depth * (norms + attention + feed_forward)
    total += config.num_latents * d + 2 * d  # latents, final norm
    for table in (config.num_time_embeds, config.num_media_embeds):
        total += 0 if table is None else table * d
    return total


def _test_count_params(fn):
    configs = {
        "D=12, depth 2, H=3, Dh=5, R=4": ResamplerConfig(dim=12, depth=2, heads=3, dim_head=5, num_latents=4),
        "with 8 time embeddings": ResamplerConfig(
            dim=20, depth=3, heads=4, dim_head=7, num_latents=6, num_time_embeds=8
        ),
        "with 5 media embeddings, ff_mult 2.5": ResamplerConfig(
            dim=16, depth=1, heads=2, dim_head=9, num_latents=3, num_media_embeds=5, ff_mult=2.5
        ),
        "grouped-query attention, H=6, Hkv=2": ResamplerConfig(
            dim=24, depth=2, heads=6, kv_heads=2, dim_head=4, num_latents=5
        ),
        "open_flamingo's defaults (D=1024)": ResamplerConfig(dim=1024),
    }
    general = (
        "per layer: 3 LayerNorms of 2D, wq (D, H*Dh), wk and wv (D, Hkv*Dh), wo (H*Dh, D), w_in (D, F), w_out (F, D); "
        "once: the latents (R, D), the final LayerNorm (2D), and the time / media embedding tables where set"
    )
    for name, config in configs.items():
        shapes = param_shapes(config)
        expected = sum(int(np.prod(shape)) for shape in shapes.values())
        got = call(name, general, fn, config)
        assert isinstance(got, int | np.integer), (
            f"case '{name}': return the count as an int; got {type(got).__name__}. {general}"
        )
        d = config.dim
        mistakes = [  # (hint, the count that mistake gives)
            (
                "wk and wv have Hkv * Dh columns (config.num_kv_heads), not H * Dh: "
                "grouped-query attention shares them",
                expected + config.depth * 2 * d * (config.heads - config.num_kv_heads) * config.dim_head,
            ),
            (
                "each LayerNorm has a weight and a bias of D: 2D per norm, three per layer and a final one",
                expected - (3 * config.depth + 1) * d,
            ),
            (
                "the R latents are parameters too: R * D of them, and the final LayerNorm's 2D",
                expected - config.num_latents * d - 2 * d,
            ),
            (
                "the time and media embedding tables count where the config sets them: Tmax * D and Imax * D",
                expected - sum(0 if t is None else t * d for t in (config.num_time_embeds, config.num_media_embeds)),
            ),
        ]
        mistakes = [(hint, count) for hint, count in mistakes if count != expected]
        hint = likely_mistake(got, mistakes, general, 0.0)
        assert got == expected, (
            f"case '{name}': counted {got} parameters, refimpl.param_shapes has {expected} (off by "
            f"{got - expected}). {hint}"
        )
    return f"{len(configs)} configurations, every count exactly refimpl.param_shapes'"


def check_count_params(fn):
    """Check a student's count_params against the sum over refimpl.param_shapes(config)."""
    return check("count_params", fn, count_params, _test_count_params)
