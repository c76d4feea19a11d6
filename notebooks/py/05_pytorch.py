# %% [markdown]
# # 5. The Perceiver Resampler in PyTorch, on the CPU and a GPU
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/perceiver-resampler-course/perceiver-resampler-course/blob/v0.1.0/notebooks/05_pytorch.ipynb)
#
# Runs on a laptop CPU in about 15 s; where PyTorch finds a CUDA GPU (on Colab: Runtime >
# Change runtime type > GPU) the GPU cells run too. After it you will be able to write the
# resampler as a PyTorch `nn.Module`, copy the reference's weights into it exactly (the
# transpose that `nn.Linear` needs included), show that it computes what `refimpl` computes to
# 1e-12, run it on a GPU in float32 and in 16 bits (bfloat16, or float16 on a GPU without
# bfloat16 such as Colab's T4), say how large each format's error is and why, and time it
# against NumPy without fooling yourself.

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
# ## Set-up
#
# `device` is `"cuda"` where PyTorch sees a GPU, else `"cpu"`. Every cell runs on either;
# the few that only make sense on a GPU start with `if device == "cuda":`.

# %%
import copy
import time
import timeit

import matplotlib.pyplot as plt
import matplotlib.ticker as ticker
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import refimpl
import refimpl.torch
from refimpl import viz
from refimpl.exercises import torch_module as ex

rng = np.random.default_rng(0)
torch.manual_seed(0)
device = "cuda" if torch.cuda.is_available() else "cpu"
torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 (torch's default; see "float32 on the device")
print(
    f"torch {torch.__version__}; device: {device}" + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else "")
)

# %% [markdown]
# ## From NumPy to PyTorch: what changes
#
# The math is the math of notebook 4. Four things are new:
#
# - **A tensor has a dtype and a device.** `torch.from_numpy` keeps NumPy's float64 (and
#   shares its memory); tensors made by torch itself, and fresh modules, default to float32.
#   `.to(device, dtype)` moves and casts.
# - **`nn.Linear(in, out)` stores its weight transposed.** Its `.weight` is `(out, in)` and it
#   computes `x @ weight.T`. `refimpl` stores every projection `(in, out)` and computes `x @ w`
#   (the layouts are listed in `refimpl/params.py`). Copying a weight means `weight = w.T`.
# - **Parameters track gradients.** For inference, run under `torch.no_grad()`: no graph is
#   recorded, and less memory is held.
# - **A GPU runs asynchronously.** A call returns as soon as the work is queued; a clock read
#   without `torch.cuda.synchronize()` measures the queueing, not the work.
#
# The transpose first, since every weight of the module goes through it. `F` below is
# `torch.nn.functional`, so the feed-forward width is spelled `ff_dim` in code.

# %%
d_model, ff_dim = 6, 10
w_in = rng.standard_normal((d_model, ff_dim))  # refimpl's layout: (in, out) = (D, F)
linear = nn.Linear(d_model, ff_dim, bias=False, dtype=torch.float64)
print("nn.Linear(D, F).weight:", tuple(linear.weight.shape), "= (out, in)")
with torch.no_grad():
    linear.weight.copy_(torch.from_numpy(w_in).T)  # (F, D)

tokens = rng.standard_normal((3, d_model))  # (R, D)
projected = linear(torch.from_numpy(tokens)).detach().numpy()  # (R, F), computed as tokens @ weight.T
bound = refimpl.TOLERANCES["float64", "torch vs numpy"]
err = refimpl.relative_error(projected, tokens @ w_in)
print(f"nn.Linear with weight = w.T vs x @ w: relative error {err:.0e} (bound {bound:g})")
assert projected.shape == (3, ff_dim) and err <= bound

# %% [markdown]
# ## Attention: one call, and the explicit version
#
# PyTorch has scaled dot-product attention built in:
#
# $$\mathrm{out} = \mathrm{softmax}\!\left(\frac{q k^\top}{\sqrt{D_h}}, \text{masked}\right) v,
# \qquad q: (\ldots, M, D_h),\; k: (\ldots, N, D_h),\; v: (\ldots, N, D_v).$$
#
# `F.scaled_dot_product_attention(q, k, v, attn_mask=mask)` uses the same conventions as
# `refimpl.attention`: scale $D_h^{-1/2}$ by default, and a boolean mask with **True = may
# attend**. (Careful with `nn.MultiheadAttention`: its `key_padding_mask` means the opposite,
# True = ignore.) On a GPU it dispatches to fused kernels (FlashAttention, memory-efficient
# attention) that never hold the $(M, N)$ weights, the online softmax of notebook 3. Below: a
# batch of 2 with 3 heads, 5 queries and 7 keys, where batch item 1 has 3 padding keys.

# %%
q = torch.from_numpy(rng.standard_normal((2, 3, 5, 16)))  # (B, H, M, Dh)
k = torch.from_numpy(rng.standard_normal((2, 3, 7, 16)))  # (B, H, N, Dh)
v = torch.from_numpy(rng.standard_normal((2, 3, 7, 12)))  # (B, H, N, Dv), Dv != Dh
padding = torch.ones(2, 1, 1, 7, dtype=torch.bool)  # (B, 1, 1, N): True = a real key
padding[1, ..., 4:] = False  # item 1: keys 4, 5, 6 are padding

out = F.scaled_dot_product_attention(q, k, v, attn_mask=padding)  # (B, H, M, Dv)
expected = refimpl.attention(q.numpy(), k.numpy(), v.numpy(), mask=padding.numpy())
err = refimpl.relative_error(out.numpy(), expected, scale=np.abs(v.numpy()).max())
print(f"SDPA vs refimpl.attention, float64: relative error {err:.0e} (bound {bound:g}, relative to max |v|)")
assert out.shape == (2, 3, 5, 12) and err <= bound


