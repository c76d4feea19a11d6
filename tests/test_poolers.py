"""refimpl.tiny.poolers, the resampler's rivals of notebook 8: parameters matched to the
resampler's, R output tokens whatever the image's size (non-square too), the mean over
adaptive cells, the patch grid taken from the encoder, and the same start for encoder and
head in every variant."""

import copy
import dataclasses

import numpy as np
import pytest
import torch
from helpers import assert_close, seeds
from hypothesis import given, settings
from hypothesis import strategies as st

from refimpl.exercises.ablation import pooling_matrix
from refimpl.tiny.model import TinyConfig, init_tiny_model
from refimpl.tiny.poolers import (
    KINDS,
    MeanPooler,
    ablation_model,
    cell_grid,
    count_parameters,
    make_pooler,
    matched_ff_dim,
    pool_to_grid,
    resampler_parameters,
)
from refimpl.tiny.torch import TinyModel

RIVALS = KINDS[1:]
TORCH_FLOAT64 = ("float64", "torch vs numpy")
CONFIGS = {
    "TinyConfig()": TinyConfig(),
    "the search task's, Q = 12": TinyConfig(outputs=12),
    "D = 48, depth 3, H*Dh = 60, R = 8": TinyConfig(dim=48, depth=3, heads=3, dim_head=20, num_latents=8),
    "clips, T = 3, R = 6": TinyConfig(frames=3, num_latents=6),
}


def pooler_output(model, images):
    """The pooler's output (B, R, D) for `images`, caught on its way to the head."""
    caught = []
    handle = model.resampler.register_forward_hook(lambda module, inputs, output: caught.append(output))
    with torch.no_grad():
        logits = model(images)
    handle.remove()
    assert logits.shape == (len(images), model.config.outputs)
    return caught[0]


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("kind", RIVALS)
def test_every_rival_has_the_resampler_parameter_count_within_1_percent(kind, config):
    model = ablation_model(kind, config)
    ratio = count_parameters(model.resampler) / resampler_parameters(config)
    assert abs(ratio - 1) <= 0.01, f"{kind}: {ratio:.4f} x the resampler's parameters"


@pytest.mark.parametrize("kind", RIVALS)
def test_with_the_tiny_config_the_match_is_exact(kind):
    assert (
        count_parameters(ablation_model(kind, TinyConfig()).resampler) == resampler_parameters(TinyConfig()) == 67_456
    )


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("kind", RIVALS)
def test_matched_width_is_the_closest_to_the_budget(kind, config):
    width, budget = matched_ff_dim(kind, config), resampler_parameters(config)
    misses = [abs(count_parameters(make_pooler(kind, config, f)) - budget) for f in (width - 1, width, width + 1)]
    assert misses[1] == min(misses)


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_whole_models_differ_only_by_their_poolers(config):
    models = {kind: ablation_model(kind, config) for kind in KINDS}
    rest = {kind: count_parameters(model) - count_parameters(model.resampler) for kind, model in models.items()}
    assert len(set(rest.values())) == 1, rest


def test_resampler_variant_is_the_refimpl_tiny_model():
    config = TinyConfig()
    ours = ablation_model("resampler", config, seed=3, dtype=torch.float64).state_dict()
    theirs = TinyModel.from_refimpl(config, init_tiny_model(config, seed=3)).state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)


@pytest.mark.parametrize("kind", RIVALS)
def test_encoder_and_head_start_as_the_resampler_model_s(kind):
    reference = ablation_model("resampler", TinyConfig(), seed=1).state_dict()
    ours = ablation_model(kind, TinyConfig(), seed=1).state_dict()
    shared = [name for name in reference if not name.startswith("resampler.")]
    assert shared and all(torch.equal(ours[name], reference[name]) for name in shared)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [(24, 40), (40, 24), (56, 88), (32, 32)])
def test_output_is_r_tokens_for_non_square_images(kind, size):
    config = TinyConfig(num_latents=6)  # cells (2, 3): non-square too
    model = ablation_model(kind, config)
    images = torch.rand(3, *size, 3)
    assert pooler_output(model, images).shape == (3, 6, config.dim)


