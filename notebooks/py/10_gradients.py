# %% [markdown]
# # 10. Gradients: the attention backward by hand, and training in NumPy
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/perceiver-resampler-course/perceiver-resampler-course/blob/v0.1.0/notebooks/10_gradients.ipynb)
#
# Runs on a laptop CPU in about 15 s (the very first run adds about 15 s, while Numba compiles
# refimpl's attention kernels once). After it you will be able to derive the backward pass
# of scaled dot-product attention one step at a time ($dV$, $dP$, the softmax's Jacobian and
# its shortcut $dS = P \odot (dP - \mathrm{rowsum}(dP \odot P))$, $dQ$, $dK$); check every
# gradient cell by cell against torch's autograd, Karpathy-style; explain why masked keys get
# exactly zero gradient and why a flash-attention backward needs only each row's softmax
# statistics; check a gradient with finite differences and choose their step; and train the
# tiny resampler model of notebook 6 in pure NumPy, with the loss matching torch's step for step.

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
import torch
import torch.nn.functional as F

import refimpl
import refimpl.grad
import refimpl.interop
import refimpl.torch as rt
from refimpl import viz
from refimpl.exercises import gradients as ex
from refimpl.scenes import make_scenes
from refimpl.threads import limit_blas_threads
from refimpl.tiny.grad import tiny_value_and_grad
from refimpl.tiny.model import TinyConfig, init_tiny_model, tiny_model, tiny_param_shapes
from refimpl.tiny.torch import TinyModel

rng = np.random.default_rng(0)
torch.manual_seed(0)
# One thread for torch and for NumPy's BLAS: this notebook's matrices are small, and on a busy CPU
# a second thread makes every product wait for a core that other work holds (section 5's NumPy
# training: 12.6 s with two OpenBLAS threads, 2.9 s with one; benchmarks/RESULTS.md)
torch.set_num_threads(1)
print(limit_blas_threads(1))

# float64 gradients against torch's autograd: the same math in another order
BOUND = refimpl.TOLERANCES["float64", "gradient vs torch autograd"]
print(f"bound for a float64 gradient against torch's autograd: {BOUND:g} (relative)")

# %% [markdown]
# ## 1. The forward pass, and what the backward needs from it
#
# Scaled dot-product attention of $M$ queries over $N$ keys (notebook 1), with
# $Q \in \mathbb{R}^{M \times D_h}$, $K \in \mathbb{R}^{N \times D_h}$, $V \in \mathbb{R}^{N \times D_v}$:
#
# $$S = c \, Q K^\top \in \mathbb{R}^{M \times N}, \qquad P = \mathrm{softmax}(S) \text{ (each row)}, \qquad
# O = P V \in \mathbb{R}^{M \times D_v}, \qquad c = D_h^{-1/2} .$$
#
# Attention is one piece of a bigger model, whose scalar loss $L$ depends on $O$. Back-propagation
# hands the piece the **upstream gradient** $dO = \partial L / \partial O$ (shape $(M, D_v)$) and asks
# for $dQ$, $dK$, $dV$. Here $dX$ always means $\partial L / \partial X$, shaped like $X$. To stand in
# for the rest of the model we take $L = \sum_{i,d} O_{id} \, G_{id}$ with a fixed random $G$, so that
# $dO = G$ exactly.
#
# Shapes are all different ($M = 5$, $N = 7$, $D_h = 4$, $D_v = 3$), so a wrong transpose fails
# loudly instead of hiding. The forward keeps $P$: the backward will need it.

# %%
M, N, Dh, Dv = 5, 7, 4, 3
q = rng.standard_normal((M, Dh))  # (M, Dh)
k = rng.standard_normal((N, Dh))  # (N, Dh)
v = rng.standard_normal((N, Dv))  # (N, Dv)
dout = rng.standard_normal((M, Dv))  # (M, Dv), G = dL/dO
scale = Dh**-0.5


def attention_forward(q, k, v, scale, mask=None):
    """out = softmax(q k^T * scale, masked) v, and the weights P the backward needs.

    q (M, Dh), k (N, Dh), v (N, Dv), mask bool (N,) or (M, N) or None -> out (M, Dv), P (M, N).
    """
    s = q @ k.T * scale  # (M, N)
    p = refimpl.softmax(s, mask=mask)  # (M, N), rows sum to 1
    return p @ v, p  # (M, Dv), (M, N)


out, p = attention_forward(q, k, v, scale)


# %% [markdown]
# **The referee.** The same forward in torch, in float64. `retain_grad()` asks autograd to keep
# the gradients of the intermediate $S$ and $P$ too, so that every step below can be checked on
# its own, not only the final $dQ$, $dK$, $dV$.
#
# `cmp(name, ours, reference)` prints one row per tensor, as in Karpathy's backprop exercise:
# *exact* (equal bit for bit), *close* (norm-relative error $\max|a - r| / \max|r|$ within the
# bound printed above) and *max diff* ($\max|a - r|$), and asserts *close*.


