"""refimpl.torch.PerceiverResampler with the switches of the later resamplers (issue 12): the
same function as the NumPy reference in float64, attention maps, grids, weights both ways."""

import numpy as np
import pytest
import torch
from helpers import assert_close, family_cases, resampler_configs, seeds
from hypothesis import given

import refimpl
import refimpl.torch as rt

TORCH_FLOAT64 = ("float64", "torch vs numpy")


def run_torch(config, params, x, mask, grid, **kwargs):
    module = rt.PerceiverResampler.from_refimpl(config, params)
    mask = None if mask is None else torch.as_tensor(mask)
    with torch.no_grad():
        return module(torch.as_tensor(x), mask, grid=grid, **kwargs)


@given(case=family_cases())
def test_torch_module_equals_refimpl_with_the_family_switches(case):
    config, params, x, mask, grid = case
    expected, expected_maps = refimpl.perceiver_resampler(
        params, x, config, mask=mask, grid=grid, return_attention=True
    )
    assert_close(run_torch(config, params, x, mask, grid).numpy(), expected, TORCH_FLOAT64)
    out, maps = run_torch(config, params, x, mask, grid, return_attention=True)
    assert_close(out.numpy(), expected, TORCH_FLOAT64)
    for layer, (ours, theirs) in enumerate(zip(maps, expected_maps, strict=True)):
        assert_close(ours.numpy(), theirs, TORCH_FLOAT64, what=f"layer {layer} attention weights")


@given(case=family_cases())
def test_torch_module_with_autograd_equals_refimpl_with_the_family_switches(case):
    config, params, x, mask, grid = case
    module = rt.PerceiverResampler.from_refimpl(config, params)
    x_tensor = torch.from_numpy(x).requires_grad_()
    out = module(x_tensor, None if mask is None else torch.from_numpy(mask), grid=grid)
    assert_close(
        out.detach().numpy(), refimpl.perceiver_resampler(params, x, config, mask=mask, grid=grid), TORCH_FLOAT64
    )
    out.square().sum().backward()
    assert x_tensor.grad is not None and torch.isfinite(x_tensor.grad).all()


@given(config=resampler_configs(family=True), seed=seeds)
def test_family_weights_move_both_ways_exactly(config, seed):
    params = refimpl.init_resampler(config, seed=seed)
    back = rt.PerceiverResampler.from_refimpl(config, params).to_refimpl()
    assert back.keys() == params.keys()
    for name in params:
        np.testing.assert_array_equal(back[name], params[name], err_msg=name)


def test_biases_and_projections_have_nn_linear_names_and_layouts():
    config = refimpl.ResamplerConfig(
        dim=8, depth=1, heads=2, dim_head=3, num_latents=4, attn_bias=True, media_dim=5, media_proj_bias=True, out_dim=7
    )
    params = refimpl.init_resampler(config)
    state = rt.PerceiverResampler.from_refimpl(config, params).state_dict()
    np.testing.assert_array_equal(state["layers.0.attn.wq.bias"].numpy(), params["layers.0.attn.bq"])
    np.testing.assert_array_equal(state["layers.0.attn.wo.bias"].numpy(), params["layers.0.attn.bo"])
    np.testing.assert_array_equal(state["media_proj.weight"].numpy(), params["media_proj.weight"].T)  # (D, Dm)
    np.testing.assert_array_equal(state["out_proj.weight"].numpy(), params["out_proj.weight"].T)  # (Do, D)
    np.testing.assert_array_equal(state["out_proj.bias"].numpy(), params["out_proj.bias"])


def test_torch_module_names_a_wrong_grid():
    config = refimpl.ResamplerConfig(
        dim=8, depth=1, heads=2, dim_head=3, num_latents=4, latents_in_kv=False, positions="keys"
    )
    module = rt.PerceiverResampler.from_refimpl(config, refimpl.init_resampler(config))
    with pytest.raises(ValueError, match=r"h\*w = S = 6 without a mask"):
        module(torch.zeros(1, 1, 6, 8, dtype=torch.float64), grid=(2, 2))
