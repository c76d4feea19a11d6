"""How long each course notebook takes to run top to bottom, against its time budget.

The course promises notebooks that run on a laptop CPU in a minute or so. That is a
benchmark, not a test (a busy machine makes any limit fail although every result is right),
so it lives here: this script runs each notebook in a fresh kernel with nbclient (the
engine behind nbconvert and nbval), kernel start-up included, without writing it back,
and prints a markdown table (notebook, seconds, budget, ratio) with the machine and its
load averages before and after, for benchmarks/RESULTS.md.

    python benchmarks/notebook_times.py                       # every notebook
    python benchmarks/notebook_times.py 00_overview 06_training
    python benchmarks/notebook_times.py 06_training --busy 2  # beside 2 busy-loop processes

A notebook that fails is reported in the table (its cells are the tests' business:
`python -m pytest notebooks/NN_name.ipynb`).
"""

import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import machine_line  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
BUDGET_S = 90  # per notebook: "runs on a laptop CPU in a minute or so"


def busy_loop():
    """Burn one core until terminated: a known extra load."""
    while True:
        pass


def run_seconds(path):
    """Seconds to run the notebook at `path` top to bottom in a fresh python3 kernel, and
    None or the error that stopped it."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    start = time.perf_counter()
    try:
        client.execute()
    except Exception as error:  # a failing cell: report it, time what ran
        return time.perf_counter() - start, f"{type(error).__name__}"
    return time.perf_counter() - start, None


def loads():
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebooks to run, e.g. 06_training (default: all)")
    parser.add_argument("--busy", type=int, default=0, help="busy-loop processes to run beside the notebooks")
    args = parser.parse_args()
    paths = [NOTEBOOKS / f"{name.removesuffix('.ipynb')}.ipynb" for name in args.names] or sorted(
        NOTEBOOKS.glob("*.ipynb")
    )
    missing = [path.name for path in paths if not path.exists()]
    if missing:
        parser.error(f"names must be notebooks in {NOTEBOOKS.name}/; not found: {', '.join(missing)}")

    print(f"Machine: {machine_line()}")
    print(f"Load averages (1, 5, 15 min) before: {loads()}; extra busy loops beside the notebooks: {args.busy}\n")
    loops = [multiprocessing.Process(target=busy_loop, daemon=True) for _ in range(args.busy)]
    for loop in loops:
        loop.start()
    try:
        print("| notebook | seconds | budget (s) | ratio | result |")
        print("|---|---|---|---|---|")
        for path in paths:
            seconds, error = run_seconds(path)
            print(
                f"| {path.stem} | {seconds:.0f} | {BUDGET_S} | {seconds / BUDGET_S:.2f} | {error or 'ran'} |",
                flush=True,
            )
    finally:
        for loop in loops:
            loop.terminate()
            loop.join()
    print(f"\nLoad averages (1, 5, 15 min) after: {loads()}")


if __name__ == "__main__":
    main()
