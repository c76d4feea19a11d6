"""Training and scoring the tiny model (PyTorch, on the CPU in seconds).

    model = TinyModel.from_refimpl(config, init_tiny_model(config, seed=0), dtype=torch.float32)
    history = train(model, scene_batches(32, seed=0), steps=1000)   # a progress bar, then
    accuracy(model, held_out_scenes())                               # (per question, whole scene)

The loss is the mean binary cross-entropy over the yes/no questions (refimpl.scenes). Each
batch has its own image size, drawn from 32 to 128 pixels a side, so the model never sees
one size for long; the held-out scenes come in sizes of their own, fixed by their seed.
"""

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..scenes import make_clips, make_scenes, random_size

HELD_OUT_SIZES = ((32, 32), (48, 96), (64, 64), (72, 40), (128, 80), (128, 128))  # (height, width)


@dataclass(frozen=True)
class History:
    """What a training run recorded: the loss at every step, and the seconds each step took
    (data made, forward, backward and update)."""

    losses: np.ndarray
    step_seconds: np.ndarray


def scene_batches(batch_size, *, seed, low=32, high=128):
    """Endless (images (B, height, width, 3), labels (B, 16)) float32 tensors, each batch of
    one size drawn from the multiples of 8 in [low, high] a side."""
    rng = np.random.default_rng(seed)
    while True:
        scenes = make_scenes(batch_size, *random_size(rng, low=low, high=high), seed=rng)
        yield torch.from_numpy(scenes.images), torch.from_numpy(scenes.labels).float()


def clip_batches(batch_size, frames, *, seed, height=48, width=48):
    """Endless (frames (B, T, height, width, 3), labels (B, 8)) float32 tensors."""
    rng = np.random.default_rng(seed)
    while True:
        clips = make_clips(batch_size, frames, height, width, seed=rng)
        yield torch.from_numpy(clips.frames), torch.from_numpy(clips.labels).float()


def train(model, batches, steps, *, lr=3e-3, weight_decay=0.01, progress=True, desc="training"):
    """`steps` steps of AdamW on the mean binary cross-entropy of model(inputs) against the
    labels, the learning rate warming up over the first 10% of steps, then annealed
    (one-cycle). `batches` yields (inputs, labels). Returns a History."""
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.1)
    losses, seconds = np.empty(steps), np.empty(steps)
    model.train()
    bar = tqdm(range(steps), desc=desc, disable=not progress, mininterval=1.0)
    for step in bar:
        start = time.perf_counter()
        inputs, labels = next(batches)
        loss = F.binary_cross_entropy_with_logits(model(inputs), labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses[step], seconds[step] = loss.item(), time.perf_counter() - start
        if step % 50 == 0:
            bar.set_postfix(loss=f"{losses[step]:.3f}")
    model.eval()
    return History(losses, seconds)


def held_out_scenes(n=200, *, seed=1000, sizes=HELD_OUT_SIZES):
    """n scenes of each size in `sizes`, from a seed the training batches do not use."""
    return [make_scenes(n, height, width, seed=seed + i) for i, (height, width) in enumerate(sizes)]


@torch.no_grad()
def predict(model, images, batch_size=256):
    """model's yes/no answers (B, Q) bool for images (a NumPy array), logit > 0 = yes."""
    model.eval()
    dtype = next(model.parameters()).dtype
    images = np.ascontiguousarray(images)  # torch takes no negative strides (a clip reversed with [:, ::-1])
    answers = [
        model(torch.as_tensor(images[i : i + batch_size], dtype=dtype)) > 0 for i in range(0, len(images), batch_size)
    ]
    return torch.cat(answers).numpy()


def accuracy(model, scenes):
    """(fraction of questions answered right, fraction of scenes with every answer right),
    over a list of Scenes (or Clips)."""
    right = [predict(model, _inputs(s)) == s.labels for s in scenes]  # each (B, Q)
    return float(np.mean([r.mean() for r in right])), float(np.mean([r.all(axis=1).mean() for r in right]))


def _inputs(batch):
    return batch.images if hasattr(batch, "images") else batch.frames
