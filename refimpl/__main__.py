"""Command line: `python -m refimpl selfcheck`, `demo [--out latents.png]` and `verify CHECKPOINT --peer NAME`.

selfcheck: is this installation working? It prints the versions, which backends exist
(NumPy, Numba, torch on the CPU, CUDA and its device), and how closely each agrees with
the float64 NumPy reference on one random resampler; it exits with status 1 if any
backend is further off than refimpl.TOLERANCES allows. Students run it at the start of
a class to confirm their set-up.

demo: the trained tiny model on a generated scene (or --image PATH, any size): the token
shapes, its answers, and a figure of what each latent attends to (refimpl.demo).

verify: does refimpl reproduce the resampler in a checkpoint (.safetensors, .bin/.pt, a
Hugging Face model folder), run by its peer's own module? It finds the resampler in a whole
model's state dict, reads its sizes, and prints the block-by-block comparison and a verdict:
exit status 0 within the bounds, 1 not, 2 bad input (refimpl.interop.verify).
"""

import argparse
import platform
import sys

import numpy as np

from . import TOLERANCES, ResamplerConfig, init_resampler, perceiver_resampler, relative_error


def _version(module_name):
    try:
        return __import__(module_name).__version__
    except ImportError:
        return None


def _torch_runner(device, dtype_name):
    def run(params, x, config, mask):
        import torch

        import refimpl.torch as rt

        dtype = getattr(torch, dtype_name)
        module = rt.PerceiverResampler.from_refimpl(config, params, dtype=dtype, device=device)
        with torch.no_grad():
            out = module(torch.as_tensor(x, dtype=dtype, device=device), torch.as_tensor(mask, device=device))
        return out.to("cpu", torch.float64).numpy()

    return run


def _numpy_runner(backend, dtype):
    return lambda params, x, config, mask: perceiver_resampler(
        params, x, config, mask=mask, backend=backend, dtype=dtype
    )


def backends():
    """(name, dtype name, tolerance key, run) for every backend installed here."""
    rows = [("NumPy", "float32", ("float32", "vs float64 reference"), _numpy_runner("numpy", np.float32))]
    if _version("numba"):
        rows += [
            ("Numba", "float64", ("float64", "numba vs numpy"), _numpy_runner("numba", np.float64)),
            ("Numba", "float32", ("float32", "vs float64 reference"), _numpy_runner("numba", np.float32)),
        ]
    if _version("torch"):
        import torch

        rows += [
            ("torch CPU", "float64", ("float64", "torch vs numpy"), _torch_runner("cpu", "float64")),
            ("torch CPU", "float32", ("float32", "vs float64 reference"), _torch_runner("cpu", "float32")),
        ]
        if torch.cuda.is_available():
            rows += [
                (
                    "torch CUDA",
                    "float32",
                    ("float32", "torch GPU vs float64 reference"),
                    _torch_runner("cuda", "float32"),
                ),
                (
                    "torch CUDA",
                    "bfloat16",
                    ("bfloat16", "torch GPU vs float64 reference"),
                    _torch_runner("cuda", "bfloat16"),
                ),
                (
                    "torch CUDA",
                    "float16",
                    ("float16", "torch GPU vs float64 reference"),
                    _torch_runner("cuda", "float16"),
                ),
            ]
    return rows


def selfcheck(out=sys.stdout):
    """Print the set-up and the agreement table; return 0 if every backend agrees, else 1."""
    print(f"Python {platform.python_version()} on {platform.machine()}", file=out)
    for name in ("numpy", "numba", "torch"):
        print(f"{name:6} {_version(name) or 'not installed'}", file=out)
    cuda = "not available"
    if _version("torch"):
        import torch

        if torch.cuda.is_available():
            cuda = f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    print(f"CUDA   {cuda}\n", file=out)
    if _version("numba"):  # said before the wait, so a first run does not look stuck
        print(
            "The first run after installing takes about a minute longer: Numba compiles refimpl's kernels once\n"
            "and caches them on disk (NUMBA_CACHE_DIR, or __pycache__ beside refimpl), so later runs take seconds.\n",
            file=out,
            flush=True,
        )

    config = ResamplerConfig(dim=64, depth=2, heads=4, dim_head=16, num_latents=8, num_time_embeds=2)
    params = init_resampler(config, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 2, 50, 64))  # (B, T, S, D)
    mask = rng.random((2, 2, 50)) < 0.8
    reference = perceiver_resampler(params, x, config, mask=mask)
    print("Agreement with the float64 NumPy reference (relative error, refimpl.relative_error):\n", file=out)
    print(f"| {'backend':10} | {'dtype':8} | {'error':8} | {'bound':6} | ok  |", file=out)
    print(f"|{'-' * 12}|{'-' * 10}|{'-' * 10}|{'-' * 8}|-----|", file=out)
    failures = 0
    for name, dtype, key, run in backends():
        error = relative_error(run(params, x, config, mask), reference)
        ok = error <= TOLERANCES[key]
        failures += not ok
        print(
            f"| {name:10} | {dtype:8} | {error:8.1e} | {TOLERANCES[key]:6.0e} | {'yes' if ok else 'NO':3} |", file=out
        )
    print("\nAll backends agree." if not failures else f"\n{failures} backend(s) disagree: see the table.", file=out)
    return 1 if failures else 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m refimpl", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("selfcheck", help="check every installed backend against the float64 reference")
    demo = commands.add_parser("demo", help="run the shipped tiny model and draw what each latent attends to")
    demo.add_argument("--image", help="an image file of any size (default: a generated scene)")
    demo.add_argument("--seed", type=int, default=0, help="the generated scene's seed (default 0)")
    demo.add_argument("--out", default="latents.png", help="where to write the figure (default latents.png)")
    _add_verify(commands)
    args = parser.parse_args(argv)
    if args.command == "selfcheck":
        return selfcheck()
    if args.command == "verify":
        return _verify(args)
    try:
        from .demo import demo as run_demo

        run_demo(args.out, args.image, args.seed)
    except ImportError as error:
        parser.error(
            f"the demo needs the notebooks' packages ({error.name} is missing): "
            'python -m pip install "perceiver-resampler-course[notebooks]"'
        )
    except ValueError as error:
        parser.error(str(error))
    return 0


def _add_verify(commands):
    from .interop._registry import PEERS

    verify = commands.add_parser(
        "verify",
        help="check refimpl against a peer's module on the resampler in a checkpoint file",
        description=(
            "Exit status: 0 within the bounds (or, without the peer's package, shapes that fit), 1 not, 2 bad input."
        ),
    )
    verify.add_argument(
        "checkpoint", help="a .safetensors, .bin, .pt or .pth state dict, or a Hugging Face model folder"
    )
    verify.add_argument("--peer", required=True, choices=list(PEERS), help="whose resampler it is")
    verify.add_argument("--prefix", help="where the resampler's keys start (default: found), e.g. 'perceiver.'")
    verify.add_argument(
        "--heads", type=int, help="the number of heads H (default: config.json's), which the tensors cannot tell"
    )
    verify.add_argument("--eps", type=float, help="the norms' eps (default: config.json's, else the peer's)")


def _verify(args):
    """refimpl.interop.verify; a VerifyError becomes one line on stderr and exit status 2."""
    from .interop.verify import VerifyError, verify

    try:
        return verify(args.checkpoint, peer=args.peer, prefix=args.prefix, heads=args.heads, eps=args.eps)
    except VerifyError as error:
        print(f"python -m refimpl verify: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
