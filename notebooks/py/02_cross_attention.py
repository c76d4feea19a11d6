# %% [markdown]
# # 2. Cross-attention and multi-head attention
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/perceiver-resampler-course/perceiver-resampler-course/blob/v0.1.0/notebooks/02_cross_attention.ipynb)
#
# Runs on a laptop CPU in about 10 s (some seconds more the first time, while Numba compiles
# its attention kernel). After it you will be able to
#
# - write cross-attention, in which $R$ latent queries read $N$ media tokens;
# - split a projection into $H$ heads and merge them back, and say why $H$ heads of width
#   $D_h$ cost what one head of width $H D_h$ costs yet can look at different things;
# - share key/value heads between query heads (grouped-query attention, as in Idefics2);
# - measure what the resampler buys: cross-attention grows like $R \cdot N$, self-attention
#   over the media like $N^2$.

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
import timeit

import matplotlib.pyplot as plt
import numpy as np
from skimage import data

import refimpl
from refimpl import viz
from refimpl.exercises import cross_attention as ex

rng = np.random.default_rng(0)


# %% [markdown]
# ## Cross-attention: queries from one set, keys and values from another
#
# Notebook 1 built attention from queries, keys and values. In **self-attention** all three
# come from the same tokens $X \in \mathbb{R}^{N \times D}$: every token asks every other token.
# In **cross-attention** the queries come from one set and the keys and values from another.
# In the resampler the queries come from the $R$ latents $L \in \mathbb{R}^{R \times D}$ and the
# keys and values from the $N$ media tokens $X \in \mathbb{R}^{N \times D}$:
#
# $$Q = L W_q \in \mathbb{R}^{R \times D_h}, \qquad K = X W_k,\; V = X W_v \in \mathbb{R}^{N \times D_h}, \qquad
# \mathrm{out} = \mathrm{softmax}\!\left(\frac{Q K^\top}{\sqrt{D_h}}\right) V \in \mathbb{R}^{R \times D_h}.$$
#
# The weights form an $R \times N$ matrix: one row per latent, each row a distribution over
# the media tokens. Two things follow from the formula:
#
# - the output has $R$ rows, however many media tokens there are: $N$ only sets how many
#   things each latent averages over;
# - the output does not depend on the order of the media tokens (a row of weights times $V$
#   is a sum over the keys), while reordering the latents reorders the output rows.
#
# In Flamingo's resampler the latents also join the keys and values: `kv=concat([x_f, x])` in
# the paper's Fig. 5 (Alayrac et al. 2022, arXiv:2204.14198); notebook 4 adds that. Here the
# keys are the media alone, as in the original Perceiver.
#
# Weights are stored `(in, out)`, as everywhere in `refimpl`, so a projection is `x @ w`.


# %%
def cross_attention(latents, media, wq, wk, wv):
    """Single-head cross-attention: R latent queries read N media tokens.

        out = softmax(Q K^T / sqrt(Dh)) V,    Q = latents @ wq,  K = media @ wk,  V = media @ wv

    latents (R, D)   media (N, D)   wq, wk, wv (D, Dh)
    returns out (R, Dh) and the weights (R, N)
    """
    q = latents @ wq  # (R, Dh)
    k = media @ wk  # (N, Dh)
    v = media @ wv  # (N, Dh)
    return refimpl.attention(q, k, v, return_weights=True)  # (R, Dh), (R, N)


R, N, D, Dh = 8, 64, 24, 10  # non-square everywhere: a transposed matrix cannot pass
latents = rng.standard_normal((R, D))  # (R, D)
media = rng.standard_normal((N, D))  # (N, D)
wq, wk, wv = (rng.normal(0, D**-0.5, (D, Dh)) for _ in range(3))  # (D, Dh) each
wo = rng.normal(0, Dh**-0.5, (Dh, D))  # (Dh, D), only for the comparison below

out, weights = cross_attention(latents, media, wq, wk, wv)
print("out", out.shape, " weights", weights.shape)
assert out.shape == (R, Dh) and weights.shape == (R, N)
np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=0, atol=1e-12)  # each row a distribution

# %% [markdown]
# **Check.** `refimpl.multi_head_attention` with one head is the same computation followed
# by the output projection $W_o$. Both run in float64 and compute the same sums, possibly in
# another order or batching, which can move the result by about $10^{-16}$. The bound,
# $10^{-12}$, is the one `refimpl.TOLERANCES` gives the same float64 math in another order:
# room for other BLAS builds, and far below any real mistake.

