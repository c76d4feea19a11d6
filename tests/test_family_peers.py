"""The resampler family's peers in refimpl.interop (issue 12, section 2): Kosmos-2's and
Evolla's real modules from transformers, and Qwen-VL's and MiniCPM-V's layout-faithful
stand-ins (refimpl.interop.hub_standins: their code ships only on the model hub), every
parameter random (biases and norm weights away from their init; Qwen-VL's pos_embed stays
the sin-cos table it must be). Each is reproduced by refimpl in float64 and float32, round-trips strictly,
runs through compare block by block (a planted bug named at its row) and through
`python -m refimpl verify` on a file saved from the module.
"""

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from helpers import family_cases, randomise
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save_file
from transformers import EvollaConfig, Kosmos2Config
from transformers.models.evolla.modeling_evolla import EvollaSequenceCompressorResampler
from transformers.models.kosmos2.modeling_kosmos2 import Kosmos2ImageToTextProjection

import refimpl
import refimpl.torch as rt
from refimpl import interop
from refimpl.interop import compare, compare_grads
from refimpl.interop.hub_standins import MiniCPMVResampler, QwenVLResampler, sincos_table

FLOAT64 = ("float64", "another implementation vs refimpl")
POSITIONS64 = ("float64", "module with float32 sin-cos positions vs refimpl")
FLOAT32 = ("float32", "peer module vs float64 reference")
DTYPES = {"float64": torch.float64, "float32": torch.float32}


# ---------------------------------------------------------------- the peers, small, every parameter random


def kosmos2_module():
    """D_in = 10, D = 16, H = 4 (Dh = 4), R = 5."""
    config = Kosmos2Config(
        vision_config=dict(hidden_size=10), text_config=dict(embed_dim=16, attention_heads=4), latent_query_num=5
    )
    config.text_config._attn_implementation = "eager"
    return Kosmos2ImageToTextProjection(config)


def evolla_module():
    """D = 12, depth 2, H = 3, Dh = 5, R = 7, F = 24, Do = 20."""
    config = EvollaConfig(
        protein_encoder_config=dict(hidden_size=12),
        hidden_size=20,
        resampler_depth=2,
        resampler_dim_head=5,
        resampler_heads=3,
        resampler_num_latents=7,
        resampler_ff_mult=2,
    )
    return EvollaSequenceCompressorResampler(config)


def qwen_vl_module(kv_dim=10):
    """G = 3 (R = 9), D = 16, H = 4, D_in = kv_dim (an identity kv_proj where it is 16)."""
    return QwenVLResampler(grid_size=3, embed_dim=16, num_heads=4, kv_dim=kv_dim)


def minicpm_v_module():
    """R = 5, D = 16, H = 4, D_in = 10; a 3 x 3 table to start with, grown by larger images."""
    return MiniCPMVResampler(num_queries=5, embed_dim=16, num_heads=4, kv_dim=10, max_size=(3, 3))


def random_module(build, seed=2):
    """build() with every parameter random; a pos_embed (Qwen-VL's) kept the sin-cos table."""
    module = build()
    table = dict(module.named_parameters()).get("pos_embed")
    table = None if table is None else table.detach().clone()
    randomise(module, seed)
    if table is not None:
        with torch.no_grad():
            module.pos_embed.copy_(table)
    return module


@dataclass
class Case:
    build: Callable  # () -> the module
    read: Callable  # state dict -> (config, params)
    write: Callable  # (config, params) -> state dict
    inputs: Callable  # rng -> (the module's inputs, refimpl's x, mask, grid)
    key64: tuple = FLOAT64  # the float64 bound


def kosmos2_inputs(rng):
    features = rng.standard_normal((2, 7, 10))
    return (features,), features[:, None], None, None


def evolla_inputs(rng):
    embeds, mask = rng.standard_normal((3, 9, 12)), np.ones((3, 9), dtype=np.int64)
    mask[1, 6:], mask[2, 2:] = 0, 0  # padded rows, one of 2 residues
    return (embeds, mask), embeds[:, None], mask[:, None] == 1, None


def qwen_vl_inputs(side):
    def inputs(rng):
        x = rng.standard_normal((2, side * side, 10))
        return (x,), x[:, None], None, (side, side)

    return inputs


