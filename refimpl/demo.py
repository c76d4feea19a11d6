"""`python -m refimpl demo [--image PATH] [--out latents.png]`: the one-command look at the project.

Runs the trained tiny model that refimpl ships (refimpl.tiny.model.load_pretrained) in
NumPy on a generated scene, or on any image (resized so its longer side is 128 pixels and
both sides are multiples of the patch), prints the shapes on the way (patches in, R tokens
out, whatever the image size) and the model's answers, and writes a figure of what each
latent attends to in the last layer, averaged over heads: one colour scale for every
latent, and on each panel the share of its attention that went to the latents themselves.
The model knows only generated scenes (refimpl.scenes); on another image its answers are
still about coloured shapes in quadrants, and the demo says so.
"""

from pathlib import Path

import numpy as np

from .resampler import perceiver_resampler
from .scenes import QUESTIONS, make_scenes
from .tiny.model import encode, head, load_pretrained, resampler_params

LONGER_SIDE = 128  # pixels: the largest scenes the model was trained on
NOT_A_SCENE = (
    "the model was trained only on generated scenes (coloured shapes on a noisy background, refimpl.scenes): "
    "its answers are about which colour is in which quadrant, whatever this image shows"
)


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
        log(f"note:    {NOT_A_SCENE}")
    images = image[None]  # (1, height, width, 3)
    # refimpl.tiny.model.tiny_model, one step at a time, to show the shapes on the way
    tokens, grid = encode(params, images, config)  # (1, 1, S, D)
    latents, maps = perceiver_resampler(
        resampler_params(params), tokens, config.resampler, return_attention=True
    )  # (1, R, D)
    logits = head(params, latents)  # (1, Q)
    log(f"image:   {source}, {image.shape[0]} x {image.shape[1]} pixels")
    log(
        f"patches: {grid[0]} x {grid[1]} = {tokens.shape[2]} tokens of width {tokens.shape[3]}, shape {tokens.shape} "
        "(B, T, S, D)"
    )
    log(f"latents: {latents.shape} (B, R, D): R = {config.num_latents} tokens whatever the image size")
    answers = [question for question, yes in zip(QUESTIONS, logits[0] > 0) if yes]
    log(f"answers: {', '.join(answers) if answers else 'no coloured shape in any quadrant'}")

    weights = maps[-1][0].mean(axis=0)  # last layer, batch item 0, mean over heads: (R, S + R)
    figure = _figure(image, weights, grid, answers, source, image_path is None)
    out = Path(out)
    figure.savefig(out, dpi=110, bbox_inches="tight")
    log(f"figure:  {out}")
    return out


def _figure(image, weights, grid, answers, source, is_scene):
    """The image and its answers on the left; each latent's attention (R, S + R) on the right,
    on one colour scale, with the share each latent gave the latents ("elsewhere")."""
    import matplotlib.pyplot as plt

    from . import viz

    cols = 8
    rows = -(-len(weights) // cols)
    n_media = grid[0] * grid[1]
    figure = plt.figure(figsize=(2.0 * cols + 5.5, 2.0 * rows + 1.4), layout="constrained")
    left, right = figure.subfigures(1, 2, width_ratios=(4.5, 2.0 * cols + 1.0))
    ax = left.subplots()
    ax.imshow(image)
    ax.set_title(source if is_scene else f"{source}\n(not a generated scene)", fontsize=9)
    said = "the model answers: " + ("\n".join(answers) if answers else "nothing")
    if not is_scene:
        said += "\n(it knows only generated scenes: its answers\nare about coloured shapes in quadrants)"
    ax.set_xlabel(said, fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])
    top = float(weights[:, :n_media].max())  # one colour scale for every latent: 0 to the largest weight on a patch
    panels = right.subplots(rows, cols)
    for latent, panel in enumerate(panels.flat):
        viz.attention_map(weights[latent], grid, image, ax=panel, title=f"latent {latent}", vmax=top, min_elsewhere=0.0)
    right.colorbar(panels.flat[0].images[-1], ax=panels, fraction=0.02, label="attention weight on a patch")
    right.suptitle(f"What each of the {len(weights)} latents attends to (last layer, mean over heads)")
    right.supxlabel(
        "Each panel is one latent's attention over the image's patches. The latents are keys too (Flamingo's "
        "kv = concat([x_f, x])): 'N% elsewhere' is the share of its attention a latent gave them instead.",
        fontsize=9,
    )
    return figure
