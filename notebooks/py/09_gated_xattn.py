# %% [markdown]
# # 9. How the language model reads the visual tokens: gated cross-attention
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/perceiver-resampler-course/perceiver-resampler-course/blob/v0.1.0/notebooks/09_gated_xattn.ipynb)
#
# Runs on a laptop CPU in about 80 s, most of it the two training runs of section 9. The
# resampler turns each image into $R$ tokens; this notebook follows them into the language model.
# After it you will be able to write Flamingo's GATED XATTN-DENSE block in NumPy beside the
# paper's pseudo-code and check it (and its PyTorch twin) against `refimpl`; build the mask that
# lets each text token see only the image just before it; show, bit for bit, that with its gates
# at 0 the block leaves a language model's output exactly unchanged, and why only the gates learn
# at first; and insert the blocks into a small frozen language model, feed them the shipped
# resampler's tokens, and watch a short training run open the gates and teach the text to answer
# questions about the image. Last, the token budget: what it costs the language model, per text
# token, to read every patch of an image instead of the resampler's $R$ tokens, counted and timed
# for images from 32 to 512 pixels a side, and how many answers each way gets right.

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
# The PyTorch models of this notebook are tiny (tens of thousands of parameters), so a step costs
# the time to launch each operation, not the arithmetic. Splitting such small operations over
# threads only adds the cost of keeping the threads in step, and on a busy machine they wait for
# each other, so we run PyTorch on one thread.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import refimpl
import refimpl.torch
from refimpl import viz
from refimpl.exercises import gated_xattn as ex
from refimpl.layers import gelu, layer_norm
from refimpl.scenes import QUESTIONS, make_scenes
from refimpl.tiny.model import load_pretrained
from refimpl.tiny.torch import TinyModel

rng = np.random.default_rng(0)
torch.manual_seed(0)
torch.set_num_threads(1)  # our torch models are tiny: one thread beats two that must keep in step


# %% [markdown]
# ## 1. Where the R tokens go
#
# Flamingo does not train a language model. It takes a pretrained one (Chinchilla), **freezes
# every weight of it**, and inserts new blocks between its layers. In each new block the text's
# hidden states are the queries and the resampler's visual tokens are the keys and values: the
# text reads the image. The paper's pseudo-code (Alayrac et al. 2022, *Flamingo: a Visual
# Language Model for Few-Shot Learning*, arXiv:2204.14198, Fig. 4):
#
# ```python
# def gated_xattn_dense(
#     y,            # input language features
#     x,            # input visual features
#     alpha_xattn,  # xattn gating parameter - init at 0.
#     alpha_dense,  # ffw gating parameter - init at 0.
# ):
#     # 1. Gated Cross Attention
#     y = y + tanh(alpha_xattn) * attention(q=y, kv=x)
#     # 2. Gated Feed Forward (dense) Layer
#     y = y + tanh(alpha_dense) * ffw(y)
#     # Regular self-attention + FFW on language
#     y = y + frozen_attention(q=y, kv=y)
#     y = y + frozen_ffw(y)
#     return y  # output visually informed language features
# ```
#
# The first two lines are new and trained; the last two are the language model's own layer,
# frozen. Each new branch is multiplied by $\tanh(\alpha)$, with $\alpha$ a single learned
# number per branch, **initialised at 0**. Since $\tanh(0) = 0$, the new branches contribute
# nothing at the start, and the model is exactly the pretrained language model; training opens
# the gates as far as the image helps. Sections 4 and 7 show both halves of that sentence.
#
# Axis letters, as in `refimpl/gated_xattn.py`: $L$ text tokens of width $D_t$; $I$ images of $R$
# visual tokens each, concatenated into $N_v = I \cdot R$ visual tokens of width $D_v$ (the
# resampler's $D$); $H$ heads of width $D_h$; feed-forward width $F$.

# %% [markdown]
# ## 2. The block in NumPy
#
# What the pseudo-code leaves out, every implementation adds (we follow open_flamingo, as
# `refimpl.gated_xattn_dense` does): the text is normalised (LayerNorm) before it becomes the
# queries, the visual tokens are not (the resampler already ends with a norm); the feed-forward
# is pre-norm, $\mathrm{ffw}(y) = \mathrm{GELU}(\mathrm{LN}(y) W_\text{in}) W_\text{out}$; and a
# text token that may see no visual token at all (text before the first image, section 3) gets
# no attention output, a row of zeros. With $\mathrm{LN}$ the block's attention norm,
#
# $$y_1 = y + \tanh(\alpha_\text{xattn}) \cdot \mathrm{MHA}\big(q = \mathrm{LN}(y),\ kv = x\big), \qquad
# y_2 = y_1 + \tanh(\alpha_\text{dense}) \cdot \mathrm{ffw}(y_1).$$
#
# The multi-head attention $\mathrm{MHA}$ (projections $W_q$ of shape $(D_t, H D_h)$, $W_k$ and
# $W_v$ of shape $(D_v, H D_h)$, $W_o$ of shape $(H D_h, D_t)$) is notebook 2's; we call
# `refimpl.multi_head_attention` for it. Only $W_k$ and $W_v$ see the visual width $D_v$, so the
# text and the image may have different widths.


# %%
def feed_forward(params, prefix, x, eps=1e-5):
    """Pre-norm MLP without the residual: gelu(LN(x) W_in) W_out.

    x: (..., L, Dt); params[prefix + ...]: norm.weight, norm.bias (Dt,), w_in (Dt, F), w_out (F, Dt).
    returns (..., L, Dt)
    """
    h = layer_norm(x, params[prefix + "norm.weight"], params[prefix + "norm.bias"], eps)  # (..., L, Dt)
    return gelu(h @ params[prefix + "w_in"]) @ params[prefix + "w_out"]  # (..., L, F) -> (..., L, Dt)


def gated_xattn_dense(params, hidden, visual, *, heads, mask=None, eps=1e-5):
    """Flamingo's GATED XATTN-DENSE block (without the frozen LM layer that follows it).

        y1 = hidden + tanh(attn_gate) * MHA(q = LN(hidden), kv = visual)
        y2 = y1 + tanh(ff_gate) * ffw(y1)

    hidden: (..., L, Dt) text hidden states;  visual: (..., Nv, Dv), the same batch axes.
    mask: bool (..., L, Nv), True = text token may see visual token; None = every token sees all.
        A text token that may see none gets no attention output.
    params: as refimpl.init_gated_xattn_dense makes them (names in refimpl.gated_xattn_dense_shapes).
    returns (..., L, Dt)
    """
    if mask is None:
        mask = np.ones(hidden.shape[:-1] + visual.shape[-2:-1], dtype=bool)  # (..., L, Nv)
    sees = mask.any(axis=-1, keepdims=True)  # (..., L, 1): sees at least one visual token
    attn = {name: params["attn." + name] for name in ("wq", "wk", "wv", "wo")}
    normed = layer_norm(hidden, params["attn.norm.weight"], params["attn.norm.bias"], eps)  # (..., L, Dt)
    # a blind row may attend anywhere (a softmax needs one allowed key), then is zeroed
    attended = refimpl.multi_head_attention(attn, normed, visual, heads=heads, mask=mask | ~sees)  # (..., L, Dt)
    attended = np.where(sees, attended, 0.0)  # (..., L, Dt)
    # 1. Gated Cross Attention
    y = hidden + np.tanh(params["attn_gate"]) * attended  # (..., L, Dt)
    # 2. Gated Feed Forward (dense) Layer
    return y + np.tanh(params["ff_gate"]) * feed_forward(params, "ff.", y, eps)  # (..., L, Dt)


# %% [markdown]
# **Check against `refimpl`.** Random parameters from `refimpl.init_gated_xattn_dense`, with both
# gates at $\alpha = 0.8$ rather than Flamingo's 0: with closed gates the block is the identity
# (section 4), and a check at 0 would check nothing else. Sizes: $B = 2$ sequences of $L = 9$
# text tokens of width $D_t = 40$; $I = 2$ images of $R = 16$ tokens of width $D_v = 64$;
# $H = 4$ heads of width $D_h = 12$ (so $H D_h = 48 \ne D_t$), $F = 2 D_t = 80$. The mask is
# random, with the first text token of each sequence blind.

# %%
B, L, Dt = 2, 9, 40  # text: sequences, tokens, width
I, R, Dv = 2, 16, 64  # images, visual tokens per image, visual width (the resampler's D)
H, Dh = 4, 12  # heads, head width
Nv = I * R

