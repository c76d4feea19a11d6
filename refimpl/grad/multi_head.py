"""Backward pass of multi-head cross-attention (refimpl.multi_head_attention).

    forward:   Q = split(queries @ wq),  K = split(context @ wk),  V = split(context @ wv)
               [Q, K = q_norm(Q), k_norm(K)]                   (qk_norm: a LayerNorm per head)
               O_h = attention(Q_h, K_(h // G), V_(h // G))   (G = H / Hkv query heads per key/value head)
               out = merge(O) @ wo
    backward:  the same steps in reverse, each by its own backward function: linear_backward
               for the projections, attention_backward for the heads, layer_norm_backward for
               qk_norm. split (reshape and transpose) and merge are each other's inverse, and
               a permutation's backward is its inverse: merge's backward is split, split's is merge.
               A key/value head serves G query heads, so its gradient is the sum of their G
               gradients (the broadcast over G, summed back by attention_backward).

Axis letters: R queries (the latents), N keys/values, D query width, Dc context width, H query
heads, Hkv key/value heads, G = H / Hkv, Dh head width.
"""

import numpy as np

from .. import _checks
from ..attention import attention_on_checked
from ..layers import layer_norm
from ..multi_head import checked_multi_head_arguments, merge_heads, project, split_heads
from .attention import _attention_backward, check_backend
from .broadcast import sum_to_shape
from .layers import layer_norm_backward, linear_backward


def multi_head_attention_backward(
    params,
    queries,
    context,
    dout,
    *,
    heads,
    kv_heads=None,
    mask=None,
    qk_norm_eps=None,
    backend="numpy",
):
    """The gradients of multi-head cross-attention (refimpl.multi_head_attention) for its inputs and parameters.

    queries: (..., R, D)   context: (..., N, Dc)   dout: (..., R, D), dL/d(output).
    params, heads, kv_heads, mask, qk_norm_eps: as for refimpl.multi_head_attention, with its checks.
    returns dqueries (..., R, D), dcontext (..., N, Dc), and dparams: a dict with the names of
    params (wq, wk, wv, wo [, q_norm.weight/.bias, k_norm.weight/.bias]), each shaped like
    the parameter, float64.
    """
    check_backend(backend)
    params, queries, context, heads, kv_heads, mask, qk_norm_eps = checked_multi_head_arguments(
        params, queries, context, heads=heads, kv_heads=kv_heads, mask=mask, qk_norm_eps=qk_norm_eps
    )
    dout = _checks.float_array("dout", dout, np.float64)
    _checks.has_shape("dout", dout, queries.shape, "(..., R, D), the output's shape")
    dqueries, dcontext, grads = _multi_head_attention_backward(
        params,
        "",
        queries,
        context,
        dout,
        heads=heads,
        kv_heads=kv_heads,
        mask=mask,
        qk_norm_eps=qk_norm_eps,
        backend=backend,
    )
    return dqueries, dcontext, {name: grads[name] for name in params}


def _multi_head_attention_backward(
    params,
    prefix,
    queries,
    context,
    dout,
    *,
    heads,
    kv_heads,
    mask=None,
    qk_norm_eps=None,
    backend="numpy",
    bias=False,
    key_positions=None,
):
    """multi_head_attention_backward on checked arguments, with parameter names prefix + "wq" etc.
    (the conventions of refimpl.multi_head._multi_head_attention: mask (..., R|1, N) or None;
    with `bias` the biases bq, bk, bv, bo; key_positions added to the keys' input, constants).

    returns dqueries (..., R, D), dcontext (..., N, Dc), and {prefix + name: gradient}.
    """
    # forward, keeping the intermediates (the steps of _multi_head_attention)
    keys_input = context if key_positions is None else context + key_positions  # (..., N, Dc)
    q = split_heads(project(params, prefix, "q", queries, bias), heads)  # (..., H, R, Dh)
    k = split_heads(project(params, prefix, "k", keys_input, bias), kv_heads)  # (..., Hkv, N, Dh)
    v = split_heads(project(params, prefix, "v", context, bias), kv_heads)  # (..., Hkv, N, Dh)
    q_normed, k_normed = q, k
    if qk_norm_eps is not None:
        q_normed = layer_norm(q, params[prefix + "q_norm.weight"], params[prefix + "q_norm.bias"], qk_norm_eps)
        k_normed = layer_norm(k, params[prefix + "k_norm.weight"], params[prefix + "k_norm.bias"], qk_norm_eps)
    *batch, _, n_queries, head_dim = q.shape
    group = heads // kv_heads
    scale = head_dim**-0.5
    q_grouped = q_normed.reshape(*batch, kv_heads, group, n_queries, head_dim)  # (..., Hkv, G, R, Dh)
    k_grouped, v_grouped = k_normed[..., None, :, :], v[..., None, :, :]  # (..., Hkv, 1, N, Dh)
    mask = None if mask is None else mask[..., None, None, :, :]  # (..., 1, 1, R|1, N)
    out, _ = attention_on_checked(
        q_grouped, k_grouped, v_grouped, mask=mask, scale=scale, backend=backend, return_weights=False
    )  # (..., Hkv, G, R, Dh)
    merged = merge_heads(out.reshape(*batch, heads, n_queries, head_dim))  # (..., R, H*Dh)

    # backward
    grads = {}
    dmerged, grads[prefix + "wo"] = linear_backward(merged, params[prefix + "wo"], dout)  # (..., R, H*Dh)
    if bias:  # each bias is added at every position: its gradient sums the output's over them
        grads[prefix + "bo"] = sum_to_shape(dout, params[prefix + "bo"].shape)
    dout_grouped = split_heads(dmerged, heads).reshape(out.shape)  # (..., Hkv, G, R, Dh)
    dq, dk, dv = _attention_backward(q_grouped, k_grouped, v_grouped, mask, scale, dout_grouped, backend)
    dq = dq.reshape(q.shape)  # (..., H, R, Dh)
    dk, dv = dk[..., 0, :, :], dv[..., 0, :, :]  # (..., Hkv, N, Dh), summed over the G query heads
    if qk_norm_eps is not None:
        dq, grads[prefix + "q_norm.weight"], grads[prefix + "q_norm.bias"] = layer_norm_backward(
            q, params[prefix + "q_norm.weight"], dq, qk_norm_eps
        )
        dk, grads[prefix + "k_norm.weight"], grads[prefix + "k_norm.bias"] = layer_norm_backward(
            k, params[prefix + "k_norm.weight"], dk, qk_norm_eps
        )
    dq, dk, dv = merge_heads(dq), merge_heads(dk), merge_heads(dv)  # (..., R, H*Dh), (..., N, Hkv*Dh) x 2
    dqueries, grads[prefix + "wq"] = linear_backward(queries, params[prefix + "wq"], dq)  # (..., R, D)
    dcontext_k, grads[prefix + "wk"] = linear_backward(keys_input, params[prefix + "wk"], dk)  # (..., N, Dc)
    dcontext_v, grads[prefix + "wv"] = linear_backward(context, params[prefix + "wv"], dv)  # (..., N, Dc)
    if bias:
        for which, dprojected in (("q", dq), ("k", dk), ("v", dv)):
            grads[prefix + "b" + which] = sum_to_shape(dprojected, params[prefix + "b" + which].shape)
    return dqueries, dcontext_k + dcontext_v, grads
