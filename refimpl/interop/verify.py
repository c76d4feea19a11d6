"""`python -m refimpl verify CHECKPOINT --peer NAME`: does refimpl reproduce the resampler in
a checkpoint file, run by its own peer's module?

    python -m refimpl verify model_dir/ --peer idefics2               # a Hugging Face model folder
    python -m refimpl verify flamingo.pt --peer open_flamingo --heads 8

1. Open CHECKPOINT (.safetensors, a torch .bin/.pt/.pth state dict, or a Hugging Face model
   folder: config.json beside model.safetensors or its shards) and find the peer's resampler
   among its keys, a whole model's included (the peer's `find_prefix`; `--prefix` overrides).
2. Take what the tensors cannot tell, the head count and the norms' eps, from the flags,
   else from config.json as the model reads it (the peer's `settings_from_hf_config`), else
   the peer's default eps; a missing one is an error naming its flag.
3. Read every size off the tensors (`from_<peer>`): the config, the parameter count and the
   shape check are printed; a tensor of the wrong shape is an error naming its key.
4. Where the peer's package is installed: build the peer's own module with those weights
   (`build_module`), run it and refimpl on a seeded input (`sample_input`), the module in
   float64 and in float32 against refimpl in float64, and print `compare`'s table for each
   and a verdict naming the first block over its bound.

Qwen-VL's and MiniCPM-V's resamplers ship only with their checkpoints (their visual.py /
resampler.py, trust_remote_code), in no package: verify stops after step 3 for them, unless
the Python call gives `module_class`, a class with the peer's constructor and layout (the
file's Resampler, or the layout-faithful stand-ins in refimpl.interop.hub_standins), which
step 4 then builds.

Exit status (`main` in refimpl.__main__): 0 within the bounds (or, without the peer's
package, shapes that fit), 1 not, 2 bad input (`VerifyError`, one line, no traceback).
"""

import inspect
import sys

import numpy as np

from . import _checkpoint, _state_dict
from ._registry import peer as peer_module
from .compare import compare

DTYPES = ("float64", "float32")  # the peer module's dtype; refimpl always computes in float64


class VerifyError(ValueError):
    """Bad input to verify: the file, the flags or the tensors. The message is one line."""


def verify(checkpoint, *, peer, prefix=None, heads=None, eps=None, out=None, module_class=None):
    """Verify the `peer` resampler in `checkpoint` against refimpl; print the steps to `out`.

    checkpoint: a path (see the module docstring); peer: a peer module's name ("idefics2");
    prefix: where its keys start (found when None); heads, eps: what the tensors cannot tell
    (from config.json or the peer's default eps when None); out: where to print (sys.stdout);
    module_class: for qwen_vl and minicpm_v, whose code is in no package, the class to build.
    returns 0 if the module agrees with refimpl within the bounds in every dtype (or, where
    the peer's package is not installed, if the shapes fit), 1 if not. Raises VerifyError.
    """
    out = sys.stdout if out is None else out
    peer_api = peer_module(peer)
    if module_class is not None and "module_class" not in inspect.signature(peer_api.build_module).parameters:
        raise VerifyError(
            "module_class is for the peers whose code ships only with their checkpoints (qwen_vl, minicpm_v); "
            f"{peer}'s module is built from its package"
        )
    try:
        opened = _checkpoint.open_checkpoint(checkpoint)
    except _checkpoint.CheckpointError as error:
        raise VerifyError(str(error)) from None
    print(
        f"checkpoint: {opened.path} ({len(opened.keys)} tensors" + (", config.json)" if opened.hf_config else ")"),
        file=out,
    )
    prefix = _prefix(opened, peer, peer_api, prefix, out)
    settings = _settings(opened, peer, peer_api, heads, eps, out)

    keys = [key for key in opened.keys if key.startswith(prefix)]
    try:
        config, params = getattr(peer_api, f"from_{peer}")(opened.tensors(keys), prefix=prefix, **settings)
    except (TypeError, ValueError) as error:
        raise VerifyError(f"{opened.path}: " + " ".join(line.strip() for line in str(error).splitlines())) from None
    print(f"config: {config}", file=out)
    print(f"parameters: {sum(value.size for value in params.values()):,} in {len(params)} arrays", file=out)
    print(f"shape check: all {len(keys)} tensors have the shapes this config gives", file=out)

    try:
        build = {} if module_class is None else dict(module_class=module_class)
        return _run(config, params, peer, peer_api, opened.hf_config, out, build)
    except ImportError as error:
        print(
            f"{error.name or 'a package'} is not installed ({error}): the shape check is all verify can do here",
            file=out,
        )
        return 0
    except (TypeError, ValueError) as error:  # e.g. a config the peer's module cannot express
        raise VerifyError(" ".join(line.strip() for line in str(error).splitlines())) from None