params = refimpl.init_gated_xattn_dense(Dt, Dv, heads=H, dim_head=Dh, ff_mult=2, gate=0.8, seed=0)
for name, value in params.items():
    print(f"  {name:18} {value.shape}")
hidden = rng.standard_normal((B, L, Dt))  # (B, L, Dt)
visual = rng.standard_normal((B, Nv, Dv))  # (B, Nv, Dv)
random_mask = rng.random((B, L, Nv)) < 0.5  # (B, L, Nv)
random_mask[:, 0] = False  # token 0 sees nothing

ours = gated_xattn_dense(params, hidden, visual, heads=H, mask=random_mask)  # (B, L, Dt)
reference = refimpl.gated_xattn_dense(params, hidden, visual, heads=H, mask=random_mask)
bound = refimpl.TOLERANCES[("float64", "same math in another order")]  # the same float64 math: rounding only
err = refimpl.relative_error(ours, reference)
print(f"output {ours.shape}; ours vs refimpl.gated_xattn_dense: max relative error {err:.1e} (bound {bound:g})")
assert ours.shape == (B, L, Dt) and err <= bound

# %% [markdown]
# **The PyTorch twin.** `refimpl.torch.GatedXAttnDense` is the same block as an `nn.Module`
# (its attention through `F.scaled_dot_product_attention`); `from_refimpl` copies the
# parameters in, transposing each projection for `nn.Linear`. In float64 it must agree with
# `refimpl` to rounding:

# %%
block = refimpl.torch.GatedXAttnDense.from_refimpl(params, heads=H)  # float64
with torch.no_grad():
    twin = block(torch.from_numpy(hidden), torch.from_numpy(visual), torch.from_numpy(random_mask))  # (B, L, Dt)
bound = refimpl.TOLERANCES[("float64", "torch vs numpy")]
err_torch = refimpl.relative_error(twin.numpy(), reference)
print(f"refimpl.torch.GatedXAttnDense vs refimpl (float64): max relative error {err_torch:.1e} (bound {bound:g})")
assert err_torch <= bound

# %% [markdown]
# ## 3. Which image a text token may see
#
# Flamingo reads interleaved text and images: a web page with pictures, or a few-shot prompt
# such as "<image> a red square on the left. <image> ...". Each image's place in the text is
# marked by an `<image>` token, and each image has its own $R$ tokens; the visual tokens of a
# sequence are the $I$ images' tokens concatenated, $N_v = I \cdot R$.
#
# The paper's rule (its Section 2.3, per-image attention masking): **a text token cross-attends
# only to the visual tokens of the last image before it**, not to all earlier images. The
# earlier images are not lost: the language model's own (causal) self-attention still carries
# what earlier text tokens read from them. The rule keeps the cross-attention the same for any
# number of images, which lets a model trained on few images read many.
#
# Our text has a tiny vocabulary: `<bos>`, `<image>`, `yes`, `no`, and one word per question of
# `refimpl.scenes` (4 colours $\times$ 4 quadrants), such as `red-top-left?`. One word per question
# keeps this notebook's lesson on the image: with the colour and the quadrant as separate words,
# the frozen language model would also have to combine two words before the answer, something
# its text-only pre-training (section 5) never asked of it, and a short run through the gates
# would spend itself learning that.

# %%
QUESTION_WORDS = [question.replace(" ", "-") + "?" for question in QUESTIONS]  # "red-top-left?", ...
VOCAB = ["<bos>", "<image>", *QUESTION_WORDS, "yes", "no"]
TOKEN = {word: index for index, word in enumerate(VOCAB)}
print(f"{len(VOCAB)} words:", " ".join(VOCAB[:4]), "...", " ".join(VOCAB[-3:]))

example = (
    "<bos> <image> red-top-left? yes <image> green-top-right? no blue-bottom-left? yes <image> yellow-bottom-right? no"
)
example_words = example.split()
example_tokens = np.array([TOKEN[word] for word in example_words])  # (L,)
is_image = example_tokens == TOKEN["<image>"]  # (L,) True at the markers
print(f"L = {len(example_words)} text tokens, {is_image.sum()} images at positions {np.flatnonzero(is_image)}")


# %% [markdown]
# ### Exercise 1: the mask
#
# Write the mask of shape $(\ldots, L, I \cdot R)$: text token $l$ may see visual token $n$ (a token
# of image $\lfloor n / R \rfloor$) exactly when that image is the last one whose marker is at or
# before $l$. The marker itself sees its own image (as in open_flamingo); text before the first
# marker sees nothing. One `np.cumsum` finds each text token's image.


# %%
def media_mask(is_image, num_images, R):
    """is_image (..., L) bool, True at the <image> markers -> mask (..., L, num_images * R) bool.

    Visual token n belongs to image n // R; text token l may see it iff that image is the last
    one whose marker is at or before l (image i is the one at the (i+1)-th marker).
    Text before the first marker sees nothing.
    """
    # YOUR CODE HERE (about 3 lines)
    raise NotImplementedError


# %%
ex.check_media_mask(media_mask)

# %% [markdown]
# Stuck? `??ex.media_mask` shows a worked solution. From here on the notebook uses
# `ex.media_mask`, so it runs whatever your cell above holds.
#
# The mask of the example, with the shipped resampler's $R = 16$ tokens per image:

# %%
example_mask = ex.media_mask(is_image, 3, R)  # (L, 3 R)
assert example_mask.shape == (len(example_words), 3 * R)
assert (
    not example_mask[0].any() and (example_mask[1:].sum(axis=-1) == R).all()
)  # <bos> sees nothing, the rest one image each

fig, ax = plt.subplots(figsize=(7, 3.6))
viz.matrix(
    example_mask.astype(float),
    ax=ax,
    colorbar=False,
    xlabel=f"visual token n (image n // R, R = {R})",
    ylabel="text token",
    title="Which visual tokens each text token may see (yellow = may attend)",
)
ax.set_yticks(range(len(example_words)), example_words, fontsize=8)
for boundary in (R, 2 * R):
    ax.axvline(boundary - 0.5, color="white", lw=1)
plt.show()

# %% [markdown]
# Each row is yellow over exactly one image's block, the block of the last `<image>` above it;
# `<bos>` sees nothing. The two questions about the second image both read the second image;
# `yellow-bottom-right?` reads only the third, even though the first two are further up.
#
# **Check.** A text token's output may depend only on its own image. Change the third image's
# tokens: every row before the third marker must stay **bit for bit** the same (a masked
# key's weight is $\exp(-\infty) = 0$ exactly, and $0 \cdot v$ adds exactly nothing), and the
# rows from the marker on must change.

# %%
example_hidden = rng.standard_normal((len(example_words), Dt))  # (L, Dt)
example_visual = rng.standard_normal((3 * R, Dv))  # (3 R, Dv): three images
changed_visual = example_visual.copy()
changed_visual[2 * R :] = rng.standard_normal((R, Dv))  # a different third image

before = refimpl.gated_xattn_dense(params, example_hidden, example_visual, heads=H, mask=example_mask)  # (L, Dt)
after = refimpl.gated_xattn_dense(params, example_hidden, changed_visual, heads=H, mask=example_mask)
third = np.flatnonzero(is_image)[2]  # the third marker's position
unchanged = np.array_equal(before[:third], after[:third])
changed = ~np.isclose(before[third:], after[third:]).all(axis=-1)  # (L - third,): True where a row differs
print(f"rows before the third <image> (0..{third - 1}) bit for bit unchanged: {unchanged}")
print(f"rows from it on ({third}..{len(example_words) - 1}) changed: {changed.all()}")
assert unchanged and changed.all()

# %% [markdown]
# ## 4. Gates at zero: the language model, exactly unchanged
#
# With $\alpha_\text{xattn} = \alpha_\text{dense} = 0$, both branches are multiplied by
# $\tanh(0) = 0$. In floating point that is exact, not merely small: $\tanh(0)$ is exactly $0$,
# $0 \cdot a$ is exactly $0$ (or $-0$) for every finite $a$, and $y + 0 = y$ exactly. So the block
# returns its input **bit for bit**, whatever its weights are, and a pretrained language model
# with such blocks inserted computes exactly what it computed before. (Only an infinite or NaN
# branch could break it: $0 \cdot \infty$ is NaN.)
#
# `refimpl.init_gated_xattn_dense` puts the gates at 0 unless told otherwise, as Flamingo does;
# so does `refimpl.torch.GatedXAttnDense` (here a fresh float32 module, as training starts):

