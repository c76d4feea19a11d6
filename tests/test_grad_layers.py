"""refimpl.grad.layers: the backward passes of the projections, norms, activations and the
feed-forward block, against central finite differences and against torch's autograd."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import (
    FLOAT32_VS_FLOAT64,
    GRADIENT_VS_TORCH,
    assert_close,
    assert_gradients_close,
    assert_matches_finite_differences,
    batch_shapes,
    seeds,
)
from hypothesis import given
from hypothesis import strategies as st

import refimpl.torch as rt
from refimpl import layers
from refimpl.grad import layers as grad_layers

EPS = st.sampled_from([1e-5, 1e-6, 0.1])


def torch_gradients(function, inputs, dout):
    """dL/d(input) for every input of L = sum(dout * function(**inputs)), by torch's autograd in float64."""
    tensors = {name: torch.tensor(value, requires_grad=True) for name, value in inputs.items()}
    function(**tensors).backward(torch.as_tensor(dout))
    return {name: tensor.grad.numpy() for name, tensor in tensors.items()}


def norm_inputs(kind, batch, dim, seed):
    """A norm's inputs {"x", "weight"[, "bias"]} (no bias for "rmsnorm") and an upstream
    gradient dout, random from `seed`: weights U(0.5, 1.5), biases N(0, 0.1^2)."""
    rng = np.random.default_rng(seed)
    inputs = {
        "x": rng.standard_normal(batch + (dim,)),
        "weight": rng.uniform(0.5, 1.5, dim),
        "bias": rng.normal(0, 0.1, dim),
    }
    dout = rng.standard_normal(batch + (dim,))
    if kind == "rmsnorm":
        del inputs["bias"]
    return inputs, dout


@given(batch=batch_shapes(), width_in=st.integers(1, 7), width_out=st.integers(1, 7), seed=seeds)
def test_linear_backward_matches_finite_differences(batch, width_in, width_out, seed):
    rng = np.random.default_rng(seed)
    inputs = {"x": rng.standard_normal(batch + (width_in,)), "weight": rng.standard_normal((width_in, width_out))}
    dout = rng.standard_normal(batch + (width_out,))
    dx, dweight = grad_layers.linear_backward(inputs["x"], inputs["weight"], dout)
    assert dx.shape == inputs["x"].shape and dweight.shape == inputs["weight"].shape
    assert_matches_finite_differences(lambda p: p["x"] @ p["weight"], inputs, {"x": dx, "weight": dweight}, dout, seed)


@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm"])
@given(batch=batch_shapes(), dim=st.integers(3, 9), eps=EPS, seed=seeds)
def test_norm_backward_matches_finite_differences(kind, batch, dim, eps, seed):
    # D >= 3: a norm over 1 or 2 entries hardly depends on its input, and is so steep near
    # a tie that a step of 1e-6 is no longer small (helpers.norms_resolve_their_inputs)
    inputs, dout = norm_inputs(kind, batch, dim, seed)
    if kind == "layernorm":
        dx, dweight, dbias = grad_layers.layer_norm_backward(inputs["x"], inputs["weight"], dout, eps)
        function, gradients = (
            lambda p: layers.layer_norm(p["x"], p["weight"], p["bias"], eps),
            {"x": dx, "weight": dweight, "bias": dbias},
        )
    else:
        dx, dweight = grad_layers.rms_norm_backward(inputs["x"], inputs["weight"], dout, eps)
        function, gradients = lambda p: layers.rms_norm(p["x"], p["weight"], eps), {"x": dx, "weight": dweight}
    assert all(gradients[name].shape == np.shape(inputs[name]) for name in inputs)
    assert_matches_finite_differences(function, inputs, gradients, dout, seed)


@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm"])
@given(batch=batch_shapes(), dim=st.integers(3, 9), eps=EPS, seed=seeds)
def test_norm_backward_matches_torch_autograd(kind, batch, dim, eps, seed):
    # D >= 3, as above (width 1: test_layer_norm_of_width_1_passes_no_gradient_to_x_or_its_weight)
    inputs, dout = norm_inputs(kind, batch, dim, seed)
    if kind == "layernorm":
        ours = dict(
            zip(("x", "weight", "bias"), grad_layers.layer_norm_backward(inputs["x"], inputs["weight"], dout, eps))
        )
        theirs = torch_gradients(lambda x, weight, bias: F.layer_norm(x, (dim,), weight, bias, eps), inputs, dout)
    else:
        ours = dict(zip(("x", "weight"), grad_layers.rms_norm_backward(inputs["x"], inputs["weight"], dout, eps)))
        theirs = torch_gradients(lambda x, weight: F.rms_norm(x, (dim,), weight, eps), inputs, dout)
    assert_gradients_close(ours, theirs)


