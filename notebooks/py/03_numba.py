# %% [markdown]
# # 3. Numba and the online softmax
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/perceiver-resampler-course/perceiver-resampler-course/blob/v0.1.0/notebooks/03_numba.ipynb)
#
# Runs on a laptop CPU in about 30 s. After it you will be able to write attention as plain
# loops and compile them with Numba; tell a first call's compile time from the steady-state
# run time; derive the online (running-max) softmax, which reads the keys block by block and
# never holds the $(M, N)$ weights; run it in parallel over batch $\times$ heads; and measure
# what that buys in time and memory against NumPy and PyTorch.

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
# Set-up. `refimpl.kernels` holds the package's own Numba kernel (cached on disk, so it
# does not compile again in every session); importing it first also picks Numba's own
# thread pool for every parallel kernel in this process, ours included (Numba fixes its
# threading layer at the first parallel call).

# %%
import math
import time
import timeit
import tracemalloc

import matplotlib.pyplot as plt
import numba
import numpy as np
import torch
from numba import njit, prange

import refimpl
from refimpl import kernels, viz
from refimpl.exercises import online_softmax as ex

rng = np.random.default_rng(0)
BOUND = refimpl.TOLERANCES["float64", "same math in another order"]  # Python or NumPy, the same float64 sums reordered
NUMBA_BOUND = refimpl.TOLERANCES["float64", "numba vs numpy"]  # a Numba kernel against the NumPy path
print(
    f"Numba {numba.__version__} ({numba.get_num_threads()} threads), torch {torch.__version__} "
    f"({torch.get_num_threads()} threads); float64 bounds {BOUND:g}, Numba {NUMBA_BOUND:g}"
)


def median_ms(fn, repeats=5):
    """Median wall time of fn() in milliseconds, over `repeats` calls after one warm-up call."""
    fn()
    return 1e3 * float(np.median(timeit.repeat(fn, number=1, repeat=repeats)))


# %% [markdown]
# ## 1. Attention, one query row at a time
#
# Notebook 1 wrote attention as three matrix operations. Here is the same computation as
# the loops a CPU actually runs. For query row $i$ of $q$ $(M, D_h)$, with keys $k$
# $(N, D_h)$ and values $v$ $(N, D_v)$:
#
# $$s_{ij} = \text{scale}\; q_i \cdot k_j, \qquad m_i = \max_j s_{ij}, \qquad
# \ell_i = \sum_j e^{s_{ij} - m_i}, \qquad o_i = \sum_j \frac{e^{s_{ij} - m_i}}{\ell_i}\, v_j .$$
#
# That is four passes over the $N$ keys per row: the scores, their max, the exponentials
# and their sum, the weighted sum of values. The function below touches one number at a
# time; it uses nothing but indexing, arithmetic and `math.exp`.


# %%
def attention_loops(q, k, v, scale):
    """Scaled dot-product attention as explicit loops, one query row at a time.

    q: (M, Dh)   k: (N, Dh)   v: (N, Dv)   returns (M, Dv), float64
        o_i = sum_j exp(s_ij - m_i) v_j / sum_j exp(s_ij - m_i),   s_ij = scale q_i . k_j,   m_i = max_j s_ij
    """
    n_queries, head_dim = q.shape
    n_keys, value_dim = v.shape
    out = np.zeros((n_queries, value_dim))  # (M, Dv)
    scores = np.empty(n_keys)  # (N,) one row's scores, reused for every row
    for i in range(n_queries):
        for j in range(n_keys):  # pass 1: the scores
            dot = 0.0
            for t in range(head_dim):
                dot += q[i, t] * k[j, t]
            scores[j] = scale * dot
        row_max = scores[0]  # pass 2: their max
        for j in range(1, n_keys):
            row_max = max(row_max, scores[j])
        total = 0.0  # pass 3: exp(s - max), and the sum
        for j in range(n_keys):
            scores[j] = math.exp(scores[j] - row_max)
            total += scores[j]
        for j in range(n_keys):  # pass 4: the weighted sum of the values
            weight = scores[j] / total
            for t in range(value_dim):
                out[i, t] += weight * v[j, t]
    return out


# %% [markdown]
# Check it against `refimpl.attention` on a small non-square case ($M = 12$ queries,
# $N = 80$ keys, $D_h = 16$, $D_v = 24$), in float64. For attention the error is measured
# relative to $\max|v|$ (each output row is a weighted mean of rows of $v$; see
# `refimpl/tolerances.py`), and the bound is the table's entry for the same float64 math
# summed in another order. We also time this one call: it is plain Python.

# %%
q_small = rng.standard_normal((12, 16))  # (M, Dh)
k_small = rng.standard_normal((80, 16))  # (N, Dh)
v_small = rng.standard_normal((80, 24))  # (N, Dv)
scale_small = 16**-0.5

start = time.perf_counter()
out_python = attention_loops(q_small, k_small, v_small, scale_small)  # (M, Dv)
python_ms = 1e3 * (time.perf_counter() - start)

expected_small = refimpl.attention(q_small, k_small, v_small)  # (M, Dv), the NumPy reference
err_python = refimpl.relative_error(out_python, expected_small, scale=np.abs(v_small).max())
multiply_adds = 12 * 80 * (16 + 24)  # M N (Dh + Dv)
print(
    f"pure Python: {python_ms:.1f} ms for one call, {1e6 * python_ms / multiply_adds:.0f} ns per multiply-add; "
    f"max relative error {err_python:.1e} (bound {BOUND:g})"
)
assert out_python.shape == (12, 24)
assert err_python <= BOUND