# %%
bound = refimpl.TOLERANCES["float64", "same math in another order"]
print("bound from refimpl.TOLERANCES['float64', 'same math in another order']:", bound)
params = {"wq": wq, "wk": wk, "wv": wv, "wo": wo}
reference, reference_weights = refimpl.multi_head_attention(params, latents, media, heads=1, return_weights=True)
err = refimpl.relative_error(out @ wo, reference)  # (R, D)
err_w = refimpl.relative_error(weights, reference_weights[0])  # (R, N); refimpl's are (H=1, R, N)
print(f"output: max relative error {err:.1e} (bound {bound:g});  weights: {err_w:.1e}")
assert err <= bound and err_w <= bound

# %% [markdown]
# And the two properties. The output keeps its shape $(R, D_h)$ for any $N$; shuffling the
# media tokens leaves it unchanged (up to the order of the sums, so the same bound);
# shuffling the latents shuffles its rows the same way.

# %%
for n_media in (1, 64, 300, 1000):
    out_n, _ = cross_attention(latents, rng.standard_normal((n_media, D)), wq, wk, wv)  # (R, Dh)
    print(f"N = {n_media:4} media tokens -> out {out_n.shape}")
    assert out_n.shape == (R, Dh)

shuffled_media, _ = cross_attention(latents, media[rng.permutation(N)], wq, wk, wv)  # (R, Dh)
order = rng.permutation(R)
shuffled_latents, _ = cross_attention(latents[order], media, wq, wk, wv)  # (R, Dh)
err_media = refimpl.relative_error(shuffled_media, out)
err_latents = refimpl.relative_error(shuffled_latents, out[order])
print(f"media shuffled: output changed by {err_media:.0e};  latents shuffled: rows moved, error {err_latents:.0e}")
assert err_media <= bound and err_latents <= bound

# %% [markdown]
# **Look.** Self-attention is the special case where the media are also the queries:
# `cross_attention(media, media, ...)`. Drawn to scale, the two weight matrices over the same
# $N = 64$ keys:

# %%
_, self_weights = cross_attention(media, media, wq, wk, wv)  # (N, N)
fig, (ax_cross, ax_self) = plt.subplots(1, 2, figsize=(9, 3.8), layout="constrained")
viz.matrix(
    weights,
    ax=ax_cross,
    title=f"cross-attention: R x N = {R} x {N}",
    xlabel="media token (key)",
    ylabel="latent (query)",
    colorbar=False,
)
viz.matrix(
    self_weights,
    ax=ax_self,
    title=f"self-attention: N x N = {N} x {N}",
    xlabel="media token (key)",
    ylabel="media token (query)",
    colorbar=False,
)
for ax in (ax_cross, ax_self):
    ax.set_aspect("equal")  # one cell per weight, the same size in both panels
    ax.images[0].set_clim(0, self_weights.max())  # one colour scale for both
fig.colorbar(ax_self.images[0], ax=[ax_cross, ax_self], fraction=0.03, label="attention weight")
plt.show()


# %% [markdown]
# **Notice.** Both matrices have a column per media token; the cross-attention matrix has a
# row per latent, the self-attention matrix a row per media token. Everything that differs
# in cost between the two is that number of rows: $R$, fixed, against $N$, which grows with
# the image. The last section measures it.

