"""`python -m refimpl demo [--image PATH] --out FILE.png`: the one-command look at the project.

Runs the trained tiny model that refimpl ships (refimpl.tiny.model.load_pretrained) in
NumPy on a generated scene, or on any image (resized so its longer side is 128 pixels and
both sides are multiples of the patch), prints the shapes on the way (patches in, R tokens
out, whatever the image size) and the model's answers, and writes a figure of what each
latent attends to in the last layer, averaged over heads.
"""

from pathlib import Path

import numpy as np

from .resampler import perceiver_resampler
from .scenes import QUESTIONS, make_scenes
from .tiny.model import encode, head, load_pretrained, resampler_params

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
    config, params = load_pretrained()
    if image_path is None:
        image = make_scenes(1, 96, 128, seed=seed).images[0]
        source = f"a generated scene (seed {seed})"
    else:
        image = load_image(image_path, config.patch)
        source = str(image_path)
    images = image[None]  # (1, height, width, 3)
    # refimpl.tiny.model.tiny_model, one step at a time, to show the shapes on the way
    tokens, grid = encode(params, images, config)  # (1, 1, S, D)
    latents, maps = perceiver_resampler(resampler_params(params), tokens, config.resampler, return_attention=True)  # (1, R, D)
    logits = head(params, latents)  # (1, Q)
    log(f"image:   {source}, {image.shape[0]} x {image.shape[1]} pixels")
    log(f"patches: {grid[0]} x {grid[1]} = {tokens.shape[2]} tokens of width {tokens.shape[3]}, shape {tokens.shape} (B, T, S, D)")
    log(f"latents: {latents.shape} (B, R, D): R = {config.num_latents} tokens whatever the image size")
    answers = [question for question, yes in zip(QUESTIONS, logits[0] > 0) if yes]
    log(f"answers: {', '.join(answers) if answers else 'no coloured shape in any quadrant'}")

    weights = maps[-1][0].mean(axis=0)  # last layer, batch item 0, mean over heads: (R, S + R)
    figure = _figure(image, weights, grid, answers, source)
    out = Path(out)
    figure.savefig(out, dpi=110, bbox_inches="tight")
    log(f"figure:  {out}")
    return out


def _figure(image, weights, grid, answers, source):
    """The image and its answers on the left; each latent's attention (R, S + R) on the right."""
    import matplotlib.pyplot as plt

    from . import viz

    cols = 8
    rows = -(-len(weights) // cols)
    figure = plt.figure(figsize=(2.0 * cols + 4.5, 2.0 * rows + 0.6), layout="constrained")
    left, right = figure.subfigures(1, 2, width_ratios=(4.5, 2.0 * cols))
    ax = left.subplots()
    ax.imshow(image)
    ax.set_title(source, fontsize=9)
    ax.set_xlabel("the model answers: " + ("\n".join(answers) if answers else "nothing"), fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])
    for latent, panel in enumerate(right.subplots(rows, cols).flat):
        viz.attention_map(weights[latent], grid, image, ax=panel, title=f"latent {latent}")
    right.suptitle(f"What each of the {len(weights)} latents attends to (last layer, mean over heads)")
    return figure
