"""refimpl.threads.limit_blas_threads: NumPy's BLAS really runs on the threads asked for."""

import subprocess
import sys
import textwrap

import pytest

from refimpl.threads import limit_blas_threads


def test_limit_blas_threads_says_what_it_did():
    said = limit_blas_threads(1)
    assert "1 thread" in said or said.startswith("BLAS threads unchanged"), said


@pytest.mark.skipif(sys.platform != "linux", reason="NumPy's wheels bundle OpenBLAS with this setter on Linux")
def test_limit_blas_threads_sets_the_loaded_openblas_to_one_thread():
    # in a fresh process (the limit stays for the rest of a process), read back by OpenBLAS's own getter
    script = textwrap.dedent(
        """
        import ctypes
        from refimpl.threads import _loaded_openblas, limit_blas_threads
        paths = _loaded_openblas()
        if not paths:
            print("no OpenBLAS loaded")
            raise SystemExit(0)
        getter = ctypes.CDLL(paths[0]).scipy_openblas_get_num_threads64_
        said = limit_blas_threads(1)
        print(said, "|", getter())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    if "no OpenBLAS loaded" in done.stdout:
        pytest.fail("NumPy's wheels bundle OpenBLAS on Linux; none was found loaded: " + done.stdout)
    said, threads = done.stdout.rsplit("|", 1)
    assert int(threads) == 1
    assert "1 thread" in said


@pytest.mark.parametrize(("threads", "error"), [(0, ValueError), (1.5, TypeError), (True, TypeError)])
def test_limit_blas_threads_names_a_bad_count(threads, error):
    with pytest.raises(error, match="threads must be"):
        limit_blas_threads(threads)
