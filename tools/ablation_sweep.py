"""The longer sweep behind notebook 8: every pooler over several seeds, on the search task and
on the quadrant control, recorded to refimpl/tiny/ablation_sweep.json (shipped with refimpl, so that the notebook
loads and shows it on Colab too; tests/test_ablation.py keeps the record and the code in step).

    python tools/ablation_sweep.py            # the recorded plan: roughly 20 minutes of one quiet CPU core
    python tools/ablation_sweep.py --out /tmp/sweep.json --plan search:400:0   # one slice

A plan entry is task:steps:seeds, seeds as 0-4 or 0,2. Each (task, steps, seed) trains every
entrant of refimpl.tiny.poolers.KINDS with refimpl.tiny.ablation.run_seed, on one torch thread.
The record is rewritten after each, so an interrupted sweep keeps what it finished. Slices run
apart (one process per core) are joined with

    python tools/ablation_sweep.py --merge part1.json part2.json     # into --out
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from refimpl.tiny import ablation
from refimpl.tiny.poolers import KINDS, ablation_model, count_parameters

ROOT = Path(__file__).resolve().parent.parent
PLAN = ("search:400:0-4", "quadrants:400:0-2", "search:1200:0-2")


def parse_plan(entry):
    """'task:steps:seeds' -> (task, steps, [seeds]); seeds '0-4' or '0,2,5'."""
    task, steps, seeds = entry.split(":")
    if "-" in seeds:
        first, last = map(int, seeds.split("-"))
        return task, int(steps), list(range(first, last + 1))
    return task, int(steps), [int(s) for s in seeds.split(",")]


def settings():
    """What the record's numbers depend on, as refimpl.tiny.ablation defines it now."""
    return {
        "kinds": list(KINDS),
        "batch": ablation.BATCH,
        "train_sides": list(ablation.TRAIN_SIDES),
        "held_out_sizes": {group: [list(size) for size in sizes] for group, sizes in ablation.HELD_OUT_SIZES.items()},
        "held_out_per_size": ablation.HELD_OUT_PER_SIZE,
        "held_out_seed": ablation.HELD_OUT_SEED,
        "questions": {task: list(questions) for task, (_, questions) in ablation.TASKS.items()},
        "pooler_params": {
            task: {kind: count_parameters(ablation_model(kind, ablation.task_config(task)).resampler) for kind in KINDS}
            for task in ablation.TASKS
        },
    }


def current_commit():
    """The checkout's commit, marked "+ changes" where the working tree differs from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{commit} + changes" if changed else commit


def provenance(started, load, plan, commit):
    return {
        "plan": plan,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 torch thread",
        "load_average": {"at start": load, "at end": round(os.getloadavg()[0], 1)},
        "minutes": round((time.time() - started) / 60, 1),
    }


def merge(records):
    """One record from records of the same settings: their runs, majorities and provenances."""
    if any(record["settings"] != records[0]["settings"] for record in records):
        raise ValueError("records must have the same settings to be merged")
    runs = {(run["task"], run["steps"], run["seed"], run["kind"]): run for record in records for run in record["runs"]}
    return {
        "settings": records[0]["settings"],
        "majority": {task: shares for record in records for task, shares in record["majority"].items()},
        "runs": list(runs.values()),
        "provenance": [part for record in records for part in record["provenance"]],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ablation.RECORD)
    parser.add_argument("--plan", nargs="+", default=list(PLAN), help="task:steps:seeds entries")
    parser.add_argument("--merge", nargs="+", type=Path, help="join these records into --out, and run nothing")
    args = parser.parse_args()
    if args.merge:
        args.out.write_text(json.dumps(merge([json.loads(path.read_text()) for path in args.merge]), indent=1) + "\n")
        return
    torch.set_num_threads(1)
    started, load, commit = time.time(), round(os.getloadavg()[0], 1), current_commit()
    record = {"settings": settings(), "majority": {}, "runs": []}
    for entry in args.plan:
        task, steps, seeds = parse_plan(entry)
        scenes = ablation.held_out(task)
        record["majority"][task] = {group: share.tolist() for group, share in ablation.majority(scenes).items()}
        for seed in seeds:
            scores = ablation.run_seed(task, seed=seed, steps=steps, scenes_by_group=scenes)
            for kind, result in scores.items():
                questions = {group: [round(float(v), 5) for v in values] for group, values in result.questions.items()}
                record["runs"].append(
                    {
                        "task": task,
                        "steps": steps,
                        "seed": seed,
                        "kind": kind,
                        "final_loss": round(result.final_loss, 5),
                        "questions": questions,
                    }
                )
                print(
                    f"{task} {steps} steps seed {seed} {kind:12} loss {result.final_loss:.3f} "
                    + " ".join(f"{g} {sum(v) / len(v):.3f}" for g, v in questions.items()),
                    flush=True,
                )
            record["provenance"] = [provenance(started, load, args.plan, commit)]
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
