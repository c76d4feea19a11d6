"""Flamingo's GATED XATTN-DENSE block: refimpl.gated_xattn_dense and init_gated_xattn_dense."""

import numpy as np
import pytest
import refimpl
from hypothesis import given
from hypothesis import strategies as st

import naive
from helpers import assert_close, batch_shapes, seeds

gates = st.floats(-3.0, 3.0, allow_nan=False)


@st.composite
def gated_cases(draw, attn_gate=gates, ff_gate=gates, masked=None):
    """(params, hidden (..., L, Dt), visual (..., Nv, Dv), heads, mask (..., L, Nv) or None)."""
    heads = draw(st.integers(1, 4))
    dim, dim_visual, dim_head = draw(st.integers(1, 12)), draw(st.integers(1, 12)), draw(st.integers(1, 6))
    ff_mult = draw(st.sampled_from([1, 2, 3]))
    seed = draw(seeds)
    params = refimpl.init_gated_xattn_dense(dim, dim_visual, heads=heads, dim_head=dim_head, ff_mult=ff_mult, gate=0.0, seed=seed % 10_000)
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
def test_init_gated_xattn_dense_gives_random_weights_and_the_requested_gates(dim, dim_visual, heads, dim_head, ff_mult, gate, seed):
    params = refimpl.init_gated_xattn_dense(dim, dim_visual, heads=heads, dim_head=dim_head, ff_mult=ff_mult, gate=gate, seed=seed)
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
