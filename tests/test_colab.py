"""The notebooks' Colab set-up cell (tools/sync_colab_cells.py): it stops with what to do when the
install fails, does nothing outside Colab, and installs only what Colab lacks. Notebook 11's
second set-up cell (the peers' packages beyond the extra, at constraints.txt's pins) likewise.

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

import nbformat
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


class PipRecorder:
    """subprocess.run stand-in: records each pip command, answers with `returncode`."""

    def __init__(self, returncode):
        self.returncode, self.commands = returncode, []

    def __call__(self, command, **kwargs):
        self.commands.append(command)
        return types.SimpleNamespace(returncode=self.returncode, stderr="pip: no network here")


def constraints_pins():
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return {line.split("#")[0].strip() for line in lines if "==" in line and not line.startswith("#")}


@pytest.mark.parametrize("notebook_name", sorted(SYNC.PEER_INSTALLS))
def test_peers_cell_on_colab_installs_constraints_pins_open_flamingo_without_its_deps(monkeypatch, notebook_name):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    pip = PipRecorder(returncode=0)
    monkeypatch.setattr(subprocess, "run", pip)
    run_cell(SYNC.peers_source(notebook_name))
    installs = [command[command.index("install") + 1 :] for command in pip.commands]
    assert all(command[:3] == [sys.executable, "-m", "pip"] for command in pip.commands)
    requirements = [argument for arguments in installs for argument in arguments if not argument.startswith("-")]
    assert set(requirements) <= constraints_pins(), f"not constraints.txt's pins: {requirements}"
    assert ["--quiet", "--no-deps", "open-flamingo==2.0.1"] in installs, installs
    assert ["--quiet", "flamingo-pytorch==0.1.2", "einops-exts==0.0.4"] in installs, installs


def test_peers_cell_raises_saying_what_to_do_when_an_install_fails(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", PipRecorder(returncode=1))
    with pytest.raises(RuntimeError) as raised:
        run_cell(SYNC.peers_source("11_family.ipynb"))
    message = str(raised.value)
    assert "Installing flamingo-pytorch==0.1.2 einops-exts==0.0.4 failed (pip exit status 1)" in message
    assert "pip: no network here" in message, "pip's own error is not shown"
    assert "run this cell again" in message and "\n!pip install --no-deps open-flamingo==2.0.1" in message


def test_peers_cell_does_nothing_outside_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    pip = PipRecorder(returncode=0)
    monkeypatch.setattr(subprocess, "run", pip)
    run_cell(SYNC.peers_source("11_family.ipynb"))
    assert pip.commands == [], "the peers cell ran a command outside Colab"


def test_sync_puts_the_peers_cell_right_after_the_install_cell_and_only_where_needed():
    notebook = nbformat.read(ROOT / "notebooks" / "11_family.ipynb", as_version=4)
    assert not SYNC.synced(notebook, "11_family.ipynb"), "run python tools/sync_colab_cells.py"
    install, peers = notebook.cells[1], notebook.cells[2]
    assert install.source == SYNC.install_source() and peers.source == SYNC.peers_source("11_family.ipynb")
    assert peers.metadata.tags == SYNC.INSTALL_TAGS == ["remove-cell"], "the website must leave it out too"
    del notebook.cells[2]
    assert SYNC.synced(notebook, "11_family.ipynb") and notebook.cells[2].source == peers.source
    assert notebook.cells[2].metadata.tags == ["remove-cell"]
    assert SYNC.synced(notebook, "10_gradients.ipynb"), "a notebook without peers keeps a peers cell"
    assert not notebook.cells[2].source.startswith(SYNC.PEERS_MARKER)


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
