"""Exercises of notebook 3 (Numba and the online softmax), with worked solutions and checks.

    merge_partials(m1, l1, acc1, m2, l2, acc2)   two partial online-softmax states -> one
    online_softmax_attention(q, k, v, block)     attention that streams over blocks of keys, in NumPy

An online-softmax state summarises one query row's scores s_j over a set of keys:

    m   = max_j s_j                  l = sum_j exp(s_j - m)          acc = sum_j exp(s_j - m) v_j

and the attention output over that set is acc / l. The checks compare with refimpl
(`refimpl.softmax`, `refimpl.attention`) in float64, on scores that span hundreds of units,
so that a version which forgets to rescale by exp(m_old - m_new) is off by far more than
the bound, and one that never subtracts a max overflows.

Usage, in the notebook:

    from refimpl.exercises import online_softmax as ex
    ex.check_merge_partials(merge_partials)
"""

import numpy as np

from ..attention import attention, softmax
from ..tolerances import TOLERANCES
from . import agree, call, check, likely_mistake

# the same float64 math as refimpl's, summed in another order (blocks, a merge)
BOUND = TOLERANCES["float64", "same math in another order"]


# ---------------------------------------------------------------- merge_partials


def merge_partials(m1, l1, acc1, m2, l2, acc2):
    """Combine the online-softmax states of two disjoint sets of keys into the state of their union.

    m1, l1, m2, l2: (...,)   acc1, acc2: (..., Dv)   returns (m, l, acc) of the same shapes:

        m   = max(m1, m2)
        l   = l1 exp(m1 - m) + l2 exp(m2 - m)
        acc = acc1 exp(m1 - m) + acc2 exp(m2 - m)

    Each state was summed relative to its own max; bring both to the common max first.
    An empty set of keys has m = -inf, l = 0, acc = 0, and exp(-inf - m) = 0 drops it.
    """
    m = np.maximum(m1, m2)  # (...,) the max over both sets
    scale1 = np.exp(m1 - m)  # (...,) <= 1, and exactly 1 on the side that holds the max
    scale2 = np.exp(m2 - m)  # (...,)
    l = l1 * scale1 + l2 * scale2  # (...,)
    acc = acc1 * scale1[..., None] + acc2 * scale2[..., None]  # (..., Dv)
    return m, l, acc


def _state(scores, values):
    """The state (m, l, acc) of scores (..., M, n) over values (..., n, Dv), straight from the definition."""
    if scores.shape[-1] == 0:
        batch = scores.shape[:-1]
        return np.full(batch, -np.inf), np.zeros(batch), np.zeros(batch + values.shape[-1:])
    m = scores.max(axis=-1)  # (..., M)
    e = np.exp(scores - m[..., None])  # (..., M, n)
    return m, e.sum(axis=-1), e @ values


