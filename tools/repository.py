"""Where the course is published, read from pyproject.toml: the one place that says it.

    repository_url()   [project.urls] Repository, e.g. "https://github.com/OWNER/NAME"
    release_ref()      the git tag every published link points at: "v" + [project] version
    released()         [tool.refimpl] released, the flag set when the course is published
    blob_url(path)     the file at that tag on GitHub;  colab_url(path): the notebook in Colab
    publication_problems()           what stops a release: the placeholder address while released
    absolute_links(markdown, keep)   relative Markdown links made absolute (at that tag)

The Colab badges and install cells (tools/sync_colab_cells.py), the website's launch links
(tools/build_site.py) and the package description on PyPI (setup.py) are written from these,
so they never point at a moving default branch. Standard library only: setup.py uses it.
"""

import pathlib
import re
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent

# The address in pyproject.toml until the course is published under its real one; with
# [tool.refimpl] released = true, tests/test_release.py fails while it is still this.
PLACEHOLDER_URL = "https://github.com/perceiver-resampler-course/perceiver-resampler-course"

_LINK = re.compile(r"(\]\()([^)\s]+)(\))")  # the target of an inline Markdown link: [text](target)


def pyproject():
    with open(ROOT / "pyproject.toml", "rb") as file:
        return tomllib.load(file)


def repository_url():
    return pyproject()["project"]["urls"]["Repository"].rstrip("/")


def release_ref():
    """The tag of this version, "v0.1.0": what badges, install cells and links point at."""
    return "v" + pyproject()["project"]["version"]


def released():
    return bool(pyproject().get("tool", {}).get("refimpl", {}).get("released", False))


def owner_repo():
    """ "OWNER/NAME" of the GitHub repository."""
    return repository_url().removeprefix("https://github.com/")


def blob_url(path):
    """The file at the release tag on GitHub (a folder: its tree)."""
    kind = "tree" if (ROOT / path).is_dir() else "blob"
    return f"{repository_url()}/{kind}/{release_ref()}/{path}"


def colab_url(path):
    """Colab's address for the notebook at `path` (from the repository root), at the release tag."""
    return f"https://colab.research.google.com/github/{owner_repo()}/blob/{release_ref()}/{path}"


def absolute_links(markdown, keep=()):
    """markdown with every relative link target made absolute (blob_url), except the paths in `keep`.

    Absolute URLs and in-page anchors ("#tolerances") are left as they are; an anchor after a
    path ("README.md#tolerances") stays on the rewritten target.
    """

    def rewrite(match):
        target = match.group(2)
        path, _, anchor = target.partition("#")
        if not path or re.match(r"[a-z][a-z0-9+.-]*:", path) or path in keep:
            return match.group(0)
        return match.group(1) + blob_url(path) + ("#" + anchor if anchor else "") + match.group(3)

    return _LINK.sub(rewrite, markdown)


def publication_problems(url=None, is_released=None):
    """What is wrong with publishing as pyproject.toml stands (an empty list: nothing).

    url, is_released: [project.urls] Repository and [tool.refimpl] released, read from
    pyproject.toml unless given.
    """
    url = repository_url() if url is None else url.rstrip("/")
    is_released = released() if is_released is None else is_released
    problems = []
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
        problems.append(f"[project.urls] Repository must be https://github.com/OWNER/NAME; got {url!r}")
    if is_released and url == PLACEHOLDER_URL:
        problems.append(
            f"[tool.refimpl] released = true, but [project.urls] Repository is still the placeholder {url}: "
            "set the real address, then run python tools/sync_colab_cells.py"
        )
    return problems