# %%
def cmp(name, ours, reference, bound=BOUND):
    """Print 'name | exact | close | max diff' for `ours` against `reference`; assert close.

    ours, reference: arrays or tensors of one shape. exact: equal bit for bit. close:
    refimpl.relative_error(ours, reference) = max|ours - reference| / max|reference| <= bound.
    """
    ours, reference = (np.asarray(a.detach() if torch.is_tensor(a) else a, dtype=np.float64) for a in (ours, reference))
    assert ours.shape == reference.shape, f"{name}: shape {ours.shape}, expected {reference.shape}"
    exact = bool(np.array_equal(ours, reference))
    error = refimpl.relative_error(ours, reference)
    print(
        f"{name:34} | exact: {exact!s:5} | close: {error <= bound!s:5} | max diff: {np.abs(ours - reference).max():.1e}"
    )
    assert error <= bound, f"{name}: relative error {error:.1e} > {bound:g}"


def torch_attention(q, k, v, dout, scale, mask=None):
    """Autograd's gradients of L = sum(O * dout): the leaves q, k, v and the intermediates s, p, out."""
    q_t, k_t, v_t = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    s_t = q_t @ k_t.T * scale  # (M, N)
    if mask is not None:
        s_t = s_t.masked_fill(~torch.as_tensor(mask), float("-inf"))
    s_t.retain_grad()
    p_t = s_t.softmax(dim=-1)  # (M, N)
    p_t.retain_grad()
    out_t = p_t @ v_t  # (M, Dv)
    (out_t * torch.as_tensor(dout)).sum().backward()
    return dict(q=q_t, k=k_t, v=v_t, s=s_t, p=p_t, out=out_t)


ref = torch_attention(q, k, v, dout, scale)
cmp("O (forward)", out, ref["out"])
cmp("P (forward)", p, ref["p"])


# %% [markdown]
# ## 2. The backward pass, one step at a time
#
# We walk the forward pass in reverse: $O = PV$, then $P = \mathrm{softmax}(S)$, then $S = c\,QK^\top$.
#
# **$dV$.** $O_{id} = \sum_j P_{ij} V_{jd}$, so $V_{jd}$ reaches the loss through every query $i$:
#
# $$dV_{jd} = \sum_i \frac{\partial L}{\partial O_{id}} \frac{\partial O_{id}}{\partial V_{jd}}
# = \sum_i dO_{id} \, P_{ij}
# \qquad\Longrightarrow\qquad dV = P^\top dO \quad (N, D_v).$$
#
# **$dP$.** The same product, differentiated in its other factor: $dP_{ij} = \sum_d dO_{id} V_{jd}$, so
# $dP = dO \, V^\top$ $(M, N)$. This is the rule for every matrix product $Y = AB$:
# $dA = dY\,B^\top$ and $dB = A^\top dY$, and the shapes alone say where the transposes go.


# %%
def grad_v(p, dout):
    """dV = P^T dO:   p (M, N), dout (M, Dv) -> (N, Dv)."""
    return p.T @ dout  # (N, Dv)


def grad_p(dout, v):
    """dP = dO V^T:   dout (M, Dv), v (N, Dv) -> (M, N)."""
    return dout @ v.T  # (M, N)


dv = grad_v(p, dout)
dp = grad_p(dout, v)
cmp("dV = P^T dO", dv, ref["v"].grad)
cmp("dP = dO V^T", dp, ref["p"].grad)


# %% [markdown]
# **The softmax.** Each row of $P$ depends on its own row of $S$ only, so take one row,
# $p = \mathrm{softmax}(s)$ with $p_j = e^{s_j} / \sum_l e^{s_l}$. Differentiating the quotient,
#
# $$\frac{\partial p_j}{\partial s_k} = p_j(\delta_{jk} - p_k), \qquad\text{i.e.}\qquad
# J = \frac{\partial p}{\partial s} = \mathrm{diag}(p) - p\,p^\top \quad (N \times N),$$
#
# a symmetric matrix. The chain rule sums over every $p_j$ that $s_k$ moves:
# $ds_k = \sum_j dp_j \, \partial p_j / \partial s_k$, that is $ds = J^\top dp = J\,dp$, one Jacobian per row.
# First the literal version: build all $M$ Jacobians, $(M, N, N)$, and multiply. We check one of them
# against torch's `autograd.functional.jacobian` of the softmax.


# %%
def softmax_jacobians(p):
    """The Jacobian of each row's softmax:   p (M, N) -> J (M, N, N), J[i] = diag(p_i) - p_i p_i^T."""
    return np.einsum("ij,jk->ijk", p, np.eye(p.shape[-1])) - np.einsum("ij,ik->ijk", p, p)  # (M, N, N)


def grad_s_by_jacobian(p, dp):
    """dS row by row as J^T dp:   p, dp (M, N) -> (M, N), through the (M, N, N) Jacobians."""
    return np.einsum("ijk,ij->ik", softmax_jacobians(p), dp)  # (M, N): ds_ik = sum_j dp_ij J_ijk