# %% [markdown]
# The fused call does not give you the weights, and the weights are what you plot and
# debug. So write attention out, in torch, as notebook 1 did in NumPy.
#
# **Exercise 1.** Scores `q @ k.transpose(-1, -2)` times $D_h^{-1/2}$; masked scores set to
# $-\infty$ (`scores.masked_fill(~mask, float("-inf"))`); the row max subtracted before
# `exp` so nothing overflows; divide by the row sum; multiply by `v`. The check runs it in
# float64 against `refimpl.attention`: without a mask, with an `(M, N)` mask and a padding
# mask that broadcast, with one key only, and with scores near $10^3$, where an
# unstabilised `exp` gives `inf`.


# %%
def attention_torch(q, k, v, mask=None):
    """softmax(q k^T / sqrt(Dh), masked) v with the softmax written out.

    q (..., M, Dh), k (..., N, Dh), v (..., N, Dv) tensors; mask bool, broadcastable to
    (..., M, N), True = may attend (every query may attend to some key). returns (..., M, Dv)
    """
    # YOUR CODE HERE (about 6 lines)
    raise NotImplementedError


# %%
ex.check_attention_torch(attention_torch)

# %% [markdown]
# Stuck? `??ex.attention_torch` shows a worked solution.
#
# The written-out version and the fused call agree, and the weights it forms can be looked
# at. For batch item 1, head 0, the three padding keys must get exactly zero weight:

# %%
out_explicit = ex.attention_torch(q, k, v, mask=padding)  # (B, H, M, Dv)
err = refimpl.relative_error(out_explicit.numpy(), out.numpy(), scale=np.abs(v.numpy()).max())
print(f"explicit softmax vs SDPA: relative error {err:.0e} (bound {bound:g})")
assert err <= bound

scores = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).masked_fill(~padding, float("-inf"))  # (B, H, M, N)
weights = scores.softmax(dim=-1)  # (B, H, M, N), rows sum to 1
assert torch.all(weights[1, :, :, 4:] == 0) and torch.allclose(
    weights.sum(-1), torch.ones(2, 3, 5, dtype=torch.float64)
)
viz.matrix(
    weights[1, 0].numpy(), title="batch item 1, head 0: keys 4-6 are padding", xlabel="key (N)", ylabel="query (M)"
)
plt.show()


# %% [markdown]
# The last three columns are exactly 0: $\exp(-\infty) = 0$, so padding takes no weight and
# changes nothing else. Every row still sums to 1 over the four real keys.

# %% [markdown]
# ## The feed-forward block
#
# After attention, each layer has a feed-forward block on the latents, pre-norm and without
# the residual (the residual is added by the layer):
#
# $$\mathrm{ffw}(x) = \mathrm{GELU}\big(\mathrm{LayerNorm}(x)\, W_\mathrm{in}\big)\, W_\mathrm{out},
# \qquad W_\mathrm{in}: (D, F),\; W_\mathrm{out}: (F, D).$$
#
# **Exercise 2.** Write it on tensors, with the weights in `refimpl`'s `(in, out)` layout.
# `F.layer_norm(x, x.shape[-1:], weight, bias, eps)` is LayerNorm; `F.gelu` is the exact
# GELU $x\,\Phi(x)$ (its `approximate="tanh"` variant is off by about $10^{-4}$, and the check
# notices). If you reach for `F.linear(h, w)`, remember it computes `h @ w.T`. The check
# compares with `refimpl`'s feed-forward block in float64, with $D = 12 \ne F = 30$.


# %%
def feed_forward_torch(x, norm_weight, norm_bias, w_in, w_out, eps=1e-5):
    """gelu(layer_norm(x) @ w_in) @ w_out, pre-norm, no residual.

    x (..., D); norm_weight, norm_bias (D,); w_in (D, F), w_out (F, D) in refimpl's (in, out)
    layout; exact GELU. returns (..., D)
    """
    # YOUR CODE HERE (about 3 lines)
    raise NotImplementedError


# %%
ex.check_feed_forward_torch(feed_forward_torch)

# %% [markdown]
# Stuck? `??ex.feed_forward_torch` shows a worked solution.

# %% [markdown]
# ## The module, one piece at a time
#
# Now the resampler as `nn.Module`s, with the same configuration and the same random weights
# as a `refimpl` resampler. The configuration has $H D_h = 64 \ne D = 48$ and
# $D_h = 16 \ne D / H = 12$, $R = 12$ latents, and a time embedding for up to 4 frames;
# the input is 2 clips of $T = 3$ frames of $S = 25$ tokens, $N = 75$.
#
# The module's attribute names are chosen to be `refimpl`'s parameter names, so that copying
# the weights is a loop over names: `layers.0.attn.wq` in `refimpl` is the `nn.Linear` at
# `layers[0].attn.wq`, whose state-dict name is `layers.0.attn.wq.weight`.

# %%
config = refimpl.ResamplerConfig(dim=48, depth=3, heads=4, dim_head=16, num_latents=12, num_time_embeds=4)
params = refimpl.init_resampler(config, seed=0)
x = rng.standard_normal((2, 3, 25, config.dim))  # (B, T, S, D)
reference = refimpl.perceiver_resampler(params, x, config)  # (B, R, D), float64
print(config)
for name, shape in list(refimpl.param_shapes(config).items())[:14]:  # latents, time embeddings, layer 0
    print(f"  {name:32} {shape}")

