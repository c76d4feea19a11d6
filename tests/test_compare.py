"""interop.compare: the per-block table that says which block of a torch resampler to fix.

A bug is planted, one at a time, in a resampler written in this test suite (tests/own_resampler.py,
described to compare by a ModuleSpec) and in the peers' installed modules (through their
attributes, forward hooks on their pieces, or an instance's forward), and the first row over
the bound must name the block that holds it.
"""

import copy
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import random_flamingo_pytorch_module, resampler_cases
from hypothesis import given
from own_resampler import OWN_CONFIG, own_module, own_spec
from transformers import IdeficsConfig
from transformers.models.idefics.perceiver import IdeficsPerceiverResampler
from transformers.models.idefics2.configuration_idefics2 import Idefics2PerceiverConfig
from transformers.models.idefics2.modeling_idefics2 import Idefics2PerceiverResampler

import refimpl
import refimpl.torch as rt
from refimpl.interop import ModuleSpec, Point, compare
from refimpl.interop.open_flamingo import installed_helpers

OpenFlamingoResampler = installed_helpers().PerceiverResampler  # the real open-flamingo 2.0.1's
ROWS_PER_LAYER = ("attention", "attention residual", "feed-forward", "feed-forward residual")


def refimpl_module(**switches):
    config = refimpl.ResamplerConfig(dim=16, depth=3, heads=2, dim_head=8, num_latents=4, **switches)
    return rt.PerceiverResampler.from_refimpl(config, refimpl.init_resampler(config, seed=1))


def first_difference(module, x, **kwargs):
    """(block, layer) of the first row over the bound; every row before it within the bound."""
    out = io.StringIO()
    rows = compare(module, x, out=out, **kwargs)
    first = next((row for row in rows if not row["ok"]), None)
    assert first is not None, f"no row over the bound:\n{out.getvalue()}"
    assert first["relative"] > 100 * first["bound"], out.getvalue()  # a real difference, not rounding
    where = first["block"] if first["layer"] is None else f"layer {first['layer']} {first['block']}"
    assert f"first difference: {where} (relative error" in out.getvalue()
    return first["block"], first["layer"]


def randomised(module, seed=0):
    """`module` in float64, every parameter random: norm weights 1 + N(0, 0.5^2), biases
    N(0, 0.5^2), projections N(0, 1 / fan_in), latents and embedding tables N(0, 1)."""
    module = module.double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            value = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            if name.endswith("weight") and parameter.ndim == 2:  # nn.Linear (out, in)
                value = value * parameter.shape[1] ** -0.5
            elif name.endswith(("weight", "bias")):  # a norm's scale or shift
                value = 0.5 * value + name.endswith("weight")
            parameter.copy_(value)
    return module


# ---------------------------------------------------------------- faithful modules agree, with a verdict


def test_a_faithful_module_agrees_in_every_row():
    module = refimpl_module(num_time_embeds=2)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 2, 5, 16)))
    mask = torch.from_numpy(np.random.default_rng(1).random((2, 2, 5)) < 0.8)
    out = io.StringIO()
    rows = compare(module, x, mask=mask, out=out)
    assert [(row["block"], row["layer"]) for row in rows] == [  # refimpl.torch has no media row
        *[(block, i) for i in range(3) for block in ROWS_PER_LAYER],
        ("final norm", None),
        ("output", None),
    ]
    bound = refimpl.TOLERANCES["float64", "torch vs numpy"]
    assert all(row["ok"] and row["relative"] <= bound == row["bound"] for row in rows)
    text = out.getvalue()
    assert text.startswith("| block                 | layer | max abs error | relative error | ok  |")
    assert f"bound: relative error <= {bound:g} (TOLERANCES['float64', 'torch vs numpy'])" in text
    assert "verdict: every row within the bound" in text


