"""refimpl.grad.perceiver_resampler_backward and value_and_grad: the gradients for x and every
parameter, for every variant of ResamplerConfig (activations, norms, float32 norms, qk_norm,
grouped-query attention, latents in the keys or not, time and media embeddings, masks, no
media tokens at all), against central finite differences and torch's autograd through
refimpl.torch; padding, batch axes and unused embedding rows; bad arguments."""

import dataclasses

import numpy as np
import pytest
import torch
from helpers import (
    FLOAT32_VS_FLOAT64,
    FLOAT64,
    assert_close,
    assert_gradients_close,
    assert_matches_finite_differences,
    norms_resolve_their_inputs,
    resampler_cases,
    resampler_configs,
    resampler_variant_cases,
    seeds,
    switches_case,
)
from hypothesis import given

import refimpl
import refimpl.torch as rt
from refimpl.grad import mean_squared_error, perceiver_resampler_backward, value_and_grad

# every variant, without norms over too few entries to resolve their input (see helpers)
CASES = resampler_variant_cases().filter(lambda case: norms_resolve_their_inputs(case[0]))
FLOAT64_CASES = resampler_variant_cases(norm_dtypes=(None,)).filter(lambda case: norms_resolve_their_inputs(case[0]))
# for finite differences, also without relu's kink (a difference that straddles it is off by
# O(1) in that unit, no fault of the gradient: torch's autograd checks relu, test_grad_layers
# relu' away from 0) and float32 norms (their rounding is far coarser than a step of 1e-6)
SMOOTH_CASES = resampler_variant_cases(activations=("gelu", "squared_relu", "swiglu"), norm_dtypes=(None,)).filter(
    lambda case: norms_resolve_their_inputs(case[0])
)


def output_gradient(config, x, seed):
    """A random dL/d(latents) (..., R, D) for the resampler's output on x."""
    return np.random.default_rng(seed).standard_normal(x.shape[:-3] + (config.num_latents, config.dim))


def resample(params, config, mask):
    """The resampler as a function of one dict holding x and the parameters."""
    return lambda inputs: refimpl.perceiver_resampler(
        {name: inputs[name] for name in params}, inputs["x"], config, mask=mask
    )


def torch_gradients(config, params, x, mask, dout):
    """(dx, dparams) by torch's autograd through refimpl.torch.PerceiverResampler in float64.

    Both in refimpl's names and layouts.
    """
    module = rt.PerceiverResampler.from_refimpl(config, params)
    x_tensor = torch.tensor(x, requires_grad=True)
    out = module(x_tensor, None if mask is None else torch.as_tensor(mask))
    out.backward(torch.as_tensor(dout))
    grads = {name: torch.zeros_like(p) if p.grad is None else p.grad for name, p in module.named_parameters()}
    return x_tensor.grad.numpy(), rt.from_state_dict(grads)


@given(case=SMOOTH_CASES, seed=seeds)
def test_resampler_backward_matches_finite_differences(case, seed):
    config, params, x, mask = case
    dout = output_gradient(config, x, seed)
    dx, dparams = perceiver_resampler_backward(params, x, config, dout, mask=mask)
    assert dx.shape == x.shape
    assert dparams.keys() == params.keys() and all(dparams[name].shape == params[name].shape for name in params)
    assert_matches_finite_differences(
        resample(params, config, mask), {"x": x} | params, {"x": dx} | dparams, dout, seed
    )


@given(case=FLOAT64_CASES, seed=seeds)
def test_resampler_backward_matches_torch_autograd(case, seed):
    config, params, x, mask = case
    dout = output_gradient(config, x, seed)
    dx, dparams = perceiver_resampler_backward(params, x, config, dout, mask=mask)
    theirs_dx, theirs = torch_gradients(config, params, x, mask, dout)
    assert_gradients_close({"x": dx} | dparams, {"x": theirs_dx} | theirs)


