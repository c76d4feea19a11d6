"""`python -m refimpl selfcheck`: the set-up check students run in class."""

import io
import subprocess
import sys

import refimpl.__main__ as cli


def test_selfcheck_passes_here_and_lists_every_installed_backend():
    done = subprocess.run([sys.executable, "-m", "refimpl", "selfcheck"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for row in ("| NumPy      | float32", "| Numba      | float64", "| torch CPU  | float64", "| torch CPU  | float32"):
        assert row in done.stdout
    assert "All backends agree." in done.stdout
    assert " NO " not in done.stdout


def test_selfcheck_exits_nonzero_and_names_the_backend_that_disagrees(monkeypatch):
    def off_by_a_little(params, x, config, mask):
        return cli.perceiver_resampler(params, x, config, mask=mask) * (1 + 1e-9)

    healthy = cli.backends()
    monkeypatch.setattr(
        cli, "backends", lambda: [*healthy, ("Broken", "float64", ("float64", "torch vs numpy"), off_by_a_little)]
    )
    out = io.StringIO()
    assert cli.selfcheck(out) == 1
    assert "| Broken     | float64  |  1.0e-09 |  1e-12 | NO  |" in out.getvalue()
    assert "1 backend(s) disagree" in out.getvalue()


def test_selfcheck_says_before_the_table_that_a_first_run_compiles_numba_kernels():
    out = io.StringIO()
    cli.selfcheck(out)
    text = out.getvalue()
    assert "Numba compiles refimpl's kernels once" in text
    assert text.index("Numba compiles") < text.index("| backend")
