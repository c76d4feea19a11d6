"""refimpl.viz draws what it is given where it belongs: the weights of frame f on the (h, w)
grid, row-major; one panel per latent; layers x heads; and names a bad argument."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from refimpl import viz  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def drawn(ax):
    """The last image drawn on ax (the attention map, over the photo if any)."""
    return np.asarray(ax.get_images()[-1].get_array())


def test_attention_map_puts_frame_f_on_the_grid_row_major():
    h, w, frames, latents = 3, 5, 2, 4
    weights = np.arange(frames * h * w + latents, dtype=float)
    for frame in range(frames):
        ax = viz.attention_map(weights, (h, w), frame=frame)
        np.testing.assert_array_equal(drawn(ax), weights[frame * h * w : (frame + 1) * h * w].reshape(h, w))


def test_attention_map_reports_the_weight_that_went_elsewhere():
    weights = np.zeros(2 * 2 + 3)
    weights[:4], weights[4:] = 0.15, 0.4 / 3  # 60% on the frame, 40% on the latents
    assert "40% elsewhere" in viz.attention_map(weights, (2, 2)).get_title()
    assert "elsewhere" not in viz.attention_map(np.full(4, 0.25), (2, 2)).get_title()


def test_attention_map_can_report_elsewhere_on_every_map_that_has_one():
    on_the_frame = np.r_[np.full(4, 0.25), np.zeros(3)]  # all on the frame, 3 latents with weight 0
    assert "0% elsewhere" in viz.attention_map(on_the_frame, (2, 2), min_elsewhere=0.0).get_title()
    assert "elsewhere" not in viz.attention_map(on_the_frame, (2, 2)).get_title()
    assert "elsewhere" not in viz.attention_map(np.full(4, 0.25), (2, 2), min_elsewhere=0.0).get_title()  # no latents


def test_attention_map_shares_a_colour_scale_when_given_vmax():
    ax = viz.attention_map(np.full(4, 0.25), (2, 2), vmax=0.8)
    assert ax.get_images()[-1].get_clim() == (0.0, 0.8)


def test_attention_map_draws_the_image_under_the_map():
    image = np.random.default_rng(0).random((40, 60, 3))
    ax = viz.attention_map(np.full(6, 1 / 6), (2, 3), image)
    assert len(ax.get_images()) == 2
    np.testing.assert_array_equal(np.asarray(ax.get_images()[0].get_array()), image)


def test_latent_maps_has_one_panel_per_latent_in_order():
    weights = np.random.default_rng(1).random((5, 12 + 5))
    fig = viz.latent_maps(weights, (3, 4), cols=3)
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == 5
    for latent, ax in enumerate(panels):
        np.testing.assert_array_equal(drawn(ax), weights[latent, :12].reshape(3, 4))
        assert ax.get_title().startswith(f"latent {latent}")


def test_layers_by_heads_is_a_layers_x_heads_grid_of_one_latent():
    rng = np.random.default_rng(2)
    maps = [rng.random((3, 4, 6 + 4)) for _ in range(2)]  # 2 layers, H = 3, R = 4, grid 2 x 3
    fig = viz.layers_by_heads(maps, (2, 3), latent=1)
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == 2 * 3
    for index, ax in enumerate(panels):
        layer, head = divmod(index, 3)
        np.testing.assert_array_equal(drawn(ax), maps[layer][head, 1, :6].reshape(2, 3))


def test_matrix_draws_the_array():
    weights = np.random.default_rng(3).random((4, 7))
    np.testing.assert_array_equal(drawn(viz.matrix(weights)), weights)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: viz.attention_map(np.ones(5), (2, 3)),
            ValueError,
            r"weights must be one attention row with at least .* 6",
        ),
        (lambda: viz.attention_map(np.ones(6), (2, 3, 1)), ValueError, r"grid must be \(h, w\)"),
        (lambda: viz.attention_map(np.ones(6), (0, 6)), ValueError, r"grid must be >= 1"),
        (
            lambda: viz.attention_map(np.ones(6, dtype=int), (2, 3)),
            TypeError,
            r"weights must be a real floating-point array",
        ),
        (lambda: viz.matrix(np.ones(3)), ValueError, r"weights must be 2-D"),
        (lambda: viz.latent_maps(np.ones(6), (2, 3)), ValueError, r"weights must be \(R, N \[\+ R\]\)"),
        (
            lambda: viz.layers_by_heads([np.ones((2, 6))], (2, 3), 0),
            ValueError,
            r"maps must be a non-empty list of \(H, R, N \[\+ R\]\)",
        ),
    ],
)
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()