@pytest.mark.parametrize(
    "switches",
    [
        dict(activation="swiglu", norm="rmsnorm", kv_heads=2, norm_dtype="float32"),
        dict(norm_dtype="float32", qk_norm=True, num_time_embeds=2),
        dict(norm_dtype="float32", activation="squared_relu", num_media_embeds=3, latents_in_kv=False),
    ],
    ids=["idefics2-float32-norm", "layernorm-float32-norm-qk-norm", "float32-norm-media-embeddings"],
)
def test_resampler_backward_with_float32_norms_matches_torch_autograd_to_float32_precision(switches):
    # both normalise in float32 and differentiate through the casts, but round their float32
    # sums in different orders, and the network amplifies the difference (1e-7 to 4e-5 over
    # random small configs, too close to the bound for a property: fixed cases, as in test_torch_port)
    config, params, x, mask = switches_case(switches)
    dout = output_gradient(config, x, 3)
    dx, dparams = perceiver_resampler_backward(params, x, config, dout, mask=mask)
    theirs_dx, theirs = torch_gradients(config, params, x, mask, dout)
    assert_gradients_close({"x": dx} | dparams, {"x": theirs_dx} | theirs, FLOAT32_VS_FLOAT64)


@pytest.mark.parametrize("frames, space", [(2, 0), (0, 3), (0, 0)], ids=["S=0", "T=0", "T=S=0"])
@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
def test_without_media_tokens_the_latents_attend_to_themselves(frames, space, activation):
    # S = 0 (or T = 0): with the latents among the keys the resampler still runs, on its
    # latents alone; x has no entries, and the embeddings get no gradient
    config = refimpl.ResamplerConfig(
        dim=6,
        depth=2,
        heads=4,
        dim_head=3,
        num_latents=5,
        kv_heads=2,
        qk_norm=True,
        num_time_embeds=3,
        num_media_embeds=2,
        activation=activation,
    )
    params = refimpl.init_resampler(config, seed=1)
    x = np.zeros((2, 2, frames, space, 6))  # (B, I, T, S, D)
    dout = output_gradient(config, x, 1)
    dx, dparams = perceiver_resampler_backward(params, x, config, dout)
    assert dx.shape == x.shape
    assert not dparams["time_embeds"].any() and not dparams["media_embeds"].any()
    assert not dparams["layers.0.attn.norm_media.weight"].any()
    theirs_dx, theirs = torch_gradients(config, params, x, None, dout)
    assert_gradients_close({"x": dx} | dparams, {"x": theirs_dx} | theirs)
    assert_matches_finite_differences(
        resample(params, config, None), {"x": x} | params, {"x": dx} | dparams, dout, seed=1
    )


@given(case=resampler_cases(masked=True).filter(lambda case: norms_resolve_their_inputs(case[0])), seed=seeds)
def test_padding_tokens_get_zero_gradient_and_change_no_other(case, seed):
    config, params, x, mask = case
    dout = output_gradient(config, x, seed)
    dx, dparams = perceiver_resampler_backward(params, x, config, dout, mask=mask)
    assert not dx[~mask].any()  # exactly 0: a padding token never reaches the output
    other = np.where(mask[..., None], x, np.random.default_rng(seed).standard_normal(x.shape))  # new padding values
    other_dx, other_dparams = perceiver_resampler_backward(params, other, config, dout, mask=mask)
    assert_gradients_close({"x": other_dx} | other_dparams, {"x": dx} | dparams, FLOAT64)


@given(
    case=resampler_variant_cases(norm_dtypes=(None,), masked=True).filter(
        lambda case: norms_resolve_their_inputs(case[0])
    ),
    seed=seeds,
)
def test_gradients_of_a_batch_are_those_of_its_entries(case, seed):
    # dx of entry b is entry b's alone; a parameter's gradient is the sum over the entries
    config, params, x, mask = case
    batch = x.shape[: x.ndim - (4 if config.num_media_embeds else 3)]
    dout = output_gradient(config, x, seed)
    dx, dparams = perceiver_resampler_backward(params, x, config, dout, mask=mask)
    summed = {name: np.zeros_like(value) for name, value in params.items()}
    for index in np.ndindex(batch):
        entry_dx, entry_dparams = perceiver_resampler_backward(params, x[index], config, dout[index], mask=mask[index])
        assert_close(dx[index], entry_dx, FLOAT64, what=f"dx of entry {index}")
        for name in summed:
            summed[name] += entry_dparams[name]
    assert_gradients_close(dparams, summed, FLOAT64)


