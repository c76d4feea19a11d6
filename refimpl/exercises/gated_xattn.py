"""Exercises of notebook 9 (how the language model reads the visual tokens: Flamingo's
GATED XATTN-DENSE), with worked solutions.

    media_mask(is_image, num_images, R)          which visual tokens each text token may see
    attn_gate_gradient(upstream, attended, alpha) the gradients through y = hidden + tanh(alpha) * attended

Each `check_<name>(fn)` runs `fn` on seeded inputs and compares it with refimpl:
`media_mask` with the rule written out token by token, and through
`refimpl.gated_xattn_dense` (a text token's output with the student's mask must be the block
run on that token and its own image alone); `attn_gate_gradient` with torch's autograd through
`refimpl.torch.GatedXAttnDense` in float64.

Axis letters: L text tokens, Dt text width, I images, R visual tokens per image,
Nv = I * R visual tokens, Dv their width.
"""

import numpy as np
import torch

from ..gated_xattn import gated_xattn_dense, init_gated_xattn_dense
from ..tolerances import TOLERANCES
from . import agree, call, check

# the same float64 math in another order (a token alone vs in its sequence): rounding only,
# about 1e-16; a 10% mistake is 1e11 times larger
BOUND = TOLERANCES[("float64", "same math in another order")]
# float64 gradients vs torch's autograd: the same products and sums in another order
GRAD_BOUND = TOLERANCES[("float64", "gradient vs torch autograd")]


# ---------------------------------------------------------------- worked solutions


def media_mask(is_image, num_images, R):
    """Which visual tokens each text token may see (Flamingo's per-image masking).

    is_image: (..., L) bool, True where the text holds an <image> marker; image i of a
        sequence is the one at its (i+1)-th marker.
    The visual tokens are num_images images of R tokens each, concatenated: visual token n
    belongs to image n // R. Text token l may see exactly the tokens of the last image at or
    before l (the marker itself sees its own image); text before the first marker sees none.
    returns mask (..., L, num_images * R) bool, True = may attend.
    """
    image_of_text = np.cumsum(is_image, axis=-1) - 1  # (..., L): the last marker at or before l; -1 before the first
    image_of_visual = np.arange(num_images * R) // R  # (Nv,): 0 0 .. 0 1 1 .. 1 2 ...
    return image_of_text[..., :, None] == image_of_visual  # (..., L, Nv); -1 matches nothing


def attn_gate_gradient(upstream, attended, alpha):
    """Backward through the gated attention residual y = hidden + tanh(alpha) * attended.

    upstream: (..., L, Dt) dLoss/dy;  attended: (..., L, Dt) the attention branch's output;
    alpha: the gate, a number.
    returns (dLoss/dalpha, a float; dLoss/dattended, (..., L, Dt)):

        dL/dalpha    = (1 - tanh(alpha)^2) * sum(upstream * attended)
        dL/dattended = tanh(alpha) * upstream

    At alpha = 0 the gate gets the whole signal and the branch gets exactly nothing.
    """
    gate = np.tanh(alpha)
    d_alpha = (1.0 - gate**2) * np.sum(upstream * attended)  # d tanh(a) / da = 1 - tanh(a)^2; y is linear in tanh(a)
    d_attended = gate * upstream  # (..., L, Dt): the branch is scaled by the gate
    return float(d_alpha), d_attended


# ---------------------------------------------------------------- checks


def check_media_mask(fn):
    return check("media_mask", fn, media_mask, _test_media_mask)


def check_attn_gate_gradient(fn):
    return check("attn_gate_gradient", fn, attn_gate_gradient, _test_attn_gate_gradient)


def _mask_by_the_rule(is_image, num_images, R):
    """The rule, token by token: the mask (..., L, num_images * R) media_mask must return."""
    is_image = np.asarray(is_image, dtype=bool)
    mask = np.zeros((*is_image.shape, num_images * R), dtype=bool)
    for index in np.ndindex(is_image.shape[:-1]):
        last = -1  # no image seen yet
        for l, marker in enumerate(is_image[index]):
            last += bool(marker)
            if last >= 0:
                mask[index + (l, slice(last * R, (last + 1) * R))] = True
    return mask


def _markers(length, positions, batch=()):
    is_image = np.zeros((*batch, length), dtype=bool)
    is_image[..., positions] = True
    return is_image


