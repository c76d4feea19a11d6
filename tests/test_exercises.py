"""Every exercise check of the course (refimpl.exercises.<notebook module>.check_<name>)
passes its worked solution, falls back to it for a stub, and rejects a wrong answer."""

import importlib
import numbers

import numpy as np
import pytest
import torch

MODULES = [  # notebooks 1-11
    "attention",
    "cross_attention",
    "online_softmax",
    "resampler",
    "torch_module",
    "training",
    "latents",
    "ablation",
    "gated_xattn",
    "gradients",
    "family",
]


def exercises():
    for module_name in MODULES:
        module = importlib.import_module(f"refimpl.exercises.{module_name}")
        for name in sorted(vars(module)):
            if name.startswith("check_"):
                yield pytest.param(module, name.removeprefix("check_"), id=f"{module_name}.{name}")


def wrong(value):
    """value visibly off: arrays and tensors by 10% of their size, numbers by one, tuples item by item."""
    if isinstance(value, tuple | list):
        return type(value)(wrong(item) for item in value)
    if isinstance(value, torch.Tensor):
        return value + 0.1 * max(value.abs().max().item(), 1.0)
    if isinstance(value, np.ndarray):
        return value + 0.1 * max(float(np.abs(value).max(initial=0.0)), 1.0)
    if isinstance(value, numbers.Number):
        return value + 1
    raise TypeError(f"an exercise should return arrays, tensors or numbers; got {type(value).__name__}")


@pytest.mark.parametrize("module_name", MODULES)
def test_every_notebook_has_at_least_two_exercises(module_name):
    module = importlib.import_module(f"refimpl.exercises.{module_name}")
    checks = [name for name in vars(module) if name.startswith("check_")]
    assert len(checks) >= 2, f"refimpl.exercises.{module_name} has {len(checks)} exercise(s)"
    for check in checks:
        assert callable(getattr(module, check.removeprefix("check_"), None)), f"{check} has no worked solution"


@pytest.mark.parametrize(("module", "name"), list(exercises()))
def test_check_passes_the_worked_solution(module, name, capsys):
    getattr(module, f"check_{name}")(getattr(module, name))
    assert "correct" in capsys.readouterr().out