@given(batch=batch_shapes(), eps=EPS, seed=seeds)
def test_layer_norm_of_width_1_passes_no_gradient_to_x_or_its_weight(batch, eps, seed):
    # x - mean(x) is exactly 0 for D = 1: the output is the bias whatever x and the weight
    # (torch's autograd gets rounding noise of about 1e-16 / sqrt(eps) relative instead)
    rng = np.random.default_rng(seed)
    x, dout = rng.standard_normal(batch + (1,)), rng.standard_normal(batch + (1,))
    dx, dweight, dbias = grad_layers.layer_norm_backward(x, rng.uniform(0.5, 1.5, 1), dout, eps)
    assert not dx.any() and not dweight.any()
    np.testing.assert_array_equal(dbias, dout.reshape(-1, 1).sum(axis=0))


@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm"])
@given(batch=batch_shapes(), dim=st.integers(3, 9), seed=seeds)
def test_norm_backward_in_float32_is_autograd_through_the_casts(kind, batch, dim, seed):
    # norm_dtype="float32": normalise in float32, cast back, then scale (and shift), as
    # Idefics2 does; torch's autograd through those casts computes the normalisation's
    # gradient in float32 too. Both are the float64 gradient up to float32 rounding, which
    # is relative to the terms each gradient sums: dx those of inv_std * (weight * dout),
    # dweight those of dout * xhat; either can cancel to far below them.
    rng = np.random.default_rng(seed)
    x, dout = rng.standard_normal(batch + (dim,)), rng.standard_normal(batch + (dim,))
    params = {"norm.weight": rng.uniform(0.5, 1.5, dim), "norm.bias": rng.normal(0, 0.1, dim)}
    if kind == "rmsnorm":
        del params["norm.bias"]
    dx, grads = grad_layers.norm_backward(params, "norm.", x, kind, 1e-5, "float32", dout)
    np.testing.assert_array_equal(dx, dx.astype(np.float32))  # computed in float32, cast back
    module = rt.Norm(dim, kind, 1e-5, "float32").double()
    module.load_state_dict({name.removeprefix("norm."): torch.as_tensor(value) for name, value in params.items()})
    x_tensor = torch.tensor(x, requires_grad=True)
    module(x_tensor).backward(torch.as_tensor(dout))
    theirs = {"x": x_tensor.grad.numpy()} | {"norm." + name: p.grad.numpy() for name, p in module.named_parameters()}
    dx64, grads64 = grad_layers.norm_backward(params, "norm.", x, kind, 1e-5, None, dout)

    normalised, inv_scale = layers.NORMALIZERS[kind](x, 1e-5)
    terms = {
        "x": np.abs(inv_scale * params["norm.weight"] * dout).max(initial=0.0),
        "norm.weight": np.abs(dout * normalised).reshape(-1, dim).sum(axis=0).max(),
        "norm.bias": None,  # a float64 sum of dout, in every version
    }
    for name, ours in ({"x": dx} | grads).items():
        assert_close(ours, theirs[name], FLOAT32_VS_FLOAT64, what=f"{name} vs torch", scale=terms[name])
        assert_close(
            ours, ({"x": dx64} | grads64)[name], FLOAT32_VS_FLOAT64, what=f"{name} vs float64", scale=terms[name]
        )


ACTIVATIONS = {
    "gelu": (layers.gelu, grad_layers.gelu_backward, F.gelu),
    "relu": (layers.relu, grad_layers.relu_backward, F.relu),
    "squared_relu": (layers.squared_relu, grad_layers.squared_relu_backward, lambda x: F.relu(x).square()),
    "silu": (layers.silu, grad_layers.silu_backward, F.silu),
}


