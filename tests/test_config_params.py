"""ResamplerConfig (validated, frozen), param_shapes and init_resampler."""

import dataclasses

import naive
import numpy as np
import pytest
from helpers import resampler_configs, seeds
from hypothesis import given

import refimpl

# ---------------------------------------------------------------- ResamplerConfig


def test_config_defaults_are_the_issues():
    config = refimpl.ResamplerConfig(dim=32)
    assert (config.depth, config.heads, config.dim_head, config.num_latents) == (6, 8, 64, 64)
    assert config.ff_mult == 4
    assert config.num_time_embeds is None


def test_config_is_frozen():
    config = refimpl.ResamplerConfig(dim=32)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.dim = 16


@given(config=resampler_configs(max_depth=3))
def test_config_accepts_every_valid_combination(config):
    rebuilt = refimpl.ResamplerConfig(**dataclasses.asdict(config))
    assert rebuilt == config


INVALID_CONFIGS = [
    # (keyword arguments, exception, what the message must name)
    (dict(dim=0), ValueError, "dim"),
    (dict(dim=-3), ValueError, "dim"),
    (dict(dim=2.5), TypeError, "dim"),
    (dict(dim="64"), TypeError, "dim"),
    (dict(dim=True), TypeError, "dim"),
    (dict(dim=8, depth=0), ValueError, "depth"),
    (dict(dim=8, heads=0), ValueError, "heads"),
    (dict(dim=8, heads=2.0), TypeError, "heads"),
    (dict(dim=8, dim_head=0), ValueError, "dim_head"),
    (dict(dim=8, num_latents=0), ValueError, "num_latents"),
    (dict(dim=8, ff_mult=0), ValueError, "ff_mult"),
    (dict(dim=8, ff_mult=-1), ValueError, "ff_mult"),
    (dict(dim=8, ff_mult=float("nan")), ValueError, "ff_mult"),
    (dict(dim=8, ff_mult=float("inf")), ValueError, "ff_mult"),
    (dict(dim=8, ff_mult="4"), TypeError, "ff_mult"),
    (dict(dim=5, ff_mult=0.3), ValueError, "ff_mult"),  # F = 1.5 is not a whole number
    (dict(dim=8, num_time_embeds=0), ValueError, "num_time_embeds"),
    (dict(dim=8, num_time_embeds=2.0), TypeError, "num_time_embeds"),
    (dict(dim=8, heads=8, kv_heads=3), ValueError, "kv_heads"),
    (dict(dim=8, heads=4, kv_heads=8), ValueError, "kv_heads"),
    (dict(dim=8, kv_heads=0), ValueError, "kv_heads"),
    (dict(dim=8, activation="tanh"), ValueError, "activation"),
    (dict(dim=8, activation="GELU"), ValueError, "activation"),
    (dict(dim=8, norm="batchnorm"), ValueError, "norm"),
    (dict(dim=8, norm_eps=0.0), ValueError, "norm_eps"),
    (dict(dim=8, norm_eps=-1e-5), ValueError, "norm_eps"),
    (dict(dim=8, norm_eps=float("nan")), ValueError, "norm_eps"),
    (dict(dim=8, qk_norm="yes"), TypeError, "qk_norm"),
    (dict(dim=8, qk_norm=1), TypeError, "qk_norm"),
    (dict(dim=8, latents_in_kv=None), TypeError, "latents_in_kv"),
]


@pytest.mark.parametrize(("kwargs", "error", "name"), INVALID_CONFIGS, ids=[repr(c[0]) for c in INVALID_CONFIGS])
def test_config_rejects_an_invalid_value_naming_the_field(kwargs, error, name):
    with pytest.raises(error, match=rf"\b{name}\b"):
        refimpl.ResamplerConfig(**kwargs)


# ---------------------------------------------------------------- param_shapes, init_resampler


@given(config=resampler_configs(max_depth=3))
def test_param_shapes_follow_the_parameter_table(config):
    assert refimpl.param_shapes(config) == naive.expected_param_shapes(config)


@given(config=resampler_configs(max_depth=3), seed=seeds)
def test_init_resampler_gives_a_float64_array_for_every_name_in_param_shapes(config, seed):
    params = refimpl.init_resampler(config, seed=seed)
    shapes = refimpl.param_shapes(config)
    assert set(params) == set(shapes)
    for name, value in params.items():
        assert isinstance(value, np.ndarray) and value.dtype == np.float64, name
        assert value.shape == shapes[name], name
        assert np.isfinite(value).all(), name


@given(config=resampler_configs(max_depth=3), seed=seeds)
def test_init_resampler_makes_every_parameter_random(config, seed):
    # no scale left at 1 and no shift at 0, so that no test passes by that accident
    params = refimpl.init_resampler(config, seed=seed)
    for name, value in params.items():
        assert not np.isin(value, [0.0, 1.0]).any(), f"{name} has an entry of exactly 0 or 1"
        if value.size > 1:
            assert np.unique(value).size == value.size, f"{name} repeats a value"


@given(config=resampler_configs(max_depth=2), seed=seeds)
def test_init_resampler_is_a_function_of_the_seed(config, seed):
    first, second = refimpl.init_resampler(config, seed=seed), refimpl.init_resampler(config, seed=seed)
    other = refimpl.init_resampler(config, seed=seed + 1)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    assert any(not np.array_equal(first[name], other[name]) for name in first)


def test_init_resampler_seed_defaults_to_zero():
    config = refimpl.ResamplerConfig(dim=6, depth=1, heads=2, dim_head=3, num_latents=4)
    default, zero = refimpl.init_resampler(config), refimpl.init_resampler(config, seed=0)
    for name in zero:
        np.testing.assert_array_equal(default[name], zero[name])
