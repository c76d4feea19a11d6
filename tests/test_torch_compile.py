"""torch.compile of refimpl.torch.PerceiverResampler: one graph (fullgraph=True, so a graph
break raises) for every config switch, the same function as the NumPy reference.

On the CPU: every switch alone with the aot_eager backend (dynamo's tracing, no code
generation), and two configs that between them turn every switch on with inductor in the
"default" and "reduce-overhead" modes (the latter only differs on CUDA, where it replays
CUDA graphs). Where CUDA exists: the same two configs in both modes, in float32, float16
and bfloat16, against the float64 reference.
"""

import numpy as np
import pytest
import torch
from helpers import assert_close

import refimpl
import refimpl.torch as rt

TORCH_FLOAT64 = ("float64", "torch vs numpy")
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (run on a GPU machine: benchmarks/gpu_check.sh)")

QWEN_VL_POSITIONS = dict(positions="keys_and_queries", pos_grid=2, num_latents=4, latents_in_kv=False)
SWITCHES = {  # each switch alone (ResamplerConfig's fields; see refimpl.config)
    "defaults": {},
    "num_time_embeds": dict(num_time_embeds=3),
    "num_media_embeds": dict(num_media_embeds=3),
    "kv_heads": dict(kv_heads=2),
    "activation=squared_relu": dict(activation="squared_relu"),
    "activation=relu": dict(activation="relu"),
    "activation=swiglu": dict(activation="swiglu"),
    "norm=rmsnorm": dict(norm="rmsnorm"),
    "norm_dtype=float32": dict(norm_dtype="float32"),
    "qk_norm": dict(qk_norm=True),
    "latents_in_kv=False": dict(latents_in_kv=False),
    "attn_bias": dict(attn_bias=True),
    "media_dim": dict(media_dim=7, media_proj_bias=True),
    "pre_norm=False": dict(pre_norm=False),
    "attn_residual=False": dict(attn_residual=False),
    "feed_forward=False": dict(feed_forward=False),
    "final_norm=False": dict(final_norm=False),
    "out_dim": dict(out_dim=9, out_norm=True),
    "positions=keys": dict(positions="keys", latents_in_kv=False),
    "positions=keys_and_queries": QWEN_VL_POSITIONS,
}
EVERY_SWITCH = {  # the two configs that turn every switch of SWITCHES on between them (but two activations)
    "Qwen-VL-like, every switch of the later resamplers": dict(
        num_time_embeds=3,
        kv_heads=2,
        activation="swiglu",
        norm="rmsnorm",
        norm_dtype="float32",
        qk_norm=True,
        attn_bias=True,
        media_dim=7,
        media_proj_bias=True,
        out_dim=9,
        out_norm=True,
        **QWEN_VL_POSITIONS,
    ),
    "MiniCPM-V-like, the switches that turn blocks off": dict(
        num_media_embeds=3,
        positions="keys",
        latents_in_kv=False,
        pre_norm=False,
        attn_residual=False,
        feed_forward=False,
        final_norm=False,
    ),
}


def compile_case(switches, seed=0, dtype=torch.float64, device="cpu", **sizes):
    """(config, params, module, x, mask, grid) for D = 16, depth 2, 4 heads of width 4, R = 4
    (`sizes` changes them):
    x (B = 2, [I = 2,] T = 2, S = 6, D) and a mask with the first token of every item real;
    with positions, grid (2, 3) and the mask then marks every token real."""
    config = refimpl.ResamplerConfig(**(dict(dim=16, depth=2, heads=4, dim_head=4, num_latents=4) | sizes | switches))
    params = refimpl.init_resampler(config, seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2,) + ((2,) if config.num_media_embeds else ()) + (2, 6, config.media_width))
    mask = rng.random(x.shape[:-1]) < 0.7
    mask[..., 0, 0] = True
    grid = None
    if config.positions is not None:
        grid, mask[...] = (2, 3), True
    module = rt.PerceiverResampler.from_refimpl(config, params, dtype=dtype, device=device).eval()
    return config, params, module, x, mask, grid


def compiled_against_the_reference(
    switches, key=TORCH_FLOAT64, dtype=torch.float64, device="cpu", sizes=None, **compile_options
):
    """Compile the module of compile_case(switches, **sizes) with fullgraph=True and compare its
    output, with and without the mask, with refimpl.perceiver_resampler in float64 under `key`."""
    config, params, module, x, mask, grid = compile_case(switches, dtype=dtype, device=device, **(sizes or {}))
    if config.norm_dtype is not None:  # float32 norms round differently in torch and NumPy
        key = max(key, ("float32", "vs float64 reference"), key=refimpl.TOLERANCES.get)
    torch._dynamo.reset()  # every test compiles afresh, without another test's graphs
    compiled = torch.compile(module, fullgraph=True, **compile_options)
    for masked in (False, True):
        with torch.no_grad():
            out = compiled(
                torch.as_tensor(x, dtype=dtype, device=device),
                torch.as_tensor(mask, device=device) if masked else None,
                grid=grid,
            )
        expected = refimpl.perceiver_resampler(params, x, config, mask=mask if masked else None, grid=grid)
        assert_close(out.double().cpu().numpy(), expected, key, what=f"compiled output ({masked=})")


