"""The tiny model of the course, in NumPy: patches -> encoder -> Perceiver Resampler -> head.

    images (B, [T,] height, width, 3)
      -> patches (B, T, S, P)          S = h*w patches of p x p pixels, P = 3*p*p, row-major
      -> tokens  (B, T, S, D)          encoder: gelu([patch, pos] W_in + b_in) W_out + b_out
      -> latents (B, R, D)             refimpl.perceiver_resampler (+ time embeddings for clips)
      -> logits  (B, Q)                head: flatten(latents) W_head + b_head

A patch's position enters as Fourier features of its centre in image coordinates (0 to 1
along each side), so the encoder sees where a patch is whatever the image's size: the same
weights run on a 32 x 48 image (24 patches) and on a 128 x 96 one (192 patches), and the
resampler turns either into R tokens.

Parameters: a flat dict. "encoder.w_in" (P + 4*frequencies, D), "encoder.b_in" (D,),
"encoder.w_out" (D, D), "encoder.b_out" (D,), "head.w_out" (R*D, Q), "head.b_out" (Q,), and
the resampler's own (refimpl.params) under "resampler.". refimpl.tiny.torch.TinyModel is the
same function in PyTorch, with the same names.

Axis letters: B batch, T frames, S patches per frame on an (h, w) grid, P pixel values per
patch, D width, R latents, Q questions (outputs).
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import _checks
from ..config import ResamplerConfig
from ..layers import gelu
from ..params import check_params, param_shapes
from ..resampler import perceiver_resampler

RESAMPLER = "resampler."


@dataclass(frozen=True)
class TinyConfig:
    """Sizes of the tiny model; its resampler's are in `.resampler`.

    patch: p, the side of a square patch in pixels (image sides must be multiples of it).
    frequencies: Fourier features per coordinate and per sin/cos (4 * frequencies in all).
    outputs: Q, the number of logits (one per yes/no question).
    frames: T of the clips the model is trained on (its time-embedding table), or None for images.
    The rest are the resampler's: D = dim, depth, heads, dim_head, R = num_latents, ff_mult.
    """

    patch: int = 8
    frequencies: int = 4
    outputs: int = 16
    frames: int | None = None
    dim: int = 64
    depth: int = 2
    heads: int = 4
    dim_head: int = 16
    num_latents: int = 16
    ff_mult: float = 2

    def __post_init__(self):
        for name in ("patch", "frequencies", "outputs"):
            _checks.positive_int(name, getattr(self, name))
        _ = self.resampler  # building it validates the resampler's sizes

    @property
    def resampler(self):
        return ResamplerConfig(
            dim=self.dim,
            depth=self.depth,
            heads=self.heads,
            dim_head=self.dim_head,
            num_latents=self.num_latents,
            ff_mult=self.ff_mult,
            num_time_embeds=self.frames,
        )

    @property
    def patch_values(self):
        """P + 4 * frequencies: the encoder's input width (pixels of a patch, then its position)."""
        return 3 * self.patch**2 + 4 * self.frequencies


def tiny_param_shapes(config):
    """dict name -> shape of every parameter of the tiny model (see the module's docstring)."""
    d = config.dim
    return {
        "encoder.w_in": (config.patch_values, d),
        "encoder.b_in": (d,),
        "encoder.w_out": (d, d),
        "encoder.b_out": (d,),
        **{RESAMPLER + name: shape for name, shape in param_shapes(config.resampler).items()},
        "head.w_out": (config.num_latents * d, config.outputs),
        "head.b_out": (config.outputs,),
    }


