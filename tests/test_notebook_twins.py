"""Every notebook has a text twin, notebooks/py/NN_name.py (jupytext's py:percent), with the same
cells: what people review and what ruff lints is what the notebook runs. Outputs stay in the .ipynb.

When a pair differs: `python tools/notebook_twins.py` (notebook changed: rewrite its twin) or
`jupytext --sync notebooks/py/NN_name.py` (twin edited: carry it into the notebook)."""

import importlib.util
from pathlib import Path

import jupytext
import nbformat
import pytest
from jupytext.config import load_jupytext_config
from jupytext.paired_paths import paired_paths

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TWINS = _tool("notebook_twins")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_and_its_twin_have_the_same_cells(path):
    twin = TWINS.twin_path(path)
    assert twin.is_file(), f"{path.name} has no twin {twin.relative_to(ROOT)}: run python tools/notebook_twins.py"
    ours, theirs = TWINS.cells(nbformat.read(path, as_version=4)), TWINS.cells(jupytext.read(twin))
    differing = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    assert len(ours) == len(theirs) and not differing, (
        f"{path.name} ({len(ours)} cells) and {twin.name} ({len(theirs)} cells) differ"
        + (f", first at cell {differing[0]}" if differing else "")
        + ": run python tools/notebook_twins.py, or jupytext --sync on the twin you edited"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_keeps_its_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    assert any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")


def test_every_twin_has_its_notebook():
    orphans = [
        twin.name for twin in TWINS.TWINS.glob("*.py") if not (ROOT / "notebooks" / f"{twin.stem}.ipynb").exists()
    ]
    assert not orphans, f"twins without a notebook: {orphans}"


def test_twin_holds_no_outputs_and_no_jupytext_version():
    text = TWINS.twin_path(NOTEBOOKS[0]).read_text()
    assert "image/png" not in text and "jupytext_version" not in text


def test_jupytext_pairs_each_notebook_with_its_twin():
    """pyproject.toml's [tool.jupytext] pairing is what `jupytext --sync` and Jupyter's jupytext use."""
    config = load_jupytext_config(str(NOTEBOOKS[0]))
    paths = [path for path, _ in paired_paths(str(NOTEBOOKS[0]), "ipynb", config.default_formats(str(NOTEBOOKS[0])))]
    assert str(TWINS.twin_path(NOTEBOOKS[0])) in paths
