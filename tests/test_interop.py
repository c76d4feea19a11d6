"""refimpl.interop against the real peers: weights read out of each module reproduce its
output, weights written back load with strict=True, and a state dict that does not fit is
reported key by key.

The peers are the installed packages: flamingo-pytorch 0.1.2, transformers' IDEFICS and
Idefics2, and open-flamingo 2.0.1 (installed with --no-deps, since it pins torch 2.0.1; its
open_flamingo/src/helpers.py is loaded by file path, refimpl.interop.open_flamingo.installed_helpers,
as its package __init__ imports open_clip). Each is built from a small config with non-square,
non-power-of-two sizes (D = 12, H * Dh = 15 or 20, R = 7) and every parameter randomised
(norm scales and shifts, Idefics2's latents, which default to ones, included), and run
offline on the CPU.

Agreement is refimpl.relative_error against the bounds in refimpl.TOLERANCES:
  float64  the module in float64 vs refimpl (float64)             "another implementation vs refimpl"
  float32  the module in float32 vs refimpl's float64 reference   "peer module vs float64 reference"
           on the same float32 weights and inputs
Idefics2 in float64 has its own bound: its RMSNorm computes in float32 (see
test_idefics2_float64_with_its_float32_rmsnorm).
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import transformers.models.idefics2.modeling_idefics2 as idefics2_modeling
from flamingo_pytorch import PerceiverResampler as FlamingoPytorchResampler
from helpers import randomise, seeds
from hypothesis import given
from hypothesis import strategies as st
from transformers import IdeficsConfig
from transformers.models.idefics.perceiver import IdeficsPerceiverResampler
from transformers.models.idefics2.configuration_idefics2 import Idefics2PerceiverConfig
from transformers.models.idefics2.modeling_idefics2 import Idefics2PerceiverResampler

import refimpl
from refimpl import interop
from refimpl.interop.open_flamingo import installed_helpers

OpenFlamingoResampler = installed_helpers().PerceiverResampler  # the real open-flamingo 2.0.1's

FLOAT64 = ("float64", "another implementation vs refimpl")
FLOAT32 = ("float32", "peer module vs float64 reference")
IDEFICS2_FLOAT32_NORM = ("float64", "Idefics2 module (float32 RMSNorm) vs refimpl")
DTYPES = {"float64": torch.float64, "float32": torch.float32}


def assert_agrees(theirs, ours, key, what):
    """relative_error(theirs, ours) <= TOLERANCES[key]; returns the error."""
    theirs = theirs.detach().double().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    assert theirs.shape == ours.shape, f"{what}: shape {theirs.shape}, refimpl's {ours.shape}"
    error = refimpl.relative_error(theirs, ours)
    assert error <= refimpl.TOLERANCES[key], f"{what}: relative error {error:.3g} > TOLERANCES[{key!r}]"
    return error


# ---------------------------------------------------------------- the peers, small


def idefics_module(qk_norm):
    config = IdeficsConfig(vision_config={"embed_dim": 12}, perceiver_config={"qk_layer_norms_perceiver": qk_norm})
    return IdeficsPerceiverResampler(config, embed_dim=12, depth=2, n_heads=3, head_dim=5, n_latents=7)


def idefics2_module(kv_heads):
    config = Idefics2PerceiverConfig(
        hidden_size=12,
        resampler_n_latents=7,
        resampler_depth=2,
        resampler_n_heads=4,
        resampler_head_dim=5,
        num_key_value_heads=kv_heads,
        rms_norm_eps=1e-6,
    )
    # sdpa: the eager path computes its softmax in float32 even in a float64 model
    config._attn_implementation = "sdpa"
    return Idefics2PerceiverResampler(config)


def padding_mask(rng, batch, seq):
    """Idefics2's attention_mask (batch, seq): 1 = real, 0 = padding at the end of each
    row; the first row unpadded, the second all padding (the latents still attend to
    themselves, so its output is defined), the others of random lengths."""
    lengths = [seq, 0] + list(rng.integers(1, seq, size=batch - 2))
    return (np.arange(seq)[None, :] < np.array(lengths)[:, None]).astype(np.int64)


@dataclass
class Case:
    """One peer configuration: how to build it, read and write its weights, and run it."""

    build: Callable  # () -> the module (float32, default init)
    read: Callable  # state_dict -> (config, params)
    write: Callable  # (config, params) -> state_dict
    inputs: Callable  # rng -> (the module's input arrays, refimpl's x, refimpl's mask)


def open_flamingo_inputs(rng):
    x = rng.standard_normal((2, 3, 2, 6, 12))  # (b, T media, F frames, v, D)
    return (x,), x, None  # refimpl's (B, I, T, S, D) as it stands


def flamingo_pytorch_inputs(rng):
    x = rng.standard_normal((2, 3, 6, 12))  # (b, times = 3 media items, n, D)
    return (x,), x[:, :, None], None  # (B, I, T = 1, S, D)


def flamingo_pytorch_one_media_inputs(rng):
    x = rng.standard_normal((2, 6, 12))  # (b, n, D): the module adds the media axis
    return (x,), x[:, None, None], None


def idefics_inputs(rng):
    context = rng.standard_normal((2, 9, 12))  # (bsz, seq, D)
    return (context,), context[:, None], None  # (B, T = 1, S, D)


def idefics2_inputs(rng):
    attention_mask = padding_mask(rng, 4, 9)  # (bsz, seq), 1 = real
    context = rng.standard_normal((4, 9, 12))
    context[attention_mask == 0] = 1e3  # padding holds garbage, which must not matter
    return (context, attention_mask), context[:, None], attention_mask[:, None] == 1


CASES = {
    "open_flamingo, frame and media embeddings": Case(
        lambda: OpenFlamingoResampler(
            dim=12, depth=2, dim_head=5, heads=3, num_latents=7, max_num_media=4, max_num_frames=3, ff_mult=2
        ),
        lambda sd: interop.from_open_flamingo(sd, heads=3),
        interop.to_open_flamingo,
        open_flamingo_inputs,
    ),
    "open_flamingo, no embeddings": Case(
        lambda: OpenFlamingoResampler(dim=12, depth=2, dim_head=5, heads=3, num_latents=7, ff_mult=2),
        lambda sd: interop.from_open_flamingo(sd, heads=3),
        interop.to_open_flamingo,
        open_flamingo_inputs,
    ),
    "flamingo-pytorch, 3 media items": Case(
        lambda: FlamingoPytorchResampler(
            dim=12, depth=2, dim_head=5, heads=3, num_latents=7, num_media_embeds=4, ff_mult=2
        ),
        lambda sd: interop.from_flamingo_pytorch(sd, heads=3),
        interop.to_flamingo_pytorch,
        flamingo_pytorch_inputs,
    ),
    "flamingo-pytorch, (b, n, D) input": Case(
        lambda: FlamingoPytorchResampler(
            dim=12, depth=2, dim_head=5, heads=3, num_latents=7, num_media_embeds=4, ff_mult=2
        ),
        lambda sd: interop.from_flamingo_pytorch(sd, heads=3),
        interop.to_flamingo_pytorch,
        flamingo_pytorch_one_media_inputs,
    ),
    "IDEFICS": Case(
        lambda: idefics_module(False), lambda sd: interop.from_idefics(sd, heads=3), interop.to_idefics, idefics_inputs
    ),
    "IDEFICS, qk layer norms": Case(
        lambda: idefics_module(True), lambda sd: interop.from_idefics(sd, heads=3), interop.to_idefics, idefics_inputs
    ),
    "Idefics2, GQA, padded": Case(
        lambda: idefics2_module(2), lambda sd: interop.from_idefics2(sd, heads=4), interop.to_idefics2, idefics2_inputs
    ),
    "Idefics2, MHA, padded": Case(
        lambda: idefics2_module(4), lambda sd: interop.from_idefics2(sd, heads=4), interop.to_idefics2, idefics2_inputs
    ),
}
IDEFICS2_CASES = [name for name in CASES if name.startswith("Idefics2")]
MODULE_CASES = [name for name in CASES if not name.startswith("Idefics2")]


def run(module, inputs, dtype):
    """The module's output on `inputs` (arrays; an integer one, the attention mask, as is)."""
    tensors = [torch.tensor(a, dtype=dtype) if np.issubdtype(a.dtype, np.floating) else torch.tensor(a) for a in inputs]
    with torch.no_grad():
        return module(*tensors)


