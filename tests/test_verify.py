"""`python -m refimpl verify CHECKPOINT --peer NAME` on real checkpoint files made here (never
downloaded): tiny random Idefics2 and IDEFICS models written with save_pretrained (a Hugging
Face folder: config.json beside model.safetensors, or its shards), an open_flamingo-style
whole-model state dict saved with torch.save around the real open-flamingo 2.0.1
PerceiverResampler, and a flamingo-pytorch resampler in a .safetensors file. Exit status:
0 within the bounds, 1 not (a bug planted in the peer's installed module), 2 bad input,
with a one-line message on stderr.

The CLI runs in-process (refimpl.__main__.main) except once, as `python -m refimpl verify`.
"""

import importlib.metadata
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from flamingo_pytorch import PerceiverResampler as FlamingoPytorchResampler
from helpers import open_flamingo_model_state_dict, randomise
from safetensors.torch import load_file, save_file
from transformers import Idefics2Config, Idefics2ForConditionalGeneration, IdeficsConfig, IdeficsForVisionText2Text

from refimpl.__main__ import main
from refimpl.interop import idefics, idefics2
from refimpl.interop.open_flamingo import installed_helpers

ROOT = Path(__file__).resolve().parent.parent
IDEFICS2_PREFIX = "model.connector.perceiver_resampler."


def verify(capsys, *args):
    """(exit status, stdout, stderr) of `python -m refimpl verify *args`, run in-process."""
    status = main(["verify", *map(str, args)])
    out, err = capsys.readouterr()
    return status, out, err


def assert_bad_input(status, err, expected):
    """Exit status 2 and one line on stderr, no traceback, that says `expected`."""
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("python -m refimpl verify: error: "), err
    assert expected in err, err


# ---------------------------------------------------------------- the checkpoints, tiny


def idefics2_config(**perceiver):
    """Idefics2: a 1-layer SigLIP (D 16), a 1-layer Mistral (hidden 20), and the resampler:
    D = 20, depth 2, H = 4, Dh = 3, Hkv = 2, R = 5."""
    return Idefics2Config(
        vision_config=dict(
            hidden_size=16,
            intermediate_size=24,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
        ),
        perceiver_config=dict(
            resampler_n_latents=5, resampler_depth=2, resampler_n_heads=4, resampler_head_dim=3, num_key_value_heads=2
        )
        | perceiver,
        text_config=dict(
            hidden_size=20,
            intermediate_size=24,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            vocab_size=50,
            rms_norm_eps=3e-6,
        ),
    )


@pytest.fixture(scope="module")
def idefics2_folder(tmp_path_factory):
    torch.manual_seed(0)
    model = Idefics2ForConditionalGeneration(idefics2_config(hidden_size=20, rms_norm_eps=2e-5))
    randomise(model.model.connector.perceiver_resampler, seed=1)  # its latents and norms start as ones
    folder = tmp_path_factory.mktemp("idefics2")
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def idefics_folder(tmp_path_factory):
    """IDEFICS with its resampler (use_resampler) and q/k layer norms: D = 12, depth 2, H = 3, Dh = 5, R = 5."""
    config = IdeficsConfig(
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=1,
        num_attention_heads=2,
        vocab_size=50,
        additional_vocab_size=2,
        cross_layer_interval=1,
        use_resampler=True,
        vision_config=dict(
            embed_dim=12, image_size=28, patch_size=14, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16
        ),
        perceiver_config=dict(
            resampler_n_latents=5,
            resampler_depth=2,
            resampler_n_heads=3,
            resampler_head_dim=5,
            qk_layer_norms_perceiver=True,
        ),
    )
    torch.manual_seed(0)
    model = IdeficsForVisionText2Text(config)
    randomise(model.model.perceiver_resampler, seed=2)
    folder = tmp_path_factory.mktemp("idefics")
    model.save_pretrained(folder, max_shard_size="20KB")  # sharded: model.safetensors.index.json
    return folder