# %%
params_closed = refimpl.init_gated_xattn_dense(Dt, Dv, heads=H, dim_head=Dh, ff_mult=2, seed=1)  # gates at 0
closed = refimpl.gated_xattn_dense(params_closed, hidden, visual, heads=H, mask=random_mask)
identity_numpy = np.array_equal(closed, hidden)

fresh = refimpl.torch.GatedXAttnDense(Dt, Dv, heads=H, dim_head=Dh, ff_mult=2)  # float32, gates at 0
hidden32 = torch.from_numpy(hidden).float()
with torch.no_grad():
    identity_torch = torch.equal(
        fresh(hidden32, torch.from_numpy(visual).float(), torch.from_numpy(random_mask)), hidden32
    )
print(f"gates at 0, NumPy: output == input bit for bit: {identity_numpy}")
print(f"gates at 0, torch (float32): output == input bit for bit: {identity_torch}")
assert identity_numpy and identity_torch

# %% [markdown]
# **How does training leave 0?** If the branch adds nothing, how does the loss even notice
# it? Take the attention half, $y = h + \tanh(\alpha)\, a$, with $a$ the attention branch's
# output and $g = \partial \mathcal{L} / \partial y$ the gradient arriving from above. The gate
# $\tanh(\alpha)$ and its slope:

# %%
alphas = np.linspace(-3, 3, 241)
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(alphas, np.tanh(alphas), label=r"gate $\tanh(\alpha)$: how much of the branch is added")
ax.plot(alphas, 1 - np.tanh(alphas) ** 2, "--", label=r"its slope $1 - \tanh^2(\alpha)$: how fast $\alpha$ learns")
ax.axvline(0, color="grey", lw=0.8)
ax.set(xlabel=r"$\alpha$", ylabel="value", title=r"The tanh gate: closed at $\alpha = 0$, where it learns fastest")
ax.legend(fontsize=8, loc="lower right")
plt.show()


# %% [markdown]
# ### Exercise 2: the gradient at the gate
#
# Derive and write the backward pass of $y = h + \tanh(\alpha)\, a$: given the upstream gradient
# $g$ and the branch output $a$ (both $(\ldots, L, D_t)$) and the number $\alpha$, return
# $(\partial \mathcal{L} / \partial \alpha,\ \partial \mathcal{L} / \partial a)$. ($\alpha$ is one number
# that scales every entry of $a$: its gradient sums over all of them.) The check compares your
# answer with PyTorch's autograd through `refimpl.torch.GatedXAttnDense` (its feed-forward gate
# at 0, so that the block is exactly $h + \tanh(\alpha)\, a$).


# %%
def attn_gate_gradient(upstream, attended, alpha):
    """Backward through y = hidden + tanh(alpha) * attended.

    upstream: (..., L, Dt) dLoss/dy;  attended: (..., L, Dt);  alpha: a number.
    returns (dLoss/dalpha as a float, dLoss/dattended (..., L, Dt)).
    """
    # YOUR CODE HERE (about 3 lines)
    raise NotImplementedError


# %%
ex.check_attn_gate_gradient(attn_gate_gradient)

# %% [markdown]
# Stuck? `??ex.attn_gate_gradient` shows a worked solution. The answer:
#
# $$\frac{\partial \mathcal{L}}{\partial \alpha} = \big(1 - \tanh^2 \alpha\big) \sum g \odot a, \qquad
# \frac{\partial \mathcal{L}}{\partial a} = \tanh(\alpha)\, g .$$
#
# At $\alpha = 0$ the slope of $\tanh$ is 1, so the gate gets the full signal, while the branch
# (and every weight inside it) gets **exactly zero**. The first gradient step changes only the
# gates; once they are off 0, the weights behind them start to learn.
#
# The same fact on a whole block: a fresh `GatedXAttnDense` (gates at 0), any loss, one backward
# pass. Every weight's gradient is exactly zero; only the two gates have one. (The feed-forward
# gate's gradient is $\sum g \odot \mathrm{ffw}(y_1)$, by the same formula.)

# %%
fresh.zero_grad()
out = fresh(hidden32, torch.from_numpy(visual).float(), torch.from_numpy(random_mask))
(out * torch.randn(out.shape, generator=torch.Generator().manual_seed(0))).sum().backward()  # a random loss
grads = {name: p.grad for name, p in fresh.named_parameters()}
weights_zero = all(torch.count_nonzero(grads[name]) == 0 for name in grads if not name.endswith("_gate"))
gates_nonzero = all(grads[name].item() != 0 for name in ("attn_gate", "ff_gate"))
print(f"{len(grads) - 2} weight tensors, every gradient exactly 0: {weights_zero}")
print(f"gate gradients: attn_gate {grads['attn_gate'].item():+.3f}, ff_gate {grads['ff_gate'].item():+.3f}")
assert weights_zero and gates_nonzero


# %% [markdown]
# ## 5. A tiny language model, and a question it cannot answer
#
# **The task.** Each sequence shows two images, each followed by one question about it and the
# answer:
#
# `<bos> <image> red-top-left? yes <image> blue-bottom-right? no`
#
# The images are `refimpl.scenes` scenes of $64 \times 64$ pixels; the questions are the 16 the
# shipped tiny model was trained to answer ("is there a red shape in the top-left quadrant?").
# We pick the questions so that half the answers are yes: from the text alone, every answer is a
# coin flip. A language model can only learn to say "yes" or "no" with probability about 1/2;
# to do better it must read the image.
#
# **The language model.** Token and position embeddings ($D_t = 48$), two pre-norm transformer
# layers with causal self-attention (4 heads, feed-forward width $2 D_t$), a final LayerNorm and
# a linear head over the vocabulary: a GPT in miniature. We first train it briefly **on the text
# alone** (next-token prediction on every position, images unseen), and then freeze it, as
# Flamingo freezes Chinchilla. We could freeze a random model instead; a trained one shows what
# the gates protect: it has learned the grammar of these sequences (after an answer comes
# `<image>`, after `<image>` a question), and that an answer is "yes" half the time.


# %%
class SelfAttentionLayer(nn.Module):
    """A pre-norm transformer layer with causal self-attention: x + attn(LN(x)), then + ffw(LN(x))."""

    def __init__(self, dim, heads, ff_dim):
        super().__init__()
        self.heads = heads
        self.attn_norm, self.ff_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.wqkv = nn.Linear(dim, 3 * dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)
        self.w_in, self.w_out = nn.Linear(dim, ff_dim, bias=False), nn.Linear(ff_dim, dim, bias=False)

    def forward(self, x):  # x (B, L, Dt)
        q, k, v = (
            self.wqkv(self.attn_norm(x)).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
        )  # 3 x (B, H, L, Dt/H)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, L, Dt/H): token l sees 0..l
        x = x + self.wo(attended.transpose(1, 2).flatten(2))  # (B, L, Dt)
        return x + self.w_out(F.gelu(self.w_in(self.ff_norm(x))))  # (B, L, Dt)


