"""The README's code runs, its tolerance table is the one the tests use, and the
docstring examples in refimpl hold."""

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import refimpl

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)
    assert blocks, "the README has no python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_readme_tolerance_table_matches_refimpl_tolerances():
    section = README.split("## Tolerances", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ((?:b?float)\d+) \| (.+?) \| ([0-9.e-]+) \|$", section, flags=re.MULTILINE)
    documented = sorted((dtype, float(bound)) for dtype, _, bound in rows)
    assert documented == sorted((dtype, bound) for (dtype, _), bound in refimpl.TOLERANCES.items())


def test_docstring_examples_hold():
    modules = [importlib.import_module(m.name) for m in pkgutil.walk_packages(refimpl.__path__, "refimpl.")]
    results = [doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE) for module in [refimpl, *modules]]
    assert sum(r.attempted for r in results) > 0, "no docstring example found"
    assert sum(r.failed for r in results) == 0