def init_tiny_model(config, seed=0):
    """Random parameters, as the course trains them from: projections N(0, 1 / fan_in), biases
    0, the resampler's as in refimpl.init_resampler but with norm scales 1 and shifts 0."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in tiny_param_shapes(config).items():
        if name.endswith(".weight"):
            params[name] = np.ones(shape)
        elif name.endswith((".bias", ".b_in", ".b_out")) or name == RESAMPLER + "time_embeds":
            params[name] = np.zeros(shape)
        elif name == RESAMPLER + "latents":
            params[name] = rng.standard_normal(shape)
        else:
            params[name] = rng.normal(0.0, shape[0] ** -0.5, shape)
    return params


def patchify(images, patch):
    """images (..., height, width, 3) -> (patches (..., S, P), grid (h, w)), S = h*w patches
    of patch x patch pixels in row-major order, P = 3 * patch**2 values each (rows, then
    columns, then channels)."""
    *lead, height, width, channels = images.shape
    if height % patch or width % patch or channels != 3:
        raise ValueError(
            f"images must have shape (..., height, width, 3) with height and width multiples of "
            f"patch = {patch}; got {tuple(images.shape)}"
        )
    h, w = height // patch, width // patch
    grid = images.reshape(*lead, h, patch, w, patch, 3)
    grid = np.moveaxis(grid, -4, -3)  # (..., h, w, p, p, 3)
    return grid.reshape(*lead, h * w, 3 * patch * patch), (h, w)


def positions(grid, frequencies):
    """Fourier features of the patch centres: (S, 4 * frequencies), S = h*w in row-major order.

    With u, v in (0, 1) the centre's row and column as fractions of the image's height and
    width: [sin(pi 2^k u), cos(pi 2^k u), sin(pi 2^k v), cos(pi 2^k v)] for k < frequencies.
    """
    h, w = grid
    u, v = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
    angles = np.pi * 2.0 ** np.arange(frequencies)  # (frequencies,)
    features = [f(c.reshape(-1, 1) * angles) for c in (u, v) for f in (np.sin, np.cos)]
    return np.concatenate(features, axis=-1)  # (S, 4 * frequencies)


def encoder_inputs(images, config):
    """images (B, [T,] height, width, 3) -> the encoder's inputs (B, T, S, P + 4 * frequencies),
    each patch's pixels then its position features, and the patch grid (h, w)."""
    pixels, grid = patchify(images, config.patch)  # (B, [T,] S, P)
    if config.frames is None:
        pixels = pixels[:, None]  # (B, 1, S, P): an image is a clip of one frame
    pos = np.broadcast_to(positions(grid, config.frequencies), (*pixels.shape[:-1], 4 * config.frequencies))
    return np.concatenate([pixels, pos], axis=-1), grid


def encode(params, images, config):
    """images (B, [T,] height, width, 3) -> tokens (B, T, S, D) and the patch grid (h, w)."""
    inputs, grid = encoder_inputs(images, config)  # (B, T, S, P + 4 * frequencies)
    hidden = gelu(inputs @ params["encoder.w_in"] + params["encoder.b_in"])  # (B, T, S, D)
    return hidden @ params["encoder.w_out"] + params["encoder.b_out"], grid


def tiny_model(params, images, config, *, return_attention=False):
    """The tiny model's logits (B, Q), in float64.

    images: (B, height, width, 3), or (B, T, height, width, 3) when config.frames is set (T
    may exceed config.frames only with a time-embedding table of T rows: see
    interpolate_time_embeds). With `return_attention`, also the resampler's attention
    weights, one (B, H, R, T*S + R) array per layer, and the patch grid (h, w).
    """
    images = checked_images(images, config)
    params = check_params(params, tiny_param_shapes(config), np.float64, f"the tiny model {config}")
    tokens, grid = encode(params, images, config)  # (B, T, S, D)
    latents = perceiver_resampler(resampler_params(params), tokens, config.resampler, return_attention=return_attention)
    if return_attention:
        latents, maps = latents
    logits = head(params, latents)  # (B, Q)
    return (logits, maps, grid) if return_attention else logits


def head(params, latents):
    """latents (B, R, D) -> logits (B, Q) = flatten(latents) W_head + b_head."""
    return latents.reshape(len(latents), -1) @ params["head.w_out"] + params["head.b_out"]


def checked_images(images, config):
    """images as float64, checked to be (B, height, width, 3), or (B, T, height, width, 3) with
    config.frames set (the sides are checked by patchify)."""
    images = _checks.float_array("images", images, np.float64)
    if images.ndim != (4 if config.frames is None else 5):
        layout = "(B, height, width, 3)" if config.frames is None else "(B, T, height, width, 3) (config.frames is set)"
        raise ValueError(f"images must have shape {layout}; got {images.shape}")
    return images


def resampler_params(params):
    """The resampler's parameters of a tiny model, under refimpl's own names."""
    return {name.removeprefix(RESAMPLER): value for name, value in params.items() if name.startswith(RESAMPLER)}


PRETRAINED = Path(__file__).with_name("pretrained.npz")


def load_pretrained():
    """The trained tiny model shipped with refimpl: (TinyConfig, params as float64 arrays).

    Trained by tools/train_tiny_model.py on refimpl.scenes' 16 questions (the recipe of
    notebook 6), and stored in float32.
    """
    with np.load(PRETRAINED) as stored:
        config = TinyConfig(**json.loads(str(stored["config"])))
        params = {name: stored[name].astype(np.float64) for name in stored.files if name != "config"}
    return config, check_params(params, tiny_param_shapes(config), np.float64, f"the tiny model {config}")


def save_pretrained(config, params, path=PRETRAINED):
    """Store a tiny model as load_pretrained reads it (params in float32)."""
    arrays = {name: np.asarray(value, np.float32) for name, value in params.items()}
    np.savez_compressed(path, config=np.array(json.dumps(asdict(config))), **arrays)