class TinyLM(nn.Module):
    """tokens (B, L) -> next-token logits (B, L, V): embed, layers, norm, head."""

    def __init__(self, vocab, dim=48, depth=2, heads=4, length=16):
        super().__init__()
        self.token_embed = nn.Embedding(vocab, dim)
        self.pos_embed = nn.Parameter(0.1 * torch.randn(length, dim))
        self.layers = nn.ModuleList(SelfAttentionLayer(dim, heads, 2 * dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)

    def embed(self, tokens):
        return self.token_embed(tokens) + self.pos_embed[: tokens.shape[-1]]  # (B, L, Dt)

    def unembed(self, hidden):
        return self.head(self.norm(hidden))  # (B, L, V)

    def forward(self, tokens):
        hidden = self.embed(tokens)
        for layer in self.layers:
            hidden = layer(hidden)
        return self.unembed(hidden)


# %% [markdown]
# **The data.** A pool of 2048 training scenes and 512 held-out ones (their own seed). A
# sequence is two scenes and a question about each; `ANSWER_AT` are the positions whose
# next-token logits predict the two answers.

# %%
SIZE = 64  # pixels a side: 8 x 8 patches of the shipped model
train_scenes = make_scenes(2048, SIZE, SIZE, seed=1)
test_scenes = make_scenes(512, SIZE, SIZE, seed=2)
LAYOUT = ["<bos>", "<image>", "question", "answer", "<image>", "question", "answer"]
ANSWER_AT = [2, 5]  # the logits at the questions predict the answers at 3 and 6
YES, NO = TOKEN["yes"], TOKEN["no"]


def ask(labels, rng):
    """labels (B, 16) bool -> a question about each scene, yes half the time: (questions (B,), answers (B,) bool)."""
    want_yes = (rng.random(len(labels)) < 0.5) & labels.any(axis=1)  # (B,)
    allowed = np.where(want_yes[:, None], labels, ~labels)  # (B, 16): the questions with the wanted answer
    questions = ((allowed.cumsum(axis=1) / allowed.sum(axis=1, keepdims=True)) > rng.random((len(labels), 1))).argmax(
        axis=1
    )
    return questions, labels[np.arange(len(labels)), questions]


def make_sequences(labels, pairs, rng):
    """pairs (B, 2) scene indices -> tokens (B, 7) laid out as LAYOUT."""
    columns = [np.full(len(pairs), TOKEN["<bos>"])]
    for image in range(2):
        questions, answers = ask(labels[pairs[:, image]], rng)
        columns += [
            np.full(len(pairs), TOKEN["<image>"]),
            TOKEN[QUESTION_WORDS[0]] + questions,
            np.where(answers, YES, NO),
        ]
    return torch.from_numpy(np.stack(columns, axis=1))  # (B, 7)


test_pairs = np.arange(len(test_scenes.labels)).reshape(-1, 2)  # (256, 2): each held-out scene once
test_tokens = make_sequences(test_scenes.labels, test_pairs, np.random.default_rng(3))  # (256, 7)
test_answers = test_tokens[:, [a + 1 for a in ANSWER_AT]] == YES  # (256, 2)
for row in test_tokens[:2].tolist():
    print(" ".join(VOCAB[t] for t in row))
print(f"held out: {len(test_tokens)} sequences, {test_answers.float().mean():.0%} of the answers are yes")

# %% [markdown]
# Pre-training on text: 200 steps of AdamW, batches of 64 fresh sequences (fresh questions on
# the training scenes), the cross-entropy of every next token.

# %%
text_rng = np.random.default_rng(4)
lm = TinyLM(len(VOCAB), length=len(LAYOUT))
optimiser = torch.optim.AdamW(lm.parameters(), lr=3e-3)
for _ in range(200):
    tokens = make_sequences(train_scenes.labels, text_rng.integers(0, 2048, (64, 2)), text_rng)  # (64, 7)
    logits = lm(tokens)  # (64, 7, V)
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())  # every next token
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
lm.requires_grad_(False).eval()  # frozen from here on


def answer_accuracy(logits):
    """logits (B, 7, V) -> fraction of the two answers (yes if logit[yes] > logit[no]) right, per answer (2,)."""
    at = logits[:, ANSWER_AT]  # (B, 2, V)
    return ((at[..., YES] > at[..., NO]) == test_answers).float().mean(dim=0).numpy()


def grammar_accuracy(logits):
    """Fraction of the predictable next tokens (<image> after <bos> and after the first answer) predicted."""
    at = logits[:, [0, 3]].argmax(dim=-1)  # (B, 2)
    return (at == TOKEN["<image>"]).float().mean().item()


with torch.no_grad():
    text_logits = lm(test_tokens)  # (256, 7, V)
p_yes = text_logits[:, ANSWER_AT].softmax(dim=-1)[..., YES]
text_only = answer_accuracy(text_logits)
print(f"text-only pre-training: final loss {loss.item():.3f}")
print(
    f"  P(yes) at the answers: {p_yes.min():.2f} to {p_yes.max():.2f}; "
    f"answers right: {text_only[0]:.1%}, {text_only[1]:.1%}"
)
print(f"  predictable next tokens right (<image> after <bos> and after an answer): {grammar_accuracy(text_logits):.0%}")
assert (abs(p_yes - 0.5) < 0.15).all() and (abs(text_only - 0.5) < 0.1).all() and grammar_accuracy(text_logits) == 1.0

# %% [markdown]
# The language model has learned what text can teach: the grammar exactly, and "yes" with
# probability close to 1/2 at every answer, which gets about half the answers right.
#
# ## 6. Gated cross-attention layers in the language model
#
# **The visual tokens.** The shipped tiny model of notebook 6 (`refimpl.tiny.model.load_pretrained`:
# patches, an encoder, a 2-layer Perceiver Resampler with $R = 16$ latents of width $D = 64$) turns
# each scene into 16 tokens. It stays frozen, as Flamingo's vision encoder does (Flamingo trains
# its resampler with the new blocks; ours was trained already). A frozen encoder's output for a
# scene never changes, so we run it once per scene, without gradients, instead of once per batch
# (and keep the encoder's patch tokens too: section 9 reads them).

# %%
config, tiny_params = load_pretrained()
vision = TinyModel.from_refimpl(config, tiny_params, dtype=torch.float32).eval().requires_grad_(False)


@torch.no_grad()
def see(images, chunk=512):
    """images (B, height, width, 3) NumPy -> the encoder's patch tokens (B, N, D) and the
    resampler's tokens made of them (B, R, D), in chunks (N = the image's patches)."""
    patches, resampled = [], []
    for i in range(0, len(images), chunk):
        tokens, _ = vision.encoder(torch.from_numpy(images[i : i + chunk]))  # (b, 1, N, D): one frame
        patches.append(tokens[:, 0])  # (b, N, D)
        resampled.append(vision.resampler(tokens))  # (b, R, D)
    return torch.cat(patches), torch.cat(resampled)


train_patches, train_visual = see(train_scenes.images)  # (2048, N, D), (2048, R, D); N = 64 at 64 x 64
test_patches, test_visual = see(test_scenes.images)  # (512, N, D), (512, R, D)
test_visual_pairs = test_visual[test_pairs].flatten(1, 2)  # (256, 2 R, D): each sequence's two images
print(
    f"visual tokens: train {tuple(train_visual.shape)}, held out {tuple(test_visual.shape)}; "
    f"per sequence {tuple(test_visual_pairs.shape[1:])}"
)


# %% [markdown]
# **The model.** One GATED XATTN-DENSE block before each of the language model's two layers, as
# in Fig. 4 (Flamingo inserts them before every layer or every few layers; the paper's ablations
# weigh the cost against the accuracy). The blocks are `refimpl.torch.GatedXAttnDense` with
# $D_t = 48$, $D_v = 64$, $H = 4$ heads of width 16, $F = 2 D_t$, gates at 0. The mask is the same
# for every sequence, since every sequence has the same layout: `ex.media_mask`.


# %%
class FlamingoLM(nn.Module):
    """A frozen TinyLM with a GATED XATTN-DENSE block before each of its layers.

    forward(tokens (B, L), visual (B, Nv, Dv), mask (L, Nv) bool) -> logits (B, L, V).
    """

    def __init__(self, lm, dim_visual, heads=4, dim_head=16, ff_mult=2):
        super().__init__()
        self.lm = lm.requires_grad_(False)
        dim = lm.token_embed.embedding_dim
        self.xattn = nn.ModuleList(
            refimpl.torch.GatedXAttnDense(dim, dim_visual, heads=heads, dim_head=dim_head, ff_mult=ff_mult)
            for _ in lm.layers
        )

    def forward(self, tokens, visual, mask):
        hidden = self.lm.embed(tokens)  # (B, L, Dt)
        for xattn, layer in zip(self.xattn, self.lm.layers):
            hidden = layer(xattn(hidden, visual, mask))  # new, trained block; then the frozen layer
        return self.lm.unembed(hidden)  # (B, L, V)

    def gates(self):
        """tanh of every gate: [block 0 xattn, block 0 dense, block 1 xattn, ...]."""
        return [torch.tanh(gate).item() for block in self.xattn for gate in (block.attn_gate, block.ff_gate)]


layout_mask = torch.from_numpy(ex.media_mask(np.array(LAYOUT) == "<image>", 2, config.num_latents))  # (7, 2 R)
flamingo = FlamingoLM(lm, dim_visual=config.dim)
trainable = sum(p.numel() for p in flamingo.parameters() if p.requires_grad)
frozen = sum(p.numel() for p in flamingo.parameters() if not p.requires_grad)
print(f"frozen language model: {frozen} parameters; new gated blocks: {trainable} parameters")

with torch.no_grad():
    at_init = flamingo(test_tokens, test_visual_pairs, layout_mask)  # (256, 7, V)