# %% [markdown]
# That is $M N (D_h + D_v) = 38\,400$ multiply-adds, at a tenth of a microsecond or more
# each (printed below): every one is a run of interpreted bytecode that indexes NumPy
# arrays and boxes Python floats, where the machine needs a fraction of a nanosecond.
#
# ## 2. The same loops, compiled: `numba.njit`
#
# `numba.njit(f)` compiles `f` to machine code through LLVM. It does so at the **first
# call**: it reads the types of the arguments (here 2-D float64 arrays and a float), infers
# the type of every variable, compiles, and keeps the machine code for later calls with the
# same types. A call with other types (float32 arrays, say) compiles a second version.
#
# We leave out `cache=True` on purpose: it would write the machine code to disk and later
# sessions would skip the compile, which is exactly what we want to watch here.
# (`refimpl/kernels.py` uses `cache=True`, so `refimpl.attention(..., backend="numba")`
# starts fast; Numba stores a notebook's cached functions in IPython's cache folder instead
# of beside a source file.)

# %%
attention_loops_jit = njit(attention_loops)  # the same Python function, to be compiled at its first call

start = time.perf_counter()
out_jit = attention_loops_jit(q_small, k_small, v_small, scale_small)  # compiles, then runs
first_call_ms = 1e3 * (time.perf_counter() - start)
steady_ms = median_ms(lambda: attention_loops_jit(q_small, k_small, v_small, scale_small), repeats=50)
numpy_ms = median_ms(lambda: refimpl.attention(q_small, k_small, v_small), repeats=50)

err_jit = refimpl.relative_error(out_jit, expected_small, scale=np.abs(v_small).max())
print(f"compiled for: {attention_loops_jit.signatures}")
print(f"Numba first call (compile + run): {first_call_ms:8.1f} ms, {first_call_ms / steady_ms:.0f}x a later call")
print(f"Numba later calls (median of 50): {steady_ms:8.3f} ms, {python_ms / steady_ms:.0f}x faster than pure Python")
print(f"refimpl NumPy (median of 50):     {numpy_ms:8.3f} ms")
print(f"max relative error {err_jit:.1e} (bound {NUMBA_BOUND:g})")
assert err_jit <= NUMBA_BOUND
# The times are measurements, not checks: a busy machine moves them, so none is asserted.

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
labels = [
    "pure Python\n(one call)",
    "Numba, first call\n(compile + run)",
    "Numba, later calls\n(median)",
    "refimpl NumPy\n(median)",
]
times = [python_ms, first_call_ms, steady_ms, numpy_ms]
ax.barh(labels, times, color=["tab:gray", "tab:red", "tab:blue", "tab:green"])
for y, value in enumerate(times):
    ax.text(value * 1.15, y, f"{value:.3g} ms", va="center", fontsize=8)
ax.set(
    xscale="log",
    xlim=(min(times) / 2, max(times) * 20),
    xlabel="time (ms, log scale)",
    title="Attention loops, M = 12, N = 80, Dh = 16, Dv = 24 (float64)",
)
ax.invert_yaxis()
plt.show()


# %% [markdown]
# In the run committed here (a 2-core CPU that other jobs kept busy: these times are
# measurements, they move with the machine and its load, and none is asserted) the compile
# cost as much as about 65 pure-Python calls of this size; after it, the same loops ran
# about 1900 times faster than Python, and faster than NumPy on a case this small, where
# NumPy's fixed cost per call dominates (an earlier run: 57 calls, 660 times, 0.011 against
# 0.028 ms). The lesson for timing anything
# compiled: call it once before you start the clock, and report the median of several runs.
#
# ## 3. The online softmax
#
# The loops above keep a row of $N$ scores and pass over it four times; NumPy holds all
# $M \times N$ weights at once. For the resampler, $N$ is every visual token of a video:
# could one pass over the keys and values, keeping a few numbers per query row, do?
# The obstacle is the max: the stable softmax subtracts $m = \max_j s_j$, which is known
# only after the last key.
#
# The way out (Milakov and Gimelshein 2018, *Online normalizer calculation for softmax*,
# arXiv:1805.02867; the heart of FlashAttention, Dao et al. 2022, arXiv:2205.14135) is to
# keep the sums **relative to the max so far**, and correct them when the max moves. Walk
# the keys in blocks $J_1, J_2, \dots$; after block $t$ keep, for one query row,
#
# $$m^{(t)} = \max_{j \in J_{\le t}} s_j, \qquad
# \ell^{(t)} = \sum_{j \in J_{\le t}} e^{s_j - m^{(t)}}, \qquad
# a^{(t)} = \sum_{j \in J_{\le t}} e^{s_j - m^{(t)}}\, v_j \quad (D_v \text{ numbers}).$$
#
# A new block brings $m^{(t+1)} = \max\big(m^{(t)}, \max_{j \in J_{t+1}} s_j\big)$. Since
# $e^{s_j - m^{(t+1)}} = e^{s_j - m^{(t)}}\, e^{m^{(t)} - m^{(t+1)}}$, the old sum only needs
# one factor, $c = e^{m^{(t)} - m^{(t+1)}}$:
#
# $$\ell^{(t+1)} = c\,\ell^{(t)} + \sum_{j \in J_{t+1}} e^{s_j - m^{(t+1)}}, \qquad
# a^{(t+1)} = c\,a^{(t)} + \sum_{j \in J_{t+1}} e^{s_j - m^{(t+1)}}\, v_j .$$
#
# After the last block, $a / \ell = \sum_j e^{s_j - m} v_j \big/ \sum_j e^{s_j - m}$ is
# exactly the attention output: the same numbers as the two-pass softmax, summed in another
# order. Every exponent is $\le 0$, so nothing overflows; $c = 1$ when the block does not
# raise the max and $c < 1$ shrinks the old sums when it does. The start is the state of no
# keys at all: $m = -\infty$, $\ell = 0$, $a = 0$ (the first $c = e^{-\infty} = 0$).