# %% [markdown]
# ## Heads: split, attend, merge
#
# One head gives each latent one distribution over the media, so it can look for one kind of
# thing at a time. **Multi-head** attention projects to $H \cdot D_h$ columns and cuts them
# into $H$ heads of width $D_h$; each head attends on its own, and the heads' outputs are
# put side by side and projected back to width $D$:
#
# $$\mathrm{head}_h = \mathrm{softmax}\!\left(\frac{Q_h K_h^\top}{\sqrt{D_h}}\right) V_h, \qquad
# Q_h = (L W_q)_{[:,\, h D_h : (h+1) D_h]},\; K_h = (X W_k)_{[:,\, h D_h : (h+1) D_h]},\; V_h = \ldots$$
#
# $$\mathrm{out} = \left[\mathrm{head}_0, \ldots, \mathrm{head}_{H-1}\right] W_o \in \mathbb{R}^{R \times D},
# \qquad W_q, W_k, W_v \in \mathbb{R}^{D \times H D_h},\; W_o \in \mathbb{R}^{H D_h \times D}.$$
#
# Head $h$ is the column block $h D_h \ldots (h+1) D_h - 1$ of a projection's output (that is
# `refimpl`'s layout, and open_flamingo's, IDEFICS's, torch's). $H \cdot D_h$ need not equal
# $D$. To run all heads as one batched attention, the head axis moves in front of the tokens:
# $(\ldots, R, H D_h) \to (\ldots, R, H, D_h) \to (\ldots, H, R, D_h)$, a reshape then a swap of
# two axes. Merging undoes both steps. Then the heads are just another batch axis: notebook 1's
# `attention` broadcasts over leading axes, so it runs all $H$ heads in one call.

# %% [markdown]
# ### Exercise 1: split the heads
#
# Reshape, then swap the token and head axes. (Reshaping straight to `(..., H, L, Dh)` gives
# the right shape and the wrong numbers: the check catches that.)


# %%
def split_heads(x, heads):
    """(..., L, H*Dh) -> (..., H, L, Dh): head h is columns h*Dh ... (h+1)*Dh - 1 of x."""
    # YOUR CODE HERE (about 3 lines)
    raise NotImplementedError


# %%
ex.check_split_heads(split_heads)


# %% [markdown]
# Stuck? `??ex.split_heads` shows a worked solution.
#
# ### Exercise 2: merge them back
#
# The inverse: after it, each row holds head 0's $D_h$ numbers, then head 1's, and so on.


# %%
def merge_heads(x):
    """(..., H, L, Dh) -> (..., L, H*Dh): the inverse of split_heads, heads side by side in each row."""
    # YOUR CODE HERE (about 3 lines)
    raise NotImplementedError


# %%
ex.check_merge_heads(merge_heads)

# %% [markdown]
# Stuck? `??ex.merge_heads` shows a worked solution.
#
# What the split does, on integers (the cells below use the worked solutions `ex.split_heads`
# and `ex.merge_heads`, so they run whether or not your exercises are done): two tokens, three
# heads of width 2.

# %%
# NBVAL_CHECK_OUTPUT
tokens = np.arange(2 * 6).reshape(2, 6)  # (L, H*Dh) = (2, 3*2)
split = ex.split_heads(tokens, 3)  # (H, L, Dh) = (3, 2, 2)
print("tokens (L, H*Dh):\n", tokens)
print("split (H, L, Dh):\n", split)
assert split.shape == (3, 2, 2) and (split[1] == tokens[:, 2:4]).all()  # head 1 = columns 2, 3
assert (ex.merge_heads(split) == tokens).all()  # merge undoes split exactly


# %% [markdown]
# ### Build: multi-head cross-attention
#
# Project, split, attend (all heads at once), merge, project back. `refimpl.attention` is
# notebook 1's attention; we trust it now.


# %%
def multi_head_cross_attention(latents, media, wq, wk, wv, wo, heads):
    """Multi-head cross-attention: R latent queries read N media tokens, in H heads.

        head_h = softmax(Q_h K_h^T / sqrt(Dh)) V_h,    out = concat_h(head_h) @ wo
        Q = latents @ wq,  K = media @ wk,  V = media @ wv,  each cut into H column blocks

    latents (..., R, D)   media (..., N, D)
    wq, wk, wv (D, H*Dh)  wo (H*Dh, D)
    returns out (..., R, D) and the weights (..., H, R, N)
    """
    q = ex.split_heads(latents @ wq, heads)  # (..., H, R, Dh)
    k = ex.split_heads(media @ wk, heads)  # (..., H, N, Dh)
    v = ex.split_heads(media @ wv, heads)  # (..., H, N, Dh)
    out, weights = refimpl.attention(q, k, v, return_weights=True)  # (..., H, R, Dh), (..., H, R, N)
    return ex.merge_heads(out) @ wo, weights  # (..., R, D), (..., H, R, N)


