"""refimpl.torch is the same function as the NumPy reference: every variant, masks,
attention maps, weights both ways; float16 and bfloat16 on the CPU, and, where
CUDA exists, float32, bfloat16 and float16 on the GPU, against the float64 reference; a float16
overflow raises."""

import functools
import re

import numpy as np
import pytest
import torch
from helpers import assert_close, resampler_cases, resampler_configs, seeds, switches_case
from hypothesis import given

import refimpl
import refimpl.torch as rt

TORCH_FLOAT64 = ("float64", "torch vs numpy")
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (run on a GPU machine: benchmarks/gpu_check.sh)")


def run_torch(config, params, x, mask, dtype=torch.float64, device="cpu", **kwargs):
    module = rt.PerceiverResampler.from_refimpl(config, params, dtype=dtype, device=device)
    x = torch.as_tensor(x, dtype=dtype, device=device)
    mask = None if mask is None else torch.as_tensor(mask, device=device)
    with torch.no_grad():
        return module(x, mask, **kwargs)


@given(case=resampler_cases())
def test_torch_module_equals_refimpl_in_float64(case):
    config, params, x, mask = case
    assert_close(
        run_torch(config, params, x, mask).numpy(),
        refimpl.perceiver_resampler(params, x, config, mask=mask),
        TORCH_FLOAT64,
    )


@given(case=resampler_cases())
def test_torch_attention_maps_equal_refimpl(case):
    config, params, x, mask = case
    expected_out, expected_maps = refimpl.perceiver_resampler(params, x, config, mask=mask, return_attention=True)
    out, maps = run_torch(config, params, x, mask, return_attention=True)
    assert_close(out.numpy(), expected_out, TORCH_FLOAT64)
    assert len(maps) == len(expected_maps) == config.depth
    for layer, (ours, theirs) in enumerate(zip(maps, expected_maps)):
        assert_close(ours.numpy(), theirs, TORCH_FLOAT64, what=f"layer {layer}")


@pytest.mark.parametrize(
    "switches",
    [
        dict(num_media_embeds=3, num_time_embeds=2),
        dict(activation="swiglu", norm="rmsnorm", kv_heads=1, norm_dtype="float32"),
        dict(norm_dtype="float32", qk_norm=True),
    ],
    ids=["media-and-time-embeddings", "idefics2-float32-norm", "layernorm-float32-norm"],
)
def test_torch_module_equals_refimpl_for_the_embedding_and_norm_switches(switches):
    config, params, x, mask = switches_case(switches)
    # float32 normalisation rounds differently in torch and NumPy (their float32 sums run in
    # another order), so with norm_dtype the two agree to float32, not float64, precision
    key = ("float32", "vs float64 reference") if config.norm_dtype else TORCH_FLOAT64
    assert_close(
        run_torch(config, params, x, mask).numpy(), refimpl.perceiver_resampler(params, x, config, mask=mask), key
    )


@given(config=resampler_configs(), seed=seeds)
def test_weights_move_both_ways_exactly(config, seed):
    params = refimpl.init_resampler(config, seed=seed)
    back = rt.PerceiverResampler.from_refimpl(config, params).to_refimpl()
    assert back.keys() == params.keys()
    for name in params:
        np.testing.assert_array_equal(back[name], params[name], err_msg=name)


def test_state_dict_names_are_refimpl_names_with_projections_transposed():
    config = refimpl.ResamplerConfig(dim=8, depth=1, heads=2, dim_head=3, num_latents=4, ff_mult=2)
    params = refimpl.init_resampler(config)
    state = rt.PerceiverResampler.from_refimpl(config, params).state_dict()
    assert state["layers.0.attn.wq.weight"].shape == (6, 8)  # nn.Linear: (out, in)
    np.testing.assert_array_equal(state["layers.0.attn.wq.weight"].numpy(), params["layers.0.attn.wq"].T)
    np.testing.assert_array_equal(
        state["layers.0.attn.norm_media.weight"].numpy(), params["layers.0.attn.norm_media.weight"]
    )


def test_from_refimpl_rejects_params_that_do_not_fit_the_config():
    config = refimpl.ResamplerConfig(dim=8, depth=1, heads=2, dim_head=3, num_latents=4)
    params = refimpl.init_resampler(config)
    del params["latents"]
    with pytest.raises(ValueError, match="missing: latents"):
        rt.PerceiverResampler.from_refimpl(config, params)


