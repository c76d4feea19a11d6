"""Per-media-item embeddings (num_media_embeds) and float32 normalisation (norm_dtype):
the two switches that flamingo-pytorch, open_flamingo and Idefics2 need."""

import numpy as np
import pytest
from helpers import FLOAT32_VS_FLOAT64, assert_close, seeds
from hypothesis import given
from hypothesis import strategies as st

import refimpl


def small_config(**switches):
    return refimpl.ResamplerConfig(dim=12, depth=2, heads=3, dim_head=5, num_latents=4, ff_mult=2, **switches)


@given(items=st.integers(1, 3), frames=st.integers(1, 2), space=st.integers(1, 5), seed=seeds)
def test_media_item_i_is_resampled_alone_with_row_i_added_to_its_tokens(items, frames, space, seed):
    config = small_config(num_media_embeds=3, num_time_embeds=2)
    params = refimpl.init_resampler(config, seed=seed % 1000)
    x = np.random.default_rng(seed).standard_normal((2, items, frames, space, 12))  # (B, I, T, S, D)
    out = refimpl.perceiver_resampler(params, x, config)
    assert out.shape == (2, items, 4, 12)
    plain = refimpl.ResamplerConfig(**{**config.__dict__, "num_media_embeds": None})
    plain_params = {name: value for name, value in params.items() if name != "media_embeds"}
    for i in range(items):
        shifted = x[:, i] + params["media_embeds"][i]  # (B, T, S, D)
        assert_close(out[:, i], refimpl.perceiver_resampler(plain_params, shifted, plain), what=f"item {i}")


def test_media_embeddings_need_an_item_axis_and_a_row_per_item():
    config = small_config(num_media_embeds=2)
    params = refimpl.init_resampler(config)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., I, T, S, D\)"):
        refimpl.perceiver_resampler(params, np.zeros((1, 3, 12)), config)
    with pytest.raises(ValueError, match=r"x has I = 3 media items .* config.num_media_embeds = 2"):
        refimpl.perceiver_resampler(params, np.zeros((3, 1, 3, 12)), config)


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_normalising_in_float32_is_close_to_but_not_the_float64_reference(norm):
    rng = np.random.default_rng(0)
    config = small_config(norm=norm, activation="swiglu", kv_heads=1)
    params = refimpl.init_resampler(config)
    x = rng.standard_normal((3, 1, 7, 12)) * 10
    reference = refimpl.perceiver_resampler(params, x, config)
    low = refimpl.perceiver_resampler(
        params, x, refimpl.ResamplerConfig(**{**config.__dict__, "norm_dtype": "float32"})
    )
    assert low.dtype == np.float64
    assert_close(low, reference, FLOAT32_VS_FLOAT64)
    assert refimpl.relative_error(low, reference) > 1e-10  # float32 rounding really happened


def test_norm_dtype_float32_matches_a_norm_computed_by_hand_in_float32():
    from refimpl.layers import norm

    rng = np.random.default_rng(1)
    x, weight = rng.standard_normal((4, 9)), rng.uniform(0.5, 1.5, 9)
    x32 = x.astype(np.float32)
    by_hand = (x32 * (1 / np.sqrt((x32 * x32).mean(-1, keepdims=True) + np.float32(1e-6)))).astype(np.float64) * weight
    ours = norm({"n.weight": weight}, "n.", x, "rmsnorm", 1e-6, "float32")
    np.testing.assert_array_equal(ours, by_hand)


def test_norm_dtype_must_be_none_or_float32():
    with pytest.raises(ValueError, match="norm_dtype must be None or 'float32'; got 'float16'"):
        small_config(norm_dtype="float16")
