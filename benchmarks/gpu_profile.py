"""Where refimpl.torch's time goes on a GPU: torch.profiler over one forward pass.

    python benchmarks/gpu_profile.py            # on a CUDA machine
    python benchmarks/gpu_profile.py --smoke    # tiny sizes on the CPU: checks the script runs

Flamingo's configuration (D = 1024, depth 6, H = 8, Dh = 64, R = 64) in bfloat16, at
32 x 2304 (the roofline target) and 1 x 576 (launch-bound), eager and compiled with
torch.compile (fullgraph=True, mode "default"). For each it prints the kernels that take
the most device time over `--calls` forward passes, per call: the device time, the share of
the whole, and the number of launches, and the number of kernel launches per forward pass,
which is what a CUDA graph or torch.compile's fusion removes. --eager-only leaves compile out.
"""

import argparse

import torch
from _harness import machine_line
from torch.profiler import ProfilerActivity, profile

import refimpl
import refimpl.torch as rt


def kernel_table(fn, device, calls, top):
    """Profile `calls` calls of fn after two warm-up calls; return (rows, launches per call,
    device ms per call): rows (name, ms per call, share, launches per call) of the `top` kernels
    by device time (operators on the CPU, where there are no kernels)."""
    for _ in range(2):
        fn()
    activity = ProfilerActivity.CUDA if device == "cuda" else ProfilerActivity.CPU
    with profile(activities=[activity]) as prof:
        for _ in range(calls):
            fn()
        if device == "cuda":
            torch.cuda.synchronize()
    if device == "cuda":
        events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        time_of = lambda e: e.device_time  # noqa: E731 (one line per device, read beside the next)
    else:
        events = [e for e in prof.events() if e.cpu_parent is None]  # top-level operators only
        time_of = lambda e: e.cpu_time  # noqa: E731
    totals = {}
    for event in events:
        microseconds, count = totals.get(event.name, (0.0, 0))
        totals[event.name] = (microseconds + time_of(event), count + 1)
    whole = sum(microseconds for microseconds, _ in totals.values())
    ranked = sorted(totals.items(), key=lambda item: -item[1][0])[:top]
    rows = [(name, us / calls / 1e3, us / whole, count / calls) for name, (us, count) in ranked]
    return rows, len(events) / calls, whole / calls / 1e3


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, to check the script")
    parser.add_argument("--calls", type=int, default=5, help="forward passes profiled per case")
    parser.add_argument("--top", type=int, default=12, help="kernels listed per case")
    parser.add_argument("--eager-only", action="store_true", help="no torch.compile (it compiles for a minute)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --smoke to check the script on the CPU")
    if args.smoke:
        config = refimpl.ResamplerConfig(dim=64, depth=2, heads=4, dim_head=16, num_latents=8, num_media_embeds=1)
        shapes, dtype, backend = ((4, 100),), torch.float32, "aot_eager"
    else:
        config = refimpl.ResamplerConfig(dim=1024, depth=6, heads=8, dim_head=64, num_latents=64, num_media_embeds=1)
        shapes, dtype, backend = ((32, 2304), (1, 576)), torch.bfloat16, "inductor"
    module = rt.PerceiverResampler.from_refimpl(
        config, refimpl.init_resampler(config, seed=0), dtype=dtype, device=device
    ).eval()
    runs = {"eager": module}
    if not args.eager_only:
        runs[f"torch.compile ({backend})"] = torch.compile(module, fullgraph=True, dynamic=False, backend=backend)
    device_name = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke test)"
    print(f"Machine: {machine_line()}\nDevice: {device_name}; torch {torch.__version__}")
    print(f"D = {config.dim}, depth {config.depth}, H = {config.heads}, R = {config.num_latents}, {dtype}\n")
    for batch, tokens in shapes:
        x = torch.randn(batch, 1, 1, tokens, config.dim, device=device, dtype=dtype)
        for name, run in runs.items():
            rows, launches, total_ms = kernel_table(lambda: run(x), device, args.calls, args.top)
            what = "kernel launches" if device == "cuda" else "top-level operators"
            print(f"### {batch} x {tokens}, {name}: {total_ms:.3f} ms of {device} time, {launches:.0f} {what} a call\n")
            print(f"| {what[:-1]} | ms a call | share | times a call |\n|---|---|---|---|")
            for kernel, ms, share, count in rows:
                print(f"| `{kernel[:90]}` | {ms:.3f} | {share:.1%} | {count:g} |")
            print()


if __name__ == "__main__":
    main()