def minicpm_v_inputs(rng):
    """Three images, 3 x 4, 2 x 5 and 4 x 2 patches (the first larger than the 3 x 3 table the
    module starts with), padded to 12 tokens."""
    tgt_sizes = np.array([[3, 4], [2, 5], [4, 2]])
    x = rng.standard_normal((3, 12, 10))
    real = np.arange(12) < (tgt_sizes[:, 0] * tgt_sizes[:, 1])[:, None]  # (B, L)
    return (x, tgt_sizes), x[:, None], real[:, None], tgt_sizes


CASES = {
    "kosmos2": Case(kosmos2_module, lambda sd: interop.from_kosmos2(sd, heads=4), interop.to_kosmos2, kosmos2_inputs),
    "evolla": Case(evolla_module, lambda sd: interop.from_evolla(sd, heads=3), interop.to_evolla, evolla_inputs),
    # the module's own pos_embed is made in float32 (as Qwen-VL's is): the float32 positions' bound
    "qwen_vl": Case(
        qwen_vl_module, lambda sd: interop.from_qwen_vl(sd, heads=4), interop.to_qwen_vl, qwen_vl_inputs(3), POSITIONS64
    ),
    "qwen_vl resized": Case(
        qwen_vl_module, lambda sd: interop.from_qwen_vl(sd, heads=4), interop.to_qwen_vl, qwen_vl_inputs(5), POSITIONS64
    ),
    "minicpm_v": Case(
        minicpm_v_module,
        lambda sd: interop.from_minicpm_v(sd, heads=4),
        interop.to_minicpm_v,
        minicpm_v_inputs,
        POSITIONS64,
    ),
}


def run(module, inputs, dtype):
    """The module's output (its first, for a tuple) on `inputs` (arrays; integer ones as is)."""
    tensors = [torch.tensor(a, dtype=dtype) if np.issubdtype(a.dtype, np.floating) else torch.tensor(a) for a in inputs]
    with torch.no_grad():
        output = module(*tensors)
    return output[0] if isinstance(output, tuple) else output


def reference(config, params, x, mask, grid):
    return refimpl.perceiver_resampler(params, x, config, mask=mask, **({} if grid is None else dict(grid=grid)))


def assert_agrees(theirs, ours, key, what):
    theirs = theirs.detach().double().numpy()
    assert theirs.shape == ours.shape, f"{what}: shape {theirs.shape}, refimpl's {ours.shape}"
    error = refimpl.relative_error(theirs, ours)
    assert error <= refimpl.TOLERANCES[key], f"{what}: relative error {error:.3g} > TOLERANCES[{key!r}]"
    return error


# ---------------------------------------------------------------- import: the module's output, reproduced


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", CASES)
def test_imported_weights_reproduce_the_module(name, dtype):
    case = CASES[name]
    module = random_module(case.build).to(DTYPES[dtype]).eval()
    inputs, x, mask, grid = case.inputs(np.random.default_rng(1))
    inputs = tuple(
        a.astype(dtype) if np.issubdtype(a.dtype, np.floating) else a for a in inputs
    )  # the module's precision
    config, params = case.read(module.state_dict())
    expected = reference(config, params, np.asarray(x, dtype=dtype), mask, grid)  # float64
    assert_agrees(run(module, inputs, DTYPES[dtype]), expected, case.key64 if dtype == "float64" else FLOAT32, name)


def test_qwen_vl_on_the_tables_grid_agrees_to_float64_rounding():
    # holding refimpl's float64 table (to_qwen_vl's pos_embed) and not resizing it, the module
    # computes nothing in float32: the generic float64 bound, not the positions' one
    module = random_module(qwen_vl_module).double()
    config, params = interop.from_qwen_vl(module.state_dict(), heads=4)
    module.load_state_dict(interop.to_qwen_vl(config, params), strict=True)
    inputs, x, mask, grid = qwen_vl_inputs(3)(np.random.default_rng(3))
    error = assert_agrees(
        run(module, inputs, torch.float64), reference(config, params, x, mask, grid), FLOAT64, "qwen_vl"
    )
    assert error <= 1e-12


def test_qwen_vl_without_kv_proj_reads_media_dim_none():
    module = random_module(lambda: qwen_vl_module(kv_dim=16)).double()
    assert isinstance(module.kv_proj, torch.nn.Identity)
    config, params = interop.from_qwen_vl(module.state_dict(), heads=4)
    assert config.media_dim is None and "media_proj.weight" not in params
    x = np.random.default_rng(4).standard_normal((2, 16, 16))  # a 4 x 4 grid: resized keys
    assert_agrees(
        run(module, (x,), torch.float64), reference(config, params, x[:, None], None, (4, 4)), POSITIONS64, "qwen_vl"
    )