B, R, N, D, H, Dh = 2, 5, 37, 24, 3, 10  # H*Dh = 30 != D
latents = rng.standard_normal((B, R, D))  # (B, R, D)
media = rng.standard_normal((B, N, D))  # (B, N, D)
params = {
    "wq": rng.normal(0, D**-0.5, (D, H * Dh)),
    "wk": rng.normal(0, D**-0.5, (D, H * Dh)),
    "wv": rng.normal(0, D**-0.5, (D, H * Dh)),
    "wo": rng.normal(0, (H * Dh) ** -0.5, (H * Dh, D)),
}
out, weights = multi_head_cross_attention(latents, media, **params, heads=H)
print("out", out.shape, " weights", weights.shape)
assert out.shape == (B, R, D) and weights.shape == (B, H, R, N)

# %% [markdown]
# **Check** against `refimpl.multi_head_attention`, in float64, with the same bound as above
# ($10^{-12}$: the same math in another order).

# %%
reference, reference_weights = refimpl.multi_head_attention(params, latents, media, heads=H, return_weights=True)
err = refimpl.relative_error(out, reference)  # (B, R, D)
err_w = refimpl.relative_error(weights, reference_weights)  # (B, H, R, N)
print(f"output: max relative error {err:.1e} (bound {bound:g});  weights: {err_w:.1e}")
assert err <= bound and err_w <= bound

# %% [markdown]
# ## What heads buy: one latent, two questions
#
# With random weights every head's map is noise. To see what heads are for, we set the
# weights by hand (no training) on a photograph. The media are the $512 \times 512$ astronaut
# image cut into $32 \times 32$-pixel patches: a $16 \times 16$ grid, $N = 256$ tokens. Each token
# has $D = 6$ features: the patch's mean red, green and blue (0 to 1), the row and the column
# of its centre (0 at the top left, 1 at the bottom right), and a constant 1.
#
# There is one latent, $R = 1$, and $H = 2$ heads of width $D_h = 2$. The latent is the constant
# feature alone, so the row of $W_q$ for that feature holds the queries:
#
# - head 0's keys are (red, blue) and the latent's query is $(\alpha, -\alpha)$: its score is
#   $\alpha\,(\text{red} - \text{blue})$, "more red than blue", so it looks for the orange suit;
# - head 1's keys are (row, column) and the query is $(-\beta, -\beta)$: its score is
#   $-\beta\,(\text{row} + \text{column})$, "near the top left corner".
#
# The values are the same features, so each head reports what it found: head 0 the mean
# (red, blue) of what it attends to, head 1 the mean (row, column). The **same four columns**
# read as one head of width $H D_h = 4$ give single-head attention, with the same parameters and
# the same multiply-adds. Only the split differs. Both run through the `multi_head_cross_attention`
# just built.

# %%
image = data.astronaut()  # (512, 512, 3) uint8
patch, grid = 32, 16  # 32 x 32-pixel patches on a 16 x 16 grid
colours = image.reshape(grid, patch, grid, patch, 3).mean(axis=(1, 3)) / 255  # (16, 16, 3) mean r, g, b
row_of, col_of = np.meshgrid(
    (np.arange(grid) + 0.5) / grid, (np.arange(grid) + 0.5) / grid, indexing="ij"
)  # (16, 16) each
media = np.concatenate(
    [colours, row_of[..., None], col_of[..., None], np.ones((grid, grid, 1))], axis=-1
)  # (16, 16, 6)
media = media.reshape(grid * grid, 6)  # (N, D) = (256, 6): features red, green, blue, row, col, 1
RED, GREEN, BLUE, ROW, COL, ONE = range(6)  # feature columns

H, Dh, alpha, beta = 2, 2, 12.0, 12.0
latent = np.zeros((1, 6))  # (R, D) = (1, 6): one latent, just the constant feature
latent[0, ONE] = 1.0
wq = np.zeros((6, H * Dh))  # (D, H*Dh): the latent's queries, head 0 then head 1
wq[ONE] = [alpha, -alpha, -beta, -beta]
wk = np.zeros((6, H * Dh))  # (D, H*Dh): keys, head 0 (red, blue), head 1 (row, col)
wk[[RED, BLUE, ROW, COL], [0, 1, 2, 3]] = 1.0
wv = wk.copy()  # values: the same features, so each head reports what it found
wo = np.zeros((H * Dh, 6))  # (H*Dh, D): put (red, blue, row, col) back in their feature columns
wo[[0, 1, 2, 3], [RED, BLUE, ROW, COL]] = 1.0
hand_set = {"wq": wq, "wk": wk, "wv": wv, "wo": wo}

