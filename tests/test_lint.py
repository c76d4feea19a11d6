"""ruff, configured in pyproject.toml (one line length, 120), passes over the whole project:
refimpl, tests, tools, benchmarks and the notebooks' code (their twins, notebooks/py/*.py).
Fix with `ruff format .` and `ruff check --fix .`; .pre-commit-config.yaml runs the same."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINTED = ["refimpl", "tests", "tools", "benchmarks", "notebooks/py"]


def ruff(*args):
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True)


def test_ruff_check_passes():
    result = ruff("check", "--no-cache", ".")
    assert result.returncode == 0, (
        f"ruff check found problems (ruff check --fix . fixes some):\n{result.stdout[-4000:]}"
    )


def test_ruff_format_check_passes():
    result = ruff("format", "--check", "--no-cache", ".")
    assert result.returncode == 0, f"files ruff format would change (run ruff format .):\n{result.stdout[-4000:]}"


def test_ruff_covers_every_part_of_the_project_and_the_notebooks_code_once():
    files = [Path(line) for line in ruff("check", "--show-files", ".").stdout.splitlines() if line.strip()]
    relative = [str(path.relative_to(ROOT)) for path in files if path.is_absolute()]
    for folder in LINTED:
        assert any(path.startswith(folder + "/") for path in relative), f"ruff does not lint {folder}/"
    assert not [path for path in relative if path.endswith(".ipynb")], "the notebooks are linted twice"
