"""Attention on the CPU: refimpl's NumPy path, its Numba kernel, and torch's SDPA.

    python benchmarks/cpu_attention.py

H = 8 heads, M = 64 queries (the latents), Dh = 64, N keys in {256, 1024, 4096, 16384},
float32 and float64. Prints one markdown table: the median time of one call, its ratio
to NumPy (lower is faster), the peak extra memory of one call, and the error against
the float64 NumPy result, relative to max |v| (refimpl/tolerances.py says why). All rows come from one run on
one machine, so the ratios
are comparable; copy the table to RESULTS.md.
"""

import json
import sys

import numpy as np
import torch
from _harness import machine_line, median_seconds, peak_extra_mib, run_memory_pass

import refimpl

HEADS, QUERIES, HEAD_DIM = 8, 64, 64
KEYS = (256, 1024, 4096, 16384)


def cases():
    """(dtype, N, implementation name, fn) for every row, inputs seeded."""
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for n_keys in KEYS:
            q = rng.standard_normal((HEADS, QUERIES, HEAD_DIM)).astype(dtype)
            k = rng.standard_normal((HEADS, n_keys, HEAD_DIM)).astype(dtype)
            v = rng.standard_normal((HEADS, n_keys, HEAD_DIM)).astype(dtype)
            tq, tk, tv = (torch.from_numpy(a) for a in (q, k, v))
            reference = refimpl.attention(q, k, v)  # float64
            yield (
                dtype,
                n_keys,
                (reference, np.abs(v).max()),
                {
                    "NumPy": lambda q=q, k=k, v=v, dtype=dtype: refimpl.attention(q, k, v, dtype=dtype),
                    "Numba": lambda q=q, k=k, v=v, dtype=dtype: refimpl.attention(
                        q, k, v, backend="numba", dtype=dtype
                    ),
                    "torch SDPA": lambda tq=tq, tk=tk, tv=tv: torch.nn.functional.scaled_dot_product_attention(
                        tq, tk, tv
                    ),
                },
            )


def main():
    if "--memory" in sys.argv:  # the child process started by run_memory_pass
        with torch.no_grad():
            print(
                json.dumps(
                    {
                        f"{d.__name__} {n} {name}": peak_extra_mib(fn)
                        for d, n, _, fns in cases()
                        for name, fn in fns.items()
                    }
                )
            )
        return
    rows = []
    with torch.no_grad():
        for dtype, n_keys, (reference, scale), fns in cases():
            for name, fn in fns.items():
                error = refimpl.relative_error(np.asarray(fn()), reference, scale)
                rows.append((dtype.__name__, n_keys, name, median_seconds(fn), error))
    memory = run_memory_pass(__file__)

    print(f"Machine: {machine_line()}\n")
    print(f"H = {HEADS}, M = {QUERIES}, Dh = {HEAD_DIM}; median of >= 5 calls; ratio = time / NumPy's time\n")
    print(
        "| dtype | N | implementation | median ms | ratio to NumPy | peak extra MiB "
        "| error vs float64 NumPy / max abs(v) |"
    )
    print("|---|---|---|---|---|---|---|")
    numpy_time = {}
    for dtype, n_keys, name, seconds, error in rows:
        numpy_time.setdefault((dtype, n_keys), seconds)
        ratio = seconds / numpy_time[dtype, n_keys]
        mib = memory[f"{dtype} {n_keys} {name}"]
        print(f"| {dtype} | {n_keys} | {name} | {seconds * 1e3:.2f} | {ratio:.2f} | {mib:.1f} | {error:.1e} |")


if __name__ == "__main__":
    main()