@pytest.mark.parametrize(("module", "name"), list(exercises()))
def test_check_falls_back_to_the_solution_for_a_stub(module, name, capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError

    getattr(module, f"check_{name}")(stub)
    assert "not written yet" in capsys.readouterr().out


@pytest.mark.parametrize(("module", "name"), list(exercises()))
def test_check_rejects_a_wrong_answer(module, name):
    solution = getattr(module, name)

    def off(*args, **kwargs):
        return wrong(solution(*args, **kwargs))

    with pytest.raises(AssertionError):
        getattr(module, f"check_{name}")(off)


# ---------------------------------------------------------------- hints for likely mistakes
# Each likely mistake, written as a student might (from the worked solution, one thing wrong),
# with a phrase that only the hint naming that mistake contains.


def _masked_softmax_inverted(scores, mask):
    from refimpl.exercises import attention as ex

    return ex.masked_softmax(scores, ~mask)


def _attention_unscaled(q, k, v, mask=None):
    from refimpl.exercises import attention as ex

    return ex.attention(q * q.shape[-1] ** 0.5, k, v, mask)  # the scores q k^T, not divided by sqrt(Dh)


def _split_heads_by_reshape(x, heads):
    *batch, length, width = x.shape
    return x.reshape(*batch, heads, length, width // heads)


def _merge_heads_by_reshape(x):
    *batch, heads, length, head_dim = x.shape
    return x.reshape(*batch, length, heads * head_dim)


def _gqa(latents, media, wq, wk, wv, wo, heads, kv_heads, *, tile=False, scale=None):
    from refimpl import attention
    from refimpl.exercises import cross_attention as ex

    q = ex.split_heads(latents @ wq, heads)  # (..., H, R, Dh)
    k, v = ex.split_heads(media @ wk, kv_heads), ex.split_heads(media @ wv, kv_heads)  # (..., Hkv, N, Dh)
    group = heads // kv_heads
    if tile:
        reps = (1,) * (k.ndim - 3) + (group, 1, 1)
        k, v = np.tile(k, reps), np.tile(v, reps)
    else:
        k, v = np.repeat(k, group, axis=-3), np.repeat(v, group, axis=-3)
    return ex.merge_heads(attention(q, k, v, scale=scale)) @ wo


def _gqa_tiled(*args):
    return _gqa(*args, tile=True)


def _gqa_unscaled(*args):
    return _gqa(*args, scale=1.0)


def _merge_partials_not_rescaled(m1, l1, acc1, m2, l2, acc2):
    return np.maximum(m1, m2), l1 + l2, acc1 + acc2


def _online_softmax(q, k, v, block, *, scale=None, rescale=True):
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    rows = np.broadcast_shapes(q.shape[:-1], k.shape[:-2] + (1,))
    m, l, acc = np.full(rows, -np.inf), np.zeros(rows), np.zeros(rows + v.shape[-1:])
    for j0 in range(0, k.shape[-2], block):
        s = q @ np.swapaxes(k[..., j0 : j0 + block, :], -1, -2) * scale
        m_new = np.maximum(m, s.max(axis=-1))
        correction = np.exp(m - m_new) if rescale else np.ones_like(m)
        p = np.exp(s - m_new[..., None])
        l = correction * l + p.sum(axis=-1)
        acc = correction[..., None] * acc + p @ v[..., j0 : j0 + block, :]
        m = m_new
    return acc / l[..., None]


def _online_softmax_unscaled(q, k, v, block):
    return _online_softmax(q, k, v, block, scale=1.0)


def _online_softmax_not_rescaled(q, k, v, block):
    return _online_softmax(q, k, v, block, rescale=False)


def _patchify_by_reshape(image, patch):
    height, width, channels = image.shape
    return image.reshape((height // patch) * (width // patch), patch * patch * channels)


def _pad_and_mask_inverted(features):
    from refimpl.exercises import resampler as ex

    x, mask = ex.pad_and_mask(features)
    return x, ~mask


def _count_params_without_kv_heads(config):
    from refimpl.exercises import resampler as ex

    return (
        ex.count_params(config) + config.depth * 2 * config.dim * (config.heads - config.num_kv_heads) * config.dim_head
    )


def _count_params_norm_weights_only(config):
    from refimpl.exercises import resampler as ex

    return ex.count_params(config) - (3 * config.depth + 1) * config.dim


def _attention_torch_inverted(q, k, v, mask=None):
    from refimpl.exercises import torch_module as ex

    return ex.attention_torch(q, k, v, None if mask is None else ~mask)


def _attention_torch_unscaled(q, k, v, mask=None):
    from refimpl.exercises import torch_module as ex

    return ex.attention_torch(q * q.shape[-1] ** 0.5, k, v, mask)


def _feed_forward_tanh_gelu(x, norm_weight, norm_bias, w_in, w_out, eps=1e-5):
    import torch.nn.functional as F

    return F.gelu(F.layer_norm(x, x.shape[-1:], norm_weight, norm_bias, eps) @ w_in, approximate="tanh") @ w_out


def _feed_forward_without_norm(x, norm_weight, norm_bias, w_in, w_out, eps=1e-5):
    import torch.nn.functional as F

    return F.gelu(x @ w_in) @ w_out


def _sincos_2d_rows_first(dim, h, w):
    import refimpl

    table = refimpl.sincos_2d(dim, h, w)  # (h*w, dim): column half, then row half
    return np.concatenate([table[:, dim // 2 :], table[:, : dim // 2]], axis=-1)


def _cubic_weights_corners_aligned(size_in, size_out):
    """torch's bicubic with align_corners=True, as a matrix: the resize of each unit vector."""
    import torch.nn.functional as F

    unit = torch.eye(size_in, dtype=torch.float64).reshape(1, size_in, size_in, 1)  # channel c: unit vector c
    resized = F.interpolate(unit, size=(size_out, 1), mode="bicubic", align_corners=True)  # (1, size_in, size_out, 1)
    return resized[0, :, :, 0].T.numpy()  # (size_out, size_in)


HINTS = [  # (module, exercise, a likely mistake, a phrase only the hint for that mistake has)
    ("attention", "masked_softmax", _masked_softmax_inverted, "the mask is inverted: True means may attend"),
    ("attention", "attention", _attention_unscaled, "divide the scores by sqrt(Dh)"),
    ("cross_attention", "split_heads", _split_heads_by_reshape, "reshaping straight to (..., H, L, Dh)"),
    ("cross_attention", "merge_heads", _merge_heads_by_reshape, "reshaping (..., H, L, Dh) straight"),
    ("cross_attention", "grouped_query_cross_attention", _gqa_tiled, "np.tile gives head h"),
    ("cross_attention", "grouped_query_cross_attention", _gqa_unscaled, "divide the scores by sqrt(Dh)"),
    ("online_softmax", "merge_partials", _merge_partials_not_rescaled, "summed relative to their own maxes"),
    ("online_softmax", "online_softmax_attention", _online_softmax_unscaled, "divide the scores by sqrt(Dh)"),
    ("online_softmax", "online_softmax_attention", _online_softmax_not_rescaled, "multiply l and acc by c"),
    ("resampler", "patchify", _patchify_by_reshape, "a reshape alone keeps the pixels"),
    ("resampler", "pad_and_mask", _pad_and_mask_inverted, "the mask is inverted: True means may attend"),
    ("resampler", "count_params", _count_params_without_kv_heads, "Hkv * Dh columns"),
    ("resampler", "count_params", _count_params_norm_weights_only, "a weight and a bias of D"),
    ("torch_module", "attention_torch", _attention_torch_inverted, "the mask is inverted: True means may attend"),
    ("torch_module", "attention_torch", _attention_torch_unscaled, "divide the scores by sqrt(Dh)"),
    ("torch_module", "feed_forward_torch", _feed_forward_tanh_gelu, "not the tanh approximation"),
    ("torch_module", "feed_forward_torch", _feed_forward_without_norm, "the block is pre-norm"),
    ("family", "sincos_2d", _sincos_2d_rows_first, "the first half of the channels encodes the column"),
    ("family", "cubic_weights", _cubic_weights_corners_aligned, "align_corners=False"),
]


def _check_message(module_name, name, fn):
    """The AssertionError message of check_<name>(fn); fails if the check passes."""
    module = importlib.import_module(f"refimpl.exercises.{module_name}")
    with pytest.raises(AssertionError) as raised:
        getattr(module, f"check_{name}")(fn)
    return str(raised.value)


@pytest.mark.parametrize(
    ("module_name", "name", "mistake", "phrase"), HINTS, ids=[f"{m}.{n}.{f.__name__}" for m, n, f, _ in HINTS]
)
def test_check_names_the_likely_mistake(module_name, name, mistake, phrase):
    assert phrase in _check_message(module_name, name, mistake)


@pytest.mark.parametrize(
    ("module_name", "name", "mistake", "phrase"), HINTS, ids=[f"{m}.{n}.{f.__name__}" for m, n, f, _ in HINTS]
)
def test_check_does_not_name_a_mistake_that_was_not_made(module_name, name, mistake, phrase):
    """An answer off by 10% (any other bug) gets the general hint, not this mistake's."""
    solution = getattr(importlib.import_module(f"refimpl.exercises.{module_name}"), name)

    def off(*args, **kwargs):
        return wrong(solution(*args, **kwargs))

    assert phrase not in _check_message(module_name, name, off)


def test_grouped_query_hint_only_when_the_head_mapping_is_wrong():
    """A missing scale with the right head mapping must not be told to use np.repeat."""
    message = _check_message("cross_attention", "grouped_query_cross_attention", _gqa_unscaled)
    assert "np.tile" not in message and "np.repeat" not in message


def test_a_students_exception_is_reported_with_its_case():
    def broken(*args, **kwargs):
        raise IndexError("index 7 is out of bounds")

    for module_name in (m for m in MODULES if m != "ablation"):  # notebook 8's checks are being rewritten with it
        module = importlib.import_module(f"refimpl.exercises.{module_name}")
        for name in (n.removeprefix("check_") for n in vars(module) if n.startswith("check_")):
            message = _check_message(module_name, name, broken)
            assert message.startswith("case '") and "raised IndexError: index 7 is out of bounds" in message, (
                module_name,
                name,
                message,
            )
