"""torch (CPU, float64) as an independent reference for refimpl's pieces, and for a whole
resampler written here with torch.nn.functional.

torch is a test dependency (the "torch" extra, installed in CI): it is imported plainly,
so that a missing torch fails loudly rather than skipping these checks.
"""

import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close, attention_cases, multi_head_cases, resampler_cases, seeds
from hypothesis import given
from hypothesis import strategies as st

import refimpl

layers = sys.modules["refimpl.layers"]  # the norms and activations (private; refimpl/layers.py)


def tensor(array):
    return torch.from_numpy(np.array(array, dtype=np.float64))  # a writable copy


def array(t):
    return t.detach().numpy()


arrays = st.builds(
    lambda seed, shape, magnitude: magnitude * np.random.default_rng(seed).standard_normal(shape),
    seeds,
    st.lists(st.integers(1, 7), min_size=1, max_size=3).map(tuple),
    st.sampled_from([0.1, 1.0, 3.0]),  # the range of pre-activations; the far tails have their own tests
)

# ---------------------------------------------------------------- softmax and attention


@given(x=arrays, data=st.data())
def test_softmax_matches_torch(x, data):
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    assert_close(refimpl.softmax(x, axis=axis), array(torch.softmax(tensor(x), dim=axis)))


@given(case=attention_cases(max_queries=9, max_keys=40))
def test_attention_matches_torch_scaled_dot_product_attention(case):
    q, k, v, mask, scale = case
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    q_t, k_t, v_t = (tensor(np.broadcast_to(a, batch + a.shape[-2:])) for a in (q, k, v))
    mask_t = (
        None if mask is None else torch.from_numpy(np.array(np.broadcast_to(mask, batch + (q.shape[-2], k.shape[-2]))))
    )
    expected = F.scaled_dot_product_attention(q_t, k_t, v_t, attn_mask=mask_t, scale=scale)
    assert_close(refimpl.attention(q, k, v, mask=mask, scale=scale), array(expected))


@given(case=multi_head_cases(max_keys=40, masked=False))
def test_multi_head_attention_matches_torch_grouped_query_attention(case):
    params, queries, context, options = case
    heads, kv_heads, eps = options["heads"], options["kv_heads"], options["qk_norm_eps"]
    p = {name: tensor(value) for name, value in params.items()}
    dim_head = params["wq"].shape[1] // heads

    def split(x, n_heads):  # (..., L, n*Dh) -> (..., n, L, Dh)
        return x.unflatten(-1, (n_heads, dim_head)).transpose(-2, -3)

    q = split(tensor(queries) @ p["wq"], heads)
    k, v = split(tensor(context) @ p["wk"], kv_heads), split(tensor(context) @ p["wv"], kv_heads)
    if eps is not None:
        q = F.layer_norm(q, (dim_head,), p["q_norm.weight"], p["q_norm.bias"], eps)
        k = F.layer_norm(k, (dim_head,), p["k_norm.weight"], p["k_norm.bias"], eps)
    out = F.scaled_dot_product_attention(q, k, v, enable_gqa=kv_heads != heads)  # (..., H, R, Dh)
    expected = out.transpose(-2, -3).flatten(-2) @ p["wo"]
    # the output projection sums terms that can cancel: 1e-10 of the result, not 1e-12
    assert_close(
        refimpl.multi_head_attention(params, queries, context, **options),
        array(expected),
        ("float64", "another implementation vs refimpl"),
    )


# ---------------------------------------------------------------- norms and activations


@given(x=arrays, seed=seeds, eps=st.sampled_from([1e-5, 1e-6, 0.1]))
def test_layer_norm_matches_torch(x, seed, eps):
    rng = np.random.default_rng(seed)
    weight, bias = rng.uniform(0.5, 1.5, x.shape[-1]), rng.normal(0, 0.1, x.shape[-1])
    expected = F.layer_norm(tensor(x), (x.shape[-1],), tensor(weight), tensor(bias), eps)
    assert_close(layers.layer_norm(x, weight, bias, eps), array(expected))


@given(x=arrays, seed=seeds, eps=st.sampled_from([1e-5, 1e-6, 0.1]))
def test_rms_norm_matches_torch(x, seed, eps):
    weight = np.random.default_rng(seed).uniform(0.5, 1.5, x.shape[-1])
    expected = F.rms_norm(tensor(x), (x.shape[-1],), tensor(weight), eps)
    assert_close(layers.rms_norm(x, weight, eps), array(expected))


ACTIVATIONS = {
    # torch's F.gelu computes x/2 (1 + erf(x/sqrt 2)), which cancels for x below about -5;
    # the same function written with erfc keeps every digit there, as refimpl's does
    "gelu": (lambda x: layers.gelu(x), lambda t: 0.5 * t * torch.special.erfc(-t / math.sqrt(2.0))),
    "silu": (lambda x: layers.silu(x), F.silu),
    "relu": (lambda x: layers.relu(x), F.relu),
    "squared_relu": (lambda x: layers.squared_relu(x), lambda t: F.relu(t) ** 2),
}


