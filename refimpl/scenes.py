"""refimpl.scenes: synthetic images and clips, made in NumPy, for training a tiny resampler.

A scene is a noisy background with a few flat shapes (squares, discs, triangles). Each
coloured shape lies wholly inside one quadrant of the image, so every question has one
answer; grey shapes are distractors that no question asks about. The task needs to know
what is where:

    QUESTIONS[q] = "<colour> <quadrant>"    is there a <colour> shape in that quadrant?

16 yes/no questions (4 colours x 4 quadrants), answered by `Scenes.labels`. Images come in
any size (height and width multiples of the patch size, not necessarily square), so the
number of patches varies while the resampler's output does not.

A clip is T frames on one background, each frame showing one coloured shape (sometimes
none); its questions need the order of the frames:

    CLIP_QUESTIONS[q] = "<colour> <half>"   does a <colour> shape appear in that half of the clip?

A search scene (notebook 8) asks what a fixed grid of cells cannot line up with: shapes of
many sizes, small ones among grey distractors, anywhere in an image of any size and aspect
ratio, their radius given in pixels whatever the image's size:

    SEARCH_QUESTIONS[q] = "<colour> present"        is there a <colour> shape at all?
                          "<colour> twice or more"  are there two or more <colour> shapes?
                          "<a> left of <b>"         is the centre of some <a> shape left of the
                          "<a> above <b>"           centre of some <b> shape (above: higher up)?

12 yes/no questions, answered by `SearchScenes.labels`.

Everything is seeded: the same seed gives the same scenes, bit for bit.
"""

from dataclasses import dataclass

import numpy as np

from ._checks import positive_int

COLOURS = {  # name -> RGB in [0, 1]
    "red": (0.90, 0.15, 0.15),
    "green": (0.15, 0.75, 0.20),
    "blue": (0.20, 0.35, 0.95),
    "yellow": (0.95, 0.85, 0.10),
}
DISTRACTOR = (0.62, 0.62, 0.62)  # grey: drawn, never asked about
SHAPES = ("square", "disc", "triangle")
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
HALVES = ("early", "late")
QUESTIONS = tuple(f"{colour} {quadrant}" for colour in COLOURS for quadrant in QUADRANTS)
CLIP_QUESTIONS = tuple(f"{colour} {half}" for colour in COLOURS for half in HALVES)
RELATIONS = (
    ("red", "left of", "blue"),
    ("green", "left of", "yellow"),
    ("red", "above", "yellow"),
    ("blue", "above", "green"),
)
SEARCH_QUESTIONS = (
    *(f"{colour} present" for colour in COLOURS),
    *(f"{colour} twice or more" for colour in COLOURS),
    *(" ".join(relation) for relation in RELATIONS),
)

BACKGROUND = -1  # in Scenes.segmentation: no shape here
GREY = len(COLOURS)  # in Scenes.segmentation: a distractor


@dataclass(frozen=True)
class Scenes:
    """A batch of B scenes of one size (height, width).

    images: (B, height, width, 3) float32 in [0, 1].
    labels: (B, 16) bool, the answers to QUESTIONS.
    segmentation: (B, height, width) int8, what each pixel shows: BACKGROUND (-1), the index
        of a colour in COLOURS (0..3) or GREY (4).
    """

    images: np.ndarray
    labels: np.ndarray
    segmentation: np.ndarray


@dataclass(frozen=True)
class Clips:
    """A batch of B clips of T frames.

    frames: (B, T, height, width, 3) float32 in [0, 1].
    labels: (B, 8) bool, the answers to CLIP_QUESTIONS (frame t is "early" if t < T / 2).
    segmentation: (B, T, height, width) int8, as in Scenes.
    """

    frames: np.ndarray
    labels: np.ndarray
    segmentation: np.ndarray


def make_scenes(n, height, width, *, seed, shapes=(2, 5), distractors=(0, 2)):
    """n scenes of height x width pixels.

    shapes: (fewest, most) coloured shapes per scene, inclusive; distractors likewise for
    grey ones. Colours, kinds, sizes and places are drawn at random; a shape's radius is 8%
    to 14% of the shorter side, and shapes do not overlap. seed: an int, or a
    np.random.Generator to draw from (so a stream of batches can share one).
    """
    n, height, width = (positive_int(name, value) for name, value in (("n", n), ("height", height), ("width", width)))
    _check_range("shapes", shapes)
    _check_range("distractors", distractors)
    if min(height, width) < 16:
        raise ValueError(f"height and width must be at least 16 pixels; got {height} x {width}")
    rng = np.random.default_rng(seed)
    images = _backgrounds(rng, n, height, width)  # (B, height, width, 3)
    segmentation = np.full((n, height, width), BACKGROUND, np.int8)
    labels = np.zeros((n, len(QUESTIONS)), bool)
    for b in range(n):
        kinds = [*rng.integers(0, len(COLOURS), rng.integers(shapes[0], shapes[1] + 1))]
        kinds += [GREY] * int(rng.integers(distractors[0], distractors[1] + 1))
        placed = []  # (cy, cx, radius) of the shapes drawn so far
        for kind in kinds:
            spot = _place_shape(rng, placed, height, width)
            if spot is None:  # a crowded image: leave this shape out rather than overlap another
                continue
            quadrant, window, mask = spot
            images[b][window][mask] = COLOURS[list(COLOURS)[kind]] if kind != GREY else DISTRACTOR
            segmentation[b][window][mask] = kind
            if kind != GREY:
                labels[b, kind * len(QUADRANTS) + quadrant] = True
    return Scenes(images, labels, segmentation)