s = q @ k.T * scale  # (M, N), the forward's scores
jacobian_row0 = torch.autograd.functional.jacobian(lambda row: row.softmax(dim=-1), torch.tensor(s[0]))  # (N, N)
cmp("J of row 0 (diag(p) - p p^T)", softmax_jacobians(p)[0], jacobian_row0)
ds_jacobian = grad_s_by_jacobian(p, dp)
cmp("dS = J dP (full Jacobians)", ds_jacobian, ref["s"].grad)


# %% [markdown]
# **The shortcut.** Never build $J$. Multiply it out:
#
# $$(J\,dp)_k = \sum_j \big(p_k \delta_{jk} - p_j p_k\big)\,dp_j = p_k \, dp_k - p_k \sum_j p_j \, dp_j
# = p_k \big(dp_k - p \cdot dp\big),$$
#
# so for the whole matrix, with the dot product taken row by row,
#
# $$dS = P \odot \big(dP - \mathrm{rowsum}(dP \odot P)\big) .$$
#
# One number per row ($p \cdot dp$) replaces an $N \times N$ matrix per row: $O(MN)$ work and memory
# instead of $O(MN^2)$. Your turn.


# %%
def softmax_backward(p, dp):
    """dS from dP through a softmax over the last axis, without its Jacobian.

    p: the softmax weights (..., N) (0 where masked).   dp: dL/dp (..., N).
    returns ds (..., N) = p * (dp - rowsum(dp * p)), the row sum taken over the last axis.
    """
    # YOUR CODE HERE (about 2 lines)
    raise NotImplementedError


# %%
ex.check_softmax_backward(softmax_backward)

# %% [markdown]
# Stuck? `??ex.softmax_backward` shows a worked solution. From here on the notebook uses
# `ex.softmax_backward`, whatever your cell above holds.
#
# The shortcut against autograd and against the full Jacobians, and what the full Jacobians
# would cost for one head of the resampler reading a long video ($R = 64$ latents as queries,
# $N = 10{,}000$ media tokens as keys, float64):

# %%
ds = ex.softmax_backward(p, dp)
cmp("dS = P * (dP - rowsum(dP * P))", ds, ref["s"].grad)
cmp("dS: shortcut vs full Jacobians", ds, ds_jacobian)

jacobian_bytes, shortcut_bytes = 64 * 10_000**2 * 8, 64 * 10_000 * 8
print(f"R = 64, N = 10,000: Jacobians {jacobian_bytes / 1e9:.0f} GB, the shortcut's dS {shortcut_bytes / 1e6:.1f} MB")
assert jacobian_bytes // shortcut_bytes == 10_000  # N times more

# every row of dS sums to 0: the column sums of J are p - p (sum p) = 0
row_sums = ds.sum(axis=-1)  # (M,)
print(f"largest |row sum of dS| {np.abs(row_sums).max():.1e} (entries up to {np.abs(ds).max():.1e})")
assert np.abs(row_sums).max() <= 1e-13 * np.abs(ds).max()


# %% [markdown]
# The zero row sums say something true about the loss: adding one constant to a row of scores
# leaves that row's softmax unchanged, so the loss cannot change in that direction, and the
# gradient has no component along it.
#
# **$dQ$ and $dK$.** $S = c\,QK^\top$ is a matrix product scaled by $c$, so by the rule above
#
# $$dQ = c\,dS\,K \quad (M, D_h), \qquad dK = c\,dS^\top Q \quad (N, D_h).$$


# %%
def grad_q(ds, k, scale):
    """dQ = c dS K:   ds (M, N), k (N, Dh) -> (M, Dh)."""
    return ds @ k * scale  # (M, Dh)


def grad_k(ds, q, scale):
    """dK = c dS^T Q:   ds (M, N), q (M, Dh) -> (N, Dh)."""
    return ds.T @ q * scale  # (N, Dh)


dq, dk = grad_q(ds, k, scale), grad_k(ds, q, scale)
cmp("dQ = c dS K", dq, ref["q"].grad)
cmp("dK = c dS^T Q", dk, ref["k"].grad)

# %% [markdown]
# **Look.** The weights $P$, the gradient arriving at them $dP$, and the gradient leaving the
# softmax $dS$, for the same $M \times N$ grid (gradients on a red-blue scale centred at 0).