# ---------------------------------------------------------------- import: the module's output, reproduced


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", MODULE_CASES)
def test_imported_weights_reproduce_the_module(name, dtype):
    case, rng = CASES[name], np.random.default_rng(1)
    module = randomise(case.build(), seed=2).to(DTYPES[dtype])
    inputs, x, mask = case.inputs(rng)
    inputs = tuple(np.asarray(a, dtype=dtype) for a in inputs)  # the module's precision
    config, params = case.read(module.state_dict())
    expected = refimpl.perceiver_resampler(params, np.asarray(x, dtype=dtype), config, mask=mask)  # float64
    assert_agrees(run(module, inputs, DTYPES[dtype]), expected, FLOAT64 if dtype == "float64" else FLOAT32, name)


@pytest.mark.parametrize("name", IDEFICS2_CASES)
def test_idefics2_float64_with_its_float32_rmsnorm(name):
    # Idefics2RMSNorm casts to float32, normalises, and casts back, even in a float64 model.
    # refimpl's norm_dtype="float32" (from_idefics2's default) does the same, but torch and
    # NumPy sum the float32 mean of squares in different orders, so the float32 roundings
    # differ: measured about 2e-7 (not 1e-15), with norm_dtype="float32" and None alike.
    # The bound is TOLERANCES["float64", "Idefics2 module (float32 RMSNorm) vs refimpl"].
    case, rng = CASES[name], np.random.default_rng(1)
    module = randomise(case.build(), seed=2).double()
    inputs, x, mask = case.inputs(rng)
    config, params = case.read(module.state_dict())
    assert config.norm_dtype == "float32"
    expected = refimpl.perceiver_resampler(params, x, config, mask=mask)
    assert_agrees(run(module, inputs, torch.float64), expected, IDEFICS2_FLOAT32_NORM, name)


