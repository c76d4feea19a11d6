"""What the test modules share: the one comparison, and hypothesis strategies for inputs.

Every numerical comparison in the suite goes through `assert_close`, which reads its bound
from `refimpl.TOLERANCES` and measures with `refimpl.relative_error` (one table, one
measure). The table's float64 entry bounds "the same float64 math in another order";
that is what every float64 comparison here is (NumPy vs Numba, vs the naive loops of
tests/naive.py, vs torch), so they all use it.

Inputs are drawn as a seed plus a few small sizes; the arrays come from
`np.random.default_rng(seed)`, which keeps the examples small to shrink and cheap to make.
"""

import dataclasses

import numpy as np
from hypothesis import strategies as st

import refimpl

FLOAT64 = ("float64", "numba vs numpy")  # float64, the same math in another order
FLOAT32_VS_FLOAT64 = ("float32", "vs float64 reference")
FLOAT32_BACKENDS = ("float32", "numba vs numpy")

seeds = st.integers(min_value=0, max_value=2**32 - 1)


def assert_close(actual, reference, key=FLOAT64, what="result", scale=None):
    """Assert relative_error(actual, reference, scale) <= TOLERANCES[key] (shapes must match exactly).

    For attention outputs pass scale = max |v| (see refimpl/tolerances.py)."""
    actual, reference = np.asarray(actual), np.asarray(reference)
    assert actual.shape == reference.shape, f"{what}: shape {actual.shape}, expected {reference.shape}"
    assert np.isfinite(actual).all(), f"{what}: not finite"
    tolerance = refimpl.TOLERANCES[key]
    error = refimpl.relative_error(actual, reference, scale)
    assert error <= tolerance, f"{what}: relative error {error:.3g} > TOLERANCES[{key!r}] = {tolerance:g}"


def batch_shapes(max_dims=2, max_side=3, min_dims=0, min_side=1):
    """Leading batch axes: `min_dims` up to `max_dims` axes of sizes min_side..max_side."""
    return st.lists(st.integers(min_side, max_side), min_size=min_dims, max_size=max_dims).map(tuple)


def random_mask(rng, shape, axis=-1, p_true=0.7):
    """A random boolean mask with at least one True along `axis` in every slice."""
    mask = rng.random(shape) < p_true
    if mask.size:
        rows = np.moveaxis(mask, axis, -1)  # a view: the writes below reach `mask`
        chosen = rng.integers(rows.shape[-1], size=rows.shape[:-1] + (1,))
        np.put_along_axis(rows, chosen, True, axis=-1)
    return mask


def divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


@st.composite
def resampler_configs(
    draw, *, max_depth=2, time_embeds=None, latents_in_kv=None, activation=None, norm=None, family=False
):
    """A small ResamplerConfig with every switch drawn. Keyword arguments pin a switch
    (time_embeds: True, False or None = either). family=True draws the switches of the
    later resamplers too (family_switches), after the others: without it the draws are
    those of before they existed."""
    heads = draw(st.integers(1, 4))
    dim = draw(st.integers(1, 12))
    if time_embeds is None:
        time_embeds = draw(st.booleans())
    config = refimpl.ResamplerConfig(
        dim=dim,
        depth=draw(st.integers(1, max_depth)),
        heads=heads,
        dim_head=draw(st.integers(1, 7)),
        num_latents=draw(st.integers(1, 6)),
        ff_mult=draw(st.sampled_from([1, 2, 3] + ([0.5, 1.5] if dim % 2 == 0 else []))),
        num_time_embeds=draw(st.integers(4, 6)) if time_embeds else None,
        kv_heads=draw(st.sampled_from([None] + divisors(heads))),
        activation=activation or draw(st.sampled_from(["gelu", "squared_relu", "relu", "swiglu"])),
        norm=norm or draw(st.sampled_from(["layernorm", "rmsnorm"])),
        norm_eps=draw(st.sampled_from([1e-5, 1e-6, 0.1])),
        qk_norm=draw(st.booleans()),
        latents_in_kv=draw(st.booleans()) if latents_in_kv is None else latents_in_kv,
    )
    return dataclasses.replace(config, **draw(family_switches(config))) if family else config


