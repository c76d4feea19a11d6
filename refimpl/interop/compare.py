"""compare: run a torch resampler and refimpl on the same input, block by block, and say
which block to fix.

    from refimpl import interop
    rows = interop.compare(module, x)                  # a module refimpl knows
    rows = interop.compare(my_module, x, spec=spec)    # your own: an interop.ModuleSpec

The module's weights are read into refimpl's float64 params, its input mapped onto refimpl's
x and mask, and torch hooks record its own intermediate values as it runs, which are set
beside refimpl's (refimpl.resampler.resample_with_trace):

| block                 | layer | max abs error | relative error | bound   | ok  |
|-----------------------|-------|---------------|----------------|---------|-----|
| media                 |       | 0.0e+00       | 0.0e+00        | 1.0e-10 | yes |
| attention             | 0     | 2.2e-16       | 4.1e-16        | 1.0e-10 | yes |
| attention residual    | 0     | ...           |                |         |     |
| feed-forward          | 0     |               |                |         |     |
| feed-forward residual | 0     |               |                |         |     |
| ...                   |       |               |                |         |     |
| final norm            |       |               |                |         |     |
| output                |       |               |                |         |     |

media: the media tokens after the embeddings are added (where the module has a point for
it); attention, feed-forward: a block's output before its residual sum; ... residual: the
latents after that sum; final norm; output: what the module returns. Each row is the
module's own value (the residual rows are the inputs of the blocks that receive them), so
the first row over the bound is the first place the module computes something else: the
block to fix. Every later row inherits the difference.

relative error = max |module - refimpl| / max |refimpl| (refimpl.relative_error); the bound
comes from refimpl.TOLERANCES by the module's dtype: float64 "another implementation vs
refimpl" (refimpl.torch: "torch vs numpy"; Idefics2, whose RMSNorm computes in float32: its
own key), float32 "peer module vs float64 reference" (on a GPU: "torch GPU vs float64
reference"), bfloat16 "torch GPU vs float64 reference". The bfloat16 bound is what
refimpl.torch holds on a GPU; a module that computes its softmax or norms in bfloat16 can
exceed it without a bug (a hand-written one did by 2x, from layer 1 on): to find a bug, compare
in float64, where every row of a faithful module is within 1e-10.
"""

import sys

from ..resampler import resample_with_trace
from ..tolerances import TOLERANCES, relative_error
from ._driving import drive, numpy, run_recorded
from ._registry import COMPARED, peer_of_module


def compare(module, x, *, mask=None, spec=None, grid=None, out=sys.stdout):
    """Compare `module` with refimpl on input `x`, block by block; print the table, the bound
    and a verdict to `out`.

    module: a torch resampler. One refimpl knows (refimpl.torch.PerceiverResampler,
        flamingo-pytorch's and open_flamingo's PerceiverResampler, transformers'
        IdeficsPerceiverResampler, Idefics2PerceiverResampler, Kosmos2ImageToTextProjection
        and EvollaSequenceCompressorResampler, a module laid out as Qwen-VL's or MiniCPM-V's
        Resampler: sizes, heads and eps are read off the module), or any other, described
        by `spec`.
    x: the module's own input (a torch tensor or array, in the module's layout; for a spec,
        refimpl's (..., T, S, D) unless spec.to_refimpl maps it).
    mask: refimpl.torch's mask, or Idefics2's and Evolla's mask (1 = real token), or
        MiniCPM-V's tgt_sizes; for a spec, passed to spec.call.
    spec: a refimpl.interop.ModuleSpec, for a module refimpl does not know (it takes
        precedence over recognising the module).
    grid: refimpl.torch's grid, where its config has positions (a peer's module reads its
        grid off its own input).
    returns a list of dicts, one per table row: block (str), layer (int or None), max_abs,
    relative, bound (floats) and ok (relative <= bound).
    """
    import torch

    driven = _driven(module, x, mask, spec, grid)
    bound, key = _bound(module, driven)
    grid = {} if driven.grid is None else dict(grid=driven.grid)  # where the config has positions
    reference, trace = resample_with_trace(
        driven.params, driven.x, driven.config, mask=driven.mask, **grid
    )  # refimpl's checks first
    with torch.no_grad():
        output, recorded = run_recorded(driven)
    rows = [
        _row(block, layer, recorded[block, layer], value, bound)
        for block, layer, value in trace
        if (block, layer) in recorded
    ]
    rows.append(_row("output", None, output[0] if isinstance(output, tuple) else output, reference, bound))
    _print(rows, bound, key, out)
    return rows


