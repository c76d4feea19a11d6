"""Notebook 8's matched ablation as one function: every pooler on the same data, steps and optimiser.

    scores = run_seed("search", seed=0, steps=400)     # kind -> Scores, one training run each
    scores["resampler"].questions["larger"]            # per-question accuracy (12,) on larger images

Two tasks, each a stream of training batches and held-out scenes from refimpl.scenes:

    "search"     make_search_scenes: shapes of any size anywhere, 12 questions (present, twice
                 or more, left of / above) whose answers a fixed grid of cells does not line up with
    "quadrants"  make_scenes: 16 "<colour> <quadrant>" questions, the control a 4 x 4 grid of
                 cells lines up with

For a seed s every entrant (refimpl.tiny.poolers.KINDS) starts from ablation_model(kind,
config, seed=s), trains on the batches of the stream seeded s (the very same list for every
entrant), with torch's generator seeded s, for `steps` steps of refimpl.tiny.train.train
(AdamW, one-cycle), and is scored on the same held-out scenes: images of the training range
of sizes ("in range", TRAIN_SIDES) and outside it ("smaller", "larger"), from seeds the
training never uses. tools/ablation_sweep.py runs this over seeds and records the scores in
RECORD, shipped with refimpl; `load_record`, `seed_accuracy` and `results_table` read it back.

Axis letters: B batch, Q questions.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..scenes import (
    QUESTIONS,
    SEARCH_QUESTIONS,
    make_scenes,
    make_search_scenes,
    random_size,
)
from .model import TinyConfig
from .poolers import KINDS, ablation_model
from .train import predict, train

TASKS = {"search": (make_search_scenes, SEARCH_QUESTIONS), "quadrants": (make_scenes, QUESTIONS)}
TRAIN_SIDES = (32, 80)  # (shortest, longest) side of a training image in pixels, multiples of 8
HELD_OUT_SIZES = {  # group -> (height, width) of its held-out images
    "in range": ((32, 48), (48, 32), (56, 72), (80, 64)),
    "smaller": ((16, 24), (24, 16), (24, 24)),
    "larger": ((112, 112), (96, 160), (160, 128)),
}
BATCH = 32
HELD_OUT_PER_SIZE = 200
HELD_OUT_SEED = 1000  # + the size's index; training streams use seeds 0, 1, 2, ...
RECORD = Path(__file__).with_name("ablation_sweep.json")
NAMES = {
    "resampler": "Perceiver Resampler",
    "mean": "mean pooling, then an MLP",
    "mlp": "MLP on every token, then pooled",
    "transformer": "Transformer on every token, then pooled",
}


@dataclass(frozen=True)
class Scores:
    """One trained entrant: the mean training loss over its last 10% of steps, per group of
    held-out sizes the fraction right of each question, questions[group]: (Q,), and the
    trained model itself."""

    final_loss: float
    questions: dict
    model: torch.nn.Module


def task_config(task):
    """TinyConfig() with one output per question of `task`."""
    return TinyConfig(outputs=len(_task(task)[1]))


def training_batches(task, steps, *, seed, batch_size=BATCH, sides=TRAIN_SIDES):
    """`steps` (images (B, height, width, 3), labels (B, Q)) float32 tensors, each batch of one
    size, its height and width drawn apart from the multiples of 8 in `sides`."""
    make, _ = _task(task)
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(steps):
        scenes = make(batch_size, *random_size(rng, low=sides[0], high=sides[1]), seed=rng)
        batches.append((torch.from_numpy(scenes.images), torch.from_numpy(scenes.labels).float()))
    return batches


def held_out(task, *, n=HELD_OUT_PER_SIZE, sizes=HELD_OUT_SIZES):
    """group -> [scenes of each size of the group], from seeds HELD_OUT_SEED, HELD_OUT_SEED + 1, ..."""
    make, _ = _task(task)
    seeds = iter(range(HELD_OUT_SEED, HELD_OUT_SEED + 100))
    return {
        group: [make(n, height, width, seed=next(seeds)) for height, width in group_sizes]
        for group, group_sizes in sizes.items()
    }


def score(model, scenes_by_group):
    """group -> (Q,) the fraction of each question answered right over the group's scenes."""
    return {
        group: np.mean(np.concatenate([predict(model, s.images) == s.labels for s in scenes]), axis=0)
        for group, scenes in scenes_by_group.items()
    }