@given(resampler_cases())
def test_refimpl_torch_agrees_in_every_row_for_every_config(case):
    config, params, x, mask = case
    module = rt.PerceiverResampler.from_refimpl(config, params)
    rows = compare(
        module, torch.from_numpy(x), mask=None if mask is None else torch.from_numpy(mask), out=io.StringIO()
    )
    assert [(row["block"], row["layer"]) for row in rows[:-2]] == [
        (block, i) for i in range(config.depth) for block in ROWS_PER_LAYER
    ]
    assert all(row["ok"] for row in rows), rows


def test_own_module_agrees_in_every_row_media_first():
    module = own_module()
    rows = compare(module, torch.randn(2, 3, 5, 12, dtype=torch.float64), spec=own_spec(OWN_CONFIG), out=io.StringIO())
    assert [(row["block"], row["layer"]) for row in rows] == [
        ("media", None),
        *[(block, i) for i in range(OWN_CONFIG.depth) for block in ROWS_PER_LAYER],
        ("final norm", None),
        ("output", None),
    ]
    assert all(row["ok"] for row in rows)
    assert rows[0]["bound"] == refimpl.TOLERANCES["float64", "another implementation vs refimpl"]


def test_own_module_in_float32_is_held_to_the_float32_bound():
    module = own_module(dtype=torch.float32)
    rows = compare(module, torch.randn(2, 3, 5, 12), spec=own_spec(OWN_CONFIG), out=io.StringIO())
    assert all(
        row["ok"] and row["bound"] == refimpl.TOLERANCES["float32", "peer module vs float64 reference"] for row in rows
    )


def test_flamingo_pytorch_module_agrees_block_by_block():
    module = random_flamingo_pytorch_module()
    rows = compare(module, torch.randn(2, 3, 5, 16, dtype=torch.float64), out=io.StringIO())
    assert len(rows) == 1 + 4 * 2 + 2
    assert all(row["ok"] for row in rows)


def test_an_unknown_module_is_refused_with_the_way_to_describe_it():
    known = (
        "compare knows refimpl_torch, open_flamingo.*got torch.nn.modules.linear.Linear"
        ".*spec=refimpl.interop.ModuleSpec"
    )
    with pytest.raises(TypeError, match=known):
        compare(torch.nn.Linear(2, 2), torch.zeros(1, 2))


def test_a_float_mask_is_refused_before_the_module_runs():
    module = refimpl_module()
    x = torch.randn(2, 1, 5, 16, dtype=torch.float64)
    with pytest.raises(TypeError, match="mask must be a boolean array"):
        compare(module, x, mask=torch.ones(2, 1, 5, dtype=torch.float64), out=io.StringIO())


def test_a_mask_for_a_module_that_takes_none_is_refused():
    with pytest.raises(ValueError, match="mask must be None for flamingo-pytorch's PerceiverResampler"):
        compare(
            random_flamingo_pytorch_module(),
            torch.randn(2, 3, 5, 16, dtype=torch.float64),
            mask=torch.ones(2, 3, 5, dtype=torch.bool),
        )


def test_a_spec_point_that_is_not_a_submodule_is_named():
    spec = own_spec(OWN_CONFIG)
    spec = ModuleSpec(**{**spec.__dict__, "feed_forward": "blocks.{i}.ffn"})
    with pytest.raises(ValueError, match="layer 0 attention residual row names 'blocks.0.ffn'"):
        compare(own_module(), torch.randn(1, 1, 3, 12, dtype=torch.float64), spec=spec, out=io.StringIO())


def test_a_spec_layout_that_misses_a_weight_is_named():
    spec = own_spec(OWN_CONFIG)
    layout = {key: value for key, value in spec.layout.items() if key != "blocks.1.mlp.up.weight"}
    with pytest.raises(ValueError, match="blocks.1.mlp.up.weight"):
        compare(
            own_module(),
            torch.randn(1, 1, 3, 12, dtype=torch.float64),
            spec=ModuleSpec(**{**spec.__dict__, "layout": layout}),
        )


def test_a_spec_pattern_without_the_layer_is_refused():
    with pytest.raises(ValueError, match=r"ModuleSpec.attention must be a pattern with \{i\}"):
        ModuleSpec(
            config=OWN_CONFIG,
            layout={},
            attention="attn",
            feed_forward="blocks.{i}.mlp",
            final_norm="n",
            layer_input=Point("blocks.{i}", 0),
        )