# %% [markdown]
# Copying the weights: every projection `w*` of shape `(in, out)` becomes an `nn.Linear`
# weight `(out, in)`; norms, latents and time embeddings are copied as they are.
# `load_state_dict` is strict by default: a name missing on either side, or a shape that does
# not fit, raises instead of leaving a weight at its random initial value.

# %%
PROJECTIONS = {"wq", "wk", "wv", "wo", "w_in", "w_out"}


def load_refimpl(module, params, prefix=""):
    """Copy refimpl's params whose names start with `prefix` into `module`, exactly.

    A projection w (in, out) becomes the nn.Linear weight w.T (out, in); the rest is copied as
    it is, cast to the module's dtype. Returns the module.
    """
    state = {}
    for name, value in params.items():
        if not name.startswith(prefix):
            continue
        name = name.removeprefix(prefix)
        tensor = torch.from_numpy(value)
        if name.rsplit(".", 1)[-1] in PROJECTIONS:
            state[name + ".weight"] = tensor.T  # (in, out) -> (out, in)
        else:
            state[name] = tensor
    module.load_state_dict(state)  # strict: every name on both sides must match
    return module


# %% [markdown]
# ### The attention block
#
# The latents ask, and the media tokens **and the latents themselves** answer (Flamingo's
# `kv=concat([x_f, x])`). Each side is normalised first, with its own LayerNorm:
#
# $$\mathrm{attn}(x_f, x) = \mathrm{MHA}\big(q = \mathrm{LN}_x(x),\;
# kv = [\mathrm{LN}_f(x_f);\, \mathrm{LN}_x(x)]\big).$$
#
# Heads are contiguous column blocks of a projection's output (head $h$ is columns
# $hD_h \ldots (h+1)D_h - 1$), as in `refimpl`: `unflatten` the last axis to $(H, D_h)$ and
# move $H$ in front of the tokens.


# %%
class ResamplerAttention(nn.Module):
    """attn(q = norm(latents), kv = concat(norm(media), norm(latents))), without the residual.

    media (B, N, D), latents (B, R, D) -> (B, R, D); wq, wk, wv: D -> H*Dh, wo: H*Dh -> D.
    """

    def __init__(self, dim, heads, dim_head, eps=1e-5):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.norm_media = nn.LayerNorm(dim, eps=eps)
        self.norm_latents = nn.LayerNorm(dim, eps=eps)
        self.wq = nn.Linear(dim, heads * dim_head, bias=False)
        self.wk = nn.Linear(dim, heads * dim_head, bias=False)
        self.wv = nn.Linear(dim, heads * dim_head, bias=False)
        self.wo = nn.Linear(heads * dim_head, dim, bias=False)

    def split_heads(self, x):
        """(B, L, H*Dh) -> (B, H, L, Dh)."""
        return x.unflatten(-1, (self.heads, self.dim_head)).transpose(1, 2)

    def forward(self, media, latents):
        media = self.norm_media(media)  # (B, N, D)
        latents = self.norm_latents(latents)  # (B, R, D)
        context = torch.cat([media, latents], dim=1)  # (B, N + R, D)
        q = self.split_heads(self.wq(latents))  # (B, H, R, Dh)
        k = self.split_heads(self.wk(context))  # (B, H, N + R, Dh)
        v = self.split_heads(self.wv(context))  # (B, H, N + R, Dh)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, R, Dh)
        return self.wo(out.transpose(1, 2).flatten(2))  # (B, R, H*Dh) -> (B, R, D)


# %% [markdown]
# Check it on its own against `refimpl`'s public pieces: LayerNorm from `refimpl.layers`,
# then `refimpl.multi_head_attention` with the latents as queries and the concatenation as
# context. The latents here are the initial ones, broadcast over the batch.

# %%
attn = load_refimpl(ResamplerAttention(config.dim, config.heads, config.dim_head).double(), params, "layers.0.attn.")
media = (x + params["time_embeds"][:3, None, :]).reshape(2, 3 * 25, config.dim)  # (B, T, S, D) -> (B, N, D)
latents = np.broadcast_to(params["latents"], (2, config.num_latents, config.dim)).copy()  # (B, R, D)

p0 = {name.removeprefix("layers.0.attn."): value for name, value in params.items() if name.startswith("layers.0.attn.")}
media_n = refimpl.layers.layer_norm(media, p0["norm_media.weight"], p0["norm_media.bias"], config.norm_eps)  # (B, N, D)
latents_n = refimpl.layers.layer_norm(
    latents, p0["norm_latents.weight"], p0["norm_latents.bias"], config.norm_eps
)  # (B, R, D)
projections = {name: p0[name] for name in ("wq", "wk", "wv", "wo")}
expected = refimpl.multi_head_attention(
    projections, latents_n, np.concatenate([media_n, latents_n], axis=1), heads=config.heads
)

with torch.no_grad():
    got = attn(torch.from_numpy(media), torch.from_numpy(latents)).numpy()  # (B, R, D)
err = refimpl.relative_error(got, expected)
print(f"attention block vs refimpl: relative error {err:.0e} (bound {bound:g})")
assert got.shape == (2, config.num_latents, config.dim) and err <= bound


# %% [markdown]
# ### The feed-forward block and the layer
#
# The feed-forward block is Exercise 2 as a module. A layer is the two lines inside the loop
# of Flamingo's pseudo-code (Alayrac et al. 2022, arXiv:2204.14198, Fig. 5):
#
# ```python
# x = x + attention_i(q=x, kv=concat([x_f, x]))
# x = x + ffw_i(x)
# ```