def test_torch_module_names_a_wrong_input_shape():
    config = refimpl.ResamplerConfig(dim=8, depth=1, heads=2, dim_head=3, num_latents=4)
    module = rt.PerceiverResampler(config)
    with pytest.raises(
        ValueError, match=r"x must have shape \(\.\.\., T, S, D\) with D = config.dim = 8; got \(2, 3, 5\)"
    ):
        module(torch.zeros(2, 3, 5))
    with pytest.raises(
        ValueError, match=r"mask must have shape \(\.\.\., T, S\) = x\.shape\[:-1\] = \(2, 3\); got \(2, 2\)"
    ):
        module(torch.zeros(2, 3, 8), torch.ones(2, 2, dtype=torch.bool))


def test_float32_module_is_close_to_the_float64_reference():
    config = refimpl.ResamplerConfig(dim=32, depth=3, heads=4, dim_head=8, num_latents=6, num_time_embeds=2)
    params = refimpl.init_resampler(config, seed=5)
    x = np.random.default_rng(5).standard_normal((3, 2, 9, 32))
    mask = np.random.default_rng(6).random(x.shape[:-1]) < 0.8
    out = run_torch(config, params, x, mask, dtype=torch.float32)
    assert out.dtype == torch.float32
    assert_close(
        out.numpy(), refimpl.perceiver_resampler(params, x, config, mask=mask), ("float32", "vs float64 reference")
    )


