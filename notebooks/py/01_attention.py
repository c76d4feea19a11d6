# %% [markdown]
# # 1. Attention from scratch in NumPy
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/perceiver-resampler-course/perceiver-resampler-course/blob/v0.1.0/notebooks/01_attention.ipynb)
#
# Runs on a laptop CPU in about 10 s. After it you will be able to compute attention from
# its three inputs with nothing but NumPy; say why the scores are divided by $\sqrt{D_h}$,
# and show it with a measurement; write a softmax that cannot overflow; mask keys out
# (padding, for instance) so that they make no difference at all; and check each of these
# pieces against `refimpl`.
#
# Scaled dot-product attention (Vaswani et al. 2017, *Attention Is All You Need*,
# arXiv:1706.03762) in one line:
#
# $$\mathrm{attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{Q K^\top}{\sqrt{D_h}}\right) V$$
#
# with $M$ queries $Q$ `(M, Dh)`, $N$ keys $K$ `(N, Dh)` and $N$ values $V$ `(N, Dv)`; the
# output is `(M, Dv)`, one row per query. In the Perceiver Resampler of notebook 0,
# `attention_i(q=x, kv=concat([x_f, x]))`, the queries are the $R$ latents and the keys and
# values are the media tokens and the latents. This notebook builds the operation itself,
# piece by piece: scores, softmax, scale, mask.

# %% tags=["remove-cell"]
# Colab set-up: install the course package (v0.1.0); Colab's torch, numpy and matplotlib are kept.
# Elsewhere this does nothing: install as the README says.
import subprocess
import sys

if "google.colab" in sys.modules:
    source = "git+https://github.com/perceiver-resampler-course/perceiver-resampler-course@v0.1.0"
    requirement = f"perceiver-resampler-course[notebooks] @ {source}"
    command = [sys.executable, "-m", "pip", "install", "--quiet", requirement]
    pip = subprocess.run(command, capture_output=True, text=True)
    if pip.returncode != 0:
        raise RuntimeError(
            f"Installing the course package failed (pip exit status {pip.returncode}); its last words:\n"
            f"{pip.stderr[-1500:]}\n"
            "Check that this runtime is connected to the internet, then run this cell again (Runtime > Restart "
            f"session first if it installed some packages). To install by hand: !pip install '{requirement}'"
        )

# %%
import matplotlib.pyplot as plt
import numpy as np

import refimpl
from refimpl import viz
from refimpl.exercises import attention as ex

rng = np.random.default_rng(0)
BOUND = refimpl.TOLERANCES[
    "float64", "same math in another order"
]  # NumPy computing the same float64 sums in another order
print(f"bound for float64 comparisons with refimpl: {BOUND:g}")


# %% [markdown]
# ## 1. Similarity is a dot product
#
# A query asks a question, a key advertises what its token holds; how well they match is
# their dot product
#
# $$s = q \cdot k = \sum_{d=1}^{D_h} q_d\, k_d = \lVert q \rVert\, \lVert k \rVert \cos\theta,$$
#
# large and positive when the two point the same way, near 0 when they are unrelated,
# negative when they point apart. For every query against every key at once, the scores
# form an `(M, N)` matrix, $S = Q K^\top$ with $S_{mn} = q_m \cdot k_n$. `np.einsum` says
# it with named indices (sum over the shared `d`, keep `m` and `n`), and the matrix
# product `q @ k.T` is the same thing, computed by the BLAS.
#
# A toy set-up where we know the right answer: $N = 7$ random keys of width $D_h = 16$,
# and $M = 5$ queries, each a noisy copy of one of the keys.


# %%
def scores(q, k):
    """Dot-product similarity of every query with every key.

    S[m, n] = q_m . k_n = sum_d q[m, d] k[n, d]

    q: (M, Dh)   k: (N, Dh)   returns (M, N)
    """
    return np.einsum("md,nd->mn", q, k)  # (M, N)


M, N, Dh = 5, 7, 16
k = rng.standard_normal((N, Dh))  # (N, Dh)
source = np.array([2, 0, 5, 3, 6])  # (M,) the key each query copies
q = k[source] + 0.5 * rng.standard_normal((M, Dh))  # (M, Dh)
S = scores(q, k)  # (M, N)

