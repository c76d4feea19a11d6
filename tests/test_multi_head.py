"""refimpl.multi_head_attention: projections, heads as column slices, grouped-query
attention and qk_norm, against the naive loops of tests/naive.py."""

import naive
import numpy as np
import pytest
from helpers import assert_close, multi_head_cases, random_mask, seeds
from hypothesis import given
from hypothesis import strategies as st

import refimpl


@given(case=multi_head_cases(masked=False))
def test_multi_head_attention_matches_naive(case):
    params, queries, context, options = case
    expected, _ = naive.multi_head_attention(params, queries, context, **options)
    assert_close(refimpl.multi_head_attention(params, queries, context, **options), expected)


@given(case=multi_head_cases(masked=True))
def test_multi_head_attention_with_mask_matches_naive(case):
    params, queries, context, options = case
    expected, _ = naive.multi_head_attention(params, queries, context, **options)
    assert_close(refimpl.multi_head_attention(params, queries, context, **options), expected)


@given(case=multi_head_cases(masked=False))
def test_multi_head_weights_match_naive(case):
    params, queries, context, options = case
    _, expected = naive.multi_head_attention(params, queries, context, **options)
    _, weights = refimpl.multi_head_attention(params, queries, context, return_weights=True, **options)
    assert weights.shape == queries.shape[:-2] + (options["heads"], queries.shape[-2], context.shape[-2])
    assert_close(weights, expected)


@given(case=multi_head_cases(masked=False))
def test_multi_head_output_has_the_queries_shape(case):
    params, queries, context, options = case
    out = refimpl.multi_head_attention(params, queries, context, **options)
    assert out.shape == queries.shape
    assert out.dtype == np.float64


@pytest.mark.parametrize("mask_shape", [(11,), (5, 11), (1, 11), (2, 1, 11), (2, 5, 11)])
def test_multi_head_attention_accepts_every_mask_that_broadcasts_to_queries_by_keys(mask_shape):
    # the docstring: "mask: bool, broadcastable to (..., R, N)"; here (..., R, N) = (2, 5, 11)
    rng = np.random.default_rng(0)
    params = {
        "wq": rng.standard_normal((6, 8)),
        "wk": rng.standard_normal((3, 4)),
        "wv": rng.standard_normal((3, 4)),
        "wo": rng.standard_normal((8, 6)),
    }
    queries, context = rng.standard_normal((2, 5, 6)), rng.standard_normal((2, 11, 3))
    mask = random_mask(rng, mask_shape)
    expected, _ = naive.multi_head_attention(params, queries, context, heads=2, kv_heads=1, mask=mask)
    assert_close(refimpl.multi_head_attention(params, queries, context, heads=2, kv_heads=1, mask=mask), expected)


@given(seed=seeds, kv_heads=st.integers(1, 3), group=st.integers(1, 3), dim_head=st.integers(1, 5))
def test_grouped_query_attention_equals_full_attention_with_each_kv_head_repeated(seed, kv_heads, group, dim_head):
    # query head h reads key/value head h // G: repeating each kv head's columns G times
    # gives H = Hkv * G ordinary heads with the same result
    rng = np.random.default_rng(seed)
    heads, dim, dim_context = kv_heads * group, 7, 5
    params = {
        "wq": rng.standard_normal((dim, heads * dim_head)),
        "wk": rng.standard_normal((dim_context, kv_heads * dim_head)),
        "wv": rng.standard_normal((dim_context, kv_heads * dim_head)),
        "wo": rng.standard_normal((heads * dim_head, dim)),
    }
    repeated = dict(params)
    for name in ("wk", "wv"):
        per_head = params[name].reshape(dim_context, kv_heads, 1, dim_head)
        repeated[name] = np.broadcast_to(per_head, (dim_context, kv_heads, group, dim_head)).reshape(
            dim_context, heads * dim_head
        )
    queries, context = rng.standard_normal((2, 4, dim)), rng.standard_normal((2, 9, dim_context))
    assert_close(
        refimpl.multi_head_attention(params, queries, context, heads=heads, kv_heads=kv_heads),
        refimpl.multi_head_attention(repeated, queries, context, heads=heads),
    )


@given(case=multi_head_cases(masked=False))
def test_multi_head_attention_upcasts_float16_input(case):
    params, queries, context, options = case
    q16, c16 = queries.astype(np.float16), context.astype(np.float16)
    out = refimpl.multi_head_attention(params, q16, c16, **options)
    assert out.dtype == np.float64
    expected, _ = naive.multi_head_attention(params, q16, c16, **options)
    assert_close(out, expected)
