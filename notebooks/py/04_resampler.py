# %% [markdown]
# # 4. The Perceiver Resampler in NumPy
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/perceiver-resampler-course/perceiver-resampler-course/blob/v0.1.0/notebooks/04_resampler.ipynb)
#
# Runs on a laptop CPU in about 10 s. After it you will be able to turn real photographs of
# any size, and a short video, into patch features; write the whole Perceiver Resampler in
# NumPy, line by line beside the Flamingo paper's pseudo-code, and check it against `refimpl`;
# batch inputs of different sizes with padding and a mask; show, with asserts, that the
# resampler ignores the order of the tokens of a frame but not the order of the frames; and
# count the parameters of the paper's configuration.

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
import dataclasses

import matplotlib.pyplot as plt
import numpy as np
import skimage.data
import skimage.transform

import refimpl
from refimpl import viz
from refimpl.exercises import resampler as ex

rng = np.random.default_rng(0)
plt.rcParams["figure.dpi"] = 80  # photographs make large PNGs: 80 dpi keeps the notebook small


# %% [markdown]
# ## 1. Features: photographs cut into patches
#
# Flamingo's vision encoder (an NFNet-F6) turns an image into a grid of feature vectors, one
# per region. We have no trained encoder here, so we use the simplest stand-in with the same
# shapes: cut the image into $p \times p$ patches ($p = 16$ pixels), flatten each patch to a
# vector of $p \cdot p \cdot C$ numbers ($C = 3$ colour channels), and map it to width $D$ with a
# fixed, seeded random matrix $W_e$ of shape $(p^2 C, D)$:
#
# $$x_s = \mathrm{patch}_s \, W_e, \qquad s = 0, \dots, S - 1, \qquad S = h \cdot w .$$
#
# This is a ViT's patch embedding with random weights: honest about shapes, silent about
# meaning. Its features describe colour and texture, not objects, and they carry no position:
# a patch's vector does not say where in the image it was. A real encoder's features do both.
#
# An image of $h \times w$ patches gives $S = h \cdot w$ tokens, listed row by row: patch
# $(r, c)$ is token $s = r \cdot w + c$. Cutting the image is your first exercise.


# %%
def patchify(image, patch):
    """Cut an image into square patches, row by row, each flattened.

    image: (height, width, C) with height and width multiples of `patch`.
    returns (S, patch * patch * C), S = h * w on the (h, w) = (height // patch, width // patch)
    grid: patch r * w + c is the block image[r*patch:(r+1)*patch, c*patch:(c+1)*patch, :]
    flattened in its own row-major order (pixel row, pixel column, channel).
    Hint: one reshape splits each side into (grid, patch), one transpose brings the grid first.
    """
    # YOUR CODE HERE (about 4 lines)
    raise NotImplementedError


# %%
ex.check_patchify(patchify)

# %% [markdown]
# Stuck? `??ex.patchify` shows a worked solution. From here on the notebook uses
# `ex.patchify`, so it runs whatever your cell above holds.
#
# Four photographs that ship with scikit-image (no download), each centre-cropped to a grid
# of its own shape and resized so that its sides are multiples of $p$: a square, two
# landscapes and a portrait, from $S = 96$ to $S = 150$ tokens.

# %%
PATCH = 16  # p, pixels per patch side
D = 96  # model width of the course's small resampler