# %%
def online_attention_row(q_row, k, v, scale, block, rescale=True):
    """One query row's attention, reading the keys `block` at a time (the online softmax).

    q_row: (Dh,)   k: (N, Dh)   v: (N, Dv)   returns out (Dv,) and a trace, one entry per block:
    "m", "l" (the state after the block), "block max", "c l" (the old sum, rescaled). Per block of scores s:
        m_new = max(m, max_j s_j),   c = exp(m - m_new),
        l = c l + sum_j exp(s_j - m_new),   acc = c acc + sum_j exp(s_j - m_new) v_j
    and out = acc / l. rescale=False drops the factor c (to see why it is needed).
    """
    m, l, acc = -np.inf, 0.0, np.zeros(v.shape[1])  # the state of no keys: (), (), (Dv,)
    trace = {"m": [], "l": [], "block max": [], "c l": []}
    for j0 in range(0, k.shape[0], block):
        s = k[j0 : j0 + block] @ q_row * scale  # (b,) this block's scores, b <= block
        m_new = max(m, s.max())
        c = np.exp(m - m_new) if rescale else 1.0  # 1 if the max did not move, 0 on the first block
        p = np.exp(s - m_new)  # (b,) every entry <= 1
        trace["c l"].append(c * l)
        l = c * l + p.sum()
        acc = c * acc + p @ v[j0 : j0 + block]  # (Dv,)
        m = m_new
        for name, value in (("m", m), ("l", l), ("block max", s.max())):
            trace[name].append(value)
    return acc / l, {name: np.array(values) for name, values in trace.items()}


# %% [markdown]
# A case where the max keeps moving: $N = 200$ keys whose size grows from first to last
# (so later keys tend to score higher), read in blocks of 16, the last block holding only 8.
# Check every row against `refimpl.attention`, then run the same rows without the rescale.

# %%
M_ROW, N_ROW, DH_ROW, DV_ROW, BLOCK_ROW = 12, 200, 16, 24, 16
q_rows = rng.standard_normal((M_ROW, DH_ROW))  # (M, Dh)
k_rows = rng.standard_normal((N_ROW, DH_ROW)) * np.linspace(0.5, 2.5, N_ROW)[:, None]  # (N, Dh), growing
v_rows = rng.standard_normal((N_ROW, DV_ROW))  # (N, Dv)
scale_rows = DH_ROW**-0.5

rows = [online_attention_row(q_i, k_rows, v_rows, scale_rows, BLOCK_ROW) for q_i in q_rows]
out_online = np.stack([out for out, _ in rows])  # (M, Dv)
out_no_rescale = np.stack(
    [online_attention_row(q_i, k_rows, v_rows, scale_rows, BLOCK_ROW, rescale=False)[0] for q_i in q_rows]
)  # (M, Dv)

expected_rows, weights_rows = refimpl.attention(q_rows, k_rows, v_rows, return_weights=True)  # (M, Dv), (M, N)
err_online = refimpl.relative_error(out_online, expected_rows, scale=np.abs(v_rows).max())
err_no_rescale = refimpl.relative_error(out_no_rescale, expected_rows, scale=np.abs(v_rows).max())
n_blocks_row = len(rows[0][1]["m"])
print(f"{n_blocks_row} blocks of {BLOCK_ROW} keys; score range {np.ptp(q_rows @ k_rows.T * scale_rows):.0f}")
print(f"online softmax:        max relative error {err_online:.1e} (bound {BOUND:g})")
print(f"without the rescale c: max relative error {err_no_rescale:.1e}")
assert n_blocks_row == math.ceil(N_ROW / BLOCK_ROW) == 13
assert err_online <= BOUND
assert err_no_rescale > 1e-2, "dropping the rescale should be visibly wrong here"

# %% [markdown]
# The online softmax agrees to rounding; without $c$, the blocks read before the max rose
# keep weights that are too large by $e^{m_\text{old} - m_\text{new}}$, and the answer is
# far off. Here is the state of the row whose max rose most often, block by block,
# next to the full weights matrix that the online softmax never forms.

# %%
raises = [int(np.sum(np.diff(trace["m"]) > 0)) for _, trace in rows]  # how often each row's max rose
row = int(np.argmax(raises))
trace = rows[row][1]
blocks = np.arange(n_blocks_row)

fig, axes = plt.subplots(1, 3, figsize=(14, 3.6), gridspec_kw={"width_ratios": [1, 1, 1.4]})
axes[0].plot(blocks, trace["block max"], "o", color="tab:gray", label="max of the block")
axes[0].step(blocks, trace["m"], where="post", color="tab:red", label="running max $m$")
axes[0].set(xlabel="key block", ylabel="score", title=f"query row {row}: the running max")
axes[0].legend(fontsize=8)
path_x = np.repeat(blocks, 2)[1:]  # 0, 1, 1, 2, 2, ...: at each block, first the rescale, then the new terms
path_l = np.ravel(np.column_stack([trace["c l"], trace["l"]]))[1:]
axes[1].plot(path_x, path_l, color="tab:gray", linewidth=0.8)
rose = np.flatnonzero(np.diff(trace["m"]) > 0) + 1  # blocks that raised the max
axes[1].plot(rose, trace["c l"][rose], "v", color="tab:red", label=r"old $\ell$ rescaled: $c\,\ell$")
axes[1].plot(blocks, trace["l"], "s", color="tab:blue", label=r"$\ell$ after the block")
axes[1].set(xlabel="key block", ylabel=r"$\ell = \sum_j e^{s_j - m}$", title=r"the running sum $\ell$")
axes[1].legend(fontsize=8)
viz.matrix(weights_rows, ax=axes[2], title=f"weights (M, N) = {weights_rows.shape}; blocks of {BLOCK_ROW}")
for t in range(BLOCK_ROW, N_ROW, BLOCK_ROW):
    axes[2].axvline(t - 0.5, color="white", linewidth=0.6)