@pytest.mark.parametrize("kind", KINDS)
def test_output_shape_does_not_depend_on_image_size(kind):
    model = ablation_model(kind, TinyConfig())
    shapes = {pooler_output(model, torch.rand(2, h, w, 3)).shape for h, w in [(16, 16), (48, 24), (40, 120), (128, 96)]}
    assert shapes == {torch.Size([2, 16, 64])}


@pytest.mark.parametrize("kind", KINDS)
def test_clips_of_frames_give_r_tokens(kind):
    config = CONFIGS["clips, T = 3, R = 6"]
    assert pooler_output(ablation_model(kind, config), torch.rand(2, 3, 24, 40, 3)).shape == (2, 6, config.dim)


@pytest.mark.parametrize("kind", RIVALS)
def test_every_parameter_gets_a_gradient(kind):
    model = ablation_model(kind, TinyConfig())
    model(torch.rand(2, 40, 56, 3)).square().mean().backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not unused, f"{kind}: parameters that do not reach the output: {unused}"


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [(1, (1, 1)), (2, (1, 2)), (7, (1, 7)), (8, (2, 4)), (16, (4, 4)), (32, (4, 8)), (36, (6, 6))],
)
def test_cell_grid_is_the_factor_pair_closest_to_square(tokens, expected):
    assert cell_grid(tokens) == expected


def test_pool_to_grid_on_a_divisible_grid_is_the_mean_of_each_block():
    rng = np.random.default_rng(0)
    tokens = rng.standard_normal((2, 1, 4 * 9, 5))  # (B, T, S, D), grid (4, 9)
    blocks = tokens.reshape(2, 2, 2, 3, 3, 5).mean(axis=(2, 4))  # (B, gh, gw, D): 2 x 3 patches per cell
    assert_close(pool_to_grid(torch.from_numpy(tokens), (4, 9), (2, 3)).numpy(), blocks.reshape(2, 6, 5), TORCH_FLOAT64)


def test_pool_to_grid_averages_over_frames():
    tokens = torch.rand(2, 3, 12, 4, dtype=torch.float64)  # (B, T, S, D), grid (3, 4)
    by_frame = torch.stack([pool_to_grid(tokens[:, t : t + 1], (3, 4), (2, 2)) for t in range(3)])
    assert_close(pool_to_grid(tokens, (3, 4), (2, 2)).numpy(), by_frame.mean(0).numpy(), TORCH_FLOAT64)


@settings(max_examples=25, deadline=None)
@given(seed=seeds, h=st.integers(1, 9), w=st.integers(1, 9), gh=st.integers(1, 5), gw=st.integers(1, 5))
def test_pool_to_grid_is_the_pooling_matrix_times_the_tokens(seed, h, w, gh, gw):
    tokens = np.random.default_rng(seed).standard_normal((2, 1, h * w, 3))
    expected = pooling_matrix((h, w), (gh, gw)) @ tokens[:, 0]  # (R, S) @ (B, S, D)
    assert_close(pool_to_grid(torch.from_numpy(tokens), (h, w), (gh, gw)).numpy(), expected, TORCH_FLOAT64)


def test_a_pooler_without_its_grid_says_so():
    with pytest.raises(ValueError, match="needs the patch grid"):
        MeanPooler(64, 16)(torch.rand(2, 1, 24, 64))


def test_a_grid_that_does_not_fit_the_tokens_is_refused():
    pooler = MeanPooler(64, 16)
    pooler.grid = (4, 5)
    with pytest.raises(ValueError, match="S = 24 patches"):
        pooler(torch.rand(2, 1, 24, 64))


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind must be one of"):
        ablation_model("cnn", TinyConfig())


def test_a_deep_copy_hands_the_grid_to_its_own_pooler():
    model = ablation_model("mean", TinyConfig())
    twin = copy.deepcopy(model)
    twin(torch.rand(1, 24, 40, 3))
    assert twin.resampler.grid == (3, 5) and model.resampler.grid is None


def test_the_grid_follows_each_input():
    model = ablation_model("transformer", dataclasses.replace(TinyConfig(), num_latents=4))
    for size, grid in [((24, 40), (3, 5)), ((64, 16), (8, 2))]:
        model(torch.rand(1, *size, 3))
        assert model.resampler.grid == grid
