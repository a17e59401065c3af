"""The single list of models: name -> (class, config class, per-dataset recipes)."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from . import InputSpec, Recipe, TrainConfig, replace_nested

M = TypeVar("M", bound=type)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    cls: type
    config: type
    recipes: Mapping[str, Recipe[Any]]


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, config: type, recipes: Mapping[str, Recipe[Any]]) -> Callable[[M], M]:
    """Class decorator adding a model to the registry; a duplicate name is an error, never a silent overwrite."""

    def decorate(cls: M) -> M:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered by {_REGISTRY[name].cls.__qualname__}")
        params = list(inspect.signature(cls.__init__).parameters)
        if params[1:3] != ["config", "spec"]:
            raise TypeError(f"{cls.__qualname__}.__init__ must take (config, spec); it takes {params[1:]}")
        _REGISTRY[name] = ModelEntry(name=name, cls=cls, config=config, recipes=dict(recipes))
        cls.model_name = name  # type: ignore[attr-defined]
        return cls

    return decorate


def _ensure_registered() -> None:
    from .. import models  # noqa: F401  (importing the package registers every method)


def list_models() -> list[str]:
    _ensure_registered()
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    _ensure_registered()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available models: {', '.join(list_models())}")
    return _REGISTRY[name]


def get_recipe(name: str, dataset: str) -> Recipe[Any]:
    entry = get_entry(name)
    if dataset not in entry.recipes:
        raise ValueError(f"model {name!r} has no recipe for {dataset!r}; recipes exist for: {', '.join(entry.recipes)}")
    return entry.recipes[dataset]


def default_recipe(name: str) -> Recipe[Any]:
    """The model's paper defaults with the generic training settings, used when no dataset recipe is chosen."""
    entry = get_entry(name)
    return Recipe(model=entry.config(), train=TrainConfig(), source=f"{entry.config.__name__} defaults")


def make_config(name: str, base: Any = None, **overrides: Any) -> Any:
    """The model's config (its defaults or `base`) with `overrides` applied; unknown fields raise a clear error."""
    entry = get_entry(name)
    config = entry.config() if base is None else base
    if not isinstance(config, entry.config):
        raise TypeError(f"config for {name!r} must be a {entry.config.__name__}, got {type(config).__name__}")
    return replace_nested(config, {k: v for k, v in overrides.items() if v is not None}, what=entry.config.__name__)


def create_model(name: str, spec: InputSpec, config: Any = None, **overrides: Any) -> Any:
    """Build a registered model for data described by `spec`.

    >>> model = create_model("lmf", spec, rank=8)  # doctest: +SKIP
    """
    entry = get_entry(name)
    return entry.cls(make_config(name, config, **overrides), spec)


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_dict(name: str, data: Mapping[str, Any]) -> Any:
    """Rebuild a model config saved by `config_to_dict` (nested dataclasses included)."""
    return _build(get_entry(name).config, data)


def _build(cls: type, data: Mapping[str, Any]) -> Any:
    import typing

    hints = typing.get_type_hints(cls)
    kwargs = {}
    valid = {f.name for f in dataclasses.fields(cls)}
    for key, value in data.items():
        if key not in valid:
            raise ValueError(f"{cls.__name__} has no field {key!r}; valid fields: {sorted(valid)}")
        hint = typing.get_origin(hints[key]) or hints[key]
        if isinstance(value, Mapping) and dataclasses.is_dataclass(hint):
            value = _build(hint, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)
