"""The tiny model of the course in PyTorch: refimpl.tiny.model's function, trainable.

    model = TinyModel(TinyConfig())                       # random, as training starts
    model = TinyModel.from_refimpl(config, params)        # float64, exactly refimpl's function
    logits = model(images)                                # images (B, [T,] height, width, 3) -> (B, Q)

State-dict names are refimpl.tiny's parameter names, with projections as nn.Linear weights
(transposed), as in refimpl.torch.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..params import check_params
from ..torch import PerceiverResampler, from_state_dict, to_state_dict
from .model import positions, tiny_param_shapes


class Encoder(nn.Module):
    """Patches and their positions -> tokens: gelu([patch, pos] W_in + b_in) W_out + b_out.

    forward(images (B, [T,] height, width, 3)) -> (tokens (B, T, S, D), grid (h, w)).
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.w_in = nn.Linear(config.patch_values, config.dim, bias=False)
        self.b_in = nn.Parameter(torch.zeros(config.dim))
        self.w_out = nn.Linear(config.dim, config.dim, bias=False)
        self.b_out = nn.Parameter(torch.zeros(config.dim))

    def forward(self, images):
        config, p = self.config, self.config.patch
        *lead, height, width, _ = images.shape
        h, w = height // p, width // p
        pixels = images.reshape(*lead, h, p, w, p, 3).transpose(-4, -3).reshape(*lead, h * w, 3 * p * p)
        if config.frames is None:
            pixels = pixels[:, None]  # (B, 1, S, P)
        pos = torch.as_tensor(positions((h, w), config.frequencies), dtype=pixels.dtype, device=pixels.device)
        inputs = torch.cat([pixels, pos.expand(*pixels.shape[:-1], -1)], dim=-1)  # (B, T, S, P + 4 * frequencies)
        return self.w_out(F.gelu(self.w_in(inputs) + self.b_in)) + self.b_out, (h, w)


class Head(nn.Module):
    """latents (B, R, D) -> logits (B, Q) = flatten(latents) W_out + b_out."""

    def __init__(self, inputs, outputs):
        super().__init__()
        self.w_out = nn.Linear(inputs, outputs, bias=False)
        self.b_out = nn.Parameter(torch.zeros(outputs))

    def forward(self, latents):
        return self.w_out(latents.flatten(1)) + self.b_out


class TinyModel(nn.Module):
    """Encoder, Perceiver Resampler (refimpl.torch) and head; see refimpl.tiny.model.

    forward(images, return_attention=False) -> logits (B, Q) [, per-layer attention
    weights (B, H, R, T*S + R), grid (h, w)].

    pooler: another module in the resampler's place, taking tokens (B, T, S, D) to R tokens
    (B, R, D) (notebook 8's ablation); return_attention needs the resampler.
    """

    def __init__(self, config, pooler=None):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.resampler = PerceiverResampler(config.resampler) if pooler is None else pooler
        self.head = Head(config.num_latents * config.dim, config.outputs)

    def forward(self, images, return_attention=False):
        tokens, grid = self.encoder(images)  # (B, T, S, D)
        if not return_attention:
            return self.head(self.resampler(tokens))
        latents, maps = self.resampler(tokens, return_attention=True)
        return self.head(latents), maps, grid

    @classmethod
    def from_refimpl(cls, config, params, dtype=torch.float64, device=None):
        """A model holding refimpl.tiny's `params` exactly, in `dtype`."""
        params = check_params(params, tiny_param_shapes(config), float, f"the tiny model {config}")
        model = cls(config).to(dtype=dtype, device=device)
        model.load_state_dict(to_state_dict(params, dtype, device))
        return model

    def to_refimpl(self):
        """The parameters as refimpl.tiny's flat dict of float64 NumPy arrays."""
        return from_state_dict(self.state_dict())
