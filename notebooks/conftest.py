"""nbval runs every notebook here as a test file, one test per cell (see pyproject.toml).

This adds one more test after each notebook's cells: "time budget", which fails when the
notebook's cells (kernel start-up included) took longer than BUDGET_S on this machine, so a
notebook that has grown too slow for a laptop CPU or for a class is caught like a wrong answer.
"""

from collections import defaultdict

import pytest

BUDGET_S = 90  # per notebook: the course's promise of "runs on a laptop CPU in a minute or so"

_seconds = defaultdict(float)  # notebook (the file part of its node id) -> seconds spent in its cells so far


class TimeBudget(pytest.Item):
    def runtest(self):
        spent = _seconds[_notebook(self.nodeid)]
        assert spent <= BUDGET_S, f"{self.path.name} ran in {spent:.0f} s, over its budget of {BUDGET_S} s"

    def reportinfo(self):
        return self.path, None, f"{self.path.name}::time budget ({BUDGET_S} s)"


def pytest_collection_modifyitems(session, config, items):
    """After the last cell of each notebook, its time-budget test."""
    last_cell = {}
    for index, item in enumerate(items):
        if item.path.suffix == ".ipynb":
            last_cell[item.path] = index
    for index in sorted(last_cell.values(), reverse=True):  # from the end, so earlier indices stay valid
        items.insert(index + 1, TimeBudget.from_parent(items[index].parent, name="time budget"))


def pytest_runtest_logreport(report):
    notebook = _notebook(report.nodeid)
    if notebook.endswith(".ipynb"):
        _seconds[notebook] += report.duration  # setup (starts the kernel for the first cell), call, teardown


def _notebook(nodeid):
    return nodeid.split("::")[0]