# ---------------------------------------------------------------- planted bugs: the hand-written module


def drop_attention_residual(block):
    """The block adds the feed-forward's residual but not the attention's."""

    def forward(media, latents):
        latents = block.attn(media, latents)
        return latents + block.mlp(latents)

    block.forward = forward


def swap_keys_and_values(attend):
    """qkv's key and value thirds trade places (the queries stay)."""
    attend.qkv.register_forward_hook(lambda _, __, out: torch.cat([out.chunk(3, -1)[i] for i in (0, 2, 1)], dim=-1))


OWN_BUGS = {  # name: (plant(module), the row it must be named at)
    "final-norm eps": (lambda m: setattr(m.out_norm, "eps", 1e-1), ("final norm", None)),
    "dropped residual in layer 1": (lambda m: drop_attention_residual(m.blocks[1]), ("attention residual", 1)),
    "media embeddings never added": (lambda m: setattr(m.embed, "forward", lambda x: x), ("media", None)),
    "softmax over the queries in layer 2": (
        lambda m: setattr(m.blocks[2].attn, "normalise", lambda s: s.softmax(dim=-2)),
        ("attention", 2),
    ),
    "the scale missing": (lambda m: [setattr(b.attn, "scale", 1.0) for b in m.blocks], ("attention", 0)),
    "K and V swapped": (lambda m: [swap_keys_and_values(b.attn) for b in m.blocks], ("attention", 0)),
    "latents left out of K/V in layer 1": (
        lambda m: setattr(m.blocks[1].attn, "latents_in_kv", False),
        ("attention", 1),
    ),
    "tanh-approximate GELU": (
        lambda m: [setattr(b.mlp.act, "approximate", "tanh") for b in m.blocks],
        ("feed-forward", 0),
    ),
    "a wrong eps in layer 1's feed-forward norm": (
        lambda m: setattr(m.blocks[1].mlp.ln, "eps", 1e-1),
        ("feed-forward", 1),
    ),
    "a wrong eps in layer 2's media norm": (
        lambda m: setattr(m.blocks[2].attn.ln_media, "eps", 1e-1),
        ("attention", 2),
    ),
}


@pytest.mark.parametrize("bug", OWN_BUGS)
def test_a_bug_in_own_module_is_named_at_its_row(bug):
    plant, row = OWN_BUGS[bug]
    module = own_module()
    plant(module)
    x = torch.from_numpy(np.random.default_rng(2).standard_normal((2, 3, 5, 12)))
    assert first_difference(module, x, spec=own_spec(OWN_CONFIG)) == row


# ---------------------------------------------------------------- planted bugs: the peers' modules


def flamingo_pytorch_module():
    from flamingo_pytorch import PerceiverResampler

    return randomised(
        PerceiverResampler(dim=12, depth=3, dim_head=5, heads=3, num_latents=7, num_media_embeds=4, ff_mult=2)
    )


def open_flamingo_module():
    return randomised(
        OpenFlamingoResampler(
            dim=12, depth=3, dim_head=5, heads=3, num_latents=7, max_num_media=4, max_num_frames=3, ff_mult=2
        )
    )


def idefics_module():
    config = IdeficsConfig(vision_config={"embed_dim": 12}, perceiver_config={"qk_layer_norms_perceiver": False})
    return randomised(IdeficsPerceiverResampler(config, embed_dim=12, depth=3, n_heads=3, head_dim=5, n_latents=7))


def idefics2_module(hidden_act="silu"):
    config = Idefics2PerceiverConfig(
        hidden_size=12,
        resampler_n_latents=7,
        resampler_depth=3,
        resampler_n_heads=4,
        resampler_head_dim=5,
        num_key_value_heads=2,
        rms_norm_eps=1e-6,
        hidden_act=hidden_act,
    )
    config._attn_implementation = "sdpa"  # the eager path computes its softmax in float32 even in float64
    return randomised(Idefics2PerceiverResampler(config))