def majority(scenes_by_group):
    """group -> (Q,) the fraction right of the better constant answer to each question, the floor."""
    return {
        group: np.maximum(share, 1 - share)
        for group, share in (
            (g, np.concatenate([s.labels for s in scenes]).mean(axis=0)) for g, scenes in scenes_by_group.items()
        )
    }


def run_seed(task, *, seed, steps, kinds=KINDS, scenes_by_group=None, batches=None, progress=False):
    """kind -> Scores: each entrant of `kinds` trained on `task` from seed `seed` for `steps`
    steps and scored on the held-out scenes (made here unless given, as `held_out(task)`).
    batches: the training batches, if already made as training_batches(task, steps, seed=seed)."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a whole number >= 0; got {seed!r}")
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown:
        raise ValueError(f"kinds must be among {KINDS}; got {unknown}")
    config = task_config(task)
    batches = training_batches(task, steps, seed=seed) if batches is None else batches
    if len(batches) != steps:
        raise ValueError(f"batches must hold one batch per step, {steps}; got {len(batches)}")
    scenes_by_group = held_out(task) if scenes_by_group is None else scenes_by_group
    scores = {}
    for kind in kinds:
        torch.manual_seed(seed)
        model = ablation_model(kind, config, seed=seed)
        history = train(model, iter(batches), steps, progress=progress, desc=f"{task} {kind} seed {seed}")
        final = float(history.losses[-max(1, steps // 10) :].mean())
        scores[kind] = Scores(final, score(model, scenes_by_group), model)
    return scores


def load_record(path=RECORD):
    """The sweep's record (tools/ablation_sweep.py): {"settings", "provenance", "majority", "runs"}."""
    return json.loads(Path(path).read_text())


def seed_accuracy(record, task, steps, group):
    """kind -> (seeds,) the fraction of questions right on the held-out group, one per seed
    (in seed order), from the record's runs of `task` for `steps` steps."""
    runs = [run for run in record["runs"] if run["task"] == task and run["steps"] == steps]
    if not runs:
        raise ValueError(f"the record has no runs of task {task!r} for {steps} steps")
    return {
        kind: np.array(
            [
                np.mean(run["questions"][group])
                for run in sorted(runs, key=lambda run: run["seed"])
                if run["kind"] == kind
            ]
        )
        for kind in record["settings"]["kinds"]
    }


def results_table(record, task, steps, flamingo=None):
    """A markdown table of the record's runs of `task` for `steps` steps: per entrant its
    pooler's parameters and, per held-out group, the percentage of questions right as
    mean +- standard deviation over the seeds (ddof = 1) [lowest seed, highest seed]; then the majority answer's.
    flamingo: kind -> Flamingo-3B's reported score, shown in a last column."""
    groups = list(record["settings"]["held_out_sizes"])
    scores = {group: seed_accuracy(record, task, steps, group) for group in groups}
    seeds = {len(values) for by_kind in scores.values() for values in by_kind.values()}
    sides = {group: _sides(record["settings"]["held_out_sizes"][group]) for group in groups}
    header = [
        f"pooler (R = {TinyConfig().num_latents}), {task}, {steps} steps, {'/'.join(map(str, sorted(seeds)))} seeds",
        "pooler params",
    ]
    header += [f"{group} ({sides[group]} px)" for group in groups]
    header += ["Flamingo-3B, as reported"] if flamingo is not None else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for kind in record["settings"]["kinds"]:
        cells = [NAMES[kind], f"{record['settings']['pooler_params'][task][kind]:,}"]
        for group in groups:
            values = 100 * scores[group][kind]
            cells.append(
                f"{values.mean():.1f} ± {values.std(ddof=1) if len(values) > 1 else 0:.1f} [{values.min():.1f}, "
                f"{values.max():.1f}]"
            )
        cells += [str(flamingo.get(kind, "(not in the table)"))] if flamingo is not None else []
        lines.append("| " + " | ".join(cells) + " |")
    floor = ["the majority answer to each question", ""] + [
        f"{100 * np.mean(record['majority'][task][g]):.1f}" for g in groups
    ]
    lines.append("| " + " | ".join(floor + ([""] if flamingo is not None else [])) + " |")
    return "\n".join(lines)


def _sides(sizes):
    sides = [side for size in sizes for side in size]
    return f"{min(sides)}-{max(sides)}"


def _task(task):
    if task not in TASKS:
        raise ValueError(f"task must be one of {tuple(TASKS)}; got {task!r}")
    return TASKS[task]
