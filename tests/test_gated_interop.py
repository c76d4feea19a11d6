"""refimpl.interop's gated cross-attention layers against the real modules: weights read out
of each layer reproduce its output through refimpl.gated_xattn_dense, weights written back
load with strict=True, and what each layer does to a text row that sees no image is pinned.

The peers are the installed packages: flamingo-pytorch 0.1.2's GatedCrossAttentionBlock (and
open_flamingo's, the same keys with a visual width of its own), transformers'
IdeficsGatedCrossAttentionLayer and MllamaCrossAttentionDecoderLayer, built from small
configs with non-square sizes (Dt = 12, Dv = 10 for IDEFICS and open_flamingo, H * Dh = 15
for flamingo-pytorch, Hkv = 2 < H = 4 for Mllama, F = 20), every parameter random, the
gates at +-U(0.5, 1.5) (so that a test cannot pass with a gate closed), and masks in which some
text rows see no image. transformers' layers run with attn_implementation "sdpa" (the eager
path computes its softmax in float32 even in a float64 model) and are always given their
mask (without one, sdpa makes their cross-attention causal).

Agreement is refimpl.relative_error against refimpl.TOLERANCES:
  float64  the layer in float64 vs refimpl            "another implementation vs refimpl"
           (IDEFICS's and Mllama's RMSNorms compute in float32 whatever the dtype: patched
           here to compute in float64, as tests/test_interop.py does for Idefics2)
  float32  the layer in float32 vs refimpl's float64 reference on the same float32
           weights and inputs                          "peer module vs float64 reference"
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import transformers.models.idefics.modeling_idefics as idefics_modeling
import transformers.models.mllama.modeling_mllama as mllama_modeling
from flamingo_pytorch import GatedCrossAttentionBlock
from helpers import seeds
from hypothesis import given
from hypothesis import strategies as st
from transformers import IdeficsConfig
from transformers.models.mllama.configuration_mllama import MllamaTextConfig

import refimpl
from refimpl import interop
from refimpl.interop.open_flamingo import installed_helpers

FLOAT64 = ("float64", "another implementation vs refimpl")
FLOAT32 = ("float32", "peer module vs float64 reference")
DTYPES = {"float64": torch.float64, "float32": torch.float32}
GATES = ("attn_gate", "ff_gate")


def randomise(module, seed):
    """Every parameter random, in place: gates +-U(0.5, 1.5), norm scales U(0.5, 1.5),
    biases N(0, 0.1^2), projections N(0, 1 / fan_in)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            shape, dtype = parameter.shape, parameter.dtype
            if not name.endswith(("weight", "bias")):  # a tanh gate, (1,) or (1, 1, Dt)
                sign = torch.randint(0, 2, shape, generator=generator).to(dtype) * 2 - 1
                value = sign * (0.5 + torch.rand(shape, generator=generator, dtype=dtype))
            elif name.endswith("bias"):
                value = 0.1 * torch.randn(shape, generator=generator, dtype=dtype)
            elif parameter.ndim == 1:  # LayerNorm / RMSNorm scale
                value = 0.5 + torch.rand(shape, generator=generator, dtype=dtype)
            else:  # nn.Linear (out, in)
                value = torch.randn(shape, generator=generator, dtype=dtype) * shape[1] ** -0.5
            parameter.copy_(value)
    return module


def assert_agrees(theirs, ours, key, what):
    theirs = theirs.detach().double().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    assert theirs.shape == ours.shape, f"{what}: shape {theirs.shape}, refimpl's {ours.shape}"
    error = refimpl.relative_error(theirs, ours)
    assert error <= refimpl.TOLERANCES[key], f"{what}: relative error {error:.3g} > TOLERANCES[{key!r}]"
    return error


def _rms_norm_in_the_input_dtype(self, hidden_states):
    """IdeficsRMSNorm / MllamaTextRMSNorm.forward computing in the input's dtype."""
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


@pytest.fixture
def float64_rms_norms(monkeypatch):
    for cls in (idefics_modeling.IdeficsRMSNorm, mllama_modeling.MllamaTextRMSNorm):
        monkeypatch.setattr(cls, "forward", _rms_norm_in_the_input_dtype)


# ---------------------------------------------------------------- the layers, small