two_heads, maps = multi_head_cross_attention(latent, media, **hand_set, heads=2)  # (1, D), (2, 1, N)
one_head, wide_map = multi_head_cross_attention(latent, media, **hand_set, heads=1)  # (1, D), (1, 1, N)
p0, p1, wide = maps[0, 0], maps[1, 0], wide_map[0, 0]  # (N,) each: the latent's weights per head

fig, axes = plt.subplots(1, 3, figsize=(8, 3))
viz.attention_map(p0, (grid, grid), image, ax=axes[0], title="head 0 of 2: red, not blue")
viz.attention_map(p1, (grid, grid), image, ax=axes[1], title="head 1 of 2: top left")
viz.attention_map(wide, (grid, grid), image, ax=axes[2], title="one head of width 4")
fig.suptitle("One latent's attention over the 16 x 16 patches (hand-set weights)")
fig.tight_layout()
plt.show()

# %%
for name, readout in (("two heads", two_heads[0]), ("one wide head", one_head[0])):
    red, blue, row, col = readout[[RED, BLUE, ROW, COL]]
    print(f"{name:14} read colour (red, blue) = ({red:.2f}, {blue:.2f}),  position (row, col) = ({row:.2f}, {col:.2f})")

overlap = np.minimum(p0, p1).sum()  # 1 for identical distributions, 0 for disjoint ones
top0, top1 = (tuple(int(i) for i in np.unravel_index(p.argmax(), (grid, grid))) for p in (p0, p1))
print(f"overlap of head 0 and head 1: {overlap:.2f};  their top patches (row, col): {top0}, {top1}")
assert overlap < 0.1  # the two heads attend to different keys
assert top0[0] >= grid // 2 and top1 == (0, 0)  # head 0 on the suit (lower half), head 1 in the corner

# the wide head's score is the SUM of the heads' scores, scaled by 1/sqrt(H*Dh) instead of 1/sqrt(Dh):
# its weights are (p0 * p1) ** (1 / sqrt(H)), normalised. High only where both heads are fairly high.
product = (p0 * p1) ** (1 / np.sqrt(H))
err = refimpl.relative_error(wide, product / product.sum())
print(f"wide head = normalised (p0 * p1)^(1/sqrt(2)): max relative error {err:.1e} (bound {bound:g})")
assert err <= bound


# %% [markdown]
# **Notice.** The two heads ask two questions and report two answers: head 0 finds the suit
# and reads a colour with much more red than blue; head 1 finds the corner and reads a position
# near $(0, 0)$. The wide head has a single distribution per latent, and the algebra above says
# which one: its score is the sum of the two, so it goes where *both* are fairly high (reddish
# things near the top left: the flag and the hair) and reports a blend of the two. Heads let
# one latent gather several unrelated things in one layer.
#
# And they are free. Per head, the scores $Q_h K_h^\top$ are an $(R, D_h) \times (D_h, N)$
# product, $2 R N D_h$ floating-point operations (a multiply and an add per term), and the
# weighted sum of values another $2 R N D_h$: $4 R N D_h$ per head, $4 R N H D_h$ for $H$ heads,
# which depends on $H$ and $D_h$ only through $H D_h$. The projections do not see the split at
# all. Only the softmax's exponentials grow, $H R N$ of them instead of $R N$: one per
# $4 D_h$ multiply-adds.


# %%
def attention_flops(queries, keys, head_dim, heads=1):
    """Floating-point operations of the attention core, H heads of width Dh:
    scores (M, Dh) @ (Dh, N) and weights (M, N) @ (N, Dh), 2 * M * N * Dh each, per head."""
    return heads * (2 * queries * keys * head_dim + 2 * queries * keys * head_dim)


def projection_flops(queries, keys, dim, heads, kv_heads, head_dim):
    """Floating-point operations of the projections: Q (M, D) @ (D, H*Dh), K and V (N, D) @ (D, Hkv*Dh),
    out (M, H*Dh) @ (H*Dh, D)."""
    return (
        2 * queries * dim * heads * head_dim
        + 2 * 2 * keys * dim * kv_heads * head_dim
        + 2 * queries * heads * head_dim * dim
    )


