"""Official implementations' checkpoints -> affectfuse models: one module per official repository, one registry."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..io import readable_file

StateDict = Mapping[str, Tensor]
Converter = Callable[[StateDict, Any], dict[str, Tensor]]
"""(official state dict, our model's config) -> our state dict (same tensors, our names and layout)."""

_CONVERTERS: dict[tuple[str, str], Converter] = {}
# the modules that register converters; importing them fills _CONVERTERS
_MODULES: tuple[str, ...] = ("lmf", "tfn", "mult", "sft", "dmd", "emt_dlfr", "tfr_net", "mmim", "ef_lstm", "lf_lstm",
                                "misa", "self_mm")


class ConversionError(ValueError):
    """An official state dict that does not map onto our model: names the missing/unexpected keys or shapes."""


def take(state: StateDict, key: str, source: str, used: set[str] | None = None) -> Tensor:
    """`state[key]`, or one line saying which key `source`'s state dict lacks; with `used`, records the key."""
    if key not in state:
        raise ConversionError(f"{source} state dict lacks {key!r}")
    if used is not None:
        used.add(key)
    return state[key]


def refuse_unknown(state: StateDict, used: set[str], source: str, hint: str = "") -> None:
    """One line naming the keys of `state` no converter step used (another architecture or a deeper model)."""
    left = sorted(set(state) - used)
    if left:
        raise ConversionError(f"{source} state dict has keys this converter does not know{hint}: {left[:6]}"
                              f"{' ...' if len(left) > 6 else ''}")


def register_converter(model: str, source: str) -> Callable[[Converter], Converter]:
    """Register `fn(state_dict, config) -> our state dict` for `model` trained with `source` (e.g. "official")."""

    def add(fn: Converter) -> Converter:
        key = (model, source)
        if key in _CONVERTERS:
            raise ValueError(f"a converter for model {model!r} from {source!r} is already registered")
        _CONVERTERS[key] = fn
        return fn

    return add


def _ensure_registered() -> None:
    for name in _MODULES:
        importlib.import_module(f".{name}", __name__)


def list_converters() -> list[tuple[str, str]]:
    _ensure_registered()
    return sorted(_CONVERTERS)


def get_converter(model: str, source: str) -> Converter:
    _ensure_registered()
    if (model, source) not in _CONVERTERS:
        known = ", ".join(f"{m}/{s}" for m, s in sorted(_CONVERTERS)) or "none"
        raise ConversionError(f"no converter for model {model!r} from {source!r}; known: {known}")
    return _CONVERTERS[(model, source)]


def read_official_state_dict(path: Path | str) -> dict[str, Tensor]:
    """The tensors of an official checkpoint, read with `weights_only=True` (nothing in the file can run).

    Accepts a plain state dict or one nested under "state_dict"/"model"/"model_state_dict". Whole pickled models
    (`torch.save(model)`, as MulT's official `save_model` writes) are refused: unpickling them would run the
    official code's classes; re-save them as a state dict in the official environment first.
    """
    path = Path(path)
    if path.is_dir():
        raise ConversionError(f"official checkpoint {path} is a folder, expected a file written by torch.save")
    readable_file(path, "official checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # weights-only refusals and corruption read alike to a user
        raise ConversionError(
            f"official checkpoint {path} cannot be read as tensors only ({type(error).__name__}); if it is a whole "
            "pickled model, re-save it in the official environment with "
            "torch.save(torch.load(PATH).state_dict(), NEW_PATH)"
        ) from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(payload, Mapping) and isinstance(payload.get(key), Mapping):
            payload = payload[key]
            break
    if not isinstance(payload, Mapping) or not all(isinstance(v, Tensor) for v in payload.values()):
        raise ConversionError(f"official checkpoint {path} is not a state dict (name -> tensor)")
    # DataParallel wraps every name in "module."
    return {k.removeprefix("module."): v for k, v in payload.items()}


def load_converted(model_name: str, source: str, state_dict: StateDict, config: Any, spec: Any) -> Any:
    """Our `model_name` model for `spec` and `config`, holding the official weights mapped by the registered
    converter; refuses (ConversionError, one line) when a name or a shape does not fit."""
    from ..config.registry import create_model

    ours = get_converter(model_name, source)(state_dict, config)
    model = create_model(model_name, spec, config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(ours))
    unexpected = sorted(set(ours) - set(expected))
    if missing or unexpected:
        raise ConversionError(
            f"{source} {model_name} weights do not fit our model: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    wrong = [f"{k} {tuple(ours[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
             if tuple(ours[k].shape) != tuple(v.shape)]
    if wrong:
        raise ConversionError(f"{source} {model_name} weights have other shapes than our model: {', '.join(wrong[:3])}"
                              " (check the dims of --data and the --set sizes)")
    model.load_state_dict(ours, strict=True)
    return model.eval()
