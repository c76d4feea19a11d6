"""The attention backward on the CPU: NumPy, refimpl's Numba kernel, and torch's autograd through SDPA.

    python benchmarks/cpu_attention_backward.py

H = 8 heads, M = 64 queries (the latents), Dh = Dv = 64, N keys in {256, 1024, 4096, 16384},
float32 and float64. q, k and v are (1, H, ., .): with 4-D inputs torch's SDPA takes its
fused flash-attention kernel for the CPU, whose backward recomputes the weights as ours does
(with 3-D inputs it takes the unfused path of matrix products and a softmax).

Each row times the backward alone, from what its forward saved:
- NumPy: from the output and the weights P (..., M, N) that its forward formed, the formulas
  dv = P^T dout, dP = dout v^T, dS = P * (dP - Delta) with Delta_i = dout_i . out_i,
  dq = dS k * scale, dk = dS^T q * scale, in the inputs' dtype (refimpl.grad's NumPy backend
  computes the same in float64 only, after recomputing P);
- Numba: refimpl.kernels_backward.attention_backward from out and the softmax statistics;
- torch: torch.autograd.grad through the graph of one SDPA call.
Prints one markdown table: the median time of one call, its ratio to NumPy (lower is
faster), the peak extra memory of one call and the part of it that is not the gradients
themselves (dk and dv are as large as k and v), and the error against the float64 NumPy
result (the largest over dq, dk and dv, each relative to the largest entry of its reference).
All rows come from one run on one machine, so the ratios are comparable; copy the table
to RESULTS.md.
"""

import json
import sys

import numpy as np
import torch
from _harness import machine_line, median_seconds, peak_extra_mib, run_memory_pass

import refimpl
from refimpl import kernels, kernels_backward

HEADS, QUERIES, HEAD_DIM = 8, 64, 64
KEYS = (256, 1024, 4096, 16384)
SCALE = HEAD_DIM**-0.5


def numpy_backward(q, k, v, out, weights, dout):
    """dq, dk, dv from the saved output and weights P (..., M, N): NumPy forms every (M, N) matrix."""
    dv = np.swapaxes(weights, -1, -2) @ dout  # (..., N, Dv)
    dscores = dout @ np.swapaxes(v, -1, -2)  # (..., M, N) dP
    dscores -= np.sum(dout * out, axis=-1, keepdims=True)  # dP - Delta
    dscores *= weights  # dS
    dscores *= SCALE
    return dscores @ k, np.swapaxes(dscores, -1, -2) @ q, dv  # (..., M, Dh), (..., N, Dh), (..., N, Dv)


def cases():
    """(dtype, N, (reference gradients), {implementation name: fn}) for every row, inputs seeded."""
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for n_keys in KEYS:
            q = rng.standard_normal((1, HEADS, QUERIES, HEAD_DIM)).astype(dtype)
            k = rng.standard_normal((1, HEADS, n_keys, HEAD_DIM)).astype(dtype)
            v = rng.standard_normal((1, HEADS, n_keys, HEAD_DIM)).astype(dtype)
            dout = rng.standard_normal((1, HEADS, QUERIES, HEAD_DIM)).astype(dtype)
            saved = refimpl.attention(q, k, v, return_weights=True, dtype=dtype)  # NumPy's out and P
            q64, k64, v64, dout64 = (a.astype(np.float64) for a in (q, k, v, dout))
            reference = numpy_backward(q64, k64, v64, *refimpl.attention(q64, k64, v64, return_weights=True), dout64)
            out, row_max, row_sum = kernels.attention(q, k, v, None, SCALE)  # Numba's saved statistics
            tq, tk, tv = (torch.from_numpy(a).requires_grad_() for a in (q, k, v))
            t_out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv)  # torch's saved graph
            t_dout = torch.from_numpy(dout)
            yield (
                dtype,
                n_keys,
                reference,
                {
                    "NumPy": lambda q=q, k=k, v=v, saved=saved, dout=dout: numpy_backward(q, k, v, *saved, dout),
                    "Numba": lambda q=q, k=k, v=v, out=out, m=row_max, l=row_sum, dout=dout: (
                        kernels_backward.attention_backward(q, k, v, None, SCALE, out, m, l, dout)
                    ),
                    "torch SDPA autograd": lambda t_out=t_out, inputs=(tq, tk, tv), t_dout=t_dout: torch.autograd.grad(
                        t_out, inputs, t_dout, retain_graph=True
                    ),
                },
            )


def relative_error(gradients, reference):
    """The largest over dq, dk, dv of max |error| / max |reference|."""
    return max(refimpl.relative_error(np.asarray(g), r) for g, r in zip(gradients, reference, strict=True))


def main():
    if "--memory" in sys.argv:  # the child process started by run_memory_pass
        print(
            json.dumps(
                {f"{d.__name__} {n} {name}": peak_extra_mib(fn) for d, n, _, fns in cases() for name, fn in fns.items()}
            )
        )
        return
    rows = []
    for dtype, n_keys, reference, fns in cases():
        for name, fn in fns.items():
            rows.append((dtype.__name__, n_keys, name, median_seconds(fn), relative_error(fn(), reference)))
    memory = run_memory_pass(__file__)

    print(f"Machine: {machine_line()}\n")
    print(f"H = {HEADS}, M = {QUERIES}, Dh = Dv = {HEAD_DIM}; median of >= 5 calls; ratio = time / NumPy's time\n")
    print(
        "| dtype | N | implementation | median ms | ratio to NumPy | peak extra MiB | of which not dq, dk, dv "
        "| error vs float64 NumPy |"
    )
    print("|---|---|---|---|---|---|---|---|")
    numpy_time = {}
    for dtype, n_keys, name, seconds, error in rows:
        numpy_time.setdefault((dtype, n_keys), seconds)
        ratio = seconds / numpy_time[dtype, n_keys]
        mib = memory[f"{dtype} {n_keys} {name}"]
        gradients_mib = HEADS * (QUERIES + 2 * n_keys) * HEAD_DIM * np.dtype(dtype).itemsize / 2**20
        print(
            f"| {dtype} | {n_keys} | {name} | {seconds * 1e3:.2f} | {ratio:.2f} | {mib:.1f} "
            f"| {max(0.0, mib - gradients_mib):.1f} | {error:.1e} |"
        )


if __name__ == "__main__":
    main()
