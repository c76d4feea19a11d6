"""refimpl.scenes: seeded, the answers are what the pixels show, bad arguments are named."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refimpl.scenes import BACKGROUND, CLIP_QUESTIONS, COLOURS, GREY, QUADRANTS, QUESTIONS, make_clips, make_scenes, random_size

from helpers import seeds


def quadrant_answers(segmentation):
    """(B, 16) answers read off the pixels alone: colour c has a pixel in quadrant q."""
    b, height, width = segmentation.shape
    answers = np.zeros((b, len(QUESTIONS)), bool)
    for q in range(len(QUADRANTS)):
        rows = slice(0, height // 2) if q < 2 else slice(height - height // 2, height)
        cols = slice(0, width // 2) if q % 2 == 0 else slice(width - width // 2, width)
        for c in range(len(COLOURS)):
            answers[:, c * len(QUADRANTS) + q] = (segmentation[:, rows, cols] == c).any(axis=(1, 2))
    return answers


def test_questions_are_every_colour_in_every_quadrant():
    assert len(QUESTIONS) == len(set(QUESTIONS)) == 16
    assert QUESTIONS[0] == "red top left" and QUESTIONS[-1] == "yellow bottom right"


@given(seed=seeds, height=st.integers(16, 80), width=st.integers(16, 80))
def test_every_answer_is_what_the_pixels_show(seed, height, width):
    scenes = make_scenes(3, height, width, seed=seed)
    assert scenes.images.shape == (3, height, width, 3) and scenes.images.dtype == np.float32
    assert scenes.labels.shape == (3, 16) and scenes.segmentation.shape == (3, height, width)
    assert 0 <= scenes.images.min() and scenes.images.max() <= 1
    np.testing.assert_array_equal(scenes.labels, quadrant_answers(scenes.segmentation))


@given(seed=seeds, height=st.integers(16, 64), width=st.integers(16, 64))
def test_a_lone_shape_lies_wholly_in_one_quadrant(seed, height, width):
    scenes = make_scenes(4, height, width, seed=seed, shapes=(1, 1), distractors=(0, 0))
    for segmentation in scenes.segmentation:
        rows, cols = np.nonzero(segmentation != BACKGROUND)
        assert len(rows) > 0
        top, left = rows < height / 2, cols < width / 2
        assert top.all() or not top.any(), "a shape crosses the horizontal midline"
        assert left.all() or not left.any(), "a shape crosses the vertical midline"


def test_pixels_show_the_colour_the_segmentation_names():
    scenes = make_scenes(8, 48, 40, seed=3)
    for index, rgb in enumerate(COLOURS.values()):
        np.testing.assert_allclose(scenes.images[scenes.segmentation == index], np.broadcast_to(np.float32(rgb), (int((scenes.segmentation == index).sum()), 3)))
    assert (scenes.segmentation == GREY).any(), "some distractors are drawn"


def test_the_number_of_shapes_is_within_the_asked_range():
    scenes = make_scenes(50, 128, 128, seed=0, shapes=(2, 3), distractors=(0, 0))
    per_scene = scenes.labels.sum(axis=1)  # distinct (colour, quadrant) pairs <= shapes
    assert per_scene.min() >= 1 and per_scene.max() <= 3
    assert not (scenes.segmentation == GREY).any()


def test_the_same_seed_gives_the_same_scenes_and_another_seed_others():
    a, b, c = make_scenes(2, 40, 56, seed=7), make_scenes(2, 40, 56, seed=7), make_scenes(2, 40, 56, seed=8)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, c.images)


@given(seed=seeds, frames=st.integers(2, 7))
def test_clip_answers_are_what_each_half_of_the_clip_shows(seed, frames):
    clips = make_clips(3, frames, 32, 40, seed=seed)
    assert clips.frames.shape == (3, frames, 32, 40, 3) and clips.labels.shape == (3, len(CLIP_QUESTIONS))
    late = np.arange(frames) >= frames / 2
    for c in range(len(COLOURS)):
        shown = (clips.segmentation == c).any(axis=(2, 3))  # (B, T)
        np.testing.assert_array_equal(clips.labels[:, 2 * c], shown[:, ~late].any(axis=1))
        np.testing.assert_array_equal(clips.labels[:, 2 * c + 1], shown[:, late].any(axis=1))
    assert ((clips.segmentation >= 0).any(axis=(2, 3)).sum(axis=1) <= frames).all()


def test_a_clip_keeps_its_background_from_frame_to_frame():
    clips = make_clips(4, 5, 32, 32, seed=1)
    background = (clips.segmentation == BACKGROUND).all(axis=1)  # (B, H, W): no shape in any frame
    for t in range(1, 5):
        np.testing.assert_array_equal(clips.frames[:, t][background], clips.frames[:, 0][background])


def test_random_size_draws_multiples_of_8_in_range():
    rng = np.random.default_rng(0)
    sizes = np.array([random_size(rng) for _ in range(200)])
    assert sizes.min() == 32 and sizes.max() == 128 and (sizes % 8 == 0).all()
    assert (sizes[:, 0] != sizes[:, 1]).any(), "not only square sizes"


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: make_scenes(2, 12, 40, seed=0), "at least 16 pixels"),
        (lambda: make_scenes(0, 32, 32, seed=0), "n must be"),
        (lambda: make_scenes(2, 32, 32, seed=0, shapes=(3, 2)), "shapes must be"),
        (lambda: make_scenes(2, 32, 32, seed=0, distractors=(-1, 2)), "distractors must be"),
        (lambda: make_clips(2, 1, 32, 32, seed=0), "frames must be at least 2"),
        (lambda: make_clips(2, 4, 32, 32, seed=0, empty=1.0), "empty must be"),
    ],
)
def test_bad_arguments_are_named(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()