by_definition = np.array([[np.dot(q[m], k[n]) for n in range(N)] for m in range(M)])  # (M, N)
for name, other in [("q @ k.T", q @ k.T), ("a loop of np.dot", by_definition)]:
    err = refimpl.relative_error(S, other)
    print(f"einsum vs {name:16}: max relative error {err:.1e} (bound {BOUND:g})")
    assert err <= BOUND  # sums of 16 products, in different orders
assert S.shape == (M, N)

# %%
fig, ax = plt.subplots(figsize=(5, 3))
viz.matrix(S, ax=ax, title="scores $S = QK^T$: 5 queries, 7 keys", xlabel="key $n$", ylabel="query $m$")
plt.show()
assert (S.argmax(axis=1) == source).all()  # each query scores highest on the key it was copied from


# %% [markdown]
# Each row's brightest entry is the key its query was copied from (the assert checks it):
# the dot product finds the match. The scores are unbounded, though, and a row does not
# say how much of each key to take. That is the softmax's job.
#
# ## 2. From scores to weights: the softmax
#
# $$w_{mn} = \frac{\exp(S_{mn})}{\sum_{n'} \exp(S_{mn'})}$$
#
# turns each row of scores into weights that are positive and sum to 1, in the same order
# as the scores: a soft version of the row's argmax. The output for query $m$ is then the
# weighted mean of the values, $\mathrm{out}_m = \sum_n w_{mn} v_n$. Straight from the
# formula:


# %%
def naive_softmax(scores):
    """softmax over the last axis, straight from the formula: exp(s_j) / sum_k exp(s_k).

    scores: (..., N) -> (..., N), each row sums to 1
    """
    e = np.exp(scores)  # (..., N)
    return e / e.sum(axis=-1, keepdims=True)  # (..., N)


W = naive_softmax(S)  # (M, N)
err = refimpl.relative_error(W, refimpl.softmax(S))
print(f"naive_softmax vs refimpl.softmax: max relative error {err:.1e} (bound {BOUND:g})")
assert err <= BOUND
np.testing.assert_allclose(W.sum(axis=-1), 1.0, rtol=0, atol=1e-12)  # rows sum to 1
print("largest weight in each row:", W.max(axis=1).round(4))

# %%
fig, ax = plt.subplots(figsize=(5, 3))
viz.matrix(W, ax=ax, title="weights softmax($S$), no scale", xlabel="key $n$", ylabel="query $m$")
plt.show()

# %% [markdown]
# Every query puts practically all its weight on one key: the rows are nearly one-hot, because the
# best score leads the next by 6 to 14, and $e^{6} \approx 400$. Here that looks like success, but
# section 4 shows it happens for *random* vectors too once $D_h$ is large, and why it is bad.
# First, a more basic problem with this softmax.
#
# ## 3. The softmax overflows
#
# A float64 holds numbers up to $1.8 \times 10^{308}$, so $e^x$ is `inf` from
# $x \approx 709.8$ on; float32 (and bfloat16, which has float32's range) gives up at
# $x \approx 88.7$, float16 at $x \approx 11.1$. A score of 1000 is unusual but not absurd,
# and then the naive softmax computes $\infty / \infty$, which is `nan`. Very negative
# scores fail the other way: every $e^x$ rounds to 0, and $0/0$ is `nan` too. (NumPy warns
# about both; the cell silences the warnings with `np.errstate` because here they are the
# point.)

# %%
for dtype in (np.float16, np.float32, np.float64):
    print(f"{dtype.__name__:8}: exp(x) overflows from x = {float(np.log(np.finfo(dtype).max)):6.1f} on")

row = np.array([1000.0, 999.0, 998.0])
with np.errstate(over="ignore", invalid="ignore"):  # silence the overflow and inf/inf warnings shown here
    print("np.exp(row)          :", np.exp(row))
    print("naive_softmax(row)   :", naive_softmax(row))
    print("naive_softmax(-row)  :", naive_softmax(-row))
    assert np.isnan(naive_softmax(row)).all() and np.isnan(naive_softmax(-row)).all()

# %% [markdown]
# The fix costs one subtraction. With $c$ any number,
#
# $$\frac{e^{s_j - c}}{\sum_k e^{s_k - c}} = \frac{e^{-c}\, e^{s_j}}{e^{-c} \sum_k e^{s_k}}
# = \frac{e^{s_j}}{\sum_k e^{s_k}},$$
#
# so the softmax only sees differences between scores, and we may shift each row as we
# like. Choosing $c = \max_k s_k$ makes every exponent $\le 0$, so no $e^x$ exceeds 1, and
# the largest entry contributes $e^0 = 1$ to the sum, so the sum is at least 1 and never
# $0$. On the row that failed:

