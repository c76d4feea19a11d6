"""Driving a torch resampler for compare and compare_grads: its weights and input in refimpl's
terms, how to run it, and hooks that record its own intermediate values.

Every peer module's `drive(module, x, mask)` describes its module as a ModuleSpec and calls
`drive` here; a user's module comes with the user's ModuleSpec.
"""

import collections
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import _state_dict
from .module_spec import ModuleSpec, Point

GENERIC_KEY64 = ("float64", "another implementation vs refimpl")


@dataclass
class Driven:
    """A module ready to be set beside refimpl.

    config, params: what it implements, its weights as refimpl's float64 params.
    x, mask: its input as refimpl's x (float64) and mask (bool or None); grid: the patch
        grid perceiver_resampler takes where the config has positions (else None).
    run: () -> the module's output on its input.
    module_x: the tensor it runs on (compare_grads differentiates with respect to it).
    read: a state dict in the module's names and layout -> (config, refimpl's params), for
        its gradients too.
    points: [(block, layer, submodule, argument or None)], in the order of refimpl's trace
        (refimpl.resampler.resample_with_trace): where each row's value is recorded.
    tolerance_key64: the TOLERANCES key that bounds it in float64.
    record: (block, recorded tensor) -> the tensor in refimpl's layout (ModuleSpec.record).
    """

    config: object
    params: dict
    x: np.ndarray
    mask: np.ndarray | None
    run: Callable
    module_x: object
    read: Callable
    points: list
    tolerance_key64: tuple = GENERIC_KEY64
    grid: object = None
    record: Callable = staticmethod(lambda block, value: value)


def drive(module, spec, x, mask, *, what="the module", tolerance_key64=GENERIC_KEY64):
    """The Driven for `module` described by `spec` (a ModuleSpec), on its input x and mask."""
    import torch

    if not isinstance(spec, ModuleSpec):
        raise TypeError(f"spec must be a refimpl.interop.ModuleSpec; got {type(spec).__name__}")
    parameter = next(module.parameters())
    module_x = torch.as_tensor(x).to(device=parameter.device, dtype=parameter.dtype)
    module_mask = None if mask is None else torch.as_tensor(mask, device=parameter.device)
    call = spec.call or _default_call
    to_refimpl = spec.to_refimpl or (lambda x, mask: (x, mask))
    ours_x, ours_mask, *grid = to_refimpl(
        numpy(module_x), None if mask is None else numpy(module_mask, float_type=False)
    )

    def read(state_dict):
        return spec.config, _state_dict.to_params(_state_dict.read(state_dict), spec.layout, spec.config, what)

    config, params = read(module.state_dict())
    return Driven(
        config=config,
        params=params,
        x=ours_x,
        mask=ours_mask,
        run=lambda: call(module, module_x, module_mask),
        module_x=module_x,
        read=read,
        points=[(block, layer, *_resolve(module, point, block, layer)) for block, layer, point in spec.points()],
        tolerance_key64=tolerance_key64,
        grid=grid[0] if grid else None,
        **({} if spec.record is None else dict(record=spec.record)),
    )


def _default_call(module, x, mask):
    return module(x) if mask is None else module(x, mask=mask)


def _resolve(module, point, block, layer):
    """(submodule, argument or None) for a point; ValueError naming the row if no such submodule."""
    path, argument = (point.path, point.argument) if isinstance(point, Point) else (point, None)
    try:
        return module.get_submodule(path), argument
    except AttributeError:
        where = block if layer is None else f"layer {layer} {block}"
        raise ValueError(
            f"the spec's point for the {where} row names {path!r}, which is not a submodule of {type(module).__name__}"
        ) from None


def run_recorded(driven):
    """Run the module once; returns its output and {(block, layer): the value recorded there},
    each the first value that point saw (a detached copy)."""
    recorded = {}
    handles = []
    for block, layer, submodule, argument in driven.points:
        record = _recorder(recorded, (block, layer), submodule, argument, driven.record)
        if argument is None:
            handles.append(submodule.register_forward_hook(record))
        else:
            handles.append(submodule.register_forward_pre_hook(record, with_kwargs=True))
    try:
        output = driven.run()
    finally:
        for handle in handles:
            handle.remove()
    missing = [row for row in ((block, layer) for block, layer, *_ in driven.points) if row not in recorded]
    if missing:
        raise ValueError(f"the module never ran the submodules of these rows (check the spec's paths): {missing}")
    return output, recorded


def _recorder(recorded, row, submodule, argument, to_layout):
    if argument is None:

        def record(_, __, output):
            value = output[0] if isinstance(output, tuple) else output
            recorded.setdefault(row, to_layout(row[0], value.detach().clone()))

        return record
    signature = inspect.signature(submodule.forward)

    def record_input(_, args, kwargs):
        if isinstance(argument, int):
            value = args[argument] if argument < len(args) else None
        else:
            value = signature.bind(*args, **kwargs).arguments.get(argument)
        if value is None:
            raise ValueError(f"{type(submodule).__name__} got no argument {argument!r} (the point of the {row} row)")
        recorded.setdefault(row, to_layout(row[0], value.detach().clone()))

    return record_input


def check_no_mask(mask, peer):
    """ValueError unless `mask` is None, for a peer whose module takes no mask."""
    if mask is not None:
        raise ValueError(f"mask must be None for {peer}, which takes no mask; got {type(mask).__name__}")


def numpy(value, float_type=True):
    """A torch tensor or array as a NumPy array on the CPU (float64 if `float_type`)."""
    if hasattr(value, "detach"):
        value = value.detach().to("cpu")
        value = value.double() if float_type else value
        return value.numpy()
    return np.asarray(value, dtype=np.float64) if float_type else np.asarray(value)


def layer_norm_eps(module):
    """The eps most of `module`'s nn.LayerNorms use."""
    import torch

    return common_eps([m for m in module.modules() if isinstance(m, torch.nn.LayerNorm)])


def common_eps(norms, attribute="eps"):
    """The eps most of `norms` use (a bug in one norm's eps then shows in that norm's block)."""
    counts = collections.Counter(getattr(norm, attribute) for norm in norms)
    return counts.most_common(1)[0][0]