L, DT, DV = 7, 12, 10
# which image each of the L text tokens sees (0 = none): row 0 starts with two tokens of
# text before any image, row 1 has one image for all its tokens and row 2 sees none at all
SEES = np.array([[0, 0, 1, 1, 1, 2, 2], [1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0]])
IMAGES = 2


def open_flamingo_module():
    """open_flamingo's GatedCrossAttentionBlock, from the installed open-flamingo 2.0.1 wheel."""
    helpers = installed_helpers()
    return helpers.GatedCrossAttentionBlock(dim=DT, dim_visual=DV, dim_head=5, heads=3, ff_mult=20 / DT)


def flamingo_pytorch_module(only_attend_immediate_media=True):
    return GatedCrossAttentionBlock(
        dim=DT, dim_head=5, heads=3, ff_mult=20 / DT, only_attend_immediate_media=only_attend_immediate_media
    )


def idefics_module(qk_norm=True, alpha_type="float"):
    config = IdeficsConfig(
        hidden_size=DT,
        num_attention_heads=3,
        intermediate_size=20,
        rms_norm_eps=1e-6,
        qk_layer_norms=qk_norm,
        alpha_type=alpha_type,
        vision_config={"embed_dim": DV},
    )
    config._attn_implementation = "sdpa"
    return idefics_modeling.IdeficsGatedCrossAttentionLayer(config, layer_idx=0)


def mllama_module(kv_heads=2):
    config = MllamaTextConfig(
        hidden_size=DT, num_attention_heads=4, num_key_value_heads=kv_heads, intermediate_size=20, rms_norm_eps=1e-5
    )
    config._attn_implementation = "sdpa"
    return mllama_modeling.MllamaCrossAttentionDecoderLayer(config, layer_idx=0)


def flamingo_pytorch_inputs(rng, dtype, only_attend_immediate_media=True, dim_visual=DT):
    """x (b, L, Dt), media (b, T = 2 items, m = 4 tokens, Dv), media_locations (b, L): True
    at the token where each image sits (text token l sees image cumsum(...)[l])."""
    tokens = 4
    x, media = rng.standard_normal((3, L, DT)), rng.standard_normal((3, IMAGES, tokens, dim_visual))
    media_locations = np.diff(SEES, axis=-1, prepend=0) > 0  # (b, L)
    time = np.cumsum(media_locations, axis=-1)  # (b, L), = SEES
    item = np.repeat(np.arange(1, IMAGES + 1), tokens)  # (Nv,), the 1-based item of each media token
    op = np.equal if only_attend_immediate_media else np.greater_equal
    mask = op(time[:, :, None], item[None, None, :])  # (b, L, Nv)
    module_inputs = dict(
        x=torch.tensor(x, dtype=dtype),
        media=torch.tensor(media, dtype=dtype),
        media_locations=torch.tensor(media_locations),
    )
    return module_inputs, x, media.reshape(3, IMAGES * tokens, dim_visual), mask


def idefics_inputs(rng, dtype):
    """hidden_states (b, L, Dt), image_hidden_states (b, I * R, Dv), and IdeficsModel's
    image_attention_mask (b, 1, L, I * R) and cross_attention_gate (b, L) from the (b, L, I)
    0/1 mask of which image each token sees."""
    latents = 3
    hidden, images = rng.standard_normal((3, L, DT)), rng.standard_normal((3, IMAGES * latents, DV))
    per_image = (SEES[:, :, None] == np.arange(1, IMAGES + 1)).astype(np.int64)  # (b, L, I)
    per_image[0, 6, 0] = 1  # a token that sees both images
    mask = np.repeat(per_image, latents, axis=-1) == 1  # (b, L, I * R)
    additive = np.where(mask, 0.0, torch.finfo(dtype).min)[:, None]  # (b, 1, L, I * R)
    module_inputs = dict(
        hidden_states=torch.tensor(hidden, dtype=dtype),
        image_hidden_states=torch.tensor(images, dtype=dtype),
        image_attention_mask=torch.tensor(additive, dtype=dtype),
        cross_attention_gate=torch.tensor(mask.any(axis=-1), dtype=dtype),
    )
    return module_inputs, hidden, images, mask