for heads, head_dim in ((2, 2), (1, 4)):  # the astronaut: two heads of 2, one head of 4
    print(f"H = {heads}, Dh = {head_dim}: attention {attention_flops(1, 256, head_dim, heads)} FLOPs")
assert attention_flops(1, 256, 2, heads=2) == attention_flops(1, 256, 4, heads=1)
# open_flamingo's sizes (R = 64, D = 1024, 8 heads of 64) on a 24 x 24 grid, against one head of 512
many = attention_flops(64, 576, 64, heads=8) + projection_flops(64, 576, 1024, 8, 8, 64)
one = attention_flops(64, 576, 512, heads=1) + projection_flops(64, 576, 1024, 1, 1, 512)
print(f"attention + projections: H = 8, Dh = 64: {many:,} FLOPs;  H = 1, Dh = 512: {one:,} FLOPs")
assert many == one


# %% [markdown]
# ## Fewer key/value heads: grouped-query attention
#
# Some resamplers (Idefics2's, `num_key_value_heads`) compute keys and values for only
# $H_{kv} < H$ heads and let each serve a group of $G = H / H_{kv}$ query heads: query head $h$
# uses key/value head $\lfloor h / G \rfloor$. The key and value projections shrink to
# $W_k, W_v \in \mathbb{R}^{D \times H_{kv} D_h}$, and so do the keys and values a model has to
# compute and keep, by a factor $G$. The attention core does not shrink: every query head still
# scores all $N$ keys. $H_{kv} = 1$ is multi-query attention; $H_{kv} = H$ is the multi-head
# attention above.
#
# `refimpl.multi_head_attention(..., kv_heads=Hkv)` does it without copies: it views the $H$
# query heads as $(H_{kv}, G)$ and broadcasts the keys and values over $G$. The simplest way is
# to repeat each key/value head $G$ times along the head axis.

# %% [markdown]
# ### Exercise 3: grouped-query cross-attention
#
# Like `multi_head_cross_attention` above, with `kv_heads` key/value heads. `np.repeat` repeats
# each head in place (`0, 0, 1, 1`); `np.tile` would repeat the whole list (`0, 1, 0, 1`),
# which is another model.


# %%
def grouped_query_cross_attention(latents, media, wq, wk, wv, wo, heads, kv_heads):
    """Multi-head cross-attention with Hkv key/value heads, each shared by G = H / Hkv query heads.

        head_h = softmax(Q_h K_g^T / sqrt(Dh)) V_g,  g = h // G,    out = concat_h(head_h) @ wo

    latents (..., R, D)   media (..., N, D)
    wq (D, H*Dh)   wk, wv (D, Hkv*Dh)   wo (H*Dh, D)
    returns (..., R, D)
    """
    # YOUR CODE HERE (about 7 lines)
    raise NotImplementedError


# %%
ex.check_grouped_query_cross_attention(grouped_query_cross_attention)

# %% [markdown]
# Stuck? `??ex.grouped_query_cross_attention` shows a worked solution.
#
# What the sharing saves, for 16 query heads of width 64 reading a $24 \times 24$ grid with
# $D = 1024$: the key/value projections and the keys and values kept, by $G$; the attention core
# not at all.

# %%
R, N, D, H, Dh = 64, 576, 1024, 16, 64
for kv_heads in (16, 4, 1):
    kv_floats = 2 * N * kv_heads * Dh  # K and V: (N, Hkv*Dh) each
    print(
        f"Hkv = {kv_heads:2}: projections {projection_flops(R, N, D, H, kv_heads, Dh):>11,} FLOPs, "
        f"attention {attention_flops(R, N, Dh, H):>10,} FLOPs, keys + values {kv_floats:>9,} numbers"
    )
q_and_out = 2 * R * D * H * Dh + 2 * R * H * Dh * D  # the query and output projections: no Hkv in them
kv_part = {kv_heads: projection_flops(R, N, D, H, kv_heads, Dh) - q_and_out for kv_heads in (16, 4, 1)}
assert kv_part[16] == 4 * kv_part[4] == 16 * kv_part[1]  # the key/value projections shrink by G

