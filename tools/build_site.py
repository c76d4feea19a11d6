"""Build the course's website from the committed notebooks and the README, offline.

    python tools/build_site.py                 # -> docs/_build/html/index.html
    python tools/build_site.py --out DIR       # somewhere else

Sphinx with myst-nb renders the notebooks' stored outputs (nothing is executed), the
sphinx-book-theme lays out the pages and sphinx-mathjax-offline serves MathJax from the site
itself, so neither the build nor the pages need a network. Warnings are errors.

The pages are built from copies, staged in docs/_build/source; the notebooks themselves are
not changed. Each copy gets:
  - its Colab badge and install cell (and notebook 11's peers cell) as tools/sync_colab_cells.py
    writes them; the set-up cells are tagged "remove-cell" (left out of the page) and the
    badge, an image from Colab's servers, becomes a text link (the theme adds a Colab launch button as well);
  - its progress bars (tqdm's stderr stream) removed; any other stderr output stays;
  - after each exercise's check cell (`ex.check_<name>(<name>)`), the worked solution from
    refimpl/exercises/<module>.py, folded away (tagged "hide-input": a "Show the worked
    solution" toggle).
README.md becomes the front page, with the navigation (a toctree) added at its end.
"""

import argparse
import ast
import pathlib
import re
import shutil
import sys

import nbformat

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # tools/, when loaded by path from a test
import sync_colab_cells  # noqa: E402
from repository import absolute_links, colab_url  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BUILD = DOCS / "_build"
PAGES = ["benchmarks/RESULTS.md"]  # Markdown pages besides the README and the notebooks
EXERCISES = ROOT / "refimpl" / "exercises"
SOLUTION_TAGS = ["hide-input"]

_EXERCISE_MODULE = re.compile(r"^from refimpl\.exercises import (\w+) as ex$", re.MULTILINE)
_CHECK = re.compile(r"^ex\.check_(\w+)\((\w+)\)", re.MULTILINE)
_PROGRESS_BAR = re.compile(r"(\r[^\r\n]*\|[^\r\n]*\|[^\r\n]*|\s)*")  # tqdm: "\rname:  5%|▍    | 48/1000 [...]"


def notebook_names():
    return sorted(path.name for path in (ROOT / "notebooks").glob("*.ipynb"))


def solution_source(module, name):
    """The source of the worked solution `name` in refimpl/exercises/<module>.py."""
    path = EXERCISES / f"{module}.py"
    source = path.read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            start = (node.decorator_list[0] if node.decorator_list else node).lineno
            return "\n".join(source.splitlines()[start - 1 : node.end_lineno])
    raise LookupError(f"{path.relative_to(ROOT)} has no worked solution {name!r} for its check_{name}")


def is_progress_bar(output):
    return output.output_type == "stream" and output.name == "stderr" and _PROGRESS_BAR.fullmatch(output.text)


def page_notebook(notebook, name):
    """The notebook as the website shows it (a changed copy; see the module docstring)."""
    notebook = nbformat.from_dict(notebook)
    sync_colab_cells.synced(notebook, name)
    first = notebook.cells[0]
    badge = sync_colab_cells.badge_line(name)
    first.source = first.source.replace(badge, f"[Open this notebook in Colab]({colab_url(f'notebooks/{name}')})")
    sources = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    module = _EXERCISE_MODULE.search(sources)
    cells = []
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [output for output in cell.outputs if not is_progress_bar(output)]
        cells.append(cell)
        check = _CHECK.match(cell.source) if cell.cell_type == "code" else None
        if check:
            if module is None:
                raise LookupError(f"{name} checks an exercise but never imports refimpl.exercises.<module> as ex")
            solution = nbformat.v4.new_code_cell(solution_source(module.group(1), check.group(1)))
            solution.metadata["tags"] = list(SOLUTION_TAGS)
            cells.append(solution)
    notebook.cells = cells
    return notebook


def front_page(readme):
    """README.md with the site's navigation at its end; its links to files that are not pages of
    the site (LICENSE, say) lead to them on GitHub, at the release tag."""
    readme = absolute_links(readme, keep={*PAGES, *(f"notebooks/{name}" for name in notebook_names())})
    chapters = "\n".join(f"notebooks/{pathlib.Path(name).stem}" for name in notebook_names())
    others = "\n".join(str(pathlib.Path(page).with_suffix("")) for page in PAGES)
    return (
        f"{readme.rstrip()}\n\n"
        f"```{{toctree}}\n:hidden:\n:caption: Notebooks\n\n{chapters}\n```\n\n"
        f"```{{toctree}}\n:hidden:\n:caption: Benchmarks\n\n{others}\n```\n"
    )


def stage(source_dir):
    """Write the site's sources (README front page, pages, notebook copies) into source_dir."""
    if source_dir.exists():
        shutil.rmtree(source_dir)
    (source_dir / "notebooks").mkdir(parents=True)
    (source_dir / "index.md").write_text(front_page((ROOT / "README.md").read_text()))
    for page in PAGES:
        (source_dir / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / page, source_dir / page)
    for name in notebook_names():
        notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
        nbformat.write(page_notebook(notebook, name), source_dir / "notebooks" / name)


def build(out_dir=BUILD / "html", source_dir=BUILD / "source"):
    """Stage the sources and run Sphinx (warnings are errors); return Sphinx's exit status."""
    from sphinx.cmd.build import build_main

    stage(source_dir)
    doctrees = pathlib.Path(out_dir).parent / "doctrees"
    return build_main(["-W", "--keep-going", "-q", "-b", "html", "-c", str(DOCS), "-d", str(doctrees),
                       str(source_dir), str(out_dir)])  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=BUILD / "html", help="the HTML folder (docs/_build/html)")
    args = parser.parse_args()
    status = build(args.out.resolve())
    if status == 0:
        print(f"site built: {args.out / 'index.html'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