@pytest.fixture(scope="module")
def open_flamingo_file(tmp_path_factory):
    """open_flamingo's whole model (vision encoder, language model with a gated cross-attention
    layer, the resampler under "perceiver."; H = 3), saved with torch.save."""
    path = tmp_path_factory.mktemp("open_flamingo") / "checkpoint.pt"
    torch.save(open_flamingo_model_state_dict()[0], path)
    return path


@pytest.fixture(scope="module")
def flamingo_pytorch_file(tmp_path_factory):
    """flamingo-pytorch's resampler alone, H = 3, in a .safetensors file."""
    torch.manual_seed(0)
    module = randomise(
        FlamingoPytorchResampler(dim=12, depth=2, dim_head=5, heads=3, num_latents=7, num_media_embeds=3), seed=3
    )
    path = tmp_path_factory.mktemp("flamingo_pytorch") / "resampler.safetensors"
    save_file(module.state_dict(), path)
    return path


# ---------------------------------------------------------------- within the bounds: exit 0


def test_an_idefics2_model_folder_passes(capsys, idefics2_folder):
    status, out, err = verify(capsys, idefics2_folder, "--peer", "idefics2")
    assert (status, err) == (0, "")
    assert f"resampler: found under the prefix '{IDEFICS2_PREFIX}'" in out
    assert "settings: heads 4 (config.json), eps 2e-05 (config.json)" in out
    assert "kv_heads=2" in out and "verify: OK" in out


def test_an_idefics_model_folder_with_shards_passes(capsys, idefics_folder):
    assert (idefics_folder / "model.safetensors.index.json").exists()
    status, out, err = verify(capsys, idefics_folder, "--peer", "idefics")
    assert (status, err) == (0, "")
    assert "found under the prefix 'model.perceiver_resampler.'" in out and "qk_norm=True" in out
    assert "settings: heads 3 (config.json), eps 1e-05 (idefics's default)" in out and "verify: OK" in out


def test_an_open_flamingo_whole_model_pt_file_passes(capsys, open_flamingo_file):
    status, out, err = verify(capsys, open_flamingo_file, "--peer", "open_flamingo", "--heads", "3")
    assert (status, err) == (0, "")
    assert "resampler: found under the prefix 'perceiver.'" in out and "settings: heads 3 (--heads)" in out
    assert "verify: OK, refimpl reproduces open_flamingo's module within the bounds in float64 and float32" in out


def test_prefix_overrides_the_search(capsys, open_flamingo_file):
    status, out, _ = verify(
        capsys, open_flamingo_file, "--peer", "open_flamingo", "--heads", "3", "--prefix", "perceiver."
    )
    assert status == 0 and "the keys under the prefix 'perceiver.' (--prefix)" in out


def test_the_entry_point_runs_as_a_command(flamingo_pytorch_file):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "refimpl",
            "verify",
            str(flamingo_pytorch_file),
            "--peer",
            "flamingo_pytorch",
            "--heads",
            "3",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "resampler: found under the prefix ''" in result.stdout and "verify: OK" in result.stdout


# ---------------------------------------------------------------- what the tensors cannot tell


def test_idefics2_eps_is_read_as_the_model_reads_it(capsys, idefics2_folder, tmp_path):
    # a config.json as on the Hub: perceiver_config without hidden_size or rms_norm_eps, so
    # Idefics2Config gives the perceiver the text model's (hidden_size 20, rms_norm_eps 3e-6)
    folder = Path(shutil.copytree(idefics2_folder, tmp_path / "hub"))
    hf_config = json.loads((folder / "config.json").read_text())
    del hf_config["perceiver_config"]["hidden_size"], hf_config["perceiver_config"]["rms_norm_eps"]
    (folder / "config.json").write_text(json.dumps(hf_config))
    assert Idefics2Config.from_pretrained(folder).perceiver_config.rms_norm_eps == 3e-6
    status, out, _ = verify(capsys, folder, "--peer", "idefics2")
    assert status == 0 and "eps 3e-06 (config.json)" in out