@st.composite
def family_switches(draw, config):
    """The switches of the later resamplers (Kosmos-2, Evolla, Qwen-VL, MiniCPM-V), drawn for
    `config`: a dict for dataclasses.replace. With positions, D is redrawn divisible by 4, the
    latents leave the keys, and for "keys_and_queries" R = pos_grid**2."""
    switches = dict(
        attn_bias=draw(st.booleans()),
        media_dim=draw(st.sampled_from([None, 3, 7])),
        pre_norm=draw(st.booleans()),
        attn_residual=draw(st.booleans()),
        feed_forward=draw(st.booleans()),
        final_norm=draw(st.booleans()),
        out_dim=draw(st.sampled_from([None, 5, 9])),
        positions=draw(st.sampled_from([None, "keys", "keys_and_queries"])),
    )
    switches["media_proj_bias"] = switches["media_dim"] is not None and draw(st.booleans())
    if switches["out_dim"] is not None:
        switches |= dict(out_proj_bias=draw(st.booleans()), out_norm=draw(st.booleans()))
    if switches["positions"] is not None:
        switches |= dict(dim=draw(st.sampled_from([4, 8, 12])), latents_in_kv=False)
    if switches["positions"] == "keys_and_queries":
        side = draw(st.integers(1, 3))
        switches |= dict(pos_grid=side, num_latents=side**2)
    return switches


@st.composite
def resampler_cases(
    draw, *, configs=None, min_frames=0, max_frames=3, min_space=0, max_space=5, masked=None, batch=None
):
    """(config, params, x, mask): x (..., T, S, D) with T <= max_frames (and <= the time table),
    mask (..., T, S) or None. Without latents in the keys every item keeps a real token."""
    config = draw(configs if configs is not None else resampler_configs())
    needs_tokens = not config.latents_in_kv
    n_frames = draw(st.integers(max(min_frames, 1 if needs_tokens else 0), max_frames))
    n_space = draw(st.integers(max(min_space, 1 if needs_tokens else 0), max_space))
    batch_shape = draw(batch if batch is not None else batch_shapes())
    rng = np.random.default_rng(draw(seeds))
    params = refimpl.init_resampler(config, seed=int(rng.integers(2**31)))
    x = rng.standard_normal(batch_shape + (n_frames, n_space, config.media_width))
    if masked is None:
        masked = draw(st.booleans())
    mask = None
    if masked:
        mask = rng.random(x.shape[:-1]) < 0.7
        if needs_tokens:
            mask[..., 0, 0] = True
    return config, params, x, mask


@st.composite
def family_cases(draw, *, masked=None, configs=None):
    """(config, params, x, mask, grid): resampler_cases for configs with the family's switches
    drawn (`configs`, resampler_configs(family=True) by default). With positions, grid is (h, w) for the batch or
    (..., 2) per item, S is at least every h*w (more only with a mask, which marks the tokens
    past h*w as padding); else grid is None."""
    config = draw(configs if configs is not None else resampler_configs(family=True))
    if masked is None:
        masked = draw(st.booleans())
    if config.positions is None:
        return (*draw(resampler_cases(configs=st.just(config), masked=masked)), None)
    batch_shape = draw(batch_shapes(max_dims=2))
    n_frames = draw(st.integers(1, 2))
    sides = st.integers(1, 4)
    per_item = draw(st.booleans())
    rng = np.random.default_rng(draw(seeds))
    if per_item:
        grid = np.stack([rng.integers(1, 5, batch_shape), rng.integers(1, 5, batch_shape)], axis=-1)  # (..., 2)
        if not masked:  # every item the same size: h*w = S
            grid[...] = [draw(sides), draw(sides)]
    else:
        grid = (draw(sides), draw(sides))
    sizes = np.asarray(grid)[..., 0] * np.asarray(grid)[..., 1]
    n_space = int(sizes.max(initial=1)) + (draw(st.integers(0, 2)) if masked else 0)
    params = refimpl.init_resampler(config, seed=int(rng.integers(2**31)))
    x = rng.standard_normal(batch_shape + (n_frames, n_space, config.media_width))
    mask = None
    if masked:
        real = np.arange(n_space) < np.broadcast_to(sizes, batch_shape)[..., None, None]  # (..., 1, S)
        mask = (rng.random(x.shape[:-1]) < 0.7) & real
        mask[..., 0, 0] = True
    return config, params, x, mask, grid


