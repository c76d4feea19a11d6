"""refimpl.scenes: seeded, the answers are what the pixels show, bad arguments are named."""

import numpy as np
import pytest
from helpers import seeds
from hypothesis import given
from hypothesis import strategies as st

from refimpl.scenes import (
    BACKGROUND,
    CLIP_QUESTIONS,
    COLOURS,
    DISTRACTOR,
    GREY,
    QUADRANTS,
    QUESTIONS,
    SEARCH_QUESTIONS,
    make_clips,
    make_scenes,
    make_search_scenes,
    random_size,
)


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
        np.testing.assert_allclose(
            scenes.images[scenes.segmentation == index],
            np.broadcast_to(np.float32(rgb), (int((scenes.segmentation == index).sum()), 3)),
        )
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


# ---------------------------------------------------------------- search scenes (notebook 8)


def search_answers(segmentation, instances):
    """(B, 12) answers to SEARCH_QUESTIONS read off the pixels alone: each shape (an instance)
    has the colour its pixels show and its centre at the mean of its pixel centres."""
    answers = np.zeros((len(segmentation), len(SEARCH_QUESTIONS)), bool)
    names = list(COLOURS)
    for b in range(len(segmentation)):
        centres = {c: [] for c in range(len(COLOURS))}
        for shape in np.unique(instances[b][instances[b] >= 0]):
            rows, cols = np.nonzero(instances[b] == shape)
            colours = np.unique(segmentation[b][rows, cols])
            assert len(colours) == 1, f"shape {shape} shows colours {colours}"
            if colours[0] != GREY:
                centres[int(colours[0])].append((rows.mean() + 0.5, cols.mean() + 0.5))
        for q, question in enumerate(SEARCH_QUESTIONS):
            words = question.split()
            if words[-1] == "present":
                answers[b, q] = len(centres[names.index(words[0])]) >= 1
            elif words[-1] == "more":  # "<colour> twice or more"
                answers[b, q] = len(centres[names.index(words[0])]) >= 2
            else:  # "<a> left of <b>" or "<a> above <b>"
                axis = 1 if words[1] == "left" else 0
                first, second = centres[names.index(words[0])], centres[names.index(words[-1])]
                answers[b, q] = any(p[axis] < s[axis] for p in first for s in second)
    return answers


def test_search_questions_are_presence_counts_and_relations():
    assert len(SEARCH_QUESTIONS) == len(set(SEARCH_QUESTIONS)) == 12
    assert SEARCH_QUESTIONS[0] == "red present" and SEARCH_QUESTIONS[4] == "red twice or more"
    assert SEARCH_QUESTIONS[8] == "red left of blue" and SEARCH_QUESTIONS[-1] == "blue above green"


@given(seed=seeds, height=st.integers(16, 96), width=st.integers(16, 96))
def test_every_search_answer_is_what_the_pixels_show(seed, height, width):
    scenes = make_search_scenes(3, height, width, seed=seed)
    assert scenes.images.shape == (3, height, width, 3) and scenes.images.dtype == np.float32
    assert scenes.labels.shape == (3, 12) and scenes.instances.shape == scenes.segmentation.shape == (3, height, width)
    assert 0 <= scenes.images.min() and scenes.images.max() <= 1
    np.testing.assert_array_equal(scenes.instances >= 0, scenes.segmentation != BACKGROUND)
    np.testing.assert_array_equal(scenes.labels, search_answers(scenes.segmentation, scenes.instances))


def test_search_pixels_show_the_colour_the_segmentation_names():
    scenes = make_search_scenes(8, 56, 72, seed=3)
    for index, rgb in enumerate([*COLOURS.values(), DISTRACTOR]):
        shown = scenes.images[scenes.segmentation == index]
        assert len(shown), f"no pixel of colour {index} in 8 scenes"
        np.testing.assert_array_equal(shown, np.broadcast_to(np.float32(rgb), shown.shape))


def test_search_shapes_are_anywhere_not_in_quadrants():
    scenes = make_search_scenes(40, 64, 64, seed=0)
    crossing = 0  # shapes with pixels on both sides of a midline, which make_scenes never draws
    for instances in scenes.instances:
        for shape in np.unique(instances[instances >= 0]):
            rows, cols = np.nonzero(instances == shape)
            crossing += (rows.min() < 32 <= rows.max()) or (cols.min() < 32 <= cols.max())
    assert crossing >= 5


def test_search_shape_sizes_are_in_pixels_whatever_the_image_size():
    def areas(height, width):
        scenes = make_search_scenes(30, height, width, seed=1, radius=(2.5, 6.0))
        return np.array([(i == s).sum() for i in scenes.instances for s in np.unique(i[i >= 0])])

    small, large = areas(48, 48), areas(160, 128)
    for found in (small, large):
        assert (
            found.min() >= 1 and found.max() <= np.pi * 7.0**2
        )  # pixels whose centres lie within radius 6, give or take a pixel
        assert (found < 64).mean() > 0.5, "most shapes cover less than one 8 x 8 patch"
    assert 0.7 < np.median(large) / np.median(small) < 1.4


def test_search_scenes_have_small_shapes_among_distractors():
    scenes = make_search_scenes(20, 64, 96, seed=2)
    assert ((scenes.segmentation == GREY).any(axis=(1, 2))).all(), "every scene has a grey distractor"
    assert (scenes.labels[:, :4].mean(axis=0) > 0.3).all() and (scenes.labels[:, :4].mean(axis=0) < 0.9).all()


def test_the_same_seed_gives_the_same_search_scenes_and_another_seed_others():
    a, b, c = (make_search_scenes(3, 40, 56, seed=s) for s in (7, 7, 8))
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.instances, b.instances)
    assert not np.array_equal(a.images, c.images)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: make_search_scenes(2, 40, 12, seed=0), "at least 16 pixels"),
        (lambda: make_search_scenes(0, 32, 32, seed=0), "n must be"),
        (lambda: make_search_scenes(2, 32, 32, seed=0, per_colour=(0.5, 0.4)), "per_colour must be"),
        (lambda: make_search_scenes(2, 32, 32, seed=0, distractors=(3, 1)), "distractors must be"),
        (lambda: make_search_scenes(2, 32, 32, seed=0, radius=(5, 2)), "radius must be"),
    ],
)
def test_bad_search_arguments_are_named(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()