def _test_media_mask(fn):
    rows = np.zeros((3, 12), dtype=bool)  # (B, L): three sequences, images at their own places
    rows[0, [1, 6]] = True  # two images, text before the first
    rows[1, [0, 4, 9]] = True  # three images, the first at the very start
    rows[2, [3]] = True  # one image; its sequence leaves the 2nd and 3rd image slots unused
    cases = {  # what -> (is_image, num_images, R)
        "L = 9, images at 1 and 5, R = 4 (text before the first image sees nothing)": (_markers(9, [1, 5]), 2, 4),
        "batch of 3 sequences (3, 12), up to 3 images each, R = 5": (rows, 3, 5),
        "two images in a row at 2 and 3, L = 7, R = 3": (_markers(7, [2, 3]), 2, 3),
        "R = 1, images at 0, 2, 4, L = 6": (_markers(6, [0, 2, 4]), 3, 1),
    }
    hint = (
        "image_of_text = cumsum(is_image, axis=-1) - 1 is the image each text token belongs to (-1 before "
        "the first); visual token n belongs to image n // R; compare the two with broadcasting "
        "([..., :, None] against (Nv,)) and return a bool array of shape (..., L, num_images * R)"
    )
    rng = np.random.default_rng(9)
    errors = []
    for what, (is_image, num_images, R) in cases.items():
        actual = call(what, hint, fn, is_image, num_images, R)
        expected = _mask_by_the_rule(is_image, num_images, R)
        errors.append(agree(f"case '{what}'", actual, expected, 0.0, hint=hint))
        assert np.asarray(actual).dtype == bool, (
            f"case '{what}': the mask must be a bool array; got {np.asarray(actual).dtype}. {hint}"
        )
    # and through refimpl: with the mask, each text token's output is the block run on that
    # token with its own image alone (text before any image: the block without attention)
    is_image, num_images, R = cases["batch of 3 sequences (3, 12), up to 3 images each, R = 5"]
    dt, dv, heads = 10, 7, 2
    params = init_gated_xattn_dense(dt, dv, heads=heads, dim_head=3, ff_mult=2, gate=0.9, seed=9)
    blind = params | {"attn_gate": np.array(0.0)}  # no attention: what a token that sees no image gets
    hidden = rng.standard_normal((*is_image.shape, dt))  # (B, L, Dt)
    visual = rng.standard_normal((len(is_image), num_images * R, dv))  # (B, Nv, Dv)
    mask = np.asarray(call("through refimpl", hint, fn, is_image, num_images, R))
    out = gated_xattn_dense(params, hidden, visual, heads=heads, mask=mask)  # (B, L, Dt)
    image_of_text = np.cumsum(is_image, axis=-1) - 1
    for b, l in np.ndindex(is_image.shape):
        i = image_of_text[b, l]
        alone = (
            gated_xattn_dense(params, hidden[b, l : l + 1], visual[b, i * R : (i + 1) * R], heads=heads)
            if i >= 0
            else gated_xattn_dense(blind, hidden[b, l : l + 1], visual[b], heads=heads)
        )
        errors.append(
            agree(
                f"refimpl.gated_xattn_dense with your mask, sequence {b}, token {l}",
                out[b, l : l + 1],
                alone,
                BOUND,
                hint=hint,
            )
        )
    return (
        f"{len(cases)} masks exact; through refimpl.gated_xattn_dense, {is_image.size} tokens each as if alone "
        f"with its image, max error {max(errors):.0e} <= {BOUND:g}"
    )


def _block_gradients(alpha, upstream, hidden, visual, heads, seed):
    """Through refimpl.torch.GatedXAttnDense in float64, with the feed-forward gate at 0:
    (attended, dL/dalpha, dL/dattended) for L = sum(upstream * block(hidden, visual))."""
    from ..torch import GatedXAttnDense

    dt, dv = hidden.shape[-1], visual.shape[-1]
    params = init_gated_xattn_dense(dt, dv, heads=heads, dim_head=5, ff_mult=2, gate=alpha, seed=seed)
    params["ff_gate"] = np.array(0.0)  # the block is then hidden + tanh(alpha) * attended, exactly
    block = GatedXAttnDense.from_refimpl(params, heads=heads, dtype=torch.float64)
    kept = {}

    def keep(module, inputs, output):  # the attention branch's output, before the gate
        output[0].retain_grad()
        kept["attended"] = output[0]

    handle = block.attn.register_forward_hook(keep)
    out = block(torch.from_numpy(hidden), torch.from_numpy(visual))
    (out * torch.from_numpy(upstream)).sum().backward()
    handle.remove()
    attended = kept["attended"]  # (B, L, Dt): the module runs on the batch axes flattened
    return (
        attended.detach().numpy().reshape(hidden.shape),
        block.attn_gate.grad.item(),
        attended.grad.numpy().reshape(hidden.shape),
    )


def _test_attn_gate_gradient(fn):
    rng = np.random.default_rng(10)
    cases = {  # what -> (alpha, hidden (..., L, Dt), visual (..., Nv, Dv))
        "alpha = 0 (as Flamingo starts), L = 6, Dt = 12, Nv = 8": (0.0, (6, 12), (8, 9)),
        "alpha = 0.4, L = 5, Dt = 12": (0.4, (5, 12), (7, 9)),
        "alpha = -1.5 (a closed-ish gate of the other sign), batch (2, 4, 12)": (-1.5, (2, 4, 12), (2, 10, 9)),
        "alpha = 3 (nearly saturated: tanh'(3) = 0.0099)": (3.0, (7, 12), (5, 9)),
    }
    hint = (
        "y = hidden + tanh(alpha) * attended: dL/dalpha sums upstream * attended over every entry and "
        "multiplies by tanh'(alpha) = 1 - tanh(alpha)^2; dL/dattended is upstream scaled by tanh(alpha)"
    )
    errors = []
    for seed, (what, (alpha, hidden_shape, visual_shape)) in enumerate(cases.items()):
        hidden, visual = rng.standard_normal(hidden_shape), rng.standard_normal(visual_shape)
        upstream = rng.standard_normal(hidden_shape)  # dL/dy
        attended, d_alpha, d_attended = _block_gradients(alpha, upstream, hidden, visual, heads=3, seed=seed)
        actual = call(what, hint, fn, upstream, attended, alpha)
        assert isinstance(actual, tuple) and len(actual) == 2, (
            f"case '{what}': return a tuple (d_alpha, d_attended). {hint}"
        )
        errors.append(agree(f"case '{what}': dL/dalpha", actual[0], d_alpha, GRAD_BOUND, hint=hint))
        scale = np.abs(upstream).max()  # at alpha = 0 the expected gradient is exactly 0
        errors.append(agree(f"case '{what}': dL/dattended", actual[1], d_attended, GRAD_BOUND, hint=hint, scale=scale))
    return (
        f"{len(cases)} cases against autograd through refimpl.torch.GatedXAttnDense, "
        f"max error {max(errors):.0e} <= {GRAD_BOUND:g}"
    )
