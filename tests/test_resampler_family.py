"""The switches of the later resamplers (issue 12): ResamplerConfig's validation, the parameter
table, the 2-D sin-cos positions and their bicubic resize (against the formula, the naive
loops and torch), and the NumPy forward against tests/naive.py with every switch drawn."""

import dataclasses

import naive
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import FLOAT64, assert_close, family_cases, resampler_configs, seeds
from hypothesis import given
from hypothesis import strategies as st

import refimpl
from refimpl.positions import resize_positions, sincos_2d

# ---- the config


@pytest.mark.parametrize(
    "switches, message",
    [
        (dict(attn_bias=1), "attn_bias must be True or False"),
        (dict(media_dim=0), "media_dim must be >= 1"),
        (dict(media_proj_bias=True), "media_proj_bias=True needs media_dim"),
        (dict(out_norm=True), "out_norm=True needs out_dim"),
        (dict(positions="rows", latents_in_kv=False), "positions must be one of"),
        (dict(pos_grid=3), "pos_grid is the side of the position table"),
        (dict(positions="keys"), "needs latents_in_kv=False"),
        (dict(positions="keys", latents_in_kv=False, dim=10), "dim divisible by 4"),
        (dict(positions="keys", latents_in_kv=False, pos_grid=2, num_latents=4), "takes no pos_grid"),
        (dict(positions="keys_and_queries", latents_in_kv=False), "needs pos_grid"),
        (
            dict(positions="keys_and_queries", latents_in_kv=False, pos_grid=2, num_latents=5),
            r"num_latents = pos_grid\*\*2 = 4",
        ),
    ],
)
def test_config_rejects_inconsistent_family_switches(switches, message):
    with pytest.raises((ValueError, TypeError), match=message):
        refimpl.ResamplerConfig(**({"dim": 12} | switches))


def test_config_defaults_are_the_flamingo_family():
    config = refimpl.ResamplerConfig(dim=8)
    assert (config.attn_bias, config.media_dim, config.pre_norm, config.attn_residual) == (False, None, True, True)
    assert (config.feed_forward, config.final_norm, config.out_dim, config.positions) == (True, True, None, None)
    assert (config.media_width, config.out_width) == (8, 8)


@given(config=resampler_configs(max_depth=3, family=True))
def test_param_shapes_follow_the_parameter_table_with_family_switches(config):
    assert refimpl.param_shapes(config) == naive.expected_param_shapes(config)


@given(config=resampler_configs(max_depth=2, family=True), seed=seeds)
def test_init_resampler_makes_every_family_parameter_random(config, seed):
    params = refimpl.init_resampler(config, seed=seed)
    assert params.keys() == refimpl.param_shapes(config).keys()
    for name, value in params.items():
        assert not np.isin(value, [0.0, 1.0]).any(), f"{name} has an entry of exactly 0 or 1"


def test_init_resampler_draws_the_input_and_output_projections_like_projections():
    # N(0, 1 / fan_in), not a norm scale's U(0.5, 1.5)
    config = refimpl.ResamplerConfig(dim=16, depth=1, heads=2, dim_head=3, num_latents=4, media_dim=40, out_dim=24)
    params = refimpl.init_resampler(config, seed=0)
    for name, fan_in in (("media_proj.weight", 40), ("out_proj.weight", 16)):
        assert (params[name] < 0).mean() > 0.3, name
        assert abs(params[name].std() * fan_in**0.5 - 1) < 0.2, name


# ---- positions


@pytest.mark.parametrize("dim, h, w", [(4, 1, 1), (8, 3, 5), (12, 7, 2)])
def test_sincos_2d_matches_the_formula(dim, h, w):
    assert_close(sincos_2d(dim, h, w), np.array(naive.sincos_2d(dim, h, w)), FLOAT64)


def test_sincos_2d_first_half_encodes_the_column_second_half_the_row():
    table = sincos_2d(8, 3, 5).reshape(3, 5, 8)  # (h, w, D)
    np.testing.assert_array_equal(table[0, :, :4], table[2, :, :4])  # same column, other row: first half equal
    np.testing.assert_array_equal(table[:, 0, 4:], table[:, 3, 4:])  # same row, other column: second half equal
    assert table[1, 2, 0] == np.sin(2.0) and table[1, 2, 4] == np.sin(1.0)