@dataclass(frozen=True)
class SearchScenes:
    """A batch of B search scenes of one size (height, width).

    images: (B, height, width, 3) float32 in [0, 1].
    labels: (B, 12) bool, the answers to SEARCH_QUESTIONS.
    segmentation: (B, height, width) int8, as in Scenes.
    instances: (B, height, width) int16, which shape each pixel belongs to: BACKGROUND (-1),
        or the shape's index in its scene (0, 1, ...), so that shapes of one colour can be counted.
    """

    images: np.ndarray
    labels: np.ndarray
    segmentation: np.ndarray
    instances: np.ndarray


def make_search_scenes(n, height, width, *, seed, per_colour=(0.4, 0.35, 0.25), distractors=(1, 4), radius=(2.5, 9.0)):
    """n search scenes of height x width pixels (any sizes of at least 16).

    per_colour: the probabilities of 0, 1, 2, ... shapes of each colour in a scene.
    distractors: (fewest, most) grey shapes per scene, inclusive.
    radius: (smallest, largest) radius of a shape in pixels, drawn uniformly, whatever the
    image's size (capped at a quarter of the shorter side); a shape of radius 2.5 covers
    about 20 pixels, a third of one 8 x 8 patch. Shapes go anywhere in the image, apart from
    each other; one that finds no room is left out, and the answers count only what is drawn.
    seed: an int, or a np.random.Generator to draw from.
    """
    n, height, width = (positive_int(name, value) for name, value in (("n", n), ("height", height), ("width", width)))
    probabilities = np.asarray(per_colour, dtype=float)
    if (
        probabilities.ndim != 1
        or len(probabilities) < 1
        or (probabilities < 0).any()
        or not np.isclose(probabilities.sum(), 1)
    ):
        raise ValueError(
            f"per_colour must be the probabilities of 0, 1, 2, ... shapes, summing to 1; got {per_colour!r}"
        )
    _check_range("distractors", distractors)
    if len(radius) != 2 or not 1 <= radius[0] <= radius[1]:
        raise ValueError(f"radius must be (smallest, largest) in pixels with 1 <= smallest <= largest; got {radius!r}")
    if min(height, width) < 16:
        raise ValueError(f"height and width must be at least 16 pixels; got {height} x {width}")
    rng = np.random.default_rng(seed)
    images = _backgrounds(rng, n, height, width)  # (B, height, width, 3)
    segmentation = np.full((n, height, width), BACKGROUND, np.int8)
    instances = np.full((n, height, width), BACKGROUND, np.int16)
    labels = np.zeros((n, len(SEARCH_QUESTIONS)), bool)
    largest = min(radius[1], min(height, width) / 4)
    smallest = min(radius[0], largest)
    for b in range(n):
        kinds = [c for c in range(len(COLOURS)) for _ in range(rng.choice(len(probabilities), p=probabilities))]
        kinds += [GREY] * int(rng.integers(distractors[0], distractors[1] + 1))
        kinds = [kinds[i] for i in rng.permutation(len(kinds))]  # colours and greys compete for room alike
        placed, centres = [], {c: [] for c in range(len(COLOURS))}  # colour -> [(cy, cx)] of its drawn shapes
        for kind in kinds:
            spot = _place_anywhere(rng, placed, height, width, rng.uniform(smallest, largest))
            if spot is None:
                continue
            window, mask = spot
            images[b][window][mask] = COLOURS[list(COLOURS)[kind]] if kind != GREY else DISTRACTOR
            segmentation[b][window][mask] = kind
            instances[b][window][mask] = len(placed) - 1
            if kind != GREY:
                rows, cols = np.nonzero(mask)
                centres[kind].append((window[0].start + rows.mean() + 0.5, window[1].start + cols.mean() + 0.5))
        labels[b] = _search_answers(centres)
    return SearchScenes(images, labels, segmentation, instances)


def _search_answers(centres):
    """The answers to SEARCH_QUESTIONS from colour -> [(cy, cx)], the centres of its shapes."""
    present = [len(centres[c]) >= 1 for c in range(len(COLOURS))]
    twice = [len(centres[c]) >= 2 for c in range(len(COLOURS))]
    names = list(COLOURS)
    relations = []
    for a, how, b in RELATIONS:
        axis = 1 if how == "left of" else 0  # left of: a smaller column; above: a smaller row
        first, second = centres[names.index(a)], centres[names.index(b)]
        relations.append(any(p[axis] < q[axis] for p in first for q in second))
    return present + twice + relations


