#!/usr/bin/env bash
# Install the lowest versions that pyproject.toml declares, together, in a fresh venv, and run the
# core tests (tests/, without the notebooks, the website and the packaging/lint checks).
#
#     bash tools/lower_bounds.sh            # prints the versions it installed, then pytest's summary
#
# Every direct requirement "name>=X" of the package and of its extras notebooks, course and dev is
# pinned to "name==X". Two exceptions, printed when it runs: torch, whose wheels below 2.13.0 on
# PyPI are CUDA builds (gigabytes; this project's CPU pin, 2.13.0, is used), and the docs extra
# (the website is not a core test). Transitive dependencies are left to pip.
set -euo pipefail
cd "$(dirname "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)")"

work_dir="$(mktemp -d)"
trap 'rm -rf "$work_dir"' EXIT
python3 -m venv "$work_dir/venv"
# shellcheck disable=SC1091
. "$work_dir/venv/bin/activate"
export NUMBA_CACHE_DIR="$work_dir/numba-cache"

python - >"$work_dir/lowest.txt" <<'PY'
import re
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
seen = {}
for requirement in project["dependencies"] + extras["notebooks"] + extras["course"] + extras["dev"]:
    match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*>=\s*([^,;\s]+)", requirement.split("#")[0].strip())
    if match is None:  # the project's own extra, [notebooks]
        continue
    name, lowest = match.groups()
    seen[name.lower()] = "2.13.0" if name.lower() == "torch" else lowest
for name, version in sorted(seen.items()):
    print(f"{name}=={version}")
PY
echo "lowest declared versions (torch: the CPU pin 2.13.0, see above):"
sed 's/^/  /' "$work_dir/lowest.txt"

python -m pip install --quiet --disable-pip-version-check -c "$work_dir/lowest.txt" -e ".[course,dev]"
echo "installed:"
python -m pip freeze --exclude-editable | grep -i -E "^($(cut -d= -f1 "$work_dir/lowest.txt" | paste -sd'|'))==" | sed 's/^/  /'

core_tests=()
for test_file in tests/test_*.py; do
  case "$test_file" in
    tests/test_site.py | tests/test_colab.py | tests/test_packaging.py | tests/test_lint.py | tests/test_notebook_twins.py) ;;
    *) core_tests+=("$test_file") ;;
  esac
done
HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-quick}" python -m pytest -q -p no:cacheprovider "${core_tests[@]}"
