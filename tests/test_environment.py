"""The set-up files agree with each other.

pyproject.toml names the direct dependencies (loose lower bounds),
constraints.txt pins the tested set for pip, environment.yml pins the same
direct packages for conda (those conda-forge lacks in its `pip:` section, pinned
with ==), README.md's quick start is what a student types,
and .ci/run runs that quick start. These tests fail, saying what differs,
when one of them drifts from the others.
"""

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent

PYPI_TO_CONDA = {"torch": "pytorch"}  # PyPI name -> conda-forge name, where they differ
CONDA_TO_PYPI = {conda: pypi for pypi, conda in PYPI_TO_CONDA.items()}
CONDA_ONLY = {"python", "pip"}  # in environment.yml, but not Python packages we pin with pip
TORCH_PIN = "==2.13.0"  # the CPU wheel on disk; anything looser pulls a CUDA build

QUICK_START_HEADING = "## Quick start"
SETUP_PREFIX = "python -m pip install "
DEMO_COMMAND = "python -m refimpl demo --out latents.png"
JUPYTER_COMMAND = "jupyter lab notebooks/"
TEST_COMMAND = "python -m pytest"


def normalise(name):
    """A distribution name in PEP 503 form: lowercase, runs of -_. become one -."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement):
    """'numpy>=1.24' -> 'numpy';  'torch[opt]>=2 ; python_version<"4"' -> 'torch'."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, f"cannot read a package name from requirement {requirement!r}"
    return match.group(1)


def quick_start_block(readme_text):
    """Lines of the first ```bash block in README.md's quick-start section (the rule .ci/run uses)."""
    lines = readme_text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.rstrip() == QUICK_START_HEADING)
    except StopIteration:
        pytest.fail(f"README.md has no {QUICK_START_HEADING!r} heading")
    block = None
    for line in lines[start + 1 :]:
        if block is None:
            if line.startswith("## "):
                break
            if line.rstrip() == "```bash":
                block = []
        elif line.rstrip() == "```":
            return block
        else:
            block.append(line)
    pytest.fail(f"README.md's {QUICK_START_HEADING!r} section has no closed ```bash block")


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pyproject_dependencies():
    """Normalised names of every direct dependency: base and all extras (an extra that names the
    project itself, as [course] names [notebooks], adds no package of its own)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return sorted({normalise(requirement_name(r)) for r in requirements} - {normalise(project["name"])})


@pytest.fixture(scope="module")
def constraint_lines():
    """The non-comment, non-blank lines of constraints.txt."""
    text = (ROOT / "constraints.txt").read_text()
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return [line for line in lines if line]


@pytest.fixture(scope="module")
def constraint_pins(constraint_lines):
    """{normalised PyPI name: version} from constraints.txt."""
    pins = {}
    for line in constraint_lines:
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        assert match, f"constraints.txt line {line!r} is not of the form name==version"
        name = normalise(match.group(1))
        assert name not in pins, f"constraints.txt pins {name} twice"
        pins[name] = match.group(2)
    return pins


@pytest.fixture(scope="module")
def conda_pins():
    """{normalised conda name: version or None} from environment.yml's conda dependencies."""
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pins = {}
    for spec in environment["dependencies"]:
        if not isinstance(spec, str):  # the `pip:` section
            continue
        # name, name=version, name==version or name=version=build
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:==?\s*([^=\s]+)(?:=\S+)?)?", spec.strip())
        assert match, f"environment.yml dependency {spec!r} is not of the form name=version[=build]"
        pins[normalise(match.group(1))] = match.group(2)
    return pins


@pytest.fixture(scope="module")
def environment_pip_section():
    """The entries of environment.yml's `pip:` section (packages conda-forge lacks, and `-e .`)."""
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    sections = [spec["pip"] for spec in environment["dependencies"] if isinstance(spec, dict) and "pip" in spec]
    assert len(sections) <= 1, "environment.yml has more than one pip: section"
    return [str(entry).strip() for entry in (sections[0] if sections else [])]


@pytest.fixture(scope="module")
def pip_section_pins(environment_pip_section):
    """{normalised PyPI name: version} from environment.yml's `pip:` section (every entry but
    the project's own `-e .` must be an exact name==version pin)."""
    pins = {}
    for entry in environment_pip_section:
        if entry == "-e .":
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", entry)
        assert match, f"environment.yml pip: entry {entry!r} is not of the form name==version (or '-e .')"
        name = normalise(match.group(1))
        assert name not in pins, f"environment.yml's pip: section pins {name} twice"
        pins[name] = match.group(2)
    return pins


@pytest.fixture(scope="module")
def readme_commands():
    return quick_start_block((ROOT / "README.md").read_text())


@pytest.fixture(scope="module")
def ci_script():
    return (ROOT / ".ci" / "run").read_text()


# ---------------------------------------------------------------- pyproject -> pins


def test_every_pyproject_dependency_is_in_environment_yml(pyproject_dependencies, conda_pins, pip_section_pins):
    missing = [
        f"{name} (as {PYPI_TO_CONDA[name]})" if name in PYPI_TO_CONDA else name
        for name in pyproject_dependencies
        if PYPI_TO_CONDA.get(name, name) not in conda_pins and name not in pip_section_pins
    ]
    assert not missing, f"pyproject.toml dependencies missing from environment.yml: {', '.join(missing)}"


def test_every_pyproject_dependency_is_pinned_in_constraints(pyproject_dependencies, constraint_pins):
    missing = [name for name in pyproject_dependencies if name not in constraint_pins]
    assert not missing, f"pyproject.toml dependencies missing from constraints.txt: {', '.join(missing)}"


