"""The whole resampler on the CPU: refimpl (NumPy and Numba, float32) against refimpl.torch
and flamingo-pytorch (the same math as open_flamingo's resampler).

    python benchmarks/cpu_resampler.py

Flamingo's configuration: D = 1024, depth 6, H = 8, Dh = 64, R = 64 latents, GELU; inputs
of B x N = 1 x 576 and 8 x 576 tokens (one frame of 24 x 24 patches per item). Prints one
markdown table with the median time of one forward pass and its ratio to refimpl.torch on
the CPU (lower is faster). refimpl is given float32 parameters, so the timing is the
float32 arithmetic, not a cast of 50 M parameters per call.
"""

import numpy as np
import torch
from _harness import machine_line, median_seconds

import refimpl
import refimpl.torch as rt

CONFIG = refimpl.ResamplerConfig(dim=1024, depth=6, heads=8, dim_head=64, num_latents=64, num_media_embeds=1)
SHAPES = ((1, 576), (8, 576))


def flamingo_pytorch_module(params):
    from flamingo_pytorch import PerceiverResampler

    from refimpl import interop

    module = PerceiverResampler(dim=1024, depth=6, dim_head=64, heads=8, num_latents=64, num_media_embeds=1)
    module.load_state_dict(interop.to_flamingo_pytorch(CONFIG, params, dtype=torch.float32), strict=True)
    return module.eval()


def main():
    torch.set_grad_enabled(False)
    params = refimpl.init_resampler(CONFIG, seed=0)
    params32 = {name: value.astype(np.float32) for name, value in params.items()}
    ours = rt.PerceiverResampler.from_refimpl(CONFIG, params, dtype=torch.float32).eval()
    theirs = flamingo_pytorch_module(params)
    rows = []
    for batch, tokens in SHAPES:
        x = np.random.default_rng(0).standard_normal((batch, 1, 1, tokens, 1024)).astype(np.float32)  # (B, I, T, S, D)
        tx = torch.from_numpy(x)
        reference = refimpl.perceiver_resampler(params, x, CONFIG)  # float64
        fns = {
            "refimpl NumPy float32": lambda: refimpl.perceiver_resampler(params32, x, CONFIG, dtype=np.float32),
            "refimpl Numba float32": lambda: refimpl.perceiver_resampler(
                params32, x, CONFIG, dtype=np.float32, backend="numba"
            ),
            "refimpl.torch CPU float32": lambda: ours(tx).numpy(),
            "flamingo-pytorch CPU float32": lambda: theirs(tx[:, :, 0]).numpy(),  # its input: (B, I, S, D)
        }
        for name, fn in fns.items():
            error = refimpl.relative_error(fn().reshape(reference.shape), reference)
            rows.append((batch, tokens, name, median_seconds(fn, min_repeats=5, budget_s=10.0), error))

    print(f"Machine: {machine_line()}\n")
    print("D = 1024, depth 6, H = 8, Dh = 64, R = 64; median of >= 5 calls; ratio = time / refimpl.torch's\n")
    print("| B x N | implementation | median ms | ratio to refimpl.torch | rel. error vs float64 |")
    print("|---|---|---|---|---|")
    torch_time = {(b, n): s for b, n, name, s, _ in rows if name.startswith("refimpl.torch")}
    for batch, tokens, name, seconds, error in rows:
        print(
            f"| {batch} x {tokens} | {name} | {seconds * 1e3:.1f} "
            f"| {seconds / torch_time[batch, tokens]:.2f} | {error:.1e} |"
        )


if __name__ == "__main__":
    main()