def _rms_norm_in_the_input_dtype(self, hidden_states):
    """Idefics2RMSNorm.forward without its float32 cast."""
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


@pytest.mark.parametrize("name", IDEFICS2_CASES)
def test_idefics2_float64_with_a_float64_rmsnorm(name, monkeypatch):
    # With the RMSNorm patched to compute in the input dtype the whole module is float64,
    # and refimpl with norm_dtype=None matches it to float64 rounding.
    monkeypatch.setattr(idefics2_modeling.Idefics2RMSNorm, "forward", _rms_norm_in_the_input_dtype)
    case, rng = CASES[name], np.random.default_rng(1)
    module = randomise(case.build(), seed=2).double()
    inputs, x, mask = case.inputs(rng)
    config, params = interop.from_idefics2(module.state_dict(), heads=4, norm_dtype=None)
    expected = refimpl.perceiver_resampler(params, x, config, mask=mask)
    assert_agrees(run(module, inputs, torch.float64), expected, FLOAT64, name)


@pytest.mark.parametrize("name", IDEFICS2_CASES)
def test_idefics2_float32(name):
    case, rng = CASES[name], np.random.default_rng(1)
    module = randomise(case.build(), seed=2).float()
    inputs, x, mask = case.inputs(rng)
    context, attention_mask = inputs
    config, params = case.read(module.state_dict())
    expected = refimpl.perceiver_resampler(params, x.astype(np.float32), config, mask=mask)  # float64 reference
    assert_agrees(run(module, (context.astype(np.float32), attention_mask), torch.float32), expected, FLOAT32, name)


def test_idefics2_gqa_is_read_as_kv_heads():
    config, _ = interop.from_idefics2(idefics2_module(2).state_dict(), heads=4)
    assert (config.heads, config.kv_heads, config.dim_head) == (4, 2, 5)
    config, _ = interop.from_idefics2(idefics2_module(4).state_dict(), heads=4)
    assert config.kv_heads is None  # Hkv = H


# ---------------------------------------------------------------- what the shapes tell


def test_every_size_is_read_off_the_tensors():
    module = OpenFlamingoResampler(
        dim=12, depth=3, dim_head=5, heads=3, num_latents=7, max_num_media=4, max_num_frames=2, ff_mult=1.5
    )
    config, _ = interop.from_open_flamingo(module.state_dict(), heads=3, eps=1e-5)
    assert config == refimpl.ResamplerConfig(
        dim=12,
        depth=3,
        heads=3,
        dim_head=5,
        num_latents=7,
        ff_mult=1.5,
        num_time_embeds=2,
        num_media_embeds=4,
        activation="gelu",
        norm="layernorm",
        norm_eps=1e-5,
    )
    config, _ = interop.from_idefics(idefics_module(True).state_dict(), heads=3)
    assert (config.qk_norm, config.activation, config.ff_dim) == (True, "relu", 48)
    config, _ = interop.from_idefics2(idefics2_module(2).state_dict(), heads=4, eps=1e-5)
    assert (config.activation, config.norm, config.norm_eps, config.norm_dtype) == (
        "swiglu",
        "rmsnorm",
        1e-5,
        "float32",
    )