def media_never_added(module, x):
    """Every attention block gets the raw input where the media plus embeddings belong."""

    def pre_hook(_, args):
        return (x.reshape(args[0].shape), *args[1:])

    for layer in module.layers:
        layer[0].register_forward_pre_hook(pre_hook)


def keys_and_values_swapped(attention):
    """to_kv's halves (keys, then values) trade places."""
    attention.to_kv.register_forward_hook(lambda _, __, out: torch.cat(out.chunk(2, dim=-1)[::-1], dim=-1))


def latents_left_out_of(linear, num_latents):
    """`linear` (a key or value projection) sees the media without the latents after them."""
    linear.register_forward_pre_hook(lambda _, args: (args[0][..., :-num_latents, :],))


def projections_swapped(attention, keys="k_proj", values="v_proj"):
    """The key projection computes values and the value projection keys."""
    k, v = getattr(attention, keys), getattr(attention, values)
    k.register_forward_hook(lambda _, args, __: F.linear(args[0], v.weight))
    v.register_forward_hook(lambda _, args, __: F.linear(args[0], k.weight))


# flamingo-pytorch and open_flamingo: PerceiverAttention at layers.{i}.0, FeedForward at layers.{i}.1
FLAMINGO_STYLE_BUGS = {
    "final-norm eps": (lambda m, x: setattr(m.norm, "eps", 1e-1), ("final norm", None)),
    "media embeddings never added": (media_never_added, ("media", None)),
    "the scale missing": (lambda m, x: [setattr(layer[0], "scale", 1.0) for layer in m.layers], ("attention", 0)),
    "K and V swapped": (lambda m, x: [keys_and_values_swapped(layer[0]) for layer in m.layers], ("attention", 0)),
    "latents left out of K/V in layer 1": (lambda m, x: latents_left_out_of(m.layers[1][0].to_kv, 7), ("attention", 1)),
    "tanh-approximate GELU": (
        lambda m, x: [setattr(layer[1][2], "approximate", "tanh") for layer in m.layers],
        ("feed-forward", 0),
    ),
    "a wrong eps in layer 2's feed-forward norm": (
        lambda m, x: setattr(m.layers[2][1][0], "eps", 1e-1),
        ("feed-forward", 2),
    ),
}
IDEFICS_BUGS = {
    "final-norm eps": (lambda m, x: setattr(m.layer_norm, "eps", 1e-1), ("final norm", None)),
    "the scale missing": (lambda m, x: [setattr(block[0], "qk_scale", 1.0) for block in m.blocks], ("attention", 0)),
    "K and V swapped": (lambda m, x: [projections_swapped(block[0]) for block in m.blocks], ("attention", 0)),
    "latents left out of K/V in layer 1": (
        lambda m, x: [latents_left_out_of(getattr(m.blocks[1][0], name), 7) for name in ("k_proj", "v_proj")],
        ("attention", 1),
    ),
    "a wrong eps in layer 1's latents norm": (
        lambda m, x: setattr(m.blocks[1][0].latents_layer_norm, "eps", 1e-1),
        ("attention", 1),
    ),
}
IDEFICS2_BUGS = {
    "final-norm eps": (lambda m, x: setattr(m.norm, "variance_epsilon", 1e-1), ("final norm", None)),
    "the scale missing": (
        lambda m, x: [setattr(layer.self_attn, "scaling", 1.0) for layer in m.layers],
        ("attention", 0),
    ),
    "K and V swapped": (lambda m, x: [projections_swapped(layer.self_attn) for layer in m.layers], ("attention", 0)),
    "tanh-approximate GELU in place of SiLU": (
        lambda m, x: [setattr(layer.mlp, "act_fn", torch.nn.GELU(approximate="tanh")) for layer in m.layers],
        ("feed-forward", 0),
    ),
    "a wrong eps in layer 1's feed-forward norm": (
        lambda m, x: setattr(m.layers[1].post_attention_layernorm, "variance_epsilon", 1e-1),
        ("feed-forward", 1),
    ),
}
PEER_CASES = {  # name: (module, input)
    "flamingo_pytorch": (flamingo_pytorch_module, lambda rng: rng.standard_normal((2, 3, 6, 12)), FLAMINGO_STYLE_BUGS),
    "open_flamingo": (open_flamingo_module, lambda rng: rng.standard_normal((2, 3, 2, 6, 12)), FLAMINGO_STYLE_BUGS),
    "idefics": (idefics_module, lambda rng: rng.standard_normal((2, 9, 12)), IDEFICS_BUGS),
    "idefics2": (idefics2_module, lambda rng: rng.standard_normal((2, 9, 12)), IDEFICS2_BUGS),
}
PEER_BUGS = [(peer, bug) for peer, (_, _, bugs) in PEER_CASES.items() for bug in bugs]


