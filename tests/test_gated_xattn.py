"""Flamingo's GATED XATTN-DENSE block: refimpl.gated_xattn_dense and init_gated_xattn_dense,
and the switches of GatedXattnConfig (each against an independent computation; against the
published layers in tests/test_gated_interop.py), with refimpl.torch's twin."""

import dataclasses

import naive
import numpy as np
import pytest
import torch
from helpers import assert_close, batch_shapes, seeds
from hypothesis import given
from hypothesis import strategies as st

import refimpl
import refimpl.torch as rt

TORCH_VS_NUMPY = ("float64", "torch vs numpy")

gates = st.floats(-3.0, 3.0, allow_nan=False)


@st.composite
def gated_cases(draw, attn_gate=gates, ff_gate=gates, masked=None):
    """(params, hidden (..., L, Dt), visual (..., Nv, Dv), heads, mask (..., L, Nv) or None)."""
    heads = draw(st.integers(1, 4))
    dim, dim_visual, dim_head = draw(st.integers(1, 12)), draw(st.integers(1, 12)), draw(st.integers(1, 6))
    ff_mult = draw(st.sampled_from([1, 2, 3]))
    seed = draw(seeds)
    params = refimpl.init_gated_xattn_dense(
        dim, dim_visual, heads=heads, dim_head=dim_head, ff_mult=ff_mult, gate=0.0, seed=seed % 10_000
    )
    params["attn_gate"], params["ff_gate"] = np.array(draw(attn_gate)), np.array(draw(ff_gate))
    batch = draw(batch_shapes())
    n_text, n_visual = draw(st.integers(1, 8)), draw(st.integers(1, 9))
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal(batch + (n_text, dim))
    visual = rng.standard_normal(batch + (n_visual, dim_visual))
    if masked is None:
        masked = draw(st.booleans())
    mask = rng.random(batch + (n_text, n_visual)) < 0.5 if masked else None  # some rows see nothing
    return params, hidden, visual, heads, mask


@given(case=gated_cases(attn_gate=st.just(0.0), ff_gate=st.just(0.0)))
def test_gates_at_zero_pass_the_hidden_states_through_exactly(case):
    params, hidden, visual, heads, mask = case
    out = refimpl.gated_xattn_dense(params, hidden, visual, heads=heads, mask=mask)
    np.testing.assert_array_equal(out, hidden)


@given(case=gated_cases())
def test_gated_xattn_dense_matches_naive(case):
    params, hidden, visual, heads, mask = case
    expected = naive.gated_xattn_dense(params, hidden, visual, heads=heads, mask=mask)
    assert_close(refimpl.gated_xattn_dense(params, hidden, visual, heads=heads, mask=mask), expected)


@given(case=gated_cases(ff_gate=st.just(0.0), masked=True))
def test_a_text_token_that_sees_no_visual_token_gets_no_attention_output(case):
    params, hidden, visual, heads, mask = case
    out = refimpl.gated_xattn_dense(params, hidden, visual, heads=heads, mask=mask)
    blind = ~mask.any(axis=-1)  # (..., L)
    np.testing.assert_array_equal(out[blind], hidden[blind])


@given(case=gated_cases(attn_gate=st.floats(20, 40), ff_gate=st.floats(-40, -20)))
def test_gates_act_through_tanh_and_saturate(case):
    # tanh(20) = 1 and tanh(-20) = -1 in float64: any larger gate gives the same block
    params, hidden, visual, heads, mask = case
    saturated = dict(params, attn_gate=np.array(1e3), ff_gate=np.array(-1e3))
    assert_close(
        refimpl.gated_xattn_dense(params, hidden, visual, heads=heads, mask=mask),
        refimpl.gated_xattn_dense(saturated, hidden, visual, heads=heads, mask=mask),
    )


@given(case=gated_cases(masked=False))
def test_visual_batch_axes_broadcast_against_the_hidden_states(case):
    params, hidden, visual, heads, _ = case
    shared = visual[(0,) * (visual.ndim - 2)]  # (Nv, Dv): one set of visual tokens for every item
    tiled = np.broadcast_to(shared, hidden.shape[:-2] + shared.shape)
    assert_close(
        refimpl.gated_xattn_dense(params, hidden, shared, heads=heads),
        refimpl.gated_xattn_dense(params, hidden, tiled, heads=heads),
    )


@given(case=gated_cases())
def test_gated_xattn_dense_upcasts_float16_input(case):
    params, hidden, visual, heads, mask = case
    h16, v16 = hidden.astype(np.float16), visual.astype(np.float16)
    out = refimpl.gated_xattn_dense(params, h16, v16, heads=heads, mask=mask)
    assert out.dtype == np.float64
    assert_close(out, naive.gated_xattn_dense(params, h16, v16, heads=heads, mask=mask))


