"""compare_grads: a torch resampler's gradients against refimpl.grad's, parameter by
parameter, in the order back-propagation reaches them, so that a wrong backward is named.

    from refimpl import interop
    rows = interop.compare_grads(my_module, x)     # prints the table, returns its rows

The module runs on x (in its own layout, as for `compare`), and its output is
back-propagated with a seeded random upstream gradient G = dL/d(output), i.e. for the loss
L = sum(output * G). refimpl.grad.perceiver_resampler_backward runs on refimpl's float64 copy
of the module's weights with the same G. The module's parameter gradients are renamed with
the same `from_*` import that reads its weights: a gradient has its parameter's shape and
layout, and the imports only rename, transpose, split and join tensors. So every row names a
refimpl parameter:

| gradient of                 | layer | max abs error | relative error |
|-----------------------------|-------|---------------|----------------|
| norm.weight                 |       | 2.2e-16       | 1.5e-16        |
| layers.1.ff.w_out           | 1     | ...           | ...            |
| ...                         |       |               |                |
| latents                     |       | ...           | ...            |
| x                           |       | ...           | ...            |

Rows run in backward order: the output norm and projection (where the config has them), the
final norm, the last layer's feed-forward, then its attention, down to the first layer, the
latents and embeddings, the input projection, and the input x last. An
error in one backward shows in its own row and may spread to the rows below it, never to
the rows above; so the first row over the tolerance, printed under the table, is where to
look. Run `compare` first: where the forward passes differ, every gradient differs, the
final norm's first. relative error = max |module - refimpl| / max(max |refimpl|, FLOOR * the largest
gradient of all): a gradient that is zero in exact arithmetic is measured against the others.
"""

import re
import sys

import numpy as np

from ..params import param_shapes
from ..resampler import checked_arguments
from ..tolerances import TOLERANCES, relative_error
from ._driving import numpy
from .compare import _driven
from .qwen_vl import POSITIONS_KEY64


def compare_grads(module, x, *, mask=None, spec=None, grid=None, seed=0, tolerance=None, out=sys.stdout):
    """Compare `module`'s gradients with refimpl.grad's, parameter by parameter; print the table to `out`.

    module, x, mask, spec, grid: as for `refimpl.interop.compare` (a module it knows, or one a
        refimpl.interop.ModuleSpec describes).
    seed: of the upstream gradient G, drawn from a standard normal in the output's shape.
    tolerance: the relative error above which a row is reported as the first divergence;
        by default TOLERANCES' bound for a float64 module against refimpl's gradients
        (Idefics2's float32 RMSNorm bound where the norms compute in float32), and the
        float32 bound for a float32 module.
    returns a list of dicts (name, layer, max_abs, relative), one per table row, in backward
    order; the module's parameters keep their gradients.
    """
    import torch

    from ..grad import perceiver_resampler_backward

    driven = _driven(module, torch.as_tensor(x).detach().clone(), mask, spec, grid)  # a copy: x itself gets no .grad
    module_x = driven.module_x.requires_grad_(True)
    module.zero_grad(set_to_none=True)
    with torch.enable_grad():
        output = driven.run()
        output = output[0] if isinstance(output, tuple) else output
        upstream = np.random.default_rng(seed).standard_normal(tuple(output.shape))  # G, the module's output layout
        output.backward(torch.as_tensor(upstream, dtype=output.dtype, device=output.device))
    parameters = dict(module.named_parameters())
    grads = {  # the module's state dict, gradients in place of values (zeros for buffers and unused parameters)
        name: parameters[name].grad
        if name in parameters and parameters[name].grad is not None
        else torch.zeros_like(value)
        for name, value in module.state_dict().items()
    }
    _, theirs = driven.read(grads)

    config = driven.config
    grid = {} if driven.grid is None else dict(grid=driven.grid)  # where the config has positions
    params, x64, mask64 = checked_arguments(driven.params, driven.x, config, mask=driven.mask, **grid)
    dout = upstream.reshape(x64.shape[:-3] + (config.num_latents, config.out_width))  # refimpl's (..., [I,] R, D or Do)
    dx, ours = perceiver_resampler_backward(params, x64, config, dout, mask=mask64, **grid)

    floor = FLOOR * max(np.abs(g).max(initial=0.0) for g in (dx, *ours.values()))
    rows = [_row(name, theirs[name], ours[name], floor) for name in sorted(param_shapes(config), key=_backward_rank)]
    rows.append(_row("x", module_x.grad, dx, floor))
    if tolerance is None:
        tolerance = _default_tolerance(parameters, config, driven.tolerance_key64)
    _print(rows, tolerance, out)
    return rows