# %%
fig, axes = plt.subplots(1, 3, figsize=(10, 2.8))
viz.matrix(p, ax=axes[0], title="P = softmax(S)")
for ax, grid, title in ((axes[1], dp, "dP = dO V^T"), (axes[2], ds, "dS = P * (dP - rowsum(dP * P))")):
    limit = np.abs(grid).max()
    image = ax.imshow(grid, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
    ax.set(xlabel="key", ylabel="query", title=title)
    fig.colorbar(image, ax=ax, fraction=0.046)
fig.tight_layout()
plt.show()

# %% [markdown]
# **Notice.** $dS$ is $dP$ filtered by $P$: where a query pays little attention to a key, that
# score gets little gradient, however large $dP$ is there, and in each row the gradient is
# shared out around the row's weighted mean of $dP$, so it sums to zero. A key with weight
# exactly 0, a masked one, gets exactly nothing.
#
# **Masks.** A masked key has $P_{ij} = 0$ for every query, so $dS_{ij} = 0$, so its rows of
# $dK = c\,dS^\top Q$ and of $dV = P^\top dO$ are sums of exact zeros: the masked key (a padding
# token) gets gradient exactly 0, in any precision. $dP$ itself is *not* zero there: $dO\,V^\top$
# knows nothing of the mask; the softmax's backward multiplies it by $P = 0$. We mask keys 2 and 5.

# %%
key_mask = np.ones(N, dtype=bool)
key_mask[[2, 5]] = False  # (N,), True = may attend

out_m, p_m = attention_forward(q, k, v, scale, mask=key_mask)  # (M, Dv), (M, N)
dv_m, dp_m = grad_v(p_m, dout), grad_p(dout, v)  # (N, Dv), (M, N)
ds_m = ex.softmax_backward(p_m, dp_m)  # (M, N)
dq_m, dk_m = grad_q(ds_m, k, scale), grad_k(ds_m, q, scale)  # (M, Dh), (N, Dh)

ref_m = torch_attention(q, k, v, dout, scale, mask=key_mask)
for name, ours, theirs in (
    ("dQ, keys 2 and 5 masked", dq_m, ref_m["q"].grad),
    ("dK, keys 2 and 5 masked", dk_m, ref_m["k"].grad),
    ("dV, keys 2 and 5 masked", dv_m, ref_m["v"].grad),
):
    cmp(name, ours, theirs)

# %%
# NBVAL_CHECK_OUTPUT
print("shapes: dQ", dq_m.shape, " dK", dk_m.shape, " dV", dv_m.shape)
print("masked keys: dS exactly 0:", not ds_m[:, ~key_mask].any())
print("masked keys: dK and dV rows exactly 0:", not dk_m[~key_mask].any() and not dv_m[~key_mask].any())
print(
    "masked keys: torch's dK and dV rows exactly 0 too:",
    not ref_m["k"].grad[~key_mask].any() and not ref_m["v"].grad[~key_mask].any(),
)
print("masked keys: dP nonzero there:", bool(np.abs(dp_m[:, ~key_mask]).min() > 0))
assert not dk_m[~key_mask].any() and not dv_m[~key_mask].any()


# %% [markdown]
# **Exercise: the whole backward, batched.** Put the steps together into one function that
# works on any batch axes `...` (batch, heads), takes the scale, and a mask. `k.T` reverses
# *every* axis of a batched array: transpose the last two only.


# %%
def attention_backward(q, k, v, dout, scale, mask=None):
    """dq, dk, dv of out = softmax(q k^T * scale, masked) v, given dout = dL/dout.

    q (..., M, Dh), k (..., N, Dh), v (..., N, Dv), dout (..., M, Dv) with the same batch axes;
    mask: bool broadcastable to (..., M, N) (True = may attend), or None.
    returns dq (..., M, Dh), dk (..., N, Dh), dv (..., N, Dv):
        dv = P^T dout,  dp = dout V^T,  ds = P * (dp - rowsum(dp * P)),  dq = ds K * scale,  dk = ds^T Q * scale
    """
    # YOUR CODE HERE (about 7 lines)
    raise NotImplementedError


# %%
ex.check_attention_backward(attention_backward)

# %% [markdown]
# Stuck? `??ex.attention_backward` shows a worked solution; below we use `ex.attention_backward`.
#
# ## 3. Three more referees: refimpl.grad, the Numba kernel, finite differences
#
# Torch is one referee. Here are three more, on a batched, multi-head case: $B = 2$, $H = 3$ heads,
# $M = 5$ queries, $N = 300$ keys (more than the Numba kernel's block of 256 keys, so the
# backward crosses a block edge), $D_h = 4$, $D_v = 6$, and a padding mask that leaves batch entry
# 1 with 200 real keys.
#
# `refimpl.grad.attention_backward` is the course's reference backward (it sums the gradient of
# an input broadcast over batch axes; ours need not). With `backend="numba"` it runs the
# flash-style kernel of `refimpl/kernels_backward.py`, which never holds $P$: the forward kernel
# saved only $O$ and each row's max $m_i$ and sum $\ell_i$, and the backward recomputes
# $P_{ij} = e^{S_{ij} - m_i} / \ell_i$ one block of keys at a time. What of $\mathrm{rowsum}(dP \odot P)$,
# which needs a whole row? It is a $D_v$-term dot product in disguise:
#
# $$\sum_j P_{ij}\,dP_{ij} = \sum_j P_{ij}\,(dO_i \cdot V_j) = dO_i \cdot \sum_j P_{ij} V_j = dO_i \cdot O_i .$$
#
# Same math, other order of sums: the two backends agree to `TOLERANCES["float64", "numba vs numpy"]`.

# %%
cmp("rowsum(dP * P) = rowsum(dO * O)", (dp * p).sum(axis=-1), (dout * out).sum(axis=-1))

B, H, M2, N2 = 2, 3, 5, 300
qb, kb = rng.standard_normal((B, H, M2, Dh)), rng.standard_normal((B, H, N2, Dh))  # (B, H, M, Dh), (B, H, N, Dh)
vb, doutb = rng.standard_normal((B, H, N2, 6)), rng.standard_normal((B, H, M2, 6))  # (B, H, N, Dv), (B, H, M, Dv)
padding = np.arange(N2) < np.array([300, 200])[:, None, None, None]  # (B, 1, 1, N)

ours = ex.attention_backward(qb, kb, vb, doutb, Dh**-0.5, mask=padding)
numpy_grads = refimpl.grad.attention_backward(qb, kb, vb, doutb, mask=padding)
numba_grads = refimpl.grad.attention_backward(qb, kb, vb, doutb, mask=padding, backend="numba")
NUMBA_BOUND = refimpl.TOLERANCES["float64", "numba vs numpy"]
for name, a, b_numpy, b_numba in zip(("dQ", "dK", "dV"), ours, numpy_grads, numba_grads):
    cmp(f"{name}: ours vs refimpl.grad", a, b_numpy)
    cmp(f"{name}: Numba vs NumPy backend", b_numba, b_numpy, bound=NUMBA_BOUND)
assert not numba_grads[1][1, :, 200:].any() and not numba_grads[2][1, :, 200:].any()  # padding keys: exactly 0


# %% [markdown]
# **Finite differences** need no second implementation at all, only the forward. Move every
# input a little along a random direction $U = (U_Q, U_K, U_V)$; the loss changes at the rate
#
# $$\frac{L(X + hU) - L(X - hU)}{2h}
# = \langle dQ, U_Q \rangle + \langle dK, U_K \rangle + \langle dV, U_V \rangle + O(h^2),$$
#
# the central difference, whose error falls as $h^2$ while the step is large, and grows again as
# $\varepsilon / h$ ($\varepsilon \approx 10^{-16}$, float64's rounding of $L$) once it is tiny. The
# best step is in between, near $h \approx 10^{-5}$. We try three directions and a range of steps.


# %%
def loss_of(q, k, v, dout=doutb, mask=padding):
    """L = sum(O * dout) for the batched attention above."""
    return float(np.sum(refimpl.attention(q, k, v, mask=mask) * dout))


steps = np.logspace(-1, -10, 19)  # h from 0.1 down to 1e-10
errors = np.empty((3, len(steps)))  # (direction, step)
for direction in range(3):
    u = [rng.standard_normal(a.shape) for a in (qb, kb, vb)]  # U_Q, U_K, U_V
    analytic = sum(np.sum(g * ui) for g, ui in zip(ours, u))
    for i, h in enumerate(steps):
        plus = loss_of(*(a + h * ui for a, ui in zip((qb, kb, vb), u)))
        minus = loss_of(*(a - h * ui for a, ui in zip((qb, kb, vb), u)))
        errors[direction, i] = abs((plus - minus) / (2 * h) - analytic) / abs(analytic)

FD_BOUND = refimpl.TOLERANCES["float64", "gradient vs central finite differences"]
at_1e5 = errors[:, np.argmin(np.abs(steps - 1e-5))]
print(f"relative error at h = 1e-5, three directions: {', '.join(f'{e:.0e}' for e in at_1e5)} (bound {FD_BOUND:g})")
assert at_1e5.max() <= FD_BOUND
large = steps >= 1e-3  # truncation dominates: the error should fall as h^2
slope = np.polyfit(np.log10(steps[large]), np.log10(errors[:, large].mean(axis=0)), 1)[0]
print(f"slope of log(error) against log(h) for h >= 1e-3: {slope:.2f} (h^2 gives 2)")
assert 1.7 <= slope <= 2.3
at_1e10 = errors[:, np.argmin(np.abs(steps - 1e-10))]
print(f"relative error at h = 1e-10: {', '.join(f'{e:.0e}' for e in at_1e10)}: rounding has taken over")
assert at_1e10.mean() > 10 * at_1e5.mean()

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
for direction in range(3):
    ax.loglog(steps, np.maximum(errors[direction], 1e-17), "o-", ms=3, label=f"direction {direction + 1}")
anchor_h, anchor_error = steps[large][-1], errors[:, large][:, -1].mean()  # the smallest step with h >= 1e-3
shown = steps >= 1e-7
ax.loglog(steps[shown], anchor_error * (steps[shown] / anchor_h) ** 2, "k:", lw=1, label="slope 2 (truncation, h$^2$)")
ax.set(
    xlabel="step h",
    ylabel="relative error of the central difference",
    ylim=(1e-13, 1),
    title="Finite differences against the analytic gradient",
)
ax.invert_xaxis()
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# **Notice.** Read from the left, large steps first: the error falls as $h^2$ (the dotted line)
# until, below $h \approx 10^{-5}$, rounding takes over and it climbs back as $1/h$. At its best
# a finite difference agrees with the gradient to about $10^{-11}$ or $10^{-10}$, some ten
# thousand times worse than the float64 agreement with torch above. That makes it a fine
# independent check (a wrong formula is off by far more) and a poor way to compute gradients
# (two forward passes per direction, where one backward pass gives every direction at once).
#
# ## 4. The whole resampler against autograd
#
# The resampler's backward, `refimpl.grad`, is built from exactly these pieces: the attention
# backward per head, `refimpl.grad.layers` for the projections ($dA = dY B^\top$, $dB = A^\top dY$),
# the LayerNorms and the activation, and the residual rule (a sum $y = x + f(x)$ sends its gradient
# both ways). `value_and_grad(params, x, config, loss)` runs the forward once, calls `loss` on the
# latents for the value and $\partial L / \partial \text{latents}$, and returns every gradient. We use
# a mean squared error to a random target, on a small configuration with $T = 3$ frames of
# $S = 7$ tokens and a padding mask, and compare with torch's autograd through
# `refimpl.torch.PerceiverResampler`, one row per parameter, the final norm's first (roughly the
# order in which back-propagation reaches them).

# %%
config = refimpl.ResamplerConfig(dim=12, depth=1, heads=3, dim_head=5, num_latents=4, num_time_embeds=3)
params = refimpl.init_resampler(config, seed=0)
x = rng.standard_normal((2, 3, 7, 12))  # (B, T, S, D)
mask = np.ones((2, 3, 7), dtype=bool)  # (B, T, S), True = a real token
mask[1, :, 5:] = False  # entry 1: 5 real tokens per frame
target = rng.standard_normal((2, config.num_latents, 12))  # (B, R, D)

value, dx, dparams = refimpl.grad.value_and_grad(params, x, config, refimpl.grad.mean_squared_error(target), mask=mask)

module = rt.PerceiverResampler.from_refimpl(config, params)  # float64
x_t = torch.tensor(x, requires_grad=True)
loss_t = ((module(x_t, torch.as_tensor(mask)) - torch.as_tensor(target)) ** 2).mean()
loss_t.backward()
torch_grads = rt.from_state_dict({name: p.grad for name, p in module.named_parameters()})

cmp("loss", value, loss_t.item())
for name in reversed(list(params)):
    cmp(name, dparams[name], torch_grads[name])
cmp("x", dx, x_t.grad)
assert not dx[~mask].any()  # padding tokens: exactly 0

# %% [markdown]
# When you port a resampler, or want to trust someone else's, `refimpl.interop.compare_grads(module, x)`
# makes this table for you, for refimpl.torch's module and for the published ones it can import
# (open_flamingo, flamingo-pytorch, IDEFICS, Idefics2), in backward order, and names the first
# row that disagrees. To see it catch a bug, we plant one: a hook that makes the gradient of one
# feed-forward weight 1% too large, as a slightly wrong custom backward would.

# %%
buggy = rt.PerceiverResampler.from_refimpl(config, params)
dict(buggy.named_parameters())["layers.0.ff.w_in.weight"].register_hook(lambda grad: 1.01 * grad)
rows = refimpl.interop.compare_grads(buggy, x, mask=mask)
first = next(row for row in rows if row["relative"] > BOUND)
assert first["name"] == "layers.0.ff.w_in" and 0.005 < first["relative"] < 0.02


# %% [markdown]
# ## 5. Training the tiny model in pure NumPy
#
# Notebook 6's model answers 16 yes/no questions about a scene ("is there a red shape top
# left?"): an encoder MLP on each patch and its position, the resampler, and a linear head on the
# flattened latents,
#
# $$\text{tokens} = \mathrm{gelu}(X W_{in} + b_{in})\,W_{out} + b_{out}, \quad
# \text{latents} = \mathrm{resampler}(\text{tokens}), \quad z = \mathrm{flatten}(\text{latents})\,W_{head} + b_{head}
# \in \mathbb{R}^{B \times Q},$$
#
# trained on the mean binary cross-entropy over the $B \times Q$ answers $y \in \{0, 1\}$. For
# one logit, with $\sigma$ the sigmoid, $\log \sigma(z) = -\mathrm{softplus}(-z)$ and
# $\log(1 - \sigma(z)) = -\mathrm{softplus}(z)$, so
#
# $$\ell(z, y) = -\big[y \log \sigma(z) + (1 - y) \log(1 - \sigma(z))\big] = \mathrm{softplus}(z) - y\,z,
# \qquad \frac{d\ell}{dz} = \sigma(z) - y,$$
#
# using $\mathrm{softplus}(z) - \mathrm{softplus}(-z) = z$ and $\mathrm{softplus}'(z) = \sigma(z)$.
# The mean divides each term by $BQ$. Written with softplus, the loss never takes the log of a
# probability that has rounded to 0: a confident wrong answer costs a large finite number, not
# `inf`.


# %%
def bce_with_logits(logits, labels):
    """The mean binary cross-entropy of logits against 0/1 labels, and its gradient.

    logits: z (B, Q).   labels: y (B, Q), bool or 0/1.
    returns (loss, dlogits): mean(softplus(z) - y z) as a float, and (sigmoid(z) - y) / (B Q), (B, Q).
    Hint: np.logaddexp(0, z) = log(1 + exp(z)) = softplus(z), without overflow.
    """
    # YOUR CODE HERE (about 4 lines)
    raise NotImplementedError


# %%
ex.check_bce_with_logits(bce_with_logits)

# %% [markdown]
# Stuck? `??ex.bce_with_logits` shows a worked solution.
#
# The model's backward runs the chain in reverse, each piece by a function you have met:
#
# | piece | forward | backward |
# |---|---|---|
# | loss | $\mathrm{mean}(\mathrm{softplus}(z) - yz)$ | $dz = (\sigma(z) - y) / BQ$ |
# | head | $z = \mathrm{flatten}(\text{latents})\,W_{head} + b_{head}$ | `linear_backward`, $db_{head} = \sum_B dz$ |
# | resampler | `refimpl.perceiver_resampler` | `refimpl.grad.value_and_grad` |
# | encoder | $\mathrm{gelu}(XW_{in}+b_{in})\,W_{out}+b_{out}$ | `linear_backward`, `gelu_backward`, `linear_backward` |
#
# `refimpl.tiny.grad.tiny_value_and_grad(params, images, labels, config)` is that table in code
# (NumPy only), returning the loss and a gradient for every parameter. Its check against torch's
# autograd through `refimpl.tiny.torch.TinyModel`, in float64, on a batch of 8 scenes of
# $48 \times 64$ pixels ($6 \times 8 = 48$ patches each):

# %%
tiny_config = TinyConfig()  # notebook 6's model: D = 64, 2 layers, 4 heads, R = 16 latents, Q = 16
first_batch = make_scenes(8, 48, 64, seed=100)
tiny_params = init_tiny_model(tiny_config, seed=0)
loss, grads = tiny_value_and_grad(tiny_params, first_batch.images, first_batch.labels, tiny_config)

model = TinyModel.from_refimpl(tiny_config, tiny_params, dtype=torch.float64)
loss_t = F.binary_cross_entropy_with_logits(
    model(torch.as_tensor(first_batch.images, dtype=torch.float64)),
    torch.as_tensor(first_batch.labels, dtype=torch.float64),
)
loss_t.backward()
tiny_torch_grads = rt.from_state_dict({name: p.grad for name, p in model.named_parameters()})

cmp("loss", loss, loss_t.item())
for name in ("head.b_out", "head.w_out", "encoder.b_out", "encoder.w_out", "encoder.b_in", "encoder.w_in"):
    cmp(name, grads[name], tiny_torch_grads[name])
resampler_names = [name for name in grads if name.startswith("resampler.")]
worst = max(refimpl.relative_error(grads[name], tiny_torch_grads[name]) for name in resampler_names)
print(f"the {len(resampler_names)} resampler gradients: largest relative error {worst:.1e} (bound {BOUND:g})")
assert worst <= BOUND

# %% [markdown]
# **Training.** Ten steps of plain stochastic gradient descent, $\theta \leftarrow \theta - \eta\,d\theta$ with
# $\eta = 0.03$, each on a fresh batch of 8 scenes, from the same initial weights: once in NumPy
# with `tiny_value_and_grad`, once in torch (float64, `torch.optim.SGD`, autograd). The two runs
# do the same float64 arithmetic in different orders, so they can differ only by rounding,
# which each step passes on to the next: we ask that the losses agree to $10^{-10}$ relative at
# every step (the bound of float64 gradients against autograd), and the weights at the end too.

# %%
STEPS, BATCH, LR = 10, 8, 0.03
batches = [make_scenes(BATCH, 48, 64, seed=100 + step) for step in range(STEPS)]  # step 0 is first_batch

numpy_params = init_tiny_model(tiny_config, seed=0)
numpy_losses = []
for batch in batches:
    loss, grads = tiny_value_and_grad(numpy_params, batch.images, batch.labels, tiny_config)
    numpy_params = {name: value - LR * grads[name] for name, value in numpy_params.items()}  # SGD
    numpy_losses.append(loss)

model = TinyModel.from_refimpl(tiny_config, init_tiny_model(tiny_config, seed=0), dtype=torch.float64)
optimiser = torch.optim.SGD(model.parameters(), lr=LR)
torch_losses = []
for batch in batches:
    logits = model(torch.as_tensor(batch.images, dtype=torch.float64))  # (B, Q)
    loss = F.binary_cross_entropy_with_logits(logits, torch.as_tensor(batch.labels, dtype=torch.float64))
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    torch_losses.append(loss.item())

numpy_losses, torch_losses = np.array(numpy_losses), np.array(torch_losses)
differences = np.abs(numpy_losses - torch_losses) / torch_losses
print("step | NumPy loss          | torch loss          | relative difference")
for step in range(STEPS):
    print(f"{step:4} | {numpy_losses[step]:.16f} | {torch_losses[step]:.16f} | {differences[step]:.1e}")
assert differences.max() <= BOUND

trained = model.to_refimpl()
weights_error = max(refimpl.relative_error(numpy_params[name], trained[name]) for name in numpy_params)
print(f"weights after {STEPS} steps: largest relative difference {weights_error:.1e} (bound {BOUND:g})")
assert weights_error <= BOUND
print(f"loss: {numpy_losses[0]:.3f} at step 0, mean {numpy_losses[-5:].mean():.3f} over the last 5 steps")
assert numpy_losses[-5:].mean() < numpy_losses[0] - 0.1
held_out = make_scenes(32, 48, 64, seed=7)  # scenes no step saw
yes_share = held_out.labels.mean()
before, after = (
    1 / (1 + np.exp(-tiny_model(weights, held_out.images, tiny_config))) for weights in (tiny_params, numpy_params)
)
print(
    f"held-out scenes: 'yes' is {yes_share:.0%} of the answers; mean predicted probability of 'yes' "
    f"{before.mean():.2f} before training, {after.mean():.2f} after"
)
assert before.mean() > yes_share + 0.15 and abs(after.mean() - yes_share) < 0.08

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(numpy_losses, "o-", label="NumPy (refimpl.tiny.grad)")
ax.plot(torch_losses, "x--", ms=9, label="torch (autograd, SGD)")
ax.axhline(np.log(2), color="grey", lw=0.8, ls=":", label="guessing 50/50 (log 2)")
yes_rate = np.mean([batch.labels.mean() for batch in batches])  # the share of "yes" in the training batches
base_rate = -(yes_rate * np.log(yes_rate) + (1 - yes_rate) * np.log(1 - yes_rate))  # the loss of p(yes) = that share
ax.axhline(base_rate, color="grey", lw=1, ls="--", label=f"p(yes) = {yes_rate:.0%} for every question")
ax.set(xlabel="step", ylabel="mean binary cross-entropy", title=f"Training the tiny model: SGD, lr {LR}, batch {BATCH}")
ax.legend(fontsize=8)
plt.show()
print(
    f"base rate (the loss of answering p(yes) = {yes_rate:.0%} everywhere): {base_rate:.3f}; "
    f"the last 5 steps' mean loss: {numpy_losses[-5:].mean():.3f}"
)
assert abs(numpy_losses[-5:].mean() / base_rate - 1) < 0.1  # ten steps reach the base rate, not below it

# %%
# NBVAL_CHECK_OUTPUT
print(
    "parameters:",
    len(tiny_param_shapes(tiny_config)),
    "arrays,",
    sum(int(np.prod(shape)) for shape in tiny_param_shapes(tiny_config).values()),
    "numbers",
)
print(
    "gradients named and shaped like the parameters:",
    all(grads[name].shape == shape for name, shape in tiny_param_shapes(tiny_config).items()),
)
print("NumPy and torch losses agree at every step:", bool(differences.max() <= BOUND))
print("loss fell:", bool(numpy_losses[-5:].mean() < numpy_losses[0] - 0.1))

# %% [markdown]
# **Notice.** The two curves are one: NumPy and torch follow the same path through weight space
# to the last digits, because each step's gradient is the same number computed in another order.
# The loss falls fast at first, to the dashed line and no further: that is the loss of a model that
# knows only how often the answer is "yes" (the assert checks the last five steps are within 10% of
# it). It has learned how rare a "yes" is: on scenes it never saw,
# the model's mean probability of "yes" falls from about 0.4 to about the share of "yes" answers,
# 0.2. After that it falls more slowly, and the batches differ, so it is noisy. Notebook 6
# trains the same model for many more steps, with AdamW, until it answers almost every question
# right: the same gradients, more of them.
#
# ## Summary
#
# **What you built.** The backward pass of attention, one step at a time: $dV = P^\top dO$,
# $dP = dO\,V^\top$, the softmax's Jacobian $\mathrm{diag}(p) - p\,p^\top$ and its shortcut
# $dS = P \odot (dP - \mathrm{rowsum}(dP \odot P))$, $dQ = c\,dS\,K$, $dK = c\,dS^\top Q$; each checked
# against torch's autograd with `cmp`; then batched and masked, checked against `refimpl.grad`, the
# Numba kernel and finite differences; the resampler's gradients, parameter by parameter; the
# training loss's gradient, $(\sigma(z) - y) / BQ$; and ten steps of training in NumPy that match
# torch's step for step.
#
# **What to notice.**
# - The backward of a matrix product is two matrix products; the shapes say where the transposes go.
# - The softmax's backward needs one dot product per row, never the $N \times N$ Jacobian, and
#   that dot product is $dO_i \cdot O_i$: a flash-attention backward recomputes $P$ from each row's
#   max and sum and never stores it.
# - A masked key gets exactly zero gradient, because its weight is exactly zero.
# - Finite differences check a gradient to about $10^{-10}$ at best (step $\approx 10^{-5}$); two
#   implementations of the same float64 math agree to about $10^{-15}$.
#
# **Next.** Notebook 11 puts the published resamplers side by side and checks each against
# `refimpl`. `refimpl.grad` has the backward of every variant of the resampler (grouped-query
# attention, qk-norm, RMSNorm, SwiGLU, media embeddings, and the family's switches);
# `refimpl.interop.compare_grads` checks the gradients of a published resampler against it; and
# `benchmarks/cpu_attention_backward.py` times the Numba backward against torch's.
