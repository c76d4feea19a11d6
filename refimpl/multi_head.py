"""Multi-head cross-attention with projections, built on `attention`.

Axis letters: R queries (the latents), N keys/values (media tokens [+ latents]), D query
width, Dc context width, H query heads, Hkv key/value heads, G = H / Hkv query heads per
key/value head, Dh head width.

Weights are stored (in, out), so a projection is `x @ w` (torch's nn.Linear.weight is the
transpose). Head h is columns h*Dh ... (h+1)*Dh - 1 of a projection's output.
"""

import numpy as np

from . import _checks
from .attention import _attention, _check_rows_allowed, check_backend
from .layers import norm
from .params import check_params


def multi_head_attention(
    params,
    queries,
    context,
    *,
    heads,
    kv_heads=None,
    mask=None,
    qk_norm_eps=None,
    backend="numpy",
    return_weights=False,
    dtype=np.float64,
):
    """Multi-head cross-attention: the queries attend to the context.

        Q = queries @ wq, K = context @ wk, V = context @ wv, each split into heads;
        out_h = attention(Q_h, K_(h // G), V_(h // G));   returns concat_h(out_h) @ wo

    queries: (..., R, D)   context: (..., N, Dc), batch axes equal.
    mask: bool, broadcastable to (..., R, N), True = query may attend to key (every head alike).
    params: wq (D, H*Dh), wk (Dc, Hkv*Dh), wv (Dc, Hkv*Dh), wo (H*Dh, D); with qk_norm_eps
        also q_norm.weight/.bias and k_norm.weight/.bias (Dh,), a LayerNorm over each head's
        queries and keys before the scores (as in IDEFICS). Dh is read off wq.
    kv_heads: Hkv, dividing heads; None means Hkv = H. Grouped-query attention (Hkv < H).
    returns out (..., R, D), and the weights (..., H, R, N) if `return_weights`.
    """
    check_backend(backend)
    params, queries, context, heads, kv_heads, mask, qk_norm_eps = _checked(
        params, queries, context, heads, kv_heads, mask, qk_norm_eps, dtype
    )
    out, weights = _multi_head_attention(
        params,
        "",
        queries,
        context,
        heads=heads,
        kv_heads=kv_heads,
        mask=mask,
        qk_norm_eps=qk_norm_eps,
        backend=backend,
        return_weights=return_weights,
    )
    return (out, weights) if return_weights else out


def _checked(params, queries, context, heads, kv_heads, mask, qk_norm_eps, dtype):
    """multi_head_attention's arguments checked: params checked against the shapes that
    queries, context, heads and kv_heads call for and cast to `dtype`, as are queries and
    context; kv_heads = heads for None; mask boolean with an allowed key in every row,
    reshaped to at least (R|1, N). Returns (params, queries, context, heads, kv_heads,
    mask, qk_norm_eps)."""
    dtype = _checks.compute_dtype(dtype)
    heads = _checks.positive_int("heads", heads)
    kv_heads = heads if kv_heads is None else _checks.positive_int("kv_heads", kv_heads)
    if heads % kv_heads:
        raise ValueError(f"kv_heads must divide heads = {heads}; got {kv_heads}")
    queries = _checks.float_array("queries", queries, dtype, "(..., R, D)")
    context = _checks.float_array("context", context, dtype, "(..., N, Dc)")
    _checks.ndim_at_least("queries", queries, 2, "(..., R, D)")
    if context.ndim != queries.ndim or context.shape[:-2] != queries.shape[:-2]:
        raise ValueError(f"context must have shape (..., N, Dc) with ... = {queries.shape[:-2]}; got {context.shape}")
    head_dim = head_dim_from(params, "wq", heads)
    inner = heads * head_dim
    expected = {
        "wq": (queries.shape[-1], inner),
        "wk": (context.shape[-1], kv_heads * head_dim),
        "wv": (context.shape[-1], kv_heads * head_dim),
        "wo": (inner, queries.shape[-1]),
    }
    if qk_norm_eps is not None:
        qk_norm_eps = _checks.positive_number("qk_norm_eps", qk_norm_eps)
        expected |= {f"{which}_norm.{p}": (head_dim,) for which in "qk" for p in ("weight", "bias")}
    params = check_params(
        params,
        expected,
        dtype,
        f"heads = {heads}, kv_heads = {kv_heads}, D = {queries.shape[-1]}, Dc = {context.shape[-1]}",
    )
    scores_shape = queries.shape[:-1] + context.shape[-2:-1]  # (..., R, N)
    if mask is not None:
        mask = _checks.bool_array("mask", mask, "True = may attend")
        _checks.broadcasts_to("mask", mask, scores_shape, "(..., R, N)")
        _check_rows_allowed(mask, scores_shape, -1)
        mask = mask.reshape((1,) * (2 - mask.ndim) + mask.shape)  # at least (R|1, N)
    elif context.shape[-2] == 0:
        raise ValueError("context has N = 0 tokens; every query needs at least one key it may attend to")
    return params, queries, context, heads, kv_heads, mask, qk_norm_eps