@pytest.mark.parametrize("peer", PEER_CASES)
def test_a_faithful_peer_agrees_in_every_row(peer):
    build, inputs, _ = PEER_CASES[peer]
    rows = compare(build(), torch.from_numpy(inputs(np.random.default_rng(2))), out=io.StringIO())
    assert all(row["ok"] for row in rows), rows
    assert rows[0]["block"] == "media"


@pytest.mark.parametrize(("peer", "bug"), PEER_BUGS)
def test_a_bug_in_a_peer_is_named_at_its_row(peer, bug):
    build, inputs, bugs = PEER_CASES[peer]
    plant, row = bugs[bug]
    module = build()
    x = torch.from_numpy(inputs(np.random.default_rng(2)))
    plant(module, x)
    assert first_difference(module, x) == row


class DroppedResidual(rt.PerceiverResampler):
    """refimpl.torch's resampler whose layer 1 leaves out the attention residual."""

    def forward(self, x, mask=None, return_attention=False):
        media = x.reshape(x.shape[0], -1, x.shape[-1])  # (B, N, D): no embeddings in this config
        latents = self.latents.expand(x.shape[0], -1, -1)
        for i, (layer, kv) in enumerate(zip(self.layers, self.media_keys_values(media), strict=True)):
            attended, _ = layer["attn"](kv, latents)
            latents = attended if i == 1 else latents + attended
            latents = latents + layer["ff"](latents)
        return self.norm(latents)


@pytest.mark.parametrize(
    ("plant", "row"),
    [
        (lambda m: setattr(m.norm, "eps", 1e-1), ("final norm", None)),
        (lambda m: setattr(m.layers[1]["ff"].norm, "eps", 1e-1), ("feed-forward", 1)),
        (lambda m: setattr(m.layers[0]["ff"], "activation", "relu"), ("feed-forward", 0)),
        (lambda m: setattr(m, "__class__", DroppedResidual), ("attention residual", 1)),
    ],
    ids=["final-norm eps", "layer 1 feed-forward eps", "relu for gelu in layer 0", "dropped residual in layer 1"],
)
def test_a_bug_in_refimpl_torch_is_named_at_its_row(plant, row):
    module = copy.deepcopy(refimpl_module())
    plant(module)
    assert first_difference(module, torch.randn(2, 1, 6, 16, dtype=torch.float64)) == row


# ---------------------------------------------------------------- Idefics2's hidden_act: modelled or refused


def test_idefics2_with_silu_is_swiglu_and_agrees():
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((2, 9, 12)))
    rows = compare(idefics2_module("silu"), x, out=io.StringIO())
    assert all(row["ok"] for row in rows)
    assert rows[0]["bound"] == refimpl.TOLERANCES["float64", "Idefics2 module (float32 RMSNorm) vs refimpl"]


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_pytorch_tanh", "relu"])
def test_idefics2_with_another_hidden_act_is_refused_not_reported_as_a_mismatch(hidden_act):
    module = idefics2_module(hidden_act)
    with pytest.raises(
        ValueError, match=f"config.hidden_act = '{hidden_act}'.*refimpl's only gated MLP is activation='swiglu'"
    ):
        compare(module, torch.randn(2, 9, 12, dtype=torch.float64), out=io.StringIO())
