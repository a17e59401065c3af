"""Recipe files (a model's full settings as JSON, written by `tune`, read by `train --recipe-file`), and what `auto`
chooses for a corpus with no stored recipe (`auto_plan`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
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


# ---------------------------------------------------------------------------------------------------------------------
# `auto` for a corpus with no stored recipe
# ---------------------------------------------------------------------------------------------------------------------

SMALL_CORPUS = 3000
"""Training clips below which a corpus is small: the paper recipes were sized for MOSEI/IEMOCAP-scale data and, on a
few hundred clips, over-fit or collapse to the constant answer (docs/unseen_data.md)."""
SMALL_CORPUS_RECIPE = "pom"
"""The stored recipe sized for a small corpus: every model has one for POM's 600 training clips of 20-step audio and
vision features (the narrowest widths and the longest patience of its recipes)."""
AUTO_LR_FACTORS = {"small": (1.0, 3.0, 1 / 3), "large": (1.0, 1 / 3)}
"""Learning rates tried on valid, as factors of the base recipe's (a few runs: one is the base itself)."""
AUTO_MAX_EPOCHS = {"small": 40, "large": 30}
AUTO_PATIENCE = 8
"""Early stopping on valid: epochs without improvement before a candidate stops."""
AUTO_STANDARDISE = True
"""Train on features z-scored with the train split's statistics (`data.standardisation`; the checkpoint keeps them
and standardises raw features itself). Measured over 3 seeds (docs/unseen_data.md): on raw-scale features (MOSI's
bc-LSTM openSMILE audio, up to 356) every model's test MAE improved (DMD 0.98 -> 0.90); on features scaled to
[-1, 1] already (the POM views) the differences go both ways, mean F1 about level, MulT and SFT losing most.
Opt out: `--no-standardise`."""


@dataclass(frozen=True)
class AutoPlan:
    """What `--recipe auto` does for a corpus with no stored recipe: a base chosen by size, then a short search on
    valid over the learning rate (each candidate early-stopped on valid); the best candidate on valid is kept."""

    base_name: str
    base: Recipe[Any]
    candidates: tuple[tuple[str, dict[str, Any]], ...]
    """(label, overrides of the base) per candidate."""
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base_name, "reason": self.reason,
                "candidates": {label: overrides for label, overrides in self.candidates}}


def auto_plan(model: str, train_size: int, *, user_overrides: dict[str, Any] | None = None) -> AutoPlan:
    """The plan for `model` on a corpus of `train_size` training clips. A learning rate the user set is kept (no lr
    search then); the other user overrides apply on top of every candidate."""
    from .registry import default_recipe, get_entry

    entry = get_entry(model)
    size = "small" if train_size < SMALL_CORPUS else "large"
    if size == "small" and SMALL_CORPUS_RECIPE in entry.recipes:
        base_name, base = SMALL_CORPUS_RECIPE, entry.recipes[SMALL_CORPUS_RECIPE]
        reason = (f"{train_size} training clips < {SMALL_CORPUS}: the small-corpus recipe ({SMALL_CORPUS_RECIPE!r}, "
                  f"sized for 600 clips)")
    else:
        base_name, base = "default", default_recipe(model)
        reason = f"{train_size} training clips{' >= ' + str(SMALL_CORPUS) if size == 'large' else ''}: the defaults"
    epochs = min(base.train.max_epochs, AUTO_MAX_EPOCHS[size])
    budget = {"train.max_epochs": epochs, "train.patience": min(base.train.patience, AUTO_PATIENCE)}
    factors = (1.0,) if "train.lr" in (user_overrides or {}) else AUTO_LR_FACTORS[size]
    candidates = tuple((f"lr{base.train.lr * f:.2g}", {**budget, "train.lr": base.train.lr * f}) for f in factors)
    rates = ", ".join(f"{c[1]['train.lr']:.2g}" for c in candidates)
    return AutoPlan(base_name, base, candidates,
                    f"{reason}; learning rate {'kept as set' if len(factors) == 1 else 'searched'} over [{rates}] "
                    f"({epochs} epochs at most, early stopping on valid after {budget['train.patience']} epochs "
                    "without improvement); best on valid kept")
