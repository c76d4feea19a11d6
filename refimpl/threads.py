"""How many threads NumPy's BLAS uses: one, for training cells on a busy CPU.

A small model's matrix products are too short to split across cores with profit, and on a
machine whose cores are busy with other work a BLAS (or torch) thread pool makes every
product wait for a thread that cannot run: notebook 10's ten NumPy training steps took
12.6 s with NumPy's default two OpenBLAS threads and 2.9 s with one, on a shared 2-core CPU
(benchmarks/RESULTS.md). torch has its own setting, `torch.set_num_threads(1)`; NumPy has
none, and its OpenBLAS reads OPENBLAS_NUM_THREADS only when it loads, before a notebook's
first cell could set it. So this asks the loaded library itself:

    from refimpl.threads import limit_blas_threads
    limit_blas_threads(1)     # -> "OpenBLAS (...): 1 thread", or a line saying nothing was changed

with threadpoolctl where it is installed (it knows every BLAS and OpenMP runtime), and
otherwise, on Linux, through the setter of the OpenBLAS that NumPy's wheels bundle. Elsewhere
(macOS's Accelerate, a BLAS without a setter) it changes nothing and says so.
"""

import ctypes
import os

from ._checks import positive_int

_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads")


def limit_blas_threads(threads=1):
    """Limit NumPy's BLAS to `threads` threads (a positive int) for the rest of the process.

    Returns one line saying what was limited, or that nothing could be (the computation is the
    same either way; only its speed on a busy CPU differs).
    """
    threads = positive_int("threads", threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        pass
    else:
        threadpool_limits(limits=threads, user_api="blas")  # applies now, and stays
        return f"BLAS (threadpoolctl): {threads} thread{'s' * (threads > 1)}"
    for path in _loaded_openblas():
        library = ctypes.CDLL(path)  # already loaded by NumPy: this returns the same library
        setter = next((getattr(library, name) for name in _SETTERS if hasattr(library, name)), None)
        if setter is not None:
            setter(threads)
            return f"OpenBLAS ({os.path.basename(path)}): {threads} thread{'s' * (threads > 1)}"
    return "BLAS threads unchanged: neither threadpoolctl nor a loaded OpenBLAS with a thread setter was found"


def _loaded_openblas():
    """Paths of the OpenBLAS libraries loaded in this process (Linux: /proc/self/maps), NumPy's first."""
    import numpy  # noqa: F401  (loads NumPy's BLAS, if it is not loaded yet)

    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line}
    except OSError:
        return []
    return sorted(paths, key=lambda path: "numpy" not in path)
