"""Shared by the benchmark scripts: median timing, peak extra memory, and the machine line.

Medians, not means: these machines are shared and noisy, and a median ignores the
occasional slow run. Peak extra memory is the rise of the process's resident set
during one call, measured by resetting Linux's high-water mark (VmHWM) first, so it
covers NumPy, Numba and torch allocations alike. For that the allocator must hand
freed blocks back to the system, which `run_memory_pass` arranges.
"""

import datetime
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np


def median_seconds(fn, *, min_repeats=5, max_repeats=50, budget_s=2.0):
    """Median wall time of fn() over at least `min_repeats` calls (more while within `budget_s`)."""
    fn()  # warm up: compile, allocate, fill caches
    times = []
    start = time.perf_counter()
    while len(times) < min_repeats or (len(times) < max_repeats and time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def run_memory_pass(script):
    """Run `python script --memory` with glibc's mmap threshold fixed at 128 KiB; return
    the JSON it prints.

    By default glibc raises the threshold after large blocks are freed, and later large
    arrays come from memory the process already holds: they would not show up as extra
    memory. With a fixed threshold every large array is a fresh mapping, returned to the
    system when freed. glibc reads the setting at start-up, and fresh mappings cost page
    faults that would distort the timings: hence a separate process, for memory only.
    """
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    done = subprocess.run([sys.executable, script, "--memory"], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def _status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_extra_mib(fn):
    """MiB by which one call of fn() raises the resident set above where it started (Linux)."""
    fn()  # warm up, so compilation and one-off caches are not counted
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset the peak resident set (VmHWM) to the current one
    before = _status_kib("VmRSS")
    fn()
    return max(0, _status_kib("VmHWM") - before) / 1024


def machine_line():
    """Date, CPU model, core count and library versions, for the results file."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import numba
    import torch

    return (
        f"{datetime.date.today()} · {cpu} · {os.cpu_count()} cores · Python {platform.python_version()} · "
        f"NumPy {np.__version__} · Numba {numba.__version__} · torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)"
    )