# %% [markdown]
# ## The cost: $R \cdot N$ against $N^2$
#
# Count first. A head's attention core costs $4 M N D_h$ for $M$ queries over $N$ keys
# (`attention_flops` above). Cross-attention from the latents has $M = R$; self-attention over
# the media has $M = N$:
#
# $$\text{cross: } 4 R N D_h \;=\; O(R \cdot N), \qquad \text{self: } 4 N^2 D_h \;=\; O(N^2), \qquad
# \frac{\text{self}}{\text{cross}} = \frac{N}{R}.$$
#
# The weights need an $R \times N$ or an $N \times N$ matrix (per head, per batch item) where they
# are formed. (The projections add $O(N \cdot D \cdot H D_h)$ to both, linear in $N$.) For
# open_flamingo's $R = 64$ and $D_h = 64$, one head, $N$ from 64 to 16384 (16 frames of $32 \times 32$):

# %%
# NBVAL_CHECK_OUTPUT
R, Dh = 64, 64
sizes = [64, 256, 1024, 4096, 16384]
print(
    f"{'N':>6} {'cross FLOPs':>14} {'self FLOPs':>18} {'self/cross':>10} "
    f"{'R x N float32 bytes':>20} {'N x N float32 bytes':>20}"
)
for n in sizes:
    cross, self_ = attention_flops(R, n, Dh), attention_flops(n, n, Dh)
    print(f"{n:>6} {cross:>14,} {self_:>18,} {self_ // cross:>10} {4 * R * n:>20,} {4 * n * n:>20,}")
    assert self_ == cross * n // R  # the ratio is N / R exactly


# %% [markdown]
# Now measure. Both are timed with the same kernel, `refimpl.attention(..., backend="numba")`
# in float32: it streams over the keys with an online softmax (notebook 3 builds it) and never
# holds the $N \times N$ matrix, which at $N = 16384$ would be 1 GiB in float32, 2 GiB in
# float64. The same code runs both; the only difference is the number of queries, $R$ or $N$.
# Timings are medians: many repeats where a call is short, one where it takes a second. (The
# kernel spreads heads and batch items over the cores; one head runs on one core.)


# %%
def median_seconds(fn, repeats):
    """Median wall-clock time of fn() over `repeats` calls, in seconds."""
    return float(np.median(timeit.repeat(fn, number=1, repeat=repeats)))


def attend(q, kv):
    """One head of float32 attention, q (M, Dh) over kv (N, Dh) as keys and values, streamed by Numba."""
    return refimpl.attention(q, kv, kv, backend="numba", dtype=np.float32)  # (M, Dh)


latents32 = rng.standard_normal((R, Dh)).astype(np.float32)  # (R, Dh), already projected
attend(latents32, latents32)  # warm-up: loads the compiled kernel (compiles it, the first time)
self_repeats = {64: 9, 256: 9, 1024: 5, 4096: 3, 16384: 1}
cross_s, self_s = [], []
for n in sizes:
    media32 = rng.standard_normal((n, Dh)).astype(np.float32)  # (N, Dh), already projected
    cross_s.append(median_seconds(lambda: attend(latents32, media32), 9))  # R queries over N keys
    self_s.append(median_seconds(lambda: attend(media32, media32), self_repeats[n]))  # N queries over N keys
    print(
        f"N = {n:5}: cross {cross_s[-1] * 1e3:8.2f} ms, self {self_s[-1] * 1e3:9.2f} ms, "
        f"self/cross {self_s[-1] / cross_s[-1]:6.0f}  (FLOP ratio N/R = {n // R})"
    )

# %%
sizes_a, cross_a, self_a = np.array(sizes), np.array(cross_s), np.array(self_s)
large = sizes_a >= 1024  # small N is dominated by the fixed cost of a call
slope_cross = np.polyfit(np.log(sizes_a[large]), np.log(cross_a[large]), 1)[0]
slope_self = np.polyfit(np.log(sizes_a[large]), np.log(self_a[large]), 1)[0]

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(sizes_a, self_a * 1e3, "o-", color="C3", label=f"self-attention, N queries (slope {slope_self:.2f})")
ax.plot(sizes_a, cross_a * 1e3, "s-", color="C0", label=f"cross-attention, R = {R} queries (slope {slope_cross:.2f})")
ax.plot(sizes_a, self_a[-1] * 1e3 * (sizes_a / sizes_a[-1]) ** 2, ":", color="gray", label="reference slopes 2 and 1")
ax.plot(sizes_a, cross_a[-1] * 1e3 * (sizes_a / sizes_a[-1]), ":", color="gray")
ax.set(
    xscale="log",
    yscale="log",
    xlabel="media tokens N",
    ylabel="time per call (ms)",
    title=f"One head, Dh = {Dh}, float32, Numba kernel",
)
ax.legend(fontsize=8)
plt.show()

