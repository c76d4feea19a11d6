"""interop.compare: the per-block table that shows where a torch resampler parts from refimpl."""

import copy
import io

import numpy as np
import pytest
import torch
from helpers import random_flamingo_pytorch_module

import refimpl
import refimpl.torch as rt
from refimpl.interop import compare


def refimpl_module(**switches):
    config = refimpl.ResamplerConfig(dim=16, depth=3, heads=2, dim_head=8, num_latents=4, **switches)
    return rt.PerceiverResampler.from_refimpl(config, refimpl.init_resampler(config, seed=1))


def test_a_faithful_module_agrees_in_every_block():
    module = refimpl_module(num_time_embeds=2)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 2, 5, 16)))
    mask = torch.from_numpy(np.random.default_rng(1).random((2, 2, 5)) < 0.8)
    out = io.StringIO()
    rows = compare(module, x, mask=mask, out=out)
    assert [(row["block"], row["layer"]) for row in rows] == [
        *[(block, i) for i in range(3) for block in ("attention", "feed-forward")],
        ("output", None),
    ]
    assert max(row["relative"] for row in rows) <= refimpl.TOLERANCES["float64", "torch vs numpy"]
    assert out.getvalue().startswith("| block        | layer | max abs error | relative error |")
    assert out.getvalue().count("\n") == 2 + len(rows)


def test_a_planted_bug_shows_first_in_its_own_block():
    # compare reads the weights off the module, so the bug must be in the math: layer 1's
    # feed-forward applies ReLU where the config (and every other layer) says GELU
    module = copy.deepcopy(refimpl_module())
    module.layers[1]["ff"].activation = "relu"
    rows = {(row["block"], row["layer"]): row["relative"] for row in compare(module, torch.randn(2, 1, 6, 16, dtype=torch.float64), out=io.StringIO())}
    tolerance = refimpl.TOLERANCES["float64", "torch vs numpy"]
    assert all(rows[block, layer] <= tolerance for block, layer in [("attention", 0), ("feed-forward", 0), ("attention", 1)])
    assert rows["feed-forward", 1] > 1e-3  # the planted bug
    assert rows["attention", 2] > tolerance and rows["output", None] > tolerance  # and everything after it


def test_flamingo_pytorch_module_agrees_block_by_block():
    module = random_flamingo_pytorch_module()
    rows = compare(module, torch.randn(2, 3, 5, 16, dtype=torch.float64), out=io.StringIO())
    assert len(rows) == 5
    assert max(row["relative"] for row in rows) <= 1e-10


def test_compare_names_the_module_kinds_it_knows():
    with pytest.raises(TypeError, match="compare knows refimpl.torch.PerceiverResampler.*got torch.nn.modules.linear.Linear"):
        compare(torch.nn.Linear(2, 2), torch.zeros(1, 2))