def torch_bicubic(table, old_grid, new_grid):
    (h0, w0), (h, w) = old_grid, new_grid
    image = torch.tensor(table).reshape(1, h0, w0, -1).permute(0, 3, 1, 2)  # (1, D, h0, w0)
    resized = F.interpolate(image, size=(h, w), mode="bicubic", align_corners=False)  # (1, D, h, w)
    return resized.permute(0, 2, 3, 1).reshape(h * w, -1).numpy()


@pytest.mark.parametrize(
    "old_grid, new_grid",
    [((4, 4), (7, 7)), ((6, 6), (3, 3)), ((5, 3), (7, 9)), ((9, 6), (2, 5)), ((3, 7), (6, 2)), ((1, 5), (3, 1))],
)
def test_resize_positions_matches_torch_bicubic(old_grid, new_grid):
    table = np.random.default_rng(0).standard_normal((old_grid[0] * old_grid[1], 6))
    ours = resize_positions(table, old_grid, new_grid)
    assert_close(ours, torch_bicubic(table, old_grid, new_grid), FLOAT64)  # 1e-12: the same math in another order


@given(
    old_grid=st.tuples(st.integers(1, 7), st.integers(1, 7)),
    new_grid=st.tuples(st.integers(1, 7), st.integers(1, 7)),
    seed=seeds,
)
def test_resize_positions_matches_torch_and_the_naive_loops(old_grid, new_grid, seed):
    table = np.random.default_rng(seed).standard_normal((old_grid[0] * old_grid[1], 3))
    ours = resize_positions(table, old_grid, new_grid)
    assert_close(ours, torch_bicubic(table, old_grid, new_grid), FLOAT64)
    assert_close(ours, np.array(naive.bicubic_resize(table.tolist(), *old_grid, *new_grid)), FLOAT64)


def test_resize_positions_keeps_the_table_on_the_same_grid():
    table = sincos_2d(8, 3, 4)
    np.testing.assert_array_equal(resize_positions(table, (3, 4), (3, 4)), table)


def test_resize_positions_names_a_table_that_does_not_fit_its_grid():
    with pytest.raises(ValueError, match=r"table must have shape \(h0\*w0, D\) = \(12, D\)"):
        resize_positions(np.zeros((10, 4)), (3, 4), (2, 2))


# ---- the forward pass


@given(case=family_cases())
def test_family_switches_match_the_naive_loops(case):
    config, params, x, mask, grid = case
    ours = refimpl.perceiver_resampler(params, x, config, mask=mask, grid=grid)
    theirs, _ = naive.perceiver_resampler(params, x, config, mask, grid)
    assert ours.shape == x.shape[:-3] + (config.num_latents, config.out_width)
    assert_close(ours, theirs, FLOAT64)


@given(case=family_cases(masked=True).filter(lambda case: case[0].positions is not None))
def test_padded_images_give_what_each_image_gives_alone(case):
    config, params, x, mask, grid = case
    out = refimpl.perceiver_resampler(params, x, config, mask=mask, grid=grid)
    grids = np.broadcast_to(grid, x.shape[:-3] + (2,))
    for index in np.ndindex(x.shape[:-3]):
        h, w = (int(side) for side in grids[index])
        alone = refimpl.perceiver_resampler(
            params, x[index][:, : h * w], config, mask=mask[index][:, : h * w], grid=(h, w)
        )
        assert_close(out[index], alone, FLOAT64)


def qwen_like(**switches):
    return refimpl.ResamplerConfig(
        dim=8,
        depth=1,
        heads=2,
        dim_head=3,
        num_latents=4,
        latents_in_kv=False,
        positions="keys_and_queries",
        pos_grid=2,
        attn_residual=False,
        feed_forward=False,
        final_norm=False,
        attn_bias=True,
        **switches,
    )


