"""Write each notebook's text twin, notebooks/py/NN_name.py (jupytext's py:percent), from the notebook.

    python tools/notebook_twins.py           # write every twin from its .ipynb
    python tools/notebook_twins.py --check   # exit 1 if a twin differs from its notebook

The twin holds the notebook's cells (markdown and code, with their tags) without outputs: it is
what people review, and what ruff lints. The pairing is configured in pyproject.toml
([tool.jupytext]); the other direction, a twin's change into its notebook with the outputs kept,
is `jupytext --sync notebooks/py/NN_name.py`. tests/test_notebook_twins.py compares the pairs.
"""

import argparse
import pathlib
import sys

import jupytext
import nbformat
from jupytext.config import load_jupytext_config

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
TWINS = NOTEBOOKS / "py"
FORMAT = "py:percent"


def twin_path(notebook_path):
    return TWINS / f"{pathlib.Path(notebook_path).stem}.py"


def twin_text(notebook_path):
    """The twin's text for the notebook at notebook_path, written with pyproject.toml's jupytext settings."""
    notebook = nbformat.read(notebook_path, as_version=4)
    return jupytext.writes(notebook, fmt=FORMAT, config=load_jupytext_config(str(notebook_path)))


def cells(notebook):
    """(cell type, source) of every cell: what a pair must agree on (outputs and metadata aside)."""
    return [(cell.cell_type, cell.source) for cell in notebook.cells]


def stale_twins():
    """The twins (paths) that differ from their notebook, are missing, or have no notebook."""
    notebooks = sorted(NOTEBOOKS.glob("*.ipynb"))
    stale = [twin_path(path) for path in notebooks if not twin_path(path).exists()]
    stale += [
        twin_path(path)
        for path in notebooks
        if twin_path(path).exists()
        and cells(jupytext.read(twin_path(path))) != cells(nbformat.read(path, as_version=4))
    ]
    stale += [path for path in sorted(TWINS.glob("*.py")) if not (NOTEBOOKS / f"{path.stem}.ipynb").exists()]
    return stale


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report twins that differ from their notebook")
    args = parser.parse_args()
    if args.check:
        stale = stale_twins()
        for path in stale:
            print(f"out of date: {path.relative_to(ROOT)}")
        print("every twin matches its notebook" if not stale else "run: python tools/notebook_twins.py")
        return 1 if stale else 0
    TWINS.mkdir(exist_ok=True)
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        twin = twin_path(path)
        text = twin_text(path)
        if not twin.exists() or twin.read_text() != text:
            twin.write_text(text)
            print(f"wrote {twin.relative_to(ROOT)}")
    for orphan in sorted(TWINS.glob("*.py")):
        if not (NOTEBOOKS / f"{orphan.stem}.ipynb").exists():
            orphan.unlink()
            print(f"removed {orphan.relative_to(ROOT)} (no notebook)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
