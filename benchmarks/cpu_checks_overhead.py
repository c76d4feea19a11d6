"""What the float-range checks of attention cost, as a share of the call they guard.

    python benchmarks/cpu_checks_overhead.py

Before attention, both backends bound the scores (`refimpl.attention.check_scores_fit`:
max and min of q and k), O((M + N) Dh) beside the O(M N Dh) attention; after it, the
Numba path checks that its output is finite (O(M Dv); it reruns with v scaled down
where the running numerators overflowed). H = 8, M = 64, Dh = 64 as in cpu_attention.py. The
fastest of many calls, in one process, checks and call alternating, so that a loaded
machine slows both alike; copy the table to RESULTS.md.
"""

import time

import numpy as np
from _harness import machine_line

import refimpl
from refimpl.attention import check_scores_fit

HEADS, QUERIES, HEAD_DIM = 8, 64, 64
KEYS = (1024, 4096)


def fastest_seconds(fn, repeats=30):
    """The fastest of `repeats` calls of fn(), after one to warm up: the least disturbed by load."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    rng = np.random.default_rng(0)
    print(f"Machine: {machine_line()}\n")
    print(f"H = {HEADS}, M = {QUERIES}, Dh = {HEAD_DIM}; fastest of 30 calls\n")
    print("| dtype | N | backend | checks ms | attention ms | share |")
    print("|---|---|---|---|---|---|")
    for dtype in (np.float32, np.float64):
        for n_keys in KEYS:
            q = rng.standard_normal((HEADS, QUERIES, HEAD_DIM)).astype(dtype)
            k = rng.standard_normal((HEADS, n_keys, HEAD_DIM)).astype(dtype)
            v = rng.standard_normal((HEADS, n_keys, HEAD_DIM)).astype(dtype)
            for backend in ("numpy", "numba"):
                out = refimpl.attention(q, k, v, backend=backend, dtype=dtype)

                def checks(q=q, k=k, out=out, backend=backend):
                    check_scores_fit(q, k, HEAD_DIM**-0.5)
                    if backend == "numba":
                        np.isfinite(out).all()

                def call(q=q, k=k, v=v, backend=backend, dtype=dtype):
                    refimpl.attention(q, k, v, backend=backend, dtype=dtype)

                checked, total = fastest_seconds(checks), fastest_seconds(call)
                print(
                    f"| {dtype.__name__} | {n_keys} | {backend} | {checked * 1e3:.3f} | {total * 1e3:.2f} | "
                    f"{checked / total:.1%} |"
                )


if __name__ == "__main__":
    main()
