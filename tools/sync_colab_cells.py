"""Write the Colab badge and the Colab install cell of every notebook from pyproject.toml's URL.

    python tools/sync_colab_cells.py          # rewrite notebooks/*.ipynb in place
    python tools/sync_colab_cells.py --check  # exit 1 if any notebook is out of date

The repository's address lives in one place, [project.urls] Repository in pyproject.toml.
Every notebook starts with a markdown cell holding the badge line, then the install cell
(a code cell starting with INSTALL_MARKER); both are inserted where missing. Outputs are kept.
"""

import argparse
import pathlib
import sys
import tomllib

import nbformat

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
INSTALL_MARKER = "# Colab set-up"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"


def repository_url():
    with open(ROOT / "pyproject.toml", "rb") as file:
        return tomllib.load(file)["project"]["urls"]["Repository"].rstrip("/")


def badge_line(notebook_name, url=None):
    """The markdown line of the "Open in Colab" badge for notebooks/<notebook_name>."""
    owner_repo = (url or repository_url()).removeprefix("https://github.com/")
    return f"[![Open In Colab]({BADGE_IMAGE})](https://colab.research.google.com/github/{owner_repo}/blob/main/notebooks/{notebook_name})"


def install_source(url=None):
    """The first code cell: installs the package on Colab (its torch kept), nothing elsewhere."""
    return (
        f"{INSTALL_MARKER}: install the course package (Colab's own torch is kept). Elsewhere this does nothing.\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        f'    %pip install --quiet "perceiver-resampler-course[course] @ git+{url or repository_url()}"'
    )


def synced(notebook, name):
    """notebook with its badge line and install cell written from the URL; True if it changed."""
    cells, changed = notebook.cells, False
    badge = badge_line(name)
    first = cells[0]
    lines = first.source.splitlines()
    if first.cell_type != "markdown":
        raise ValueError(f"{name}: the first cell must be the markdown title cell")
    kept = [line for line in lines if not line.startswith("[![Open In Colab]")]
    title, rest = (kept[0], "\n".join(kept[1:]).strip("\n")) if kept else ("", "")
    new_source = "\n\n".join(part for part in (title, badge, rest) if part)  # title, badge, the rest
    if new_source != first.source:
        first.source, changed = new_source, True
    install = next((cell for cell in cells if cell.cell_type == "code" and cell.source.startswith(INSTALL_MARKER)), None)
    if install is None:
        cells.insert(1, nbformat.v4.new_code_cell(install_source()))
        changed = True
    elif install.source != install_source():
        install.source, changed = install_source(), True
    return changed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report notebooks that are out of date")
    args = parser.parse_args()
    stale = []
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        if synced(notebook, path.name):
            stale.append(path.name)
            if not args.check:
                nbformat.write(notebook, path)
    verb = "out of date" if args.check else "updated"
    print(f"{verb}: {', '.join(stale)}" if stale else "all notebooks up to date")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