def mllama_inputs(rng, dtype):
    """hidden_states (b, L, Dt), cross_attention_states (b, I * tiles * tokens, Dt), and the
    masks that MllamaModel makes with _prepare_cross_attention_mask from the (b, L, I, tiles)
    0/1 mask (a tile of image 2 left out, as for an image with fewer tiles)."""
    tiles, tokens = 2, 3
    hidden, states = rng.standard_normal((3, L, DT)), rng.standard_normal((3, IMAGES * tiles * tokens, DT))
    per_tile = np.repeat((SEES[:, :, None] == np.arange(1, IMAGES + 1))[..., None], tiles, axis=-1).astype(np.int64)
    per_tile[:, :, 1, 1] = 0  # image 2 has one tile
    cross_attention_mask, full_text_row = mllama_modeling._prepare_cross_attention_mask(
        torch.tensor(per_tile), tokens, dtype
    )
    module_inputs = dict(
        hidden_states=torch.tensor(hidden, dtype=dtype),
        cross_attention_states=torch.tensor(states, dtype=dtype),
        cross_attention_mask=cross_attention_mask,
        attention_mask=None,
        full_text_row_masked_out_mask=full_text_row,
    )
    mask = np.repeat(per_tile, tokens, axis=-1).reshape(3, L, -1) == 1  # (b, L, Nv)
    return module_inputs, hidden, states, mask


@dataclass
class Case:
    """One gated layer: how to build it, read and write its weights, and make its inputs."""

    build: Callable  # () -> the module (float32, default init)
    read: Callable  # state_dict -> (config, params)
    write: Callable | None  # (config, params) -> state_dict
    inputs: Callable  # (rng, torch dtype) -> (the module's keyword inputs, hidden, visual, mask)


CASES = {
    "flamingo-pytorch": Case(
        flamingo_pytorch_module,
        lambda sd: interop.from_flamingo_pytorch_gated_xattn(sd, heads=3),
        interop.to_flamingo_pytorch_gated_xattn,
        flamingo_pytorch_inputs,
    ),
    "flamingo-pytorch, all previous media": Case(
        lambda: flamingo_pytorch_module(only_attend_immediate_media=False),
        lambda sd: interop.from_flamingo_pytorch_gated_xattn(sd, heads=3, only_attend_immediate_media=False),
        interop.to_flamingo_pytorch_gated_xattn,
        lambda rng, dtype: flamingo_pytorch_inputs(rng, dtype, only_attend_immediate_media=False),
    ),
    "open_flamingo, Dv != Dt": Case(
        open_flamingo_module,
        lambda sd: interop.from_flamingo_pytorch_gated_xattn(sd, heads=3),
        None,  # to_flamingo_pytorch_gated_xattn writes flamingo-pytorch's block, Dv = Dt
        lambda rng, dtype: flamingo_pytorch_inputs(rng, dtype, dim_visual=DV),
    ),
    "IDEFICS, qk layer norms": Case(
        idefics_module,
        lambda sd: interop.from_idefics_gated_xattn(sd, heads=3),
        interop.to_idefics_gated_xattn,
        idefics_inputs,
    ),
    "IDEFICS, vector gates": Case(
        lambda: idefics_module(qk_norm=False, alpha_type="vector"),
        lambda sd: interop.from_idefics_gated_xattn(sd, heads=3),
        interop.to_idefics_gated_xattn,
        idefics_inputs,
    ),
    "Mllama, GQA": Case(
        mllama_module,
        lambda sd: interop.from_mllama_cross_attention(sd, heads=4),
        interop.to_mllama_cross_attention,
        mllama_inputs,
    ),
    "Mllama, MHA": Case(
        lambda: mllama_module(kv_heads=4),
        lambda sd: interop.from_mllama_cross_attention(sd, heads=4),
        interop.to_mllama_cross_attention,
        mllama_inputs,
    ),
}


def run(module, inputs):
    with torch.no_grad():
        return module(**inputs)


def random_case(name, dtype, seed=2):
    """(module in `dtype` with random weights, its inputs, config, params, hidden, visual, mask);
    params, hidden and visual are float64 copies of what the module holds and reads."""
    case = CASES[name]
    module = randomise(case.build(), seed=seed).to(DTYPES[dtype])
    inputs, hidden, visual, mask = case.inputs(np.random.default_rng(1), DTYPES[dtype])
    config, params = case.read(module.state_dict())
    hidden, visual = (np.asarray(a, dtype=dtype).astype(np.float64) for a in (hidden, visual))  # the module's values
    return module, inputs, config, params, hidden, visual, mask


