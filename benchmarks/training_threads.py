"""The notebooks' training loops on a busy CPU: the default threads against one thread.

On a 2-core machine that other work keeps busy, torch's default (one thread per core) makes
every step of a small model wait for a thread that the other work has taken: notebook 6's
1000 steps once took 771 s instead of 68 s. This script runs the loop of notebook 6's
training cell (refimpl.tiny.train.train on scene_batches(32, seed=0), the tiny model) for
`--steps` steps, with torch's default threads and with torch.set_num_threads(1), each alone
and beside `--busy` extra busy-loop processes (the known load), and prints a markdown table
with the machine and its load averages before and after. `--notebook 10` runs notebook 10's
section 5 instead: ten SGD steps of the tiny model in NumPy (refimpl.tiny.grad), then in torch
float64, with "1" meaning one thread for NumPy's BLAS (refimpl.threads) as well as for torch.

    python benchmarks/training_threads.py --steps 200 --busy 2
    python benchmarks/training_threads.py --notebook 10 --busy 2

Each configuration runs in a fresh process (torch and OpenBLAS fix their thread pools early).
"""

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import machine_line  # noqa: E402


def busy_loop():
    """Burn one core until terminated: the known extra load."""
    while True:
        pass


def one_run(notebook, steps, threads):
    """Run notebook 6's training loop for `steps` steps, or notebook 10's section 5, with
    `threads` threads (0 = the defaults); print a JSON line with the seconds it took."""
    import numpy as np
    import torch

    from refimpl.tiny.model import TinyConfig, init_tiny_model
    from refimpl.tiny.torch import TinyModel

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = TinyConfig()
    if notebook == 6:
        from refimpl.tiny.train import scene_batches, train

        model = TinyModel.from_refimpl(config, init_tiny_model(config, seed=0), dtype=torch.float32)
        start = time.perf_counter()
        history = train(model, scene_batches(32, seed=0), steps, progress=False)
        total = time.perf_counter() - start
        print(
            json.dumps(
                {
                    "seconds": total,
                    "median_step_ms": 1e3 * float(np.median(history.step_seconds)),
                    "threads": torch.get_num_threads(),
                }
            )
        )
        return
    import torch.nn.functional as F

    from refimpl.scenes import make_scenes
    from refimpl.threads import limit_blas_threads
    from refimpl.tiny.grad import tiny_value_and_grad

    if threads:
        limit_blas_threads(threads)
    batches = [make_scenes(8, 48, 64, seed=100 + step) for step in range(10)]
    start = time.perf_counter()
    params = init_tiny_model(config, seed=0)
    for batch in batches:  # NumPy
        _, grads = tiny_value_and_grad(params, batch.images, batch.labels, config)
        params = {name: value - 0.03 * grads[name] for name, value in params.items()}
    numpy_s = time.perf_counter() - start
    model = TinyModel.from_refimpl(config, init_tiny_model(config, seed=0), dtype=torch.float64)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.03)
    for batch in batches:  # torch
        logits = model(torch.as_tensor(batch.images, dtype=torch.float64))
        loss = F.binary_cross_entropy_with_logits(logits, torch.as_tensor(batch.labels, dtype=torch.float64))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    total = time.perf_counter() - start
    print(
        json.dumps(
            {"seconds": total, "median_step_ms": 1e3 * numpy_s / len(batches), "threads": torch.get_num_threads()}
        )
    )


def measure(notebook, steps, threads, busy):
    """One run in a fresh process, beside `busy` busy-loop processes; returns its JSON."""
    loops = [multiprocessing.Process(target=busy_loop, daemon=True) for _ in range(busy)]
    for loop in loops:
        loop.start()
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--one", str(notebook), str(steps), str(threads)],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        for loop in loops:
            loop.terminate()
            loop.join()
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps per run (notebook 6: 1000)")
    parser.add_argument("--busy", type=int, default=2, help="busy-loop processes beside the loaded runs")
    parser.add_argument("--threads", default="default,1", help="comma-separated: 'default' and/or thread counts")
    parser.add_argument("--notebook", type=int, choices=(6, 10), default=6, help="whose training loop (default 6)")
    parser.add_argument("--one", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one_run(*args.one)
        return

    print(f"Machine: {machine_line()}")
    print(f"Load averages (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.notebook == 6:
        print(f"\n{args.steps} steps of notebook 6's training loop (batch 32, 32 to 128 px a side)\n")
        print("| torch threads | extra busy loops | seconds | median step (ms) | slowdown vs no extra load |")
    else:
        print("\nnotebook 10's section 5: 10 SGD steps in NumPy, then 10 in torch float64 (batch 8, 48 x 64)\n")
        print("| torch and BLAS threads | extra busy loops | seconds | NumPy step (ms) | slowdown vs no extra load |")
    print("|---|---|---|---|---|")
    for setting in args.threads.split(","):
        threads = 0 if setting == "default" else int(setting)
        quiet = measure(args.notebook, args.steps, threads, 0)
        loaded = measure(args.notebook, args.steps, threads, args.busy)
        name = f"default ({quiet['threads']})" if threads == 0 else str(threads)
        for busy, result in ((0, quiet), (args.busy, loaded)):
            print(
                f"| {name} | {busy} | {result['seconds']:.1f} | {result['median_step_ms']:.1f} | "
                f"{result['seconds'] / quiet['seconds']:.2f} |",
                flush=True,
            )
    print(f"\nLoad averages (1, 5, 15 min) after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