def test_no_visual_tokens_with_a_mask_leaves_only_the_feed_forward():
    # "visual has Nv = 0 tokens; pass a mask to mark text tokens that see none": with
    # such a mask every text token sees nothing, so only the gated feed-forward acts
    params = refimpl.init_gated_xattn_dense(6, 5, heads=2, dim_head=3, ff_mult=2, gate=0.7, seed=1)
    hidden = np.random.default_rng(1).standard_normal((2, 4, 6))
    visual, mask = np.empty((2, 0, 5)), np.zeros((2, 4, 0), dtype=bool)
    expected = naive.gated_xattn_dense(params, hidden, visual, heads=2, mask=mask)
    assert_close(refimpl.gated_xattn_dense(params, hidden, visual, heads=2, mask=mask), expected)


@given(
    dim=st.integers(1, 12),
    dim_visual=st.integers(1, 12),
    heads=st.integers(1, 4),
    dim_head=st.integers(1, 6),
    ff_mult=st.sampled_from([1, 2, 4]),
    gate=gates,
    seed=seeds,
)
def test_init_gated_xattn_dense_gives_random_weights_and_the_requested_gates(
    dim, dim_visual, heads, dim_head, ff_mult, gate, seed
):
    params = refimpl.init_gated_xattn_dense(
        dim, dim_visual, heads=heads, dim_head=dim_head, ff_mult=ff_mult, gate=gate, seed=seed
    )
    shapes = refimpl.gated_xattn_dense_shapes(dim, dim_visual, heads=heads, dim_head=dim_head, ff_mult=ff_mult)
    inner = heads * dim_head
    assert shapes == {
        "attn.norm.weight": (dim,),
        "attn.norm.bias": (dim,),
        "attn.wq": (dim, inner),
        "attn.wk": (dim_visual, inner),
        "attn.wv": (dim_visual, inner),
        "attn.wo": (inner, dim),
        "attn_gate": (),
        "ff.norm.weight": (dim,),
        "ff.norm.bias": (dim,),
        "ff.w_in": (dim, dim * ff_mult),
        "ff.w_out": (dim * ff_mult, dim),
        "ff_gate": (),
    }
    assert {name: value.shape for name, value in params.items()} == shapes
    assert params["attn_gate"] == gate and params["ff_gate"] == gate
    for name, value in params.items():
        assert value.dtype == np.float64, name
        if not name.endswith("_gate"):
            assert not np.isin(value, [0.0, 1.0]).any(), f"{name} has an entry of exactly 0 or 1"


@pytest.mark.parametrize("gate", [0.0, 0.5])
def test_init_gated_xattn_dense_is_a_function_of_the_seed(gate):
    first = refimpl.init_gated_xattn_dense(5, 4, heads=2, dim_head=3, gate=gate, seed=3)
    second = refimpl.init_gated_xattn_dense(5, 4, heads=2, dim_head=3, gate=gate, seed=3)
    other = refimpl.init_gated_xattn_dense(5, 4, heads=2, dim_head=3, gate=gate, seed=4)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    assert not np.array_equal(first["attn.wq"], other["attn.wq"])


# ---------------------------------------------------------------- GatedXattnConfig: the switches


@st.composite
def configured_cases(draw):
    """(config with every switch drawn, params with open gates, hidden (..., L, Dt),
    visual (..., Nv, Dv), mask (..., L, Nv) in which some rows see nothing)."""
    heads = draw(st.integers(1, 4))
    config = refimpl.GatedXattnConfig(
        dim=draw(st.integers(1, 10)),
        dim_visual=draw(st.integers(1, 10)),
        heads=heads,
        dim_head=draw(st.integers(1, 5)),
        kv_heads=draw(st.sampled_from([None] + [h for h in range(1, heads + 1) if heads % h == 0])),
        ff_dim=draw(st.integers(1, 16)),
        activation=draw(st.sampled_from(["gelu", "relu", "squared_relu", "swiglu"])),
        norm=draw(st.sampled_from(["layernorm", "rmsnorm"])),
        norm_eps=draw(st.sampled_from([1e-5, 1e-6, 0.1])),
        qk_norm=draw(st.sampled_from([None, "layernorm", "rmsnorm"])),
        vector_gates=draw(st.booleans()),
        blind_rows=draw(st.sampled_from(["zero", "attend_all", "uniform"])),
        zero_blind_ff=draw(st.booleans()),
    )
    seed = draw(seeds)
    rng = np.random.default_rng(seed)
    params = refimpl.init_gated_xattn(config, seed=seed % 10_000)
    for gate in ("attn_gate", "ff_gate"):  # open: +-U(0.5, 1.5)
        params[gate] = rng.choice([-1.0, 1.0], params[gate].shape) * rng.uniform(0.5, 1.5, params[gate].shape)
    batch = draw(batch_shapes())
    n_text, n_visual = draw(st.integers(1, 6)), draw(st.integers(1, 7))
    hidden = rng.standard_normal(batch + (n_text, config.dim))
    visual = rng.standard_normal(batch + (n_visual, config.dim_visual))
    mask = rng.random(batch + (n_text, n_visual)) < 0.5  # some rows see nothing
    return config, params, hidden, visual, mask


