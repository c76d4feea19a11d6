"""interop.compare_grads: a torch resampler's gradients against refimpl.grad, parameter by
parameter in backward order; a planted wrong backward is named with its layer."""

import copy
import io

import numpy as np
import torch
from helpers import random_flamingo_pytorch_module
from own_resampler import OWN_CONFIG, own_module, own_spec
from transformers.models.idefics2.configuration_idefics2 import Idefics2PerceiverConfig
from transformers.models.idefics2.modeling_idefics2 import Idefics2PerceiverResampler

import refimpl
import refimpl.torch as rt
from refimpl.interop import compare_grads

GRADIENT_BOUND = refimpl.TOLERANCES["float64", "gradient vs torch autograd"]


def refimpl_module(**switches):
    config = refimpl.ResamplerConfig(dim=16, depth=3, heads=2, dim_head=8, num_latents=4, **switches)
    return rt.PerceiverResampler.from_refimpl(config, refimpl.init_resampler(config, seed=1))


def test_a_faithful_module_agrees_for_every_parameter_and_the_input():
    module = refimpl_module(num_time_embeds=2, qk_norm=True)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 2, 5, 16)))
    mask = torch.from_numpy(np.random.default_rng(1).random((2, 2, 5)) < 0.8)
    out = io.StringIO()
    rows = compare_grads(module, x, mask=mask, out=out)
    names = [row["name"] for row in rows]
    assert sorted(names) == sorted([*refimpl.param_shapes(module.config), "x"])
    assert names[0] == "norm.bias" and names[-1] == "x"
    assert names.index("layers.2.ff.w_out") < names.index("layers.2.attn.wo") < names.index("layers.1.ff.w_out")
    assert max(row["relative"] for row in rows) <= GRADIENT_BOUND
    assert "Every gradient agrees with refimpl.grad" in out.getvalue()
    assert x.grad is None  # the caller's tensor is left alone


class WrongWeightGradient(torch.autograd.Function):
    """x @ weight.T whose backward returns twice the weight's gradient (the input's is right)."""

    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(x, weight)
        return x @ weight.T

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        return grad @ weight, 2 * (grad.transpose(-1, -2) @ x).reshape(-1, *weight.shape).sum(0)


def test_a_planted_wrong_backward_is_named_with_its_layer():
    module = copy.deepcopy(refimpl_module())
    planted = module.layers[1]["ff"].w_in
    planted.forward = lambda x: WrongWeightGradient.apply(x, planted.weight)  # the forward is unchanged
    out = io.StringIO()
    rows = {
        row["name"]: row["relative"]
        for row in compare_grads(module, torch.randn(2, 1, 6, 16, dtype=torch.float64), out=out)
    }
    assert rows["layers.1.ff.w_in"] > 0.5  # twice the gradient: off by 100%
    assert all(
        error <= GRADIENT_BOUND for name, error in rows.items() if name != "layers.1.ff.w_in"
    )  # the input's is right
    assert "First divergence in backward order: layers.1.ff.w_in (layer 1)" in out.getvalue()


def test_a_wrong_input_gradient_shows_first_where_it_enters():
    # layer 1's attention output projection passes half the gradient to its input: its own
    # weight's gradient is right, everything back-propagation reaches after it is wrong
    class HalfInputGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x

        @staticmethod
        def backward(ctx, grad):
            return grad / 2

    module = copy.deepcopy(refimpl_module())
    wo = module.layers[1]["attn"].wo
    wo.forward = lambda x: torch.nn.functional.linear(HalfInputGradient.apply(x), wo.weight)
    out = io.StringIO()
    rows = compare_grads(module, torch.randn(2, 1, 6, 16, dtype=torch.float64), out=out)
    first_wrong = next(row for row in rows if row["relative"] > GRADIENT_BOUND)
    assert first_wrong["layer"] == 1 and first_wrong["name"].startswith("layers.1.attn.w")
    assert all(row["relative"] <= GRADIENT_BOUND for row in rows[: rows.index(first_wrong)])
    assert "(layer 1)" in out.getvalue()


def test_flamingo_pytorch_gradients_agree():
    module = random_flamingo_pytorch_module()
    rows = compare_grads(module, torch.randn(2, 3, 5, 16, dtype=torch.float64), out=io.StringIO())
    assert max(row["relative"] for row in rows) <= GRADIENT_BOUND


def test_idefics2_gradients_agree_with_padding_within_its_float32_norm_bound():
    config = Idefics2PerceiverConfig(
        hidden_size=12,
        resampler_n_latents=7,
        resampler_depth=2,
        resampler_n_heads=4,
        resampler_head_dim=5,
        num_key_value_heads=2,
        rms_norm_eps=1e-6,
    )
    config._attn_implementation = "sdpa"  # the eager path computes its softmax in float32 even in float64
    module = Idefics2PerceiverResampler(config).double()
    torch.manual_seed(1)
    for parameter in module.parameters():
        parameter.data.normal_(0.0, 0.5)
    attention_mask = torch.ones(2, 9, dtype=torch.long)
    attention_mask[1, 4:] = 0  # the second item has 4 real tokens, then padding
    rows = compare_grads(module, torch.randn(2, 9, 12, dtype=torch.float64), mask=attention_mask, out=io.StringIO())
    assert (
        max(row["relative"] for row in rows)
        <= refimpl.TOLERANCES["float64", "Idefics2 module (float32 RMSNorm) vs refimpl"]
    )


def test_a_module_described_by_a_spec_gets_its_gradients_compared():
    module = own_module()
    rows = compare_grads(
        module, torch.randn(2, 3, 5, 12, dtype=torch.float64), spec=own_spec(OWN_CONFIG), out=io.StringIO()
    )
    assert sorted(row["name"] for row in rows) == sorted([*refimpl.param_shapes(OWN_CONFIG), "x"])
    assert max(row["relative"] for row in rows) <= GRADIENT_BOUND