@pytest.mark.parametrize("switches", SWITCHES.values(), ids=SWITCHES.keys())
def test_every_switch_compiles_to_one_graph_and_is_the_same_function(switches):
    compiled_against_the_reference(switches, backend="aot_eager")


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
@pytest.mark.parametrize("switches", EVERY_SWITCH.values(), ids=EVERY_SWITCH.keys())
def test_inductor_compiles_every_switch_in_both_modes(switches, mode):
    compiled_against_the_reference(switches, mode=mode)


def test_the_two_configs_turn_every_switch_on():
    # but relu and squared_relu: one elementwise function in place of another, with the aot_eager test
    every = [refimpl.ResamplerConfig(dim=16, **switches) for switches in EVERY_SWITCH.values()]
    for name, switches in SWITCHES.items():
        if name in ("activation=relu", "activation=squared_relu"):
            continue
        assert any(all(getattr(config, k) == v for k, v in switches.items()) for config in every), name


def test_compiled_module_follows_new_batch_sizes_and_grids_without_a_graph_break():
    config, params, module, _, _, _ = compile_case(SWITCHES["positions=keys_and_queries"])
    torch._dynamo.reset()
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    rng = np.random.default_rng(1)
    for batch, n_space, grid in [(2, 6, (2, 3)), (3, 6, (2, 3)), (5, 8, (2, 3)), (2, 9, (3, 3)), (4, 12, (3, 3))]:
        x = rng.standard_normal((batch, 1, n_space, 16))
        mask = np.broadcast_to(np.arange(n_space) < grid[0] * grid[1], x.shape[:-1])
        with torch.no_grad():
            out = compiled(torch.from_numpy(x), torch.from_numpy(mask.copy()), grid=grid)
        expected = refimpl.perceiver_resampler(params, x, config, mask=mask, grid=grid)
        assert_close(out.numpy(), expected, TORCH_FLOAT64, what=f"B = {batch}, S = {n_space}, grid {grid}")


REJECTED_BY_EAGER = {
    "an item without a real token, latents not among the keys": (
        SWITCHES["latents_in_kv=False"],
        lambda mask: mask[1].fill_(False),
        r"mask marks no real token in 1 batch item\(s\) \(the first at index \(1,\)\)",
    ),
    "a real token past the image's grid": (
        SWITCHES["positions=keys"],
        lambda mask: mask[1, :, 5].fill_(True),
        r"mask must mark the tokens past each image's h\*w \(grid\) as padding",
    ),
}


def spoiled_case(switches, spoil, dtype=torch.float64, device="cpu"):
    """compile_case(switches) with a good mask and a spoiled one (item 1 as eager rejects it)."""
    config, params, module, x, mask, grid = compile_case(switches, dtype=dtype, device=device)
    grid = (2, 2) if grid is not None else None  # h*w = 4 < S = 6: tokens 4 and 5 are padding
    mask = torch.from_numpy(mask)
    if grid is not None:
        mask[..., 4:] = False
    spoiled = mask.clone()
    spoil(spoiled)  # item 1 goes wrong; item 0 stays right
    return config, params, module, x, mask, spoiled, grid


def deferring(module):
    """module as it runs while a CUDA graph is captured: eager, but never waiting for the device
    (refimpl.torch.may_not_wait_for_device says True), which a CPU cannot capture for real."""

    def run(*args, **kwargs):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(rt, "may_not_wait_for_device", lambda x: True)
            return module(*args, **kwargs)

    return run


@pytest.mark.parametrize("how", ["compiled", "deferring"])
@pytest.mark.parametrize(("switches", "spoil", "message"), REJECTED_BY_EAGER.values(), ids=REJECTED_BY_EAGER.keys())
def test_without_a_host_sync_items_eager_rejects_are_nan_and_check_input_raises_first(switches, spoil, message, how):
    config, params, module, x, _, mask, grid = spoiled_case(switches, spoil)
    x = torch.from_numpy(x)
    with pytest.raises(ValueError, match=message):
        module(x, mask, grid=grid)
    with pytest.raises(ValueError, match=message):
        module.check_input(x, mask, grid)
    torch._dynamo.reset()
    run = torch.compile(module, backend="aot_eager", fullgraph=True) if how == "compiled" else deferring(module)
    with torch.no_grad():
        out = run(x, mask, grid=grid)
    assert torch.isnan(out[1]).all()
    expected = refimpl.perceiver_resampler(params, x[:1].numpy(), config, mask=mask[:1].numpy(), grid=grid)
    assert_close(out[:1].numpy(), expected, TORCH_FLOAT64, what="the item eager accepts")


