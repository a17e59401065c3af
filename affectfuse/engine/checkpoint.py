"""Checkpoints: one `torch.save` dict (name, config, input spec, training config, weights, metrics, and a sha256 of
all of it), written atomically and loaded with `weights_only=True` so a checkpoint can never run code; a checkpoint
whose bytes changed since it was written is refused as corrupted.

Model folders, in the Hugging Face habit: `save_pretrained(model, DIR)` writes `config.json` (model name, its config,
the input spec it was built for, metrics) and `model.safetensors` (the weights: tensors and nothing else, so loading
never runs code, and other tools read them directly); `from_pretrained(DIR)` rebuilds the model. Local folders only:
nothing is downloaded. `load_model` takes either form."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..config import InputSpec
from ..config.registry import config_from_dict, config_to_dict, get_entry
from ..io import atomic_write, ensure_folder, readable_file, write_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PRETRAINED_FORMAT = "affectfuse-pretrained"
FORMAT_VERSION = 2
"""2: with a sha256 of the content (version 1, without it, still loads)."""
READABLE_VERSIONS = (1, 2)
REQUIRED_KEYS = ("format_version", "model_name", "config", "spec", "state_dict")


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, corrupted or not an affectfuse checkpoint; the message names the file."""


def save_checkpoint(path: Path | str, model: Any, *, train: Any = None, metrics: dict[str, Any] | None = None) -> Path:
    """Write `model` (with its training config `train` and `metrics`, if given) to the checkpoint file `path`,
    atomically; returns the path. `load_model(path)` rebuilds it."""
    payload = {
        "format_version": FORMAT_VERSION,
        "affectfuse_version": __version__,
        "model_name": model.model_name,
        "config": config_to_dict(model.config),
        "spec": model.spec.to_dict(),
        "train": dataclasses.asdict(train) if train is not None else None,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": metrics or {},
    }
    payload["sha256"] = content_digest(payload)
    return atomic_write(path, lambda f: torch.save(payload, f))


def content_digest(payload: dict[str, Any]) -> str:
    """sha256 of a checkpoint's metadata (as JSON) and of every weight's name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    meta = {k: v for k, v in payload.items() if k not in ("state_dict", "sha256")}
    digest.update(json.dumps(meta, sort_keys=True, default=str).encode())
    for name in sorted(payload["state_dict"]):
        tensor = payload["state_dict"][name]
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_checkpoint(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, expected a .pt file (e.g. {path}/best.pt) or a folder "
                              f"written by save_pretrained (holding {CONFIG_NAME} and {WEIGHTS_NAME})")
    readable_file(path, "checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # zip/pickle errors differ by corruption kind; all mean the same to a user
        raise CheckpointError(
            f"checkpoint {path} is corrupted or not a PyTorch checkpoint ({type(error).__name__}: {str(error)[:200]})"
        ) from None
    if not isinstance(payload, dict) or any(k not in payload for k in REQUIRED_KEYS):
        found = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{path} is not an affectfuse checkpoint: expected keys {list(REQUIRED_KEYS)}, found {found}"
        )
    if payload["format_version"] not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path} has checkpoint format {payload['format_version']!r}; this affectfuse reads {READABLE_VERSIONS}"
        )
    if not isinstance(payload["state_dict"], dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload["state_dict"].items()
    ):
        raise CheckpointError(f"checkpoint {path} is corrupted: its state_dict is not a mapping of names to tensors")
    if payload["format_version"] >= 2 and payload.get("sha256") != content_digest(payload):
        raise CheckpointError(f"checkpoint {path} is corrupted (checksum mismatch: its content changed after it was "
                              "written)")
    return payload


def load_model(path: Path | str) -> Any:
    """Rebuild a trained model through the registry (on CPU, in eval mode) from a checkpoint written by `fit`, or
    from a folder written by `save_pretrained`."""
    if is_pretrained_folder(path):
        return from_pretrained(path)
    payload = read_checkpoint(path)
    return _rebuild(payload, payload["state_dict"], path)


def _rebuild(meta: dict[str, Any], weights: dict[str, torch.Tensor], where: Path | str) -> Any:
    """The registered model `meta` names, built from its config and spec, holding exactly `weights`."""
    try:
        entry = get_entry(meta["model_name"])
        config = config_from_dict(entry.name, meta["config"])
        spec = InputSpec.from_dict(meta["spec"])
    except (KeyError, ValueError, TypeError) as error:
        raise CheckpointError(f"{where}: {error}") from None
    model = entry.cls(config, spec)
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise CheckpointError(f"{where}: weights do not fit model {entry.name!r}: {str(error)[:300]}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: weights do not fit model {entry.name!r} with the saved config "
            f"(missing: {missing[:5]}, unexpected: {unexpected[:5]})"
        )
    return model.eval()


def is_pretrained_folder(path: Path | str) -> bool:
    """Whether `path` is a folder written by `save_pretrained`."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).is_file()


def save_pretrained(model: Any, directory: Path | str, *, metrics: dict[str, Any] | None = None) -> Path:
    """Write `model` into the folder `directory` as `config.json` + `model.safetensors`; returns the folder.

    `metrics` (e.g. its test scores) are kept in `config.json` for whoever reads the folder. Reload with
    `from_pretrained(directory)` (or `load_model`, or any command that takes a checkpoint).
    """
    from safetensors.torch import save

    directory = ensure_folder(Path(directory).expanduser())
    # clones: safetensors refuses tensors that share storage (tied weights) and needs contiguous ones
    weights = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in model.state_dict().items()}
    atomic_write(directory / WEIGHTS_NAME, lambda f: f.write(save(weights, metadata={"format": "pt"})))
    meta = {
        "format": PRETRAINED_FORMAT,
        "format_version": 1,
        "affectfuse_version": __version__,
        "model_name": model.model_name,
        "config": config_to_dict(model.config),
        "spec": model.spec.to_dict(),
        "metrics": metrics or {},
    }
    write_json(directory / CONFIG_NAME, meta)
    return directory


def from_pretrained(directory: Path | str) -> Any:
    """Rebuild the model that `save_pretrained` wrote into `directory` (on CPU, in eval mode).

    Raises:
        CheckpointError: a file is missing or corrupted, the config names no known model, or the weights do not fit
            it; the message names the folder or file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a folder; expected one written by save_pretrained, holding "
                              f"{CONFIG_NAME} and {WEIGHTS_NAME}")
    config_file = readable_file(directory / CONFIG_NAME, "pretrained config")
    weights_file = readable_file(directory / WEIGHTS_NAME, "pretrained weights")
    try:
        meta = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{config_file} is not valid JSON ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != PRETRAINED_FORMAT:
        raise CheckpointError(f'{config_file} is not an affectfuse pretrained config (no "format": '
                              f'"{PRETRAINED_FORMAT}")')
    try:
        weights = load_file(weights_file)
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{weights_file} is corrupted or not a safetensors file ({error})") from None
    return _rebuild(meta, weights, directory)