# %%
class FeedForward(nn.Module):
    """gelu(norm(x) @ w_in) @ w_out, without the residual.  x (B, R, D) -> (B, R, D)."""

    def __init__(self, dim, ff_dim, eps=1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.w_in = nn.Linear(dim, ff_dim, bias=False)
        self.w_out = nn.Linear(ff_dim, dim, bias=False)

    def forward(self, x):
        return self.w_out(F.gelu(self.w_in(self.norm(x))))  # (B, R, D) -> (B, R, F) -> (B, R, D)


class ResamplerLayer(nn.Module):
    """Attention, then feed-forward, each with its residual: media (B, N, D), latents (B, R, D) -> (B, R, D)."""

    def __init__(self, config):
        super().__init__()
        self.attn = ResamplerAttention(config.dim, config.heads, config.dim_head, config.norm_eps)
        self.ff = FeedForward(config.dim, config.ff_dim, config.norm_eps)

    def forward(self, media, latents):
        latents = latents + self.attn(media, latents)  # (B, R, D)
        return latents + self.ff(latents)  # (B, R, D)


# %%
layer = load_refimpl(ResamplerLayer(config).double(), params, "layers.0.")
ff_reference = refimpl.layers.feed_forward(
    params, "layers.0.ff.", latents + expected, "gelu", "layernorm", config.norm_eps
)
with torch.no_grad():
    got = layer(torch.from_numpy(media), torch.from_numpy(latents)).numpy()  # (B, R, D)
err = refimpl.relative_error(got, latents + expected + ff_reference)
print(f"one layer vs refimpl's pieces: relative error {err:.0e} (bound {bound:g})")
assert err <= bound


# %% [markdown]
# ### The resampler
#
# The rest is Fig. 5's first lines and the loop: add frame $t$'s time embedding to every
# token of frame $t$, flatten $(T, S) \to N$ frame by frame, start every batch item from the
# same learned latents, run the layers, and normalise at the end (as every public
# implementation does). The `assert` in `__init__` says which configurations this small
# module covers; `refimpl.torch` covers all of them.


# %%
class PerceiverResampler(nn.Module):
    """Flamingo's Perceiver Resampler: x (B, T, S, D) media features -> (B, R, D) latents."""

    def __init__(self, config):
        super().__init__()
        assert (config.activation, config.norm, config.norm_dtype) == ("gelu", "layernorm", None), (
            "this module: GELU and LayerNorm"
        )
        assert config.kv_heads is None and not config.qk_norm and config.latents_in_kv, (
            "this module: no GQA, no qk-norm, latents in kv"
        )
        assert config.num_media_embeds is None, "this module: one media item per batch entry"
        self.latents = nn.Parameter(torch.randn(config.num_latents, config.dim))  # (R, D)
        self.time_embeds = None
        if config.num_time_embeds is not None:
            self.time_embeds = nn.Parameter(torch.zeros(config.num_time_embeds, config.dim))  # (Tmax, D)
        self.layers = nn.ModuleList(ResamplerLayer(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim, eps=config.norm_eps)

    def forward(self, x):
        batch, frames, space, dim = x.shape  # (B, T, S, D)
        if self.time_embeds is not None:
            x = x + self.time_embeds[:frames, None, :]  # (B, T, S, D) + (T, 1, D)
        media = x.reshape(batch, frames * space, dim)  # (B, N, D), token t*S + s
        latents = self.latents.expand(batch, -1, -1)  # (B, R, D), the same start for every item
        for layer in self.layers:
            latents = layer(media, latents)  # (B, R, D)
        return self.norm(latents)  # (B, R, D)


# %% [markdown]
# ### The check: float64 on the CPU
#
# The same weights, the same input, both in float64: the two must agree to rounding, and
# the bound is `refimpl.TOLERANCES["float64", "torch vs numpy"]`.

# %%
ours = load_refimpl(PerceiverResampler(config).double(), params)
with torch.no_grad():
    out64 = ours(torch.from_numpy(x))  # (B, R, D)
err = refimpl.relative_error(out64.numpy(), reference)
print(f"our module vs refimpl.perceiver_resampler, float64 CPU: relative error {err:.0e} (bound {bound:g})")
assert out64.shape == (2, config.num_latents, config.dim) and out64.dtype == torch.float64 and err <= bound

# %% [markdown]
# ### The library's module
#
# `refimpl.torch.PerceiverResampler` is the same function for every configuration (masks,
# grouped-query attention, RMSNorm, ...). It uses the same parameter names, so its state
# dict and ours are interchangeable, and `from_refimpl` / `to_refimpl` move weights both ways
# exactly.
#
# It has one optimisation a student module need not copy, `media_keys_values`. The media
# tokens are the same in every layer; only each layer's LayerNorm scale $g$, shift $b$ and
# projections $W = [W_k \mid W_v]$ differ. With $\hat{x}$ the normalisation alone,
# $\mathrm{LN}(x) = \hat{x} \odot g + b$, so
#
# $$\mathrm{LN}(x)\, W = \hat{x}\, (\mathrm{diag}(g)\, W) + b\, W,$$
#
# and $\hat{x}$ is computed once and multiplied by all layers' folded weights in one matrix
# product. The same function up to rounding; on a GPU it reads the media once instead of once
# per layer.

# %%
lib = refimpl.torch.PerceiverResampler.from_refimpl(config, params)  # float64
with torch.no_grad():
    out_lib = lib(torch.from_numpy(x))  # (B, R, D)
err = refimpl.relative_error(out64.numpy(), out_lib.numpy())
print(f"our module vs refimpl.torch, float64: relative error {err:.0e} (bound {bound:g})")
assert err <= bound

same_names = sorted(ours.state_dict()) == sorted(lib.state_dict())
round_trip = all(np.array_equal(value, params[name]) for name, value in lib.to_refimpl().items())
ours_from_lib = PerceiverResampler(config).double()
ours_from_lib.load_state_dict(lib.state_dict())  # strict: the names match one to one
with torch.no_grad():
    identical = torch.equal(ours_from_lib(torch.from_numpy(x)), out64)
print(
    f"same state-dict names: {same_names}; to_refimpl gives params back exactly: {round_trip}; "
    f"ours loaded from the library's state dict gives the same output bit for bit: {identical}"
)
assert same_names and round_trip and identical


# %% [markdown]
# ## float32 on the device
#
# Now the module on `device` in float32, against the float64 reference. float32 keeps 24
# significant bits: unit roundoff $u = 2^{-24} \approx 6 \times 10^{-8}$; sums of $D$
# products, the softmax and the layers amplify that, and the bound is $10^{-4}$.
# On an NVIDIA GPU since Ampere, float32 matrix products may run as TF32 (11 significant
# bits, float16's precision) when `torch.backends.cuda.matmul.allow_tf32` is True; it is
# False by default, and the set-up cell keeps it so.


# %%
def run(module, x, device, dtype):
    """module copied to (device, dtype), run on x (NumPy) without autograd; returns float64 NumPy."""
    module = copy.deepcopy(module).to(device, dtype)
    with torch.no_grad():
        out = module(torch.as_tensor(x, device=device, dtype=dtype))
    return out.to("cpu", torch.float64).numpy()


key32 = ("float32", "torch GPU vs float64 reference") if device == "cuda" else ("float32", "vs float64 reference")
err = refimpl.relative_error(run(ours, x, device, torch.float32), reference)
print(f"float32 on {device}: relative error {err:.1e} (bound {refimpl.TOLERANCES[key32]:g}, TOLERANCES{key32})")
assert err <= refimpl.TOLERANCES[key32]

# %% [markdown]
# ## bfloat16 and float16
#
# Half the bytes of float32, so half the memory traffic, and on a GPU the tensor cores'
# 16-bit rate, many times the float32 rate. Two 16-bit formats are common:
#
# | format | sign, exponent, stored fraction bits | significant bits | unit roundoff $u$ | largest finite |
# |---|---|---|---|---|
# | float32 | 1, 8, 23 | 24 | $2^{-24} \approx 6 \times 10^{-8}$ | $3.4 \times 10^{38}$ |
# | float16 | 1, 5, 10 | 11 | $2^{-11} \approx 4.9 \times 10^{-4}$ | 65504 |
# | bfloat16 | 1, 8, 7 | 8 | $2^{-8} \approx 3.9 \times 10^{-3}$ | $3.4 \times 10^{38}$ |
#
# bfloat16 is the top half of a float32 (converting rounds to the nearest): **the same
# exponent range** as float32, so nothing overflows that did not overflow in float32
# (float16 overflows at 65504), but only **8 significant bits**, so every rounding may
# change a number by up to $u = 2^{-8} \approx 0.4\%$. `torch.finfo` says the same, with
# `eps` $= 2u$ (the gap from 1 to the next number):

# %%
for dtype in (torch.float32, torch.float16, torch.bfloat16):
    info = torch.finfo(dtype)
    print(
        f"{str(dtype):15} eps {info.eps:.1e}  u = eps/2 {info.eps / 2:.1e}  "
        f"max {info.max:.2e}  smallest normal {info.tiny:.1e}"
    )
assert torch.finfo(torch.bfloat16).eps / 2 == 2.0**-8
assert torch.finfo(torch.bfloat16).tiny == torch.finfo(torch.float32).tiny  # the same exponent range

big = torch.tensor([70000.0])
print("70000 in float16:", big.half().item(), "  in bfloat16:", big.bfloat16().item())
assert torch.isinf(big.half()).all() and torch.isfinite(big.bfloat16()).all()
assert torch.tensor(1 + 2.0**-9).bfloat16().item() == 1.0  # 1 + u/2 rounds back to 1

samples = torch.from_numpy(rng.standard_normal(100_000) * 10.0 ** rng.uniform(-20, 20, 100_000))  # float64, 40 decades
rounding = ((samples.bfloat16().double() - samples) / samples).abs().max().item()
print(f"largest relative rounding error over 100000 numbers of 40 decades: {rounding:.2e} (u = {2.0**-8:.2e})")
assert 0.9 * 2.0**-8 < rounding <= 2.0**-8

# %% [markdown]
# float16 is the other trade: 3 more significant bits ($u = 2^{-11}$, 8 times finer than
# bfloat16's), but 5 exponent bits, so anything past 65504 overflows to inf, as 70000 did
# above. Its tensor cores are older: NVIDIA GPUs have had them since Volta (compute capability
# 7.0), bfloat16 ones only since Ampere (8.0: A100, H100, RTX 30xx). Colab's free T4 (Turing,
# 7.5) has float16 tensor cores and no bfloat16 ones; torch still runs bfloat16 there, emulated
# and slow, so `torch.cuda.is_bf16_supported()`, which counts emulation by default, says True
# on a T4. `including_emulation=False` asks about the hardware. The GPU cells below use the
# format the GPU has:

# %%
if device == "cuda":
    half = torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    capability = "{}.{}".format(*torch.cuda.get_device_capability())
    reason = f"compute capability {capability}: " + (
        "bfloat16 tensor cores (8.0 or later)" if half == torch.bfloat16 else "no bfloat16 tensor cores (before 8.0)"
    )
    print(f"16-bit dtype for the GPU cells: {str(half).removeprefix('torch.')} ({reason})")
else:
    half = None
    print("16-bit dtype for the GPU cells: none (no GPU here; the error table below tries both on the CPU)")

# %% [markdown]
# ### The error per dtype
#
# The same module and input in float64, float32, float16 and bfloat16, on the CPU and, where
# there is one, on the GPU, each against the float64 reference. The 16-bit formats are slow on
# most CPUs, which is fine for this small input. The bounds come from `refimpl.TOLERANCES`;
# for float16 and bfloat16 they are the GPU's bounds, $5 \times 10^{-3}$ and
# $2 \times 10^{-2}$, on either device, since the rounding is to the same 11 or 8 bits (the
# bounds' margin covers the different orders of summation).

# %%
DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
BOUND_KEYS = {
    ("cpu", "float64"): ("float64", "torch vs numpy"),
    ("cpu", "float32"): ("float32", "vs float64 reference"),
    ("cpu", "float16"): ("float16", "torch GPU vs float64 reference"),
    ("cpu", "bfloat16"): ("bfloat16", "torch GPU vs float64 reference"),
    ("cuda", "float64"): ("float64", "torch vs numpy"),  # float64 on a GPU: the same math in another order
    ("cuda", "float32"): ("float32", "torch GPU vs float64 reference"),
    ("cuda", "float16"): ("float16", "torch GPU vs float64 reference"),
    ("cuda", "bfloat16"): ("bfloat16", "torch GPU vs float64 reference"),
}
devices = ["cpu"] + (["cuda"] if device == "cuda" else [])
errors = {}


def ordered_by_precision(dev):
    """Whether the errors on dev grow as the significant bits shrink, in DTYPES' order (53, 24, 11, 8)."""
    values = [errors[dev, name] for name in DTYPES]
    return all(smaller < larger for smaller, larger in zip(values, values[1:]))


for dev in devices:
    for name, dtype in DTYPES.items():
        errors[dev, name] = refimpl.relative_error(run(ours, x, dev, dtype), reference)
        bound_here = refimpl.TOLERANCES[BOUND_KEYS[dev, name]]
        print(f"{dev:5} {name:9} relative error {errors[dev, name]:.1e}  (bound {bound_here:g})")
        assert errors[dev, name] <= bound_here, f"{dev} {name}: {errors[dev, name]:.1e} > {bound_here:g}"
    assert ordered_by_precision(dev), "errors not ordered by precision"
unit_roundoff = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}
assert all(1 <= errors["cpu", name] / unit_roundoff[name] <= 5 for name in DTYPES)  # a small factor above u
assert 4 <= errors["cpu", "bfloat16"] / errors["cpu", "float16"] <= 16  # float16's 3 more bits: about 8 times

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
width = 0.8 / len(devices)
for j, dev in enumerate(devices):
    positions = np.arange(len(DTYPES)) + (j - (len(devices) - 1) / 2) * width
    ax.bar(positions, [errors[dev, name] for name in DTYPES], width, label=f"error, torch on {dev}")
for i, name in enumerate(DTYPES):
    ax.hlines(
        refimpl.TOLERANCES[BOUND_KEYS["cpu", name]],
        i - 0.45,
        i + 0.45,
        colors="k",
        label="bound (TOLERANCES)" if i == 0 else None,
    )
    ax.hlines(
        unit_roundoff[name],
        i - 0.45,
        i + 0.45,
        colors="grey",
        linestyles="dotted",
        label="unit roundoff $u$" if i == 0 else None,
    )
ax.set(
    xticks=range(len(DTYPES)),
    xticklabels=list(DTYPES),
    yscale="log",
    ylabel="relative error vs float64 reference",
    title="The resampler's error per dtype (D = 48, 3 layers)",
)
ax.legend(fontsize=8, loc="upper left")
plt.show()

# %% [markdown]
# Each dtype lands a small factor (1 to 5, on the CPU) above its unit roundoff and far below
# its bound: the error follows the number of significant bits, 53, 24, 11 or 8, and the
# computation amplifies it only mildly. bfloat16's few tenths of a percent are the price of its
# speed; a model trained in bfloat16 expects them, and a check of a bfloat16 resampler against
# the reference needs a bound of this size, not float32's. float16's error is about 8 times
# smaller, as its 3 more bits say. Its risk is range, not precision: a value past 65504 on the
# way becomes inf, and the next norm turns it into NaN, without an error. `refimpl.torch` checks
# a float16 output and raises instead. Here the last layer's feed-forward output weights are
# made $10^5$ times larger (still finite in float16), so its output passes 65504: our module
# returns NaN, `refimpl.torch` raises, and in bfloat16 all is finite.

# %%
loud_params = params | {"layers.2.ff.w_out": 1e5 * params["layers.2.ff.w_out"]}
assert np.abs(loud_params["layers.2.ff.w_out"]).max() < torch.finfo(torch.float16).max
with torch.no_grad():
    silent = load_refimpl(PerceiverResampler(config), loud_params).half()(torch.as_tensor(x, dtype=torch.float16))
print(f"our module in float16: {torch.isnan(silent).sum().item()} of {silent.numel()} outputs NaN, no error")
assert torch.isnan(silent).any()
for dtype in (torch.float16, torch.bfloat16):
    loud = refimpl.torch.PerceiverResampler.from_refimpl(config, loud_params, dtype=dtype)
    try:
        with torch.no_grad():
            loud_out = loud(torch.as_tensor(x, dtype=dtype))
    except FloatingPointError as error:
        assert dtype == torch.float16, dtype
        print(f"{str(dtype):15} FloatingPointError: {error}")
    else:
        assert dtype == torch.bfloat16 and torch.isfinite(loud_out).all(), dtype
        print(f"{str(dtype):15} finite output, largest |value| {loud_out.abs().max().item():.2f}")

# %%
# NBVAL_CHECK_OUTPUT
n_params = sum(p.numel() for p in ours.parameters())
print(f"our module: {config.depth} layers, {n_params} parameters, {len(ours.state_dict())} state-dict entries")
print(f"output shape (B, R, D): {tuple(out64.shape)}; dtypes tried: {', '.join(DTYPES)}")
print(f"float64 agrees with refimpl (<= 1e-12): {refimpl.relative_error(out64.numpy(), reference) <= 1e-12}")
print(f"state dict interchangeable with refimpl.torch's: {same_names and identical}")
print(
    f"every error within its bound, on every device tried: "
    f"{all(errors[key] <= refimpl.TOLERANCES[BOUND_KEYS[key]] for key in errors)}"
)
print(
    f"errors ordered float64 < float32 < float16 < bfloat16 on every device: "
    f"{all(ordered_by_precision(d) for d in devices)}"
)

# %% [markdown]
# ## Speed against NumPy
#
# A larger configuration, $D = 256$, 3 layers, $H = 4$ heads of $D_h = 64$, $R = 64$
# latents, one frame of $S \in \{64, 256, 576\}$ tokens (576 = 24 x 24 patches), batch 2,
# all in float32 on the CPU: `refimpl` in NumPy (`dtype=np.float32`), our module, and
# `refimpl.torch`, under `torch.no_grad()`. Each time is the median of 7 calls after a
# warm-up call (the first call of anything pays for allocation and, in `refimpl`, compiling
# the GELU's `erfc`). Only agreement is asserted: timings depend on the machine and on
# whatever else runs on it.

# %%
bench_config = refimpl.ResamplerConfig(dim=256, depth=3, heads=4, dim_head=64, num_latents=64)
bench_params = refimpl.init_resampler(bench_config, seed=1)
ours32 = load_refimpl(PerceiverResampler(bench_config), bench_params)  # float32: a fresh module's dtype
lib32 = refimpl.torch.PerceiverResampler.from_refimpl(bench_config, bench_params, dtype=torch.float32)


def median_ms(fn, repeat=7):
    """Median wall time of fn() in milliseconds, after one warm-up call."""
    fn()
    return 1e3 * float(np.median(timeit.repeat(fn, number=1, repeat=repeat)))


def torch_cpu(module):
    def call(x):
        with torch.no_grad():
            return module(torch.from_numpy(x))

    return call


implementations = {
    "refimpl, NumPy": lambda x: refimpl.perceiver_resampler(bench_params, x, bench_config, dtype=np.float32),
    "our module, torch CPU": torch_cpu(ours32),
    "refimpl.torch, CPU": torch_cpu(lib32),
}
sizes = [64, 256, 576]
times = {name: [] for name in implementations}
for size in sizes:
    xb = rng.standard_normal((2, 1, size, bench_config.dim)).astype(np.float32)  # (B, T, S, D)
    expected = refimpl.perceiver_resampler(bench_params, xb, bench_config)  # float64 reference
    for name, fn in implementations.items():
        err = refimpl.relative_error(np.asarray(fn(xb), dtype=np.float64), expected)
        assert err <= refimpl.TOLERANCES["float32", "vs float64 reference"], f"{name}, S = {size}: {err:.1e}"
        times[name].append(median_ms(lambda: fn(xb)))
    print(f"S = {size:3}: " + "   ".join(f"{name} {times[name][-1]:6.1f} ms" for name in implementations))
numpy_times = np.array(times["refimpl, NumPy"])
for name in ("our module, torch CPU", "refimpl.torch, CPU"):
    ratio = np.array(times[name]) / numpy_times
    print(f"{name}: {ratio.min():.2f} to {ratio.max():.2f} times refimpl NumPy's time (measured here, not asserted)")

# %% [markdown]
# On a GPU, the same sizes in float32 and in the 16-bit format picked above, `half` (bfloat16,
# or float16 on a GPU without bfloat16 tensor cores; skipped on the CPU). A GPU call only
# queues work, so each timed call ends with `torch.cuda.synchronize()`; without it the clock
# would stop long before the GPU does.

# %%
gpu_times = {}
if device == "cuda":

    def cuda_ms(fn, repeat=20):
        """Median wall time of fn() in milliseconds on the GPU: synchronised, after warm-up calls."""
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        samples = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            torch.cuda.synchronize()  # wait for the GPU to finish before reading the clock
            samples.append(time.perf_counter() - start)
        return 1e3 * float(np.median(samples))

    for dtype in (torch.float32, half):
        for label, module in (("our module", ours32), ("refimpl.torch", lib32)):
            gpu_module = copy.deepcopy(module).to("cuda", dtype)
            name = f"{label}, CUDA {str(dtype).removeprefix('torch.')}"
            gpu_times[name] = []
            for size in sizes:
                xb = torch.randn(2, 1, size, bench_config.dim, device="cuda", dtype=dtype)
                with torch.no_grad():
                    gpu_times[name].append(cuda_ms(lambda: gpu_module(xb)))
            print(f"{name:32}" + "   ".join(f"S = {s}: {t:5.2f} ms" for s, t in zip(sizes, gpu_times[name])))

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
for name, values in times.items():
    ax.plot(sizes, values, "o-", label=f"{name} (float32)")
for name, values in gpu_times.items():
    ax.plot(sizes, values, "s--", label=name)
ax.set(
    yscale="log",
    xticks=sizes,
    xlabel="media tokens per item, S (batch 2, one frame)",
    ylabel="median time per call (ms)",
    title="Resampler forward pass: D = 256, 3 layers, R = 64",
)
ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
ax.yaxis.set_minor_formatter(ticker.NullFormatter())
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
plt.show()

# %% [markdown]
# On the CPU the torch modules usually come out ahead of `refimpl`'s NumPy, by a factor that
# depends on the machine and moves between runs; a busy machine moves it a lot, and can turn it
# round. These are measurements, so nothing asserts them. The run committed here was made on a
# 2-core CPU that other jobs kept busy (load average about 3): the cell prints 0.52 to 1.63
# times NumPy's time for our module and 0.31 to 2.55 for `refimpl.torch`, both slower than
# NumPy at $S = 256$ and about even with it at 576. An earlier run on the same kind of CPU gave
# 0.47 to 0.82, and on the 16-core host of an H100 they took 0.1-0.2 times NumPy's time.
# `refimpl` is written to be read: it checks its arguments and casts its float64 parameters to
# float32 on every call, and its elementwise steps (norms, softmax, GELU) run on one core, as
# NumPy's always do, while its matrix products use them all. With larger matrices the
# products dominate and the gap closes (the CPU numbers below). The work grows with $S$, but
# far less than in proportion: the latents' side of it (their queries, keys, values and
# feed-forward) does not depend on $S$. (On a quiet machine the times follow; in the busy run
# above, the noise is larger than the growth.)
#
# On a GPU, at this small size, a forward pass is a few dozen small kernels and takes about
# as long as the CPU needs to launch them: the GPU waits for the CPU, and the GPU curves
# hardly grow with $S$. `refimpl.torch`'s one-product trick does not pay here either (it
# folds the layers' weights on every call, a few more small kernels); it is made for large
# $N$, where it reads the media once instead of once per layer.
#
# At the sizes of a real model the GPU pays off. `benchmarks/RESULTS.md` records, for
# $D = 1024$, 6 layers, $H = 8$, $D_h = 64$, $R = 64$ (Flamingo's and open_flamingo's sizes):
#
# - on a 2-core AMD EPYC CPU, `refimpl.torch` in float32 at batch 8 x 576 tokens: **710 ms**
#   (NumPy `refimpl`: 780 ms, 1.10 times as long);
# - on an **NVIDIA H100 80GB HBM3**, `refimpl.torch` at 32 x 576: **12.5 ms** in float32 (TF32
#   off) and **2.04 ms** in bfloat16, 1.48 ms when captured as a CUDA graph, which removes the
#   launch cost; at 32 x 2304 in bfloat16 as a CUDA graph, 3.1 ms, 52% of the H100's
#   measured bfloat16 matrix-product rate;
# - at 1 x 576 the H100 takes 2.1 ms in float32 and 2.1 ms in bfloat16 eagerly: launch-bound,
#   as the flat curves above, until a CUDA graph brings bfloat16 to 0.44 ms.
#
# Per item that is about 90 ms on the CPU against 0.06 ms in bfloat16 on the H100: a factor of
# more than a thousand (two machines, so only the order of magnitude means something), of
# which bfloat16 on the tensor cores is a factor of six over float32 on the same GPU.

# %% [markdown]
# ## Summary
#
# What you built:
#
# - attention in torch, once with `F.scaled_dot_product_attention` and once written out
#   (Exercise 1), equal to each other and to `refimpl.attention` to 1e-16;
# - the Perceiver Resampler as `nn.Module`s: `ResamplerAttention` (two LayerNorms, attention
#   over `concat(media, latents)`), `FeedForward` (Exercise 2), `ResamplerLayer` (two
#   residuals), `PerceiverResampler` (latents, time embeddings, final norm), each piece
#   checked against `refimpl`;
# - `load_refimpl`, which copies `refimpl`'s weights in, transposing every projection for
#   `nn.Linear`; the module then agrees with `refimpl.perceiver_resampler` and with
#   `refimpl.torch` to rounding in float64.
#
# What to notice:
#
# - a strict `load_state_dict` and matching names turn weight copying from a source of silent
#   bugs into a checked step;
# - each dtype's error follows its unit roundoff $2^{-p}$, $p$ its significant bits (53, 24,
#   11, 8), amplified only a little by the resampler; bfloat16 keeps float32's range, so it
#   trades accuracy, not overflow, for speed, and its error of a few $10^{-3}$ needs its own
#   bound; float16 is 8 times more accurate but overflows past 65504, and is the 16-bit
#   format of GPUs without bfloat16, such as Colab's T4;
# - a GPU needs work large enough to hide its launch costs, and timing it needs
#   `torch.cuda.synchronize()`.
#
# **Next.** Notebook 6 trains a tiny model built around `refimpl.torch`'s resampler on the
# CPU, on generated scenes of any size, and notebook 7 looks inside it; notebooks 8 to 10 test
# the resampler against simpler poolers, feed its tokens to a language model, and derive its
# backward pass. Beyond the course: `refimpl` as an oracle for your own
# resampler or a published one (`refimpl.interop` reads open_flamingo's, flamingo-pytorch's
# and the Hugging Face IDEFICS and Idefics2 weights; see the README), and `refimpl.torch`
# for a module that covers every variant.