@pytest.mark.parametrize(
    "name", ["open_flamingo, frame and media embeddings", "IDEFICS, qk layer norms", "Idefics2, GQA, padded"]
)
def test_params_are_float64_copies_in_refimpls_layout(name):
    case = CASES[name]
    module = randomise(case.build(), seed=2)  # float32
    config, params = case.read(module.state_dict())
    assert {n: p.shape for n, p in params.items()} == refimpl.param_shapes(config)
    assert all(p.dtype == np.float64 and p.flags.c_contiguous for p in params.values())
    first = next(p for n, p in module.named_parameters() if n.endswith("q_proj.weight") or n.endswith("to_q.weight"))
    np.testing.assert_array_equal(params["layers.0.attn.wq"], first.detach().double().numpy().T)  # (in, out)
    with torch.no_grad():
        first.add_(1.0)  # the module changes; the params do not
    assert not np.array_equal(params["layers.0.attn.wq"], first.detach().double().numpy().T)


def test_fused_to_kv_splits_keys_first():
    module = randomise(CASES["flamingo-pytorch, 3 media items"].build(), seed=2)
    _, params = interop.from_flamingo_pytorch(module.state_dict(), heads=3)
    keys, values = module.layers[1][0].to_kv.weight.detach().double().chunk(2, dim=0)
    np.testing.assert_array_equal(params["layers.1.attn.wk"], keys.numpy().T)
    np.testing.assert_array_equal(params["layers.1.attn.wv"], values.numpy().T)


@pytest.mark.parametrize("name", list(CASES))
def test_numpy_arrays_and_torch_tensors_read_alike(name):
    case = CASES[name]
    state_dict = randomise(case.build(), seed=2).state_dict()
    from_torch = case.read(state_dict)
    from_numpy = case.read({key: value.numpy() for key, value in state_dict.items()})
    from_float64 = case.read({key: value.double() for key, value in state_dict.items()})
    for config, params in (from_numpy, from_float64):
        assert config == from_torch[0]
        assert params.keys() == from_torch[1].keys()
        assert all(np.array_equal(params[n], from_torch[1][n]) for n in params)


def test_prefix_reads_the_resampler_out_of_a_larger_state_dict():
    state_dict = randomise(idefics2_module(2), seed=2).state_dict()
    prefix = "model.connector.perceiver_resampler."
    full = {prefix + key: value for key, value in state_dict.items()}
    full |= {
        "model.connector.modality_projection.up_proj.weight": torch.zeros(3, 2),
        "lm_head.weight": torch.zeros(2, 2),
    }
    config, params = interop.from_idefics2(full, heads=4, prefix=prefix)
    expected_config, expected_params = interop.from_idefics2(state_dict, heads=4)
    assert config == expected_config and all(np.array_equal(params[n], expected_params[n]) for n in params)
    with pytest.raises(ValueError, match=r"under the prefix 'model\.connector\.perceiver_resampler\.': pass prefix="):
        interop.from_idefics2(full, heads=4)  # a whole model's keys are not listed one by one


# ---------------------------------------------------------------- export: load strictly, compute the same


@pytest.mark.parametrize("name", list(CASES))
def test_exported_weights_load_strictly_and_compute_the_same(name):
    # refimpl's own random weights, written into a fresh module of the same sizes
    case, rng = CASES[name], np.random.default_rng(3)
    config, _ = case.read(case.build().state_dict())  # the sizes
    params = refimpl.init_resampler(config, seed=4)
    module = case.build().double()
    exported = case.write(config, params)
    assert all(t.dtype == torch.float64 for t in exported.values())
    assert list(exported) == list(module.state_dict()), "in the module's own order"
    module.load_state_dict(exported, strict=True)
    inputs, x, mask = case.inputs(rng)
    expected = refimpl.perceiver_resampler(params, x, config, mask=mask)
    key = IDEFICS2_FLOAT32_NORM if config.norm_dtype == "float32" else FLOAT64  # see the Idefics2 tests above
    assert_agrees(run(module, inputs, torch.float64), expected, key, name)


@pytest.mark.parametrize("dtype", [torch.float32, np.float32, "float32", torch.bfloat16])
def test_export_dtype(dtype):
    config, params = interop.from_idefics(randomise(idefics_module(False), seed=2).state_dict(), heads=3)
    exported = interop.to_idefics(config, params, dtype=dtype)
    expected = torch.bfloat16 if dtype is torch.bfloat16 else torch.float32
    assert {t.dtype for t in exported.values()} == {expected}


