"""Write the Colab badge and the Colab install cell of every notebook from pyproject.toml.

    python tools/sync_colab_cells.py          # rewrite notebooks/*.ipynb in place
    python tools/sync_colab_cells.py --check  # exit 1 if any notebook is out of date

The repository's address lives in one place, [project.urls] Repository in pyproject.toml, and
the badges and install cells point at the release tag "v" + version (tools/repository.py), never
at a moving default branch. Every notebook starts with a markdown cell holding the badge line,
then the install cell (a code cell starting with INSTALL_MARKER, tagged "remove-cell" so the
website leaves it out); both are inserted where missing. A notebook that needs packages beyond
the extra (PEER_INSTALLS: notebook 11's peers) gets a second set-up cell right after it,
starting with PEERS_MARKER (which starts with INSTALL_MARKER) and tagged the same; it installs
the exact pins of constraints.txt. Outputs are kept.
"""

import argparse
import json
import pathlib
import sys

import nbformat

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # tools/, when loaded by path from a test
from repository import colab_url, release_ref, repository_url  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
INSTALL_MARKER = "# Colab set-up"
INSTALL_TAGS = ["remove-cell"]  # the website (myst-nb) leaves the cell out
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
DISTRIBUTION = "perceiver-resampler-course"
COLAB_EXTRA = "notebooks"  # what the notebooks import, and not what Colab has (torch, numpy, matplotlib kept)
PEERS_MARKER = f"{INSTALL_MARKER}, this notebook's peers"
# notebook -> the pip installs it needs beyond the extra: (packages, pinned from constraints.txt; pip flags)
PEER_INSTALLS = {
    "11_family.ipynb": [
        (["flamingo-pytorch", "einops-exts"], []),
        (["open-flamingo"], ["--no-deps"]),  # its own requirements pin an old torch: helpers.py needs none of them
    ],
}
CONSTRAINTS = ROOT / "constraints.txt"


def badge_line(notebook_name):
    """The markdown line of the "Open in Colab" badge for notebooks/<notebook_name>."""
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(f'notebooks/{notebook_name}')})"


def install_source():
    """The first code cell: installs the package on Colab (its torch, numpy and matplotlib kept),
    and raises, saying what to do, when the install fails; elsewhere it does nothing."""
    return f"""\
{INSTALL_MARKER}: install the course package ({release_ref()}); Colab's torch, numpy and matplotlib are kept.
# Elsewhere this does nothing: install as the README says.
import subprocess
import sys

if "google.colab" in sys.modules:
    source = "git+{repository_url()}@{release_ref()}"
    requirement = f"{DISTRIBUTION}[{COLAB_EXTRA}] @ {{source}}"
    command = [sys.executable, "-m", "pip", "install", "--quiet", requirement]
    pip = subprocess.run(command, capture_output=True, text=True)
    if pip.returncode != 0:
        raise RuntimeError(
            f"Installing the course package failed (pip exit status {{pip.returncode}}); its last words:\\n"
            f"{{pip.stderr[-1500:]}}\\n"
            "Check that this runtime is connected to the internet, then run this cell again (Runtime > Restart "
            f"session first if it installed some packages). To install by hand: !pip install '{{requirement}}'"
        )"""


def pinned(package):
    """package==version as constraints.txt pins it (the one pin table)."""
    for line in CONSTRAINTS.read_text().splitlines():
        if line.split("==")[0].strip().lower() == package.lower() and "==" in line:
            return line.split("#")[0].strip()
    raise LookupError(f"constraints.txt pins no {package}: add its exact pin there")


def peers_source(notebook_name):
    """The second set-up cell of notebooks/<notebook_name>: on Colab, pip-installs the packages
    PEER_INSTALLS names for it (exact pins), raising, saying what to do, when an install fails;
    elsewhere it does nothing."""
    commands = [
        [*flags, *(pinned(package) for package in packages)] for packages, flags in PEER_INSTALLS[notebook_name]
    ]
    by_hand = "".join(f'\n                "\\n!pip install {" ".join(arguments)}"' for arguments in commands)
    return f"""\
{PEERS_MARKER}: what it needs beyond the course package (the peers' packages, pinned).
# Elsewhere this does nothing: install as the README says.
import subprocess
import sys

if "google.colab" in sys.modules:
    for arguments in {json.dumps(commands)}:
        command = [sys.executable, "-m", "pip", "install", "--quiet", *arguments]
        pip = subprocess.run(command, capture_output=True, text=True)
        if pip.returncode != 0:
            raise RuntimeError(
                f"Installing {{' '.join(arguments)}} failed (pip exit status {{pip.returncode}}); its last words:\\n"
                f"{{pip.stderr[-1500:]}}\\n"
                "Check that this runtime is connected to the internet, then run this cell again. "
                "To install by hand, in a cell:"{by_hand}
            )"""


def _synced_cell(cells, index, marker, source):
    """Make cells[index] the code cell `source` (starting with `marker`), tagged INSTALL_TAGS,
    inserting it there if the cell there is not one starting with `marker`; True if it changed."""
    cell = cells[index] if index < len(cells) else None
    changed = False
    if cell is None or cell.cell_type != "code" or not cell.source.startswith(marker):
        cell = nbformat.v4.new_code_cell(source)
        cells.insert(index, cell)
        changed = True
    elif cell.source != source:
        cell.source, changed = source, True
    if cell.metadata.get("tags") != INSTALL_TAGS:
        cell.metadata["tags"], changed = list(INSTALL_TAGS), True
    return changed


def synced(notebook, name):
    """notebook with its badge line, install cell and (PEER_INSTALLS) peers cell written from the
    URL and the pins; True if it changed."""
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
    install = next(
        (cell for cell in cells if cell.cell_type == "code" and cell.source.startswith(INSTALL_MARKER)), None
    )
    if install is None:
        install = nbformat.v4.new_code_cell(install_source())
        cells.insert(1, install)
        changed = True
    elif install.source != install_source():
        install.source, changed = install_source(), True
    if install.metadata.get("tags") != INSTALL_TAGS:
        install.metadata["tags"], changed = list(INSTALL_TAGS), True
    after = cells.index(install) + 1
    if name in PEER_INSTALLS:
        changed = _synced_cell(cells, after, PEERS_MARKER, peers_source(name)) or changed
    elif after < len(cells) and cells[after].cell_type == "code" and cells[after].source.startswith(PEERS_MARKER):
        del cells[after]  # a peers cell left from a notebook that no longer needs one
        changed = True
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
