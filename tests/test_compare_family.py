"""interop.compare and compare_grads on refimpl.torch's resampler with the issue-12 switches that
keep every block compare records (attention biases, the input and output projections, the
output norm): the attention biases' names, the projections' layouts, the output's width."""

import io

import numpy as np
import torch

import refimpl
import refimpl.torch as rt
from refimpl.interop import compare, compare_grads

SWITCHES = dict(attn_bias=True, media_dim=7, media_proj_bias=True, out_dim=5, out_norm=True, num_time_embeds=2)


def family_module():
    config = refimpl.ResamplerConfig(dim=12, depth=2, heads=3, dim_head=5, num_latents=4, **SWITCHES)
    return rt.PerceiverResampler.from_refimpl(config, refimpl.init_resampler(config, seed=5))


def inputs():
    rng = np.random.default_rng(5)
    return torch.from_numpy(rng.standard_normal((2, 2, 6, 7))), torch.from_numpy(rng.random((2, 2, 6)) < 0.8)


def test_compare_agrees_in_every_row_with_biases_and_projections():
    x, mask = inputs()
    rows = compare(family_module(), x, mask=mask, out=io.StringIO())
    assert rows[-1]["block"] == "output" and all(row["ok"] for row in rows), rows


def test_compare_grads_agrees_for_biases_and_projections_in_backward_order():
    x, mask = inputs()
    module = family_module()
    rows = compare_grads(module, x, mask=mask, out=io.StringIO())
    names = [row["name"] for row in rows]
    assert sorted(names) == sorted([*refimpl.param_shapes(module.config), "x"])
    assert names.index("out_norm.weight") < names.index("out_proj.weight") < names.index("norm.weight")
    assert names.index("layers.1.attn.bo") < names.index("layers.1.attn.wq") < names.index("layers.0.attn.bo")
    assert max(row["relative"] for row in rows) <= refimpl.TOLERANCES["float64", "gradient vs torch autograd"]