def test_exported_tensors_are_copies():
    config, params = interop.from_idefics(randomise(idefics_module(False), seed=2).state_dict(), heads=3)
    exported = interop.to_idefics(config, params)
    exported["latents"].add_(1.0)
    assert not np.array_equal(params["latents"], exported["latents"].numpy())


# ---------------------------------------------------------------- round trips, exactly


def _config(draw, *, heads, kv_heads=None, **switches):
    dim = draw(st.sampled_from([4, 6, 12]))
    return refimpl.ResamplerConfig(
        dim=dim,
        depth=draw(st.integers(1, 3)),
        heads=heads,
        kv_heads=kv_heads,
        dim_head=draw(st.integers(1, 6)),
        num_latents=draw(st.integers(1, 6)),
        **switches,
    )


@st.composite
def open_flamingo_configs(draw):
    return _config(
        draw,
        heads=draw(st.integers(1, 4)),
        activation="gelu",
        ff_mult=draw(st.sampled_from([1, 2, 4, 0.5, 1.5, 2.5])),
        num_time_embeds=draw(st.none() | st.integers(1, 4)),
        num_media_embeds=draw(st.none() | st.integers(1, 4)),
    )


@st.composite
def flamingo_pytorch_configs(draw):
    return _config(
        draw,
        heads=draw(st.integers(1, 4)),
        activation="gelu",
        ff_mult=draw(st.sampled_from([1, 2, 4, 0.5])),
        num_media_embeds=draw(st.integers(1, 4)),
    )


@st.composite
def idefics_configs(draw):
    return _config(draw, heads=draw(st.integers(1, 4)), activation="relu", ff_mult=4, qk_norm=draw(st.booleans()))


@st.composite
def idefics2_configs(draw):
    heads = draw(st.integers(1, 6))
    kv_heads = draw(st.sampled_from([None] + [h for h in range(1, heads) if heads % h == 0]))
    return _config(
        draw,
        heads=heads,
        kv_heads=kv_heads,
        activation="swiglu",
        norm="rmsnorm",
        norm_dtype="float32",
        ff_mult=4,
        norm_eps=draw(st.sampled_from([1e-6, 1e-5])),
    )


ROUND_TRIPS = {
    "open_flamingo": (
        open_flamingo_configs(),
        interop.to_open_flamingo,
        lambda sd, c: interop.from_open_flamingo(sd, heads=c.heads),
    ),
    "flamingo_pytorch": (
        flamingo_pytorch_configs(),
        interop.to_flamingo_pytorch,
        lambda sd, c: interop.from_flamingo_pytorch(sd, heads=c.heads),
    ),
    "idefics": (idefics_configs(), interop.to_idefics, lambda sd, c: interop.from_idefics(sd, heads=c.heads)),
    "idefics2": (
        idefics2_configs(),
        interop.to_idefics2,
        lambda sd, c: interop.from_idefics2(sd, heads=c.heads, eps=c.norm_eps),
    ),
}


@pytest.mark.parametrize("peer", ROUND_TRIPS)
@given(data=st.data(), seed=seeds)
def test_round_trip_is_exact(peer, data, seed):
    configs, write, read = ROUND_TRIPS[peer]
    config = data.draw(configs)
    params = refimpl.init_resampler(config, seed=seed)
    config_back, params_back = read(write(config, params), config)
    assert config_back == config
    assert params_back.keys() == params.keys()
    for name in params:
        assert params_back[name].dtype == np.float64 and np.array_equal(params_back[name], params[name]), name


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "name, missing, misshaped",
    [
        ("open_flamingo, frame and media embeddings", "layers.1.0.norm_media.bias", "layers.1.1.3.weight"),
        ("flamingo-pytorch, 3 media items", "layers.1.0.to_kv.weight", "media_pos_emb"),
        ("IDEFICS, qk layer norms", "blocks.1.0.k_layer_norm.weight", "blocks.1.0.v_proj.weight"),
        ("Idefics2, GQA, padded", "layers.1.post_attention_layernorm.weight", "layers.1.mlp.down_proj.weight"),
    ],
)
def test_a_state_dict_that_does_not_fit_names_every_bad_key(name, missing, misshaped):
    case = CASES[name]
    state_dict = dict(case.build().state_dict())
    del state_dict[missing]
    state_dict["extra.weight"] = torch.zeros(3)
    state_dict[misshaped] = torch.zeros(*state_dict[misshaped].shape[:-1], state_dict[misshaped].shape[-1] + 1)
    with pytest.raises(ValueError) as error:
        case.read(state_dict)
    message = str(error.value)
    assert f"missing: {missing}" in message
    assert "unexpected: extra.weight" in message
    assert f"mis-shaped: {misshaped}: expected" in message


