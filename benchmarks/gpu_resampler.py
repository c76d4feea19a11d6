"""refimpl.torch against flamingo-pytorch (the same math as open_flamingo's) on a GPU, and
refimpl.torch on the family members' resamplers at their published sizes.

    python benchmarks/gpu_resampler.py            # on a CUDA machine: the tables for RESULTS.md
    python benchmarks/gpu_resampler.py --smoke    # tiny sizes on the CPU: checks the script runs
    python benchmarks/gpu_resampler.py --dtypes bfloat16 --shapes 32x576 --family none --runs 5

Flamingo's configuration: D = 1024, depth 6, H = 8, Dh = 64, R = 64 latents, GELU; batch x
tokens in {1 x 576, 32 x 256, 32 x 576, 32 x 2304, 8 x 9216}; bfloat16, float16 and float32
(TF32 off, as torch's default). In the same run it measures the card's bf16 matrix-product
rate (8192^3), the roofline here, and prints for every row: the median time of one forward
pass, the ratio of flamingo-pytorch's time to ours (higher = we are faster), the fraction of
the roofline (FLOPs counted below / time / matmul rate), and the error against
refimpl.torch in float64 on the same device, with its bound from refimpl.TOLERANCES.

refimpl.torch runs four ways: eager; replayed as a CUDA graph (one launch for the whole
forward pass, which is what matters when the batch is small and the GPU waits on the CPU's
kernel launches); compiled by torch.compile (fullgraph=True, dynamic=False, one compile per
shape and dtype) in mode "default" and in mode "reduce-overhead" (inductor's kernels, replayed
as CUDA graphs). flamingo-pytorch runs eager, as its users run it. Compiling costs tens of
seconds per shape, so by default only the rows the targets need are compiled (bfloat16 at the
target shapes, both modes) and the family members in bfloat16, mode "default"; --compile all
compiles every row, and no compile starts after --compile-deadline-s seconds (the row says so).

The family rows (Kosmos-2, Evolla, Qwen-VL, MiniCPM-V, Idefics2; the sizes of notebook 11)
have no flamingo-pytorch baseline: time, fraction of roofline and error only. A row whose
CUDA-graph capture or compile fails says so ("compile failed: ...") and the run goes on.

After the table, the issue's targets (bfloat16, one run, this card's own matmul rate): each
target's value is the median over --runs timing passes (each pass times every row of a
shape once, so a ratio compares times taken moments apart), with the range over the passes.

Where refimpl.torch and flamingo-pytorch differ in work: refimpl.torch normalises the media
tokens once and computes every layer's media keys and values in one matrix product
(PerceiverResampler.media_keys_values), writes the latents' keys and values in place instead
of concatenating (without autograd, as here), and its attention is
F.scaled_dot_product_attention.
"""

import argparse
import copy
import dataclasses
import functools
import math
import statistics
import sys
import time

import numpy as np
import torch
from _harness import machine_line

import refimpl
import refimpl.torch as rt
from refimpl import interop
from refimpl.interop import evolla, kosmos2, minicpm_v, qwen_vl

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
FLAMINGO = refimpl.ResamplerConfig(dim=1024, depth=6, heads=8, dim_head=64, num_latents=64, num_media_embeds=1)
SMOKE_FLAMINGO = refimpl.ResamplerConfig(dim=64, depth=2, heads=4, dim_head=16, num_latents=8, num_media_embeds=1)
# name -> (batch, tokens) on a GPU, and its stand-in with --smoke
SHAPES = {"1x576": (1, 576), "32x256": (32, 256), "32x576": (32, 576), "32x2304": (32, 2304), "8x9216": (8, 9216)}
SMOKE_SHAPES = {"1x576": (1, 36), "32x256": (4, 16), "32x576": (4, 36), "32x2304": (4, 100), "8x9216": (2, 196)}

EAGER, GRAPH, COMPILED, REDUCE_OVERHEAD, FLAMINGO_PYTORCH = (
    "refimpl.torch eager",
    "refimpl.torch CUDA graph",
    "refimpl.torch compiled",
    "refimpl.torch compiled (reduce-overhead)",
    "flamingo-pytorch eager",
)
# --implementations name -> row name
IMPLEMENTATIONS = {
    "eager": EAGER,
    "cuda-graph": GRAPH,
    "compiled": COMPILED,
    "reduce-overhead": REDUCE_OVERHEAD,
    "flamingo-pytorch": FLAMINGO_PYTORCH,
}
CUDA_ONLY = (GRAPH, REDUCE_OVERHEAD)
COMPILE_MODES = {COMPILED: "default", REDUCE_OVERHEAD: "reduce-overhead"}