# ---------------------------------------------------------------- import: the layer's output, reproduced


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CASES))
def test_imported_weights_reproduce_the_layer(name, dtype, request):
    if dtype == "float64":
        request.getfixturevalue("float64_rms_norms")  # in float32 the layers run as they are
    module, inputs, config, params, hidden, visual, mask = random_case(name, dtype)
    expected = refimpl.gated_xattn_dense(params, hidden, visual, config, mask=mask)  # float64
    assert_agrees(run(module, inputs), expected, FLOAT64 if dtype == "float64" else FLOAT32, name)


@pytest.mark.parametrize("name", list(CASES))
def test_the_gates_are_open_so_each_branch_counts(name, float64_rms_norms):
    # closing either gate in refimpl moves it far from the layer: a test above that passes
    # cannot be passing with a branch switched off
    module, inputs, config, params, hidden, visual, mask = random_case(name, "float64")
    theirs = run(module, inputs).numpy()
    for gate in GATES:
        closed = dict(params, **{gate: np.zeros_like(params[gate])})
        error = refimpl.relative_error(theirs, refimpl.gated_xattn_dense(closed, hidden, visual, config, mask=mask))
        assert error > 1e3 * refimpl.TOLERANCES[FLOAT64], (
            f"{name}: closing {gate} changes the output only by {error:.2g}"
        )


def _without(params, gate):
    return dict(params, **{gate: np.zeros_like(params[gate])})


@pytest.mark.parametrize("name", ["flamingo-pytorch", "IDEFICS, qk layer norms"])
def test_flamingo_pytorch_and_idefics_give_a_row_that_sees_no_image_no_attention_output(name, float64_rms_norms):
    module, inputs, config, params, hidden, visual, mask = random_case(name, "float64")
    assert config.blind_rows == "zero" and not config.zero_blind_ff
    blind = ~mask.any(axis=-1)  # (b, L)
    assert blind.any() and not blind.all()
    ff_only = refimpl.gated_xattn_dense(_without(params, "attn_gate"), hidden, visual, config, mask=mask)
    assert_agrees(run(module, inputs).numpy()[blind], ff_only[blind], FLOAT64, name)


def test_flamingo_pytorch_without_immediate_media_gives_a_row_that_sees_no_image_the_mean_value():
    # all its scores are filled with the same -max, so the softmax puts 1/Nv on every token
    name = "flamingo-pytorch, all previous media"
    module, inputs, config, params, hidden, visual, mask = random_case(name, "float64")
    blind = ~mask.any(axis=-1)
    assert config.blind_rows == "uniform" and blind.any()
    no_ff = _without(params, "ff_gate")
    attend = params["attn.wv"] @ params["attn.wo"]  # (Dv, Dt): mean of the values, through wo
    mean_value = visual.mean(axis=-2, keepdims=True) @ attend  # (b, 1, Dt)
    expected = hidden + np.tanh(params["attn_gate"]) * mean_value
    module.ff_gate.data.zero_()
    assert_agrees(run(module, inputs).numpy()[blind], expected[blind], FLOAT64, name)
    assert_agrees(
        refimpl.gated_xattn_dense(no_ff, hidden, visual, config, mask=mask)[blind], expected[blind], FLOAT64, name
    )


@pytest.mark.parametrize("name", ["Mllama, GQA"])
def test_mllama_lets_a_row_that_sees_no_image_attend_to_every_token_and_zeroes_its_feed_forward(
    name, float64_rms_norms
):
    module, inputs, config, params, hidden, visual, mask = random_case(name, "float64")
    assert (config.blind_rows, config.zero_blind_ff) == ("attend_all", True)
    blind = ~mask.any(axis=-1)
    unmasked_attention_only = refimpl.gated_xattn_dense(_without(params, "ff_gate"), hidden, visual, config)  # no mask
    assert_agrees(run(module, inputs).numpy()[blind], unmasked_attention_only[blind], FLOAT64, name)


# ---------------------------------------------------------------- what the shapes tell