def _test_merge_partials(fn):
    rng = np.random.default_rng(30)
    # (batch, M, keys in part 1, keys in part 2, Dv, spread of the per-row offsets)
    cases = [
        ("5 rows, 13 + 29 keys, similar scores", (), 5, 13, 29, 7, 0.0),
        ("batch (2, 3), 4 rows, offsets up to +-200 per row and part", (2, 3), 4, 17, 6, 9, 200.0),
        ("one row, 1 + 40 keys, offsets up to +-50", (), 1, 1, 40, 3, 50.0),
        ("part 2 empty (a thread that got no keys)", (3,), 2, 11, 0, 5, 30.0),
    ]
    general = (
        "m = max(m1, m2); then bring each state to m: l = l1 exp(m1 - m) + l2 exp(m2 - m), and acc the same "
        "way (exp(m1 - m)[..., None] broadcasts over Dv); an empty part (m2 = -inf) gets exp(-inf) = 0"
    )
    no_rescale = (
        "l1 and l2 (and acc1, acc2) were summed relative to their own maxes m1 and m2: multiply each by "
        "exp(m_i - m), m = max(m1, m2), before adding them"
    )
    worst = 0.0
    for what, batch, rows, n1, n2, value_dim, spread in cases:
        scores = 5.0 * rng.standard_normal(batch + (rows, n1 + n2))  # (..., M, N)
        offsets = rng.uniform(-spread, spread, size=batch + (rows, 2))  # (..., M, 2)
        scores[..., :n1] += offsets[..., :1]
        scores[..., n1:] += offsets[..., 1:]
        values = rng.standard_normal(batch + (n1 + n2, value_dim))  # (..., N, Dv)
        part1 = _state(scores[..., :n1], values[..., :n1, :])
        part2 = _state(scores[..., n1:], values[..., n1:, :])
        result = call(what, general, fn, *part1, *part2)
        assert isinstance(result, tuple | list) and len(result) == 3, (
            f"case '{what}': return (m, l, acc), a tuple of 3; got {type(result).__name__}. {general}"
        )
        m, l, acc = (np.asarray(x, dtype=np.float64) for x in result)
        # the reference: the whole row at once, through refimpl.softmax
        m_ref = scores.max(axis=-1)  # (..., M)
        l_ref = np.exp(scores - m_ref[..., None]).sum(axis=-1)  # (..., M)
        out_ref = softmax(scores) @ values  # (..., M, Dv)
        # the likely mistake: adding the two states as they are, each relative to its own max
        hint_l = likely_mistake(l, [(no_rescale, part1[1] + part2[1])], general, BOUND)
        hint_acc = likely_mistake(acc, [(no_rescale, part1[2] + part2[2])], general, BOUND)
        worst = max(
            worst,
            agree(f"case '{what}': m", m, m_ref, BOUND, hint=general),
            agree(f"case '{what}': l", l, l_ref, BOUND, hint=hint_l),
            agree(f"case '{what}': acc", acc, l_ref[..., None] * out_ref, BOUND, hint=hint_acc),
            agree(f"case '{what}': acc / l (the attention output)", acc / l[..., None], out_ref, BOUND, hint=general),
        )
    return f"{len(cases)} cases, max error {worst:.0e} <= {BOUND:g}"


def check_merge_partials(fn):
    """Test fn(m1, l1, acc1, m2, l2, acc2) -> (m, l, acc) against refimpl.softmax over both sets of keys."""
    return check("merge_partials", fn, merge_partials, _test_merge_partials)


# ---------------------------------------------------------------- online_softmax_attention


def online_softmax_attention(q, k, v, block):
    """Scaled dot-product attention that reads the keys `block` at a time and never forms (M, N).

    q: (..., M, Dh)   k: (..., N, Dh)   v: (..., N, Dv)   block: keys per block (>= 1)
    returns (..., M, Dv) = softmax(q k^T / sqrt(Dh)) v

    For each block of keys, for all query rows at once:
        s = q k_block^T / sqrt(Dh)                    (..., M, block)
        m_new = max(m, max_j s_j);   c = exp(m - m_new)
        l   = c l   + sum_j exp(s_j - m_new)
        acc = c acc + exp(s - m_new) v_block
    and at the end out = acc / l.
    """
    scale = q.shape[-1] ** -0.5
    batch_rows = np.broadcast_shapes(q.shape[:-1], k.shape[:-2] + (1,))  # (..., M)
    m = np.full(batch_rows, -np.inf)  # (..., M) running max
    l = np.zeros(batch_rows)  # (..., M) running sum of exp(s - m)
    acc = np.zeros(batch_rows + v.shape[-1:])  # (..., M, Dv) running sum of exp(s - m) v
    for j0 in range(0, k.shape[-2], block):
        k_block = k[..., j0 : j0 + block, :]  # (..., b, Dh), b <= block (the last may be shorter)
        v_block = v[..., j0 : j0 + block, :]  # (..., b, Dv)
        s = q @ np.swapaxes(k_block, -1, -2) * scale  # (..., M, b)
        m_new = np.maximum(m, s.max(axis=-1))  # (..., M)
        correction = np.exp(m - m_new)  # (..., M), 0 on the first block (m = -inf)
        p = np.exp(s - m_new[..., None])  # (..., M, b), every entry <= 1
        l = correction * l + p.sum(axis=-1)
        acc = correction[..., None] * acc + p @ v_block  # (..., M, Dv)
        m = m_new
    return acc / l[..., None]  # (..., M, Dv)


