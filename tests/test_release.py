"""Where the course is published: one address (pyproject.toml's [project.urls] Repository), one tag
("v" + version), and every notebook's Colab badge and install cell written from them.

With [tool.refimpl] released = true these fail while the address is the placeholder
(README.md, "Before you publish")."""

import importlib.util
import re
import tomllib
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SYNC = _tool("sync_colab_cells")
REPOSITORY = _tool("repository")
NOTEBOOKS = sorted(path.name for path in (ROOT / "notebooks").glob("*.ipynb"))


def test_pyproject_as_it_stands_can_be_published_or_is_not_yet_released():
    assert REPOSITORY.publication_problems() == []


def test_released_with_the_placeholder_address_is_refused():
    problems = REPOSITORY.publication_problems(REPOSITORY.PLACEHOLDER_URL, is_released=True)
    assert len(problems) == 1 and "placeholder" in problems[0]


def test_released_with_a_real_address_is_accepted():
    assert REPOSITORY.publication_problems("https://github.com/someone/perceiver-course", is_released=True) == []


def test_an_address_that_is_not_a_github_repository_is_refused():
    assert REPOSITORY.publication_problems("https://example.org/course", is_released=False)


def test_release_flag_is_a_boolean_in_pyproject():
    assert isinstance(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["refimpl"]["released"], bool)


def test_links_point_at_the_version_tag_not_a_branch():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert REPOSITORY.release_ref() == f"v{version}"
    assert f"/blob/v{version}/notebooks/" in REPOSITORY.colab_url("notebooks/00_overview.ipynb")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_badge_and_install_cell_agree_with_pyproject(name):
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    badge, install = notebook.cells[0].source, notebook.cells[1].source
    expected_install = f"git+{REPOSITORY.repository_url()}@{REPOSITORY.release_ref()}"
    assert REPOSITORY.colab_url(f"notebooks/{name}") in badge, f"{name}: run python tools/sync_colab_cells.py"
    assert f'"{expected_install}"' in install, f"{name}: run python tools/sync_colab_cells.py"
    assert not re.search(r"/(?:blob|tree)/(?:main|master)/|@(?:main|master)\b", badge + install), "a moving branch"
    assert not SYNC.synced(notebook, name), f"{name} differs from what python tools/sync_colab_cells.py writes"


def test_absolute_links_leave_urls_anchors_and_kept_paths_alone():
    markdown = "[a](notebooks/x.ipynb) [b](https://e.org/p) [c](#tolerances) [d](LICENSE#L3) [e](keep.md)"
    rewritten = REPOSITORY.absolute_links(markdown, keep={"keep.md"})
    tag = REPOSITORY.release_ref()
    base = REPOSITORY.repository_url()
    assert rewritten == (
        f"[a]({base}/blob/{tag}/notebooks/x.ipynb) [b](https://e.org/p) [c](#tolerances) "
        f"[d]({base}/blob/{tag}/LICENSE#L3) [e](keep.md)"
    )