def make_clips(n, frames, height, width, *, seed, empty=0.25):
    """n clips of `frames` frames, height x width pixels each.

    Every frame shows one coloured shape anywhere in the image, or, with probability `empty`,
    nothing but the clip's background.
    """
    n, frames = positive_int("n", n), positive_int("frames", frames)
    if frames < 2:
        raise ValueError(f"frames must be at least 2, so that a clip has an early and a late half; got {frames}")
    if not 0 <= empty < 1:
        raise ValueError(f"empty must be a probability in [0, 1); got {empty!r}")
    rng = np.random.default_rng(seed)
    scenes = make_scenes(n, height, width, seed=rng, shapes=(0, 0), distractors=(0, 0))  # the backgrounds
    clip = np.repeat(scenes.images[:, None], frames, axis=1)  # (B, T, height, width, 3)
    segmentation = np.full((n, frames, height, width), BACKGROUND, np.int8)
    labels = np.zeros((n, len(CLIP_QUESTIONS)), bool)
    for b in range(n):
        for t in range(frames):
            if rng.random() < empty:
                continue
            kind = int(rng.integers(0, len(COLOURS)))
            _, window, mask = _place_shape(rng, [], height, width)
            clip[b, t][window][mask] = COLOURS[list(COLOURS)[kind]]
            segmentation[b, t][window][mask] = kind
            labels[b, kind * len(HALVES) + int(t >= frames / 2)] = True
    return Clips(clip, labels, segmentation)


def random_size(rng, *, low=32, high=128, multiple=8):
    """A (height, width) drawn uniformly from the multiples of `multiple` in [low, high]."""
    sides = np.arange(low, high + 1, multiple)
    return int(rng.choice(sides)), int(rng.choice(sides))


def _check_range(name, bounds):
    if len(bounds) != 2 or not 0 <= bounds[0] <= bounds[1] or any(int(v) != v for v in bounds):
        raise ValueError(f"{name} must be (fewest, most) with 0 <= fewest <= most, whole numbers; got {bounds!r}")


def _backgrounds(rng, n, height, width):
    """Dark, low-contrast backgrounds: a random tint, a gentle gradient and pixel noise."""
    tint = rng.uniform(0.05, 0.35, (n, 1, 1, 3)).astype(np.float32)
    ramp = np.linspace(-1, 1, width, dtype=np.float32)[None, None, :, None] * rng.uniform(
        -0.08, 0.08, (n, 1, 1, 3)
    ).astype(np.float32)
    noise = rng.standard_normal((n, height, width, 3), dtype=np.float32) * np.float32(0.04)
    return np.clip(tint + ramp + noise, 0, 1)


def _place_shape(rng, placed, height, width):
    """A shape wholly inside one quadrant, apart from the shapes in `placed` (a list of
    (cy, cx, radius), which it joins): (quadrant index, window, mask), the shape's pixels
    being image[window][mask] (window: a pair of slices, mask: bool over the window), or
    None if 100 tries found no room."""
    for _ in range(100):
        radius = rng.uniform(0.08, 0.14) * min(height, width)
        quadrant = int(rng.integers(0, len(QUADRANTS)))
        top, left = (quadrant // 2) * height / 2, (quadrant % 2) * width / 2
        cy = rng.uniform(top + radius, top + height / 2 - radius)
        cx = rng.uniform(left + radius, left + width / 2 - radius)
        if all(np.hypot(cy - py, cx - px) > radius + pr + 1 for py, px, pr in placed):
            placed.append((cy, cx, radius))
            window = (slice(int(cy - radius), int(cy + radius) + 1), slice(int(cx - radius), int(cx + radius) + 1))
            y, x = np.mgrid[window] + 0.5  # the centres of the pixels in the window
            return quadrant, window, _shape_mask(SHAPES[rng.integers(0, len(SHAPES))], y - cy, x - cx, radius)
    return None


def _place_anywhere(rng, placed, height, width, radius):
    """A shape of `radius` anywhere inside the image, apart from the shapes in `placed` (a list
    of (cy, cx, radius), which it joins): (window, mask) as in _place_shape, or None if 100
    tries found no room."""
    for _ in range(100):
        cy, cx = rng.uniform(radius, height - radius), rng.uniform(radius, width - radius)
        if all(np.hypot(cy - py, cx - px) > radius + pr + 1 for py, px, pr in placed):
            placed.append((cy, cx, radius))
            window = (
                slice(int(cy - radius), min(height, int(cy + radius) + 1)),
                slice(int(cx - radius), min(width, int(cx + radius) + 1)),
            )
            y, x = np.mgrid[window] + 0.5  # the centres of the pixels in the window
            return window, _shape_mask(SHAPES[rng.integers(0, len(SHAPES))], y - cy, x - cx, radius)
    return None


def _shape_mask(kind, dy, dx, radius):
    """The pixels of a shape centred at dy = dx = 0, reaching `radius` from its centre."""
    if kind == "square":
        return (np.abs(dy) <= radius * 0.8) & (np.abs(dx) <= radius * 0.8)
    if kind == "disc":
        return dy**2 + dx**2 <= radius**2
    # an upward triangle: apex at the top, base at the bottom, inside the circle
    return (dy <= radius * 0.7) & (np.abs(dx) <= (dy + radius) * 0.55)
