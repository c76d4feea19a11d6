"""Exercises of notebook 8, the ablation: the resampler against an MLP, a Transformer and mean pooling.

    from refimpl.exercises import ablation as ex

count_parameters(module)
    the number of learnable numbers of a torch module (a shared parameter once, buffers
    not at all); checked against refimpl's tables of parameter shapes.
pooling_matrix(grid, cells)
    mean pooling over a gh x gw grid of cells as a fixed (R, S) matrix of attention-like
    weights; checked against torch's adaptive_avg_pool2d.
width_for_budget(make, budget)
    the feed-forward width F whose module has the parameter count closest to a budget;
    checked by counting the parameters of the modules at F and its neighbours.

The functions without `check_` are the worked solutions: `??ex.pooling_matrix` shows one.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..params import param_shapes
from ..tiny.model import TinyConfig, tiny_param_shapes
from ..tiny.poolers import make_pooler
from ..tiny.torch import TinyModel
from ..tolerances import TOLERANCES
from ..torch import FeedForward, PerceiverResampler
from . import agree, call, check

BOUND = TOLERANCES["float64", "torch vs numpy"]  # float64 means summed in another order: 1e-12


# ---------------------------------------------------------------- worked solutions


def count_parameters(module):
    """The number of learnable numbers in a torch module: the sum of p.numel() over its
    parameters. module.parameters() yields a parameter shared by two layers once, and
    leaves out buffers (BatchNorm's running statistics), which are not learned."""
    return sum(p.numel() for p in module.parameters())


def pooling_matrix(grid, cells):
    """Mean pooling as a matrix: weights (R, S), R = gh*gw cells, S = h*w patches (row-major).

    grid = (h, w) patches, cells = (gh, gw). Cell (i, j), row r = i*gw + j, covers patch rows
    floor(i h / gh) .. ceil((i + 1) h / gh) - 1 and columns floor(j w / gw) .. ceil((j + 1) w / gw) - 1,
    each with weight 1 / (the number of patches in the cell); every row sums to 1.
    Pooled tokens are then weights @ tokens: (R, S) @ (S, D) -> (R, D).
    """
    h, w = grid
    gh, gw = cells
    weights = np.zeros((gh, gw, h, w))
    for i in range(gh):
        top, bottom = (i * h) // gh, -(-((i + 1) * h) // gh)  # floor, ceil: neighbouring cells may share a row
        for j in range(gw):
            left, right = (j * w) // gw, -(-((j + 1) * w) // gw)
            weights[i, j, top:bottom, left:right] = 1.0 / ((bottom - top) * (right - left))
    return weights.reshape(gh * gw, h * w)  # (R, S), rows and columns both row-major


def width_for_budget(make, budget):
    """The feed-forward width F >= 1 whose module make(F) has the parameter count closest to
    `budget`. The count is affine in F, count(F) = a + b F (F appears only in the shapes
    (D, F) and (F, D)), so two counts give a and b, and F = round((budget - a) / b)."""
    one, two = count_parameters(make(1)), count_parameters(make(2))
    slope = two - one  # b: the parameters one more unit of F adds
    intercept = one - slope  # a: everything else
    return max(1, round((budget - intercept) / slope))


# ---------------------------------------------------------------- checks


def check_count_parameters(fn):
    return check("count_parameters", fn, count_parameters, _test_count_parameters)


def check_pooling_matrix(fn):
    return check("pooling_matrix", fn, pooling_matrix, _test_pooling_matrix)


def check_width_for_budget(fn):
    return check("width_for_budget", fn, width_for_budget, _test_width_for_budget)


def _as_int(what, value, hint):
    value = value.item() if isinstance(value, torch.Tensor | np.ndarray) else value
    assert float(value) == int(value), f"case '{what}': expected a whole number; got {value!r}. {hint}"
    return int(value)


def _shared_pair():
    first, second = nn.Linear(7, 7), nn.Linear(7, 7)
    second.weight = first.weight  # one (7, 7) weight in two layers, two biases
    return nn.Sequential(first, nn.ReLU(), second)


def _test_count_parameters(fn):
    tiny, clip = TinyConfig(), TinyConfig(frames=4, num_latents=8, dim=48, heads=3, dim_head=20)

    def shapes_total(shapes):
        return sum(math.prod(shape) for shape in shapes.values())

    resampler = shapes_total(param_shapes(tiny.resampler))
    cases = {  # what -> (module, the count from refimpl's tables or by hand)
        "the tiny model's resampler, TinyConfig()": (PerceiverResampler(tiny.resampler), resampler),
        "the whole tiny model, TinyConfig()": (TinyModel(tiny), shapes_total(tiny_param_shapes(tiny))),
        "a clip model (time embeddings, R = 8, D = 48, H*Dh = 60)": (
            TinyModel(clip),
            shapes_total(tiny_param_shapes(clip)),
        ),
        "two Linear(7, 7) sharing one weight: 49 + 7 + 7": (_shared_pair(), 49 + 7 + 7),
        "BatchNorm1d(11): scale and shift are learned, running statistics are buffers": (nn.BatchNorm1d(11), 22),
    }
    hint = (
        "sum p.numel() over module.parameters(): it counts a shared parameter once and leaves out buffers "
        "(state_dict() has both)"
    )
    for what, (module, expected) in cases.items():
        got = _as_int(what, call(what, hint, fn, module), hint)
        assert got == expected, f"case '{what}': counted {got}, expected {expected}. {hint}"
    return f"{len(cases)} cases, every count exact (the tiny model's resampler: {resampler:,})"


def _reference_pooling(grid, cells):
    """torch's adaptive_avg_pool2d applied to one-hot tokens: column s of the result is what patch s gives each cell."""
    h, w = grid
    one_hot = torch.eye(h * w, dtype=torch.float64).reshape(1, h * w, h, w)  # channel s = patch s alone
    pooled = F.adaptive_avg_pool2d(one_hot, cells)  # (1, S, gh, gw)
    return pooled.reshape(h * w, -1).T.numpy()  # (R, S)


def _test_pooling_matrix(fn):
    cases = {  # what -> (grid, cells)
        "grid (4, 6) into cells (2, 3): every cell 2 x 2 patches": ((4, 6), (2, 3)),
        "grid (6, 10) into cells (4, 4): cells overlap by a row or column": ((6, 10), (4, 4)),
        "grid (5, 7) into cells (4, 4)": ((5, 7), (4, 4)),
        "grid (3, 2) into cells (4, 4): fewer patches than cells, a patch serves several cells": ((3, 2), (4, 4)),
        "grid (9, 5) into cells (2, 8)": ((9, 5), (2, 8)),
        "grid (4, 4) into one cell (1, 1): the mean of all patches": ((4, 4), (1, 1)),
    }
    hint = (
        "cell (i, j) is row i*gw + j and covers patch rows floor(i*h/gh) to ceil((i+1)*h/gh) - 1 "
        "(columns likewise), each patch with weight 1 / (patches in the cell); patch (r, c) is column r*w + c"
    )
    errors = []
    for what, (grid, cells) in cases.items():
        got = np.asarray(call(what, hint, fn, grid, cells), dtype=np.float64)
        errors.append(agree(f"case '{what}'", got, _reference_pooling(grid, cells), BOUND, hint=hint))
    return f"{len(cases)} cases, max error {max(errors):.0e} <= {BOUND:g}"


def _test_width_for_budget(fn):
    config = TinyConfig()
    resampler = sum(math.prod(shape) for shape in param_shapes(config.resampler).values())  # 67,456

    def pooler(kind):
        return lambda ff_dim: make_pooler(kind, config, ff_dim)

    cases = {  # what -> (make, budget)
        "MeanPooler (D = 64, 2 blocks), the resampler's 67,456": (pooler("mean"), resampler),
        "TransformerPooler (D = 64, 2 layers), the resampler's 67,456": (pooler("transformer"), resampler),
        "MLPPooler (D = 64, 2 blocks), 50,000": (pooler("mlp"), 50_000),
        "one FeedForward block (D = 40), 10,050": (lambda ff_dim: FeedForward(40, ff_dim), 10_050),
        "MeanPooler, a budget of 100, below its smallest size: F = 1": (pooler("mean"), 100),
    }
    hint = "count at two widths: count(F) = a + b F; solve a + b F = budget for F and round to the nearest whole F >= 1"
    found = []
    for what, (make, budget) in cases.items():
        width = _as_int(what, call(what, hint, fn, make, budget), hint)
        assert width >= 1, f"case '{what}': F = {width}; a width is at least 1. {hint}"
        miss = {
            f: abs(sum(p.numel() for p in make(f).parameters()) - budget)
            for f in (width - 1, width, width + 1)
            if f >= 1
        }
        closer = [f for f in miss if miss[f] < miss[width]]
        assert not closer, (
            f"case '{what}': F = {width} misses the budget {budget:,} by {miss[width]:,} parameters, "
            f"F = {closer[0]} by {miss[closer[0]]:,}. {hint}"
        )
        found.append(width)
    return f"{len(cases)} cases, each F the closest to its budget (F = {', '.join(map(str, found))})"
