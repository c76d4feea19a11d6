"""The package as it leaves the repository: the wheel's description has only absolute links
(PyPI shows it without the repository around it) and carries the LICENSE; the sdist carries
every file the tests need; a "missing package" message gives a command that works for a
wheel install as well as for a clone."""

import email
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """The wheel and the sdist, built from this checkout (no network: --no-build-isolation)."""
    out = tmp_path_factory.mktemp("dist")
    wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out), "."]
    subprocess.run(wheel, cwd=ROOT, check=True, timeout=600)
    sdist = f"from setuptools import build_meta; build_meta.build_sdist({str(out)!r})"
    subprocess.run([sys.executable, "-c", sdist], cwd=ROOT, check=True, timeout=600, capture_output=True)
    return out


def wheel_metadata(dist):
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(archive.read(name)), archive.namelist()


def test_wheel_description_is_the_readme_with_absolute_links(dist):
    metadata, _ = wheel_metadata(dist)
    description = metadata.get_payload()
    assert "## Quick start" in description
    targets = re.findall(r"\]\(([^)\s]+)\)", description)
    relative = [t for t in targets if not re.match(r"https?://|#", t)]
    assert len(targets) >= 13 and not relative, f"links that break on PyPI: {relative}"
    assert metadata["Description-Content-Type"] == "text/markdown"


def test_wheel_carries_the_license_classifiers_and_urls(dist):
    metadata, names = wheel_metadata(dist)
    assert any(name.endswith("licenses/LICENSE") for name in names)
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("Classifier") and metadata["Keywords"]
    assert any(url.startswith("Repository, https://github.com/") for url in metadata.get_all("Project-URL"))
    assert metadata["Requires-Python"] == ">=3.11"


def test_sdist_carries_every_file_git_tracks(dist):
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout (an unpacked sdist, say): nothing to compare with")
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        members = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    missing = [path for path in tracked.stdout.splitlines() if (ROOT / path).is_file() and path not in members]
    assert not missing, f"the sdist lacks {len(missing)} tracked files (MANIFEST.in): {missing[:10]}"


def test_missing_package_messages_work_for_a_wheel_install():
    """`pip install -e` needs a clone: a message telling a wheel user to run it cannot be followed."""
    hints = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in (ROOT / "refimpl").rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"pip install (-e|--editable)\b", line)
    ]
    assert not hints, f"install hints that only work in a clone: {hints}"


def test_wheel_carries_every_refimpl_module_the_notebooks_import(dist):
    """On Colab the notebooks have only the installed wheel: each refimpl module they import is in it."""
    _, names = wheel_metadata(dist)
    imported = {
        module
        for twin in (ROOT / "notebooks" / "py").glob("*.py")
        for module in re.findall(r"^(?:from|import) (refimpl(?:\.\w+)*)", twin.read_text(), re.MULTILINE)
    }
    assert "refimpl.interop.hub_standins" in imported, "the search found no notebook import of a submodule"
    missing = [
        module
        for module in sorted(imported)
        if f"{module.replace('.', '/')}.py" not in names and f"{module.replace('.', '/')}/__init__.py" not in names
    ]
    assert not missing, f"the wheel lacks {missing}"