# %%
shifted = row - row.max()  # (3,) = [0, -1, -2]: every exponent <= 0
stable = np.exp(shifted) / np.exp(shifted).sum()  # (3,)
print("softmax(row) with the max subtracted:", stable.round(3))

err = refimpl.relative_error(stable, refimpl.softmax(row))
print(f"vs refimpl.softmax: max relative error {err:.1e} (bound {BOUND:g})")
assert err <= BOUND
assert refimpl.relative_error(stable, naive_softmax(np.array([2.0, 1.0, 0.0]))) <= BOUND  # only differences matter


# %% [markdown]
# ### Exercise 1: a softmax that cannot overflow
#
# Write `stable_softmax(scores)` for scores of any shape `(..., N)`: the softmax over the
# last axis, with each row's max subtracted first. `keepdims=True` keeps the row axis so
# that the max and the sum broadcast back against the row. The check compares it with
# `refimpl.softmax` on batched, non-square scores, scores of size $10^4$, and scores all
# near $-10^4$.


# %%
def stable_softmax(scores):
    """scores (..., N) -> softmax over the last axis; subtract the row max first so exp never overflows.

    softmax(s)_j = exp(s_j - m) / sum_k exp(s_k - m),   m = max_k s_k
    """
    # YOUR CODE HERE (about 3 lines)
    raise NotImplementedError


# %%
ex.check_stable_softmax(stable_softmax)


# %% [markdown]
# Stuck? `??ex.stable_softmax` shows a worked solution.
#
# The rest of the notebook calls the worked solutions `ex.stable_softmax`,
# `ex.masked_softmax` and `ex.attention`, each checked against `refimpl` by its exercise's
# check cell, so that it runs whether or not you have written yours. Once your check
# passes, put yours in their place to run what follows on your own code.
#
# ## 4. Why divide by $\sqrt{D_h}$
#
# Vaswani et al. (section 3.2.1): "We suspect that for large values of $d_k$, the dot
# products grow large in magnitude, pushing the softmax function into regions where it has
# extremely small gradients. To counteract this effect, we scale the dot products by
# $\frac{1}{\sqrt{d_k}}$." (Their $d_k$ is our $D_h$.) Their footnote gives the reason: if
# the entries of $q$ and $k$ are independent with mean 0 and variance 1, then
# $q \cdot k = \sum_{d=1}^{D_h} q_d k_d$ is a sum of $D_h$ independent terms of mean 0 and
# variance 1, so
#
# $$\mathrm{Var}(q \cdot k) = D_h, \qquad \mathrm{Var}\!\left(\frac{q \cdot k}{\sqrt{D_h}}\right) = 1.$$
#
# The scores' typical size grows like $\sqrt{D_h}$ unless we divide it out. Measured on
# 4000 random pairs per width:


# %%
def dot_product_variance(dh, pairs, rng):
    """Sample variance of q . k over `pairs` pairs of random vectors with unit-variance entries."""
    q = rng.standard_normal((pairs, dh))  # (pairs, Dh)
    k = rng.standard_normal((pairs, dh))  # (pairs, Dh)
    return np.einsum("pd,pd->p", q, k).var()  # one dot product per pair: (pairs,) -> a number


widths = [4, 16, 64, 256, 1024]
variances = np.array([dot_product_variance(dh, 4000, rng) for dh in widths])
print(" Dh   Var(q.k)   Var(q.k) / Dh = Var(q.k / sqrt(Dh))")
for dh, var in zip(widths, variances):
    print(f"{dh:4}   {var:8.1f}   {var / dh:.3f}")
variance_ratio = variances / widths
assert np.all(np.abs(variance_ratio - 1) < 0.15)  # Var(q.k) = Dh, to within sampling noise (about 3%)