@pytest.mark.parametrize(
    "perceiver, text",
    [
        (
            dict(hidden_size=20, rms_norm_eps=2e-5),
            dict(hidden_size=20, rms_norm_eps=3e-6),
        ),  # as save_pretrained writes it
        ({}, dict(hidden_size=20, rms_norm_eps=3e-6)),  # the Hub's: the text model's replaces the perceiver's
        (dict(hidden_size=4096, rms_norm_eps=2e-5, resampler_n_heads=8), None),  # no text_config at all
        (dict(rms_norm_eps=2e-5), dict(hidden_size=4096, rms_norm_eps=3e-6)),  # sizes agree: the perceiver's own
    ],
)
def test_idefics2_settings_from_config_json_agree_with_transformers(perceiver, text):
    hf_config = {"perceiver_config": perceiver} | ({} if text is None else {"text_config": text})
    resolved = Idefics2Config(**json.loads(json.dumps(hf_config))).perceiver_config
    settings = idefics2.settings_from_hf_config(hf_config)
    assert settings == dict(heads=resolved.resampler_n_heads, eps=resolved.rms_norm_eps)


def test_idefics_heads_from_config_json_agree_with_transformers():
    for perceiver in ({}, {"resampler_n_heads": 3}):
        resolved = IdeficsConfig(perceiver_config=dict(perceiver)).perceiver_config
        assert idefics.settings_from_hf_config({"perceiver_config": perceiver}) == dict(
            heads=resolved.resampler_n_heads
        )


def test_idefics2_with_another_activation_is_refused(capsys, idefics2_folder, tmp_path):
    folder = Path(shutil.copytree(idefics2_folder, tmp_path / "gelu"))
    hf_config = json.loads((folder / "config.json").read_text())
    hf_config["perceiver_config"]["hidden_act"] = "gelu"
    (folder / "config.json").write_text(json.dumps(hf_config))
    status, _, err = verify(capsys, folder, "--peer", "idefics2")
    assert_bad_input(status, err, "perceiver_config.hidden_act is 'gelu'")


def test_a_missing_head_count_names_its_flag(capsys, open_flamingo_file):
    status, _, err = verify(capsys, open_flamingo_file, "--peer", "open_flamingo")
    assert_bad_input(
        status, err, "the tensors cannot tell open_flamingo's heads and there is no config.json: pass --heads"
    )


def test_idefics2_without_config_json_asks_for_eps(capsys, idefics2_folder, tmp_path):
    # Idefics2's eps is the perceiver's or the text model's: no default is safe
    whole = load_file(idefics2_folder / "model.safetensors")
    path = tmp_path / "resampler.safetensors"
    save_file(
        {key[len(IDEFICS2_PREFIX) :]: value for key, value in whole.items() if key.startswith(IDEFICS2_PREFIX)}, path
    )
    status, _, err = verify(capsys, path, "--peer", "idefics2", "--heads", "4")
    assert_bad_input(status, err, "the tensors cannot tell idefics2's eps and there is no config.json: pass --eps")
    status, out, _ = verify(capsys, path, "--peer", "idefics2", "--heads", "4", "--eps", "2e-5")
    assert status == 0 and "found under the prefix ''" in out and "verify: OK" in out


# ---------------------------------------------------------------- not within the bounds: exit 1


def test_a_bug_planted_in_the_peers_installed_module_fails_naming_the_block(capsys, open_flamingo_file, monkeypatch):
    # open_flamingo's attention computes its scores with helpers.einsum("... i d, ... j d -> ... i j", q, k):
    # scaled by 1.1, as a wrong softmax scale would
    helpers = installed_helpers()
    einsum = helpers.einsum
    monkeypatch.setattr(
        helpers, "einsum", lambda equation, *ops: einsum(equation, *ops) * (1.1 if equation.endswith("i j") else 1.0)
    )
    status, out, err = verify(capsys, open_flamingo_file, "--peer", "open_flamingo", "--heads", "3")
    assert (status, err) == (1, "")
    assert "verify: FAILED in float64: the first block over the bound is attention, layer 0" in out
    assert "verify: FAILED in float32: the first block over the bound is attention, layer 0" in out


# ---------------------------------------------------------------- without the peer's package: the shape check


