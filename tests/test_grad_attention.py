"""refimpl.grad's softmax, attention and multi-head attention backward passes: against
central finite differences and torch's autograd, with masks, broadcast batch axes,
grouped-query attention and qk_norm; the Numba backend against NumPy; bad arguments."""

import numpy as np
import pytest
import torch
from helpers import (
    FLOAT64,
    assert_close,
    assert_gradients_close,
    assert_matches_finite_differences,
    attention_cases,
    multi_head_cases,
    random_mask,
    seeds,
)
from hypothesis import given
from hypothesis import strategies as st

import refimpl
import refimpl.torch as rt
from refimpl.grad import attention_backward, multi_head_attention_backward, softmax_backward


@given(case=attention_cases(), axis=st.sampled_from([-1, -2]), seed=seeds)
def test_softmax_backward_matches_finite_differences(case, axis, seed):
    scores, _, _, mask, _ = case  # q's array serves as scores: (..., M, Dh), any shape will do
    if mask is not None:
        mask = random_mask(np.random.default_rng(seed), scores.shape, axis=axis)
    rng = np.random.default_rng(seed)
    dweights = rng.standard_normal(scores.shape)
    weights = refimpl.softmax(scores, axis=axis, mask=mask)
    dscores = softmax_backward(weights, dweights, axis=axis)
    assert dscores.shape == scores.shape
    assert_matches_finite_differences(
        lambda p: refimpl.softmax(p["scores"], axis=axis, mask=mask),
        {"scores": scores},
        {"scores": dscores},
        dweights,
        seed,
    )


@given(case=attention_cases(masked=True), seed=seeds)
def test_softmax_backward_is_zero_at_masked_entries(case, seed):
    scores, _, _, _, _ = case
    mask = random_mask(np.random.default_rng(seed), scores.shape)
    weights = refimpl.softmax(scores, mask=mask)
    dscores = softmax_backward(weights, np.random.default_rng(seed).standard_normal(scores.shape))
    assert not dscores[~mask].any()


def attention_inputs(case):
    q, k, v, mask, scale = case
    return {"q": q, "k": k, "v": v}, dict(mask=mask, scale=scale)


@given(case=attention_cases(), seed=seeds)
def test_attention_backward_matches_finite_differences(case, seed):
    inputs, options = attention_inputs(case)
    out = refimpl.attention(**inputs, **options)
    dout = np.random.default_rng(seed).standard_normal(out.shape)
    gradients = dict(zip("qkv", attention_backward(*inputs.values(), dout, **options)))
    assert all(gradients[name].shape == inputs[name].shape for name in inputs)  # broadcast axes summed
    assert_matches_finite_differences(lambda p: refimpl.attention(**p, **options), inputs, gradients, dout, seed)


def torch_attention(q, k, v, mask, scale):
    """The attention of refimpl.attention, in torch.

    q (..., M, Dh), k (..., N, Dh), v (..., N, Dv), batch axes broadcast.
    """
    scores = q @ k.transpose(-1, -2) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if mask is not None:
        scores = scores.masked_fill(~torch.as_tensor(mask), float("-inf"))
    return scores.softmax(dim=-1) @ v


@given(case=attention_cases(), seed=seeds)
def test_attention_backward_matches_torch_autograd(case, seed):
    inputs, options = attention_inputs(case)
    tensors = {name: torch.tensor(value, requires_grad=True) for name, value in inputs.items()}
    out = torch_attention(**tensors, **options)
    dout = np.random.default_rng(seed).standard_normal(tuple(out.shape))
    out.backward(torch.as_tensor(dout))
    ours = dict(zip("qkv", attention_backward(*inputs.values(), dout, **options)))
    assert_gradients_close(ours, {name: tensor.grad.numpy() for name, tensor in tensors.items()})


@given(m=st.integers(1, 5), n=st.integers(2, 7), seed=seeds)
def test_masked_keys_and_values_get_zero_gradient(m, n, seed):
    rng = np.random.default_rng(seed)
    q, k, v = rng.standard_normal((2, m, 3)), rng.standard_normal((2, n, 3)), rng.standard_normal((2, n, 4))
    mask = random_mask(rng, (2, 1, n))  # key padding: a masked key is masked for every query
    _, dk, dv = attention_backward(q, k, v, rng.standard_normal((2, m, 4)), mask=mask)
    padding = ~mask[:, 0, :]  # (2, N)
    assert not dk[padding].any() and not dv[padding].any()


