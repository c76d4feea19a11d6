"""refimpl.tiny: the NumPy model and its torch twin are one function, any image size gives R
tokens, the shipped model is the trained one, and the time-embedding interpolation."""

import numpy as np
import pytest
import torch
from helpers import FLOAT64, assert_close, seeds
from hypothesis import given
from hypothesis import strategies as st

import refimpl
import refimpl.torch as rt
from refimpl.scenes import make_clips, make_scenes
from refimpl.tiny.model import (
    TinyConfig,
    encode,
    init_tiny_model,
    load_pretrained,
    patchify,
    positions,
    save_pretrained,
    tiny_model,
    tiny_param_shapes,
)
from refimpl.tiny.torch import TinyModel
from refimpl.tiny.train import accuracy, scene_batches, train

SMALL = TinyConfig(patch=4, frequencies=2, outputs=5, dim=12, depth=2, heads=2, dim_head=5, num_latents=3)


def test_patch_i_j_is_the_block_of_pixels_at_row_i_column_j():
    images = np.random.default_rng(0).random((2, 12, 20, 3))
    patches, grid = patchify(images, 4)
    assert grid == (3, 5) and patches.shape == (2, 15, 48)
    for i, j in [(0, 0), (1, 3), (2, 4)]:
        np.testing.assert_array_equal(
            patches[:, i * 5 + j], images[:, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4].reshape(2, -1)
        )


def test_patchify_names_a_size_that_is_not_a_multiple_of_the_patch():
    with pytest.raises(ValueError, match="multiples of patch = 8"):
        patchify(np.zeros((1, 30, 32, 3)), 8)


def test_positions_are_fourier_features_of_the_patch_centres():
    features = positions((2, 4), 3)  # (S, 4 * frequencies)
    assert features.shape == (8, 12)
    u, v = 0.75, 0.375  # patch (1, 1): centre at row 1.5 / 2, column 1.5 / 4
    np.testing.assert_allclose(features[5, :3], np.sin(np.pi * np.array([1, 2, 4]) * u))
    np.testing.assert_allclose(features[5, 9:], np.cos(np.pi * np.array([1, 2, 4]) * v))