def test_constraints_do_not_pin_the_project_itself(constraint_pins):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
    assert normalise(project) not in constraint_pins, (
        f"constraints.txt pins the project itself ({project}); regenerate with --exclude-editable"
    )


# ---------------------------------------------------------------- environment.yml == constraints.txt


def test_environment_yml_pins_equal_constraints_pins(conda_pins, constraint_pins):
    differences = []
    for conda_name, conda_version in sorted(conda_pins.items()):
        if conda_name in CONDA_ONLY:
            continue
        pypi_name = CONDA_TO_PYPI.get(conda_name, conda_name)
        pip_version = constraint_pins.get(pypi_name)
        if pip_version is None:
            differences.append(
                f"{conda_name}: environment.yml pins {conda_version}, constraints.txt has no {pypi_name}"
            )
        elif conda_version is None:
            differences.append(f"{conda_name}: environment.yml leaves it unpinned, constraints.txt pins {pip_version}")
        elif conda_version != pip_version:
            differences.append(
                f"{conda_name}: environment.yml pins {conda_version}, constraints.txt pins {pypi_name}=={pip_version}"
            )
    assert not differences, "environment.yml and constraints.txt disagree:\n  " + "\n  ".join(differences)


def test_environment_yml_pip_section_pins_equal_constraints_pins(pip_section_pins, constraint_pins):
    differences = [
        f"{name}: environment.yml's pip: section pins {version}, constraints.txt "
        + (f"pins {constraint_pins[name]}" if name in constraint_pins else "has no such package")
        for name, version in sorted(pip_section_pins.items())
        if constraint_pins.get(name) != version
    ]
    assert not differences, "environment.yml's pip: section and constraints.txt disagree:\n  " + "\n  ".join(
        differences
    )


def test_environment_yml_names_each_package_once(conda_pins, pip_section_pins):
    twice = sorted(name for name in pip_section_pins if PYPI_TO_CONDA.get(name, name) in conda_pins)
    assert not twice, f"environment.yml installs these both from conda-forge and with pip: {', '.join(twice)}"


def test_environment_yml_installs_the_project(environment_pip_section):
    assert "-e ." in environment_pip_section, "environment.yml's pip: section must install the project itself ('-e .')"


def test_torch_is_pinned_exactly_in_constraints(constraint_lines):
    torch_lines = [line for line in constraint_lines if normalise(requirement_name(line)) == "torch"]
    assert torch_lines == [f"torch{TORCH_PIN}"], (
        f"constraints.txt must pin torch as exactly 'torch{TORCH_PIN}' (the CPU wheel; anything else "
        f"pulls a CUDA build); found {torch_lines}"
    )


# ---------------------------------------------------------------- README.md and .ci/run


def test_readme_quick_start_is_setup_demo_jupyter_and_pytest(readme_commands):
    assert len(readme_commands) == 4, (
        f"README.md's quick-start block must have exactly 4 lines (set-up, {DEMO_COMMAND!r}, "
        f"{JUPYTER_COMMAND!r}, {TEST_COMMAND!r}); found {len(readme_commands)}: {readme_commands}"
    )
    setup, demo, jupyter, test = readme_commands
    assert setup.startswith(SETUP_PREFIX), f"quick-start line 1 must start with {SETUP_PREFIX!r}; got {setup!r}"
    assert demo == DEMO_COMMAND, f"quick-start line 2 must be {DEMO_COMMAND!r}; got {demo!r}"
    assert jupyter == JUPYTER_COMMAND, f"quick-start line 3 must be {JUPYTER_COMMAND!r}; got {jupyter!r}"
    assert test == TEST_COMMAND, f"quick-start line 4 must be {TEST_COMMAND!r}; got {test!r}"


def test_readme_setup_command_uses_constraints(readme_commands):
    setup = readme_commands[0]
    words = shlex.split(setup)
    uses_constraints = any(a == "-c" and b == "constraints.txt" for a, b in zip(words, words[1:]))
    assert uses_constraints, f"README.md's set-up command must pass '-c constraints.txt'; got {setup!r}"


def test_readme_setup_command_installs_open_flamingo_without_its_dependencies(readme_commands):
    # the interop tests load open-flamingo's resampler; its own requirements pin torch 2.0.1
    commands = [shlex.split(command) for command in readme_commands[0].split("&&")]
    installs = [words for words in commands if any(re.fullmatch(r"open-flamingo(==\S+)?", word) for word in words)]
    assert installs, (
        f"README.md's set-up command must install open-flamingo (pinned in constraints.txt); got {readme_commands[0]!r}"
    )
    words = installs[0]
    uses_constraints = any(a == "-c" and b == "constraints.txt" for a, b in zip(words, words[1:]))
    assert "--no-deps" in words and uses_constraints, (
        "README.md's set-up command must install open-flamingo with --no-deps and -c constraints.txt; got "
        f"{' '.join(words)!r}"
    )


def test_ci_run_never_mentions_openblas(ci_script):
    mentions = [line.strip() for line in ci_script.splitlines() if "openblas" in line.lower()]
    assert not mentions, f".ci/run must leave the machine's OPENBLAS_* variables alone; it has: {mentions}"


def test_ci_run_sets_numba_cache_dir(ci_script):
    assert re.search(r"^\s*export\s+NUMBA_CACHE_DIR=\S", ci_script, re.MULTILINE), (
        ".ci/run must `export NUMBA_CACHE_DIR=<writable folder>` so Numba can cache compiled kernels"
    )
