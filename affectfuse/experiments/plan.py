"""The experiment file and its expansion into runs.

An experiment file (TOML; YAML too when PyYAML is installed) declares the grid::

    name = "core-grid"
    models = ["tfn", "lmf"]
    seeds = 3                      # 1111, 1112, 1113 (MMSA's seeds); or a list [1111, 1112]
    recipe = "auto"                # the corpus's own recipe, as `affectfuse train`
    data = ["synthetic", "mosi-utterance"]   # or a table: label = "data spec"

    [set]                          # overrides of every run (model fields, or `train.` fields)
    "train.device" = "cpu"

    [set_model.mult]               # overrides of one model's runs
    dim = 16

    [[setting]]                    # settings: named override sets and/or a missing-feature rate
    name = "complete"
    [[setting]]
    name = "missing-0.3"
    missing_rate = 0.3
    set = { "train.lr" = 1e-3 }

Overrides apply in this order: the recipe, `set`, `set_model.<model>`, the setting's `set`. Every key is checked
against the model's config (or `TrainConfig`) before anything trains, so a typo fails at once, not after hours.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.overrides import apply_overrides
from ..config.registry import get_entry
from ..io import readable_file

FIRST_SEED = 1111
"""`seeds = K` means K consecutive seeds from MMSA's first seed, 1111."""

TOP_LEVEL = {"name", "models", "data", "seeds", "recipe", "set", "set_model", "setting", "nonfinite", "tensorboard",
             "trackers", "out"}
SETTING_KEYS = {"name", "set", "missing_rate"}


@dataclass(frozen=True)
class Setting:
    """A named variant of every cell: extra overrides and/or a missing-feature rate."""

    name: str = "default"
    overrides: Mapping[str, Any] = field(default_factory=dict)
    missing_rate: float = 0.0
    """Every real position of every modality of all three splits dropped with this probability, by the official
    static masks (`robustness.missing.split_missing_masks`, seeds 111/1111/11111): the papers' train-and-test
    protocol."""


@dataclass(frozen=True)
class Experiment:
    name: str
    models: tuple[str, ...]
    data: dict[str, str]
    """label (used in tables and paths) -> data spec (as `--data`)."""
    seeds: tuple[int, ...]
    settings: tuple[Setting, ...] = (Setting(),)
    recipe: str = "auto"
    overrides: Mapping[str, Any] = field(default_factory=dict)
    model_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    nonfinite: str = "error"
    tensorboard: bool = False
    trackers: tuple[str, ...] = ()
    """Experiment trackers per run (`experiments.trackers`: tensorboard, mlflow, wandb); `tensorboard` adds one."""
    out: str = ""
    """Default output folder (the command's --out wins); empty: runs/experiments/<name>."""
    source: str = ""


@dataclass(frozen=True)
class Run:
    """One (cell, seed): everything a worker needs, made of plain values so it pickles to processes and Ray."""

    experiment: str
    model: str
    data: str
    data_spec: str
    setting: str
    seed: int
    recipe: str = "auto"
    overrides: tuple[tuple[str, Any], ...] = ()
    missing_rate: float = 0.0
    nonfinite: str = "error"
    tensorboard: bool = False
    trackers: tuple[str, ...] = ()
    data_sha256: str = ""
    """Content fingerprint of the data (`Corpus.fingerprint`), filled in by the runner: a stored result is reused
    only for the same data, not merely the same path."""

    @property
    def cell(self) -> tuple[str, str, str]:
        return self.model, self.data, self.setting

    @property
    def key(self) -> str:
        return f"{self.model}/{self.data}/{self.setting}/seed{self.seed}"

    def identity(self) -> dict[str, Any]:
        """What decides the result (logging options excluded): a stored result counts only if this matches."""
        return {
            "model": self.model,
            "data_spec": self.data_spec,
            "seed": self.seed,
            "recipe": self.recipe,
            "overrides": dict(self.overrides),
            "missing_rate": self.missing_rate,
            "nonfinite": self.nonfinite,
            **({"data_sha256": self.data_sha256} if self.data_sha256 else {}),
        }

    @property
    def config_hash(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read(path: Path) -> dict[str, Any]:
    readable_file(path, "experiment file")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            try:
                import tomli as tomllib  # type: ignore[no-redef]
            except ModuleNotFoundError:
                raise ValueError(f"reading {path} needs Python >= 3.11 (tomllib) or the tomli package") from None
        try:
            return tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"experiment file {path} is not valid TOML: {error}") from None
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ModuleNotFoundError:
            raise ValueError(f"reading the YAML file {path} needs PyYAML (pip install pyyaml), or use TOML") from None
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"experiment file {path} must hold a mapping at the top level")
        return data
    raise ValueError(f"experiment file {path} must end in .toml, .yaml or .yml")


