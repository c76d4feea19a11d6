"""Train the tiny model that refimpl ships (refimpl/tiny/pretrained.npz), with notebook 6's
recipe and more steps; about a minute on a laptop CPU.

    python tools/train_tiny_model.py            # writes refimpl/tiny/pretrained.npz

It prints the held-out accuracy; tests/test_tiny_model.py checks the shipped file against
its bar.
"""

import numpy as np
import torch

from refimpl.tiny.model import PRETRAINED, TinyConfig, init_tiny_model, save_pretrained
from refimpl.tiny.torch import TinyModel
from refimpl.tiny.train import accuracy, held_out_scenes, scene_batches, train

STEPS = 2000


def main():
    torch.manual_seed(0)
    config = TinyConfig()
    model = TinyModel.from_refimpl(config, init_tiny_model(config, seed=0), dtype=torch.float32)
    history = train(model, scene_batches(32, seed=0), STEPS)
    per_question, per_scene = accuracy(model, held_out_scenes())
    print(f"{STEPS} steps in {history.step_seconds.sum():.0f} s; final loss {np.mean(history.losses[-50:]):.4f}")
    print(f"held-out accuracy: {per_question:.2%} of questions, {per_scene:.2%} of scenes")
    save_pretrained(config, model.to_refimpl())
    print(f"wrote {PRETRAINED} ({PRETRAINED.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
