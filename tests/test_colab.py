"""The notebooks' Colab set-up cell (tools/sync_colab_cells.py): it stops with what to do when the
install fails, does nothing outside Colab, and installs only what Colab lacks.

The last test makes a venv with Colab's torch, numpy and matplotlib preinstalled (torch 2.13.0, the
CPU build this project pins, numpy 2.0.2 and matplotlib 3.10.0, as on Colab) and asks pip what
installing the cell's extra would change (--dry-run): none of the three may be replaced."""

import importlib.util
import json
import re
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COLAB_PREINSTALLED = {"torch": "2.13.0", "numpy": "2.0.2", "matplotlib": "3.10.0"}


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SYNC = _tool("sync_colab_cells")
REPOSITORY = _tool("repository")


def run_cell(source):
    exec(compile(source, "<Colab set-up cell>", "exec"), {})


def test_set_up_cell_raises_saying_what_to_do_when_the_install_fails(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    source = SYNC.install_source()
    remote = f"git+{REPOSITORY.repository_url()}@{REPOSITORY.release_ref()}"
    assert remote in source
    missing = (Path(__file__).parent / "no-such-checkout").as_uri()  # fails at once, offline
    with pytest.raises(RuntimeError) as raised:
        run_cell(source.replace(remote, missing))
    message = str(raised.value)
    assert "Installing the course package failed" in message
    assert "run this cell again" in message and "!pip install" in message
    assert "no-such-checkout" in message, "pip's own error is not shown"


def test_set_up_cell_does_nothing_outside_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)

    def refuse(*args, **kwargs):
        raise AssertionError("the set-up cell ran a command outside Colab")

    monkeypatch.setattr(subprocess, "run", refuse)
    run_cell(SYNC.install_source())


def test_colab_extra_is_what_the_notebooks_import_without_jupyter_or_the_tests_packages():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    colab = {requirement_name(r) for r in extras[SYNC.COLAB_EXTRA]}
    assert {"matplotlib", "scikit-image", "tqdm", "pillow"} <= colab
    unwanted = colab & ({requirement_name(r) for r in extras["dev"] + extras["docs"]} | {"jupyterlab", "ipykernel"})
    assert not unwanted, f"the Colab cell would install {sorted(unwanted)}"
    assert f"{SYNC.DISTRIBUTION}[{SYNC.COLAB_EXTRA}]" in extras["course"], "[course] is not [notebooks] + Jupyter"
    assert f'requirement = f"{SYNC.DISTRIBUTION}[{SYNC.COLAB_EXTRA}] @ {{source}}"' in SYNC.install_source()


def requirement_name(requirement):
    return re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group(0).lower()


@pytest.fixture(scope="module")
def colab_like_venv(tmp_path_factory):
    """A venv with Colab's torch, numpy and matplotlib (and their dependencies) installed."""
    venv = tmp_path_factory.mktemp("colab") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    pins = [f"{name}=={version}" for name, version in COLAB_PREINSTALLED.items()]
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *pins], check=True, timeout=900)
    return python


def test_colab_extra_keeps_colabs_torch_numpy_and_matplotlib(colab_like_venv, tmp_path):
    report = tmp_path / "report.json"
    command = [str(colab_like_venv), "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*command, "--report", str(report), f"{ROOT}[{SYNC.COLAB_EXTRA}]"], check=True, timeout=900)
    installs = json.loads(report.read_text())["install"]
    would_install = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in installs}
    print("the Colab cell would install:", ", ".join(f"{n}=={v}" for n, v in sorted(would_install.items())))
    assert SYNC.DISTRIBUTION in would_install, "the dry run did not resolve the course package itself"
    replaced = {name: would_install[name] for name in COLAB_PREINSTALLED if name in would_install}
    assert not replaced, f"the Colab cell would replace Colab's {replaced} (preinstalled: {COLAB_PREINSTALLED})"
    assert {"scikit-image", "tqdm"} <= set(would_install), f"the notebooks' packages are missing: {would_install}"
