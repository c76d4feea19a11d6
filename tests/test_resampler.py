"""refimpl.perceiver_resampler: against the naive oracle, and the invariances the Perceiver
Resampler must have (NumPy backend; tests/test_numba_kernel.py compares the backends).

Axis letters: B... batch axes, T frames, S tokens per frame, N = T*S, R latents, H heads, D width.
"""

import dataclasses

import naive
import numpy as np
import pytest
from helpers import FLOAT32_VS_FLOAT64, assert_close, batch_shapes, resampler_cases, resampler_configs, seeds
from hypothesis import assume, given
from hypothesis import strategies as st

import refimpl

# ---------------------------------------------------------------- against the naive oracle


@given(case=resampler_cases())
def test_resampler_matches_naive(case):
    config, params, x, mask = case
    expected, _ = naive.perceiver_resampler(params, x, config, mask)
    assert_close(refimpl.perceiver_resampler(params, x, config, mask=mask), expected)


@given(case=resampler_cases())
def test_attention_maps_match_naive(case):
    config, params, x, mask = case
    _, expected = naive.perceiver_resampler(params, x, config, mask)
    _, maps = refimpl.perceiver_resampler(params, x, config, mask=mask, return_attention=True)
    assert len(maps) == config.depth
    for layer, (actual, reference) in enumerate(zip(maps, expected, strict=True)):
        assert_close(actual, reference, what=f"layer {layer}")


PUBLISHED_VARIANTS = {  # the switches of refimpl/config.py's table, at odd sizes (R != N, H*Dh != D)
    "flamingo": dict(activation="squared_relu", norm="layernorm"),
    "open_flamingo": dict(activation="gelu", norm="layernorm", num_time_embeds=4),
    "idefics": dict(activation="relu", norm="layernorm", qk_norm=True),
    "idefics2": dict(activation="swiglu", norm="rmsnorm", heads=4, kv_heads=2),
    "perceiver": dict(activation="gelu", norm="rmsnorm", latents_in_kv=False, qk_norm=True),
}


@pytest.mark.parametrize("variant", PUBLISHED_VARIANTS)
def test_resampler_matches_naive_for_each_published_variant(variant):
    options = dict(dim=10, depth=2, heads=3, dim_head=7, num_latents=5, ff_mult=1.5) | PUBLISHED_VARIANTS[variant]
    config = refimpl.ResamplerConfig(**options)
    params = refimpl.init_resampler(config, seed=7)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 7, 10))  # (B, T, S, D)
    mask = rng.random((2, 3, 7)) < 0.8
    expected, _ = naive.perceiver_resampler(params, x, config, mask)
    assert_close(refimpl.perceiver_resampler(params, x, config, mask=mask), expected)


# ---------------------------------------------------------------- shapes and attention maps


@given(case=resampler_cases(max_frames=4, max_space=6, batch=batch_shapes(max_dims=3)))
def test_output_shape_is_batch_by_latents_by_dim(case):
    config, params, x, mask = case
    out = refimpl.perceiver_resampler(params, x, config, mask=mask)
    assert out.shape == x.shape[:-3] + (config.num_latents, config.dim)
    assert out.dtype == np.float64
    assert np.isfinite(out).all()


@given(case=resampler_cases())
def test_attention_maps_have_one_array_per_layer_over_heads_latents_and_keys(case):
    config, params, x, mask = case
    *batch, n_frames, n_space, _ = x.shape
    n_keys = n_frames * n_space + (config.num_latents if config.latents_in_kv else 0)
    _, maps = refimpl.perceiver_resampler(params, x, config, mask=mask, return_attention=True)
    assert isinstance(maps, list) and len(maps) == config.depth
    for weights in maps:
        assert weights.shape == (*batch, config.heads, config.num_latents, n_keys)


@given(case=resampler_cases())
def test_attention_map_rows_sum_to_one(case):
    config, params, x, mask = case
    _, maps = refimpl.perceiver_resampler(params, x, config, mask=mask, return_attention=True)
    for weights in maps:
        assert_close(weights.sum(axis=-1), np.ones(weights.shape[:-1]), what="row sums")


@given(case=resampler_cases(masked=True))
def test_padding_tokens_get_exactly_zero_attention(case):
    config, params, x, mask = case
    *batch, n_frames, n_space, _ = x.shape
    _, maps = refimpl.perceiver_resampler(params, x, config, mask=mask, return_attention=True)
    padding = ~mask.reshape(*batch, 1, 1, n_frames * n_space)  # (..., 1, 1, N), frame-major
    for weights in maps:
        media = weights[..., : n_frames * n_space]  # (..., H, R, N)
        assert (media[np.broadcast_to(padding, media.shape)] == 0.0).all()


