"""The single list of models: name -> (class, config class, per-dataset recipes)."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from .schema import InputSpec, Recipe, TrainConfig, check_fields, replace_nested, type_problem

M = TypeVar("M", bound=type)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    cls: type
    config: type
    recipes: Mapping[str, Recipe[Any]]
    about: str = ""
    """For a variant: what it is (e.g. the paper's table row it reproduces)."""


class Variant(NamedTuple):
    """A named setting of a method (`method:variant`, e.g. an ablation row or another fusion strategy): the same
    class with some config fields changed in its defaults and in every recipe."""

    about: str
    settings: Mapping[str, Any]


_REGISTRY: dict[str, ModelEntry] = {}
_VARIANTS: dict[str, ModelEntry] = {}


def register_model(
    name: str, *, config: type, recipes: Mapping[str, Recipe[Any]], variants: Mapping[str, Variant] | None = None
) -> Callable[[M], M]:
    """Class decorator adding a model (and its named variants, `name:variant`) to the registry; a duplicate name
    is an error, never a silent overwrite."""

    def decorate(cls: M) -> M:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered by {_REGISTRY[name].cls.__qualname__}")
        params = list(inspect.signature(cls.__init__).parameters)
        if params[1:3] != ["config", "spec"]:
            raise TypeError(f"{cls.__qualname__}.__init__ must take (config, spec); it takes {params[1:]}")
        _REGISTRY[name] = ModelEntry(name=name, cls=cls, config=config, recipes=dict(recipes))
        for key, variant in (variants or {}).items():
            _VARIANTS[f"{name}:{key}"] = _variant_entry(_REGISTRY[name], key, variant)
        cls.model_name = name  # type: ignore[attr-defined]
        return cls

    return decorate


def _variant_entry(entry: ModelEntry, key: str, variant: Variant) -> ModelEntry:
    """The entry of `method:key`: a config subclass whose defaults carry the variant's settings (so its defaults,
    recipes, overrides and recipe files all start from them) and the method's recipes with the settings applied.
    Checkpoints record the method's name and every field, so a variant's model loads as the method it is."""
    hints = typing.get_type_hints(entry.config)
    unknown = sorted(set(variant.settings) - set(hints))
    if unknown:
        raise ValueError(f"variant {entry.name}:{key} sets {unknown}, not fields of {entry.config.__name__}")
    config = dataclasses.make_dataclass(
        f"{entry.config.__name__}_{key}",
        [(f, hints[f], dataclasses.field(default=v)) for f, v in variant.settings.items()],
        bases=(entry.config,),
        frozen=True,
        kw_only=True,
    )
    config.__doc__ = f"{entry.config.__name__} with {dict(variant.settings)}: {variant.about}"

    def convert(model: Any) -> Any:
        return config(**{f.name: getattr(model, f.name) for f in dataclasses.fields(model)} | dict(variant.settings))

    recipes = {k: dataclasses.replace(r, model=convert(r.model)) for k, r in entry.recipes.items()}
    check_fields(config(), config.__name__)
    return ModelEntry(name=f"{entry.name}:{key}", cls=entry.cls, config=config, recipes=recipes, about=variant.about)


def _ensure_registered() -> None:
    from .. import models  # noqa: F401  (importing the package registers every method)


def list_models() -> list[str]:
    """The methods (one per model file); their variants are in `list_variants`."""
    _ensure_registered()
    return sorted(_REGISTRY)


def list_variants(method: str | None = None) -> list[str]:
    """The named variants, `method:variant`, of every method or of one."""
    _ensure_registered()
    return [name for name in _VARIANTS if method is None or name.partition(":")[0] == method]


def get_entry(name: str) -> ModelEntry:
    _ensure_registered()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _VARIANTS:
        return _VARIANTS[name]
    method, colon, _ = name.partition(":")
    if colon and method in _REGISTRY:
        variants = list_variants(method)
        raise ValueError(
            f"model {method!r} has no variant {name!r}; its variants: {', '.join(variants) if variants else 'none'}"
        )
    close = difflib.get_close_matches(name.lower().replace("-", "_"), list_models(), n=2, cutoff=0.5)
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise ValueError(f"unknown model {name!r}; available models: {', '.join(list_models())}{hint}")


def get_recipe(name: str, dataset: str) -> Recipe[Any]:
    """Model `name`'s recipe for `dataset` (its model config, training config and source), e.g. ("lmf", "mosi").

    Raises:
        ValueError: the model has no recipe of that name (the message lists those it has).
    """
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
    config = replace_nested(config, {k: v for k, v in overrides.items() if v is not None}, what=entry.config.__name__)
    check_fields(config, entry.config.__name__)
    check_ranges(config, entry.config.__name__)
    return config


def check_ranges(config: Any, what: str) -> None:
    """The ranges every method's settings share, read from the field names (no model file needs its own checks):
    sizes (dims, heads, layers, rank, kernels) >= 1, counts `n_*`, seeds and `*_start` >= 0, dropout probabilities
    in [0, 1), missing rates in [0, 1], learning rates > 0, every other number finite and >= 0."""
    for f in dataclasses.fields(config):
        value, where = getattr(config, f.name), f"{what}.{f.name}"
        if dataclasses.is_dataclass(value):
            for m, v in ((g.name, getattr(value, g.name)) for g in dataclasses.fields(value)):
                _check_number(f.name, v, f"{where}.{m}")
        else:
            _check_number(f.name, value, where)


def _check_number(name: str, value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if isinstance(value, int):
        counts = "seed" in name or name.startswith("n_") or name.endswith("_start")
        low = 0 if counts else 1
        if value < low:
            raise ValueError(f"{where} must be an integer >= {low}, got {value}")
        return
    if not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value}")
    if "dropout" in name and not 0 <= value < 1:
        raise ValueError(f"{where} is a dropout probability and must be in [0, 1), got {value}")
    if name.endswith("rate") and not 0 <= value <= 1:
        raise ValueError(f"{where} is a rate and must be in [0, 1], got {value}")
    if name.endswith("lr") and not value > 0:
        raise ValueError(f"{where} is a learning rate and must be > 0, got {value}")
    if value < 0:
        raise ValueError(f"{where} must be >= 0, got {value}")


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
        if (problem := type_problem(value, hints[key])) is not None:
            raise ValueError(f"{cls.__name__}.{key}: {problem}")
        kwargs[key] = value
    return cls(**kwargs)