def broadcast_operand_batch(draw, batch):
    """Batch axes that broadcast to `batch`: some leading axes dropped, some sizes set to 1."""
    kept = batch[draw(st.integers(0, len(batch))) :]
    return tuple(1 if draw(st.booleans()) else size for size in kept)


@st.composite
def attention_cases(draw, max_queries=7, min_keys=1, max_keys=9, max_width=12, masked=None, v_batch_like_k=False):
    """(q, k, v, mask, scale) with batch axes that broadcast and a mask of one of several forms
    (`v_batch_like_k`: v has k's batch axes, so the weights' batch is that of q and k)."""
    batch = draw(batch_shapes())
    m, n = draw(st.integers(1, max_queries)), draw(st.integers(min_keys, max_keys))
    d, dv = draw(st.integers(1, max_width)), draw(st.integers(1, max_width))
    rng = np.random.default_rng(draw(seeds))
    q = rng.standard_normal(broadcast_operand_batch(draw, batch) + (m, d))
    k = rng.standard_normal(broadcast_operand_batch(draw, batch) + (n, d))
    v = rng.standard_normal((k.shape[:-2] if v_batch_like_k else broadcast_operand_batch(draw, batch)) + (n, dv))
    scores_batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    if masked is None:
        masked = draw(st.booleans())
    mask = None
    if masked:
        form = draw(st.sampled_from(["full", "key padding", "keys only", "shared over batch"]))
        mask_batch = broadcast_operand_batch(draw, scores_batch)
        if form == "full":
            mask = random_mask(rng, mask_batch + (m, n))
        elif form == "key padding":
            mask = random_mask(rng, mask_batch + (1, n))
        elif form == "keys only":
            mask = random_mask(rng, (n,))
        else:
            mask = random_mask(rng, (m, n))
    scale = draw(st.sampled_from([None, 0.3, 2.0]))
    return q, k, v, mask, scale


@st.composite
def multi_head_cases(draw, max_keys=9, masked=None):
    """(params, queries, context, options): multi-head cross-attention with GQA and qk_norm drawn;
    options holds heads, kv_heads, mask ((..., 1 or R, N) or None) and qk_norm_eps."""
    heads = draw(st.integers(1, 4))
    kv_heads = draw(st.sampled_from([h for h in range(1, heads + 1) if heads % h == 0]))
    batch = draw(batch_shapes())
    r, n = draw(st.integers(1, 9)), draw(st.integers(1, max_keys))
    dim, dim_context, dim_head = draw(st.integers(1, 12)), draw(st.integers(1, 12)), draw(st.integers(1, 7))
    rng = np.random.default_rng(draw(seeds))
    params = {
        "wq": rng.standard_normal((dim, heads * dim_head)),
        "wk": rng.standard_normal((dim_context, kv_heads * dim_head)),
        "wv": rng.standard_normal((dim_context, kv_heads * dim_head)),
        "wo": rng.standard_normal((heads * dim_head, dim)),
    }
    qk_norm_eps = draw(st.sampled_from([None, 1e-5]))
    if qk_norm_eps is not None:
        for which in "qk":
            params[f"{which}_norm.weight"] = rng.uniform(0.5, 1.5, dim_head)
            params[f"{which}_norm.bias"] = rng.normal(0, 0.1, dim_head)
    queries, context = rng.standard_normal(batch + (r, dim)), rng.standard_normal(batch + (n, dim_context))
    if masked is None:
        masked = draw(st.booleans())
    mask = random_mask(rng, batch + (draw(st.sampled_from([1, r])), n)) if masked else None
    return params, queries, context, dict(heads=heads, kv_heads=kv_heads, mask=mask, qk_norm_eps=qk_norm_eps)


# --- gradients (refimpl.grad) ---

GRADIENT_VS_FINITE_DIFFERENCES = ("float64", "gradient vs central finite differences")
GRADIENT_VS_TORCH = ("float64", "gradient vs torch autograd")