def test_every_size_is_read_off_the_tensors():
    config, _ = interop.from_flamingo_pytorch_gated_xattn(flamingo_pytorch_module().state_dict(), heads=3)
    assert config == refimpl.GatedXattnConfig(dim=12, dim_visual=12, heads=3, dim_head=5, ff_dim=20)
    config, _ = interop.from_idefics_gated_xattn(idefics_module().state_dict(), heads=3, eps=1e-5)
    assert config == refimpl.GatedXattnConfig(
        dim=12,
        dim_visual=10,
        heads=3,
        dim_head=4,
        ff_dim=20,
        activation="swiglu",
        norm="rmsnorm",
        norm_eps=1e-5,
        qk_norm="rmsnorm",
    )
    config, _ = interop.from_idefics_gated_xattn(
        idefics_module(qk_norm=False, alpha_type="vector").state_dict(), heads=3
    )
    assert (config.qk_norm, config.vector_gates, config.norm_eps) == (None, True, 1e-6)
    config, _ = interop.from_mllama_cross_attention(mllama_module().state_dict(), heads=4)
    assert config == refimpl.GatedXattnConfig(
        dim=12,
        dim_visual=12,
        heads=4,
        dim_head=3,
        kv_heads=2,
        ff_dim=20,
        activation="swiglu",
        norm="rmsnorm",
        norm_eps=1e-5,
        qk_norm="rmsnorm",
        blind_rows="attend_all",
        zero_blind_ff=True,
    )
    assert interop.from_mllama_cross_attention(mllama_module(kv_heads=4).state_dict(), heads=4)[0].kv_heads is None


def test_prefix_reads_one_layer_out_of_a_model():
    state_dict = randomise(mllama_module(), seed=2).state_dict()
    prefix = "model.language_model.layers.3."
    full = {prefix + key: value for key, value in state_dict.items()} | {"lm_head.weight": torch.zeros(2, 2)}
    config, params = interop.from_mllama_cross_attention(full, heads=4, prefix=prefix)
    expected_config, expected_params = interop.from_mllama_cross_attention(state_dict, heads=4)
    assert config == expected_config and all(np.array_equal(params[n], expected_params[n]) for n in params)


# ---------------------------------------------------------------- export: load strictly, compute the same


@pytest.mark.parametrize("name", [name for name, case in CASES.items() if case.write is not None])
def test_exported_weights_load_strictly_and_compute_the_same(name, float64_rms_norms):
    case = CASES[name]
    config, _ = case.read(case.build().state_dict())  # the sizes
    params = refimpl.init_gated_xattn(config, gate=-0.8, seed=4)
    module = case.build().double()
    exported = case.write(config, params)
    assert all(t.dtype == torch.float64 for t in exported.values())
    module.load_state_dict(exported, strict=True)
    inputs, hidden, visual, mask = case.inputs(np.random.default_rng(3), torch.float64)
    expected = refimpl.gated_xattn_dense(params, hidden, visual, config, mask=mask)
    assert_agrees(run(module, inputs), expected, FLOAT64, name)


@st.composite
def round_trip_configs(draw, peer):
    heads, dim_head = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    dim = heads * dim_head if peer != "flamingo_pytorch" else draw(st.integers(1, 12))
    sizes = dict(dim=dim, heads=heads, dim_head=dim_head, ff_dim=draw(st.integers(1, 24)))
    if peer == "flamingo_pytorch":
        blind_rows = draw(st.sampled_from(["zero", "uniform"]))
        return refimpl.GatedXattnConfig(dim_visual=dim, blind_rows=blind_rows, **sizes)
    rms = dict(activation="swiglu", norm="rmsnorm", norm_eps=draw(st.sampled_from([1e-6, 1e-5])))
    if peer == "idefics":
        return refimpl.GatedXattnConfig(
            dim_visual=draw(st.integers(1, 12)),
            qk_norm=draw(st.sampled_from([None, "rmsnorm"])),
            vector_gates=draw(st.booleans()),
            **sizes,
            **rms,
        )
    kv_heads = draw(st.sampled_from([None] + [h for h in range(1, heads) if heads % h == 0]))
    return refimpl.GatedXattnConfig(
        dim_visual=dim,
        kv_heads=kv_heads,
        qk_norm="rmsnorm",
        blind_rows="attend_all",
        zero_blind_ff=True,
        **sizes,
        **rms,
    )


ROUND_TRIPS = {
    "flamingo_pytorch": (
        interop.to_flamingo_pytorch_gated_xattn,
        lambda sd, c: interop.from_flamingo_pytorch_gated_xattn(
            sd, heads=c.heads, only_attend_immediate_media=c.blind_rows == "zero"
        ),
    ),
    "idefics": (
        interop.to_idefics_gated_xattn,
        lambda sd, c: interop.from_idefics_gated_xattn(sd, heads=c.heads, eps=c.norm_eps),
    ),
    "mllama": (
        interop.to_mllama_cross_attention,
        lambda sd, c: interop.from_mllama_cross_attention(sd, heads=c.heads, eps=c.norm_eps),
    ),
}