@given(seed=seeds, height=st.sampled_from([8, 12, 20]), width=st.sampled_from([4, 16, 24]))
def test_any_image_size_gives_r_tokens_and_q_logits(seed, height, width):
    params = init_tiny_model(SMALL, seed=seed % 1000)
    images = np.random.default_rng(seed).random((2, height, width, 3))
    tokens, grid = encode(params, images, SMALL)
    assert tokens.shape == (2, 1, (height // 4) * (width // 4), SMALL.dim) and grid == (height // 4, width // 4)
    logits, maps, _ = tiny_model(params, images, SMALL, return_attention=True)
    assert logits.shape == (2, SMALL.outputs)
    assert [m.shape for m in maps] == [
        (2, SMALL.heads, SMALL.num_latents, tokens.shape[2] + SMALL.num_latents)
    ] * SMALL.depth


@pytest.mark.parametrize("frames", [None, 3])
def test_torch_twin_is_the_same_function_in_float64(frames):
    config = TinyConfig(**{**SMALL.__dict__, "frames": frames})
    params = init_tiny_model(config, seed=1)
    params = {
        name: value + 0.1 * np.random.default_rng(2).standard_normal(np.shape(value)) for name, value in params.items()
    }
    shape = (2, 12, 16, 3) if frames is None else (2, 3, 12, 16, 3)
    images = np.random.default_rng(3).random(shape)
    model = TinyModel.from_refimpl(config, params)
    with torch.no_grad():
        logits, maps, grid = model(torch.from_numpy(images), return_attention=True)
    expected, expected_maps, expected_grid = tiny_model(params, images, config, return_attention=True)
    assert grid == expected_grid
    assert_close(logits.numpy(), expected, FLOAT64, "logits")
    for ours, reference in zip(maps, expected_maps, strict=True):
        assert_close(ours.numpy(), reference, FLOAT64, "attention weights")
    back = model.to_refimpl()
    assert back.keys() == params.keys() and all(np.array_equal(back[k], params[k]) for k in params)


def test_clips_need_a_frame_axis_and_images_none():
    params = init_tiny_model(SMALL)
    with pytest.raises(ValueError, match=r"images must have shape \(B, height, width, 3\)"):
        tiny_model(params, np.zeros((1, 2, 8, 8, 3)), SMALL)
    with pytest.raises(ValueError, match="params do not fit the tiny model"):
        tiny_model({k: v for k, v in params.items() if k != "head.b_out"}, np.zeros((1, 8, 8, 3)), SMALL)


def test_init_gives_every_parameter_its_shape():
    params = init_tiny_model(SMALL)
    assert {name: value.shape for name, value in params.items()} == tiny_param_shapes(SMALL)


def test_the_shipped_model_answers_held_out_scenes_it_never_saw():
    config, params = load_pretrained()
    assert config == TinyConfig()
    right = []
    for i, (height, width) in enumerate([(40, 104), (96, 64)]):
        scenes = make_scenes(64, height, width, seed=5000 + i)  # seeds far from training's
        right.append((tiny_model(params, scenes.images, config) > 0) == scenes.labels)
    per_question = np.mean(right)
    assert per_question >= 0.98, f"the shipped model answers {per_question:.1%} of held-out questions right"


def test_a_saved_model_loads_back_as_it_was_in_float32(tmp_path, monkeypatch):
    params = init_tiny_model(SMALL, seed=4)
    path = tmp_path / "model.npz"
    save_pretrained(SMALL, params, path)
    monkeypatch.setattr("refimpl.tiny.model.PRETRAINED", path)
    config, loaded = load_pretrained()
    assert config == SMALL
    assert all(np.array_equal(loaded[k], params[k].astype(np.float32)) for k in params)


def test_a_few_training_steps_lower_the_loss():
    torch.manual_seed(0)
    config = TinyConfig(dim=16, depth=1, heads=2, dim_head=8, num_latents=4)
    model = TinyModel.from_refimpl(config, init_tiny_model(config, seed=0), dtype=torch.float32)
    history = train(model, scene_batches(8, seed=0, low=32, high=32), 40, lr=1e-2, progress=False)
    assert history.losses.shape == history.step_seconds.shape == (40,)
    assert history.losses[-10:].mean() < 0.8 * history.losses[:5].mean()
    per_question, per_scene = accuracy(model, [make_scenes(16, 32, 40, seed=9)])
    assert 0 <= per_scene <= per_question <= 1


def test_interpolated_time_embeddings_keep_the_ends_and_spread_the_rest_linearly():
    table = np.random.default_rng(0).standard_normal((4, 6))
    stretched = refimpl.interpolate_time_embeds(table, 7)  # positions 0, 0.5, 1, ..., 3
    np.testing.assert_array_equal(stretched[::2], table)
    np.testing.assert_allclose(stretched[1::2], (table[:-1] + table[1:]) / 2, rtol=1e-15)
    np.testing.assert_array_equal(refimpl.interpolate_time_embeds(table, 4), table)


@given(seed=seeds, rows=st.integers(2, 6), frames=st.integers(2, 20))
def test_torch_interpolation_equals_refimpl(seed, rows, frames):
    table = np.random.default_rng(seed).standard_normal((rows, 5))
    ours = rt.interpolate_time_embeds(torch.from_numpy(table), frames).numpy()
    assert_close(ours, refimpl.interpolate_time_embeds(table, frames), FLOAT64, "interpolated table")


def test_a_clip_model_runs_on_more_frames_with_an_interpolated_table():
    config = TinyConfig(**{**SMALL.__dict__, "frames": 2})
    params = init_tiny_model(config)
    params["resampler.time_embeds"] = np.random.default_rng(0).standard_normal((2, SMALL.dim))
    longer = TinyConfig(**{**SMALL.__dict__, "frames": 5})
    stretched = {**params, "resampler.time_embeds": refimpl.interpolate_time_embeds(params["resampler.time_embeds"], 5)}
    clips = make_clips(2, 5, 16, 16, seed=0)
    assert tiny_model(stretched, clips.frames, longer).shape == (2, SMALL.outputs)


@pytest.mark.parametrize(
    "table, frames, message", [(np.zeros((1, 3)), 4, "Tmax >= 2"), (np.zeros((3, 3)), 1, "frames must be at least 2")]
)
def test_interpolation_names_a_bad_argument(table, frames, message):
    with pytest.raises(ValueError, match=message):
        refimpl.interpolate_time_embeds(table, frames)
