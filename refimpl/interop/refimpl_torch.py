"""refimpl.torch's PerceiverResampler as compare sees it.

Not a published peer (there are no checkpoints of it to import, so it has no from_/to_ pair
here and `python -m refimpl verify` does not offer it), but compare and compare_grads run it
like one: its config is `module.config`, its state dict is refimpl's names with projections
as nn.Linear weights and biases (refimpl.torch.to_state_dict), its input x (..., T, S, D),
mask (..., T, S) and grid (where the config has positions) are refimpl's own.

Its media after the embeddings go straight into one fused key/value product for every layer
(PerceiverResampler.media_keys_values), through no submodule, so compare has no media row for it.
"""

import sys

from ..params import param_shapes
from . import _driving
from ._state_dict import LINEAR, SAME
from .module_spec import ModuleSpec, Point

# ---- compare: recognising and driving the module

NAME = "refimpl_torch"
TOLERANCE_KEY64 = ("float64", "torch vs numpy")


def recognises(module):
    """True for refimpl.torch.PerceiverResampler (which exists only once refimpl.torch is imported)."""
    refimpl_torch = sys.modules.get("refimpl.torch")
    return refimpl_torch is not None and isinstance(module, refimpl_torch.PerceiverResampler)


def drive(module, x, mask, grid=None):
    """compare's view of the module: x, mask and grid as refimpl takes them."""
    config = module.config
    spec = ModuleSpec(
        config=config,
        layout=_layout(config, sys.modules["refimpl.torch"].state_dict_key),
        attention="layers.{i}.attn",  # ResamplerAttention(kv, latents, ...) -> (output, weights)
        feed_forward="layers.{i}.ff" if config.feed_forward else None,
        final_norm="norm" if config.final_norm else None,
        layer_input=Point("layers.{i}.attn", "latents"),
        output_projection="out_proj" if config.out_dim is not None else None,
        output_norm="out_norm" if config.out_norm else None,
        call=lambda module, x, mask: module(x, mask) if grid is None else module(x, mask, grid=grid),
        to_refimpl=lambda x, mask: (x, mask, grid),
    )
    return _driving.drive(
        module, spec, x, mask, what="refimpl.torch.PerceiverResampler", tolerance_key64=TOLERANCE_KEY64
    )


def _layout(config, state_dict_key):
    """refimpl's names, a projection w* as the nn.Linear weight "<name>.weight" (out, in), its
    bias b* as "<w*>.bias" (refimpl.torch.state_dict_key says which key and whether transposed)."""
    layout = {}
    for name in param_shapes(config):
        key, transposed = state_dict_key(name)
        layout[key] = (LINEAR if transposed else SAME, (name,))
    return layout