# %% [markdown]
# What this does to the softmax: $M = 200$ random queries against $N = 50$ random keys, for
# each width, with and without the scale. Two measures per row of weights: the largest
# weight (1 means one-hot, $1/N = 0.02$ uniform), and the size of the softmax's gradient.
# The softmax's Jacobian is $\partial w_i / \partial s_j = w_i(\delta_{ij} - w_j)$; for a
# one-hot row every entry is 0, so no gradient reaches the scores and the queries and keys
# stop learning. We report its Frobenius norm, averaged over the rows.


# %%
def softmax_jacobian_norm(weights):
    """weights (M, N), rows summing to 1 -> (M,) Frobenius norm of d w / d s = diag(w) - w w^T, per row."""
    n = weights.shape[-1]
    jacobian = weights[:, :, None] * np.eye(n) - weights[:, :, None] * weights[:, None, :]  # (M, N, N)
    return np.sqrt((jacobian**2).sum(axis=(1, 2)))  # (M,)


M, N = 200, 50
largest, gradient = {}, {}  # (Dh, "scaled" or "unscaled") -> mean over the M rows
for dh in widths:
    q = rng.standard_normal((M, dh))  # (M, Dh)
    k = rng.standard_normal((N, dh))  # (N, Dh)
    for name, scale in [("unscaled", 1.0), ("scaled", dh**-0.5)]:
        weights = ex.stable_softmax(q @ k.T * scale)  # (M, N)
        largest[dh, name] = weights.max(axis=1).mean()
        gradient[dh, name] = softmax_jacobian_norm(weights).mean()

print(" Dh   largest weight: unscaled  scaled   gradient norm: unscaled  scaled")
for dh in widths:
    print(
        f"{dh:4}   {largest[dh, 'unscaled']:22.3f}  {largest[dh, 'scaled']:6.3f}"
        f"   {gradient[dh, 'unscaled']:21.3f}  {gradient[dh, 'scaled']:6.3f}"
    )

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for name, marker in [("unscaled", "o-"), ("scaled", "s-")]:
    label = "$QK^T$" if name == "unscaled" else r"$QK^T / \sqrt{D_h}$"
    axes[0].plot(widths, [largest[dh, name] for dh in widths], marker, label=label)
    axes[1].plot(widths, [gradient[dh, name] for dh in widths], marker, label=label)
axes[0].axhline(1 / N, color="gray", linestyle=":", label="uniform, $1/N$")
axes[0].set(
    xscale="log",
    xlabel="head width $D_h$",
    ylabel="largest weight in a row (mean)",
    ylim=(0, 1.05),
    title="Unscaled rows become one-hot",
)
axes[1].set(
    xscale="log",
    xlabel="head width $D_h$",
    ylabel=r"$\|\partial w / \partial s\|_F$ (mean over rows)",
    ylim=(0, None),
    title="... and their gradient vanishes",
)
for ax in axes:
    ax.set_xticks(widths, [str(dh) for dh in widths])
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.legend()
fig.tight_layout()
plt.show()

unscaled = [largest[dh, "unscaled"] for dh in (4, 64, 1024)]
scaled = [largest[dh, "scaled"] for dh in widths]
assert unscaled[0] < unscaled[1] < unscaled[2] and unscaled[2] > 0.9  # towards one-hot as Dh grows
assert max(scaled) - min(scaled) < 0.05  # the scale keeps it put
assert gradient[1024, "unscaled"] < 0.5 * gradient[1024, "scaled"]  # the gradient vanishes without it

# %% [markdown]
# Without the scale the largest weight climbs from about 0.3 at $D_h = 4$ to 0.95 at
# $D_h = 1024$, and beyond $D_h = 16$ the gradient shrinks with it, for vectors that are
# *random*: nothing was learnt, the softmax is merely saturated. With the scale, both stay
# flat, at about 0.12 and 0.2, whatever the width. Up close, ten random queries against 50
# random keys at $D_h = 1024$:

# %%
q = rng.standard_normal((10, 1024))  # (M, Dh)
k = rng.standard_normal((50, 1024))  # (N, Dh)
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
viz.matrix(ex.stable_softmax(q @ k.T), ax=axes[0], title="$D_h = 1024$, unscaled", xlabel="key $n$", ylabel="query $m$")
viz.matrix(
    ex.stable_softmax(q @ k.T / np.sqrt(1024)),
    ax=axes[1],
    title=r"$D_h = 1024$, divided by $\sqrt{D_h}$",
    xlabel="key $n$",
    ylabel="query $m$",
)
fig.tight_layout()
plt.show()