@pytest.mark.parametrize("name", ACTIVATIONS)
@given(x=arrays)
def test_activation_matches_torch(name, x):
    ours, theirs = ACTIVATIONS[name]
    assert_close(ours(x), array(theirs(tensor(x))))


@pytest.mark.parametrize("name", ["gelu", "silu"])
def test_activation_matches_torch_far_into_the_tails(name):
    # silu's sigmoid must not overflow; gelu's erf must saturate cleanly
    x = np.linspace(-800.0, 800.0, 4001)
    ours, theirs = ACTIVATIONS[name]
    assert_close(ours(x), array(theirs(tensor(x))))


def test_gelu_equals_torchs_gelu_where_its_erf_form_does_not_cancel():
    x = np.linspace(-4.0, 800.0, 4001)
    assert_close(layers.gelu(x), array(F.gelu(tensor(x), approximate="none")))


def test_silu_keeps_its_relative_accuracy_in_the_negative_tail():
    # each value compared on its own (a one-element array), where silu(x) ~ x e^x is tiny but
    # not 0 (down to -1.7e-16 at x = -40): torch's float64 silu is accurate there to the last bits
    ours, theirs = ACTIVATIONS["silu"]
    for x in (-11.0, -20.0, -30.0, -40.0):
        assert_close(ours(np.array([x])), array(theirs(tensor([x]))), what=f"silu({x})")


# ---------------------------------------------------------------- the whole resampler


def torch_resampler(params, x, config, mask):
    """The Perceiver Resampler in torch.nn.functional, vectorised (unlike tests/naive.py)."""
    p = {name: tensor(value) for name, value in params.items()}
    x = tensor(x)
    *batch, n_frames, n_space, dim = x.shape
    heads, kv_heads, dim_head = config.heads, config.num_kv_heads, config.dim_head

    def norm(prefix, t):
        if config.norm == "layernorm":
            return F.layer_norm(t, (dim,), p[prefix + "weight"], p[prefix + "bias"], config.norm_eps)
        return F.rms_norm(t, (dim,), p[prefix + "weight"], config.norm_eps)

    def split(t, n_heads):  # (..., L, n*Dh) -> (..., n, L, Dh)
        return t.unflatten(-1, (n_heads, dim_head)).transpose(-2, -3)

    if config.num_time_embeds is not None:
        x = x + p["time_embeds"][:n_frames, None, :]
    media = x.reshape(*batch, n_frames * n_space, dim)
    real = (
        torch.ones(media.shape[:-1], dtype=torch.bool)
        if mask is None
        else torch.from_numpy(mask.reshape(media.shape[:-1]))
    )
    latents = p["latents"].expand(*batch, config.num_latents, dim)
    if config.latents_in_kv:
        real = torch.cat([real, torch.ones(*batch, config.num_latents, dtype=torch.bool)], dim=-1)
    key_mask = real[..., None, None, :]  # (..., 1, 1, N [+ R])
    for i in range(config.depth):
        a, f = f"layers.{i}.attn.", f"layers.{i}.ff."
        normed = norm(a + "norm_latents.", latents)
        context = norm(a + "norm_media.", media)
        if config.latents_in_kv:
            context = torch.cat([context, normed], dim=-2)
        q = split(normed @ p[a + "wq"], heads)
        k, v = split(context @ p[a + "wk"], kv_heads), split(context @ p[a + "wv"], kv_heads)
        if config.qk_norm:
            q = F.layer_norm(q, (dim_head,), p[a + "q_norm.weight"], p[a + "q_norm.bias"], config.norm_eps)
            k = F.layer_norm(k, (dim_head,), p[a + "k_norm.weight"], p[a + "k_norm.bias"], config.norm_eps)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, enable_gqa=kv_heads != heads)
        latents = latents + out.transpose(-2, -3).flatten(-2) @ p[a + "wo"]
        h = norm(f + "norm.", latents)
        if config.activation == "swiglu":
            hidden = F.silu(h @ p[f + "w_gate"]) * (h @ p[f + "w_up"])
            latents = latents + hidden @ p[f + "w_down"]
        else:
            act = {
                "gelu": lambda t: F.gelu(t, approximate="none"),
                "relu": F.relu,
                "squared_relu": lambda t: F.relu(t) ** 2,
            }
            latents = latents + act[config.activation](h @ p[f + "w_in"]) @ p[f + "w_out"]
    return array(norm("norm.", latents))


@given(case=resampler_cases(min_frames=1, min_space=1, max_space=7))
def test_resampler_matches_a_torch_resampler(case):
    config, params, x, mask = case
    assert_close(refimpl.perceiver_resampler(params, x, config, mask=mask), torch_resampler(params, x, config, mask))