@st.composite
def resampler_variant_cases(
    draw, *, activations=("gelu", "squared_relu", "relu", "swiglu"), norm_dtypes=(None, "float32"), masked=None
):
    """(config, params, x, mask) as from resampler_cases, with the two switches that
    resampler_configs leaves at their defaults drawn too: num_media_embeds (then x is
    (..., I, T, S, D), I <= the table's rows) and norm_dtype (from `norm_dtypes`); the
    activation from `activations`."""
    config = draw(resampler_configs(activation=draw(st.sampled_from(activations))))
    media_embeds = draw(st.sampled_from([None, 1, 2, 3]))
    config = dataclasses.replace(config, num_media_embeds=media_embeds, norm_dtype=draw(st.sampled_from(norm_dtypes)))
    batch = batch_shapes() if media_embeds is None else batch_shapes(min_dims=1, max_side=media_embeds)  # (..., I)
    return draw(resampler_cases(configs=st.just(config), batch=batch, masked=masked))


def switches_case(switches, seed=3):
    """A small fixed resampler case for a dict of config switches: (config, params, x, mask).

    D = 12, depth 2, 4 heads of width 5, R = 3; x (B = 2, [I = 3,] T = 2, S = 5, D) and a
    padding mask with the first token of every item real, all from `seed`.
    """
    config = refimpl.ResamplerConfig(dim=12, depth=2, heads=4, dim_head=5, num_latents=3, **switches)
    params = refimpl.init_resampler(config, seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 2, 5, 12) if config.num_media_embeds else (2, 2, 5, 12))
    mask = rng.random(x.shape[:-1]) < 0.7
    mask[..., 0, 0] = True
    return config, params, x, mask


def random_flamingo_pytorch_module():
    """flamingo-pytorch's PerceiverResampler in float64, every parameter drawn N(0, 0.5^2) from
    torch's seed 0 (so no norm weight is 1 and no bias 0): D = 16, depth 2, R = 4, 3 media items."""
    import torch
    from flamingo_pytorch import PerceiverResampler

    torch.manual_seed(0)
    module = PerceiverResampler(dim=16, depth=2, dim_head=8, heads=2, num_latents=4, num_media_embeds=3).double()
    for parameter in module.parameters():
        parameter.data.normal_(0.0, 0.5)
    return module


