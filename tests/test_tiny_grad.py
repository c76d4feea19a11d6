"""refimpl.tiny.grad: the tiny model's training loss and gradients, for images and clips,
against torch's autograd through refimpl.tiny.torch.TinyModel in float64 and against
central finite differences; the loss's own gradient; bad arguments."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import GRADIENT_VS_TORCH, assert_close, assert_gradients_close, assert_matches_finite_differences

import refimpl.torch as rt
from refimpl.tiny.grad import binary_cross_entropy_with_logits, tiny_value_and_grad
from refimpl.tiny.model import TinyConfig, init_tiny_model, tiny_model
from refimpl.tiny.torch import TinyModel

# small, with every width different (P + 4*frequencies = 64, D = 8, H*Dh = 10, R = 3, Q = 5)
CONFIG = TinyConfig(dim=8, depth=2, heads=2, dim_head=5, num_latents=3, patch=4, outputs=5, frequencies=4)
CLIP_CONFIG = TinyConfig(dim=8, depth=1, heads=2, dim_head=5, num_latents=3, patch=4, outputs=5, frames=2)


def case(config, seed):
    """Random parameters (nothing left at its initial 1 or 0, so no gradient hides behind it),
    images (2, [T = 2,] 8, 12, 3) and 0/1 labels (2, Q)."""
    rng = np.random.default_rng(seed)
    params = {
        name: value + 0.3 * rng.standard_normal(value.shape) for name, value in init_tiny_model(config, seed).items()
    }
    shape = (2, 8, 12, 3) if config.frames is None else (2, config.frames, 8, 12, 3)
    images = rng.random(shape)
    labels = rng.random((2, config.outputs)) < 0.4
    return params, images, labels


def torch_value_and_grad(config, params, images, labels):
    """(loss, grads) by torch's autograd through TinyModel in float64, in refimpl.tiny's names and layouts."""
    model = TinyModel.from_refimpl(config, params, dtype=torch.float64)
    loss = F.binary_cross_entropy_with_logits(
        model(torch.as_tensor(images)), torch.as_tensor(labels, dtype=torch.float64)
    )
    loss.backward()
    grads = {name: torch.zeros_like(p) if p.grad is None else p.grad for name, p in model.named_parameters()}
    return loss.item(), rt.from_state_dict(grads)


@pytest.mark.parametrize("config", [CONFIG, CLIP_CONFIG], ids=["images", "clips"])
@pytest.mark.parametrize("seed", [0, 1])
def test_gradients_match_torch_autograd(config, seed):
    params, images, labels = case(config, seed)
    loss, grads = tiny_value_and_grad(params, images, labels, config)
    their_loss, theirs = torch_value_and_grad(config, params, images, labels)
    assert_close(loss, their_loss, GRADIENT_VS_TORCH, what="loss")
    assert grads.keys() == params.keys() and all(grads[name].shape == params[name].shape for name in params)
    assert_gradients_close(grads, {name: theirs[name] for name in grads})


@pytest.mark.parametrize("config", [CONFIG, CLIP_CONFIG], ids=["images", "clips"])
def test_gradients_match_finite_differences(config):
    params, images, labels = case(config, 2)
    _, grads = tiny_value_and_grad(params, images, labels, config)

    def loss(changed):
        return binary_cross_entropy_with_logits(tiny_model(changed, images, config), labels)[0]

    assert_matches_finite_differences(loss, params, grads, 1.0, seed=2)


def test_loss_is_that_of_the_forward_pass():
    params, images, labels = case(CONFIG, 3)
    loss, _ = tiny_value_and_grad(params, images, labels, CONFIG)
    expected, _ = binary_cross_entropy_with_logits(tiny_model(params, images, CONFIG), labels)
    assert loss == pytest.approx(expected, rel=1e-14)


def test_binary_cross_entropy_matches_torch_for_large_logits():
    rng = np.random.default_rng(4)
    logits = 40 * rng.standard_normal((3, 7))  # far beyond where sigmoid rounds to 0 or 1
    labels = rng.random((3, 7)) < 0.5
    loss, dlogits = binary_cross_entropy_with_logits(logits, labels)
    z = torch.tensor(logits, requires_grad=True)
    expected = F.binary_cross_entropy_with_logits(z, torch.as_tensor(labels, dtype=torch.float64))
    expected.backward()
    assert np.isfinite(loss) and loss == pytest.approx(expected.item(), rel=1e-14)
    assert_close(dlogits, z.grad.numpy(), GRADIENT_VS_TORCH, what="dlogits")


@pytest.mark.parametrize(
    ("labels", "error", "message"),
    [
        (np.zeros((2, 4), dtype=bool), ValueError, r"labels must have shape \(B, Q\).*= \(2, 5\); got \(2, 4\)"),
        (np.full((2, 5), 0.5), ValueError, "labels must all be 0 or 1"),
        (np.full((2, 5), "yes"), TypeError, "labels must be a boolean or numeric array"),
    ],
    ids=["wrong shape", "not 0/1", "strings"],
)
def test_bad_labels_are_named(labels, error, message):
    params, images, _ = case(CONFIG, 5)
    with pytest.raises(error, match=message):
        tiny_value_and_grad(params, images, labels, CONFIG)


def test_images_without_the_frame_axis_are_rejected_for_a_clip_model():
    params, images, labels = case(CLIP_CONFIG, 6)
    with pytest.raises(ValueError, match=r"images must have shape \(B, T, height, width, 3\)"):
        tiny_value_and_grad(params, images[:, 0], labels, CLIP_CONFIG)
