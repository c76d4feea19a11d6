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
from . import agree, check

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
    for shape, patch in cases:
        image = rng.random(shape)
        what = f"patchify(image of shape {shape}, patch={patch})"
        agree(what, fn(image, patch), _patches_by_loops(image, patch), 0.0)
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
    config = ResamplerConfig(dim=12, depth=2, heads=3, dim_head=5, num_latents=4, num_time_embeds=3, activation="squared_relu")
    params = init_resampler(config, seed=41)
    cases = {
        "three items, (T, S) = (1, 7), (3, 5), (2, 9)": [(1, 7), (3, 5), (2, 9)],
        "one item, nothing to pad": [(2, 6)],
        "two items of the same size": [(1, 8), (1, 8)],
    }
    bound, worst = 1e-12, 0.0
    for name, sizes in cases.items():
        features = [rng.standard_normal((frames, tokens, config.dim)) for frames, tokens in sizes]
        x, mask = fn(features)
        b_size, t_max, s_max = len(sizes), max(t for t, _ in sizes), max(s for _, s in sizes)
        x, mask = np.asarray(x), np.asarray(mask)
        assert x.shape == (b_size, t_max, s_max, config.dim), f"{name}: x has shape {x.shape}, expected {(b_size, t_max, s_max, config.dim)}"
        assert mask.dtype == bool, f"{name}: mask must be boolean (True = real token); got dtype {mask.dtype}"
        assert np.isfinite(x).all(), f"{name}: x holds NaN or inf; pad with a finite value such as 0"
        out = perceiver_resampler(params, x, config, mask=mask)  # (B, R, D)
        for b, item in enumerate(features):
            frames, tokens = item.shape[:2]
            expected_mask = np.zeros((t_max, s_max), dtype=bool)
            expected_mask[:frames, :tokens] = True
            assert mask.shape == (b_size, t_max, s_max) and (mask[b] == expected_mask).all(), (
                f"{name}: mask[{b}] should be True exactly on the first {frames} frames x {tokens} tokens"
            )
            agree(f"{name}: x[{b}, :{frames}, :{tokens}] (the real tokens)", x[b, :frames, :tokens], item, 0.0)
            alone = perceiver_resampler(params, item, config)  # (R, D)
            worst = max(worst, agree(f"{name}: resampler output of item {b}, padded+masked vs alone", out[b], alone, bound))
    return f"{len(cases)} batches, padded+masked = alone to {worst:.0e} <= {bound:g}"


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
        "with 8 time embeddings": ResamplerConfig(dim=20, depth=3, heads=4, dim_head=7, num_latents=6, num_time_embeds=8),
        "with 5 media embeddings, ff_mult 2.5": ResamplerConfig(dim=16, depth=1, heads=2, dim_head=9, num_latents=3, num_media_embeds=5, ff_mult=2.5),
        "grouped-query attention, H=6, Hkv=2": ResamplerConfig(dim=24, depth=2, heads=6, kv_heads=2, dim_head=4, num_latents=5),
        "open_flamingo's defaults (D=1024)": ResamplerConfig(dim=1024),
    }
    for name, config in configs.items():
        expected = sum(int(np.prod(shape)) for shape in param_shapes(config).values())
        got = fn(config)
        assert got == expected, f"{name}: counted {got} parameters, refimpl.param_shapes has {expected} (off by {got - expected})"
    return f"{len(configs)} configurations, every count exactly refimpl.param_shapes'"


def check_count_params(fn):
    """Check a student's count_params against the sum over refimpl.param_shapes(config)."""
    return check("count_params", fn, count_params, _test_count_params)