@given(case=resampler_cases())
def test_with_autograd_the_module_is_the_same_function_and_differentiable(case):
    """With autograd on, the latents' keys and values are joined by a copy instead of written in
    place (see refimpl.torch._replace_last_rows): the same function, and backward runs through it."""
    config, params, x, mask = case
    module = rt.PerceiverResampler.from_refimpl(config, params)
    x = torch.from_numpy(x).requires_grad_()
    out = module(x, None if mask is None else torch.from_numpy(mask))
    assert_close(
        out.detach().numpy(), refimpl.perceiver_resampler(params, x.detach().numpy(), config, mask=mask), TORCH_FLOAT64
    )
    out.square().sum().backward()
    grads = [x.grad] + [p.grad for p in module.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_gradients_match_finite_differences():
    config = refimpl.ResamplerConfig(dim=8, depth=2, heads=2, dim_head=4, num_latents=3, num_time_embeds=2)
    module = rt.PerceiverResampler.from_refimpl(config, refimpl.init_resampler(config, seed=7))
    x = torch.from_numpy(np.random.default_rng(7).standard_normal((2, 2, 4, 8))).requires_grad_()
    mask = torch.from_numpy(np.random.default_rng(8).random((2, 2, 4)) < 0.8)
    assert torch.autograd.gradcheck(lambda x: module(x, mask), (x,))


def test_gated_xattn_dense_module_equals_refimpl_and_passes_through_with_closed_gates():
    rng = np.random.default_rng(4)
    hidden, visual = rng.standard_normal((2, 5, 16)), rng.standard_normal((2, 6, 24))
    mask = rng.random((2, 5, 6)) < 0.5
    mask[:, 0] = False  # a text token that sees no visual token
    for gate in (0.0, 0.7):
        params = refimpl.init_gated_xattn_dense(16, 24, heads=2, dim_head=4, gate=gate, seed=4)
        module = rt.GatedXAttnDense.from_refimpl(params, heads=2)
        with torch.no_grad():
            out = module(torch.from_numpy(hidden), torch.from_numpy(visual), torch.from_numpy(mask)).numpy()
        assert_close(out, refimpl.gated_xattn_dense(params, hidden, visual, heads=2, mask=mask), TORCH_FLOAT64)
        if gate == 0.0:
            np.testing.assert_array_equal(out, hidden)
        back = module.to_refimpl()
        assert all(np.array_equal(back[name], params[name]) for name in params)


GPU_CONFIGS = {
    "Flamingo": refimpl.ResamplerConfig(dim=256, depth=2, heads=4, dim_head=64, num_latents=16, num_time_embeds=2),
    "IDEFICS": refimpl.ResamplerConfig(
        dim=256, depth=2, heads=4, dim_head=64, num_latents=16, activation="relu", qk_norm=True
    ),
    "Idefics2": refimpl.ResamplerConfig(
        dim=256,
        depth=2,
        heads=4,
        kv_heads=2,
        dim_head=64,
        num_latents=16,
        activation="swiglu",
        norm="rmsnorm",
        norm_dtype="float32",
    ),
}


def half_precision_row(dtype):
    """(dtype, the key for its output, the key for its attention weights), for parametrize."""
    name = str(dtype).removeprefix("torch.")
    return pytest.param(
        dtype,
        (name, "torch GPU vs float64 reference"),
        (name, "torch GPU attention weights vs float64 reference"),
        id=name,
    )


HALF_PRECISION = [half_precision_row(torch.bfloat16), half_precision_row(torch.float16)]
FLOAT32_GPU = pytest.param(
    torch.float32,
    ("float32", "torch GPU vs float64 reference"),
    ("float32", "torch GPU vs float64 reference"),
    id="float32",
)


@functools.cache
def reference_case(variant):
    """(config, params, x, mask, output, attention weights) of the float64 reference for GPU_CONFIGS[variant]."""
    config = GPU_CONFIGS[variant]
    params = refimpl.init_resampler(config, seed=8)
    x = np.random.default_rng(8).standard_normal((4, 2, 100, 256))
    mask = np.random.default_rng(9).random(x.shape[:-1]) < 0.8
    expected, expected_maps = refimpl.perceiver_resampler(params, x, config, mask=mask, return_attention=True)
    return config, params, x, mask, expected, expected_maps


def assert_close_to_the_reference(variant, dtype, key, weights_key, device):
    """The module in dtype on device, both paths (fused attention; explicit weights), against the float64 reference."""
    config, params, x, mask, expected, expected_maps = reference_case(variant)
    assert_close(run_torch(config, params, x, mask, dtype=dtype, device=device).float().cpu().numpy(), expected, key)
    out, maps = run_torch(config, params, x, mask, dtype=dtype, device=device, return_attention=True)
    assert out.dtype == dtype
    assert_close(out.float().cpu().numpy(), expected, key)
    for ours, theirs in zip(maps, expected_maps, strict=True):
        assert_close(ours.float().cpu().numpy(), theirs, weights_key, what="attention weights")


@needs_cuda
@pytest.mark.parametrize("variant", GPU_CONFIGS)
@pytest.mark.parametrize(("dtype", "key", "weights_key"), [FLOAT32_GPU, *HALF_PRECISION])
def test_gpu_module_is_close_to_the_float64_reference(variant, dtype, key, weights_key):
    assert_close_to_the_reference(variant, dtype, key, weights_key, "cuda")


@pytest.mark.parametrize("variant", GPU_CONFIGS)
@pytest.mark.parametrize(("dtype", "key", "weights_key"), HALF_PRECISION)
def test_half_precision_on_the_cpu_is_within_the_gpu_bounds(variant, dtype, key, weights_key):
    """torch's CPU computes float16 and bfloat16 too, rounding to the same bits as a GPU (in
    another order of summation), so the GPU's bounds hold there, where CI runs them."""
    assert_close_to_the_reference(variant, dtype, key, weights_key, "cpu")


FLOAT16 = ("float16", "torch GPU vs float64 reference")


def test_float16_rmsnorm_is_finite_and_right_for_inputs_whose_squares_overflow():
    # |x| ~ 1000: x^2 ~ 1e6 is past float16's 65504, so a mean of squares in float16 is inf
    # (and x / sqrt(inf) = 0); torch's fused rms_norm accumulates in float32
    x = torch.from_numpy(1000 * np.random.default_rng(10).standard_normal((5, 24)))
    assert torch.isinf(x.half().square()).any()
    norm = rt.Norm(24, "rmsnorm", eps=1e-5)
    assert_close(norm.normalize(x.half()).double().numpy(), norm.normalize(x).numpy(), FLOAT16)
    config = refimpl.ResamplerConfig(dim=24, depth=2, heads=3, dim_head=8, num_latents=5, norm="rmsnorm")
    params = refimpl.init_resampler(config, seed=10)
    media = 1000 * np.random.default_rng(11).standard_normal((2, 1, 7, 24))
    assert_close(
        run_torch(config, params, media, None, dtype=torch.float16).double().numpy(),
        refimpl.perceiver_resampler(params, media, config),
        FLOAT16,
    )


def test_float16_attention_weights_are_finite_where_q_dot_k_passes_65504():
    # q . k = 64 * 40 * 40 = 102400 is past float16's range; scaled by Dh^-0.5 = 1/8 first, 12800 is not.
    # Equal scores, so the weights are uniform, 1/N exactly
    attention = rt.CrossAttention(8, 8, heads=2, dim_head=64).half()
    q, k = torch.full((1, 3, 128), 40.0, dtype=torch.float16), torch.full((1, 5, 128), 40.0, dtype=torch.float16)
    v = torch.from_numpy(np.random.default_rng(15).standard_normal((1, 5, 128))).half()
    with torch.no_grad():
        out, weights = attention.attend(q, k, v, return_weights=True)
    assert torch.isfinite(out).all()
    np.testing.assert_array_equal(weights.float().numpy(), np.full((1, 2, 3, 5), np.float16(1 / 5)))


FLOAT16_OVERFLOW = r"float16 gave an output that is not finite .* largest finite value 65504 .* bfloat16 .* or float32"


def test_float16_resampler_raises_where_a_finite_input_overflows_inside():
    config = refimpl.ResamplerConfig(dim=16, depth=1, heads=2, dim_head=8, num_latents=3, media_dim=12)
    params = refimpl.init_resampler(config, seed=12)
    x = np.full((2, 1, 5, 12), 30000.0)  # finite in float16; through media_proj, 12 * 30000 is not
    params["media_proj.weight"] = np.ones((12, 16))
    assert np.isfinite(run_torch(config, params, x, None).numpy()).all()  # float64 has the range
    for return_attention in (False, True):
        with pytest.raises(FloatingPointError, match=rf"PerceiverResampler in {FLOAT16_OVERFLOW}"):
            run_torch(config, params, x, None, dtype=torch.float16, return_attention=return_attention)


def test_float16_gated_block_raises_where_a_finite_input_overflows_inside():
    params = refimpl.init_gated_xattn_dense(16, 8, heads=2, dim_head=4, gate=1.0, seed=13)
    params["ff.w_out"] = 1e5 * params["ff.w_out"]  # finite in float16, up to 45000; the feed-forward output is not
    rng = np.random.default_rng(13)
    hidden, visual = rng.standard_normal((2, 5, 16)), rng.standard_normal((2, 6, 8))
    module = rt.GatedXAttnDense.from_refimpl(params, heads=2)
    with torch.no_grad():
        assert torch.isfinite(module(torch.from_numpy(hidden), torch.from_numpy(visual))).all()
        half = module.half()
        with pytest.raises(FloatingPointError, match=rf"GatedXAttnDense in {FLOAT16_OVERFLOW}"):
            half(torch.from_numpy(hidden).half(), torch.from_numpy(visual).half())


@needs_cuda
def test_gpu_module_replays_as_a_cuda_graph():
    config = refimpl.ResamplerConfig(dim=64, depth=2, heads=4, dim_head=16, num_latents=8)
    module = rt.PerceiverResampler.from_refimpl(
        config, refimpl.init_resampler(config), dtype=torch.float32, device="cuda"
    )
    x = torch.randn(2, 1, 50, 64, device="cuda")
    with torch.no_grad():
        expected = module(x)
        static_x = x.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            module(static_x)  # warm up outside the graph
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = module(static_x)
        graph.replay()
        torch.cuda.synchronize()
    torch.testing.assert_close(static_out, expected)


def torch_and_refimpl_errors(config, x, mask):
    """The exception that refimpl.perceiver_resampler and refimpl.torch raise for (x, mask)."""
    params = refimpl.init_resampler(config, seed=0)
    module = rt.PerceiverResampler.from_refimpl(config, params)
    errors = []
    for run in (
        lambda: refimpl.perceiver_resampler(params, x, config, mask=mask),
        lambda: module(torch.from_numpy(x), None if mask is None else torch.from_numpy(mask)),
    ):
        with pytest.raises(ValueError) as caught:
            run()
        errors.append(str(caught.value))
    return errors


CHECKED = refimpl.ResamplerConfig(
    dim=6, depth=1, heads=2, dim_head=3, num_latents=4, num_time_embeds=3, num_media_embeds=2
)
NO_LATENTS_IN_KV = refimpl.ResamplerConfig(dim=6, depth=1, heads=2, dim_head=3, num_latents=4, latents_in_kv=False)
EMPTY_SECOND_ITEM = np.ones((2, 3, 5), dtype=bool)
EMPTY_SECOND_ITEM[1] = False
SAME_ERROR_CASES = {
    "more frames than time embeddings": (
        CHECKED,
        np.zeros((2, 4, 5, 6)),
        None,
        r"x has T = 4 frames .*num_time_embeds = 3",
    ),
    "more media items than media embeddings": (
        CHECKED,
        np.zeros((3, 2, 5, 6)),
        None,
        r"x has I = 3 media items .*num_media_embeds = 2",
    ),
    "no media embeddings axis": (CHECKED, np.zeros((2, 5, 6)), None, r"x must have shape \(\.\.\., I, T, S, D\)"),
    "a batch item with no real token, latents not among the keys": (
        NO_LATENTS_IN_KV,
        np.zeros((2, 3, 5, 6)),
        EMPTY_SECOND_ITEM,
        r"mask marks no real token in 1 batch item\(s\) \(the first at index \(1,\)\) "
        r"and config\.latents_in_kv is False",
    ),
    "no media tokens, latents not among the keys": (
        NO_LATENTS_IN_KV,
        np.zeros((2, 3, 0, 6)),
        None,
        r"x has no media tokens \(T \* S = 0",
    ),
    "a mask of the wrong shape": (
        NO_LATENTS_IN_KV,
        np.zeros((2, 3, 5, 6)),
        np.ones((2, 3, 4), dtype=bool),
        r"mask must have shape \(\.\.\., T, S\)",
    ),
}


@pytest.mark.parametrize(("config", "x", "mask", "message"), SAME_ERROR_CASES.values(), ids=SAME_ERROR_CASES.keys())
def test_torch_module_raises_refimpls_error_for_input_that_does_not_fit(config, x, mask, message):
    numpy_error, torch_error = torch_and_refimpl_errors(config, x, mask)
    assert re.search(message, numpy_error), numpy_error
    assert torch_error == numpy_error


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.int64, torch.uint8], ids=str)
def test_torch_module_rejects_a_mask_that_is_not_bool(dtype):
    # scaled_dot_product_attention adds a float mask to the scores: a 0/1 mask would shift them, silently
    config, params, x, mask = switches_case({})
    module = rt.PerceiverResampler.from_refimpl(config, params)
    with pytest.raises(TypeError, match=rf"mask must be a bool tensor \(True = real token\); got dtype {dtype}"):
        module(torch.from_numpy(x), torch.from_numpy(mask).to(dtype))