@dataclasses.dataclass(frozen=True)
class Target:
    """One of the issue's targets, bfloat16: `measure` ("speedup" over flamingo-pytorch or
    "roofline" fraction) at least `threshold` at `shape`, by the best of `implementations`."""

    text: str
    shape: str
    measure: str
    threshold: float
    implementations: tuple


OURS = (EAGER, GRAPH, COMPILED, REDUCE_OVERHEAD)
TARGETS = (
    Target(">= 3x flamingo-pytorch at 32 x 576", "32x576", "speedup", 3.0, OURS),
    Target(">= 10x flamingo-pytorch at 1 x 576", "1x576", "speedup", 10.0, OURS),
    Target(">= 65% of the roofline at 32 x 2304", "32x2304", "roofline", 0.65, OURS),
    Target("eager (no graph) >= 2x flamingo-pytorch at 32 x 576", "32x576", "speedup", 2.0, (EAGER,)),
)


@dataclasses.dataclass(frozen=True)
class Member:
    """A family member's resampler at its published size (notebook 11) and a typical input:
    `batch` items of one frame of `tokens` tokens; `grid` (h, w) patches per image for configs
    with positions; `padded`: the member takes a key-padding mask, and here every odd item is
    smaller (3/4 of the tokens, or of the grid's width) and padded."""

    config: refimpl.ResamplerConfig
    batch: int
    tokens: int
    grid: tuple | None
    padded: bool
    about: str


# name -> the member's config at its published size (notebook 11's table), with its importer's switches
PUBLISHED = {
    "Kosmos-2": dict(dim=2048, depth=1, heads=32, dim_head=64, num_latents=64, media_dim=1024, **kosmos2.SWITCHES),
    "Evolla": dict(dim=1280, depth=6, heads=8, dim_head=64, num_latents=64, out_dim=4096, norm_eps=evolla.LAYERNORM_EPS)
    | evolla.SWITCHES,
    "Qwen-VL": dict(dim=4096, heads=32, dim_head=128, num_latents=256, pos_grid=16, media_dim=1664)
    | dict(norm_eps=qwen_vl.LAYERNORM_EPS, **qwen_vl.SWITCHES),
    "MiniCPM-V": dict(dim=3584, heads=28, dim_head=128, num_latents=64, media_dim=1152, out_dim=3584)
    | dict(norm_eps=minicpm_v.LAYERNORM_EPS, **minicpm_v.SWITCHES),
    "Idefics2": dict(dim=4096, depth=3, heads=16, dim_head=96, kv_heads=4, num_latents=64, activation="swiglu")
    | dict(norm="rmsnorm", norm_eps=1e-6, norm_dtype="float32"),  # as from_idefics2 reads Idefics2PerceiverConfig
}
# name -> (tokens, grid, padded, about): a typical input, 8 items of one frame each
TYPICAL_INPUTS = {
    "Kosmos-2": (257, None, False, "224 x 224 images: 16 x 16 patches of 14 and the class token"),
    "Evolla": (1024, None, True, "proteins of up to 1024 residues"),
    "Qwen-VL": (1024, (32, 32), False, "448 x 448 images: 32 x 32 patches of 14"),
    "MiniCPM-V": (1024, (32, 32), True, "slices of up to 448 x 448: up to 32 x 32 patches of 14"),
    "Idefics2": (4900, None, True, "980 x 980 images: 70 x 70 patches of 14"),
}
TINY = dict(dim=32, heads=4, dim_head=8, num_latents=6)
# name -> the sizes --smoke replaces (the switches stay), with 2 items of 36 tokens (a 6 x 6 grid)
SMOKE_SIZES = {
    "Kosmos-2": dict(TINY, media_dim=24),
    "Evolla": dict(TINY, depth=2, out_dim=40),
    "Qwen-VL": dict(TINY, num_latents=4, pos_grid=2, media_dim=24),
    "MiniCPM-V": dict(TINY, media_dim=24, out_dim=32),
    "Idefics2": dict(TINY, depth=2, kv_heads=2),
}