# %% [markdown]
# `refimpl.attention` uses the same default, `scale = Dh ** -0.5`: its weights are our
# scaled softmax.

# %%
v = rng.standard_normal((50, 3))  # (N, Dv)
_, ref_weights = refimpl.attention(q, k, v, return_weights=True)  # weights (M, N)
err = refimpl.relative_error(ex.stable_softmax(q @ k.T / np.sqrt(q.shape[-1])), ref_weights)
print(f"softmax(q k^T / sqrt(Dh)) vs refimpl.attention's weights: max relative error {err:.1e} (bound {BOUND:g})")
assert err <= BOUND

# %% [markdown]
# ## 5. Masks: keys a query may not see
#
# Sometimes a query must ignore some keys. The commonest case in this course is
# **padding**: a batch holds images with different numbers of tokens, padded with filler
# to the same $N$, and the filler must get no weight at all. (Idefics2's resampler takes an
# `attention_mask` for exactly this; text decoders also use a *causal* mask, which hides
# the future.) A mask is a boolean array broadcastable to `(M, N)`, **True = may attend**;
# a key-padding mask of shape `(N,)` applies to every query.
#
# The masked softmax of a row takes the sums, and the max, over the allowed entries only:
#
# $$w_{mn} = \frac{[\mathrm{mask}_{mn}]\, e^{S_{mn} - c_m}}{\sum_{n'\,:\,\mathrm{mask}_{mn'}} e^{S_{mn'} - c_m}},
# \qquad c_m = \max_{n\,:\,\mathrm{mask}_{mn}} S_{mn}.$$
#
# Setting the masked scores to $-\infty$ before the stable softmax does all of that:
# $e^{-\infty} = 0$ exactly, and $-\infty$ is never a row's max. Two tempting shortcuts are
# wrong: multiplying the weights by the mask afterwards leaves rows that no longer sum to 1,
# and setting masked scores to 0 still gives them weight. A row with *no* allowed key has no
# softmax at all ($-\infty - (-\infty)$ is `nan`); `refimpl` refuses it rather than return
# `nan` or a made-up row:

# %%
try:
    refimpl.softmax(np.zeros((2, 3)), mask=np.array([[True, False, True], [False, False, False]]))
except ValueError as error:
    print("ValueError:", error)


# %% [markdown]
# ### Exercise 2: the masked softmax
#
# Write `masked_softmax(scores, mask)`: the stable softmax over the last axis in which the
# masked entries get weight exactly 0. `np.where(mask, scores, -np.inf)` broadcasts a
# `(N,)` or `(..., 1, N)` mask for you. Among the check's cases is a masked key whose score,
# $10^4$, is far above the others: if it is the max you subtract, every allowed entry
# underflows to 0.


# %%
def masked_softmax(scores, mask):
    """scores (..., N), mask bool broadcastable to scores (True = may attend) -> weights (..., N).

    Masked entries get weight exactly 0; each row sums to 1 over its allowed entries.
    """
    # YOUR CODE HERE (about 2 lines, using stable_softmax)
    raise NotImplementedError


# %%
ex.check_masked_softmax(masked_softmax)

# %% [markdown]
# Stuck? `??ex.masked_softmax` shows a worked solution.
#
# Back to the toy scores of section 1, now scaled, with keys 5 and 6 marked as padding.
# Queries 2 and 4 were copied from keys 5 and 6, which they may no longer see:

# %%
S_scaled = S / np.sqrt(16)  # (5, 7): the toy of section 1 had Dh = 16
key_mask = np.arange(7) < 5  # (N,) = (7,): keys 5 and 6 are padding
W_scaled = ex.stable_softmax(S_scaled)  # (5, 7)
W_masked = ex.masked_softmax(S_scaled, key_mask)  # (5, 7)

err = refimpl.relative_error(W_masked, refimpl.softmax(S_scaled, mask=key_mask))
print(f"masked_softmax vs refimpl.softmax(mask=...): max relative error {err:.1e} (bound {BOUND:g})")
assert err <= BOUND
assert (W_masked[:, ~key_mask] == 0).all()  # exactly 0, not merely small
np.testing.assert_allclose(W_masked.sum(axis=-1), 1.0, rtol=0, atol=1e-12)  # rows still sum to 1
kept = W_scaled[:, key_mask]  # (5, 5): the allowed keys' weights
np.testing.assert_allclose(W_masked[:, key_mask], kept / kept.sum(axis=-1, keepdims=True), rtol=1e-12)  # renormalised
assert set(np.argsort(W_masked.max(axis=1))[:2]) == {2, 4}  # the queries that lost their key are the least peaked