def fit(image, rows, cols, patch=PATCH):
    """Centre-crop `image` to the aspect ratio cols : rows, resize it to (rows*patch, cols*patch).
    returns float64 pixels in [0, 1], shape (rows*patch, cols*patch, C)."""
    height, width = image.shape[:2]
    if height * cols > width * rows:  # too tall for the grid: crop rows
        keep = width * rows // cols
        image = image[(height - keep) // 2 : (height - keep) // 2 + keep]
    else:  # too wide: crop columns
        keep = height * cols // rows
        image = image[:, (width - keep) // 2 : (width - keep) // 2 + keep]
    return skimage.transform.resize(image, (rows * patch, cols * patch), anti_aliasing=True)


w_embed = rng.normal(0.0, (PATCH * PATCH * 3) ** -0.5, (PATCH * PATCH * 3, D))  # W_e (p*p*C, D), fixed


def encode(image):
    """The stand-in vision encoder: image (height, width, 3) in [0, 1] -> features (S, D), grid (h, w)."""
    patches = ex.patchify(2.0 * image - 1.0, PATCH)  # (S, p*p*C), pixels in [-1, 1]
    grid = (image.shape[0] // PATCH, image.shape[1] // PATCH)
    return patches @ w_embed, grid  # (S, D), (h, w)


photos = {
    "astronaut": fit(skimage.data.astronaut(), 10, 10),
    "coffee": fit(skimage.data.coffee(), 10, 15),
    "chelsea": fit(skimage.data.chelsea(), 8, 12),
    "rocket": fit(skimage.data.rocket(), 12, 9),
}
features, grids = {}, {}
for name, image in photos.items():
    features[name], grids[name] = encode(image)
    h, w = grids[name]
    assert features[name].shape == (h * w, D)  # (S, D)
    print(
        f"{name:10} {image.shape[0]:3} x {image.shape[1]:3} pixels -> grid {h:2} x {w:2} "
        f"-> features {features[name].shape}"
    )


# %%
def show_grid(ax, image, title):
    """The image with its patch grid drawn on it."""
    ax.imshow(image, interpolation="nearest")
    for y in range(0, image.shape[0] + 1, PATCH):
        ax.axhline(y - 0.5, color="white", lw=0.4)
    for x in range(0, image.shape[1] + 1, PATCH):
        ax.axvline(x - 0.5, color="white", lw=0.4)
    ax.set(title=title, xticks=[], yticks=[])


fig, axes = plt.subplots(1, 4, figsize=(9, 2.6), width_ratios=[10, 15, 12, 9])
for ax, (name, image) in zip(axes, photos.items()):
    h, w = grids[name]
    show_grid(ax, image, f"{name}: {h} x {w}, S = {h * w}")
fig.suptitle(f"Four photographs cut into {PATCH} x {PATCH}-pixel patches")
fig.tight_layout()
plt.show()

# %% [markdown]
# Every white square becomes one token of width $D$. The resampler never sees the grid: it
# receives $S$ vectors, and `refimpl.viz` needs the grid $(h, w)$ only to draw attention maps
# back onto the image.
#
# **A short video.** Flamingo reads a video as $T$ frames (sampled at 1 frame per second in the
# paper), each encoded like an image: features of shape $(T, S, D)$. Ours is a camera panning
# across the coffee photograph: $T = 4$ frames of $8 \times 8$ patches, each 21 pixels to the
# right of the one before (so the patches do not simply move by whole tokens).

# %%
T = 4
wide = fit(skimage.data.coffee(), 8, 12)  # (128, 192, 3)
frames = [wide[:, 21 * t : 21 * t + 8 * PATCH] for t in range(T)]  # T frames of (128, 128, 3)
video = np.stack([encode(frame)[0] for frame in frames])  # (T, S, D)
video_grid = (8, 8)
assert video.shape == (T, 64, D)

fig, ax = plt.subplots(figsize=(4.5, 3.2))
ax.imshow(wide, interpolation="nearest")
for t, colour in enumerate(["white", "gold", "tomato", "deepskyblue"]):
    ax.add_patch(
        plt.Rectangle(
            (21 * t - 0.5, 0.5 + 2 * t),
            8 * PATCH - 1,
            8 * PATCH - 2 - 4 * t,
            fill=False,
            edgecolor=colour,
            lw=1.5,
            label=f"frame t = {t}",
        )
    )
ax.set(xticks=[], yticks=[], title=f"A panning 'video': T = {T} frames of 8 x 8 patches, N = T*S = {T * 64}")
ax.legend(loc="lower left", fontsize=7, framealpha=0.6)
plt.show()

# %% [markdown]
# ## 2. The resampler, line by line
#
# The paper's pseudo-code (Alayrac et al. 2022, *Flamingo: a Visual Language Model for
# Few-Shot Learning*, arXiv:2204.14198, Fig. 5):
#
# ```python
# def perceiver_resampler(
#     x_f,              # The [T, S, d] visual features (T=time, S=space)
#     time_embeddings,  # The [T, 1, d] time pos embeddings.
#     x,                # R learned latents of shape [R, d]
#     num_layers,       # Number of layers
# ):
#     # Add the time position embeddings and flatten.
#     x_f = x_f + time_embeddings
#     x_f = flatten(x_f)  # [T, S, d] -> [T * S, d]
#     # Apply the Perceiver Resampler layers.
#     for i in range(num_layers):
#         # Attention.
#         x = x + attention_i(q=x, kv=concat([x_f, x]))
#         # Feed forward.
#         x = x + ffw_i(x)
#     return x
# ```
#
# The pseudo-code leaves out what every implementation adds: each block normalises its
# inputs first (*pre-norm*; the attention has one LayerNorm for the media and one for the
# latents), and the output gets a final LayerNorm. The paper's feed-forward uses the squared
# ReLU, $\max(z, 0)^2$, with a hidden width $F = 4D$ (its appendix).
#
# Our small configuration: $D = 96$, 3 layers, $H = 4$ heads of width $D_h = 20$ (so
# $H \cdot D_h = 80 \ne D$: a wrong transpose cannot hide), $R = 16$ latents, and a table of 4
# time embeddings. `refimpl.init_resampler` draws every parameter at random, seeded; the
# names follow `refimpl/params.py`.

# %%
config = refimpl.ResamplerConfig(
    dim=D, depth=3, heads=4, dim_head=20, num_latents=16, ff_mult=4, num_time_embeds=T, activation="squared_relu"
)
params = refimpl.init_resampler(config, seed=0)
R = config.num_latents
print(config)
for name, value in params.items():
    if not name.startswith("layers.") or name.startswith("layers.0."):  # layers 1 and 2 repeat layer 0's names
        print(f"  {name:32} {value.shape}")


# %% [markdown]
# **LayerNorm** normalises each token over its $D$ features, then scales and shifts them with
# learned vectors $\gamma, \beta$ of width $D$:
#
# $$\mathrm{LN}(x) = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} \odot \gamma + \beta, \qquad
# \mu = \tfrac{1}{D} \textstyle\sum_d x_d, \quad \sigma^2 = \tfrac{1}{D} \sum_d (x_d - \mu)^2 ,$$
#
# with $\epsilon = 10^{-5}$; $\gamma$ and $\beta$ are the parameters named `...weight` and `...bias`.


# %%
def layer_norm(x, weight, bias, eps):
    """x (..., D) -> (..., D): (x - mean) / sqrt(var + eps) * weight + bias, over the last axis."""
    mean = x.mean(axis=-1, keepdims=True)  # (..., 1)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # (..., 1), divided by D as in torch
    return (x - mean) / np.sqrt(var + eps) * weight + bias  # (..., D)


def norm(params, prefix, x, config):
    """The LayerNorm whose weight and bias are params[prefix + "weight"], params[prefix + "bias"]."""
    return layer_norm(x, params[prefix + "weight"], params[prefix + "bias"], config.norm_eps)


x = features["coffee"]  # (S, D)
ours = norm(params, "norm.", x, config)
reference = refimpl.layers.layer_norm(x, params["norm.weight"], params["norm.bias"], config.norm_eps)
err = refimpl.relative_error(ours, reference)
print(f"layer_norm vs refimpl: max relative error {err:.1e} (bound 1e-12)")
assert err <= 1e-12


# %% [markdown]
# **Attention over media and latents.** The latents ask, the media and the latents answer:
# with $\hat{x}_f = \mathrm{LN}_{\text{media}}(x_f)$ of shape $(N, D)$ and
# $\hat{x} = \mathrm{LN}_{\text{latents}}(x)$ of shape $(R, D)$,
#
# $$\mathrm{attention}(q = \hat{x},\ kv = [\hat{x}_f; \hat{x}]), \qquad
# [\hat{x}_f; \hat{x}] \in \mathbb{R}^{(N + R) \times D},$$
#
# multi-head cross-attention as in notebook 2: $Q = \hat{x} W_q$, $K = [\hat{x}_f; \hat{x}] W_k$,
# $V = [\hat{x}_f; \hat{x}] W_v$, split into $H$ heads of width $D_h$, each head
# $\mathrm{softmax}(Q_h K_h^\top / \sqrt{D_h}) V_h$, the heads concatenated and mapped back by
# $W_o$. We call `refimpl.multi_head_attention` for that part; the new part is what goes in.
# The paper found that letting the latents attend to themselves too (the concatenation) works
# "slightly better" than attending to the media alone, as DETR and the Perceiver do
# (Appendix A.1.1). A key mask of width $N + R$ leaves out padding (section 4).


# %%
def attention_block(params, prefix, media, latents, config, key_mask=None):
    """attention(q = LN(latents), kv = concat(LN(media), LN(latents))), without the residual.

    media (..., N, D), latents (..., R, D), key_mask bool (..., N + R) or None (True = real)
    returns (..., R, D)
    """
    media = norm(params, prefix + "norm_media.", media, config)  # (..., N, D)
    latents = norm(params, prefix + "norm_latents.", latents, config)  # (..., R, D)
    context = np.concatenate([media, latents], axis=-2)  # (..., N + R, D)
    projections = {name: params[prefix + name] for name in ("wq", "wk", "wv", "wo")}
    mask = None if key_mask is None else key_mask[..., None, :]  # (..., 1, N + R): every latent alike
    return refimpl.multi_head_attention(projections, latents, context, heads=config.heads, mask=mask)  # (..., R, D)


# %% [markdown]
# **Feed-forward**, applied to each latent on its own, with the squared ReLU:
#
# $$\mathrm{ffw}(x) = \max(\mathrm{LN}(x)\, W_{\text{in}},\ 0)^2\ W_{\text{out}}, \qquad
# W_{\text{in}} \in \mathbb{R}^{D \times F},\ W_{\text{out}} \in \mathbb{R}^{F \times D}.$$


# %%
def feed_forward(params, prefix, x, config):
    """x (..., D) -> (..., D): max(LN(x) @ w_in, 0)^2 @ w_out, without the residual."""
    hidden = norm(params, prefix + "norm.", x, config) @ params[prefix + "w_in"]  # (..., F)
    return np.maximum(hidden, 0.0) ** 2 @ params[prefix + "w_out"]  # (..., D)


latents = rng.standard_normal((R, D))  # (R, D)
ours = feed_forward(params, "layers.1.ff.", latents, config)
reference = refimpl.layers.feed_forward(params, "layers.1.ff.", latents, "squared_relu", "layernorm", config.norm_eps)
err = refimpl.relative_error(ours, reference)
print(f"feed_forward vs refimpl: max relative error {err:.1e} (bound 1e-12)")
assert ours.shape == (R, D) and err <= 1e-12


# %% [markdown]
# **The whole resampler**, the pseudo-code with the norms written in. The time embedding of
# frame $t$ (a learned row of width $D$) is added to every token of that frame, then the
# $T \times S$ grid is flattened frame by frame into $N = T \cdot S$ tokens: token $t \cdot S + s$.
# Batch axes in front (`...`) and a padding mask are carried along for section 4.


# %%
def perceiver_resampler(params, x_f, config, mask=None):
    """Flamingo's Perceiver Resampler (Fig. 5), pre-norm, with a final LayerNorm.

        x_f = flatten(x_f + time_embeds[:T])            (..., N, D)
        x = latents;  for each layer:  x = x + attention(q = x, kv = [x_f; x]);  x = x + ffw(x)
        return LN(x)

    x_f: (..., T, S, D) media features; mask: bool (..., T, S), True = real token, or None.
    returns the latents (..., R, D).
    """
    *batch, frames, tokens, dim = x_f.shape
    x_f = x_f + params["time_embeds"][:frames, None, :]  # (..., T, S, D) + (T, 1, D)
    x_f = x_f.reshape(*batch, frames * tokens, dim)  # (..., N, D), token t*S + s
    x = np.broadcast_to(params["latents"], (*batch, config.num_latents, dim))  # (..., R, D)
    key_mask = None
    if mask is not None:  # the media tokens as the mask says, the R latents always real
        latents_real = np.ones((*batch, config.num_latents), dtype=bool)
        key_mask = np.concatenate([mask.reshape(*batch, frames * tokens), latents_real], axis=-1)  # (..., N + R)
    for i in range(config.depth):
        x = x + attention_block(params, f"layers.{i}.attn.", x_f, x, config, key_mask)  # (..., R, D)
        x = x + feed_forward(params, f"layers.{i}.ff.", x, config)  # (..., R, D)
    return norm(params, "norm.", x, config)  # (..., R, D)


# %% [markdown]
# **Check.** Ours against `refimpl.perceiver_resampler`, in float64, on the astronaut (one
# frame: `x_f` of shape $(1, S, D)$) and on the video. Both compute the same sums in different
# orders (our LayerNorm sums its squares with `mean`, refimpl's with `einsum`; the BLAS splits
# matrix products its own way), so
# each result may differ by a few units of float64 rounding, $1.1 \times 10^{-16}$, grown
# through three layers of sums over $D$ and $N$ terms. We measure about $10^{-15}$; the bound
# $10^{-12}$ leaves a factor of a thousand for other machines, and a real mistake is off by
# far more, as the last line shows.

# %%
bound = refimpl.TOLERANCES["float64", "same math in another order"]  # 1e-12 (see the cell above)
inputs = {"astronaut": features["astronaut"][None], "video": video}  # (T, S, D) each
for name, x_f in inputs.items():
    ours = perceiver_resampler(params, x_f, config)
    reference = refimpl.perceiver_resampler(params, x_f, config)
    err = refimpl.relative_error(ours, reference)
    print(f"{name:9} x_f {x_f.shape} -> {ours.shape}: max relative error {err:.1e} (bound {bound:g})")
    assert ours.shape == (R, D) and err <= bound

# a mistake the check catches: the latents left out of the keys and values (the Perceiver's way)
perceiver_way = dataclasses.replace(config, latents_in_kv=False)
off = refimpl.relative_error(
    refimpl.perceiver_resampler(params, video, perceiver_way), perceiver_resampler(params, video, config)
)
print(f"without the latents among the keys, the output moves by {off:.2f} (relative)")
assert off > 1e4 * bound

# %% [markdown]
# ## 3. $R$ outputs for every input size
#
# The latents are the queries, so the output has one row per latent: $(R, D)$ whatever $T$
# and $S$ are. The input sizes only change the length of each attention row, $N + R$.

# %%
media = {name: features[name][None] for name in photos} | {"video": video}  # name -> (T, S, D)
outputs = {name: perceiver_resampler(params, x_f, config) for name, x_f in media.items()}
for name, x_f in media.items():
    print(
        f"{name:10} T = {x_f.shape[0]}, S = {x_f.shape[1]:3}, N = {x_f.shape[0] * x_f.shape[1]:3} tokens "
        f"-> {outputs[name].shape}"
    )
    assert outputs[name].shape == (R, D)

# %% [markdown]
# **What the latents look at.** `return_attention=True` also returns each layer's weights,
# $(H, R, N + R)$. Below, the last layer's weights averaged over the heads, one panel per
# latent, drawn on the chelsea photograph; then one latent in every layer and head. The
# weights here are random: the maps are the patterns of a random projection of colour and
# texture, not of objects. Meaningful maps need a trained resampler: notebook 6 trains one,
# and notebook 7 reads its maps.

# %%
x_f = features["chelsea"][None]  # (1, S, D)
_, maps = refimpl.perceiver_resampler(params, x_f, config, return_attention=True)
S_chelsea = x_f.shape[1]
assert len(maps) == config.depth and maps[0].shape == (config.heads, R, S_chelsea + R)  # (H, R, N + R)
np.testing.assert_allclose(maps[-1].sum(axis=-1), 1.0, rtol=0, atol=1e-12)  # every row a distribution

last = maps[-1].mean(axis=0)  # (R, N + R): last layer, mean over heads
to_latents = last[:, S_chelsea:].sum(axis=-1)  # (R,) weight each latent gives the latents
peak = (last[:, :S_chelsea].max(axis=-1) / last[:, :S_chelsea].mean(axis=-1)).max()  # top patch vs the mean patch
print(
    f"last layer: {to_latents.mean():.0%} of a latent's attention goes to the latents on average, the rest to the photo"
)
print(f"the most-attended patch of any latent gets {peak:.1f} times that latent's mean weight per patch")
assert peak < 2
viz.latent_maps(
    last,
    grids["chelsea"],
    photos["chelsea"],
    latents=range(8),
    cols=8,
    suptitle="latents 0-7, last layer, mean over heads (random weights)",
)
plt.show()

# %%
viz.layers_by_heads(
    maps,
    grids["chelsea"],
    latent=0,
    image=photos["chelsea"],
    size=1.4,
    suptitle="latent 0 in every layer (rows) and head (columns), random weights",
)
plt.show()

# %% [markdown]
# Notice two things. The maps are nearly flat: every panel stretches its own colour scale,
# so the brightest patch, with at most 1.4 times the mean weight, looks like a hot spot.
# Random weights give no latent a reason to prefer one patch strongly; training does. And
# each panel's title says how much weight went *elsewhere*: to the latents, which are among
# the keys.
#
# For the video, a latent's weights spread over all four frames. Below, latent 0 in the last
# layer; each panel's title gives that frame's share of the weight ("elsewhere" is the other
# frames and the latents).

# %%
_, video_maps = refimpl.perceiver_resampler(params, video, config, return_attention=True)
weights = video_maps[-1].mean(axis=0)[0]  # latent 0, last layer, mean over heads: (N + R,)
per_frame = weights[: T * 64].reshape(T, 64).sum(axis=-1)  # (T,) the weight on each frame
fig, axes = plt.subplots(1, T, figsize=(7, 2.2))
for t, ax in enumerate(axes):
    viz.attention_map(weights, video_grid, frames[t], frame=t, ax=ax, title=f"frame {t}: {per_frame[t]:.0%}")
fig.suptitle("latent 0 across the video's frames (last layer, random weights)")
fig.tight_layout()
plt.show()
assert abs(per_frame.sum() + weights[T * 64 :].sum() - 1) < 1e-12


# %% [markdown]
# ## 4. Batches of different sizes: padding and a mask
#
# To run the four photographs and the video in one call, pad them to a common
# $(T_{\max}, S_{\max})$ and pass a mask of shape $(B, T_{\max}, S_{\max})$, True where a
# token is real. The mask removes the padded keys from every softmax (their weight is exactly
# 0), so a padded item's output equals its output alone, whatever the padding holds.
# (With time embeddings, an image padded to 4 frames still has its one real frame at $t = 0$,
# and so gets the same time embedding as alone.) Writing the padding is your second exercise.


# %%
def pad_and_mask(features):
    """Batch media items of different sizes: pad them to a common size and say which tokens are real.

    features: a list of B arrays (T_b, S_b, D): item b has T_b frames of S_b tokens each.
    returns x (B, Tmax, Smax, D) with item b in x[b, :T_b, :S_b] and zeros elsewhere (any
    finite value would do: the mask hides it), and mask (B, Tmax, Smax), bool, True exactly
    where x holds a real token.
    """
    # YOUR CODE HERE (about 8 lines)
    raise NotImplementedError


# %%
ex.check_pad_and_mask(pad_and_mask)

# %% [markdown]
# Stuck? `??ex.pad_and_mask` shows a worked solution. The batch below uses it.

# %%
names = list(media)
x_batch, mask_batch = ex.pad_and_mask([media[name] for name in names])  # (B, Tmax, Smax, D), (B, Tmax, Smax)
print(f"batch x {x_batch.shape}, mask {mask_batch.shape}: {mask_batch.mean():.0%} of the slots are real tokens")
batched = perceiver_resampler(params, x_batch, config, mask=mask_batch)  # (B, R, D)
reference = refimpl.perceiver_resampler(params, x_batch, config, mask=mask_batch)
err = refimpl.relative_error(batched, reference)
print(f"ours vs refimpl on the padded batch: max relative error {err:.1e} (bound {bound:g})")
assert batched.shape == (len(names), R, D) and err <= bound

padded_equals_alone = []
for b, name in enumerate(names):
    err = refimpl.relative_error(batched[b], outputs[name])
    print(f"  {name:10} padded + masked vs alone: max relative error {err:.1e} (bound {bound:g})")
    assert err <= bound
    padded_equals_alone.append(err <= bound)

unmasked = perceiver_resampler(params, x_batch, config)  # the zeros taken for real tokens
moved = refimpl.relative_error(unmasked[0], outputs[names[0]])
print(f"without the mask, the padded zeros get attention and the astronaut's output moves by {moved:.2f}")
assert moved > 1e4 * bound

garbage = np.where(mask_batch[..., None], x_batch, 1e3 * rng.standard_normal(x_batch.shape))  # padding: huge noise
err = refimpl.relative_error(perceiver_resampler(params, garbage, config, mask=mask_batch), batched)
print(f"with huge noise in the padding instead of zeros, the masked output changes by {err:.1e} (bound {bound:g})")
assert err <= bound

# %% [markdown]
# ## 5. What the resampler cannot see: the order of a frame's tokens
#
# Attention treats its keys as a set: permuting the keys and values together permutes the
# terms of each weighted sum and changes nothing else. Within a frame the resampler has no
# other source of order (our stand-in features carry no position either), so **shuffling the
# $S$ tokens of a frame leaves the output unchanged**, up to rounding in the reordered sums
# (same bound as before).
#
# Across frames it is different: frame $t$'s tokens carry time embedding $t$, so **swapping two
# frames changes the output**, by far more than rounding. Without time embeddings the frames
# would be one big set too, and the swap would change nothing.

# %%
image = features["rocket"][None]  # (1, S, D)
shuffled = image[:, rng.permutation(image.shape[1])]  # the same tokens, in another order
err = refimpl.relative_error(perceiver_resampler(params, shuffled, config), outputs["rocket"])
print(f"{'rocket, its S tokens shuffled:':40} changed by {err:.1e} (bound {bound:g})")
assert err <= bound
shuffle_invariant = err <= bound

video_shuffled = np.stack([frame[rng.permutation(len(frame))] for frame in video])  # each frame its own shuffle
err = refimpl.relative_error(perceiver_resampler(params, video_shuffled, config), outputs["video"])
print(f"{'video, tokens shuffled within frames:':40} changed by {err:.1e} (bound {bound:g})")
assert err <= bound

swapped = video[[1, 0, 2, 3]]  # frames 0 and 1 swapped: (T, S, D)
change = refimpl.relative_error(perceiver_resampler(params, swapped, config), outputs["video"])
print(f"{'video, frames 0 and 1 swapped:':40} changed by {change:.2f}, {change / bound:.0e} times the bound")
assert change > 1e6 * bound
swap_changes_output = change > 1e6 * bound

no_time = dataclasses.replace(config, num_time_embeds=None)
params_no_time = {name: value for name, value in params.items() if name != "time_embeds"}
unswapped_out = refimpl.perceiver_resampler(params_no_time, video, no_time)
err = refimpl.relative_error(refimpl.perceiver_resampler(params_no_time, swapped, no_time), unswapped_out)
print(f"{'no time embeddings, frames swapped:':40} changed by {err:.1e} (bound {bound:g})")
assert err <= bound


# %% [markdown]
# Notice the consequence for a real model: whatever a resampler knows about *where* a patch
# was must already be in the patch's features (a ViT, for one, adds a position embedding to
# every patch before its first layer). And *when*: the time embeddings are the only thing
# that tells frame 0 from frame 1.
#
# ## 6. How many parameters: the paper's configuration
#
# Per layer, three LayerNorms ($2D$ each), the attention's four projections
# ($W_q$: $D \times H D_h$; $W_k, W_v$: $D \times H D_h$; $W_o$: $H D_h \times D$) and the
# feed-forward ($2 D F$); once, the latents ($R D$), the final LayerNorm ($2D$) and the time
# embeddings ($T_{\max} D$). None of it depends on $T$ or $S$. Writing the count as a formula is
# your third exercise; its check compares with `refimpl.param_shapes(config)`, the list of every
# parameter's name and shape.


# %%
def count_params(config):
    """The number of parameters of a resampler with layernorm and a plain (non-swiglu) feed-forward.

    D = config.dim, R = num_latents, H = heads, Hkv = config.num_kv_heads, Dh = dim_head,
    F = config.ff_dim. Per layer: two LayerNorms before the attention (media, latents) and one
    before the feed-forward, each a weight and a bias of D; wq (D, H*Dh), wk and wv
    (D, Hkv*Dh), wo (H*Dh, D); w_in (D, F), w_out (F, D). Once: the latents (R, D), the final
    LayerNorm (2D), and a (Tmax, D) / (Imax, D) embedding table where num_time_embeds /
    num_media_embeds is set. returns an int.
    """
    # YOUR CODE HERE (about 8 lines)
    raise NotImplementedError


# %%
ex.check_count_params(count_params)


# %% [markdown]
# Stuck? `??ex.count_params` shows a worked solution. Below, the count comes from
# `refimpl.param_shapes`.
#
# **What the paper says.** The Flamingo paper's appendix gives the resampler the same size in
# all three models (3B, 9B, 80B): $L = 6$ layers, $D = 1536$, $H = 16$ heads, squared ReLU, a
# feed-forward of width $4D$, $R = 64$ latents, and **194M** parameters. (We take these numbers
# from the flamingo-mini project's transcription of the paper's tables, github.com/dhansmair/
# flamingo-mini, wiki "Model Configurations"; check them against the PDF if you cite them.)
# Two sizes are not settled by that list: the head width $D_h$ and the length of the
# time-embedding table. So we count two choices: $D_h = D / H = 96$ (then
# $H \cdot D_h = D$, as in most transformers), and $D_h = 128$, the key width that the
# flamingo-mini project lists for Flamingo-3B's resampler (see below).


# %%
def count(config):
    """The number of parameters, summed over refimpl.param_shapes(config)."""
    return sum(int(np.prod(shape)) for shape in refimpl.param_shapes(config).values())


paper_count = 194_000_000  # Flamingo's appendix: "194M", rounded to the million
paper = {
    dim_head: refimpl.ResamplerConfig(
        dim=1536, depth=6, heads=16, dim_head=dim_head, num_latents=64, ff_mult=4, activation="squared_relu"
    )
    for dim_head in (96, 128)
}
paper_counts = {dim_head: count(cfg) for dim_head, cfg in paper.items()}
for dim_head, n in paper_counts.items():
    assert n == ex.count_params(paper[dim_head])  # the closed form agrees with the list of shapes
    print(
        f"D = 1536, L = 6, H = 16, Dh = {dim_head:3}, F = 4D, R = 64: {n:>11,} parameters "
        f"= {n / paper_count:.1%} of the paper's 194M"
    )

cfg = paper[128]
per_layer = {
    "attention projections": 4 * cfg.dim * cfg.heads * cfg.dim_head,  # wq, wk, wv, wo
    "feed-forward": 2 * cfg.dim * cfg.ff_dim,
    "LayerNorms": 3 * 2 * cfg.dim,
}
for part, n in per_layer.items():
    print(f"  per layer, {part:22} {n:>11,}  ({cfg.depth * n / paper_counts[128]:.2%} of the total)")
print(f"  latents and final norm             {cfg.num_latents * cfg.dim + 2 * cfg.dim:>11,}")
print(f"  a time embedding per frame adds    {cfg.dim:>11,}")
assert cfg.depth * sum(per_layer.values()) + cfg.num_latents * cfg.dim + 2 * cfg.dim == paper_counts[128]
assert all(n < paper_count for n in paper_counts.values())
assert abs(paper_counts[128] / paper_count - 1) < 0.05

per_unit_dh = (paper_counts[128] - paper_counts[96]) // (128 - 96)  # the count grows linearly with Dh
dh_for_paper = 128 + (paper_count - paper_counts[128]) / per_unit_dh
print(f"194M with these sizes would need Dh = {dh_for_paper:.1f}")
assert 130 < dh_for_paper < 140

# %% [markdown]
# Neither choice reproduces 194M: $D_h = 128$ comes within 3%, $D_h = 96$ within 13%. Time
# embeddings cannot close the gap (a frame costs 1,536 parameters; 5M would need over 3,000
# frames), and matching it through $D_h$ alone takes $D_h \approx 137$, an unlikely width.
# So the paper's resampler probably has parts or sizes that its text does not describe, and
# we cannot tell which. What we can say: 60% of the parameters (67% with $D_h = 96$) sit in the
# feed-forward blocks, and none depends on the number of images, frames or tokens.
#
# **A second example, with exact shapes: open_flamingo's defaults.** open_flamingo's
# `PerceiverResampler(dim=1024)` has depth 6, 8 heads of width 64, 64 latents and `ff_mult=4`,
# GELU (the activation does not change the count) and, by default, no embedding tables. Its
# state dict, as `refimpl/interop/open_flamingo.py` maps it (torch's
# `nn.Linear` stores `(out, in)`, here with no bias): per layer `to_q` $(H D_h, D)$, `to_kv`
# $(2 H D_h, D)$ (keys and values fused), `to_out` $(D, H D_h)$, LayerNorms `norm_media`,
# `norm_latents` and the feed-forward's, two `Linear`s $(F, D)$ and $(D, F)$; then `latents`
# $(R, D)$ and `norm`. We count that list independently and compare with refimpl's.

# %%
of = refimpl.ResamplerConfig(dim=1024, depth=6, heads=8, dim_head=64, num_latents=64, ff_mult=4)
d, inner, f = of.dim, of.heads * of.dim_head, of.ff_dim
open_flamingo_shapes = {"latents": (of.num_latents, d), "norm.weight": (d,), "norm.bias": (d,)}
for i in range(of.depth):
    open_flamingo_shapes |= {
        f"layers.{i}.0.norm_media.weight": (d,),
        f"layers.{i}.0.norm_media.bias": (d,),
        f"layers.{i}.0.norm_latents.weight": (d,),
        f"layers.{i}.0.norm_latents.bias": (d,),
        f"layers.{i}.0.to_q.weight": (inner, d),
        f"layers.{i}.0.to_kv.weight": (2 * inner, d),
        f"layers.{i}.0.to_out.weight": (d, inner),
        f"layers.{i}.1.0.weight": (d,),
        f"layers.{i}.1.0.bias": (d,),
        f"layers.{i}.1.1.weight": (f, d),
        f"layers.{i}.1.3.weight": (d, f),
    }
open_flamingo_count = sum(int(np.prod(shape)) for shape in open_flamingo_shapes.values())
print(f"open_flamingo's state dict: {len(open_flamingo_shapes)} tensors, {open_flamingo_count:,} parameters")
print(f"refimpl.param_shapes:       {len(refimpl.param_shapes(of))} arrays,  {count(of):,} parameters")
assert open_flamingo_count == count(of) == ex.count_params(of)
assert len(refimpl.param_shapes(of)) == len(open_flamingo_shapes) + of.depth  # to_kv is refimpl's wk and wv
assert round(open_flamingo_count / 1e6) == 63  # flamingo-mini's table (below) lists 63M for these sizes

# %% [markdown]
# refimpl has one more array per layer (the fused `to_kv` is its `wk` and `wv`) and the same
# number of parameters: 63.0M. For comparison, the flamingo-mini project's table
# (github.com/dhansmair/flamingo-mini, wiki "Model Configurations") lists 63M for a resampler of
# exactly these sizes; it also gives Flamingo-3B's resampler as 16 heads with 128-wide keys,
# beside the paper's 194M, which our count for those sizes (188.9M) does not reach.
#
# ## Everything this notebook showed, at a glance
#
# Seeded, and independent of the machine: shapes, counts and the outcomes of the asserts above.

# %%
# NBVAL_CHECK_OUTPUT
for name, x_f in media.items():
    print(f"{name:10} (T, S) = {x_f.shape[:2]}  ->  output {outputs[name].shape}")
print("padded batch:", x_batch.shape, "mask", mask_batch.shape, "-> output", batched.shape)
print("padded + masked equals alone, every item:", all(padded_equals_alone))
print("shuffling a frame's tokens leaves the output unchanged:", shuffle_invariant)
print("swapping two frames changes the output:", swap_changes_output)
print("our small resampler:", count(config), "parameters")
print("paper sizes, Dh = 96 / 128:", paper_counts[96], "/", paper_counts[128], "parameters; paper: about 194M")
print("open_flamingo defaults:", open_flamingo_count, "parameters")

# %% [markdown]
# ## Summary
#
# **What you built.** A stand-in vision encoder (patches and a random linear map) for
# photographs of any shape and a 4-frame video; the Perceiver Resampler in NumPy: LayerNorm,
# attention of the latents over the concatenation of the normalised media and latents, the
# squared-ReLU feed-forward, the residual sums and the final norm, agreeing with
# `refimpl.perceiver_resampler` to about $10^{-15}$; padding with a mask; a parameter count.
#
# **What to notice.**
# - The output is $(R, D)$ for every input: the input's size only sets the length of the
#   attention rows, $N + R$. That is the resampler's whole point.
# - A mask makes padding invisible: padded and masked equals alone, to rounding.
# - Within a frame the tokens are a set (shuffling them changes nothing); only the time
#   embeddings give the frames an order. Position inside an image must come from the encoder.
# - The paper's configuration ($D = 1536$, 6 layers, 16 heads, $F = 4D$) has 170M to 189M
#   parameters by our count, depending on the head width it does not state, against the 194M
#   it reports; 60 to 67% of them are feed-forward weights.
#
# **Next.** Notebook 5 writes the same module in PyTorch, checks it against this one, and runs
# it on a GPU in float32 and in 16 bits (bfloat16, or float16 on a GPU without it).
