"""The notebooks' house rules, checked on the committed files (nbval runs them; their time
is a benchmark, benchmarks/notebook_times.py, not a test): all there and listed in the README, Colab badge
and install cell written from the one repository URL, kernelspec python3, outputs committed
and free of machine paths and addresses, agreement checks, exercises with checks."""

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = [
    "00_overview",
    "01_attention",
    "02_cross_attention",
    "03_numba",
    "04_resampler",
    "05_pytorch",
    "06_training",
    "07_latents",
    "08_ablation",
    "09_gated_xattn",
    "10_gradients",
    "11_family",
]


def _sync_tool():
    spec = importlib.util.spec_from_file_location("sync_colab_cells", ROOT / "tools" / "sync_colab_cells.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SYNC = _sync_tool()


def read(name):
    return nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)


def code_cells(notebook):
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def output_text(cell):
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        for key, value in output.get("data", {}).items():
            if key.startswith("text/"):
                parts.append(value if isinstance(value, str) else "".join(value))
    return "".join(parts)


def test_every_notebook_is_there_and_no_other():
    assert sorted(path.stem for path in (ROOT / "notebooks").glob("*.ipynb")) == NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_readme_lists_the_notebook(name):
    assert f"notebooks/{name}.ipynb" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_colab_badge_and_install_cell_use_the_repository_url(name):
    notebook = read(name)
    assert SYNC.badge_line(f"{name}.ipynb") in notebook.cells[0].source.splitlines()
    first_code = code_cells(notebook)[0]
    assert first_code.source == SYNC.install_source()
    assert SYNC.repository_url() in first_code.source


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_needs_only_the_installed_package_not_a_clone(name):
    sources = "\n".join(cell.source for cell in code_cells(read(name)))
    assert "sys.path" not in sources and "tests/" not in sources and '"tests"' not in sources, (
        f"{name} reaches into the repository: Colab has only the installed package"
    )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_kernelspec_is_python3(name):
    assert read(name).metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_outputs_are_committed_without_errors(name):
    for index, cell in enumerate(code_cells(read(name))):
        assert cell.execution_count is not None, f"code cell {index} was not run before committing"
        assert not [o for o in cell.outputs if o.output_type == "error"], f"code cell {index} committed with an error"
    assert any(o.get("data", {}).get("image/png") for cell in code_cells(read(name)) for o in cell.outputs), "no figure"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_outputs_hold_no_machine_paths_or_addresses(name):
    for index, cell in enumerate(code_cells(read(name))):
        text = output_text(cell)
        found = re.findall(r"/(?:work|tmp|home|root|Users)/\S*|0x[0-9a-fA-F]{6,}", text)
        assert not found, f"code cell {index} output shows {found[:3]}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_checked_outputs_are_seeded_summaries(name):
    checked = [cell for cell in code_cells(read(name)) if "# NBVAL_CHECK_OUTPUT" in cell.source]
    assert checked, "no # NBVAL_CHECK_OUTPUT cell"
    for cell in checked:
        assert output_text(cell).strip(), "a # NBVAL_CHECK_OUTPUT cell with no output"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_checks_agreement_with_refimpl(name):
    sources = "\n".join(cell.source for cell in code_cells(read(name)))
    assert "refimpl" in sources
    assert re.search(r"assert_allclose|assert_close|agree\(|\bassert\b", sources), "no agreement check"


@pytest.mark.parametrize("name", NOTEBOOKS[1:])
def test_notebook_has_exercises_each_followed_by_its_check(name):
    cells = code_cells(read(name))
    stubs = [i for i, cell in enumerate(cells) if "raise NotImplementedError" in cell.source]
    assert len(stubs) >= 2, f"{len(stubs)} exercise(s)"
    for i in stubs:
        function = re.search(r"def (\w+)\(", cells[i].source).group(1)
        following = "\n".join(cell.source for cell in cells[i + 1 : i + 3])
        assert re.search(rf"ex\.check_\w+\({function}\)", following), f"exercise {function} has no check cell after it"


def test_readme_ablation_table_is_notebook_8s():
    """The README quotes notebook 8's ablation table as the notebook last computed it."""
    table_cells = [
        "".join(output["data"]["text/markdown"]).strip()
        for cell in code_cells(read("08_ablation"))
        for output in cell.get("outputs", [])
        if "text/markdown" in output.get("data", {})
        and "Flamingo-3B, as reported" in "".join(output["data"]["text/markdown"])
    ]
    assert len(table_cells) == 1, f"notebook 8 shows {len(table_cells)} ablation tables"
    readme = (ROOT / "README.md").read_text()
    assert table_cells[0] in readme, "README.md's ablation table differs from notebook 8's output: copy it over"