def _prefix(opened, peer, peer_api, prefix, out):
    """The prefix of the resampler's keys: `prefix` (checked), or the one the peer finds."""
    if prefix is not None:
        if not any(key.startswith(prefix) for key in opened.keys):
            raise VerifyError(f"{opened.path}: no key starts with --prefix {prefix!r}")
        print(f"resampler: the keys under the prefix {prefix!r} (--prefix)", file=out)
        return prefix
    found = peer_api.find_prefix(opened.keys)
    if found is None:
        other = _state_dict.other_peer(opened.keys, peer)
        hint = (
            f"{_state_dict.looks_like(other[0], other[1], 'checkpoint')}: try --peer {other[0]}"
            if other
            else "pass --prefix if its keys are not where the peer's module puts them"
        )
        raise VerifyError(f"{opened.path}: no {peer} resampler found among its {len(opened.keys)} keys; {hint}")
    print(f"resampler: found under the prefix {found!r}", file=out)
    return found


def _settings(opened, peer, peer_api, heads, eps, out):
    """{heads, eps} for from_<peer>: the flags, else config.json, else the peer's default eps."""
    from_config = {}
    if opened.hf_config is not None and hasattr(peer_api, "settings_from_hf_config"):
        try:
            from_config = peer_api.settings_from_hf_config(opened.hf_config)
        except ValueError as error:
            raise VerifyError(f"{opened.path}: {error}") from None
    defaults = {"eps": peer_api.DEFAULT_EPS}
    settings, sources = {}, []
    names = getattr(peer_api, "SETTINGS", ("heads", "eps"))  # a peer without norms takes no eps
    if eps is not None and "eps" not in names:
        raise VerifyError(f"{peer}'s resampler has no norm: --eps is not one of its settings")
    for name, flag in ((name, flag) for name, flag in (("heads", heads), ("eps", eps)) if name in names):
        for source, value in (
            ("--" + name, flag),
            ("config.json", from_config.get(name)),
            (f"{peer}'s default", defaults.get(name)),
        ):
            if value is not None:
                settings[name] = value
                sources.append(f"{name} {value} ({source})")
                break
        else:
            where = "config.json does not say either" if opened.hf_config is not None else "there is no config.json"
            raise VerifyError(f"{opened.path}: the tensors cannot tell {peer}'s {name} and {where}: pass --{name}")
    print("settings: " + ", ".join(sources), file=out)
    return settings


def _run(config, params, peer, peer_api, hf_config, out, build):
    """Build the peer's module in each dtype, compare it with refimpl; 0 if all rows are
    within their bounds, else 1. ImportError where the peer's package is not installed."""
    import torch

    x, mask = peer_api.sample_input(config, np.random.default_rng(0))
    failures = []
    for dtype_name in DTYPES:
        dtype = getattr(torch, dtype_name)
        module = peer_api.build_module(config, params, dtype=dtype, hf_config=hf_config, **build)
        print(f"\n{peer}'s module in {dtype_name} vs refimpl in float64, on a seeded input:", file=out)
        rows = compare(
            module, torch.as_tensor(x, dtype=dtype), mask=None if mask is None else torch.as_tensor(mask), out=out
        )
        failures += [(dtype_name, row) for row in rows if not row["ok"]][:1]
    if not failures:
        print(f"\nverify: OK, refimpl reproduces {peer}'s module within the bounds in {' and '.join(DTYPES)}", file=out)
        return 0
    print(file=out)
    for dtype_name, row in failures:
        layer = "" if row["layer"] is None else f", layer {row['layer']}"
        print(
            f"verify: FAILED in {dtype_name}: the first block over the bound is {row['block']}{layer} "
            f"(relative error {row['relative']:.1e} > {row['bound']:.0e})",
            file=out,
        )
    return 1