axes[2].axhline(row, color="tab:red", linewidth=0.8, label=f"query row {row}, the left panels' row")
axes[2].legend(fontsize=8, loc="lower left")
fig.tight_layout()
plt.show()
late_mass = weights_rows[:, N_ROW // 2 :].sum(axis=-1).mean()  # mean weight on the second half of the keys
stayed = np.setdiff1d(blocks[1:], rose)  # blocks that did not raise the max
print(
    f"row {row}: the max rose in {len(rose)} of the {n_blocks_row - 1} blocks after the first; "
    f"weight on the second half of the keys, mean over rows: {late_mass:.2f}"
)
assert np.all(np.diff(trace["m"]) >= 0), "a running max never falls"
assert np.all(trace["c l"][rose] < trace["l"][rose - 1]), "a rise of the max shrinks the old sum"
assert np.all(trace["l"][stayed] > trace["l"][stayed - 1]), "without a rise, the sum only grows"
assert late_mass > 0.6, "most of the weight should sit on the later, larger keys"


# %% [markdown]
# Notice: $m$ is a staircase that only rises. Whenever it does, $\ell$ first shrinks by
# $c = e^{m_\text{old} - m_\text{new}}$ (red) before the new block's terms are added;
# where the max stays put, $c = 1$ and $\ell$ only grows. On the right, three quarters of
# the weight sits on the later, larger keys: the online softmax found them one block at a
# time, holding $m$, $\ell$ and a $D_v$-vector per row instead of this whole matrix.
#
# ### Exercise 1: merge two partial states
#
# The update above merges "the keys so far" with "one more block". The same algebra merges
# **any** two disjoint sets of keys, each summarised by its own $(m, \ell, a)$: bring both
# to the common max, then add. This is what lets a kernel split one long row of keys
# across threads and combine their results at the end (useful when there are few queries,
# like the resampler's 64 latents, and very many keys).


# %%
def merge_partials(m1, l1, acc1, m2, l2, acc2):
    """Combine the online-softmax states of two disjoint sets of keys into the state of their union.

    m1, l1, m2, l2: (...,)   acc1, acc2: (..., Dv)   returns (m, l, acc) of the same shapes, where
    m = max of all scores, l = sum exp(s - m), acc = sum exp(s - m) v over both sets.
    An empty set of keys has m = -inf, l = 0, acc = 0.
    """
    # YOUR CODE HERE (about 5 lines: the common max, then rescale each side to it and add)
    raise NotImplementedError


# %%
ex.check_merge_partials(merge_partials)


# %% [markdown]
# Stuck? `??ex.merge_partials` shows a worked solution.
#
# ### Exercise 2: all query rows at once
#
# `online_attention_row` handles one query. A kernel reads a block of keys once and
# updates **every** query row with it: $m$ and $\ell$ become $(\dots, M)$ arrays, $a$ an
# $(\dots, M, D_v)$ array, and the block's scores an $(\dots, M, b)$ matrix. Write it in
# NumPy, for any leading batch axes. The check uses scores that span a thousand units, so
# a version that does not keep the max up to date overflows.


# %%
def online_softmax_attention(q, k, v, block):
    """Scaled dot-product attention that reads the keys `block` at a time and never forms (M, N).

    q: (..., M, Dh)   k: (..., N, Dh)   v: (..., N, Dv)   block: keys per block (>= 1)
    returns (..., M, Dv) = softmax(q k^T / sqrt(Dh)) v, via m, l (..., M) and acc (..., M, Dv)
    updated block by block as in online_attention_row, for all rows at once.
    """
    # YOUR CODE HERE (about 12 lines)
    raise NotImplementedError


# %%
ex.check_online_softmax_attention(online_softmax_attention)


# %% [markdown]
# Stuck? `??ex.online_softmax_attention` shows a worked solution.
#
# ## 4. The online softmax in Numba, in parallel over batch $\times$ heads
#
# Now the kernel. Multi-head attention is $B \cdot H$ independent attention problems, so
# the leading axes are flattened into one, and `numba.prange` (with `parallel=True`)
# hands its iterations to the threads. Each iteration owns its state: $m, \ell$ $(M,)$,
# $a$ $(M, D_v)$, and the scores of one row in one block $(\text{block},)$; nothing in it
# grows with $N$. The key blocks are the outer loop and the query rows the inner one, so a
# block of keys (256 x 64 floats, 64 KiB in float32) stays in cache while all $M$ rows use it.
#
# `fastmath={"reassoc", "contract"}` lets the compiler reorder the sum over $D_h$ into SIMD
# lanes and fuse multiply-adds; we do not allow it to assume there are no infinities
# (`ninf`), since $m$ starts at $-\infty$.


# %%
@njit(parallel=True, fastmath={"reassoc", "contract"})
def online_attention_kernel(q, k, v, scale, block, out):
    """Blocked online-softmax attention, in parallel over the flattened batch axis; writes `out`.

    q: (B, M, Dh)   k: (B, N, Dh)   v: (B, N, Dv)   scale: a number of q's dtype   out: (B, M, Dv)
    For each b in parallel, for each block of keys, for each query row i (s_j = scale q_i . k_j):
        m_new = max(m_i, max_j s_j),   c = exp(m_i - m_new)
        l_i = c l_i + sum_j exp(s_j - m_new),   acc_i = c acc_i + sum_j exp(s_j - m_new) v_j
    and finally out_i = acc_i / l_i.
    """
    n_batch, n_queries, head_dim = q.shape
    n_keys, value_dim = v.shape[1], v.shape[2]
    zero = scale * 0  # 0 in q's dtype, so that float32 inputs are computed in float32
    for b in prange(n_batch):  # batch x heads, split across the threads
        m = np.full(n_queries, -np.inf, dtype=q.dtype)  # (M,) running max
        l = np.zeros(n_queries, dtype=q.dtype)  # (M,) running sum of exp(s - m)
        acc = np.zeros((n_queries, value_dim), dtype=q.dtype)  # (M, Dv) running sum of exp(s - m) v
        s = np.empty(block, dtype=q.dtype)  # (block,) one row's scores in the current block
        for j0 in range(0, n_keys, block):
            j1 = min(j0 + block, n_keys)
            for i in range(n_queries):
                m_new = m[i]
                for j in range(j0, j1):  # this block's scores, and the new max
                    dot = zero
                    for t in range(head_dim):
                        dot += q[b, i, t] * k[b, j, t]
                    s[j - j0] = scale * dot
                    m_new = max(m_new, s[j - j0])
                c = math.exp(m[i] - m_new)  # the rescale: 1 if the max did not move, 0 on the first block
                l[i] *= c
                for t in range(value_dim):
                    acc[i, t] *= c
                for j in range(j0, j1):  # add the block's terms
                    p = math.exp(s[j - j0] - m_new)
                    l[i] += p
                    for t in range(value_dim):
                        acc[i, t] += p * v[b, j, t]
                m[i] = m_new
        for i in range(n_queries):
            for t in range(value_dim):
                out[b, i, t] = acc[i, t] / l[i]


def online_attention(q, k, v, block=256):
    """q: (..., M, Dh), k: (..., N, Dh), v: (..., N, Dv), the same batch axes -> (..., M, Dv), in q's dtype.

    Flattens the batch axes, runs online_attention_kernel with scale = Dh ** -0.5, and restores them.
    """
    *batch, n_queries, head_dim = q.shape
    q_flat = np.ascontiguousarray(q).reshape(-1, n_queries, head_dim)  # (B*H, M, Dh)
    k_flat = np.ascontiguousarray(k).reshape(-1, *k.shape[-2:])  # (B*H, N, Dh)
    v_flat = np.ascontiguousarray(v).reshape(-1, *v.shape[-2:])  # (B*H, N, Dv)
    out = np.empty((q_flat.shape[0], n_queries, v.shape[-1]), dtype=q.dtype)  # (B*H, M, Dv)
    online_attention_kernel(q_flat, k_flat, v_flat, q.dtype.type(head_dim**-0.5), block, out)
    return out.reshape(*batch, n_queries, v.shape[-1])  # (..., M, Dv)


# %% [markdown]
# Check it in float64 on a non-square multi-head case ($B = 2$, $H = 3$, $M = 64$ latents,
# $N = 1000$ keys, so the last of four blocks is partial, $D_h = 24$, $D_v = 40$), against
# the NumPy reference and against refimpl's own Numba kernel (`backend="numba"`, the same
# algorithm with the memory-layout tricks described in `refimpl/kernels.py`), and for a
# few block sizes. The first call compiles.

# %%
q_heads = rng.standard_normal((2, 3, 64, 24))  # (B, H, R, Dh)
k_heads = rng.standard_normal((2, 3, 1000, 24)) * np.linspace(0.5, 3.0, 1000)[:, None]  # (B, H, N, Dh)
v_heads = rng.standard_normal((2, 3, 1000, 40))  # (B, H, N, Dv)
v_scale = np.abs(v_heads).max()

start = time.perf_counter()
out_heads = online_attention(q_heads, k_heads, v_heads)  # (B, H, R, Dv); compiles for float64
compile_parallel_s = time.perf_counter() - start
expected_heads = refimpl.attention(q_heads, k_heads, v_heads)  # (B, H, R, Dv), NumPy
refimpl_kernel_heads = refimpl.attention(q_heads, k_heads, v_heads, backend="numba")  # (B, H, R, Dv)

err_heads = refimpl.relative_error(out_heads, expected_heads, scale=v_scale)
err_refimpl_kernel = refimpl.relative_error(refimpl_kernel_heads, expected_heads, scale=v_scale)
err_vs_kernel = refimpl.relative_error(out_heads, refimpl_kernel_heads, scale=v_scale)
err_blocks = {
    size: refimpl.relative_error(online_attention(q_heads, k_heads, v_heads, block=size), expected_heads, scale=v_scale)
    for size in (1, 7, 1000)
}
print(f"first call (compile + run): {compile_parallel_s:.1f} s")
print(f"ours vs NumPy:                {err_heads:.1e} (bound {NUMBA_BOUND:g})")
print(f"refimpl's kernel vs NumPy:    {err_refimpl_kernel:.1e}")
print(f"ours vs refimpl's kernel:     {err_vs_kernel:.1e}")
print("other block sizes vs NumPy:   " + ", ".join(f"block {size}: {e:.1e}" for size, e in err_blocks.items()))
assert out_heads.shape == (2, 3, 64, 40)
assert max(err_heads, err_refimpl_kernel, err_vs_kernel, *err_blocks.values()) <= NUMBA_BOUND

# %% [markdown]
# ## 5. Time: NumPy, PyTorch and two Numba kernels
#
# The resampler's shape: $M = 64$ latents reading $N$ media tokens, $H = 8$ heads of
# $D_h = 64$, in float32, for $N$ from 1024 (one large image) to 16384 (a short video).
# Four implementations of the same attention:
#
# - **NumPy**: `refimpl.attention(..., dtype=np.float32)`, which forms the $(H, M, N)$ scores and weights;
# - **torch**: `torch.nn.functional.scaled_dot_product_attention`, with torch's default threads;
# - **Numba, ours**: `online_attention` above (a float32 call compiles a second version first);
# - **Numba, refimpl**: `refimpl.attention(..., backend="numba", dtype=np.float32)`.
#
# First each is checked against the float64 reference, within the table's float32 bound.

# %%
H, M, DH = 8, 64, 64
KEY_COUNTS = [1024, 4096, 16384]
BOUND32 = refimpl.TOLERANCES["float32", "vs float64 reference"]

start = time.perf_counter()
online_attention(np.ones((1, 4, 8), np.float32), np.ones((1, 5, 8), np.float32), np.ones((1, 5, 8), np.float32))
print(f"our kernel's float32 version: compiled in {time.perf_counter() - start:.1f} s")


def implementations(q, k, v):
    """name -> a no-argument function computing attention of float32 q (H, M, Dh), k, v (H, N, Dh)."""
    tq, tk, tv = (torch.from_numpy(a) for a in (q, k, v))
    return {
        "NumPy": lambda: refimpl.attention(q, k, v, dtype=np.float32),
        "torch SDPA": lambda: torch.nn.functional.scaled_dot_product_attention(tq, tk, tv).numpy(),
        "Numba, ours": lambda: online_attention(q, k, v),
        "Numba, refimpl": lambda: refimpl.attention(q, k, v, backend="numba", dtype=np.float32),
    }


inputs = {}
errors32 = {}
for n_keys in KEY_COUNTS:
    q = rng.standard_normal((H, M, DH)).astype(np.float32)  # (H, M, Dh)
    k = rng.standard_normal((H, n_keys, DH)).astype(np.float32)  # (H, N, Dh)
    v = rng.standard_normal((H, n_keys, DH)).astype(np.float32)  # (H, N, Dv)
    inputs[n_keys] = (q, k, v)
    expected = refimpl.attention(q, k, v)  # (H, M, Dv), float64
    for name, fn in implementations(q, k, v).items():
        errors32[n_keys, name] = refimpl.relative_error(fn(), expected, scale=np.abs(v).max())
print(f"float32 vs float64, worst over N and implementations: {max(errors32.values()):.1e} (bound {BOUND32:g})")
assert max(errors32.values()) <= BOUND32

# %%
with torch.inference_mode():
    timings = {
        (n_keys, name): median_ms(fn, repeats=7)
        for n_keys in KEY_COUNTS
        for name, fn in implementations(*inputs[n_keys]).items()
    }
names = list(implementations(*inputs[KEY_COUNTS[0]]))
print(f"median of 7 calls, ms (H = {H}, M = {M}, Dh = {DH}, float32)")
print(f"{'N':>6} " + "".join(f"{name:>16}" for name in names))
for n_keys in KEY_COUNTS:
    print(f"{n_keys:>6} " + "".join(f"{timings[n_keys, name]:>16.2f}" for name in names))

fig, ax = plt.subplots(figsize=(6, 3.5))
for name, marker in zip(names, "os^D"):
    ax.plot(KEY_COUNTS, [timings[n, name] for n in KEY_COUNTS], marker + "-", label=name)
ax.plot(
    KEY_COUNTS,
    [timings[KEY_COUNTS[-1], "NumPy"] * n / KEY_COUNTS[-1] for n in KEY_COUNTS],
    ":",
    color="gray",
    label="proportional to N",
)
ax.set(
    xscale="log",
    yscale="log",
    xlabel="N keys (media tokens)",
    ylabel="median time per call (ms)",
    title=f"Attention, H = {H}, M = {M}, Dh = {DH}, float32",
)
ax.set_xticks(KEY_COUNTS, [str(n) for n in KEY_COUNTS])
ax.legend()
plt.show()


# %% [markdown]
# Notice: the work grows linearly in $N$ (each of the $M$ rows meets each key once). The
# times are measurements, not checks, and which implementation wins depends on the machine
# and on what else it runs. In the run committed here, on a 2-core CPU that other jobs kept
# busy (load average about 9), refimpl's kernel was the fastest at every $N$ and NumPy the
# slowest (3.0 against 58 ms at $N = 1024$): BLAS threads that must wait for a busy core
# suffer most. On the same kind of CPU in a quieter hour it went the other way at small $N$:
# `benchmarks/RESULTS.md` (cpu_attention.py) has NumPy at 1.31 ms and torch at 1.09 ms
# against Numba's 3.85 ms at $N = 1024$, because a parallel launch and a kernel's per-block
# set-up cost more than one matrix product over a thousand keys. As $N$ grows the streaming
# kernels catch up (Numba 1.06 times NumPy's time at $N = 16384$ there), because NumPy writes and
# re-reads the $(H, M, N)$ scores several times (the product, the max, the exponentials,
# the normalisation, the product with $v$), while a kernel brings each block of keys from
# memory once and keeps it in cache for all $M$ rows. Our kernel
# is plain loops; refimpl's adds memory-layout work (a contiguous transposed copy of each
# key block, four query rows per load, a SIMD float32 exp).
#
# Read these numbers with care: three thread pools (OpenBLAS's for NumPy, torch's OpenMP,
# Numba's) share a few cores, and their workers keep spinning for a while after a call, so
# one measurement can slow the next; on a shared machine a single point can move by several
# times.
# Nothing here asserts a timing. `benchmarks/RESULTS.md` has a careful run of the same
# comparison, with each implementation's median over many calls.

# %% [markdown]
# ## 6. Memory: the $(M, N)$ weights against one block
#
# What does each call allocate beyond its inputs? Python's `tracemalloc` sees every array
# NumPy allocates, and also those a Numba function creates inside itself (Numba's runtime
# reports its allocations to it); it does not see torch's. Its peak during one call is the
# number we plot. We also count from the shapes what we expect:
#
# - NumPy: the $(H, M, N)$ scores and weights, and the output $(H, M, D_v)$;
# - our kernel: the output, and per running `prange` iteration $m, \ell$ $(M,)$, $a$ $(M, D_v)$,
#   $s$ $(\text{block},)$;
# - refimpl's kernel: the output and the softmax statistics, and per iteration
#   $q \cdot \text{scale}$ $(M, D_h)$, a key block $(D_h, 256)$, a value block $(256, D_v)$,
#   the block's scores $(M, 256)$, $a$ $(M, D_v)$, and 256 int32 for the exp.
#
# Each thread runs one iteration at a time, so between one and `threads` sets of scratch
# are alive at once. refimpl's kernel is measured twice: alone (`refimpl.kernels.attention`,
# which expects checked arguments) and through `refimpl.attention`, which first checks
# that every input is finite.


# %%
def traced_peak_mib(fn):
    """Peak memory (MiB) that one call of fn() allocates, as tracemalloc sees it, after a warm-up call."""
    fn()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return (peak - before) / 2**20


MIB = 2**20
ITEM = np.dtype(np.float32).itemsize
KB = kernels.KEY_BLOCK  # refimpl's kernel: 256 keys per block
threads = numba.get_num_threads()
output_mib = H * M * DH * ITEM / MIB  # (H, M, Dv), every implementation returns it
weights_mib = {n: H * M * n * ITEM / MIB for n in KEY_COUNTS}  # one (H, M, N) float32 array
scratch_mib = {  # per running prange iteration
    "ours": (2 * M + M * DH + 256) * ITEM / MIB,  # m, l, acc, s (block = 256)
    "refimpl kernel": ((M * DH + DH * KB + KB * DH + M * KB + M * DH) * ITEM + KB * 4) / MIB,
}
stats_mib = {"ours": 0.0, "refimpl kernel": 2 * H * M * ITEM / MIB}  # refimpl also returns m and l (H, M)
scratch_mib["refimpl.attention"], stats_mib["refimpl.attention"] = (
    scratch_mib["refimpl kernel"],
    stats_mib["refimpl kernel"],
)

measured = {}  # (N, what) -> MiB
for n in KEY_COUNTS:
    q, k, v = inputs[n]
    fns = implementations(q, k, v)
    measured[n, "NumPy"] = traced_peak_mib(fns["NumPy"])
    measured[n, "ours"] = traced_peak_mib(fns["Numba, ours"])
    measured[n, "refimpl kernel"] = traced_peak_mib(lambda: kernels.attention(q, k, v, None, DH**-0.5))
    measured[n, "refimpl.attention"] = traced_peak_mib(fns["Numba, refimpl"])

print(
    f"peak MiB per call (tracemalloc); output {output_mib:.3f}; scratch per iteration: ours "
    f"{scratch_mib['ours']:.3f}, refimpl's {scratch_mib['refimpl kernel']:.3f}; {threads} threads"
)
print(f"{'N':>6} {'NumPy':>8} {'one (H,M,N)':>12} {'ours':>8} {'refimpl kernel':>15} {'refimpl.attention':>18}")
for n in KEY_COUNTS:
    print(
        f"{n:>6} {measured[n, 'NumPy']:>8.3f} {weights_mib[n]:>12.3f} {measured[n, 'ours']:>8.3f} "
        f"{measured[n, 'refimpl kernel']:>15.3f} {measured[n, 'refimpl.attention']:>18.3f}"
    )

SLACK = 0.01  # MiB, for small Python objects and allocation headers
numpy_ratio = [(measured[n, "NumPy"] - output_mib) / weights_mib[n] for n in KEY_COUNTS]
numpy_two_arrays = all(abs(r - 2) < 0.1 for r in numpy_ratio)
kernels_flat = all(  # output (+ statistics) + 1 to `threads` sets of scratch, whatever N
    output_mib + stats_mib[what] + scratch_mib[what] - SLACK
    <= measured[n, what]
    <= output_mib + stats_mib[what] + threads * scratch_mib[what] + SLACK
    for n in KEY_COUNTS
    for what in ("ours", "refimpl kernel", "refimpl.attention")
)
print(f"NumPy, beyond the output, in (H, M, N) arrays: {', '.join(f'{r:.2f}' for r in numpy_ratio)}")
assert numpy_two_arrays, "NumPy's peak holds two (H, M, N) arrays besides the output"
assert kernels_flat, "a kernel's memory is its output and a few blocks of scratch, whatever N, checks included"

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(KEY_COUNTS, [measured[n, "NumPy"] for n in KEY_COUNTS], "o-", label="NumPy")
ax.plot(KEY_COUNTS, [weights_mib[n] for n in KEY_COUNTS], "k:", label="one (H, M, N) float32 array")
ax.plot(
    KEY_COUNTS, [measured[n, "refimpl kernel"] for n in KEY_COUNTS], "D-", color="tab:red", ms=9, label="refimpl kernel"
)
ax.plot(
    KEY_COUNTS,
    [measured[n, "refimpl.attention"] for n in KEY_COUNTS],
    "v--",
    color="tab:purple",
    ms=7,
    zorder=3,
    label="refimpl.attention, Numba (checks included): on the red line where they are equal",
)
ax.plot(KEY_COUNTS, [measured[n, "ours"] for n in KEY_COUNTS], "^--", color="tab:green", label="our kernel")
ax.set(
    xscale="log",
    yscale="log",
    xlabel="N keys (media tokens)",
    ylabel="peak extra memory per call (MiB)",
    title=f"Peak extra memory (tracemalloc), H = {H}, M = {M}, float32",
)
ax.set_xticks(KEY_COUNTS, [str(n) for n in KEY_COUNTS])
ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# Notice: NumPy's peak is the output plus two $(H, M, N)$ arrays (the scores, and the
# weights made from them while the scores still exist), and it grows with $N$: 64 MiB at
# $N = 16384$, for one attention call of one layer. The kernels' memory does not grow with
# $N$: it is their output and a block's worth of scratch per running thread (one or two
# here, depending on how the threads overlapped, hence the small wobble). refimpl.attention's
# argument checks add nothing: they look for NaN and inf with `min` and `max`, which
# allocate nothing. (They used to call `np.isfinite(k).all()`, which builds a boolean array
# with one byte per number of $k$: this measurement is what found it.) (torch's
# allocations are invisible to `tracemalloc`; `benchmarks/cpu_attention.py` measures all
# three by the process's resident memory instead.)
#
# For self-attention, with as many queries as keys, the gap becomes a wall: NumPy's
# weights grow as $N^2$. Below, one measured case, $M = N = 2048$ (median of 3 calls), then
# the count for larger patch grids. The kernels' scratch grows only with $M$, through the
# accumulator $a$ $(M, D_v)$ (and, in refimpl's, a block's scores $(M, 256)$); a
# FlashAttention kernel blocks the queries too and keeps even that small.

# %%
N_SELF = 2048
q_self, k_self, v_self = (rng.standard_normal((H, N_SELF, DH)).astype(np.float32) for _ in range(3))  # (H, N, Dh)
fns_self = implementations(q_self, k_self, v_self)
with torch.inference_mode():
    self_ms = {name: median_ms(fn, repeats=3) for name, fn in fns_self.items()}
self_mib = {name: traced_peak_mib(fns_self[name]) for name in ("NumPy", "Numba, ours")}
self_weights_mib = H * N_SELF * N_SELF * ITEM / MIB  # one (H, M, N) float32 array
print(f"M = N = {N_SELF}: " + ", ".join(f"{name} {ms:.0f} ms" for name, ms in self_ms.items()))
print(
    f"  peak extra memory: NumPy {self_mib['NumPy']:.1f} MiB (one (H, M, N) array is {self_weights_mib:.0f} MiB), "
    f"our kernel {self_mib['Numba, ours']:.1f} MiB (its output is {H * N_SELF * DH * ITEM / MIB:.0f} MiB)"
)
assert self_mib["NumPy"] >= 2 * self_weights_mib
assert self_mib["Numba, ours"] <= (H * N_SELF * DH + threads * (2 * N_SELF + N_SELF * DH + 256)) * ITEM / MIB + SLACK

for side in (64, 128):
    n = side * side  # M = N = S patches of a side x side grid
    print(
        f"M = N = {side}x{side} = {n:>5}: one (H, M, N) float32 array {H * n * n * ITEM / 2**30:4.1f} GiB; "
        f"our kernel's scratch per iteration {(2 * n + n * DH + 256) * ITEM / MIB:4.1f} MiB"
    )

# %% [markdown]
# ## What we checked
#
# The numbers below are seeded and the same on every machine (no timings, no rounding
# errors): nbval compares them with the committed output.

# %%
# NBVAL_CHECK_OUTPUT
print(
    f"loops (Python and Numba): out {out_python.shape}, within {BOUND:g} of refimpl: "
    f"{err_python <= BOUND and err_jit <= NUMBA_BOUND}"
)
print(
    f"online softmax by rows: N = {N_ROW} keys in {n_blocks_row} blocks of {BLOCK_ROW}; "
    f"the max of row {row} rose in {raises[row]} of the {n_blocks_row - 1} blocks after the first"
)
print(f"  with the rescale within {BOUND:g} of refimpl: {err_online <= BOUND}; without it: {err_no_rescale <= BOUND}")
print(
    f"parallel kernel: B*H = {2 * 3} problems, out {out_heads.shape}, "
    f"within {NUMBA_BOUND:g} of NumPy and of refimpl's kernel: "
    f"{max(err_heads, err_vs_kernel) <= NUMBA_BOUND}"
)
print(
    f"float32, H = {H}, M = {M}, Dh = {DH}: 4 implementations within {BOUND32:g} of float64: "
    f"{max(errors32.values()) <= BOUND32}"
)
for n in KEY_COUNTS:
    print(
        f"  N = {n:5}: {math.ceil(n / KB):2} key blocks of {KB}; one (H, M, N) float32 array {weights_mib[n]:5.1f} MiB"
    )
print(
    f"kernel scratch per iteration: ours {scratch_mib['ours'] * 1024:.1f} KiB, "
    f"refimpl's {scratch_mib['refimpl kernel'] * 1024:.1f} KiB"
)
print(
    f"self-attention, M = N = {N_SELF}: one (H, M, N) float32 array {self_weights_mib:.0f} MiB; "
    f"NumPy's peak at least two of them: {self_mib['NumPy'] >= 2 * self_weights_mib}"
)
print(
    f"NumPy's peak holds two (H, M, N) arrays: {numpy_two_arrays}; "
    f"the kernels' peak is their output and a few blocks of scratch, for every N: {kernels_flat}"
)

# %% [markdown]
# ## Summary
#
# **What you built.** Attention as explicit loops, in Python and compiled with `numba.njit`;
# the online softmax, derived and written for one row in NumPy (and, in the exercises, for
# all rows at once, plus the merge of two partial states); and a parallel Numba kernel
# that streams over blocks of keys, one `prange` iteration per (batch, head), checked
# against `refimpl` in float64 and timed against NumPy, PyTorch and refimpl's kernel.
#
# **What to notice.**
# - A compiled function's first call includes the compile, tens of thousands of times a later
#   call here (125,000 times in the committed run): warm up before timing, and take medians.
# - The online softmax is not an approximation: with the rescale $c = e^{m_\text{old} - m_\text{new}}$
#   it gives the two-pass result up to rounding, in one pass over the keys and values.
#   Without $c$ it is wrong.
# - Streaming removes the $(M, N)$ weights from memory: a kernel's working set is a block of
#   keys and a few numbers per query row, whatever $N$. Its speed against BLAS comes from
#   memory layout, and it catches up only where $N$ is large.
#
# **Next.** Notebook 4 assembles the Perceiver Resampler from these pieces in NumPy and runs
# it on real photographs and a short video. `refimpl.perceiver_resampler(...,
# backend="numba")` runs every attention in it with the kernel you just met.