fig, axes = plt.subplots(1, 2, figsize=(10, 3))
viz.matrix(W_scaled, ax=axes[0], title=r"softmax($S / \sqrt{D_h}$)", xlabel="key $n$", ylabel="query $m$")
viz.matrix(W_masked, ax=axes[1], title="the same, keys 5 and 6 masked", xlabel="key $n$", ylabel="query $m$")
fig.tight_layout()
plt.show()


# %% [markdown]
# The scaled weights are soft: each query still prefers its own key, but not to the
# exclusion of all others. With the mask, the last two columns are exactly 0 and each row
# shares its weight among the allowed keys in the same proportions as before, renormalised
# to sum to 1 (the asserts check both). Queries 2 and 4, whose keys are gone, now spread
# their weight the most.
#
# ## 6. Attention, assembled
#
# All the pieces together, for any leading batch axes `...` (batch, heads):
#
# $$\mathrm{out} = \mathrm{softmax}_{\mathrm{mask}}\!\left(\frac{Q K^\top}{\sqrt{D_h}}\right) V,
# \qquad \mathrm{out}_m = \sum_n w_{mn}\, v_n$$
#
# `q (..., M, Dh) @ k^T (..., Dh, N)` gives the scores `(..., M, N)`; the masked softmax
# runs over the keys, the last axis; `weights (..., M, N) @ v (..., N, Dv)` gives
# `(..., M, Dv)`. With batch axes, `k.T` would reverse *all* the axes: swap only the last
# two, `np.swapaxes(k, -1, -2)`.
#
# ### Exercise 3: attention
#
# Write `attention(q, k, v, mask=None)` from `stable_softmax` and `masked_softmax`. The check
# compares it with `refimpl.attention` on non-square shapes with $D_v \ne D_h$, batch axes
# with a padding mask, scores in the thousands, and a masked key with scores near $10^4$.
# Its error is measured against $\max|v|$: each output row is a weighted mean of the rows
# of $v$, so its rounding error is a fraction of $\max|v|$ (see `refimpl/tolerances.py`).


# %%
def attention(q, k, v, mask=None):
    """Scaled dot-product attention: out = softmax(q k^T / sqrt(Dh), masked) v.

    q: (..., M, Dh)   k: (..., N, Dh)   v: (..., N, Dv)   mask: bool, broadcastable to (..., M, N)
    returns (..., M, Dv)
    """
    # YOUR CODE HERE (about 4 lines)
    raise NotImplementedError


# %%
ex.check_attention(attention)

# %% [markdown]
# Stuck? `??ex.attention` shows a worked solution.

# %% [markdown]
# ### Padding makes no difference
#
# Now the property that makes batching possible. Two items in a batch: item 0 has 9 real
# tokens, item 1 has 5, padded to 9 with junk (keys of size 100, values of $10^6$, so that
# any leak would show). With a key-padding mask of shape `(B, 1, N)`, item 1's output must
# equal attention over its 5 real tokens alone.

# %%
B, M, N, Dh, Dv = 2, 6, 9, 16, 4
lengths = np.array([9, 5])  # (B,) real tokens per item
q = rng.standard_normal((B, M, Dh))  # (B, M, Dh)
k = rng.standard_normal((B, N, Dh))  # (B, N, Dh)
v = rng.standard_normal((B, N, Dv))  # (B, N, Dv)
k[1, 5:] = 100 * rng.standard_normal((4, Dh))  # item 1's padding: junk keys ...
v[1, 5:] = 1e6  # ... and junk values
token_mask = np.arange(N) < lengths[:, None, None]  # (B, 1, N): True for real tokens

out = ex.attention(q, k, v, token_mask)  # (B, M, Dv)
assert out.shape == (B, M, Dv)
for b, n in enumerate(lengths):
    real_v = v[b, :n]  # (n, Dv)
    alone = ex.attention(q[b], k[b, :n], real_v)  # (M, Dv): no padding, no mask
    reference = refimpl.attention(q[b], k[b, :n], real_v)
    for name, other in [("attention over the real tokens", alone), ("refimpl.attention, same", reference)]:
        err = refimpl.relative_error(out[b], other, scale=np.abs(real_v).max())
        print(f"item {b}, padded + masked vs {name:32}: max error {err:.1e} of max|v| (bound {BOUND:g})")
        assert err <= BOUND