lm_unchanged = torch.equal(at_init, text_logits)
print(f"gates at 0: the language model's logits, bit for bit unchanged: {lm_unchanged}")
with torch.no_grad():
    flamingo.xattn[0].attn_gate.fill_(0.1)  # open one gate a little ...
    nudged = not torch.equal(flamingo(test_tokens, test_visual_pairs, layout_mask), text_logits)
    flamingo.xattn[0].attn_gate.fill_(0.0)  # ... and close it again
print(f"with one gate at 0.1 they change: {nudged}")
assert lm_unchanged and nudged

# %% [markdown]
# ## 7. Training the gates open
#
# Only the new blocks train; the language model, its embeddings and head, and the vision side
# stay frozen. The loss is Flamingo's: the cross-entropy of every next token of the text, given
# the images (the answers are two of its six terms). 300 steps of AdamW with a one-cycle
# schedule (peak learning rate $3 \cdot 10^{-3}$), batches of 64 sequences made afresh from the
# training pool; every 20 steps we score the held-out answers, and at every step we record the
# four gates $\tanh(\alpha)$ and the answers' part of the loss.

# %%
STEPS, BATCH, EVAL_EVERY = 300, 64, 20


def optimiser_for(model, steps):
    """AdamW on the model's trainable parameters (the new blocks), with a one-cycle schedule peaking at 3e-3."""
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    return optimiser, torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps, pct_start=0.1)


def train_step(model, visual_pool, mask, rng, optimiser, schedule):
    """One step on BATCH fresh sequences of two training scenes each, reading visual_pool (scenes, Nv, D)
    through mask (7, 2 Nv). Returns (tokens (B, 7), logits (B, 7, V))."""
    pairs = rng.integers(0, len(visual_pool), (BATCH, 2))  # (B, 2) scenes
    tokens = make_sequences(train_scenes.labels, pairs, rng)  # (B, 7)
    logits = model(tokens, visual_pool[pairs].flatten(1, 2), mask)  # (B, 7, V)
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())  # every next token
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    schedule.step()
    return tokens, logits


train_rng = np.random.default_rng(5)
optimiser, schedule = optimiser_for(flamingo, STEPS)
answer_positions = torch.tensor(ANSWER_AT)
gate_history, loss_history, eval_steps, accuracy_history = [], [], [], []
for step in range(STEPS + 1):
    if step % EVAL_EVERY == 0:
        with torch.no_grad():
            eval_steps.append(step)
            accuracy_history.append(answer_accuracy(flamingo(test_tokens, test_visual_pairs, layout_mask)))
    if step == STEPS:
        break
    tokens, logits = train_step(flamingo, train_visual, layout_mask, train_rng, optimiser, schedule)
    gate_history.append(flamingo.gates())
    answer_loss = F.cross_entropy(logits[:, answer_positions].flatten(0, 1), tokens[:, answer_positions + 1].flatten())
    loss_history.append(answer_loss.item())
flamingo.eval()
gate_history, accuracy_history = np.array(gate_history), np.array(accuracy_history)  # (STEPS, 4), (evals, 2)
final = accuracy_history[-1]
print(
    f"the answers' cross-entropy: {np.mean(loss_history[:10]):.3f} (first 10 steps; a coin flip: ln 2 = 0.693) "
    f"-> {np.mean(loss_history[-10:]):.3f} (last 10)"
)
print("gates tanh(alpha) after training:", ", ".join(f"{g:+.3f}" for g in gate_history[-1]))
print(
    f"held-out answers right: first {final[0]:.1%}, second {final[1]:.1%} "
    f"(text only: {text_only[0]:.1%}, {text_only[1]:.1%})"
)

# %%
fig, (ax_gates, ax_accuracy) = plt.subplots(1, 2, figsize=(10, 3.6))
names = ["block 0, xattn", "block 0, dense", "block 1, xattn", "block 1, dense"]
for j, name in enumerate(names):
    ax_gates.plot(np.arange(1, STEPS + 1), gate_history[:, j], "-" if "xattn" in name else "--", label=name)
ax_gates.axhline(0, color="grey", lw=0.8)
ax_gates.set(xlabel="training step", ylabel=r"gate $\tanh(\alpha)$", title="The gates open from 0")
ax_gates.legend(fontsize=8)
ax_accuracy.plot(eval_steps, 100 * accuracy_history[:, 0], "o-", ms=3, label="first answer")
ax_accuracy.plot(eval_steps, 100 * accuracy_history[:, 1], "s-", ms=3, label="second answer")
ax_accuracy.axhline(100 * text_only.mean(), color="grey", ls=":", label="the language model alone (text only)")
ax_accuracy.set(
    xlabel="training step",
    ylabel="held-out answers right (%)",
    ylim=(40, 100),
    title="... and the text starts using the image",
)
ax_accuracy.legend(fontsize=8, loc="lower right")
fig.tight_layout()
plt.show()

# %% [markdown]
# At step 0 the model is the language model, exactly: half the answers right. The gates move
# from the first steps (they are what gets the gradient first, section 4; slowly while the
# learning rate warms up), each in its own direction (a negative gate is as open as a positive
# one: the branch's weights absorb the sign), and settle, in size, at about 0.1 to 0.3 as the
# learning rate anneals. The accuracy stays at the text-only level for the first few dozen
# steps, while the cross-attention finds which latents answer which question, then climbs to
# nearly every answer right, far above what text alone can do.

# %%
moved = np.abs(gate_history[-1])
print(
    f"every gate moved away from 0 (|tanh(alpha)| > 0.01): {bool((moved > 0.01).all())}; "
    f"attention gates {moved[0]:.2f}, {moved[2]:.2f}"
)
print(f"both answers beat the text-only model by more than 30 points: {bool((final > text_only + 0.3).all())}")
assert (moved > 0.01).all() and (moved[[0, 2]] > 0.03).all()
assert (final >= 0.85).all() and (final > text_only + 0.3).all()

# %% [markdown]
# ## 8. What the text reads
#
# **Does it use the image, and the right one?** Give each held-out sequence another sequence's
# second image (a shift by one along the batch): the second answer should fall back to a coin
# flip, and the first must not move at all, since no token up to the first answer may see the
# second image (section 3) and causal self-attention does not look ahead.
#
# And the language model's own predictions, the grammar it learned from text, must still be
# right. Here the training loss kept scoring them, as Flamingo's scores every token of the text;
# trained on the answers alone, nothing would stop the new blocks from spoiling them.

# %%
swapped_visual = test_visual[np.stack([test_pairs[:, 0], np.roll(test_pairs[:, 1], 1)], axis=1)].flatten(
    1, 2
)  # (256, 2 R, D)
with torch.no_grad():
    trained_logits = flamingo(test_tokens, test_visual_pairs, layout_mask)  # (256, 7, V)
    swapped_logits = flamingo(test_tokens, swapped_visual, layout_mask)
swapped = answer_accuracy(swapped_logits)
first_untouched = torch.equal(trained_logits[:, :4], swapped_logits[:, :4])  # tokens 0..3: <bos> .. first answer
print(f"second image swapped: second answers right {swapped[1]:.1%} (with its own image {final[1]:.1%})")
print(f"logits up to the first answer bit for bit unchanged: {first_untouched}")
print(f"the language model's grammar kept: {grammar_accuracy(trained_logits):.0%} of the predictable tokens right")
assert first_untouched and abs(swapped[1] - 0.5) < 0.12 and grammar_accuracy(trained_logits) == 1.0

# %% [markdown]
# **Where the text looks.** The first block's attention weights, averaged over its heads
# (recomputed from the block's own `attn` module with `return_weights`), for the held-out
# sequences; the picture shows the first one.

# %%
block0 = flamingo.xattn[0]
sees = layout_mask.any(dim=-1, keepdim=True)  # (L, 1)
with torch.no_grad():
    entering = flamingo.lm.embed(test_tokens)  # (256, L, Dt): what block 0 receives
    _, all_weights = block0.attn(
        block0.attn.norm(entering), test_visual_pairs, (layout_mask | ~sees)[None], return_weights=True
    )  # (256, H, L, 2 R)
all_weights = (
    all_weights.mean(dim=1) * sees
).numpy()  # (256, L, 2 R), the blind <bos> row zeroed as the block zeroes it
sample = 0
weights = all_weights[sample]  # (L, 2 R)