def qk_norms_resolve_their_inputs(case):
    """False for qk_norm over Dh = 1 or 2 entries, a LayerNorm whose output hardly depends
    on its input (see helpers.norms_resolve_their_inputs)."""
    params, _, _, options = case
    return options["qk_norm_eps"] is None or params["wq"].shape[1] // options["heads"] >= 3


MULTI_HEAD_CASES = multi_head_cases().filter(qk_norms_resolve_their_inputs)


@given(case=MULTI_HEAD_CASES, seed=seeds)
def test_multi_head_attention_backward_matches_finite_differences(case, seed):
    params, queries, context, options = case
    dout = np.random.default_rng(seed).standard_normal(queries.shape)
    dqueries, dcontext, dparams = multi_head_attention_backward(params, queries, context, dout, **options)
    assert dparams.keys() == params.keys() and all(dparams[name].shape == params[name].shape for name in params)

    def forward(p):
        weights = {name: p[name] for name in params}
        return refimpl.multi_head_attention(weights, p["queries"], p["context"], **options)

    assert_matches_finite_differences(
        forward,
        {"queries": queries, "context": context} | params,
        {"queries": dqueries, "context": dcontext} | dparams,
        dout,
        seed,
    )


@given(case=MULTI_HEAD_CASES, seed=seeds)
def test_multi_head_attention_backward_matches_torch_autograd(case, seed):
    # grouped-query attention (kv_heads < heads) and qk_norm drawn; refimpl.torch.CrossAttention
    # takes one batch axis, so the batch axes are flattened into it
    params, queries, context, options = case
    batch, (n_queries, dim), (n_keys, dim_context) = queries.shape[:-2], queries.shape[-2:], context.shape[-2:]
    dout = np.random.default_rng(seed).standard_normal(queries.shape)
    dqueries, dcontext, dparams = multi_head_attention_backward(params, queries, context, dout, **options)

    module = rt.CrossAttention(
        dim,
        dim_context,
        heads=options["heads"],
        kv_heads=options["kv_heads"],
        dim_head=params["wq"].shape[1] // options["heads"],
        qk_norm_eps=options["qk_norm_eps"],
    ).double()
    module.load_state_dict(rt.to_state_dict(params))
    queries_tensor = torch.tensor(queries.reshape(-1, n_queries, dim), requires_grad=True)  # (B, R, D)
    context_tensor = torch.tensor(context.reshape(-1, n_keys, dim_context), requires_grad=True)  # (B, N, Dc)
    mask = options["mask"]
    if mask is not None:
        mask = torch.tensor(
            np.broadcast_to(mask, batch + mask.shape[-2:]).reshape(-1, *mask.shape[-2:]).copy()
        )  # (B, R|1, N)
    out, _ = module(queries_tensor, context_tensor, mask)
    out.backward(torch.as_tensor(dout.reshape(out.shape)))
    theirs = rt.from_state_dict({name: p.grad for name, p in module.named_parameters()})
    theirs |= {
        "queries": queries_tensor.grad.numpy().reshape(queries.shape),
        "context": context_tensor.grad.numpy().reshape(context.shape),
    }
    assert_gradients_close({"queries": dqueries, "context": dcontext} | dparams, theirs)


@given(case=attention_cases(), seed=seeds)
def test_attention_backward_numba_matches_numpy(case, seed):
    # dq = scale * dS k and dk = scale * dS^T q, with dS = P * (dP - sum_j P dP) (NumPy) or
    # P * (dP - dout . out) (the kernel): where the softmax saturates, dS cancels to far
    # below its terms, and each way rounds it to about 1e-16 of them, so dq and dk are
    # measured against scale * max |dP| * max |k| (resp. |q|), as the outputs against max |v|
    inputs, options = attention_inputs(case)
    q, k, v = inputs.values()
    dout = np.random.default_rng(seed).standard_normal(refimpl.attention(q, k, v, **options).shape)
    scale = q.shape[-1] ** -0.5 if options["scale"] is None else options["scale"]
    dscores_terms = scale * np.abs(dout @ np.swapaxes(v, -1, -2)).max()  # scale * max |dP|
    scales = {"q": dscores_terms * np.abs(k).max(), "k": dscores_terms * np.abs(q).max(), "v": None}
    expected = attention_backward(q, k, v, dout, **options)
    for name, ours, reference in zip("qkv", attention_backward(q, k, v, dout, backend="numba", **options), expected):
        assert_close(ours, reference, FLOAT64, what=f"d{name}", scale=scales[name])