def test_deferring_module_skips_the_float16_overflow_check():
    config, params, _, x, _, _ = compile_case({})
    loud = params | {"layers.1.ff.w_out": 1e5 * params["layers.1.ff.w_out"]}  # finite in float16
    module = rt.PerceiverResampler.from_refimpl(config, loud, dtype=torch.float16)
    x = torch.as_tensor(x, dtype=torch.float16)
    with torch.no_grad(), pytest.raises(FloatingPointError, match="float16"):
        module(x)
    with torch.no_grad():
        out = deferring(module)(x)
    assert not torch.isfinite(out).all()


@needs_cuda
@pytest.mark.parametrize(
    ("switches", "spoil"), [case[:2] for case in REJECTED_BY_EAGER.values()], ids=REJECTED_BY_EAGER.keys()
)
def test_cuda_graph_captures_the_module_and_replays_a_spoiled_mask_as_nan(switches, spoil):
    config, params, module, x, mask, spoiled, grid = spoiled_case(switches, spoil, torch.float32, "cuda")
    static_x, static_mask = torch.as_tensor(x, dtype=torch.float32, device="cuda"), mask.cuda()
    with torch.no_grad():
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            module(static_x, static_mask, grid=grid)  # warm up outside the graph (eager: it checks the mask)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = module(static_x, static_mask, grid=grid)
        for replayed in (mask, spoiled):
            static_mask.copy_(replayed)
            graph.replay()
            torch.cuda.synchronize()
            out = static_out.double().cpu()
            expected = refimpl.perceiver_resampler(params, x[:1], config, mask=replayed[:1].numpy(), grid=grid)
            assert_close(out[:1].numpy(), expected, LOW_PRECISION[torch.float32], what="item 0")
            assert torch.isnan(out[1]).all() == (replayed is spoiled)


COMPILED_GRID_ERRORS = {
    "a grid per image": (np.array([[2, 3], [2, 3]]), r"grid must be one \(h, w\) pair of ints .* got ndarray"),
    "nested lists": ([[2, 3], [2, 3]], r"grid must be one \(h, w\) pair of ints .* got \[\[2, 3\], \[2, 3\]\]"),
    "a float side": ((2.0, 3), r"grid must be one \(h, w\) pair of ints .* got \(2\.0, 3\)"),
    "a side below 1": ((0, 3), r"grid must hold sides h, w >= 1; got \[0\]"),
    "more patches than tokens": ((3, 3), r"grid must have h\*w <= S = 6 \(x's tokens per frame\); got h\*w = 9"),
}


@pytest.mark.parametrize(("grid", "message"), COMPILED_GRID_ERRORS.values(), ids=COMPILED_GRID_ERRORS.keys())
def test_compiled_module_names_a_grid_it_cannot_take(grid, message):
    _, _, module, x, mask, _ = compile_case(SWITCHES["positions=keys"])
    torch._dynamo.reset()
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    # under fullgraph=True dynamo raises the module's error wrapped in its own (Unsupported, a
    # RuntimeError), with the module's message
    with pytest.raises((TypeError, ValueError, RuntimeError), match=message):
        compiled(torch.from_numpy(x), torch.from_numpy(mask), grid=grid)


LOW_PRECISION = {
    torch.float32: ("float32", "torch GPU vs float64 reference"),
    torch.float16: ("float16", "torch GPU vs float64 reference"),
    torch.bfloat16: ("bfloat16", "torch GPU vs float64 reference"),
}
CONFIGS = {"Flamingo": {}} | EVERY_SWITCH
LOW_PRECISION_CASES = [  # (config, mode, dtype): every config, mode and dtype at least once, in few compiles
    ("Flamingo", "default", torch.float32),
    ("Flamingo", "reduce-overhead", torch.bfloat16),
    ("Flamingo", "reduce-overhead", torch.float16),
    ("Qwen-VL-like, every switch of the later resamplers", "reduce-overhead", torch.bfloat16),
    ("Qwen-VL-like, every switch of the later resamplers", "default", torch.float16),
    ("MiniCPM-V-like, the switches that turn blocks off", "reduce-overhead", torch.float16),
    ("MiniCPM-V-like, the switches that turn blocks off", "default", torch.bfloat16),
]
LOW_PRECISION_SIZES = dict(dim=64, dim_head=16)  # norms over 16 entries or more: D = 16 leaves bfloat16 little room


@pytest.mark.parametrize(("name", "dtype"), sorted({(n, d) for n, _, d in LOW_PRECISION_CASES}, key=str), ids=str)
def test_compiled_module_in_16_and_32_bits_on_the_cpu_is_close_to_the_float64_reference(name, dtype):
    compiled_against_the_reference(
        CONFIGS[name], LOW_PRECISION[dtype], dtype=dtype, sizes=LOW_PRECISION_SIZES, backend="aot_eager"
    )


@needs_cuda
@pytest.mark.parametrize(("name", "mode", "dtype"), LOW_PRECISION_CASES, ids=str)
def test_compiled_module_on_cuda_is_close_to_the_float64_reference(name, mode, dtype):
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("this GPU has no bfloat16 tensor cores")
    compiled_against_the_reference(
        CONFIGS[name], LOW_PRECISION[dtype], dtype=dtype, device="cuda", sizes=LOW_PRECISION_SIZES, mode=mode
    )
