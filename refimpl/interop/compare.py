"""compare: run a torch resampler and refimpl on the same input, block by block, and show
where they part.

    from refimpl import interop
    rows = interop.compare(my_module, x)          # prints the table, returns its rows

The module's weights are read with the matching `from_*` import, the input is mapped onto
refimpl's x and mask (the table in refimpl.interop), and forward hooks record the output
of every attention and feed-forward block of the module (before its residual sum), which
are set beside refimpl's float64 values of the same blocks:

| block        | layer | max abs error | relative error |
|--------------|-------|---------------|----------------|
| attention    | 0     | 2.2e-16       | 4.1e-16        |
| feed-forward | 0     | ...           | ...            |
| output       |       | ...           | ...            |

relative error = max |module - refimpl| / max |refimpl| (refimpl.relative_error). A wrong
block shows as the first row whose error jumps; every later row inherits it.
"""

import functools
import sys
from dataclasses import dataclass

import numpy as np

from ..resampler import _checked, _resample
from ..tolerances import relative_error


@dataclass
class _Adapter:
    """How to drive one kind of module: its weights, its input in refimpl's axes, its blocks."""

    config: object
    params: dict
    x: np.ndarray  # refimpl's x, float64
    mask: np.ndarray | None  # refimpl's mask
    blocks: list  # [(block name, layer, submodule)]
    run: object  # () -> the module's output
    module_x: object  # the tensor the module runs on (compare_grads differentiates with respect to it)
    read: object  # a state dict in the module's names and layout -> (config, refimpl's params); gradients too


def compare(module, x, *, mask=None, out=sys.stdout):
    """Compare `module` with refimpl on input `x`, block by block; print the table to `out`.

    module: refimpl.torch.PerceiverResampler, flamingo-pytorch's or open_flamingo's
        PerceiverResampler, transformers' IdeficsPerceiverResampler or
        Idefics2PerceiverResampler (the head count and eps are read off the module).
    x: the module's own input (a torch tensor or array, in the module's layout);
    mask: refimpl.torch's mask, or Idefics2's attention_mask (1 = real token).
    returns a list of dicts (block, layer, max_abs, relative), one per table row.
    """
    import torch

    adapter = _adapter(module, x, mask)
    recorded = []
    hooks = [
        block.register_forward_hook(
            lambda _, __, output, name=name, layer=layer: recorded.append((name, layer, output[0] if isinstance(output, tuple) else output))
        )
        for name, layer, block in adapter.blocks
    ]
    try:
        with torch.no_grad():
            final = adapter.run()
    finally:
        for hook in hooks:
            hook.remove()

    params, x64, mask64 = _checked(adapter.params, adapter.x, adapter.config, adapter.mask, "numpy", np.float64)
    trace = []
    reference = _resample(params, x64, adapter.config, mask64, "numpy", False, trace)
    rows = []
    for (name, layer, theirs), (_, _, ours) in zip(recorded, trace, strict=True):
        rows.append(_row(name, layer, theirs, ours))
    rows.append(_row("output", None, final, reference))

    print("| block        | layer | max abs error | relative error |", file=out)
    print("|--------------|-------|---------------|----------------|", file=out)
    for row in rows:
        layer = "" if row["layer"] is None else row["layer"]
        print(f"| {row['block']:12} | {layer!s:5} | {row['max_abs']:13.1e} | {row['relative']:14.1e} |", file=out)
    return rows


def _row(block, layer, theirs, ours):
    theirs = theirs.detach().to("cpu").double().numpy().reshape(-1, ours.shape[-1])
    ours = ours.reshape(-1, ours.shape[-1])
    return dict(block=block, layer=layer, max_abs=float(np.abs(theirs - ours).max(initial=0.0)), relative=relative_error(theirs, ours))


def _numpy(value):
    return value.detach().to("cpu").double().numpy() if hasattr(value, "detach") else np.asarray(value, dtype=np.float64)


def _adapter(module, x, mask):
    """The _Adapter for `module`'s kind; TypeError for a kind compare does not know."""
    import torch

    import refimpl.torch as rt

    parameter = next(module.parameters())
    tx = torch.as_tensor(x).to(device=parameter.device, dtype=parameter.dtype)
    x = _numpy(x)
    kind = f"{type(module).__module__}.{type(module).__qualname__}"
    if isinstance(module, rt.PerceiverResampler):
        tmask = None if mask is None else torch.as_tensor(mask, device=parameter.device)
        blocks = [(name, i, layer[key]) for i, layer in enumerate(module.layers) for name, key in (("attention", "attn"), ("feed-forward", "ff"))]
        mask = None if mask is None else _numpy(mask).astype(bool)
        def read(state_dict):
            return module.config, rt.from_state_dict(state_dict)

        return _Adapter(*read(module.state_dict()), x, mask, blocks, lambda: module(tx, tmask), tx, read)
    if kind.startswith("flamingo_pytorch.") or (type(module).__name__ == "PerceiverResampler" and hasattr(module, "frame_embs")):
        blocks = [(name, i, layer[j]) for i, layer in enumerate(module.layers) for j, name in enumerate(("attention", "feed-forward"))]
        heads, eps = module.layers[0][0].heads, module.norm.eps
        if hasattr(module, "frame_embs"):  # open_flamingo: x (b, T, F, v, D) is refimpl's (B, I, T, S, D)
            from .open_flamingo import from_open_flamingo

            read = functools.partial(from_open_flamingo, heads=heads, eps=eps)
            return _Adapter(*read(module.state_dict()), x, None, blocks, lambda: module(tx), tx, read)
        from .flamingo_pytorch import from_flamingo_pytorch

        read = functools.partial(from_flamingo_pytorch, heads=heads, eps=eps)
        ours = x[:, :, None] if x.ndim == 4 else x[:, None, None]  # (b, times, n, D) -> (B, I, T=1, S, D)
        return _Adapter(*read(module.state_dict()), ours, None, blocks, lambda: module(tx), tx, read)
    if type(module).__name__ == "IdeficsPerceiverResampler":
        from .idefics import from_idefics

        blocks = [(name, i, block[j]) for i, block in enumerate(module.blocks) for j, name in enumerate(("attention", "feed-forward"))]
        read = functools.partial(from_idefics, heads=module.n_heads, eps=module.layer_norm.eps)
        return _Adapter(*read(module.state_dict()), x[:, None], None, blocks, lambda: module(tx), tx, read)
    if type(module).__name__ == "Idefics2PerceiverResampler":
        from .idefics2 import from_idefics2

        blocks = [(name, i, getattr(layer, key)) for i, layer in enumerate(module.layers) for name, key in (("attention", "self_attn"), ("feed-forward", "mlp"))]
        read = functools.partial(from_idefics2, heads=module.config.resampler_n_heads, eps=module.rms_norm_eps)
        attention_mask = torch.ones(tx.shape[:2], dtype=torch.long, device=tx.device) if mask is None else torch.as_tensor(mask, device=tx.device)
        ours_mask = attention_mask.cpu().numpy().astype(bool)[:, None]  # (b, seq) -> (B, T=1, S)
        return _Adapter(*read(module.state_dict()), x[:, None], ours_mask, blocks, lambda: module(tx, attention_mask), tx, read)
    raise TypeError(
        "compare knows refimpl.torch.PerceiverResampler, flamingo-pytorch's and open_flamingo's PerceiverResampler, "
        f"IdeficsPerceiverResampler and Idefics2PerceiverResampler; got {kind}"
    )