words = [VOCAB[t] for t in test_tokens[sample].tolist()]
fig, ax = plt.subplots(figsize=(7, 3.2))
viz.matrix(
    weights,
    ax=ax,
    xlabel=f"visual token (first image 0..{R - 1}, second {R}..{2 * R - 1})",
    ylabel="text token",
    title="Block 0's cross-attention, mean over heads",
)
ax.set_yticks(range(len(words)), words, fontsize=8)
ax.axvline(R - 0.5, color="white", lw=1)
plt.show()
largest = all_weights[:, ANSWER_AT].max(axis=-1).mean(axis=0)  # (2,): a question's largest weight, mean over sequences
print(
    f"a question's largest weight on one visual token, mean over the held-out sequences: {largest.round(2)} "
    f"(uniform over its image: 1/R = {1 / R:.3f})"
)
assert np.allclose(all_weights.sum(axis=-1), sees[:, 0].numpy()) and (all_weights[:, ~layout_mask.numpy()] == 0).all()
assert (largest > 2 / R).all()

# %% [markdown]
# The mask shapes the picture: the first question reads only the first image's 16 tokens, the
# second only the second's, and `<bos>` reads nothing. Within an image the weights are not
# uniform: a question's largest weight is on average about four times the uniform share $1/R$.
# Each question word has learned its own query, which picks out the latents that answer it.
# (This is block 0, whose queries are the words themselves; block 1 sees the same positions
# after the language model's first layer.)
#
# **Summary of the checks** (seeded, exact facts only; the trained numbers above vary a little
# with the CPU and its BLAS, so they are asserted against bars instead):

# %%
# NBVAL_CHECK_OUTPUT
print(
    f"block output (B, L, Dt): {ours.shape}; agrees with refimpl (<= 1e-12): {err <= 1e-12}; "
    f"torch twin too: {err_torch <= 1e-12}"
)
print(
    f"mask of the example (L, I*R): {example_mask.shape}; visible tokens per row: {example_mask.sum(axis=-1).tolist()}"
)
print(f"rows before an image unchanged when it changes: {unchanged}")
print(f"gates at 0 -> identity, bit for bit: NumPy {identity_numpy}, torch {identity_torch}, whole LM {lm_unchanged}")
print(f"gates at 0 -> only the gates get a gradient: {weights_zero and gates_nonzero}")
print(f"trained model: logits up to the first answer ignore the second image: {first_untouched}")
print(
    f"sequences: held out {tuple(test_tokens.shape)}, visual tokens per sequence {tuple(test_visual_pairs.shape[1:])}"
)

# %% [markdown]
# ## 9. The token budget: every patch, or R tokens
#
# Why put a resampler between the vision encoder and the language model at all? The blocks of
# section 6 could read the encoder's patch tokens directly: $N$ of them per image, one per
# $8 \times 8$ patch. Flamingo's reason is the language model's budget. Every text token
# cross-attends to the visual tokens, in every gated block, so what each text token costs, and
# the keys and values the model must keep while it writes, grow with the number of visual
# tokens, and so with the image. The resampler turns any image into $R$ tokens, and the language
# model's cost no longer depends on the image. This section measures both sides of that trade on
# our tiny model, for square images from 32 to 512 pixels a side ($N = 16$ to $4096$ patches):
# what a text token costs (counted, and timed), and how many answers come out right, reading
# every patch or the $R = 16$ resampled tokens.
#
# **The count.** One block's cross-attention, for $L$ text tokens reading $N_v$ visual tokens
# (in FLOPs, 2 per multiply-add, counting the matrix products only; the norms, the softmax and
# the gates are a small remainder):
#
# | product | FLOPs | paid |
# |---|---|---|
# | queries $\mathrm{LN}(y)\, W_q$ | $2 L D_t H D_h$ | per text token |
# | keys and values $x W_k$, $x W_v$ | $2 \cdot 2 N_v D_v H D_h$ | once per image, then kept |
# | scores $q k^\top$ | $2 L N_v H D_h$ | per text token |
# | weighted sum of the values | $2 L N_v H D_h$ | per text token |
# | output $W_o$ | $2 L H D_h D_t$ | per text token |
#
# While the model writes, an image's keys and values are computed once and kept: a cache of
# $2 N_v H D_h$ numbers per block. Each further text token then costs $4 H D_h (D_t + N_v)$
# FLOPs per block. Reading every patch, $N_v = N$ grows with the image's area; reading the
# resampler's output, $N_v = R$ does not. The two are equal exactly when $N = R$: here a
# $32 \times 32$ image, whose 16 patches are as many as the latents. (The resampler is not free
# either: it reads all $N$ patches, once per image, at a cost linear in $N$, notebook 2's
# $O(R \cdot N)$; but once per image, not once per text token and per block.)
#
# `refimpl.tiny.budget.XAttnCost` holds these formulas. **Check them** against PyTorch's own
# count, `torch.utils.flop_counter.FlopCounterMode`, which counts every matrix product it sees,
# on the cross-attention module of a block like ours. We run the module's explicit path
# (`return_weights=True`): the counter does not look inside the fused CPU kernel of
# `F.scaled_dot_product_attention`, and on that path it would miss the scores and the weighted
# sum. The bytes we check against the cached tensors themselves (float32).

# %%
from torch.utils.flop_counter import FlopCounterMode

from refimpl.tiny.budget import XAttnCost

