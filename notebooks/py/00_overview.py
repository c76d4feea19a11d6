# %% [markdown]
# # 0. The Perceiver Resampler: what it is for, and how this course checks itself
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/perceiver-resampler-course/perceiver-resampler-course/blob/v0.1.0/notebooks/00_overview.ipynb)
#
# Runs on a laptop CPU in about 15 s, plus about a minute the first time on a machine, while
# Numba compiles `refimpl`'s kernels for the set-up check (once: they are cached on disk).
# After it you will know what problem the resampler solves, what it computes (in the Flamingo
# paper's own pseudo-code), the axis letters every later notebook uses, and how to confirm that
# your set-up computes what the reference does.

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

# %% [markdown]
# ## The problem: a language model wants a fixed number of visual tokens
#
# A vision encoder turns an image into a grid of feature vectors, one per patch: a 336 x 336
# image cut into 14 x 14-pixel patches gives a 24 x 24 grid, $S = 576$ tokens of width $D$.
# A bigger image gives more tokens, a video of $T$ frames gives $T \cdot S$. A language model
# that reads these tokens would pay for every one of them, in every layer, for every text
# token, and would see inputs of a different size for every image.
#
# Flamingo (Alayrac et al. 2022, *Flamingo: a Visual Language Model for Few-Shot Learning*,
# arXiv:2204.14198) puts a small module between the two: the **Perceiver Resampler**. It owns
# $R$ learned vectors, the *latents* ($R = 64$ in Flamingo), which read the visual tokens by
# cross-attention, a few layers deep. Whatever goes in, $R$ tokens of width $D$ come out.
#
# The paper's pseudo-code (Fig. 5), which `refimpl.perceiver_resampler` follows line by line:
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
# Two details matter later: the keys and values are the visual tokens **and the latents
# themselves** (`concat([x_f, x])`), and the only thing that tells frames apart is the time
# embedding added to each frame (attention itself ignores the order of its keys).

# %% [markdown]
# ## One axis table for the whole course
#
# | letter | meaning | example |
# |---|---|---|
# | `B` | batch (any leading axes) | 32 images |
# | `T` | frames (time) | 1 for an image, 8 for a short clip |
# | `S` | spatial tokens per frame | 576 (24 x 24 patches) |
# | `N` | media tokens, `N = T*S` | 4608 for the clip |
# | `R` | latents = output tokens | 64 (Flamingo) |
# | `H` | attention heads (`Hkv` key/value heads, when fewer) | 8 |
# | `Dh` | width of one head | 64 |
# | `D` | model width | 1024 |
# | `F` | feed-forward width | 4096 (`4 * D`) |
#
# A letter is never reused for something else. (Attention in general has `M` queries and
# `N` keys.) Peers name things differently: open_flamingo's `T` counts media items, not
# frames; the notebooks say which whenever a peer appears.

# %%
import matplotlib.pyplot as plt
import numpy as np

import refimpl
from refimpl import viz

rng = np.random.default_rng(0)

# %% [markdown]
# ## What goes in, what comes out
#
# `refimpl` is this course's reference implementation: float64 NumPy, written to be read.
# A configuration names the sizes; `init_resampler` draws seeded random weights.
# Below, the same resampler reads a small image, a large image and a 4-frame video: the
# number of input tokens grows by a factor of $576 / 49 \approx 11.8$, the output does not change shape.

# %%
config = refimpl.ResamplerConfig(dim=64, depth=2, heads=4, dim_head=16, num_latents=8, num_time_embeds=4)
params = refimpl.init_resampler(config, seed=0)
print(config)

inputs = {
    "small image, 7 x 7 patches": rng.standard_normal((1, 7 * 7, config.dim)),  # (T, S, D)
    "large image, 24 x 24 patches": rng.standard_normal((1, 24 * 24, config.dim)),  # (T, S, D)
    "video, 4 frames of 12 x 12": rng.standard_normal((4, 12 * 12, config.dim)),  # (T, S, D)
}
outputs = {name: refimpl.perceiver_resampler(params, x, config) for name, x in inputs.items()}

# %%
# NBVAL_CHECK_OUTPUT
for name, x in inputs.items():
    latents = outputs[name]
    print(f"{name:30}  in: T*S = {x.shape[0] * x.shape[1]:4} tokens  ->  out: {latents.shape}")
    assert latents.shape == (config.num_latents, config.dim)