@given(case=resampler_cases())
def test_return_attention_leaves_the_output_unchanged(case):
    config, params, x, mask = case
    out, _ = refimpl.perceiver_resampler(params, x, config, mask=mask, return_attention=True)
    assert_close(out, refimpl.perceiver_resampler(params, x, config, mask=mask))


# ---------------------------------------------------------------- permutations and time


@given(case=resampler_cases(configs=resampler_configs(time_embeds=False)), data=st.data())
def test_output_is_invariant_to_permuting_all_tokens_without_time_embeddings(case, data):
    config, params, x, mask = case
    *batch, n_frames, n_space, dim = x.shape
    order = np.array(data.draw(st.permutations(range(n_frames * n_space))), dtype=int)
    shuffled = x.reshape(*batch, -1, dim)[..., order, :].reshape(x.shape)  # across frames too
    shuffled_mask = None if mask is None else mask.reshape(*batch, -1)[..., order].reshape(mask.shape)
    assert_close(
        refimpl.perceiver_resampler(params, shuffled, config, mask=shuffled_mask),
        refimpl.perceiver_resampler(params, x, config, mask=mask),
    )


@given(case=resampler_cases(configs=resampler_configs(time_embeds=True)), data=st.data())
def test_output_is_invariant_to_permuting_tokens_within_each_frame_with_time_embeddings(case, data):
    config, params, x, mask = case
    n_space = x.shape[-2]
    order = np.array(data.draw(st.permutations(range(n_space))), dtype=int)
    shuffled_mask = None if mask is None else mask[..., order]
    assert_close(
        refimpl.perceiver_resampler(params, x[..., order, :], config, mask=shuffled_mask),
        refimpl.perceiver_resampler(params, x, config, mask=mask),
    )


@given(data=st.data())
def test_output_changes_when_frames_are_permuted_with_time_embeddings(data):
    # the time embeddings tell frames apart: reordering the frames must change the output.
    # D >= 4 so that the norms keep more than a sign of each token
    configs = resampler_configs(time_embeds=True).filter(lambda c: c.dim >= 4)
    config, params, x, _ = data.draw(resampler_cases(configs=configs, min_frames=2, min_space=1, masked=False))
    n_frames = x.shape[-3]
    order = data.draw(st.permutations(range(n_frames)).filter(lambda p: list(p) != sorted(p)))
    reordered = x[..., list(order), :, :]
    change = refimpl.relative_error(
        refimpl.perceiver_resampler(params, reordered, config),
        refimpl.perceiver_resampler(params, x, config),
    )
    assert change > 1e3 * refimpl.TOLERANCES[("float64", "numba vs numpy")], (
        f"reordering frames changed the output by only {change:.3g}"
    )


@given(case=resampler_cases(configs=resampler_configs(time_embeds=True)))
def test_time_embedding_row_t_is_added_to_every_token_of_frame_t(case):
    config, params, x, mask = case
    n_frames = x.shape[-3]
    without = dataclasses.replace(config, num_time_embeds=None)
    params_without = {name: value for name, value in params.items() if name != "time_embeds"}
    x_plus_time = x + params["time_embeds"][:n_frames, None, :]  # (..., T, S, D) + (T, 1, D)
    assert_close(
        refimpl.perceiver_resampler(params, x, config, mask=mask),
        refimpl.perceiver_resampler(params_without, x_plus_time, without, mask=mask),
    )


# ---------------------------------------------------------------- padding and masks


def pad(array, axis, count, fill):
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, count)
    return np.pad(array, widths, constant_values=fill)


def garbage_like(rng, array):
    return 100.0 * rng.standard_normal(array.shape)


@given(case=resampler_cases(), extra=st.integers(1, 4), seed=seeds)
def test_padded_and_masked_equals_unpadded_along_space(case, extra, seed):
    config, params, x, mask = case
    rng = np.random.default_rng(seed)
    real = np.ones(x.shape[:-1], dtype=bool) if mask is None else mask
    padded = pad(x, -2, extra, 0.0)
    padded[..., x.shape[-2] :, :] = garbage_like(rng, padded[..., x.shape[-2] :, :])
    padded_mask = pad(real, -1, extra, False)
    assert_close(
        refimpl.perceiver_resampler(params, padded, config, mask=padded_mask),
        refimpl.perceiver_resampler(params, x, config, mask=mask),
    )


@given(case=resampler_cases(), extra=st.integers(1, 3), seed=seeds)
def test_padded_and_masked_equals_unpadded_along_time(case, extra, seed):
    config, params, x, mask = case
    if config.num_time_embeds is not None:
        extra = min(extra, config.num_time_embeds - x.shape[-3])
        assume(extra >= 1)
    rng = np.random.default_rng(seed)
    real = np.ones(x.shape[:-1], dtype=bool) if mask is None else mask
    padded = pad(x, -3, extra, 0.0)
    padded[..., x.shape[-3] :, :, :] = garbage_like(rng, padded[..., x.shape[-3] :, :, :])
    padded_mask = pad(real, -2, extra, False)
    assert_close(
        refimpl.perceiver_resampler(params, padded, config, mask=padded_mask),
        refimpl.perceiver_resampler(params, x, config, mask=mask),
    )