def test_missing_layers_are_listed_too():
    state_dict = dict(randomise(idefics_module(False), seed=2).state_dict())
    for key in [k for k in state_dict if k.startswith("blocks.0.")]:
        del state_dict[key]
    with pytest.raises(
        ValueError, match=r"missing: blocks\.0\.0\.context_layer_norm\.weight, .*blocks\.0\.1\.c_proj\.weight"
    ):
        interop.from_idefics(state_dict, heads=3)


def test_heads_that_do_not_divide_the_query_width_are_named():
    with pytest.raises(
        ValueError, match=r"heads = 4 must divide the output width of layers\.0\.0\.to_q\.weight \(H \* Dh\); got 15"
    ):
        interop.from_open_flamingo(CASES["open_flamingo, no embeddings"].build().state_dict(), heads=4)
    with pytest.raises(TypeError, match="heads must be an int"):
        interop.from_idefics(idefics_module(False).state_dict(), heads=3.0)


def test_a_key_width_that_fits_no_kv_head_count_is_named():
    # q_proj has 20 rows: heads = 5 makes Dh = 4, which does not divide k_proj's 10 rows
    with pytest.raises(ValueError, match=r"k_proj\.weight has 10 rows, which is not Hkv \* Dh .* heads = 5 \(Dh = 4"):
        interop.from_idefics2(idefics2_module(2).state_dict(), heads=5)


def test_non_float_and_non_finite_tensors_are_refused():
    state_dict = dict(idefics_module(False).state_dict())
    with pytest.raises(TypeError, match=r"state_dict\['latents'\] must be a floating-point tensor"):
        interop.from_idefics(state_dict | {"latents": torch.ones(7, 12, dtype=torch.long)}, heads=3)
    with pytest.raises(ValueError, match=r"state_dict\['latents'\] must be finite"):
        interop.from_idefics(state_dict | {"latents": torch.full((7, 12), float("nan"))}, heads=3)
    with pytest.raises(TypeError, match="state_dict must be a mapping"):
        interop.from_idefics(list(state_dict.values()), heads=3)


BASE = dict(dim=12, depth=1, heads=3, dim_head=5, num_latents=7)


@pytest.mark.parametrize(
    "write, switches, named",
    [
        (interop.to_open_flamingo, dict(activation="swiglu"), "activation = 'swiglu'"),
        (interop.to_open_flamingo, dict(kv_heads=1), "kv_heads = 1"),
        (interop.to_open_flamingo, dict(norm_eps=1e-6), "norm_eps = 1e-06"),
        (interop.to_open_flamingo, dict(qk_norm=True, latents_in_kv=False), "latents_in_kv = False"),
        (interop.to_flamingo_pytorch, dict(), "num_media_embeds = None"),
        (interop.to_flamingo_pytorch, dict(num_media_embeds=2, num_time_embeds=2), "num_time_embeds = 2"),
        (interop.to_idefics, dict(activation="relu", ff_mult=2), "ff_mult = 2"),
        (interop.to_idefics, dict(activation="relu", num_media_embeds=2), "num_media_embeds = 2"),
        (interop.to_idefics2, dict(activation="swiglu", ff_mult=4), "norm = 'layernorm'"),
        (interop.to_idefics2, dict(activation="swiglu", ff_mult=4, norm="rmsnorm"), "norm_dtype = None"),
    ],
)
def test_export_refuses_what_the_peer_cannot_express(write, switches, named):
    config = refimpl.ResamplerConfig(**BASE | switches)
    with pytest.raises(ValueError, match="cannot express") as error:
        write(config, refimpl.init_resampler(config))
    assert named in str(error.value)


def test_export_checks_the_params_against_the_config():
    config = refimpl.ResamplerConfig(**BASE, activation="relu", ff_mult=4)
    params = refimpl.init_resampler(config)
    del params["latents"]
    with pytest.raises(ValueError, match="missing: latents"):
        interop.to_idefics(config, params)
    with pytest.raises(TypeError, match="config must be a refimpl.ResamplerConfig"):
        interop.to_idefics(dict(BASE), params)