@given(case=resampler_variant_cases(norm_dtypes=(None,)))
def test_rows_of_the_embedding_tables_that_no_token_uses_get_zero_gradient(case):
    config, params, x, mask = case
    dx, dparams = perceiver_resampler_backward(
        params, x, config, np.ones(x.shape[:-3] + (config.num_latents, config.dim)), mask=mask
    )
    if config.num_time_embeds is not None:
        assert not dparams["time_embeds"][x.shape[-3] :].any()  # frames T ... Tmax - 1
    if config.num_media_embeds is not None:
        assert not dparams["media_embeds"][x.shape[-4] :].any()  # items I ... Imax - 1


@given(case=resampler_variant_cases(), seed=seeds)
def test_value_and_grad_is_the_loss_of_the_output_and_the_backward_of_its_gradient(case, seed):
    config, params, x, mask = case
    loss = mean_squared_error(output_gradient(config, x, seed))
    value, dx, dparams = value_and_grad(params, x, config, loss, mask=mask)
    expected_value, dlatents = loss(refimpl.perceiver_resampler(params, x, config, mask=mask))
    assert value == expected_value  # the forward pass is refimpl's, bit for bit
    expected_dx, expected_dparams = perceiver_resampler_backward(params, x, config, dlatents, mask=mask)
    np.testing.assert_array_equal(dx, expected_dx)
    for name in params:
        np.testing.assert_array_equal(dparams[name], expected_dparams[name], err_msg=name)


@given(case=SMOOTH_CASES, seed=seeds)
def test_value_and_grad_matches_finite_differences_of_the_loss(case, seed):
    config, params, x, mask = case
    loss = mean_squared_error(output_gradient(config, x, seed))
    _, dx, dparams = value_and_grad(params, x, config, loss, mask=mask)
    resampled = resample(params, config, mask)
    assert_matches_finite_differences(
        lambda inputs: loss(resampled(inputs))[0], {"x": x} | params, {"x": dx} | dparams, 1.0, seed
    )


@given(case=CASES, seed=seeds)
def test_resampler_backward_numba_matches_numpy(case, seed):
    config, params, x, mask = case
    dout = output_gradient(config, x, seed)
    dx, dparams = perceiver_resampler_backward(params, x, config, dout, mask=mask)
    numba_dx, numba_dparams = perceiver_resampler_backward(params, x, config, dout, mask=mask, backend="numba")
    # the whole gradient as one vector, norm-relative (floor=1): see test_grad_attention's
    # test_multi_head_attention_backward_numba_matches_numpy
    assert_gradients_close({"x": numba_dx} | numba_dparams, {"x": dx} | dparams, FLOAT64, floor=1.0)


@given(
    case=resampler_cases(
        configs=resampler_configs(norm="layernorm").map(lambda c: dataclasses.replace(c, dim=1, ff_mult=2))
    ),
    seed=seeds,
)
def test_a_layer_norm_of_width_1_outputs_its_bias_and_passes_back_no_gradient(case, seed):
    # with D = 1, x - mean(x) is exactly 0: the final norm outputs its bias whatever comes in,
    # so every gradient but the bias's is exactly 0 (torch's autograd: rounding noise)
    config, params, x, mask = case
    dout = output_gradient(config, x, seed)
    dx, dparams = perceiver_resampler_backward(params, x, config, dout, mask=mask)
    assert not dx.any()
    assert all(not dparams[name].any() for name in params if name != "norm.bias")
    assert_close(dparams["norm.bias"], dout.reshape(-1, 1).sum(axis=0), FLOAT64)


