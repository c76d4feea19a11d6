"""refimpl.tiny.ablation and tools/ablation_sweep.py, notebook 8's matched ablation: the
recorded sweep is the code's (same settings, every planned run, at least 3 seeds, parameters
within 1%), notebook 8 and the README show its table, a run is reproducible from its seed, and
the table says mean, spread, lowest and highest over the seeds."""

import importlib.util
import json
from pathlib import Path

import nbformat
import numpy as np
import pytest

from refimpl.scenes import SEARCH_QUESTIONS, make_scenes
from refimpl.tiny import ablation
from refimpl.tiny.poolers import KINDS

ROOT = Path(__file__).resolve().parent.parent
FLAMINGO = {"resampler": 70.7, "mlp": 66.6, "transformer": 66.7}  # Table 3 of the Flamingo paper, as reported


def _sweep_tool():
    spec = importlib.util.spec_from_file_location("ablation_sweep", ROOT / "tools" / "ablation_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SWEEP = _sweep_tool()
RECORD = ablation.load_record()


def notebook_outputs():
    notebook = nbformat.read(ROOT / "notebooks" / "08_ablation.ipynb", as_version=4)
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts += [output.get("text", "")] + [
                "".join(v) for k, v in output.get("data", {}).items() if k.startswith("text/")
            ]
    return "\n".join(texts)


def test_the_record_was_made_with_todays_settings():
    assert RECORD["settings"] == json.loads(json.dumps(SWEEP.settings())), (
        "rerun tools/ablation_sweep.py: the experiment changed"
    )


@pytest.mark.parametrize("entry", SWEEP.PLAN)
def test_the_record_holds_every_planned_run_with_at_least_3_seeds(entry):
    task, steps, seeds = SWEEP.parse_plan(entry)
    assert len(seeds) >= 3
    found = {(run["kind"], run["seed"]) for run in RECORD["runs"] if (run["task"], run["steps"]) == (task, steps)}
    assert found == {(kind, seed) for kind in KINDS for seed in seeds}


def test_every_recorded_run_scores_every_question_in_every_group():
    questions = RECORD["settings"]["questions"]
    for run in RECORD["runs"]:
        assert set(run["questions"]) == set(ablation.HELD_OUT_SIZES)
        assert all(
            len(values) == len(questions[run["task"]]) and 0 <= min(values) <= max(values) <= 1
            for values in run["questions"].values()
        )


def test_recorded_poolers_match_the_resampler_within_1_percent():
    for task, counts in RECORD["settings"]["pooler_params"].items():
        assert all(abs(counts[kind] / counts["resampler"] - 1) <= 0.01 for kind in KINDS), (task, counts)


def test_notebook_8_shows_the_recorded_tables():
    shown = notebook_outputs()
    assert ablation.results_table(RECORD, "search", 400, FLAMINGO) in shown, (
        "re-execute notebook 8: its table is not the record's"
    )
    assert ablation.results_table(RECORD, "quadrants", 400) in shown


def test_the_readme_quotes_the_recorded_table():
    assert ablation.results_table(RECORD, "search", 400, FLAMINGO) in (ROOT / "README.md").read_text()


def test_results_table_gives_mean_spread_lowest_and_highest_over_seeds():
    record = {
        "settings": {
            "kinds": ["resampler"],
            "held_out_sizes": {"in range": [[32, 48], [80, 64]]},
            "pooler_params": {"t": {"resampler": 1234}},
        },
        "majority": {"t": {"in range": [0.6, 0.8]}},
        "runs": [
            {"task": "t", "steps": 9, "seed": s, "kind": "resampler", "questions": {"in range": [v, v]}}
            for s, v in ((2, 0.9), (0, 0.8), (1, 0.85))
        ],
    }
    table = ablation.results_table(record, "t", 9, {"resampler": 70.7}).splitlines()
    assert (
        table[0]
        == "| pooler (R = 16), t, 9 steps, 3 seeds | pooler params | in range (32-80 px) | Flamingo-3B, as reported |"
    )
    assert (
        table[2] == "| Perceiver Resampler | 1,234 | 85.0 ± 5.0 [80.0, 90.0] | 70.7 |"
    )  # sd over 80, 85, 90 with ddof = 1
    assert table[3] == "| the majority answer to each question |  | 70.0 |  |"
    np.testing.assert_array_equal(ablation.seed_accuracy(record, "t", 9, "in range")["resampler"], [0.8, 0.85, 0.9])


def test_a_run_is_the_same_from_the_same_seed():
    scenes = {"in range": [make_scenes(8, 32, 48, seed=5)]}
    first, second = (
        ablation.run_seed("quadrants", seed=3, steps=3, kinds=("mean", "resampler"), scenes_by_group=scenes)
        for _ in range(2)
    )
    for kind in ("mean", "resampler"):
        assert first[kind].final_loss == second[kind].final_loss
        np.testing.assert_array_equal(first[kind].questions["in range"], second[kind].questions["in range"])


def test_the_sweep_tool_writes_a_record_of_the_shipped_shape(tmp_path, monkeypatch):
    out = tmp_path / "sweep.json"
    monkeypatch.setattr("sys.argv", ["ablation_sweep.py", "--out", str(out), "--plan", "quadrants:2:4"])
    SWEEP.main()
    written = json.loads(out.read_text())
    assert written.keys() == RECORD.keys() and written["settings"] == RECORD["settings"]
    assert sorted(run["kind"] for run in written["runs"]) == sorted(KINDS) and {
        run["seed"] for run in written["runs"]
    } == {4}


def test_search_task_has_one_output_per_question():
    assert ablation.task_config("search").outputs == len(SEARCH_QUESTIONS) == 12


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: ablation.run_seed("pictures", seed=0, steps=1), "task must be one of"),
        (lambda: ablation.run_seed("search", seed=-1, steps=1), "seed must be"),
        (lambda: ablation.run_seed("search", seed=0, steps=1, kinds=("cnn",)), "kinds must be among"),
        (lambda: ablation.seed_accuracy(RECORD, "search", 7, "in range"), "no runs of task 'search' for 7 steps"),
    ],
)
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