def test_without_the_peers_package_it_prints_the_config_and_the_shape_check(capsys, open_flamingo_file, monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    installed_helpers.cache_clear()
    try:
        status, out, err = verify(capsys, open_flamingo_file, "--peer", "open_flamingo", "--heads", "3")
    finally:
        installed_helpers.cache_clear()
    assert (status, err) == (0, "")
    assert "config: ResamplerConfig(dim=12, depth=2, heads=3, dim_head=5, num_latents=7" in out
    # latents 7*12, per layer 4 LayerNorms 4*2*12, to_q 15*12, to_kv 30*12, to_out 12*15, ff 6*12 + 12*6; norm 2*12
    assert "parameters: 1,980 in 27 arrays" in out  # refimpl's: to_kv is wk and wv
    assert "shape check: all 25 tensors have the shapes this config gives" in out
    assert "open_flamingo is not installed" in out and "verify: OK" not in out


# ---------------------------------------------------------------- bad input: exit 2, one line


def test_a_tensor_of_the_wrong_shape_is_named(capsys, tmp_path):
    state_dict = open_flamingo_model_state_dict()[0]
    state_dict["perceiver.layers.1.0.to_kv.weight"] = torch.zeros(30, 11)
    torch.save(state_dict, tmp_path / "bad.pt")
    status, _, err = verify(capsys, tmp_path / "bad.pt", "--peer", "open_flamingo", "--heads", "3")
    assert_bad_input(status, err, "mis-shaped: layers.1.0.to_kv.weight: expected (30, 12), got (30, 11)")
    assert "(keys read after the prefix 'perceiver.')" in err


def test_a_missing_file_is_named(capsys, tmp_path):
    status, _, err = verify(capsys, tmp_path / "nowhere.safetensors", "--peer", "idefics2")
    assert_bad_input(status, err, "nowhere.safetensors: no such file or folder")


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("list.pt", [torch.zeros(2)], "not a state dict (a mapping of names to tensors); it holds a list"),
        (
            "training.pt",
            {"model": {"latents": torch.zeros(2)}, "epoch": 3},
            "its 'model' is a dict (a training checkpoint?",
        ),
        ("module.pt", torch.nn.Linear(2, 2), "not a state dict that torch.load(weights_only=True) reads"),
    ],
)
def test_a_file_that_is_not_a_state_dict_is_refused(capsys, tmp_path, name, content, expected):
    torch.save(content, tmp_path / name)
    status, _, err = verify(capsys, tmp_path / name, "--peer", "open_flamingo", "--heads", "3")
    assert_bad_input(status, err, expected)


def test_a_file_that_is_not_safetensors_is_refused(capsys, tmp_path):
    (tmp_path / "notes.safetensors").write_text("not tensors")
    status, _, err = verify(capsys, tmp_path / "notes.safetensors", "--peer", "idefics2")
    assert_bad_input(status, err, "notes.safetensors: not a safetensors file")


def test_no_resampler_found_is_said(capsys, tmp_path):
    torch.save({"encoder.weight": torch.zeros(3, 3), "lm_head.weight": torch.zeros(5, 3)}, tmp_path / "other.pt")
    status, _, err = verify(capsys, tmp_path / "other.pt", "--peer", "open_flamingo", "--heads", "3")
    assert_bad_input(status, err, "no open_flamingo resampler found among its 2 keys; pass --prefix")


def test_another_peers_checkpoint_names_the_peer(capsys, idefics2_folder):
    status, _, err = verify(capsys, idefics2_folder, "--peer", "open_flamingo", "--heads", "4")
    assert_bad_input(
        status,
        err,
        f"this looks like an idefics2 checkpoint, with its resampler under the prefix '{IDEFICS2_PREFIX}': try "
        "--peer idefics2",
    )


def test_a_prefix_that_matches_no_key_is_said(capsys, open_flamingo_file):
    status, _, err = verify(
        capsys, open_flamingo_file, "--peer", "open_flamingo", "--heads", "3", "--prefix", "resampler."
    )
    assert_bad_input(status, err, "no key starts with --prefix 'resampler.'")