@pytest.mark.parametrize("peer", ROUND_TRIPS)
@given(data=st.data(), seed=seeds)
def test_round_trip_is_exact(peer, data, seed):
    config = data.draw(round_trip_configs(peer))
    write, read = ROUND_TRIPS[peer]
    params = refimpl.init_gated_xattn(config, gate=0.3, seed=seed)
    config_back, params_back = read(write(config, params), config)
    assert config_back == config
    assert params_back.keys() == params.keys()
    for name in params:
        assert params_back[name].dtype == np.float64 and np.array_equal(params_back[name], params[name]), name


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "name, missing, misshaped",
    [
        ("flamingo-pytorch", "attn.to_kv.weight", "ff_gate"),
        ("IDEFICS, qk layer norms", "cross_attn.k_layer_norm.weight", "mlp.up_proj.weight"),
        ("Mllama, GQA", "cross_attn.q_norm.weight", "cross_attn.v_proj.weight"),
    ],
)
def test_a_state_dict_that_does_not_fit_names_every_bad_key(name, missing, misshaped):
    state_dict = dict(CASES[name].build().state_dict())
    del state_dict[missing]
    state_dict["extra.weight"] = torch.zeros(3)
    state_dict[misshaped] = torch.zeros(*state_dict[misshaped].shape[:-1], state_dict[misshaped].shape[-1] + 1)
    with pytest.raises(ValueError) as error:
        CASES[name].read(state_dict)
    message = str(error.value)
    assert f"missing: {missing}" in message
    assert "unexpected: extra.weight" in message
    assert f"mis-shaped: {misshaped}: expected" in message


BASE = dict(dim=12, dim_visual=12, heads=3, dim_head=4, ff_dim=20)
MLLAMA = dict(activation="swiglu", norm="rmsnorm", qk_norm="rmsnorm", blind_rows="attend_all", zero_blind_ff=True)


@pytest.mark.parametrize(
    "write, switches, named",
    [
        (interop.to_flamingo_pytorch_gated_xattn, dict(activation="swiglu"), "activation = 'swiglu'"),
        (interop.to_flamingo_pytorch_gated_xattn, dict(dim_visual=10), "dim_visual = 10"),
        (interop.to_flamingo_pytorch_gated_xattn, dict(kv_heads=1), "kv_heads = 1"),
        (interop.to_flamingo_pytorch_gated_xattn, dict(blind_rows="attend_all"), "blind_rows = 'attend_all'"),
        (interop.to_idefics_gated_xattn, dict(), "norm = 'layernorm'"),
        (
            interop.to_idefics_gated_xattn,
            dict(activation="swiglu", norm="rmsnorm", qk_norm="layernorm"),
            "qk_norm = 'layernorm'",
        ),
        (
            interop.to_idefics_gated_xattn,
            dict(activation="swiglu", norm="rmsnorm", dim_head=5),
            "heads * dim_head = 15",
        ),
        (interop.to_mllama_cross_attention, MLLAMA | dict(zero_blind_ff=False), "zero_blind_ff = False"),
        (interop.to_mllama_cross_attention, MLLAMA | dict(vector_gates=True), "vector_gates = True"),
        (interop.to_mllama_cross_attention, MLLAMA | dict(dim_visual=10), "dim_visual = 10"),
    ],
)
def test_export_refuses_what_the_layer_cannot_express(write, switches, named):
    config = refimpl.GatedXattnConfig(**BASE | switches)
    with pytest.raises(ValueError, match="cannot express") as error:
        write(config, refimpl.init_gated_xattn(config))
    assert named in str(error.value)


def test_export_checks_the_params_against_the_config():
    config = refimpl.GatedXattnConfig(**BASE | MLLAMA)
    params = refimpl.init_gated_xattn(config)
    del params["attn.q_norm.weight"]
    with pytest.raises(ValueError, match=r"missing: attn\.q_norm\.weight"):
        interop.to_mllama_cross_attention(config, params)
    with pytest.raises(TypeError, match="config must be a refimpl.GatedXattnConfig"):
        interop.to_mllama_cross_attention(dict(BASE), params)