def test_keys_and_queries_positions_written_out():
    # k = (norm(media) + resized table) @ wk + bk, v = norm(media) @ wv + bv, q = (norm(latents) + table) @ wq + bq
    config = qwen_like()
    params = refimpl.init_resampler(config, seed=1)
    x = np.random.default_rng(1).standard_normal((1, 6, 8))  # (T, S, D), grid 2 x 3

    def layer_norm(rows, name):
        centered = rows - rows.mean(axis=-1, keepdims=True)
        scaled = centered / np.sqrt((centered**2).mean(axis=-1, keepdims=True) + 1e-5)
        return scaled * params[f"layers.0.attn.{name}.weight"] + params[f"layers.0.attn.{name}.bias"]

    def softmax(scores):
        e = np.exp(scores - scores.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    normed_media, normed_latents = layer_norm(x[0], "norm_media"), layer_norm(params["latents"], "norm_latents")
    key_table = np.array(naive.bicubic_resize(naive.sincos_2d(8, 2, 2), 2, 2, 2, 3))
    p = {name.removeprefix("layers.0.attn."): value for name, value in params.items()}
    q = (normed_latents + np.array(naive.sincos_2d(8, 2, 2))) @ p["wq"] + p["bq"]
    k = (normed_media + key_table) @ p["wk"] + p["bk"]
    v = normed_media @ p["wv"] + p["bv"]
    heads = [
        softmax(q[:, h * 3 : h * 3 + 3] @ k[:, h * 3 : h * 3 + 3].T / np.sqrt(3)) @ v[:, h * 3 : h * 3 + 3]
        for h in range(2)
    ]
    expected = np.concatenate(heads, axis=-1) @ p["wo"] + p["bo"]
    assert_close(refimpl.perceiver_resampler(params, x, config, grid=(2, 3)), expected, FLOAT64)


def test_float32_arithmetic_stays_float32_with_every_switch():
    config = qwen_like(media_dim=5, media_proj_bias=True, out_dim=7, out_norm=True)
    params = refimpl.init_resampler(config, seed=2)
    x = np.random.default_rng(2).standard_normal((2, 1, 6, 5))
    out = refimpl.perceiver_resampler(params, x, config, grid=(3, 2), dtype=np.float32)
    assert out.dtype == np.float32
    assert_close(out, refimpl.perceiver_resampler(params, x, config, grid=(3, 2)), ("float32", "vs float64 reference"))


def test_defaults_of_the_new_switches_change_nothing():
    config = refimpl.ResamplerConfig(dim=12, depth=2, heads=3, dim_head=5, num_latents=7)
    explicit = dataclasses.replace(
        config,
        attn_bias=False,
        media_dim=None,
        pre_norm=True,
        attn_residual=True,
        feed_forward=True,
        final_norm=True,
        out_dim=None,
        out_norm=False,
        positions=None,
        pos_grid=None,
    )
    params = refimpl.init_resampler(config, seed=4)
    x = np.random.default_rng(4).standard_normal((2, 3, 5, 12))
    np.testing.assert_array_equal(
        refimpl.perceiver_resampler(params, x, explicit), refimpl.perceiver_resampler(params, x, config)
    )


# ---- the grid argument


@pytest.mark.parametrize(
    "grid, mask, message",
    [
        (None, None, "grid must be given with config.positions"),
        ((2, 2), None, r"h\*w = S = 6 without a mask"),
        ((3, 3), None, r"h\*w <= S = 6"),
        ((0, 6), None, "sides h, w >= 1"),
        ((2.0, 3.0), None, "int array"),
        (np.array([[2, 3], [1, 6], [3, 2]]), None, r"\.\.\. = x.shape\[:-3\] = \(2,\)"),
        ((1, 4), np.ones((2, 1, 6), dtype=bool), "must mark the tokens past each image's h\\*w"),
    ],
)
def test_a_wrong_grid_is_a_clear_error(grid, mask, message):
    config = qwen_like()
    params = refimpl.init_resampler(config)
    with pytest.raises(ValueError, match=message):
        refimpl.perceiver_resampler(params, np.zeros((2, 1, 6, 8)), config, mask=mask, grid=grid)


def test_a_grid_without_positions_is_an_error():
    config = refimpl.ResamplerConfig(dim=8, depth=1, heads=2, dim_head=3, num_latents=4)
    with pytest.raises(ValueError, match="config.positions is None"):
        refimpl.perceiver_resampler(refimpl.init_resampler(config), np.zeros((1, 6, 8)), config, grid=(2, 3))


def test_media_dim_sets_the_width_of_x():
    config = refimpl.ResamplerConfig(dim=8, depth=1, heads=2, dim_head=3, num_latents=4, media_dim=5)
    with pytest.raises(ValueError, match=r"D = config.media_dim = 5; got \(1, 6, 8\)"):
        refimpl.perceiver_resampler(refimpl.init_resampler(config), np.zeros((1, 6, 8)), config)