def _driven(module, x, mask, spec, grid=None):
    """The Driven for `module`: from `spec`, else from the peer module that recognises it."""
    if grid is not None and (spec is not None or peer_of_module(module) is not COMPARED["refimpl_torch"]):
        raise ValueError(
            "grid is for refimpl.torch.PerceiverResampler; a peer's module reads its grid off its own input"
        )
    if grid is not None:
        return COMPARED["refimpl_torch"].drive(module, x, mask, grid)
    if spec is not None:
        return drive(module, spec, x, mask, what=f"the spec's layout for {type(module).__qualname__}")
    peer = peer_of_module(module)
    if peer is None:
        kind = f"{type(module).__module__}.{type(module).__qualname__}"
        raise TypeError(
            f"compare knows {', '.join(COMPARED)} modules; got {kind}: describe it with "
            "spec=refimpl.interop.ModuleSpec(...)"
        )
    return peer.drive(module, x, mask)


def _bound(module, driven):
    """(bound, TOLERANCES key) for the module's dtype (and, in float32, its device: a GPU's
    attention kernels and matrix products sum in other orders than the CPU's)."""
    import torch

    parameter = next(module.parameters())
    dtype = parameter.dtype
    keys = {
        torch.float64: driven.tolerance_key64,
        torch.float32: (
            "float32",
            "peer module vs float64 reference" if parameter.device.type == "cpu" else "torch GPU vs float64 reference",
        ),
        torch.bfloat16: ("bfloat16", "torch GPU vs float64 reference"),
    }
    if dtype not in keys:
        raise TypeError(
            f"module must hold float64, float32 or bfloat16 parameters (TOLERANCES has bounds for those); got {dtype}"
        )
    return TOLERANCES[keys[dtype]], keys[dtype]


def _row(block, layer, theirs, ours, bound):
    ours = ours.reshape(-1, ours.shape[-1])
    theirs = numpy(theirs)
    if theirs.size != ours.size:
        where = block if layer is None else f"layer {layer} {block}"
        raise ValueError(
            f"the module's {where} has shape {theirs.shape}; refimpl's has {ours.size // ours.shape[-1]} rows of "
            f"{ours.shape[-1]}"
        )
    error = relative_error(theirs.reshape(ours.shape), ours)
    max_abs = float(abs(theirs.reshape(ours.shape) - ours).max(initial=0.0))
    return dict(block=block, layer=layer, max_abs=max_abs, relative=error, bound=bound, ok=bool(error <= bound))


def describe(row):
    """'layer 1 attention residual', 'final norm': where a row is."""
    return row["block"] if row["layer"] is None else f"layer {row['layer']} {row['block']}"


def _print(rows, bound, key, out):
    print("| block                 | layer | max abs error | relative error | ok  |", file=out)
    print("|-----------------------|-------|---------------|----------------|-----|", file=out)
    for row in rows:
        layer = "" if row["layer"] is None else row["layer"]
        ok = "yes" if row["ok"] else "NO"
        print(
            f"| {row['block']:21} | {layer!s:5} | {row['max_abs']:13.1e} | {row['relative']:14.1e} | {ok:3} |", file=out
        )
    print(f"\nbound: relative error <= {bound:g} (TOLERANCES[{key[0]!r}, {key[1]!r}])", file=out)
    first = next((row for row in rows if not row["ok"]), None)
    if first is None:
        print("verdict: every row within the bound; the module computes what refimpl computes", file=out)
    else:
        print(
            f"first difference: {describe(first)} (relative error {first['relative']:.1e} > {bound:g}): look there",
            file=out,
        )