def family(smoke):
    """name -> Member: the five new members at their published sizes with a typical input;
    with `smoke`, the same switches at tiny sizes, 2 items of 36 tokens."""
    members = {}
    for name, sizes in PUBLISHED.items():
        tokens, grid, padded, about = TYPICAL_INPUTS[name]
        member = Member(refimpl.ResamplerConfig(**sizes), 8, tokens, grid, padded, about)
        if smoke:
            config = dataclasses.replace(member.config, **SMOKE_SIZES[name])
            member = dataclasses.replace(
                member, config=config, batch=2, tokens=36, grid=None if grid is None else (6, 6)
            )
        members[name] = member
    return members


def resampler_flops(config, batch, tokens):
    """Multiply-adds x 2 of one forward pass (norms, softmax, activations and positions left
    out; padded tokens counted, as the kernels compute them)."""
    d, inner, inner_kv, r, f = (
        config.dim,
        config.heads * config.dim_head,
        config.num_kv_heads * config.dim_head,
        config.num_latents,
        config.ff_dim,
    )
    keys = tokens + (r if config.latents_in_kv else 0)
    per_layer = (
        r * d * inner  # queries
        + keys * d * 2 * inner_kv  # keys and values
        + 2 * config.heads * r * keys * config.dim_head  # scores, weights @ values
        + r * inner * d  # output projection
        + (r * d * f * (3 if config.activation == "swiglu" else 2) if config.feed_forward else 0)  # feed-forward
    )
    media_proj = tokens * (config.media_dim or 0) * d
    out_proj = r * d * (config.out_dim or 0)
    return 2 * batch * (config.depth * per_layer + media_proj + out_proj)


def error_bound(dtype_name):
    """The TOLERANCES bound of refimpl.torch in `dtype_name` against the float64 reference."""
    return refimpl.TOLERANCES[(dtype_name, "torch GPU vs float64 reference")]


def timer(device, repeats=20, budget_s=0.5):
    """fn -> median seconds of one call (CUDA events on a GPU, perf_counter on the CPU), over
    `repeats` calls, or fewer (at least 5) once they took `budget_s`, after 3 warm-up calls."""

    def one_call(fn):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    def median_seconds(fn):
        for _ in range(3):
            fn()
        times = []
        while len(times) < 5 or (len(times) < repeats and sum(times) < budget_s):
            times.append(one_call(fn))
        return statistics.median(times)

    return median_seconds


def matmul_rate(device, size, median_seconds):
    """bf16 (GPU) or float32 (CPU) matrix-product rate in FLOP/s, the roofline of this run."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    return 2 * size**3 / median_seconds(lambda: a @ b)


def as_cuda_graph(module, x, kwargs):
    """A function that replays module(x, **kwargs) as one CUDA graph (x's shape and address
    fixed). refimpl.torch waits for the device in no capture (may_not_wait_for_device)."""
    static_x = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            module(static_x, **kwargs)  # warm up outside the graph (cuBLAS workspaces, SDPA kernel choice)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = module(static_x, **kwargs)

    def replay(_input=static_x):  # the graph reads static_x's memory: keep it alive with the graph
        graph.replay()
        return static_out

    return replay


def as_compiled(module, x, kwargs, mode, backend):
    """module(x, **kwargs) through torch.compile(fullgraph=True, dynamic=False) in `mode`,
    compiled now (by a first call), so that a failure shows here and the timing has no compile."""
    compiled = torch.compile(module, fullgraph=True, dynamic=False, mode=mode, backend=backend)
    if mode == "reduce-overhead":

        def run():
            torch.compiler.cudagraph_mark_step_begin()  # a new step: the last call's outputs may be overwritten
            return compiled(x, **kwargs)

    else:
        run = functools.partial(compiled, x, **kwargs)
    run()
    return run


def first_line(error):
    """An exception as one short line, for a table cell: the first cause's (torch.compile
    wraps the module's own error in its Unsupported)."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = str(error).strip().splitlines() or [""]
    return f"{type(error).__name__}: {lines[0]}"[:160].replace("|", "/")


@dataclasses.dataclass
class Row:
    """One row of the table: per-pass median seconds (and flamingo-pytorch's, same
    workload and dtype), or the reason the row has no times."""

    workload: str
    shape: str
    dtype: str
    implementation: str
    flops: float
    seconds: list = dataclasses.field(default_factory=list)
    baseline: list | None = None
    error: float = math.nan
    failure: str | None = None

    def speedups(self):
        """flamingo-pytorch's time / ours, one per pass (empty without a baseline)."""
        return [b / s for b, s in zip(self.baseline or [], self.seconds, strict=False)]

    def cells(self, rate):
        """The table's cells after the first four."""
        if self.failure:
            return [self.failure, "", "", "", ""]
        seconds = statistics.median(self.seconds)
        speedup = f"{statistics.median(self.speedups()):.2f}" if self.baseline else "-"
        bound = error_bound(self.dtype)
        verdict = "yes" if self.error <= bound else "NO"
        return [f"{seconds * 1e3:.3f}", speedup, f"{self.flops / seconds / rate:.1%}", f"{self.error:.1e}", verdict]