def test_the_default_config_is_the_flamingo_block_exactly():
    params = refimpl.init_gated_xattn_dense(6, 5, heads=2, dim_head=3, ff_mult=2, gate=0.7, seed=1)
    rng = np.random.default_rng(1)
    hidden, visual, mask = rng.standard_normal((2, 4, 6)), rng.standard_normal((2, 5, 5)), rng.random((2, 4, 5)) < 0.4
    config = refimpl.GatedXattnConfig(dim=6, dim_visual=5, heads=2, dim_head=3, ff_dim=12)
    assert refimpl.gated_xattn_param_shapes(config) == refimpl.gated_xattn_dense_shapes(
        6, 5, heads=2, dim_head=3, ff_mult=2
    )
    np.testing.assert_array_equal(
        refimpl.gated_xattn_dense(params, hidden, visual, config, mask=mask),
        refimpl.gated_xattn_dense(params, hidden, visual, heads=2, mask=mask),
    )


def test_gated_xattn_param_shapes_of_every_switch():
    config = refimpl.GatedXattnConfig(
        dim=6,
        dim_visual=5,
        heads=4,
        dim_head=3,
        kv_heads=2,
        ff_dim=7,
        activation="swiglu",
        norm="rmsnorm",
        qk_norm="layernorm",
        vector_gates=True,
    )
    assert refimpl.gated_xattn_param_shapes(config) == {
        "attn.norm.weight": (6,),
        "attn.wq": (6, 12),
        "attn.wk": (5, 6),
        "attn.wv": (5, 6),
        "attn.wo": (12, 6),
        "attn.q_norm.weight": (3,),
        "attn.q_norm.bias": (3,),
        "attn.k_norm.weight": (3,),
        "attn.k_norm.bias": (3,),
        "attn_gate": (6,),
        "ff.norm.weight": (6,),
        "ff.w_gate": (6, 7),
        "ff.w_up": (6, 7),
        "ff.w_down": (7, 6),
        "ff_gate": (6,),
    }


@given(case=configured_cases())
def test_grouped_query_attention_is_each_key_value_head_repeated(case):
    # Hkv < H: query head h reads key/value head h // G; the same block with every
    # key/value head's columns copied G times, in that order, and Hkv = H
    config, params, hidden, visual, mask = case
    group, dim_head = config.heads // config.num_kv_heads, config.dim_head
    full = dataclasses.replace(config, kv_heads=None)
    repeated = dict(params)
    for name in ("attn.wk", "attn.wv"):
        heads = params[name].reshape(config.dim_visual, config.num_kv_heads, 1, dim_head)  # (Dv, Hkv, 1, Dh)
        repeated[name] = np.broadcast_to(heads, (config.dim_visual, config.num_kv_heads, group, dim_head)).reshape(
            config.dim_visual, -1
        )
    assert_close(
        refimpl.gated_xattn_dense(params, hidden, visual, config, mask=mask),
        refimpl.gated_xattn_dense(repeated, hidden, visual, full, mask=mask),
    )


@given(case=configured_cases())
def test_a_text_row_that_sees_no_visual_token_gets_what_blind_rows_says(case):
    config, params, hidden, visual, mask = case
    blind = ~mask.any(axis=-1)  # (..., L)
    out = refimpl.gated_xattn_dense(
        dict(params, ff_gate=np.zeros_like(params["ff_gate"])), hidden, visual, config, mask=mask
    )
    if config.blind_rows == "zero":
        expected = hidden
    elif config.blind_rows == "attend_all":  # as if it had no mask
        expected = refimpl.gated_xattn_dense(
            dict(params, ff_gate=np.zeros_like(params["ff_gate"])), hidden, visual, config
        )
    else:  # uniform weights: the mean of the values, through wo, in every head
        values = visual @ params["attn.wv"]  # (..., Nv, Hkv*Dh)
        values = values.mean(axis=-2).reshape(*values.shape[:-2], config.num_kv_heads, 1, config.dim_head)
        values = np.repeat(values, config.heads // config.num_kv_heads, axis=-2).reshape(
            *values.shape[:-3], 1, -1
        )  # (..., 1, H*Dh)
        expected = hidden + np.tanh(params["attn_gate"]) * (values @ params["attn.wo"])
    expected = np.broadcast_to(expected, out.shape)
    assert_close(out[blind], expected[blind])


