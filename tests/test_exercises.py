"""Every exercise check of the course (refimpl.exercises.<notebook module>.check_<name>)
passes its worked solution, falls back to it for a stub, and rejects a wrong answer."""

import importlib
import numbers

import numpy as np
import pytest
import torch

MODULES = [  # notebooks 1-10
    "attention",
    "cross_attention",
    "online_softmax",
    "resampler",
    "torch_module",
    "training",
    "latents",
    "ablation",
    "gated_xattn",
    "gradients",
]


def exercises():
    for module_name in MODULES:
        module = importlib.import_module(f"refimpl.exercises.{module_name}")
        for name in sorted(vars(module)):
            if name.startswith("check_"):
                yield pytest.param(module, name.removeprefix("check_"), id=f"{module_name}.{name}")


def wrong(value):
    """value visibly off: arrays and tensors by 10% of their size, numbers by one, tuples item by item."""
    if isinstance(value, tuple | list):
        return type(value)(wrong(item) for item in value)
    if isinstance(value, torch.Tensor):
        return value + 0.1 * max(value.abs().max().item(), 1.0)
    if isinstance(value, np.ndarray):
        return value + 0.1 * max(float(np.abs(value).max(initial=0.0)), 1.0)
    if isinstance(value, numbers.Number):
        return value + 1
    raise TypeError(f"an exercise should return arrays, tensors or numbers; got {type(value).__name__}")


@pytest.mark.parametrize("module_name", MODULES)
def test_every_notebook_has_at_least_two_exercises(module_name):
    module = importlib.import_module(f"refimpl.exercises.{module_name}")
    checks = [name for name in vars(module) if name.startswith("check_")]
    assert len(checks) >= 2, f"refimpl.exercises.{module_name} has {len(checks)} exercise(s)"
    for check in checks:
        assert callable(getattr(module, check.removeprefix("check_"), None)), f"{check} has no worked solution"


@pytest.mark.parametrize(("module", "name"), list(exercises()))
def test_check_passes_the_worked_solution(module, name, capsys):
    getattr(module, f"check_{name}")(getattr(module, name))
    assert "correct" in capsys.readouterr().out


@pytest.mark.parametrize(("module", "name"), list(exercises()))
def test_check_falls_back_to_the_solution_for_a_stub(module, name, capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError

    getattr(module, f"check_{name}")(stub)
    assert "not written yet" in capsys.readouterr().out


@pytest.mark.parametrize(("module", "name"), list(exercises()))
def test_check_rejects_a_wrong_answer(module, name):
    solution = getattr(module, name)

    def off(*args, **kwargs):
        return wrong(solution(*args, **kwargs))

    with pytest.raises(AssertionError):
        getattr(module, f"check_{name}")(off)