# A gradient that is zero in exact arithmetic is rounding noise in both implementations (the
# bias of a LayerNorm on the keys shifts every key of a head alike, which changes no score),
# and noise over noise is no measure. So each gradient's error is relative to its own size or
# to FLOOR times the largest gradient of all, whichever is larger.
FLOOR = 1e-4

# within a block, the order in which back-propagation reaches the parameters (first component of the name)
_ATTENTION_ORDER = ("bo", "wo", "q_norm", "k_norm", "bq", "wq", "bk", "wk", "bv", "wv", "norm_latents", "norm_media")
_FEED_FORWARD_ORDER = ("w_out", "w_down", "w_gate", "w_up", "w_in", "norm")
# outside the layers: the output norm and projection, the final norm, [the layers], the
# latents and embedding tables, the input projection
_OUTSIDE_ORDER = ("out_norm.", "out_proj.", "norm.")


def _backward_rank(name):
    """Sort key: the output norm and projection, the final norm, then each layer from the last
    (feed-forward, then attention), then the latents and tables, the input projection last."""
    layer = re.match(r"layers\.(\d+)\.(attn|ff)\.(\w+)", name)
    if layer is not None:
        index, block, part = int(layer.group(1)), layer.group(2), layer.group(3)
        order = _ATTENTION_ORDER if block == "attn" else _FEED_FORWARD_ORDER
        return (len(_OUTSIDE_ORDER), -index, block == "attn", order.index(part), name)
    group = next((i for i, start in enumerate(_OUTSIDE_ORDER) if name.startswith(start)), None)
    if group is None:
        group = len(_OUTSIDE_ORDER) + (2 if name.startswith("media_proj.") else 1)
    return (group, 0, False, 0, name)


def _row(name, theirs, ours, floor):
    theirs = numpy(theirs).reshape(ours.shape)
    layer = re.match(r"layers\.(\d+)\.", name)
    return dict(
        name=name,
        layer=None if layer is None else int(layer.group(1)),
        max_abs=float(np.abs(theirs - ours).max(initial=0.0)),
        relative=relative_error(theirs, ours, scale=max(np.abs(ours).max(initial=0.0), floor)),
    )


def _default_tolerance(parameters, config, key64):
    import torch

    if next(iter(parameters.values())).dtype != torch.float64:
        return TOLERANCES["float32", "peer module vs float64 reference"]
    if key64 == POSITIONS_KEY64:  # its sin-cos positions are float32 roundings, in every gradient
        return TOLERANCES[key64]
    if config.norm_dtype == "float32":
        return TOLERANCES["float64", "Idefics2 module (float32 RMSNorm) vs refimpl"]
    return TOLERANCES["float64", "gradient vs torch autograd"]


def _print(rows, tolerance, out):
    width = max(len(row["name"]) for row in rows)
    print(f"| {'gradient of':{width}} | layer | max abs error | relative error |", file=out)
    print(f"|{'-' * (width + 2)}|-------|---------------|----------------|", file=out)
    for row in rows:
        layer = "" if row["layer"] is None else row["layer"]
        print(f"| {row['name']:{width}} | {layer!s:5} | {row['max_abs']:13.1e} | {row['relative']:14.1e} |", file=out)
    first = next((row for row in rows if row["relative"] > tolerance), None)
    if first is None:
        print(f"\nEvery gradient agrees with refimpl.grad within {tolerance:g}.", file=out)
    else:
        where = "" if first["layer"] is None else f" (layer {first['layer']})"
        print(
            f"\nFirst divergence in backward order: {first['name']}{where}, relative error {first['relative']:.1e} > "
            f"{tolerance:g}.",
            file=out,
        )