token_counts = [x.shape[0] * x.shape[1] for x in inputs.values()]
growth = max(token_counts) / min(token_counts)
print(f"input tokens grow by a factor of {growth:.1f}; the output shape is the same for all {len(inputs)}")
assert round(growth, 1) == 11.8 and len({latents.shape for latents in outputs.values()}) == 1

# %% [markdown]
# The cost of a language model's cross-attention to the image grows with the number of
# visual tokens it reads; with the resampler in between it reads $R$, always. The plot puts
# the two side by side for images from 112 to 896 pixels a side (14-pixel patches).

# %%
sides = np.arange(112, 897, 56)  # image side in pixels
tokens_in = (sides // 14) ** 2  # S = (side / 14)^2 patches
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(sides, tokens_in, "o-", label="visual tokens from the encoder ($S$)")
ax.plot(sides, np.full_like(sides, 64), "s-", label="tokens after the resampler ($R = 64$)")
ax.set(
    xlabel="image side (pixels)",
    ylabel="tokens the language model reads",
    yscale="log",
    title="The resampler bounds what the language model reads",
)
ax.legend()
plt.show()
assert tokens_in[-1] == 64 * 64 and tokens_in[0] == 64  # 896 px: 4096 tokens; 112 px: as many as R

# %% [markdown]
# ## What the latents attend to
#
# `return_attention=True` also returns each layer's attention weights, of shape
# `(H, R, N + R)`: for every head and latent, a distribution over the media tokens followed
# by the latents. `refimpl.viz` draws one latent's weights on the image's patch grid. With
# random weights the maps are noise; notebook 6 trains a resampler, and notebook 7 looks at
# what its latents learn to attend to.

# %%
x = inputs["large image, 24 x 24 patches"]
latents, maps = refimpl.perceiver_resampler(params, x, config, return_attention=True)
weights = maps[-1].mean(axis=0)  # last layer, averaged over heads: (R, N + R)
assert weights.shape == (config.num_latents, 24 * 24 + config.num_latents)
np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=0, atol=1e-12)  # each row is a distribution
viz.latent_maps(weights, grid=(24, 24), cols=8, suptitle="last layer, mean over heads (random weights)")
plt.show()

# %% [markdown]
# ## How this course checks itself
#
# Every notebook builds a piece, then checks it against `refimpl` with a stated bound on
# the norm-relative error $\max|a - r| / \max|r|$. The bounds live in one table:

# %%
for (dtype, comparison), bound in refimpl.TOLERANCES.items():
    print(f"{dtype:9} {comparison:50} {bound:g}")

# %% [markdown]
# Your set-up: `python -m refimpl selfcheck` prints the versions, which backends exist
# (NumPy, Numba, torch on the CPU, CUDA if there is a GPU) and how far each is from the
# float64 reference. Run it in a terminal, or here. The first time on a machine this cell
# takes about a minute (two on a busy laptop): Numba compiles `refimpl`'s kernels, once, and
# caches them on disk, so later runs take seconds. `selfcheck` says so before it starts.

# %%
from refimpl.__main__ import selfcheck

assert selfcheck() == 0, "a backend disagrees with the reference: see the table"

# %% [markdown]
# ## The course
#
# | notebook | what you build |
# |---|---|
# | 0 | this overview: what the resampler is for, the paper's pseudo-code, the axis letters, checking your set-up |
# | 1 | attention from scratch in NumPy: scores, the $1/\sqrt{D_h}$ scale, a softmax that cannot overflow, masks |
# | 2 | cross-attention and heads; what it costs: $O(R \cdot N)$ against self-attention's $O(N^2)$ |
# | 3 | Numba: the attention loop, the online softmax, parallel heads; speed and memory |
# | 4 | the Perceiver Resampler in NumPy on real photographs and a short video |
# | 5 | the same module in PyTorch, on the CPU and a GPU; bfloat16, float16 and speed |
# | 6 | a tiny resampler trained on the CPU on generated scenes of any size, and a video variant |
# | 7 | what each latent of the trained model attends to, measured: entropy, collapse, mass on the objects |
# | 8 | Flamingo's resampler ablation at toy scale: the resampler against simpler poolers |
# | 9 | how a language model reads the $R$ tokens: gated cross-attention (GATED XATTN-DENSE) |
# | 10 | the attention backward pass by hand, and the tiny model trained in pure NumPy |
# | 11 | the resampler family: nine published resamplers side by side, each checked against `refimpl` |
#
# Notebooks 1-11 have exercises: you write a function, a check cell tests it against `refimpl`.
# Next: notebook 1 builds attention, the operation all of this rests on.