# Measurements, not checks: a busy machine moves timings, so no assert here is about time
# (the FLOP counts above are asserted; these are what this machine made of them).
print(f"log-log slope for N >= 1024: cross-attention {slope_cross:.2f}, self-attention {slope_self:.2f}")
print(
    f"at N = {sizes[-1]}: self-attention took {self_a[-1] / cross_a[-1]:.0f} times as long as cross-attention "
    f"(FLOP ratio N / R = {sizes[-1] // R})"
)

# %% [markdown]
# **Notice.** Past the fixed cost of a call (argument checks, the kernel launch: the flat part
# at small $N$), cross-attention's time grows like $N$ and self-attention's like $N^2$: each
# quadrupling of $N$ multiplies the first by about 4 and the second by about 16. These are
# measurements, not checks, and they move with the machine and whatever else it runs: in the
# run committed here, on a 2-core CPU shared with other work, the slopes came out at 1.34 and
# 2.03 and self-attention took 217 times as long as cross-attention at $N = 16384$, where the
# FLOP ratio $N / R$ is 256 (an earlier run of this cell gave 0.94, 2.03 and 372). The FLOP
# counts above are exact and asserted; the times only show what a machine makes of them.
#
# Memory tells the same story wherever the weights are formed (NumPy's path, the attention
# maps you plot, a backward pass that keeps them): one float32 matrix per head and batch item.

# %%
mib = 2.0**20
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(sizes_a, 4 * sizes_a**2 / mib, "o-", color="C3", label="self-attention: N x N weights")
ax.plot(sizes_a, 4 * R * sizes_a / mib, "s-", color="C0", label=f"cross-attention: R x N weights, R = {R}")
ax.axhline(1024, color="gray", ls=":", lw=1)
ax.text(sizes_a[0], 1024 / 2.5, "1 GiB", color="gray", fontsize=8)
ax.set(
    xscale="log",
    yscale="log",
    xlabel="media tokens N",
    ylabel="MiB (float32, one head)",
    title="Memory of the attention weights",
)
ax.legend(fontsize=8)
plt.show()
assert 4 * sizes_a[-1] ** 2 == 2**30 and 4 * R * sizes_a[-1] == 4 * 2**20  # 1 GiB against 4 MiB at N = 16384

# %% [markdown]
# **Notice.** At $N = 16384$ self-attention's weights take 1 GiB for one head of one image;
# with 8 heads and a batch of 32 that is 256 GiB. The latents' weights take 4 MiB. This is the
# resampler's bargain: $R$ fixed queries make the cost of reading the media linear in $N$.

# %% [markdown]
# ## Summary
#
# **What you built.** Single-head cross-attention ($R$ latent queries over $N$ media keys),
# `split_heads` and `merge_heads`, multi-head cross-attention checked against
# `refimpl.multi_head_attention` to $10^{-12}$ in float64, grouped-query attention with
# $H_{kv} < H$ key/value heads, and FLOP counters for the attention core and the projections.
#
# **What to notice.**
# - The output of cross-attention has one row per query: $R$, whatever $N$ is, and it does not
#   depend on the order of the media tokens.
# - Heads are column blocks of the projections, moved to a batch axis. $H$ heads of width $D_h$
#   cost the same multiply-adds as one of width $H D_h$, but give each latent $H$ distributions
#   instead of one: one head can find the suit while another finds the corner.
# - Sharing key/value heads (grouped-query) shrinks the key/value projections and storage by
#   $G = H / H_{kv}$, not the attention core.
# - Cross-attention costs $4 R N D_h$ per head, linear in $N$; self-attention $4 N^2 D_h$. Measured
#   on a shared 2-core CPU: log-log slopes of about 1 and 2, and at $N = 16384$ a factor of 217
#   between them, of the order of $N / R = 256$ (timings move with the machine and its load).
#
# **Next.** Notebook 3 opens the Numba kernel that timed self-attention here without ever
# holding the $N \times N$ matrix: a loop over blocks of keys with an online softmax.