def test_minicpm_v_padding_changes_nothing():
    # each image alone (unpadded, its own batch of one) gives the row the padded batch gives
    module = random_module(minicpm_v_module).double()
    (x, tgt_sizes), *_ = minicpm_v_inputs(np.random.default_rng(5))
    batch = run(module, (x, tgt_sizes), torch.float64)
    config, params = interop.from_minicpm_v(module.state_dict(), heads=4)
    for b, (h, w) in enumerate(tgt_sizes):
        alone = reference(config, params, x[b : b + 1, None, : h * w], None, np.array([[h, w]]))
        assert_agrees(batch[b : b + 1], alone, POSITIONS64, f"image {b}")


def test_the_stand_ins_tables_are_refimpls_sincos_2d():
    # two separate computations of the MAE table: the stand-ins' (float32, as the hub code) and refimpl's
    for dim, h, w in ((16, 3, 4), (64, 7, 5)):
        theirs = sincos_table(dim, h, w).reshape(h * w, dim)
        assert np.abs(theirs - refimpl.sincos_2d(dim, h, w)).max() <= 1e-6


def test_qwen_vl_pos_embed_is_checked_against_the_computed_table():
    state_dict = random_module(qwen_vl_module).double().state_dict()
    state_dict["pos_embed"] = state_dict["pos_embed"].flip(-1)  # the halves swapped: rows for columns
    with pytest.raises(ValueError, match=r"state_dict\['pos_embed'\] must be the fixed 2-D sin-cos table"):
        interop.from_qwen_vl(state_dict, heads=4)


def test_qwen_vl_needs_a_square_number_of_queries():
    state_dict = random_module(qwen_vl_module).double().state_dict()
    state_dict["query"] = state_dict["query"][:8]
    with pytest.raises(ValueError, match="query must have G\\*G rows"):
        interop.from_qwen_vl(state_dict, heads=4)


# ---------------------------------------------------------------- export: strict round trips


@pytest.mark.parametrize("name", ["kosmos2", "evolla", "qwen_vl", "minicpm_v"])
def test_round_trip_is_exact_and_loads_strictly(name):
    # every tensor comes back bit for bit, except Qwen-VL's pos_embed: the module made it in
    # float32, and export writes refimpl's float64 table (which then round-trips exactly)
    case = CASES[name]
    state_dict = random_module(case.build).double().state_dict()
    config, params = case.read(state_dict)
    written = case.write(config, params)
    assert list(written) == list(state_dict)
    for key, value in state_dict.items():
        if key == "pos_embed":
            assert (written[key] - value).abs().max() <= 1e-6
        else:
            assert torch.equal(written[key], value), key
    fresh = case.build().double()
    fresh.load_state_dict(written, strict=True)
    config_again, params_again = case.read(fresh.state_dict())
    assert config_again == config and params_again.keys() == params.keys()
    assert all(np.array_equal(params_again[k], params[k]) for k in params)
    assert all(torch.equal(value, written[key]) for key, value in case.write(config_again, params_again).items())


@st.composite
def peer_configs(draw, peer):
    """A config the peer can express, its sizes drawn small and unequal."""
    heads, dim_head = draw(st.integers(1, 3)), 4 * draw(st.integers(1, 2))  # D = H * Dh, divisible by 4
    dim = heads * dim_head
    media_dim = draw(st.sampled_from([None, dim + 3, max(4, dim - 2)]))
    media_dim = None if media_dim == dim else media_dim
    side = draw(st.integers(1, 3))
    common = dict(
        dim=dim,
        depth=1,
        heads=heads,
        dim_head=dim_head,
        latents_in_kv=False,
        attn_bias=True,
        norm_eps=1e-6,
        attn_residual=False,
        feed_forward=False,
        media_dim=media_dim,
    )
    if peer == "kosmos2":
        return refimpl.ResamplerConfig(
            **(
                common
                | dict(
                    num_latents=draw(st.integers(1, 6)),
                    media_dim=media_dim or dim + 1,
                    latents_in_kv=True,
                    norm_eps=1e-5,
                    media_proj_bias=True,
                    pre_norm=False,
                    final_norm=False,
                )
            )
        )
    if peer == "evolla":
        return refimpl.ResamplerConfig(
            dim=draw(st.integers(2, 9)),
            depth=draw(st.integers(1, 3)),
            heads=draw(st.integers(1, 3)),
            dim_head=draw(st.integers(1, 5)),
            num_latents=draw(st.integers(1, 6)),
            ff_mult=draw(st.integers(1, 3)),
            final_norm=False,
            out_dim=draw(st.integers(1, 9)),
            out_norm=True,
        )
    if peer == "qwen_vl":
        return refimpl.ResamplerConfig(
            **(common | dict(num_latents=side * side, final_norm=False, positions="keys_and_queries", pos_grid=side))
        )
    return refimpl.ResamplerConfig(
        **(common | dict(num_latents=draw(st.integers(1, 6)), out_dim=dim, out_proj_bias=False, positions="keys"))
    )