def test_torch_module_rejects_input_of_another_dtype():
    config, params, x, mask = switches_case({})
    module = rt.PerceiverResampler.from_refimpl(config, params)
    with pytest.raises(TypeError, match=r"x must have the module's dtype torch\.float64; got torch\.float32"):
        module(torch.from_numpy(x).float(), torch.from_numpy(mask))


def test_torch_module_rejects_a_numpy_array_and_a_config_that_is_not_a_resampler_config():
    config, params, x, _ = switches_case({})
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor; got ndarray"):
        rt.PerceiverResampler.from_refimpl(config, params)(x)
    with pytest.raises(TypeError, match=r"config must be a refimpl\.ResamplerConfig; got dict"):
        rt.PerceiverResampler({"dim": 12})


def test_gated_module_rejects_a_mask_that_is_not_bool():
    params = refimpl.init_gated_xattn_dense(6, 4, heads=2, dim_head=3, seed=0)
    module = rt.GatedXAttnDense.from_refimpl(params, heads=2)
    hidden, visual = torch.zeros(2, 5, 6, dtype=torch.float64), torch.zeros(2, 7, 4, dtype=torch.float64)
    with pytest.raises(
        TypeError,
        match=r"mask must be a bool tensor \(True = text token may see visual token\); got dtype torch\.float64",
    ):
        module(hidden, visual, torch.ones(2, 5, 7, dtype=torch.float64))
