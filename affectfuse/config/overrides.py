"""Settings overrides: KEY=VALUE strings from the command line, dotted into nested configs (`train.lr`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import models as _models  # noqa: F401  (registers the methods)
from .registry import default_recipe, make_config
from .schema import Recipe, TrainConfig, replace_nested


def parse_overrides(items: tuple[str, ...]) -> dict[str, str]:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE (e.g. rank=8 or train.lr=1e-3), got {item!r}")
        overrides[key.strip()] = value.strip()
    return overrides


def apply_overrides(
    name: str, overrides: Mapping[str, Any], base: Recipe[Any] | None = None
) -> tuple[Any, TrainConfig]:
    """(model config, TrainConfig) of `base` (default: the model's defaults) with dotted override keys applied:
    model fields (``rank``, ``hidden.audio``) and training fields prefixed ``train.`` (``train.lr``). An unknown key
    or a badly typed value raises, naming it."""
    base = base or default_recipe(name)
    model_over = {k: v for k, v in overrides.items() if not k.startswith("train.")}
    train_over = {k.removeprefix("train."): v for k, v in overrides.items() if k.startswith("train.")}
    return make_config(name, base.model, **model_over), replace_nested(base.train, train_over, what="TrainConfig")


def seed_list(seed: tuple[int, ...], seeds: int) -> list[int]:
    """The seeds a command runs: `seed` itself, or `seeds` consecutive ones from its first (`--seeds 3`)."""
    if seeds < 0:
        raise ValueError(f"--seeds is a count of consecutive seeds and must be >= 1 (0: use --seed), got {seeds}")
    if any(s < 0 for s in seed):
        raise ValueError(f"--seed values must be >= 0, got {list(seed)}")
    return list(seed) if seeds == 0 else [seed[0] + i for i in range(seeds)]
