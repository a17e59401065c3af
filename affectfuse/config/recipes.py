"""Recipe files: a model's full settings as JSON, written by `tune`, read by `train --recipe-file`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..io import readable_file, write_json
from . import Recipe, TrainConfig
from .overrides import apply_overrides
from .registry import config_from_dict

RECIPE_FORMAT = "affectfuse-recipe/1"

def recipe_payload(model: str, base: Recipe[Any], overrides: dict[str, Any], *, source: str,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a recipe file holds: the full model and training configs (base recipe + overrides)."""
    config, train = apply_overrides(model, overrides, base)
    return {
        "format": RECIPE_FORMAT,
        "model": model,
        "config": dataclasses.asdict(config),
        "train": dataclasses.asdict(train),
        "source": source,
        **(extra or {}),
    }


def write_recipe(path: Path | str, model: str, base: Recipe[Any], overrides: dict[str, Any], *, source: str,
                 extra: dict[str, Any] | None = None) -> Path:
    """A recipe file (`recipe_payload`), atomically, as JSON."""
    return write_json(path, recipe_payload(model, base, overrides, source=source, extra=extra))


def load_recipe_file(path: Path | str) -> tuple[str, Recipe[Any]]:
    """(model name, Recipe) from a file written by `write_recipe` (e.g. by `affectfuse tune`)."""
    import json

    path = readable_file(path, "recipe file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"recipe file {path} is not valid JSON: {error}") from None
    if not isinstance(data, dict) or data.get("format") != RECIPE_FORMAT:
        raise ValueError(f"recipe file {path} is not an affectfuse recipe (expected \"format\": \"{RECIPE_FORMAT}\")")
    for key in ("model", "config", "train"):
        if key not in data:
            raise ValueError(f"recipe file {path} lacks {key!r}")
    model = data["model"]
    valid = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(data["train"]) - valid
    if unknown:
        raise ValueError(f"recipe file {path}: TrainConfig has no field(s) {sorted(unknown)}; valid: {sorted(valid)}")
    try:
        config = config_from_dict(model, data["config"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"recipe file {path}: {error}") from None
    train = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["train"].items()})
    return model, Recipe(model=config, train=train, source=f"{path}: {data.get('source', '')}")
