"""`python -m refimpl demo [--image PATH] --out FILE.png`: the one-command look at the project.

Runs the trained tiny model that refimpl ships (refimpl.tiny.model.load_pretrained) in
NumPy on a generated scene, or on any image (resized so its longer side is 128 pixels and
both sides are multiples of the patch), prints the shapes on the way (patches in, R tokens
out, whatever the image size) and the model's answers, and writes a figure of what each
latent attends to in the last layer, averaged over heads.
"""

from pathlib import Path

import numpy as np

from .scenes import QUESTIONS, make_scenes
from .tiny.model import encode, load_pretrained, resampler_params, tiny_model
from .resampler import perceiver_resampler

LONGER_SIDE = 128  # pixels: the largest scenes the model was trained on


def load_image(path, patch, longer_side=LONGER_SIDE):
    """An image file (any format Pillow reads, any size) as (height, width, 3) float32 in
    [0, 1], resized so that its longer side is `longer_side` and both sides are multiples
    of `patch` (at least 2 patches)."""
    from PIL import Image

    try:
        image = Image.open(path).convert("RGB")
    except (OSError, ValueError) as error:
        raise ValueError(f"--image must be an image file Pillow can read; {path!r}: {error}") from None
    scale = longer_side / max(image.size)
    width, height = (max(2 * patch, round(side * scale / patch) * patch) for side in image.size)
    return np.asarray(image.resize((width, height), Image.BILINEAR), np.float32) / 255


def demo(out, image_path=None, seed=0, log=print):
    """Run the shipped model on a scene (or the image at `image_path`), log what happens,
    and write the per-latent attention figure to `out`. Returns the figure's path."""
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window
    from . import viz

    config, params = load_pretrained()
    if image_path is None:
        image = make_scenes(1, 96, 128, seed=seed).images[0]
        source = f"a generated scene (seed {seed})"
    else:
        image = load_image(image_path, config.patch)
        source = str(image_path)
    images = image[None]  # (1, height, width, 3)
    tokens, grid = encode(params, images, config)  # (1, 1, S, D)
    latents = perceiver_resampler(resampler_params(params), tokens, config.resampler)  # (1, R, D)
    logits, maps, _ = tiny_model(params, images, config, return_attention=True)
    log(f"image:   {source}, {image.shape[0]} x {image.shape[1]} pixels")
    log(f"patches: {grid[0]} x {grid[1]} = {tokens.shape[2]} tokens of width {tokens.shape[3]}, shape {tokens.shape} (B, T, S, D)")
    log(f"latents: {latents.shape} (B, R, D): R = {config.num_latents} tokens whatever the image size")
    answers = [question for question, yes in zip(QUESTIONS, logits[0] > 0) if yes]
    log(f"answers: {', '.join(answers) if answers else 'no coloured shape in any quadrant'}")

    weights = maps[-1][0].mean(axis=0)  # last layer, batch item 0, mean over heads: (R, S + R)
    figure = viz.latent_maps(
        weights, grid, image, suptitle=f"What each of the {config.num_latents} latents attends to (last layer, mean over heads)"
    )
    out = Path(out)
    figure.savefig(out, dpi=110)
    log(f"figure:  {out}")
    return out