@given(case=MULTI_HEAD_CASES, seed=seeds)
def test_multi_head_attention_backward_numba_matches_numpy(case, seed):
    params, queries, context, options = case
    dout = np.random.default_rng(seed).standard_normal(queries.shape)
    dqueries, dcontext, dparams = multi_head_attention_backward(params, queries, context, dout, **options)
    ours = multi_head_attention_backward(params, queries, context, dout, backend="numba", **options)
    # the whole gradient as one vector, norm-relative (floor=1): the saturated softmax's
    # cancellation (test_attention_backward_numba_matches_numpy) leaves the scores' gradients,
    # and with them the queries', small beside the terms whose rounding they carry
    assert_gradients_close(
        {"queries": ours[0], "context": ours[1]} | ours[2],
        {"queries": dqueries, "context": dcontext} | dparams,
        FLOAT64,
        floor=1.0,
    )


Q, K, V = np.ones((2, 4, 3)), np.ones((2, 5, 3)), np.ones((1, 5, 6))  # out (2, 4, 6)
MH_PARAMS = {"wq": np.ones((6, 8)), "wk": np.ones((3, 4)), "wv": np.ones((3, 4)), "wo": np.ones((8, 6))}


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: softmax_backward(np.ones((2, 3)), np.ones((3, 2))),
            ValueError,
            r"dweights must have shape weights.shape = \(2, 3\); got \(3, 2\)",
        ),
        (
            lambda: softmax_backward(np.ones(3), np.ones(3, dtype=int)),
            TypeError,
            r"dweights must be a real floating-point array",
        ),
        (
            lambda: attention_backward(Q, K, V, np.ones((2, 4, 3))),
            ValueError,
            r"dout must have shape \(\.\.\., M, Dv\), attention's output = \(2, 4, 6\); got \(2, 4, 3\)",
        ),
        (
            lambda: attention_backward(Q, K, V, np.ones((4, 6))),
            ValueError,
            r"dout must have shape .* = \(2, 4, 6\); got \(4, 6\)",
        ),
        (lambda: attention_backward(Q, K, V, np.full((2, 4, 6), np.nan)), ValueError, r"dout must be finite"),
        (
            lambda: attention_backward(Q, np.ones((2, 5, 2)), V, np.ones((2, 4, 6))),
            ValueError,
            r"k must have shape \(\.\.\., N, Dh\) with Dh = q.shape\[-1\] = 3",
        ),
        (
            lambda: attention_backward(Q, K, V, np.ones((2, 4, 6)), mask=np.zeros((4, 5), bool)),
            ValueError,
            r"mask allows no entry",
        ),
        (
            lambda: attention_backward(Q, K, V, np.ones((2, 4, 6)), backend="cuda"),
            ValueError,
            r"backend must be one of 'numpy', 'numba'; got 'cuda'",
        ),
        (
            lambda: multi_head_attention_backward(
                MH_PARAMS, np.ones((2, 5, 6)), np.ones((2, 7, 3)), np.ones((2, 5, 8)), heads=2, kv_heads=1
            ),
            ValueError,
            r"dout must have shape \(\.\.\., R, D\), the output's shape = \(2, 5, 6\); got \(2, 5, 8\)",
        ),
        (
            lambda: multi_head_attention_backward(
                MH_PARAMS, np.ones((2, 5, 6)), np.ones((2, 7, 3)), np.ones((2, 5, 6)), heads=3
            ),
            ValueError,
            r"params\['wq'\] must have shape \(D, H \* Dh\) with H = heads = 3",
        ),
    ],
    ids=[
        "softmax dweights shape",
        "softmax dweights dtype",
        "attention dout width",
        "attention dout batch",
        "attention dout nan",
        "attention k width",
        "attention empty mask row",
        "attention backend",
        "multi-head dout",
        "multi-head heads",
    ],
)
def test_bad_arguments_raise_errors_that_name_them(call, error, match):
    with pytest.raises(error, match=match):
        call()
