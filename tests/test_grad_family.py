"""refimpl.grad.perceiver_resampler_backward with the switches of the later resamplers (issue 12):
every gradient against central finite differences and torch's autograd through refimpl.torch,
biases, projections, positions (constants: they have no gradient), no norms, no residual,
no feed-forward, padded images of different grids."""

import numpy as np
import pytest
import torch
from helpers import (
    assert_gradients_close,
    assert_matches_finite_differences,
    family_cases,
    norms_resolve_their_inputs,
    resampler_configs,
    seeds,
)
from hypothesis import given
from hypothesis import strategies as st

import refimpl
import refimpl.torch as rt
from refimpl.grad import mean_squared_error, perceiver_resampler_backward, value_and_grad

CASES = family_cases().filter(lambda case: norms_resolve_their_inputs(case[0]))
# without relu's kink for finite differences (see test_grad_resampler)
SMOOTH_CASES = family_cases(
    configs=st.sampled_from(["gelu", "squared_relu", "swiglu"]).flatmap(
        lambda a: resampler_configs(activation=a, family=True)
    )
).filter(lambda case: norms_resolve_their_inputs(case[0]))


def output_gradient(config, x, seed):
    """A random dL/d(output) (..., R, D or out_dim)."""
    return np.random.default_rng(seed).standard_normal(x.shape[:-3] + (config.num_latents, config.out_width))


def torch_gradients(config, params, x, mask, grid, dout):
    """(dx, dparams) by torch's autograd through refimpl.torch.PerceiverResampler in float64, in refimpl's names."""
    module = rt.PerceiverResampler.from_refimpl(config, params)
    x_tensor = torch.tensor(x, requires_grad=True)
    out = module(x_tensor, None if mask is None else torch.as_tensor(mask), grid=grid)
    out.backward(torch.as_tensor(dout))
    grads = {name: torch.zeros_like(p) if p.grad is None else p.grad for name, p in module.named_parameters()}
    return x_tensor.grad.numpy(), rt.from_state_dict(grads)


@given(case=SMOOTH_CASES, seed=seeds)
def test_family_backward_matches_finite_differences(case, seed):
    config, params, x, mask, grid = case
    dout = output_gradient(config, x, seed)
    dx, dparams = perceiver_resampler_backward(params, x, config, dout, mask=mask, grid=grid)
    assert dx.shape == x.shape
    assert dparams.keys() == params.keys() and all(dparams[name].shape == params[name].shape for name in params)

    def resample(inputs):
        return refimpl.perceiver_resampler(
            {name: inputs[name] for name in params}, inputs["x"], config, mask=mask, grid=grid
        )

    assert_matches_finite_differences(resample, {"x": x} | params, {"x": dx} | dparams, dout, seed)


@given(case=CASES, seed=seeds)
def test_family_backward_matches_torch_autograd(case, seed):
    config, params, x, mask, grid = case
    dout = output_gradient(config, x, seed)
    dx, dparams = perceiver_resampler_backward(params, x, config, dout, mask=mask, grid=grid)
    theirs_dx, theirs = torch_gradients(config, params, x, mask, grid, dout)
    assert_gradients_close({"x": dx} | dparams, {"x": theirs_dx} | theirs)


def test_padding_past_each_grid_gets_no_gradient():
    config = refimpl.ResamplerConfig(
        dim=8,
        depth=1,
        heads=2,
        dim_head=3,
        num_latents=4,
        latents_in_kv=False,
        positions="keys_and_queries",
        pos_grid=2,
        attn_bias=True,
        media_dim=5,
        attn_residual=False,
        feed_forward=False,
        final_norm=False,
        out_dim=6,
        out_proj_bias=False,
    )
    params = refimpl.init_resampler(config, seed=2)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 1, 9, 5))
    grid = np.array([[3, 3], [2, 3]])
    mask = np.arange(9) < np.array([9, 6])[:, None, None]  # (2, 1, 9)
    dx, _ = perceiver_resampler_backward(params, x, config, rng.standard_normal((2, 4, 6)), mask=mask, grid=grid)
    assert (dx[1, :, 6:] == 0).all() and (dx[0] != 0).any() and (dx[1, :, :6] != 0).any()


def test_value_and_grad_takes_the_grid_and_the_output_width():
    config = refimpl.ResamplerConfig(
        dim=8,
        depth=1,
        heads=2,
        dim_head=3,
        num_latents=4,
        latents_in_kv=False,
        positions="keys",
        out_dim=7,
        out_norm=True,
    )
    params = refimpl.init_resampler(config, seed=3)
    x = np.random.default_rng(3).standard_normal((2, 1, 6, 8))
    target = np.zeros((2, 4, 7))
    value, dx, dparams = value_and_grad(params, x, config, mean_squared_error(target), grid=(2, 3))
    dout = mean_squared_error(target)(refimpl.perceiver_resampler(params, x, config, grid=(2, 3)))[1]
    expected_dx, expected = perceiver_resampler_backward(params, x, config, dout, grid=(2, 3))
    np.testing.assert_array_equal(dx, expected_dx)
    assert all(np.array_equal(dparams[name], expected[name]) for name in expected)
    with pytest.raises(ValueError, match=r"dout must have shape .*\(2, 4, 7\)"):
        perceiver_resampler_backward(params, x, config, np.zeros((2, 4, 8)), grid=(2, 3))
