"""Checkpoint files: the keys and tensors of a state dict on disk, for `python -m refimpl verify`.

| what CHECKPOINT is                       | how it is read                                          |
|------------------------------------------|---------------------------------------------------------|
| FILE.safetensors                         | the safetensors package, one tensor at a time            |
| FILE.bin, FILE.pt, FILE.pth              | torch.load(weights_only=True): a mapping of name->tensor |
| a Hugging Face model folder              | its config.json, and model.safetensors, the shards named |
|                                          | in model.safetensors.index.json, or pytorch_model.bin(s) |

A checkpoint is opened once (`open_checkpoint`) and gives its keys without reading the
tensors, so a whole model's resampler is found first and only its tensors are read. Every
problem is a `CheckpointError` with a one-line message naming the path.
"""

import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SAFETENSORS = (".safetensors",)
TORCH = (".bin", ".pt", ".pth")
# a Hugging Face folder's weights, in the order transformers prefers them
FOLDER_WEIGHTS = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read as a state dict; the message is one line."""


@dataclass
class Checkpoint:
    """keys: every tensor's name, in the file's order; tensors(keys) -> {key: tensor} reads
    those; hf_config: the folder's config.json (a dict), or None; path: what was opened."""

    path: Path
    keys: list
    tensors: Callable
    hf_config: dict | None


def open_checkpoint(path):
    """The Checkpoint at `path` (a file or a Hugging Face model folder); CheckpointError
    where it is missing, of an unknown kind, or not a state dict."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_dir():
        return _open_folder(path)
    return _open_file(path, hf_config=None)


def _open_folder(folder):
    config_path = folder / "config.json"
    try:
        hf_config = json.loads(config_path.read_text()) if config_path.exists() else None
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{config_path}: not a readable JSON file ({error})") from None
    if hf_config is not None and not isinstance(hf_config, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object; got a {type(hf_config).__name__}")
    weights = next((folder / name for name in FOLDER_WEIGHTS if (folder / name).exists()), None)
    if weights is None:
        raise CheckpointError(f"{folder}: a model folder must hold one of {', '.join(FOLDER_WEIGHTS)}; found none")
    if weights.name.endswith(".index.json"):
        return _open_shards(weights, hf_config)
    return _open_file(weights, hf_config)


def _open_shards(index_path, hf_config):
    """The checkpoint whose tensors are spread over the files an index's weight_map names."""
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{index_path}: not an index with a weight_map ({error!r})") from None
    shards = {name: _open_file(index_path.parent / name, hf_config) for name in dict.fromkeys(weight_map.values())}

    def tensors(keys):
        by_shard = {}
        for key in keys:
            by_shard.setdefault(weight_map[key], []).append(key)
        return {key: value for name, names in by_shard.items() for key, value in shards[name].tensors(names).items()}

    return Checkpoint(index_path.parent, list(weight_map), tensors, hf_config)


def _open_file(path, hf_config):
    if path.suffix in SAFETENSORS:
        return _open_safetensors(path, hf_config)
    if path.suffix in TORCH:
        return _open_torch(path, hf_config)
    raise CheckpointError(
        f"{path}: expected a {', '.join(SAFETENSORS + TORCH)} file or a Hugging Face model folder; "
        f"got a file ending in {path.suffix or 'no suffix'!r}"
    )


def _open_safetensors(path, hf_config):
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError:
        raise CheckpointError(
            f"{path}: reading .safetensors needs the safetensors package (pip install safetensors)"
        ) from None
    # NumPy has no bfloat16: torch, where it is installed, reads every dtype
    framework = "pt" if importlib.util.find_spec("torch") is not None else "np"
    try:
        with safe_open(path, framework=framework) as file:
            keys = list(file.keys())
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: not a safetensors file ({error})") from None

    def tensors(names):
        with safe_open(path, framework=framework) as file:
            return {name: file.get_tensor(name) for name in names}

    return Checkpoint(path, keys, tensors, hf_config)


def _open_torch(path, hf_config):
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{path}: reading a torch {path.suffix} file needs torch (pip install torch)") from None
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # an unpickling error, a zip error, a text file: all say "not a state dict"
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path}: not a state dict that torch.load(weights_only=True) reads ({first_line})"
        ) from None
    _check_state_dict(path, state_dict, torch)
    return Checkpoint(path, list(state_dict), lambda names: {name: state_dict[name] for name in names}, hf_config)


def _check_state_dict(path, state_dict, torch):
    """CheckpointError unless `state_dict` maps str names to tensors, saying what it holds instead."""
    if not hasattr(state_dict, "items"):
        raise CheckpointError(
            f"{path}: not a state dict (a mapping of names to tensors); it holds a {type(state_dict).__name__}"
        )
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{path}: not a state dict (a mapping of names to tensors): its {key!r} is a {type(value).__name__}"
                + (" (a training checkpoint? save model.state_dict() alone)" if hasattr(value, "items") else "")
            )