@given(
    config=resampler_configs(),
    sizes=st.lists(st.tuples(st.integers(1, 3), st.integers(1, 5)), min_size=2, max_size=3),
    seed=seeds,
)
def test_items_of_different_sizes_batch_together_when_padded_and_masked(config, sizes, seed):
    frames = min(config.num_time_embeds or 3, 3)
    sizes = [(min(t, frames), s) for t, s in sizes]
    rng = np.random.default_rng(seed)
    params = refimpl.init_resampler(config, seed=seed % 1000)
    items = [rng.standard_normal((t, s, config.dim)) for t, s in sizes]
    t_max, s_max = max(t for t, _ in sizes), max(s for _, s in sizes)
    batch = garbage_like(rng, np.empty((len(items), t_max, s_max, config.dim)))
    mask = np.zeros((len(items), t_max, s_max), dtype=bool)
    for b, item in enumerate(items):
        batch[b, : item.shape[0], : item.shape[1]] = item
        mask[b, : item.shape[0], : item.shape[1]] = True
    out = refimpl.perceiver_resampler(params, batch, config, mask=mask)
    for b, item in enumerate(items):
        assert_close(out[b], refimpl.perceiver_resampler(params, item, config), what=f"item {b}")


@given(case=resampler_cases(configs=resampler_configs(latents_in_kv=True), masked=True), data=st.data())
def test_fully_masked_item_equals_an_item_without_media_tokens(case, data):
    config, params, x, mask = case
    mask = mask.copy()
    item = tuple(data.draw(st.integers(0, size - 1)) for size in x.shape[:-3])
    mask[item] = False
    out = refimpl.perceiver_resampler(params, x, config, mask=mask)
    empty = np.empty((1, 0, config.dim))  # T = 1, S = 0
    assert_close(out[item], refimpl.perceiver_resampler(params, empty, config))


# ---------------------------------------------------------------- batch axes


@given(case=resampler_cases(batch=batch_shapes(min_dims=1, min_side=2)), data=st.data(), seed=seeds)
def test_batch_items_are_independent(case, data, seed):
    config, params, x, mask = case
    item = data.draw(st.integers(0, x.shape[0] - 1))
    changed = x.copy()
    changed[item] = np.random.default_rng(seed).standard_normal(x.shape[1:])
    before = refimpl.perceiver_resampler(params, x, config, mask=mask)
    after = refimpl.perceiver_resampler(params, changed, config, mask=mask)
    others = [b for b in range(x.shape[0]) if b != item]
    assert_close(after[others], before[others], what="the unchanged items")


@given(case=resampler_cases(batch=batch_shapes(min_dims=1)))
def test_batched_equals_one_item_at_a_time(case):
    config, params, x, mask = case
    out = refimpl.perceiver_resampler(params, x, config, mask=mask)
    for index in np.ndindex(x.shape[:-3]):
        item_mask = None if mask is None else mask[index]
        assert_close(
            out[index], refimpl.perceiver_resampler(params, x[index], config, mask=item_mask), what=f"item {index}"
        )


@given(case=resampler_cases(batch=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 2))))
def test_several_leading_batch_axes_equal_one_flattened_axis(case):
    config, params, x, mask = case
    batch = x.shape[:-3]
    flat_x = x.reshape(np.prod(batch), *x.shape[-3:])
    flat_mask = None if mask is None else mask.reshape(np.prod(batch), *mask.shape[-2:])
    expected = refimpl.perceiver_resampler(params, flat_x, config, mask=flat_mask)
    assert_close(
        refimpl.perceiver_resampler(params, x, config, mask=mask), expected.reshape(batch + expected.shape[-2:])
    )


# ---------------------------------------------------------------- no media tokens


@pytest.mark.parametrize("frames_and_space", [(2, 0), (0, 3), (0, 0)])
def test_no_media_tokens_works_when_the_latents_join_the_keys(frames_and_space):
    config = refimpl.ResamplerConfig(dim=9, depth=2, heads=3, dim_head=4, num_latents=5, latents_in_kv=True)
    params = refimpl.init_resampler(config, seed=3)
    x = np.empty((2,) + frames_and_space + (9,))
    expected, _ = naive.perceiver_resampler(params, x, config)
    out, maps = refimpl.perceiver_resampler(params, x, config, return_attention=True)
    assert_close(out, expected)
    assert maps[0].shape == (2, 3, 5, 5)  # only the R latents are keys