SIZES = (32, 64, 128, 256, 512)  # pixels a side, square images
PATCHES = [(size // config.patch) ** 2 for size in SIZES]  # N = 16, 64, 256, 1024, 4096
R, BLOCKS = config.num_latents, len(flamingo.xattn)  # R = 16 tokens, read in each of the 2 gated blocks
cost = XAttnCost(dim=48, dim_visual=config.dim, heads=4, dim_head=16)  # the blocks of section 6


def counted_flops(fn, *args):
    """The FLOPs torch's counter sees while fn(*args) runs."""
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops()


attn = refimpl.torch.GatedXAttnDense(48, config.dim, heads=4, dim_head=16, ff_mult=2).attn  # a block's cross-attention
count_rng = torch.Generator().manual_seed(9)
print(f"{'Nv':>5} {'whole layer, L = 7':>19} {'one more text token':>20} {'key/value cache':>16}   (counted by torch)")
for visual_tokens in sorted({R, *PATCHES}):  # R = 16 is also the N of a 32 x 32 image
    text = torch.randn(1, 7, 48, generator=count_rng)  # (1, L, Dt)
    visual = torch.randn(1, visual_tokens, config.dim, generator=count_rng)  # (1, Nv, Dv)
    whole = counted_flops(attn, text, visual, None, True)  # projections and attention for L = 7
    keys, values = attn.wk(visual), attn.wv(visual)  # (1, Nv, H Dh) each: the cache
    one_more = counted_flops(lambda: attn.attend(attn.wq(text[:, -1:]), keys, values, None, True))  # L = 1, cache kept
    cache = keys.nbytes + values.nbytes
    print(f"{visual_tokens:>5} {whole:>19,} {one_more:>20,} {cache:>14,} B")
    assert whole == sum(cost.flops(7, visual_tokens).values())
    assert one_more == cost.flops_per_text_token(visual_tokens)
    assert cache == cost.kv_cache_bytes(visual_tokens, itemsize=4)
print("XAttnCost's formulas give exactly these numbers, at every Nv")

# %% [markdown]
# **The accuracy.** Two sets of gated blocks, trained alike, that differ only in what they read.
# Both start from the same initial weights (the same seed), in the same frozen language model,
# and see the same batches of section 7's training scenes ($64 \times 64$ pixels) with the same
# questions, optimiser and schedule (section 7's `train_step`). One reads each image's $N = 64$
# patch tokens from the shipped encoder; the other reads the $R = 16$ tokens that the shipped
# resampler makes of those same patch tokens. The resampler's output ends in a LayerNorm, so we
# normalise each patch token the same way (without a learned scale), and both arrive on the same
# footing. The run is 600 steps, twice section 7's, and every 100 steps we score section 5's
# held-out answers: the patch reader needs the longer run, as the scores show.

# %%
BUDGET_STEPS, CURVE_EVERY = 600, 100


def normalise(patches):
    """Patch tokens (..., N, D), each normalised over D (a LayerNorm without learned scale), as the
    resampler's output is."""
    return F.layer_norm(patches, patches.shape[-1:])


def visual_mask(visual_tokens):
    """The layout's mask (7, 2 Nv) for its two images of Nv visual tokens each."""
    return torch.from_numpy(ex.media_mask(np.array(LAYOUT) == "<image>", 2, visual_tokens))


def train_reader(train_pool, test_pool):
    """Fresh gated blocks trained BUDGET_STEPS steps reading train_pool (2048, Nv, D), the same initial
    weights and batches at every call. Returns the model and section 5's held-out accuracy (read from
    test_pool) every CURVE_EVERY steps."""
    torch.manual_seed(0)  # the same initial blocks for both readers: their shapes do not depend on Nv
    model = FlamingoLM(lm, dim_visual=config.dim)
    mask, test_pairs_visual = (
        visual_mask(train_pool.shape[1]),
        test_pool[test_pairs].flatten(1, 2),
    )  # (7, 2 Nv), (256, 2 Nv, D)
    rng, (optimiser, schedule) = np.random.default_rng(5), optimiser_for(model, BUDGET_STEPS)
    curve = []
    for step in range(BUDGET_STEPS + 1):
        if step % CURVE_EVERY == 0:
            with torch.no_grad():
                curve.append(answer_accuracy(model(test_tokens, test_pairs_visual, mask)).mean())
        if step < BUDGET_STEPS:
            train_step(model, train_pool, mask, rng, optimiser, schedule)
    return model.eval(), np.array(curve)


WAYS = {"patches": "every patch", "resampled": f"the R = {R} tokens"}
readers, curves = {}, {}
readers["patches"], curves["patches"] = train_reader(normalise(train_patches), normalise(test_patches))
readers["resampled"], curves["resampled"] = train_reader(train_visual, test_visual)
for way, curve in curves.items():
    print(
        f"reading {WAYS[way]:17}: 64 x 64 held-out answers right every {CURVE_EVERY} steps: "
        + " ".join(f"{a:.1%}" for a in curve)
    )

# %% [markdown]
# Then both readers answer questions at every size, on held-out scenes of that size: 64 scenes
# per size (32 pairs), each pair asked 6 sets of questions, 384 answers per size and reader.
# Only $64 \times 64$ was trained on; every other size tests whether what the blocks learned
# carries over to images with 4 times fewer, or up to 64 times more, patches. (Training at 512
# pixels, 4096 patches an image, would take minutes on a laptop; scoring there takes seconds.)

# %%
EVAL_SCENES, DRAWS = 64, 6


@torch.no_grad()
def answers_right(model, visual, labels, rng, chunk=32):
    """Fraction of the answers right, over DRAWS sets of questions on each pair of scenes (2i, 2i + 1).

    visual: (scenes, Nv, D) the tokens the model reads; labels: (scenes, 16) bool.
    """
    pairs = np.arange(len(labels)).reshape(-1, 2).repeat(DRAWS, axis=0)  # (P * DRAWS, 2)
    tokens = make_sequences(labels, pairs, rng)  # (P * DRAWS, 7)
    truth = tokens[:, [a + 1 for a in ANSWER_AT]] == YES  # (P * DRAWS, 2)
    mask = visual_mask(visual.shape[1])  # (7, 2 Nv)
    right = []
    for i in range(0, len(pairs), chunk):
        at = model(tokens[i : i + chunk], visual[pairs[i : i + chunk]].flatten(1, 2), mask)[:, ANSWER_AT]  # (b, 2, V)
        right.append((at[..., YES] > at[..., NO]) == truth[i : i + chunk])
    return torch.cat(right).float().mean().item()


accuracy = {way: [] for way in WAYS}
for k, size in enumerate(SIZES):
    scenes = make_scenes(EVAL_SCENES, size, size, seed=100 + k)  # seeds no other set uses
    patches, resampled = see(scenes.images, chunk=16)  # (64, N, D), (64, R, D)
    assert patches.shape[1] == PATCHES[k] and resampled.shape[1] == R
    for way, visual in (("patches", normalise(patches)), ("resampled", resampled)):
        accuracy[way].append(answers_right(readers[way], visual, scenes.labels, np.random.default_rng(7)))
    print(
        f"{size:>3} x {size:<3} (N = {PATCHES[k]:>4}): "
        f"answers right reading every patch {accuracy['patches'][-1]:.1%}, "
        f"the R = {R} tokens {accuracy['resampled'][-1]:.1%}"
    )
accuracy = {way: np.array(values) for way, values in accuracy.items()}


# %% [markdown]
# **The clock.** The count is the arithmetic; the clock is what this CPU makes of it. We time
# what the count counts for one more text token, and the norm before it: in both blocks, the norm
# and the query, the attention over the kept keys and values (through
# `F.scaled_dot_product_attention`), the output; for 16 sequences at once, each adding one token;
# the best of 15 runs, per text token, on one thread. Times depend on the machine and on what else
# runs on it: they are printed, never asserted.


# %%
@torch.no_grad()
def seconds_per_text_token(model, visual_tokens, sequences=16, number=10, repeats=15):
    """Best of `repeats` timings of all the model's cross-attentions for one more text token, the keys and values
    of Nv = visual_tokens random visual tokens kept; per text token."""
    visual = torch.randn(sequences, visual_tokens, config.dim)  # (S, Nv, D): what is read does not change the cost
    text = torch.randn(sequences, 1, 48)  # (S, 1, Dt): one new token per sequence
    caches = [(block.attn, block.attn.wk(visual), block.attn.wv(visual)) for block in model.xattn]  # (S, Nv, H Dh) each
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            for attn, keys, values in caches:
                attn.attend(attn.wq(attn.norm(text)), keys, values)
        best = min(best, (time.perf_counter() - start) / (number * sequences))
    return best


microseconds = {
    "patches": np.array([1e6 * seconds_per_text_token(readers["patches"], n) for n in PATCHES]),
    "resampled": np.array(
        [1e6 * seconds_per_text_token(readers["resampled"], R) for _ in PATCHES]
    ),  # the same work, 5 times
}
for k, size in enumerate(SIZES):
    print(
        f"{size:>3} x {size:<3} (N = {PATCHES[k]:>4}): "
        f"{microseconds['patches'][k]:7.1f} us per text token reading every patch, "
        f"{microseconds['resampled'][k]:5.1f} us reading R = {R}"
    )

# %% [markdown]
# **The budget, in one table and one figure.** FLOPs and bytes for the whole language model (its
# 2 gated blocks), per text token; the cache in float32; times from the cell above.

# %%
from IPython.display import Markdown

visual_tokens = {"patches": np.array(PATCHES), "resampled": np.full(len(SIZES), R)}  # Nv at each size
flops = {way: BLOCKS * np.array([cost.flops_per_text_token(int(n)) for n in nv]) for way, nv in visual_tokens.items()}
kv_bytes = {way: BLOCKS * np.array([cost.kv_cache_bytes(int(n)) for n in nv]) for way, nv in visual_tokens.items()}
columns = [
    "image",
    "N",
    "FLOPs per text token, every patch",
    f"FLOPs per text token, R = {R}",
    "K/V cache, every patch",
    f"K/V cache, R = {R}",
    "µs per text token, every patch",
    f"µs, R = {R}",
    "answers right, every patch",
    f"answers right, R = {R}",
]
table = [f"| {' | '.join(columns)} |", "|" + "---|" * len(columns)]
for k, size in enumerate(SIZES):
    table.append(
        f"| {size} x {size} | {PATCHES[k]:,} | {flops['patches'][k]:,} | {flops['resampled'][k]:,} | "
        f"{kv_bytes['patches'][k] / 1024:,.0f} KiB | {kv_bytes['resampled'][k] / 1024:,.0f} KiB | "
        f"{microseconds['patches'][k]:.1f} | {microseconds['resampled'][k]:.1f} | "
        f"{accuracy['patches'][k]:.1%} | {accuracy['resampled'][k]:.1%} |"
    )
Markdown("\n".join(table))

# %%
n_line = np.geomspace(8, 4096, 200)  # N between and around the measured sizes
fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
(ax_flops, ax_cache), (ax_time, ax_accuracy) = axes
curves_of = {
    ax_flops: ("FLOPs per text token", flops, lambda n: BLOCKS * 4 * cost.inner * (cost.dim + n)),
    ax_cache: (
        "key/value cache per image (KiB, float32)",
        {w: b / 1024 for w, b in kv_bytes.items()},
        lambda n: BLOCKS * 2 * n * cost.inner * 4 / 1024,
    ),
    ax_time: ("µs per text token (timed, this CPU)", microseconds, None),
    ax_accuracy: ("answers right (%)", {w: 100 * a for w, a in accuracy.items()}, None),
}
for ax, (ylabel, values, formula) in curves_of.items():
    for way, style in (("patches", "o-"), ("resampled", "s-")):
        ax.plot(PATCHES, values[way], style, ms=4, label=f"reading {WAYS[way]}")
    if formula is not None:  # the formula between the counted sizes, and the R tokens' level
        ax.plot(n_line, formula(n_line), color="C0", lw=0.8, alpha=0.5)
        ax.axhline(formula(R), color="C1", lw=0.8, alpha=0.5)
    ax.axvline(R, color="grey", ls=":", lw=1)  # N = R: where the two ways cost the same
    ax.set(xscale="log", xlim=(8, 6000), xlabel="N, patches per image (log scale)", ylabel=ylabel)
    ax.set_xticks(PATCHES, [f"{n}\n{s} px" for n, s in zip(PATCHES, SIZES)])
for ax in (ax_flops, ax_cache, ax_time):
    ax.set_yscale("log")
ax_flops.annotate(
    f"they cross at N = R = {R}\n(a 32 x 32 image)",
    (R, flops["resampled"][0]),
    xytext=(40, 2e5),
    arrowprops=dict(arrowstyle="->", color="grey"),
    fontsize=8,
)
ax_accuracy.axvspan(48, 85, color="grey", alpha=0.15, label="trained at 64 x 64")
ax_accuracy.set_ylim(85, 100)
ax_flops.set_title("What a text token costs the language model")
ax_accuracy.set_title("... and what it gets right")
for ax in axes.flat:
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %%
gap = accuracy["resampled"] - accuracy["patches"]  # (sizes,): how far the R tokens are ahead
at_64 = SIZES.index(64)  # the size both readers were trained on
print(
    f"reading the R = {R} tokens, at every size: {flops['resampled'][0]:,} FLOPs per text token, "
    f"a {kv_bytes['resampled'][0] // 1024} KiB key/value cache"
)
print(
    f"reading every patch: the same at 32 x 32 (N = R), then more at every size; at 512 x 512 "
    f"{flops['patches'][-1] / flops['resampled'][-1]:.1f}x the FLOPs, "
    f"{kv_bytes['patches'][-1] // kv_bytes['resampled'][-1]}x the cache, "
    f"{microseconds['patches'][-1] / microseconds['resampled'][-1]:.0f}x the time on this CPU"
)
print(
    "answers right, R tokens minus every patch, in points: "
    + ", ".join(f"{size} px {100 * g:+.1f}" for size, g in zip(SIZES, gap))
)
print(
    f"after 300 steps (section 7's run), 64 x 64: every patch {curves['patches'][3]:.1%}, "
    f"R tokens {curves['resampled'][3]:.1%}"
)
# the cost: exact, counted
assert (flops["resampled"] == flops["resampled"][0]).all() and (kv_bytes["resampled"] == kv_bytes["resampled"][0]).all()
assert (
    flops["patches"][0] == flops["resampled"][0] and kv_bytes["patches"][0] == kv_bytes["resampled"][0]
)  # they cross at N = R
assert (np.diff(flops["patches"]) > 0).all() and (np.diff(kv_bytes["patches"]) > 0).all()
assert flops["patches"][-1] * (cost.dim + R) == flops["resampled"][-1] * (cost.dim + 4096)  # (Dt + N) / (Dt + R)
assert kv_bytes["patches"][-1] == (4096 // R) * kv_bytes["resampled"][-1]  # N / R
# the accuracy, as measured, with room for another CPU's rounding (1 point is about 4 of the 384 answers)
assert (accuracy["resampled"] >= 0.95).all() and (accuracy["patches"] >= 0.88).all()
assert abs(gap[at_64]) <= 0.03  # at the trained size, within 3 points of each other
assert (
    gap >= -0.01
).all() and gap.max() >= 0.03  # away from it, every patch is nowhere better and somewhere well behind
assert curves["resampled"][3] - curves["patches"][3] >= 0.05  # and it learns more slowly

# %% [markdown]
# **What the budget shows.** The cost is a flat line and a steep one. Reading the $R = 16$
# tokens costs every text token the same 32,768 FLOPs and a 16 KiB cache at every size. Reading
# every patch costs the same at $32 \times 32$, where $N = R$ and the lines cross, and more at
# every larger size, in proportion to $D_t + N$ for the FLOPs and to $N$ for the cache: at
# $512 \times 512$, 65 times the FLOPs and 256 times the cache. The clock grows with the count,
# though not in step with it (at small $N$ launching each operation costs more than its
# arithmetic; the ratio printed above is this machine's, under its load at the time). Our tiny
# language model's $D_t = 48$ is small beside $N$, so its FLOPs grow almost as fast as $N$. In a
# wide language model ($D_t$ in the thousands) the query and output projections, $4 H D_h D_t$,
# are most of a text token's FLOPs, and the saving in FLOPs is smaller; the cache's is not: it
# stays $N / R$, and every text token reads the whole cache, in every gated block.
#
# The accuracy did not pay for the saving. At the size both readers were trained on, they come
# within about a point of each other (asserted: within 3). Away from it the patch reader does
# worse, by about 5 points at $32 \times 32$ and 4 at $512 \times 512$, while the resampled
# tokens stay at 96-99.5%; and it learns more slowly (after section 7's 300 steps it had 86% of
# the answers right, the R tokens 98%). Two things favour the R tokens here, and we say them
# plainly: the shipped resampler was trained (notebook 6) on these very 16 questions, at sizes
# from 32 to 128 pixels, so its 16 tokens arrive with the answers already gathered; and each
# gated block has one cross-attention with which to find a shape among $N$ patches, a search the
# resampler's two layers have already made. With a resampler trained only through the language
# model's loss, as in Flamingo, the accuracies could come out closer; the cost would not change.

# %%
# NBVAL_CHECK_OUTPUT
for k, size in enumerate(SIZES):
    print(
        f"{size:>3} x {size:<3} N = {PATCHES[k]:>4}: "
        f"per text token {flops['patches'][k]:>9,} FLOPs reading every patch, "
        f"{flops['resampled'][k]:,} reading R = {R}; "
        f"K/V cache {kv_bytes['patches'][k]:>9,} vs {kv_bytes['resampled'][k]:,} bytes"
    )

# %% [markdown]
# ## Summary
#
# **What you built.** Flamingo's GATED XATTN-DENSE block in NumPy, beside the paper's
# pseudo-code: a LayerNorm on the text, multi-head cross-attention from the text to the visual
# tokens, a pre-norm feed-forward, each branch added through a $\tanh(\alpha)$ gate; it agrees
# with `refimpl.gated_xattn_dense`, and `refimpl.torch.GatedXAttnDense` agrees with both. The
# per-image mask (Exercise 1) and the gradient at a gate (Exercise 2). A tiny GPT, pre-trained on
# text and frozen, with a gated block before each layer, reading the shipped resampler's $R = 16$
# tokens per image, trained for 300 steps. The token budget: the same blocks trained to read every
# patch token of the encoder instead, the cost of each way per text token counted (`XAttnCost`,
# checked against torch's FLOP counter) and timed, and the answers each way gets right at sizes
# from 32 to 512 pixels.
#
# **What to notice.**
# - With the gates at 0 the blocks change nothing, bit for bit: inserting them into a
#   pretrained language model starts training from exactly that model, not from a damaged one.
# - At 0 only the gates get a gradient; the weights behind them start learning once the gates
#   move. Training opened every gate, and the answers went from a coin flip (the best text can do
#   here) to nearly all right, while the language model's own predictions (its grammar) stayed
#   right and its weights never changed.
# - The mask is a one-line `cumsum`, and it is exact: what a text token's cross-attention
#   returns does not depend, even in the last bit, on any image but the last one before it.
#   Earlier images still reach the token through the language model's self-attention; later
#   ones never do (the trained model's first answer ignores the second image, bit for bit).
# - The token budget: reading the R tokens costs a text token the same at every image size;
#   reading every patch costs the same at $N = R$ (a $32 \times 32$ image) and grows with $N$ from
#   there, to 65 times the FLOPs and 256 times the key/value cache at $512 \times 512$. Here the R
#   tokens were also right as often or more at every size: within a point at the size both were
#   trained on, up to about 5 points ahead away from it.
#
# **Next.** Notebook 10 opens the backward pass: the gradient of attention derived by hand,
# step by step, checked against autograd, and the tiny model trained in NumPy alone.