# %%
_, weights = refimpl.attention(q, k, v, mask=token_mask, return_weights=True)  # (B, M, N)
assert (weights[1, :, 5:] == 0).all()  # the padding gets no weight at all
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
for b, ax in enumerate(axes):
    viz.matrix(
        weights[b], ax=ax, title=f"item {b}: {lengths[b]} real tokens of {N}", xlabel="key $n$", ylabel="query $m$"
    )
fig.tight_layout()
plt.show()

# %% [markdown]
# Item 1's last four columns are exactly 0, so neither its junk keys nor its values of
# $10^6$ move the output by more than a rounding error (the sums run over 9 keys instead
# of 5, in another order). One caution: pad with finite numbers. A zero weight times `nan`
# is still `nan`, and `refimpl` rejects non-finite input outright.
#
# ## What this notebook showed, in numbers
#
# nbval checks that this cell's output never changes: seeded inputs, rounded values.

# %%
# NBVAL_CHECK_OUTPUT
with np.errstate(over="ignore", invalid="ignore"):  # the naive softmax's overflow, silenced as before
    naive_is_nan = bool(np.isnan(naive_softmax(row)).all())
print("scores S = Q K^T:", S.shape, "| best key is each query's source:", bool((S.argmax(axis=1) == source).all()))
print("naive softmax of [1000, 999, 998] is nan:", naive_is_nan)
print("stable softmax of [1000, 999, 998]:", stable.round(3))
print("Dh:                       ", widths)
print("Var(q.k) / Dh:            ", [float(r) for r in variance_ratio.round(1)])
print("largest weight, unscaled: ", [round(float(largest[dh, "unscaled"]), 2) for dh in widths])
print("largest weight, scaled:   ", [round(float(largest[dh, "scaled"]), 2) for dh in widths])
print(
    "masked weights exactly 0:",
    bool((W_masked[:, ~key_mask] == 0).all()),
    "| rows sum to 1:",
    bool(np.allclose(W_masked.sum(axis=-1), 1.0, rtol=0, atol=1e-12)),
)
print("attention output:", out.shape, "| padding weights exactly 0:", bool((weights[1, :, 5:] == 0).all()))

# %% [markdown]
# ## Summary
#
# What you built:
#
# - **Scores** $S = QK^\top$, `(M, N)`: every query's dot product with every key, as an
#   `einsum` with named indices and as a matrix product.
# - **A softmax that cannot overflow**: the naive formula gives `nan` for scores of $\pm 1000$;
#   subtracting each row's max changes nothing mathematically and keeps every exponent
#   $\le 0$ (exercise 1).
# - **The scale** $1/\sqrt{D_h}$: $\mathrm{Var}(q \cdot k) = D_h$, measured; without the scale,
#   random rows become one-hot and the softmax's gradient vanishes as $D_h$ grows.
# - **Masks**: masked scores set to $-\infty$ get weight exactly 0 and rows still sum to 1
#   (exercise 2); padded and masked keys change nothing.
# - **Attention** itself, with batch axes and a mask, equal to `refimpl.attention` to within
#   $10^{-12}$ of $\max|v|$ (exercise 3).
#
# What to notice:
#
# - The softmax sees only differences between scores: that is why subtracting the row max
#   costs nothing. A masked key is one whose score is lower than the others' by $\infty$,
#   which is why $-\infty$ is the mask.
# - Overflow and saturation are different problems. The stable softmax never overflows, yet
#   it saturates just the same without the scale: the scale is about the statistics of the
#   scores, not about floating point.
# - The weights are an `(M, N)` matrix held in memory. For the resampler $M = R$ is small,
#   but $N$ grows with the image and the video; notebook 3 computes attention without ever
#   holding it.
#
# Next, notebook 2: **cross-attention** and **heads**. The queries come from the $R$ latents
# and the keys and values from the $N$ media tokens, through learned projections, split into
# $H$ heads of width $D_h$; and its cost, $O(R \cdot N)$ against self-attention's $O(N^2)$.