@given(case=configured_cases())
def test_zero_blind_ff_leaves_a_blind_row_its_attention_output_only(case):
    config, params, hidden, visual, mask = case
    blind = ~mask.any(axis=-1)
    config = dataclasses.replace(config, zero_blind_ff=True)
    no_ff = dict(params, ff_gate=np.zeros_like(params["ff_gate"]))
    out = refimpl.gated_xattn_dense(params, hidden, visual, config, mask=mask)
    assert_close(out[blind], refimpl.gated_xattn_dense(no_ff, hidden, visual, config, mask=mask)[blind])


@given(case=configured_cases(), backend=st.sampled_from(["numba", "numpy"]), masked=st.booleans())
def test_torch_twin_matches_numpy_for_every_switch(case, backend, masked):
    config, params, hidden, visual, mask = case
    mask = mask if masked else None
    block = rt.GatedXAttnDense.from_refimpl(params, config, dtype=torch.float64)
    with torch.no_grad():
        ours = block(torch.tensor(hidden), torch.tensor(visual), None if mask is None else torch.tensor(mask)).numpy()
    assert_close(
        ours, refimpl.gated_xattn_dense(params, hidden, visual, config, mask=mask, backend=backend), TORCH_VS_NUMPY
    )
    back = block.to_refimpl()
    assert back.keys() == params.keys() and all(np.array_equal(back[n], params[n]) for n in params)


@pytest.mark.parametrize(
    "switches, error, message",
    [
        (dict(heads=4, kv_heads=3), ValueError, r"kv_heads must divide heads = 4; got 3"),
        (dict(blind_rows="skip"), ValueError, r"blind_rows must be one of 'zero', 'attend_all', 'uniform'; got 'skip'"),
        (dict(qk_norm=True), ValueError, r"qk_norm must be one of None, 'layernorm', 'rmsnorm'; got True"),
        (dict(zero_blind_ff=1), TypeError, r"zero_blind_ff must be True or False; got 1"),
        (dict(dim_visual=0), ValueError, r"dim_visual must be >= 1; got 0"),
    ],
)
def test_gated_xattn_config_refuses_bad_switches(switches, error, message):
    with pytest.raises(error, match=message):
        refimpl.GatedXattnConfig(**dict(dim=6, dim_visual=5) | switches)


def test_gated_xattn_dense_checks_its_config_against_the_arguments():
    config = refimpl.GatedXattnConfig(dim=6, dim_visual=5, heads=2, dim_head=3, ff_dim=4)
    params = refimpl.init_gated_xattn(config)
    hidden, visual = np.ones((2, 3, 6)), np.ones((2, 4, 5))
    with pytest.raises(ValueError, match=r"heads must be None or config.heads = 2 with a config; got 3"):
        refimpl.gated_xattn_dense(params, hidden, visual, config, heads=3)
    with pytest.raises(
        ValueError, match=r"visual must have shape \(\.\.\., Nv, Dv\) with Dv = config.dim_visual = 5; got width 6"
    ):
        refimpl.gated_xattn_dense(params, hidden, np.ones((2, 4, 6)), config)
    with pytest.raises(TypeError, match=r"config must be a refimpl.GatedXattnConfig or None; got dict"):
        refimpl.gated_xattn_dense(params, hidden, visual, {"heads": 2})
    with pytest.raises(ValueError, match=r"Nv = 0 tokens, which blind_rows = 'attend_all' cannot attend to"):
        refimpl.gated_xattn_dense(
            params,
            hidden,
            visual[:, :0],
            dataclasses.replace(config, blind_rows="attend_all"),
            mask=np.zeros((2, 3, 0), dtype=bool),
        )


def test_the_torch_twin_is_built_from_a_config_or_from_the_flamingo_sizes():
    config = refimpl.GatedXattnConfig(dim=6, dim_visual=5, heads=2, dim_head=3, ff_dim=12, norm_eps=1e-6)
    assert rt.GatedXAttnDense(6, 5, heads=2, dim_head=3, ff_mult=2, norm_eps=1e-6).config == config
    assert rt.GatedXAttnDense(config).config == config
    with pytest.raises(TypeError, match=r"takes no sizes besides the config"):
        rt.GatedXAttnDense(config, heads=2)
    with pytest.raises(TypeError, match=r"takes sizes \['dim_head', 'ff_mult', 'heads', 'norm_eps'\]"):
        rt.GatedXAttnDense(6, 5, kv_heads=1)