@pytest.mark.parametrize("frames_and_space", [(2, 0), (0, 3)])
def test_no_media_tokens_raises_when_the_latents_do_not_join_the_keys(frames_and_space):
    config = refimpl.ResamplerConfig(dim=9, depth=1, heads=3, dim_head=4, num_latents=5, latents_in_kv=False)
    params = refimpl.init_resampler(config)
    with pytest.raises(ValueError, match=r"no media tokens .*latents_in_kv"):
        refimpl.perceiver_resampler(params, np.empty((2,) + frames_and_space + (9,)), config)


def test_an_all_padding_item_raises_when_the_latents_do_not_join_the_keys():
    config = refimpl.ResamplerConfig(dim=9, depth=1, heads=3, dim_head=4, num_latents=5, latents_in_kv=False)
    params = refimpl.init_resampler(config)
    mask = np.ones((3, 2, 4), dtype=bool)
    mask[1] = False
    with pytest.raises(ValueError, match=r"mask marks no real token .*first at index \(1,\)"):
        refimpl.perceiver_resampler(params, np.ones((3, 2, 4, 9)), config, mask=mask)


@given(config=resampler_configs(), seed=seeds)
def test_an_empty_batch_gives_an_empty_output(config, seed):
    params = refimpl.init_resampler(config, seed=seed % 1000)
    out = refimpl.perceiver_resampler(params, np.empty((0, 2, 3, config.dim)), config)
    assert out.shape == (0, config.num_latents, config.dim)


@given(config=resampler_configs(), seed=seeds)
def test_an_empty_batch_gives_empty_attention_maps(config, seed):
    params = refimpl.init_resampler(config, seed=seed % 1000)
    _, maps = refimpl.perceiver_resampler(params, np.empty((0, 2, 3, config.dim)), config, return_attention=True)
    n_keys = 6 + (config.num_latents if config.latents_in_kv else 0)
    assert [weights.shape for weights in maps] == [(0, config.heads, config.num_latents, n_keys)] * config.depth


# ---------------------------------------------------------------- dtypes, magnitudes, purity


@pytest.mark.parametrize("input_dtype", [np.float16, np.float32, np.float64, np.longdouble])
@given(case=resampler_cases())
def test_any_float_input_dtype_is_computed_in_float64(input_dtype, case):
    config, params, x, mask = case
    x_low = x.astype(input_dtype)
    out = refimpl.perceiver_resampler(params, x_low, config, mask=mask)
    assert out.dtype == np.float64
    expected, _ = naive.perceiver_resampler(params, x_low.astype(np.float64), config, mask)
    assert_close(out, expected)


@given(case=resampler_cases())
def test_float32_emulation_is_close_to_the_float64_reference(case):
    config, params, x, mask = case
    out = refimpl.perceiver_resampler(params, x, config, mask=mask, dtype=np.float32)
    assert out.dtype == np.float32
    assert_close(out, refimpl.perceiver_resampler(params, x, config, mask=mask), FLOAT32_VS_FLOAT64)


@given(case=resampler_cases())
def test_float32_parameters_are_cast_to_float64(case):
    config, params, x, mask = case
    params32 = {name: value.astype(np.float32) for name, value in params.items()}
    params32_as_64 = {name: value.astype(np.float64) for name, value in params32.items()}
    out = refimpl.perceiver_resampler(params32, x, config, mask=mask)
    assert out.dtype == np.float64
    assert_close(out, naive.perceiver_resampler(params32_as_64, x, config, mask)[0])


@given(case=resampler_cases())
def test_parameters_and_inputs_are_never_modified(case):
    config, params, x, mask = case
    params_before = {name: value.copy() for name, value in params.items()}
    x_before = x.copy()
    for value in params.values():
        value.setflags(write=False)  # any write would raise
    x.setflags(write=False)
    refimpl.perceiver_resampler(params, x, config, mask=mask, return_attention=True)
    refimpl.perceiver_resampler(params, x, config, mask=mask, dtype=np.float32)
    for name, value in params.items():
        np.testing.assert_array_equal(value, params_before[name])
        assert value.dtype == np.float64
    np.testing.assert_array_equal(x, x_before)


@given(case=resampler_cases(), magnitude=st.sampled_from([1e2, 1e4]))
def test_attention_scores_of_magnitude_1e4_stay_finite(case, magnitude):
    # scaling wq and wk by 100 scales the scores by 1e4 (the norms before them undo any scale of x)
    config, params, x, mask = case
    loud = dict(params)
    for i in range(config.depth):
        for name in ("wq", "wk"):
            loud[f"layers.{i}.attn.{name}"] = params[f"layers.{i}.attn.{name}"] * np.sqrt(magnitude)
    out, maps = refimpl.perceiver_resampler(loud, magnitude * x, config, mask=mask, return_attention=True)
    assert np.isfinite(out).all()
    for weights in maps:
        assert_close(weights.sum(axis=-1), np.ones(weights.shape[:-1]), what="row sums")