def slug(text: str) -> str:
    """A file-system-safe label for a data spec (`synthetic:n_train=200` -> `synthetic_n_train_200`)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "data"


def _seeds(value: Any, where: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"{where}: seeds = {value}; expected a positive count or a list of integers")
        return tuple(FIRST_SEED + i for i in range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        if len(set(value)) != len(value):
            raise ValueError(f"{where}: seeds {value} repeat a seed")
        return tuple(value)
    raise ValueError(f"{where}: seeds must be a positive count or a non-empty list of integers, got {value!r}")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a table of KEY = VALUE overrides, got {value!r}")
    return {str(k): tuple(v) if isinstance(v, list) else v for k, v in value.items()}


def _settings(entries: Any, source: str) -> list[Setting]:
    if not isinstance(entries, list):
        raise ValueError(f"{source}: setting must be an array of tables ([[setting]]), got {entries!r}")
    settings = []
    for i, entry in enumerate(entries):
        where = f"{source}: setting #{i + 1}"
        if not isinstance(entry, Mapping) or "name" not in entry:
            raise ValueError(f"{where} must be a table with a name")
        if set(entry) - SETTING_KEYS:
            unknown = sorted(set(entry) - SETTING_KEYS)
            raise ValueError(f"{where}: unknown key(s) {unknown}; valid: {sorted(SETTING_KEYS)}")
        rate = entry.get("missing_rate", 0.0)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
            raise ValueError(f"{where}: missing_rate must be a number in [0, 1], got {rate!r}")
        name = str(entry["name"])
        if slug(name) != name:
            raise ValueError(f"{where}: name {name!r} must use only letters, digits, '.', '_' and '-'")
        settings.append(Setting(name=name, overrides=_mapping(entry.get("set", {}), f"{where}.set"),
                                missing_rate=float(rate)))
    if len({s.name for s in settings}) != len(settings):
        raise ValueError(f"{source}: two settings share a name: {[s.name for s in settings]}")
    return settings


def parse_experiment(raw: Mapping[str, Any], *, source: str = "<experiment>") -> Experiment:
    """Check and normalise a parsed experiment file; every error names the file and the offending entry."""
    unknown = set(raw) - TOP_LEVEL
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {sorted(unknown)}; valid keys: {sorted(TOP_LEVEL)}")
    for required in ("models", "data", "seeds"):
        if required not in raw:
            raise ValueError(f"{source}: missing required key {required!r}")
    models = raw["models"]
    if isinstance(models, str):
        models = [models]
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise ValueError(f"{source}: models must be a non-empty list of model names, got {models!r}")
    for model in models:
        try:
            get_entry(model)
        except ValueError as error:  # unknown names fail here, listing the registered models
            raise ValueError(f"{source}: {error}") from None
    data = raw["data"]
    if isinstance(data, str):
        data = [data]
    if isinstance(data, list) and data and all(isinstance(d, str) for d in data):
        data = {slug(d): d for d in data}
    if not isinstance(data, Mapping) or not data or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{source}: data must be a list of data specs or a table label = \"spec\", got {data!r}")
    bad = [label for label in data if slug(label) != label]
    if bad:
        raise ValueError(f"{source}: data labels {bad} must use only letters, digits, '.', '_' and '-'")
    settings = _settings(raw.get("setting", []), source)
    model_overrides = {str(m): _mapping(v, f"{source}: set_model.{m}") for m, v in raw.get("set_model", {}).items()}
    stray = set(model_overrides) - set(models)
    if stray:
        raise ValueError(f"{source}: set_model names {sorted(stray)}, which are not in models {models}")
    nonfinite = raw.get("nonfinite", "error")
    if nonfinite not in ("error", "zero"):
        raise ValueError(f"{source}: nonfinite must be 'error' or 'zero', got {nonfinite!r}")
    name = str(raw.get("name", Path(source).stem))
    if slug(name) != name:
        raise ValueError(f"{source}: name {name!r} must use only letters, digits, '.', '_' and '-'")
    experiment = Experiment(
        name=name,
        models=tuple(models),
        data=dict(data),
        seeds=_seeds(raw["seeds"], source),
        settings=tuple(settings) or (Setting(),),
        recipe=str(raw.get("recipe", "auto")),
        overrides=_mapping(raw.get("set", {}), f"{source}: set"),
        model_overrides=model_overrides,
        nonfinite=nonfinite,
        tensorboard=bool(raw.get("tensorboard", False)),
        trackers=_trackers(raw.get("trackers", []), source),
        out=str(raw.get("out", "")),
        source=source,
    )
    for run in plan(experiment):
        check_overrides(run, source)
    return experiment


def _trackers(names: Any, source: str) -> tuple[str, ...]:
    from ..trackers import TRACKERS

    if isinstance(names, str):
        names = [names]
    unknown = [n for n in names if n not in TRACKERS] if isinstance(names, list) else [names]
    if unknown:
        raise ValueError(f"{source}: trackers must be a list of {', '.join(TRACKERS)}; got {unknown}")
    return tuple(names)


def load_experiment(path: Path | str) -> Experiment:
    path = Path(path)
    return parse_experiment(_read(path), source=str(path))


def plan(experiment: Experiment) -> list[Run]:
    """Every (model, data, setting, seed) of the grid, seeds innermost (a cell's seeds finish close together)."""
    runs = []
    for data_label, spec in experiment.data.items():
        for model in experiment.models:
            for setting in experiment.settings:
                overrides = {
                    **experiment.overrides,
                    **experiment.model_overrides.get(model, {}),
                    **setting.overrides,
                }
                for seed in experiment.seeds:
                    runs.append(Run(
                        experiment=experiment.name,
                        model=model,
                        data=data_label,
                        data_spec=spec,
                        setting=setting.name,
                        seed=seed,
                        recipe=experiment.recipe,
                        overrides=tuple(sorted(overrides.items())),
                        missing_rate=setting.missing_rate,
                        nonfinite=experiment.nonfinite,
                        tensorboard=experiment.tensorboard,
                        trackers=experiment.trackers,
                    ))
    return runs


def check_overrides(run: Run, source: str = "") -> None:
    """Apply the run's overrides to the model's default config and TrainConfig: unknown fields and badly typed
    values fail here with the model and key named (the recipe only changes values, never the set of fields)."""
    overrides = dict(run.overrides)
    if "train.seed" in overrides:
        raise ValueError(f"{source or run.experiment}: set the seeds with `seeds`, not train.seed")
    try:
        apply_overrides(run.model, overrides)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{source or run.experiment}: overrides of model {run.model!r}: {error}") from None


def experiment_dict(experiment: Experiment) -> dict[str, Any]:
    return dataclasses.asdict(experiment)


def with_fingerprints(runs: list[Run]) -> list[Run]:
    """Each run with its data's content fingerprint (each data spec loaded once here)."""
    from ..data.datasets import load_data  # only here: planning itself needs no data

    prints = {(r.data_spec, r.nonfinite): "" for r in runs}
    for spec, nonfinite in prints:
        prints[(spec, nonfinite)] = load_data(spec, nonfinite=nonfinite).fingerprint()
    return [dataclasses.replace(r, data_sha256=prints[(r.data_spec, r.nonfinite)]) for r in runs]