HEADER = (
    "| workload | B x N | dtype | implementation | median ms | flamingo-pytorch time / this "
    "| fraction of roofline | rel. error vs float64 | within bound |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def print_row(row, rate):
    """One table line, printed at once (a run cut short keeps what it printed)."""
    cells = [row.workload, row.shape, row.dtype, row.implementation, *row.cells(rate)]
    print("| " + " | ".join(cells) + " |", flush=True)


def make_input(member, config, device):
    """x (B, 1, S, D_in) in float64, seeded, and forward's keyword arguments (mask, grid)."""
    width = config.media_dim or config.dim
    generator = torch.Generator(device).manual_seed(0)
    x = torch.randn(member.batch, 1, member.tokens, width, device=device, dtype=torch.float64, generator=generator)
    kwargs = {}
    h, w = member.grid or (1, member.tokens)
    sides = np.array([[h, w if b % 2 == 0 or not member.padded else w * 3 // 4] for b in range(member.batch)])
    if member.padded:
        real = torch.tensor(sides.prod(axis=-1), device=device)  # (B,) real tokens of each item
        kwargs["mask"] = (torch.arange(member.tokens, device=device) < real[:, None])[:, None, :]  # (B, 1, S)
    if member.grid is not None:
        kwargs["grid"] = sides if member.padded else (h, w)
    return x, kwargs


class Bench:
    """The run's settings and state: device, timer, roofline, which rows to build, the
    compile deadline, and the rows so far."""

    def __init__(self, args):
        self.device = "cpu" if args.smoke else "cuda"
        self.args = args
        self.repeats = 5 if args.smoke else 20
        self.median_seconds = timer(self.device, self.repeats)
        self.rate = matmul_rate(self.device, 512 if args.smoke else 8192, self.median_seconds)
        self.backend = args.compile_backend or ("aot_eager" if args.smoke else "inductor")
        self.started = time.perf_counter()
        self.rows = []

    def wanted(self, implementation, dtype_name, in_scope):
        """Whether this row is built: selected, possible on this device, and for compiled rows
        within the compile scope: with --compile targets, bfloat16 where the caller says
        `in_scope` (a target shape; the family's mode "default"), with --compile all, every row."""
        if implementation not in self.args.implementations:
            return False
        if self.device != "cuda" and implementation in CUDA_ONLY:
            return False
        if implementation in COMPILE_MODES:
            return self.args.compile == "all" or (
                self.args.compile == "targets" and dtype_name == "bfloat16" and in_scope
            )
        return True

    def runner(self, implementation, module, x, kwargs):
        """A function that runs one forward pass, or a string saying why there is none."""
        try:
            if implementation == GRAPH:
                return as_cuda_graph(module, x, kwargs)
            if implementation in COMPILE_MODES:
                if time.perf_counter() - self.started > self.args.compile_deadline_s:
                    return f"not compiled: past --compile-deadline-s {self.args.compile_deadline_s:g}"
                return as_compiled(module, x, kwargs, COMPILE_MODES[implementation], self.backend)
            return functools.partial(module, x, **kwargs)
        except Exception as error:  # report it as the row, keep the rest of the table
            what = "capture failed" if implementation == GRAPH else "compile failed"
            return f"{what}: {first_line(error)}"

    def measure(self, workload, shape, dtype_name, flops, runners, expected):
        """Time every runner over --runs passes, check its output against `expected`, print and keep the rows."""
        rows = {}
        for name, run in runners.items():
            rows[name] = Row(workload, shape, dtype_name, name, flops, failure=None if callable(run) else run)
        timed = {name: run for name, run in runners.items() if callable(run)}
        for _ in range(self.args.runs):
            for name, run in timed.items():
                rows[name].seconds.append(self.median_seconds(run))
        for name, run in timed.items():
            out = run().reshape(expected.shape).to("cpu", torch.float64).numpy()
            rows[name].error = refimpl.relative_error(out, expected.cpu().numpy())
        if FLAMINGO_PYTORCH in timed:
            for row in rows.values():
                row.baseline = rows[FLAMINGO_PYTORCH].seconds
        for row in rows.values():
            print_row(row, self.rate)
        self.rows += rows.values()
        torch._dynamo.reset()  # the compiled rows of this shape are done: free their caches
        return rows


def run_flamingo(bench, dtype_name, config, params, reference):
    """The Flamingo rows of one dtype: every selected shape, refimpl.torch's ways and flamingo-pytorch."""
    dtype, device = DTYPES[dtype_name], bench.device
    ours = rt.PerceiverResampler.from_refimpl(config, params, dtype=dtype, device=device).eval()
    theirs = None
    if FLAMINGO_PYTORCH in bench.args.implementations:
        theirs = interop.flamingo_pytorch.build_module(config, params, dtype=dtype).to(device)
    target_shapes = {target.shape for target in TARGETS}
    for shape_name in bench.args.shapes:
        batch, tokens = (SMOKE_SHAPES if bench.args.smoke else SHAPES)[shape_name]
        generator = torch.Generator(device).manual_seed(0)
        x64 = torch.randn(batch, 1, 1, tokens, config.dim, device=device, dtype=torch.float64, generator=generator)
        expected = reference(x64)  # (B, 1, R, D), float64
        x = x64.to(dtype)
        runners = {}
        for name in IMPLEMENTATIONS.values():
            if not bench.wanted(name, dtype_name, shape_name in target_shapes):
                continue
            if name == FLAMINGO_PYTORCH:
                runners[name] = functools.partial(theirs, x[:, :, 0])
            else:
                runners[name] = bench.runner(name, ours, x, {})
        bench.measure("Flamingo", shape_name, dtype_name, resampler_flops(config, batch, tokens), runners, expected)


def run_member(bench, name, member, dtype_names):
    """One family member's rows: refimpl.torch's ways in each dtype, against its float64 self."""
    config, device = member.config, bench.device
    params = refimpl.init_resampler(config, seed=0)
    reference = rt.PerceiverResampler.from_refimpl(config, params, dtype=torch.float64, device=device)
    del params  # Idefics2's are 5 GB in float64
    x64, kwargs = make_input(member, config, device)
    expected = reference(x64, **kwargs)  # (B, R, D or Do), float64
    flops = resampler_flops(config, member.batch, member.tokens)
    for dtype_name in dtype_names:
        # the same as from_refimpl in this dtype (which casts the float64 params), without the host's copies
        ours = copy.deepcopy(reference).to(DTYPES[dtype_name]).eval()
        x = x64.to(DTYPES[dtype_name])
        runners = {
            implementation: bench.runner(implementation, ours, x, kwargs)
            for implementation in OURS
            if bench.wanted(implementation, dtype_name, implementation != REDUCE_OVERHEAD)
        }
        bench.measure(name, f"{member.batch}x{member.tokens}", dtype_name, flops, runners, expected)
        del ours, x, runners
        if device == "cuda":
            torch.cuda.empty_cache()


def target_line(target, rows, rate, smoke):
    """`target`'s line of the targets table: the best of its implementations' medians over the
    passes, and whether it meets the target (not judged with `smoke`: tiny sizes on a CPU)."""
    candidates = [
        row
        for row in rows
        if row.workload == "Flamingo"
        and row.shape == target.shape
        and row.dtype == "bfloat16"
        and row.implementation in target.implementations
        and not row.failure
    ]
    if target.measure == "speedup":
        values = {row.implementation: row.speedups() for row in candidates if row.baseline}
        show = "{:.2f}x".format
    else:
        values = {row.implementation: [row.flops / s / rate for s in row.seconds] for row in candidates}
        show = "{:.1%}".format
    if not values:
        return f"| {target.text} | not measured (row not selected or failed) | | | |"
    best = max(values, key=lambda name: statistics.median(values[name]))
    value = statistics.median(values[best])
    spread = f"{show(min(values[best]))} - {show(max(values[best]))}"
    met = "not judged (smoke)" if smoke else "yes" if value >= target.threshold else "no"
    return f"| {target.text} | {best} | **{show(value)}** | {spread} | {met} |"


def print_targets(bench):
    """The targets table: each target's value, median over the passes, met or not."""
    shapes = SMOKE_SHAPES if bench.args.smoke else SHAPES
    note = " (smoke: the stand-in shapes " + ", ".join(f"{k} -> {b}x{n}" for k, (b, n) in shapes.items()) + ")"
    print(f"\nThe issue's targets, bfloat16, median over {bench.args.runs} passes{note if bench.args.smoke else ''}:\n")
    print("| target | best implementation | median | range over passes | met |\n|---|---|---|---|---|")
    for target in TARGETS:
        print(target_line(target, bench.rows, bench.rate, bench.args.smoke))


def print_preamble(bench, config, members):
    """Machine, device, roofline, the configurations and what this run leaves out."""
    device = bench.device
    device_name = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke test)"
    print(f"Machine: {machine_line()}\nDevice: {device_name}; torch {torch.__version__}\n")
    kind = "bf16" if device == "cuda" else "float32"
    size = 512 if bench.args.smoke else 8192
    print(f"Roofline: {bench.rate / 1e12:.3g} TFLOP/s ({kind} {size}^3 matrix product, this run)\n")
    print(
        f"Flamingo: D = {config.dim}, depth {config.depth}, H = {config.heads}, Dh = {config.dim_head}, "
        f"R = {config.num_latents}"
    )
    for name, member in members.items():
        c = member.config
        print(
            f"{name}: D = {c.dim}, depth {c.depth}, H = {c.heads}, Dh = {c.dim_head}, R = {c.num_latents}"
            f"{f', Hkv = {c.kv_heads}' if c.kv_heads else ''}{f', media {c.media_dim}' if c.media_dim else ''}"
            f"{f', out {c.out_dim}' if c.out_dim else ''}; {member.batch} x {member.tokens} tokens "
            f"({member.about}{'; odd items padded' if member.padded else ''})"
        )
    print(
        f"\nMedian of up to {bench.repeats} calls per pass, median over {bench.args.runs} passes; compiled rows: "
        f"backend {bench.backend}, --compile {bench.args.compile}"
    )
    skipped = [name for name in CUDA_ONLY if name in bench.args.implementations and device != "cuda"]
    if skipped:
        print(f"Skipped on the CPU (CUDA only): {', '.join(skipped)}")
    print()


def comma_list(choices):
    """argparse type: a comma-separated list, each item one of `choices`."""

    def parse(text):
        items = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in items if item not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(choices)}; got {unknown}")
        return items

    return parse


def parse_args(argv=None):
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, to check the script")
    parser.add_argument("--dtypes", type=comma_list(DTYPES), default=list(DTYPES), help="default: all three")
    parser.add_argument("--shapes", type=comma_list(SHAPES), default=list(SHAPES), help="Flamingo's B x N; default all")
    parser.add_argument(
        "--implementations",
        type=comma_list(IMPLEMENTATIONS),
        default=list(IMPLEMENTATIONS),
        help="default: all (CUDA graph and reduce-overhead skipped on the CPU)",
    )
    parser.add_argument(
        "--family",
        type=comma_list([*PUBLISHED, "none"]),
        default=list(PUBLISHED),
        help="family members to run, or none; default all",
    )
    parser.add_argument("--runs", type=int, default=3, help="timing passes; each row's value is their median")
    parser.add_argument(
        "--compile",
        choices=("targets", "all", "none"),
        default="targets",
        help="compiled rows: bfloat16 at the target shapes and the family's mode default (default), all, none",
    )
    parser.add_argument("--compile-deadline-s", type=float, default=240.0, help="no compile starts after this")
    parser.add_argument("--compile-backend", help="torch.compile backend; default inductor (aot_eager with --smoke)")
    args = parser.parse_args(argv)
    args.implementations = [IMPLEMENTATIONS[name] for name in args.implementations]
    args.family = [name for name in args.family if name != "none"]
    if args.runs < 1:
        parser.error(f"--runs must be at least 1; got {args.runs}")
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_grad_enabled(False)
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --smoke to check the script on the CPU")
    bench = Bench(args)
    config = SMOKE_FLAMINGO if args.smoke else FLAMINGO
    members = {name: member for name, member in family(args.smoke).items() if name in args.family}
    print_preamble(bench, config, members)
    print(HEADER, flush=True)
    params = refimpl.init_resampler(config, seed=0)
    reference = rt.PerceiverResampler.from_refimpl(config, params, dtype=torch.float64, device=bench.device)
    for dtype_name in args.dtypes:
        run_flamingo(bench, dtype_name, config, params, reference)
    print_targets(bench)  # before the family's rows: a run cut short still has it
    if members:
        print("\nThe family members, refimpl.torch alone:\n")
        print(HEADER, flush=True)
    for name, member in members.items():
        run_member(bench, name, member, args.dtypes)
    print(f"\nWall time of the run: {time.perf_counter() - bench.started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