def head_dim_from(params, name, heads):
    """Dh, read off the projection params[name] of shape (D, H * Dh); ValueError if it cannot be."""
    if name not in params:  # check_params reports it with the other missing names
        return 1
    shape = np.shape(params[name])
    if len(shape) != 2 or shape[1] == 0 or shape[1] % heads:
        raise ValueError(
            f"params[{name!r}] must have shape (D, H * Dh) with H = heads = {heads} and Dh >= 1; got {shape}"
        )
    return shape[1] // heads


def split_heads(x, heads):
    """(..., L, heads * Dh) -> (..., heads, L, Dh)."""
    *batch, length, width = x.shape
    return np.swapaxes(x.reshape(*batch, length, heads, width // heads), -2, -3)


def merge_heads(x):
    """(..., heads, L, Dh) -> (..., L, heads * Dh)."""
    *batch, heads, length, head_dim = x.shape
    return np.swapaxes(x, -2, -3).reshape(*batch, length, heads * head_dim)


def _multi_head_attention(
    params,
    prefix,
    queries,
    context,
    *,
    heads,
    kv_heads,
    mask=None,
    qk_norm_eps=None,
    qk_norm_kind="layernorm",
    backend="numpy",
    return_weights=False,
    bias=False,
    key_positions=None,
):
    """`multi_head_attention` on checked arguments, with parameter names `prefix + "wq"` etc.

        Q = queries @ wq, K = context @ wk, V = context @ wv, split into heads;
        out_h = attention(Q_h, K_(h // G), V_(h // G));  returns concat_h(out_h) @ wo

    queries (..., R, D)   context (..., N, Dc)
    mask: bool (..., R or 1, N) or None, True = query may attend to key (the same for every head)
    params[prefix + ...]: wq (D, H*Dh), wk (Dc, Hkv*Dh), wv (Dc, Hkv*Dh), wo (H*Dh, D);
    with qk_norm_eps, also q_norm.weight/bias and k_norm.weight/bias (Dh,): a LayerNorm
    over each head's queries and keys before the scores (qk_norm_kind="rmsnorm": an RMSNorm,
    q_norm.weight and k_norm.weight only, as in IDEFICS's gated layers and Mllama).
    bias: also the biases bq (H*Dh,), bk, bv (Hkv*Dh,), bo (D,) on the four projections.
    key_positions: None, or positions broadcastable to context (..., N, Dc), added to the key
        projection's input only: K = (context + key_positions) @ wk, V = context @ wv.
    returns out (..., R, D), and the weights (..., H, R, N) if `return_weights` (else None).

    Grouped-query attention needs no copies: the H query heads are viewed as (Hkv, G)
    and the keys and values broadcast over G.
    """
    keys_input = context if key_positions is None else context + key_positions  # (..., N, Dc)
    q, k, v = (
        split_heads(project(params, prefix, name, inputs, bias), n)  # (..., H or Hkv, R or N, Dh)
        for name, inputs, n in (("q", queries, heads), ("k", keys_input, kv_heads), ("v", context, kv_heads))
    )
    if qk_norm_eps is not None:
        q = norm(params, prefix + "q_norm.", q, qk_norm_kind, qk_norm_eps)  # (..., H, R, Dh)
        k = norm(params, prefix + "k_norm.", k, qk_norm_kind, qk_norm_eps)  # (..., Hkv, N, Dh)
    *batch, _, n_queries, head_dim = q.shape
    group = heads // kv_heads
    q = q.reshape(*batch, kv_heads, group, n_queries, head_dim)  # (..., Hkv, G, R, Dh)
    k, v = k[..., None, :, :], v[..., None, :, :]  # (..., Hkv, 1, N, Dh)
    mask = None if mask is None else mask[..., None, None, :, :]  # (..., 1, 1, R|1, N)
    out, weights = _attention(q, k, v, mask, head_dim**-0.5, backend, return_weights)  # (..., Hkv, G, R, Dh)
    out = project(
        params, prefix, "o", merge_heads(out.reshape(*batch, heads, n_queries, head_dim)), bias
    )  # (..., R, D)
    return out, None if weights is None else weights.reshape(*batch, heads, n_queries, k.shape[-2])


def project(params, prefix, which, x, bias):
    """x @ params[prefix + "w" + which] (+ params[prefix + "b" + which] with `bias`)."""
    out = x @ params[prefix + "w" + which]
    return out + params[prefix + "b" + which] if bias else out


# ---- the seam for refimpl.grad: multi-head attention's checks


def checked_multi_head_arguments(
    params, queries, context, *, heads, kv_heads=None, mask=None, qk_norm_eps=None, dtype=np.float64
):
    """multi_head_attention's arguments checked, with its errors: returns (params, queries,
    context, heads, kv_heads, mask, qk_norm_eps), arrays cast to `dtype`, kv_heads = heads
    for None, mask boolean (..., R|1, N) or None."""
    return _checked(params, queries, context, heads, kv_heads, mask, qk_norm_eps, dtype)