@pytest.mark.parametrize("name", ACTIVATIONS)
@given(batch=batch_shapes(), width=st.integers(1, 9), seed=seeds)
def test_activation_backward_matches_finite_differences(name, batch, width, seed):
    forward, backward, _ = ACTIVATIONS[name]
    rng = np.random.default_rng(seed)
    x = 3 * rng.standard_normal(batch + (width,))
    x += np.where(x < 0, -0.01, 0.01)  # a step of 1e-6 never crosses relu's kink at 0
    dout = rng.standard_normal(x.shape)
    assert_matches_finite_differences(lambda p: forward(p["x"]), {"x": x}, {"x": backward(x, dout)}, dout, seed)


@pytest.mark.parametrize("name", ACTIVATIONS)
@given(batch=batch_shapes(), width=st.integers(1, 9), seed=seeds)
def test_activation_backward_matches_torch_autograd(name, batch, width, seed):
    _, backward, torch_forward = ACTIVATIONS[name]
    rng = np.random.default_rng(seed)
    x = 4 * rng.standard_normal(batch + (width,))
    x[rng.random(x.shape) < 0.2] = 0.0  # torch's convention at the kink: relu'(0) = 0
    dout = rng.standard_normal(x.shape)
    theirs = torch_gradients(lambda x: torch_forward(x), {"x": x}, dout)["x"]
    # measured against max |dout|: torch's gelu' loses its relative accuracy below x = -5,
    # where it is under 1e-6 (at x = -7, 2e-7 relative; ours, from erfc, agrees with
    # 40-digit arithmetic there), so a row of only such x would measure torch's error
    assert_close(backward(x, dout), theirs, GRADIENT_VS_TORCH, scale=np.abs(dout).max())


def feed_forward_case(draw, activation):
    """(params, x, dout, norm options) for one feed-forward block, drawn with `draw`."""
    rng = np.random.default_rng(draw(seeds))
    dim, ff_dim, batch = draw(st.integers(3, 9)), draw(st.integers(1, 9)), draw(batch_shapes())
    norm_kind = draw(st.sampled_from(["layernorm", "rmsnorm"]))
    params = {"norm.weight": rng.uniform(0.5, 1.5, dim)}
    if norm_kind == "layernorm":
        params["norm.bias"] = rng.normal(0, 0.1, dim)
    names = ("w_gate", "w_up", "w_down") if activation == "swiglu" else ("w_in", "w_out")
    for name in names:
        shape = (ff_dim, dim) if name in ("w_down", "w_out") else (dim, ff_dim)
        params[name] = rng.normal(0, shape[0] ** -0.5, shape)
    x, dout = rng.standard_normal(batch + (dim,)), rng.standard_normal(batch + (dim,))
    return params, x, dout, (norm_kind, draw(EPS), None)


@pytest.mark.parametrize("activation", ["gelu", "squared_relu", "swiglu"])  # relu's kink: torch checks it below
@given(data=st.data())
def test_feed_forward_backward_matches_finite_differences(activation, data):
    params, x, dout, norm_options = feed_forward_case(data.draw, activation)
    dx, grads = grad_layers.feed_forward_backward(params, "", x, activation, *norm_options, dout)
    assert grads.keys() == params.keys()
    assert_matches_finite_differences(
        lambda p: layers.feed_forward(p, "", p["x"], activation, *norm_options),
        {"x": x} | params,
        {"x": dx} | grads,
        dout,
        data.draw(seeds),
    )


@pytest.mark.parametrize("activation", ["gelu", "squared_relu", "relu", "swiglu"])
@given(data=st.data())
def test_feed_forward_backward_matches_torch_autograd(activation, data):
    params, x, dout, (norm_kind, eps, norm_dtype) = feed_forward_case(data.draw, activation)
    dx, grads = grad_layers.feed_forward_backward(params, "", x, activation, norm_kind, eps, norm_dtype, dout)
    dim, ff_dim = x.shape[-1], params["w_down" if activation == "swiglu" else "w_out"].shape[0]
    module = rt.FeedForward(dim, ff_dim, activation, norm_kind, eps).double()
    module.load_state_dict(rt.to_state_dict(params))
    x_tensor = torch.tensor(x, requires_grad=True)
    module(x_tensor).backward(torch.as_tensor(dout))
    theirs = rt.from_state_dict({name: p.grad for name, p in module.named_parameters()})
    assert_gradients_close({"x": dx} | grads, {"x": x_tensor.grad.numpy()} | theirs)