READ = {
    "kosmos2": lambda sd, config: interop.from_kosmos2(sd, heads=config.heads),
    "evolla": lambda sd, config: interop.from_evolla(sd, heads=config.heads),
    "qwen_vl": lambda sd, config: interop.from_qwen_vl(sd, heads=config.heads),
    "minicpm_v": lambda sd, config: interop.from_minicpm_v(sd, heads=config.heads),
}
WRITE = {
    "kosmos2": interop.to_kosmos2,
    "evolla": interop.to_evolla,
    "qwen_vl": interop.to_qwen_vl,
    "minicpm_v": interop.to_minicpm_v,
}


@pytest.mark.parametrize("peer", READ)
@given(data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_round_trip_from_refimpl_is_exact(peer, data, seed):
    config = data.draw(peer_configs(peer))
    params = refimpl.init_resampler(config, seed=seed)
    config_again, params_again = READ[peer](WRITE[peer](config, params), config)
    assert config_again == config
    assert params_again.keys() == params.keys() and all(np.array_equal(params_again[k], params[k]) for k in params)


@pytest.mark.parametrize(
    "write, switches, named",
    [
        (interop.to_kosmos2, dict(depth=2), "depth = 2"),
        (interop.to_evolla, dict(out_norm=False), "out_norm = False"),
        (interop.to_qwen_vl, dict(attn_residual=True), "attn_residual = True"),
        (interop.to_minicpm_v, dict(out_dim=8), "out_dim = 8"),
    ],
)
def test_export_refuses_what_the_peer_cannot_express(write, switches, named):
    base = {
        interop.to_kosmos2: dict(
            dim=16,
            depth=1,
            heads=4,
            dim_head=4,
            num_latents=5,
            media_dim=10,
            latents_in_kv=True,
            attn_bias=True,
            media_proj_bias=True,
            pre_norm=False,
            attn_residual=False,
            feed_forward=False,
            final_norm=False,
        ),
        interop.to_evolla: dict(
            dim=12, depth=1, heads=3, dim_head=5, num_latents=7, final_norm=False, out_dim=20, out_norm=True
        ),
        interop.to_qwen_vl: dict(
            dim=16,
            depth=1,
            heads=4,
            dim_head=4,
            num_latents=9,
            media_dim=10,
            latents_in_kv=False,
            attn_bias=True,
            norm_eps=1e-6,
            attn_residual=False,
            feed_forward=False,
            final_norm=False,
            positions="keys_and_queries",
            pos_grid=3,
        ),
        interop.to_minicpm_v: dict(
            dim=16,
            depth=1,
            heads=4,
            dim_head=4,
            num_latents=5,
            media_dim=10,
            latents_in_kv=False,
            attn_bias=True,
            norm_eps=1e-6,
            attn_residual=False,
            feed_forward=False,
            out_dim=16,
            out_proj_bias=False,
            positions="keys",
        ),
    }[write]
    config = refimpl.ResamplerConfig(**(base | switches))
    with pytest.raises(ValueError, match=named):
        write(config, refimpl.init_resampler(config))


# ---------------------------------------------------------------- compare: block by block, and a planted bug named


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", CASES)
def test_compare_agrees_in_every_row(name, dtype):
    case = CASES[name]
    module = random_module(case.build).to(DTYPES[dtype]).eval()
    inputs, *_ = case.inputs(np.random.default_rng(6))
    x, mask = (inputs[0], inputs[1] if len(inputs) > 1 else None)
    out = io.StringIO()
    rows = compare(
        module, torch.tensor(x, dtype=DTYPES[dtype]), mask=None if mask is None else torch.tensor(mask), out=out
    )
    assert all(row["ok"] for row in rows), out.getvalue()
    assert "verdict: every row within the bound" in out.getvalue()
    blocks = {row["block"] for row in rows}
    assert {"attention", "output"} <= blocks, out.getvalue()


def _scale_output(submodule, factor):
    submodule.register_forward_hook(
        lambda _, __, output: (output[0] * factor, *output[1:]) if isinstance(output, tuple) else output * factor
    )


def _plant_kosmos2(module):
    module.x_attn.scaling *= 1.05  # a wrong softmax temperature in the attention


def _plant_evolla(module):
    module.norm.eps = 0.5  # the output norm's eps


def _plant_evolla_ff(module):
    module.layers[1][1].activation = torch.nn.ReLU()  # layer 1's feed-forward


def _plant_qwen_vl(module):
    module.ln_q.eps = 0.5  # inside the attention: the queries' norm


def _plant_minicpm_v(module):
    module.ln_post.eps = 0.5  # the final norm


@pytest.mark.parametrize(
    "name, plant, block, layer",
    [
        ("kosmos2", _plant_kosmos2, "attention", 0),
        ("evolla", _plant_evolla, "output norm", None),
        ("evolla", _plant_evolla_ff, "feed-forward", 1),
        ("qwen_vl", _plant_qwen_vl, "attention", 0),
        ("qwen_vl resized", _plant_qwen_vl, "attention", 0),
        ("minicpm_v", _plant_minicpm_v, "final norm", None),
    ],
)
def test_compare_names_a_planted_bug_at_its_row(name, plant, block, layer):
    case = CASES[name]
    module = random_module(case.build).double().eval()
    plant(module)
    inputs, *_ = case.inputs(np.random.default_rng(7))
    x, mask = (inputs[0], inputs[1] if len(inputs) > 1 else None)
    out = io.StringIO()
    rows = compare(module, torch.tensor(x), mask=None if mask is None else torch.tensor(mask), out=out)
    first = next((row for row in rows if not row["ok"]), None)
    assert first is not None and (first["block"], first["layer"]) == (block, layer), out.getvalue()
    assert first["relative"] > 100 * first["bound"], out.getvalue()
    assert all(row["ok"] for row in rows[: rows.index(first)]), out.getvalue()


def test_compare_refuses_minicpm_v_without_its_tgt_sizes():
    module = random_module(minicpm_v_module).double()
    with pytest.raises(ValueError, match="tgt_sizes"):
        compare(module, torch.zeros(2, 12, 10, dtype=torch.float64), out=io.StringIO())


# ---------------------------------------------------------------- verify: a file saved from the module


def verify(path, peer, **kwargs):
    from refimpl.interop.verify import verify as run_verify

    out = io.StringIO()
    return run_verify(path, peer=peer, out=out, **kwargs), out.getvalue()


def saved(tmp_path, module, prefix, extra=None):
    """The module's state dict under `prefix`, beside `extra` keys (a model's other tensors), in
    a .safetensors file."""
    state_dict = {prefix + key: value.contiguous() for key, value in module.state_dict().items()} | (extra or {})
    path = tmp_path / "model.safetensors"
    save_file(state_dict, path)
    return path


def test_verify_passes_a_kosmos2_model_file(tmp_path):
    path = saved(
        tmp_path,
        random_module(kosmos2_module),
        "image_to_text_projection.",
        {"text_model.lm_head.weight": torch.zeros(3, 4)},
    )
    status, out = verify(path, "kosmos2", heads=4)
    assert status == 0, out
    assert "found under the prefix 'image_to_text_projection.'" in out and "verify: OK" in out
    assert "settings: heads 4 (--heads)" in out and "eps" not in out.split("settings:")[1].split("\n")[0]


def test_verify_passes_an_evolla_model_file(tmp_path):
    prefix = "model.protein_encoder.sequence_compressor_resampler."
    status, out = verify(saved(tmp_path, random_module(evolla_module), prefix), "evolla", heads=3)
    assert status == 0, out
    assert f"found under the prefix '{prefix}'" in out and "out_dim=20" in out and "verify: OK" in out


@pytest.mark.parametrize(
    "peer, build, prefix, module_class",
    [
        ("qwen_vl", qwen_vl_module, "transformer.visual.attn_pool.", QwenVLResampler),
        ("minicpm_v", minicpm_v_module, "resampler.", MiniCPMVResampler),
    ],
)
def test_verify_a_hub_only_peer(tmp_path, peer, build, prefix, module_class):
    path = saved(tmp_path, random_module(build), prefix)
    status, out = verify(path, peer, heads=4)  # no module class: the shape check only
    assert status == 0, out
    assert "shape check: all" in out and "is not installed" in out and "verify: OK" not in out
    status, out = verify(path, peer, heads=4, module_class=module_class)
    assert status == 0, out
    assert "float64 vs refimpl" in out and "verify: OK" in out


def test_verify_fails_a_planted_bug_in_a_hub_only_peer(tmp_path):
    class Resampler(MiniCPMVResampler):  # compare knows MiniCPM-V's by its class name and layout
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.ln_post.eps = 0.5

    path = saved(tmp_path, random_module(minicpm_v_module), "resampler.")
    status, out = verify(path, "minicpm_v", heads=4, module_class=Resampler)
    assert status == 1, out
    assert "the first block over the bound is final norm" in out


def test_verify_refuses_a_module_class_for_a_packaged_peer(tmp_path):
    from refimpl.interop.verify import VerifyError

    path = saved(tmp_path, random_module(evolla_module), "")
    with pytest.raises(VerifyError, match="module_class is for the peers whose code ships only"):
        verify(path, "evolla", heads=3, module_class=QwenVLResampler)


def test_each_peer_finds_its_own_resampler_only():
    keys = {
        name: list(random_module(CASES[name].build).state_dict())
        for name in ("kosmos2", "evolla", "qwen_vl", "minicpm_v")
    }
    for name, module_keys in keys.items():
        for other in keys:
            found = interop._registry.peer(other).find_prefix(module_keys)
            assert (found == "") == (other == name), (name, other, found)


# ---------------------------------------------------------------- refimpl.torch
# with the family's switches, through compare


@given(case=family_cases())
def test_refimpl_torch_with_the_family_switches_agrees_in_every_row(case):
    config, params, x, mask, grid = case
    module = rt.PerceiverResampler.from_refimpl(config, params)
    out = io.StringIO()
    rows = compare(
        module, torch.from_numpy(x), mask=None if mask is None else torch.from_numpy(mask), grid=grid, out=out
    )
    assert all(row["ok"] for row in rows), out.getvalue()
    blocks = [row["block"] for row in rows]
    assert ("final norm" in blocks) == config.final_norm and ("feed-forward" in blocks) == config.feed_forward, (
        out.getvalue()
    )
    assert ("output projection" in blocks) == (config.out_dim is not None), out.getvalue()


def test_a_grid_is_only_for_refimpl_torch():
    module = random_module(qwen_vl_module).double()
    with pytest.raises(ValueError, match="grid is for refimpl.torch.PerceiverResampler"):
        compare(module, torch.zeros(2, 9, 10, dtype=torch.float64), grid=(3, 3), out=io.StringIO())


# ---------------------------------------------------------------- compare_grads: every parameter's gradient


@pytest.mark.parametrize("name", CASES)
def test_compare_grads_agrees_for_every_parameter(name):
    case = CASES[name]
    module = random_module(case.build).double().eval()
    inputs, *_ = case.inputs(np.random.default_rng(8))
    x, mask = (inputs[0], inputs[1] if len(inputs) > 1 else None)
    out = io.StringIO()
    rows = compare_grads(module, torch.tensor(x), mask=None if mask is None else torch.tensor(mask), out=out)
    assert "Every gradient agrees with refimpl.grad" in out.getvalue(), out.getvalue()
    _, params = case.read(module.state_dict())
    assert {row["name"] for row in rows} == set(params) | {"x"}


def test_verify_refuses_an_eps_for_a_peer_without_norms(tmp_path):
    from refimpl.interop.verify import VerifyError

    path = saved(tmp_path, random_module(kosmos2_module), "")
    with pytest.raises(VerifyError, match="kosmos2's resampler has no norm: --eps"):
        verify(path, "kosmos2", heads=4, eps=1e-5)


def test_every_peer_has_a_row_in_both_interop_tables():
    # the README's interop table and refimpl.interop's docstring list each peer with its input mapping
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    readme_table = readme.split("### Importing a published resampler's weights", 1)[1].split("\n### ", 1)[0]
    for name in interop._registry.PEERS:
        assert f"(`{name}`" in readme_table, name
        assert f"(`{name}`" in interop.__doc__, name
