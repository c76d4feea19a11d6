"""`python -m refimpl demo`: the README's one-command look, run as a user runs it."""

import subprocess
import sys

import numpy as np
from PIL import Image


def run_demo(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "refimpl", "demo", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_demo_on_a_generated_scene_prints_the_shapes_and_writes_the_figure(tmp_path):
    result = run_demo("--out", "latents.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "latents: (1, 16, 64) (B, R, D)" in result.stdout
    assert "patches: 12 x 16 = 192 tokens" in result.stdout
    with Image.open(tmp_path / "latents.png") as figure:
        assert figure.format == "PNG" and figure.width > 800


def test_demo_writes_latents_png_when_no_out_is_given(tmp_path):
    result = run_demo(cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "latents.png").stat().st_size > 10_000
    assert "not a generated scene" not in result.stdout and "trained only on generated scenes" not in result.stdout


def test_demo_says_the_model_knows_only_generated_scenes_when_given_another_image(tmp_path):
    Image.fromarray(np.full((64, 64, 3), 200, dtype=np.uint8)).save(tmp_path / "grey.png")
    result = run_demo("--image", "grey.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "trained only on generated scenes" in result.stdout


def test_demo_takes_an_image_of_any_size_and_still_gives_r_tokens(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (300, 517, 3), dtype=np.uint8)).save(tmp_path / "wide.jpg")
    result = run_demo("--image", "wide.jpg", "--out", "wide.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "72 x 128 pixels" in result.stdout  # longer side 128, both sides multiples of 8
    assert "latents: (1, 16, 64)" in result.stdout
    assert (tmp_path / "wide.png").stat().st_size > 10_000


def test_demo_names_an_unreadable_image(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    result = run_demo("--image", "notes.txt", "--out", "x.png", cwd=tmp_path)
    assert result.returncode == 2
    assert "--image must be an image file" in result.stderr and "notes.txt" in result.stderr
    assert not (tmp_path / "x.png").exists()