def randomise(module, seed):
    """Every parameter of `module` random, in place: norm scales U(0.5, 1.5), biases
    N(0, 0.1^2), latents and embedding tables N(0, 1), projections N(0, 1 / fan_in)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            shape, dtype = parameter.shape, parameter.dtype
            if name.endswith("bias"):
                value = 0.1 * torch.randn(shape, generator=generator, dtype=dtype)
            elif name.endswith("weight") and parameter.ndim == 1:  # LayerNorm / RMSNorm scale
                value = 0.5 + torch.rand(shape, generator=generator, dtype=dtype)
            elif name.endswith("weight"):  # nn.Linear (out, in)
                value = torch.randn(shape, generator=generator, dtype=dtype) * shape[1] ** -0.5
            else:  # latents, frame_embs, media_time_embs, media_pos_emb
                value = torch.randn(shape, generator=generator, dtype=dtype)
            parameter.copy_(value)
    return module


def open_flamingo_model_state_dict(seed=0):
    """(a state dict laid out like open_flamingo's Flamingo model, the resampler's own state
    dict): the real open-flamingo PerceiverResampler (D = 12, depth 2, H = 3, Dh = 5, R = 7,
    F = 6, randomised) under "perceiver.", beside a vision encoder's and a language model's
    keys, with a real GatedCrossAttentionBlock under "lang_encoder.gated_cross_attn_layers.0."
    (whose attention has to_q and to_kv too, so finding the resampler cannot go by those)."""
    import torch

    from refimpl.interop.open_flamingo import installed_helpers

    helpers = installed_helpers()
    torch.manual_seed(seed)
    resampler = randomise(
        helpers.PerceiverResampler(dim=12, depth=2, dim_head=5, heads=3, num_latents=7, ff_mult=0.5), seed
    )
    block = helpers.GatedCrossAttentionBlock(dim=8, dim_visual=12, dim_head=4, heads=2, ff_mult=1)
    towers = {
        "vision_encoder.conv1.weight": torch.randn(12, 3, 4, 4),
        "vision_encoder.transformer.resblocks.0.attn.in_proj_weight": torch.randn(36, 12),
        "vision_encoder.transformer.resblocks.0.ln_1.weight": torch.randn(12),
        "vision_encoder.ln_post.weight": torch.randn(12),
        "lang_encoder.transformer.wte.weight": torch.randn(50, 8),
        "lang_encoder.transformer.blocks.0.attn.Wqkv.weight": torch.randn(24, 8),
    }
    towers |= {f"lang_encoder.gated_cross_attn_layers.0.{key}": value for key, value in block.state_dict().items()}
    resampler_state = resampler.state_dict()
    return towers | {f"perceiver.{key}": value for key, value in resampler_state.items()}, resampler_state


def norms_resolve_their_inputs(config):
    """False where a norm of `config` hardly depends on its input: a LayerNorm over 1 entry
    outputs its bias whatever the input, over 2 entries about +-weight + bias, an RMSNorm
    over 1 entry about +-weight. The gradient through such a norm is 0 or nearly, in any
    implementation rounding noise amplified by up to 1/sqrt(eps), and so steep near a tie
    that a finite-difference step of 1e-6 is not small: gradient comparisons leave them out
    (test_grad_resampler checks the exact zeros of width 1)."""
    layer_norm_widths = [config.dim] * (config.norm == "layernorm") + [config.dim_head] * config.qk_norm
    return config.dim >= 2 and min(layer_norm_widths, default=3) >= 3


def assert_gradients_close(actual, reference, key=GRADIENT_VS_TORCH, floor=1e-2):
    """assert_close for every name of two dicts of gradients (the same names), each measured
    against its own size, or against `floor` times the largest gradient of all where its own
    is smaller. A gradient that is 0 in exact arithmetic (a key norm's bias: adding one
    vector to every key shifts each query's scores by a constant, which the softmax ignores;
    the queries' with a single key) is rounding noise on both sides, the size of the terms
    that cancel in it, which are as large as the other gradients: only its size can be checked."""
    assert actual.keys() == reference.keys(), f"names: {sorted(actual)} != {sorted(reference)}"
    largest = max(np.abs(np.asarray(value)).max(initial=0.0) for value in reference.values())
    for name in reference:
        scale = max(np.abs(np.asarray(reference[name])).max(initial=0.0), floor * largest)
        assert_close(actual[name], reference[name], key, what=f"gradient for {name}", scale=scale)


def assert_matches_finite_differences(function, inputs, gradients, dout, seed, step=1e-6):
    """Check `gradients` (name -> dL/d inputs[name]) of L = sum(dout * function(inputs))
    against central finite differences, one random direction per input.

    For each name a direction u (standard normal, the input's shape) moves that input
    alone; the gradient's directional derivative <gradients[name], u> is compared with the
    central difference D(h) = (L(input + h u) - L(input - h u)) / (2 h), taken at h = step
    and step / 2 and combined by Richardson extrapolation, (4 D(step / 2) - D(step)) / 3,
    which cancels D's O(h^2) error term: where a norm's input has a variance near its eps,
    the curvature is so large that the h^2 term alone reached 5e-5. What remains is the
    O(h^4) term and the rounding, O(eps * |L| / step), about 1e-10 of the terms at step 1e-6.

    The derivatives of all names form one vector, compared by relative_error under
    TOLERANCES[GRADIENT_VS_FINITE_DIFFERENCES] with the scale of the terms they sum,
    max over the names of sum |gradients[name] * u|: a derivative that cancels to near 0
    by chance (terms of +-0.06 summing to 2e-5) is not measured against its own small size,
    which the finite difference's rounding error, relative to the terms, would exceed.
    """
    rng = np.random.default_rng(seed)

    def loss(changed):
        return float(np.sum(dout * function(changed)))

    analytic, numeric, terms = [], [], []
    for name, value in inputs.items():
        direction = rng.standard_normal(np.shape(value))
        analytic.append(np.sum(gradients[name] * direction))
        terms.append(np.sum(np.abs(gradients[name] * direction)))

        def central_difference(h):
            return (loss({**inputs, name: value + h * direction}) - loss({**inputs, name: value - h * direction})) / (
                2 * h
            )

        numeric.append((4 * central_difference(step / 2) - central_difference(step)) / 3)
    assert_close(
        np.array(analytic),
        np.array(numeric),
        GRADIENT_VS_FINITE_DIFFERENCES,
        what=f"directional derivatives along {list(inputs)}",
        scale=max(terms),
    )
