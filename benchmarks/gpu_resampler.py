"""refimpl.torch against flamingo-pytorch (the same math as open_flamingo's) on a GPU.

    python benchmarks/gpu_resampler.py            # on a CUDA machine: the table for RESULTS.md
    python benchmarks/gpu_resampler.py --smoke    # tiny sizes on the CPU: checks the script runs

Flamingo's configuration: D = 1024, depth 6, H = 8, Dh = 64, R = 64 latents, GELU; batch x
tokens in {1 x 576, 32 x 256, 32 x 576, 32 x 2304, 8 x 9216}; float32 (TF32 off, as
torch's default) and bfloat16. In the same run it measures the card's bf16 matrix-product
rate (8192^3), the roofline here, and prints for every row: the median time of one
forward pass, the ratio of flamingo-pytorch's time to ours (higher = we are faster), the
fraction of the roofline (FLOPs counted below / time / matmul rate), and the error
against refimpl.torch in float64 on the same GPU.

refimpl.torch runs two ways: eager, and replayed as a CUDA graph (one launch for the
whole forward pass, which is what matters when the batch is small and the GPU waits on
the CPU's kernel launches). flamingo-pytorch runs eager, as its users run it. Where the
two differ in work: refimpl.torch normalises the media tokens once and computes every
layer's media keys and values in one matrix product (PerceiverResampler.media_keys_values),
writes the latents' keys and values in place instead of concatenating (without autograd,
as here), and its attention is F.scaled_dot_product_attention.
"""

import argparse
import functools
import statistics
import time

import torch
from _harness import machine_line

import refimpl
import refimpl.torch as rt
from refimpl import interop


def resampler_flops(config, batch, tokens):
    """Multiply-adds x 2 of one forward pass (norms, softmax and activations left out)."""
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
        + r * d * f * (3 if config.activation == "swiglu" else 2)  # feed-forward
    )
    return 2 * batch * config.depth * per_layer


def timer(device):
    """fn -> median seconds of one call (CUDA events on a GPU, perf_counter on the CPU)."""

    def median_seconds(fn, repeats=20):
        for _ in range(3):
            fn()
        times = []
        for _ in range(repeats):
            if device == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
        return statistics.median(times)

    return median_seconds


def matmul_rate(device, size, median_seconds):
    """bf16 (GPU) or float32 (CPU) matrix-product rate in FLOP/s, the roofline of this run."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    return 2 * size**3 / median_seconds(lambda: a @ b)


def as_cuda_graph(module, x):
    """A function that replays module(x) as one CUDA graph (x's shape and address fixed)."""
    static_x = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            module(static_x)  # warm up outside the graph (cuBLAS workspaces, SDPA kernel choice)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = module(static_x)

    def replay(_input=static_x):  # the graph reads static_x's memory: keep it alive with the graph
        graph.replay()
        return static_out

    return replay


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, to check the script")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --smoke to check the script on the CPU")
    if args.smoke:
        config = refimpl.ResamplerConfig(dim=64, depth=2, heads=4, dim_head=16, num_latents=8, num_media_embeds=1)
        shapes, size = ((1, 36), (4, 100)), 512
    else:
        config = refimpl.ResamplerConfig(dim=1024, depth=6, heads=8, dim_head=64, num_latents=64, num_media_embeds=1)
        shapes, size = ((1, 576), (32, 256), (32, 576), (32, 2304), (8, 9216)), 8192
    median_seconds = timer(device)
    rate = matmul_rate(device, size, median_seconds)

    from flamingo_pytorch import PerceiverResampler as FlamingoPytorchResampler

    params = refimpl.init_resampler(config, seed=0)
    reference_module = rt.PerceiverResampler.from_refimpl(config, params, dtype=torch.float64, device=device)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        ours = rt.PerceiverResampler.from_refimpl(config, params, dtype=dtype, device=device).eval()
        theirs = FlamingoPytorchResampler(
            dim=config.dim,
            depth=config.depth,
            dim_head=config.dim_head,
            heads=config.heads,
            num_latents=config.num_latents,
            num_media_embeds=1,
            ff_mult=config.ff_mult,
        ).to(device=device, dtype=dtype)  # load_state_dict copies into the module's own dtype
        theirs.load_state_dict(interop.to_flamingo_pytorch(config, params, dtype=dtype))
        theirs.eval()
        for batch, tokens in shapes:
            x64 = torch.randn(
                batch,
                1,
                1,
                tokens,
                config.dim,
                device=device,
                dtype=torch.float64,
                generator=torch.Generator(device).manual_seed(0),
            )
            expected = reference_module(x64)  # (B, 1, R, D), float64
            x = x64.to(dtype)
            runs = {
                "refimpl.torch eager": functools.partial(ours, x),
                "flamingo-pytorch eager": functools.partial(theirs, x[:, :, 0]),
            }
            if device == "cuda":
                try:
                    runs["refimpl.torch CUDA graph"] = as_cuda_graph(ours, x)
                except RuntimeError as error:  # report it and keep the rest of the table
                    print(f"CUDA graph capture failed at {batch} x {tokens}, {dtype}: {error}")
            times = {name: median_seconds(fn) for name, fn in runs.items()}
            flops = resampler_flops(config, batch, tokens)
            for name, fn in runs.items():
                error = refimpl.relative_error(
                    fn().reshape(expected.shape).to("cpu", torch.float64).numpy(), expected.cpu().numpy()
                )
                speedup = times["flamingo-pytorch eager"] / times[name]
                rows.append(
                    (
                        f"{batch} x {tokens}",
                        str(dtype).removeprefix("torch."),
                        name,
                        times[name],
                        speedup,
                        flops / times[name] / rate,
                        error,
                    )
                )
            del x64, x, expected

    device_name = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke test)"
    print(f"Machine: {machine_line()}\nDevice: {device_name}; torch {torch.__version__}\n")
    print(
        f"Roofline: {rate / 1e12:.3g} TFLOP/s "
        f"({'bf16' if device == 'cuda' else 'float32'} {size}^3 matrix product, this run)\n"
    )
    print(
        f"D = {config.dim}, depth {config.depth}, H = {config.heads}, Dh = {config.dim_head}, "
        f"R = {config.num_latents}; median of 20 calls\n"
    )
    print(
        "| B x N | dtype | implementation | median ms | flamingo-pytorch time / this | fraction of roofline "
        "| rel. error vs float64 |"
    )
    print("|---|---|---|---|---|---|---|")
    for shape, dtype, name, seconds, speedup, roofline, error in rows:
        print(f"| {shape} | {dtype} | {name} | {seconds * 1e3:.3f} | {speedup:.2f} | {roofline:.1%} | {error:.1e} |")


if __name__ == "__main__":
    main()