def _without_rescale(q, k, v, block):
    """The likely mistake, computed another way: each key's term exp(s - m) taken relative to the
    running max after its own block, never rescaled when a later block raises the max."""
    s = q @ np.swapaxes(k, -1, -2) * q.shape[-1] ** -0.5  # (..., M, N)
    starts = np.arange(0, s.shape[-1], block)
    running = np.maximum.accumulate(np.maximum.reduceat(s, starts, axis=-1), axis=-1)  # (..., M, blocks)
    e = np.exp(s - np.repeat(running, np.diff(np.append(starts, s.shape[-1])), axis=-1))  # (..., M, N)
    return (e @ v) / e.sum(axis=-1, keepdims=True)  # (..., M, Dv)


def _test_online_softmax_attention(fn):
    rng = np.random.default_rng(31)
    # (what, batch, M, N, Dh, Dv, block, ramp): keys grow by `ramp` from first to last, so
    # the running max keeps rising and scores span hundreds of units
    cases = [
        ("M=7, N=37 keys in blocks of 8 (a short last block)", (), 7, 37, 5, 3, 8, 1.0),
        ("batch (2, 3), M=4, N=50, blocks of 16, keys growing 30x", (2, 3), 4, 50, 16, 9, 16, 30.0),
        ("M=1, N=23, one key per block, keys growing 60x", (), 1, 23, 4, 6, 1, 60.0),
        ("M=5, N=20, one block bigger than N", (), 5, 20, 8, 2, 64, 1.0),
        (
            "M=3, N=300, blocks of 32, scores up to 1000 (exp overflows unless the max keeps up)",
            (2,),
            3,
            300,
            12,
            4,
            32,
            40.0,
        ),
    ]
    general = (
        "per block: s = q k_block^T / sqrt(Dh); m_new = max(m, max of s); c = exp(m - m_new); "
        "l = c l + sum exp(s - m_new); acc = c acc + exp(s - m_new) v_block; m = m_new; at the end acc / l "
        "(subtract the running max before exp, or exp overflows)"
    )
    missing_scale = "divide the scores by sqrt(Dh), Dh = q.shape[-1], before the softmax"
    no_rescale = (
        "when a block raises the max, what was summed so far is relative to the old max: multiply l and acc "
        "by c = exp(m - m_new) before adding the block's terms"
    )
    worst = 0.0
    for what, batch, rows, n_keys, head_dim, value_dim, block, ramp in cases:
        q = rng.standard_normal(batch + (rows, head_dim))  # (..., M, Dh)
        k = rng.standard_normal(batch + (n_keys, head_dim))  # (..., N, Dh)
        k *= np.linspace(1.0, ramp, n_keys)[:, None]
        if "overflows" in what:  # scale q so that the largest score is 1000: exp(1000) = inf
            q *= 1000.0 / (q @ np.swapaxes(k, -1, -2) * head_dim**-0.5).max()
        v = rng.standard_normal(batch + (n_keys, value_dim))  # (..., N, Dv)
        out = call(what, general, fn, q, k, v, block)  # overflow shows as inf or nan in the comparison
        scale_v = np.abs(v).max()
        mistakes = [
            (missing_scale, attention(q, k, v, scale=1.0)),
            (no_rescale, _without_rescale(q, k, v, block)),
        ]
        hint = likely_mistake(out, mistakes, general, BOUND, scale=scale_v)
        expected = attention(q, k, v)  # refimpl, the (M, N) weights at once
        worst = max(worst, agree(f"case '{what}'", out, expected, BOUND, scale=scale_v, hint=hint))
    return f"{len(cases)} cases, max error {worst:.0e} <= {BOUND:g} (relative to max |v|)"


def check_online_softmax_attention(fn):
    """Test fn(q, k, v, block) -> (..., M, Dv) against refimpl.attention on long, wide-ranging rows."""
    return check("online_softmax_attention", fn, online_softmax_attention, _test_online_softmax_attention)
