"""Official implementations' checkpoints -> affectfuse models: one module per official repository, one registry."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

StateDict = Mapping[str, Tensor]
Converter = Callable[[StateDict, Any], dict[str, Tensor]]
"""(official state dict, our model's config) -> our state dict (same tensors, our names and layout)."""

_CONVERTERS: dict[tuple[str, str], Converter] = {}
# the modules that register converters; importing them fills _CONVERTERS
_MODULES: tuple[str, ...] = ()


class ConversionError(ValueError):
    """An official state dict that does not map onto our model: names the missing/unexpected keys or shapes."""


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