CONFIG = refimpl.ResamplerConfig(dim=6, depth=1, heads=2, dim_head=3, num_latents=4, num_time_embeds=3)
PARAMS = refimpl.init_resampler(CONFIG, seed=0)
X = np.random.default_rng(0).standard_normal((2, 3, 5, 6))  # (B, T, S, D) -> (B, R, D) = (2, 4, 6)
DOUT = np.ones((2, 4, 6))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: perceiver_resampler_backward(PARAMS, X, CONFIG, np.ones((2, 5, 6))),
            ValueError,
            r"dout must have shape \(\.\.\., R, D\), the output's shape = \(2, 4, 6\); got \(2, 5, 6\)",
        ),
        (
            lambda: perceiver_resampler_backward(PARAMS, X, CONFIG, DOUT.astype(int)),
            TypeError,
            r"dout must be a real floating-point array",
        ),
        (
            lambda: perceiver_resampler_backward(PARAMS, X[..., :4], CONFIG, DOUT),
            ValueError,
            r"x must have shape \(\.\.\., T, S, D\) with D = config.dim = 6",
        ),
        (
            lambda: perceiver_resampler_backward(PARAMS, X, CONFIG, DOUT, mask=np.ones((2, 3), bool)),
            ValueError,
            r"mask must have shape \(\.\.\., T, S\)",
        ),
        (
            lambda: perceiver_resampler_backward({**PARAMS, "extra": np.ones(2)}, X, CONFIG, DOUT),
            ValueError,
            r"params do not fit .*\n  unexpected: extra",
        ),
        (
            lambda: perceiver_resampler_backward(PARAMS, X, CONFIG, DOUT, backend="jax"),
            ValueError,
            r"backend must be one of 'numpy', 'numba'; got 'jax'",
        ),
        (
            lambda: value_and_grad(PARAMS, X, CONFIG, "mse"),
            TypeError,
            r"loss must be a function latents -> \(value, dlatents\); got str",
        ),
        (
            lambda: value_and_grad(PARAMS, X, CONFIG, lambda latents: 1.0),
            TypeError,
            r"loss must return a pair \(value, dlatents\); got float",
        ),
        (
            lambda: value_and_grad(PARAMS, X, CONFIG, lambda latents: (1.0, latents[0])),
            ValueError,
            r"the dlatents that loss returned must have shape .* = \(2, 4, 6\); got \(4, 6\)",
        ),
        (
            lambda: value_and_grad(PARAMS, X, CONFIG, mean_squared_error(np.zeros((4, 6)))),
            ValueError,
            r"target must have the latents' shape \(2, 4, 6\); got \(4, 6\)",
        ),
        (lambda: mean_squared_error(np.zeros((0, 6))), ValueError, r"target must have at least one entry"),
        (lambda: mean_squared_error(np.array([np.inf])), ValueError, r"target must be finite"),
    ],
    ids=[
        "dout shape",
        "dout dtype",
        "x width",
        "mask shape",
        "unexpected param",
        "backend",
        "loss not callable",
        "loss not a pair",
        "dlatents shape",
        "target shape",
        "empty target",
        "target not finite",
    ],
)
def test_bad_arguments_raise_errors_that_name_them(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_float32_norm_gradients_differ_from_float64_by_float32_rounding_only():
    # norm_dtype="float32" changes the gradient only by float32 rounding (the backward of the
    # float32 normalisation runs in float32), and does change it: the switch is not ignored
    config = refimpl.ResamplerConfig(
        dim=8, depth=2, heads=2, dim_head=4, num_latents=3, activation="swiglu", norm="rmsnorm", kv_heads=1
    )
    params = refimpl.init_resampler(config, seed=2)
    x = np.random.default_rng(2).standard_normal((2, 2, 5, 8))
    dout = output_gradient(config, x, 2)
    dx, dparams = perceiver_resampler_backward(params, x, config, dout)
    dx32, dparams32 = perceiver_resampler_backward(params, x, dataclasses.replace(config, norm_dtype="float32"), dout)
    assert_gradients_close({"x": dx32} | dparams32, {"x": dx} | dparams, FLOAT32_VS_FLOAT64)
    assert refimpl.relative_error(dx32, dx) > 1e-12
