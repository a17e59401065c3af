"""Robustness to missing features in one command: the EMT-DLFR / TFR-Net sweep, AUILC, tables and curves.

Spec: shared/spec/methods.md §0.5 (AUILC), §4.2 and §5 (the official sweep, `run_once.py`).

A sweep is a grid of (model, condition, seed) points. A *condition* is what is missing:

* ``--missing feature`` (default): a random-feature-missing rate r; every real position of every modality is dropped
  with probability r by the static masks of `robustness.missing.split_missing_masks` (zeroed; [UNK] for BERT token ids).
* ``--missing modality``: whole modalities absent; one condition per non-empty subset of the modalities *present*
  (7 for T/A/V), every position of the absent modalities dropped (rate 1 for them, 0 for the others).

Two protocols:

* ``train-and-test`` (the papers'): for each condition a new model is trained on the training split dropped that way,
  selected on the validation split dropped the same way, and tested on the test split dropped the same way. A model
  that simulates missing features itself (its config has a ``missing_rate`` field: EMT-DLFR) is given the complete
  training split and ``missing_rate = r`` instead, as the official EMT-DLFR code pairs the complete and the incomplete
  view (for modality conditions it is trained on the dropped split like every other model).
* ``test-only`` (the cheap variant): one model per (model, seed) trained and selected on the complete data, then
  tested at every condition. EMT-DLFR keeps its recipe's own training-time ``missing_rate``.

Masks. ``--mask-seed official`` (default) uses the official per-modality NumPy seeds (text 111, audio 1111,
vision 11111) for every run seed, as the papers do: the seeds then vary only the training. ``per-seed`` adds the run
seed to each of them (text 111 + s, audio 1111 + s, vision 11111 + s), so the masks vary with the seed as well. Either
way a (condition, seed) pair always yields the same masks, and since a position is dropped when its uniform u <= r, the
positions dropped at a rate are a subset of those dropped at any higher rate.

Resumability. Every finished point is one JSON file, ``<out>/points/<model>/<condition>/seed<N>.json``, written
atomically (temporary file + rename), so a killed sweep leaves either a whole point or none. A rerun with the same
settings skips the points whose file exists; the reports are rebuilt from the point files. In the test-only protocol
the trained model of a (model, seed) is kept in ``<out>/models/<model>/seed<N>/`` and reused once its
``result.json`` (written last, after the checkpoint) exists, so a sweep killed mid-evaluation does not retrain.
``<out>/sweep_config.json`` records the settings that change what a point means (data, protocol, missing kind, mask
seeds, quick, overrides); a rerun with other settings in the same folder is refused instead of mixing results.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import MODALITIES, Modalities
from ..config.recipes import AUTO_STANDARDISE
from ..data.corpus import Corpus
from ..data.standardisation import standardised
from ..engine.metrics import aggregate, metrics_for
from ..io import write_json
from ..outputs import claim
from ..progress import job_bar
from .auilc import auilc
from .kinds import MaskSeed, MissingKind, Protocol
from .missing import MISSING_SEEDS, apply_masks, split_missing_masks
from .report import write_reports

LETTERS = {"text": "T", "audio": "A", "vision": "V"}

# ---------------------------------------------------------------------------------------------------------------------
# Conditions
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """What is missing at one point of the sweep."""

    name: str
    """File-system-safe key: ``rate0.30`` or ``present_TA``."""
    rates: dict[str, float]
    """Drop rate per modality (modalities not listed are complete)."""
    rate: float | None = None
    """The x coordinate of a feature-missing condition (None for modality conditions)."""
    label: str = ""
    """How tables show it: ``0.30`` or ``T+A``."""


def parse_rates(text: str) -> list[float]:
    """``START:STOP:STEP`` (STOP included, e.g. ``0:1:0.1`` -> 0.0, 0.1, ..., 1.0) or a comma list ``0,0.25,0.5``."""
    text = text.strip()
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3:
                raise ValueError
            start, stop, step = parts
            if step <= 0 or stop < start:
                raise ValueError
            count = (stop - start) / step
            if abs(count - round(count)) > 1e-6:
                raise ValueError(f"--rates {text!r}: ({stop} - {start}) is not a whole number of steps of {step}")
            rates = [round(start + i * step, 10) for i in range(round(count) + 1)]
        else:
            rates = [float(p) for p in text.split(",") if p.strip()]
    except ValueError as error:
        if error.args and "steps" in str(error.args[0]):
            raise
        raise ValueError(
            f"--rates expects START:STOP:STEP with STOP >= START and STEP > 0 (e.g. 0:1:0.1) or a comma list "
            f"(e.g. 0,0.5,1); got {text!r}"
        ) from None
    if not rates:
        raise ValueError(f"--rates gave no rate: {text!r}")
    bad = [r for r in rates if not 0.0 <= r <= 1.0]
    if bad:
        raise ValueError(f"missing rates must lie in [0, 1]; --rates {text!r} gives {bad}")
    if len(set(rates)) != len(rates):
        raise ValueError(f"--rates {text!r} repeats a rate: {rates}")
    return sorted(rates)


def rate_conditions(rates: Sequence[float]) -> list[Condition]:
    return [Condition(name=f"rate{r:.3f}", rates=dict.fromkeys(MODALITIES, float(r)), rate=float(r), label=f"{r:g}")
            for r in rates]


def modality_conditions(modalities: Sequence[str]) -> list[Condition]:
    """One condition per non-empty subset of `modalities` present, largest subsets last (T, A, V, TA, TV, AV, TAV)."""
    ordered = [m for m in MODALITIES if m in modalities]
    out = []
    for size in range(1, len(ordered) + 1):
        for present in itertools.combinations(ordered, size):
            letters = "".join(LETTERS[m] for m in present)
            rates = {m: 0.0 if m in present else 1.0 for m in ordered}
            out.append(Condition(name=f"present_{letters}", rates=rates, label="+".join(letters)))
    return out


def mask_seeds(kind: MaskSeed, seed: int) -> Modalities[int]:
    if kind == "official":
        return MISSING_SEEDS
    if kind == "per-seed":
        return Modalities(text=MISSING_SEEDS.text + seed, audio=MISSING_SEEDS.audio + seed,
                          vision=MISSING_SEEDS.vision + seed)
    raise ValueError(f"mask seed must be 'official' or 'per-seed', got {kind!r}")


def drop_splits(corpus: Corpus, condition: Condition, splits: Sequence[str], seeds: Modalities[int]) -> Corpus:
    """`corpus` with the named splits dropped as `condition` says (static masks from `seeds`); others untouched."""
    out = dict(corpus.splits)
    for name in splits:
        split = corpus.split(name)
        rates = {m: condition.rates.get(m, 0.0) for m in split.features}
        out[name] = apply_masks(split, split_missing_masks(split, rates, spec=corpus.spec, seeds=seeds),
                                spec=corpus.spec)
    return dataclasses.replace(corpus, splits=out, source=f"{corpus.source} [{'/'.join(splits)}: {condition.name}]")


# ---------------------------------------------------------------------------------------------------------------------
# Quick sizes
# ---------------------------------------------------------------------------------------------------------------------

QUICK_EPOCHS = 12
"""`--quick` caps `train.max_epochs` at this (and `train.patience` at a third of it)."""

QUICK_MODEL: dict[str, dict[str, Any]] = {
    # Narrow, one-layer versions of each method: the same architecture, so the curves keep their shape while a
    # whole 3-model x 3-seed sweep runs in minutes on a laptop CPU.
    "tfn": {"hidden": Modalities(text=32, audio=16, vision=16), "text_out": 16, "post_fusion_dim": 32},
    "lmf": {"hidden": Modalities(text=32, audio=16, vision=16), "text_out": 16},
    "mult": {"dim": 16, "heads": 2, "layers": 1},
    "ef_lstm": {"hidden": 32, "layers": 1},
    "lf_lstm": {"hidden": Modalities(text=32, audio=16, vision=16), "text_out": 16, "post_fusion_dim": 32},
    "sft": {"dim": 16, "heads": 2, "n_layers_post_fusion": 2},
    "dmd": {"dim": 16, "heads": 2, "layers": 1, "homo_gd_size": 16, "hetero_gd_size": 16},
    "emt_dlfr": {
        "d_model": 16, "heads": 2, "layers": 1, "ffn_mult": 2, "audio_hidden": 16, "vision_hidden": 16,
        "audio_out": 16, "vision_out": 16, "post_fusion_dim": 64, "global_bottleneck": 16,
        "bottleneck": Modalities(text=16, audio=8, vision=8),
    },
    "tfr_net": {
        "dim": 16, "heads": 2, "layers": 1, "fusion_hidden": Modalities(text=16, audio=8, vision=8),
        "fusion_gru_layers": 1, "cls_hidden": 32,
    },
    "mmim": {"audio_hidden": 16, "vision_hidden": 16, "fusion_hidden": 32},
    "misa": {"hidden_size": 32, "fusion_ffn": 64},  # d 16 collapses on the synthetic corpus (its recipe's source)
    "self_mm": {"post_fusion_dim": 32},
}
"""`--quick` model overrides (applied on top of the recipe, before any --set)."""


def quick_overrides(model: str, max_epochs: int, patience: int) -> dict[str, Any]:
    """The `--quick` overrides for one model (a variant, `method:variant`, gets its method's), given its recipe's
    epoch cap and patience."""
    cap = min(max_epochs, QUICK_EPOCHS)
    quick = QUICK_MODEL.get(model.partition(":")[0], {})
    return {**quick, "train.max_epochs": cap, "train.patience": min(patience, max(2, cap // 3))}


# ---------------------------------------------------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class SweepSettings:
    """What changes the meaning of a point; stored in ``sweep_config.json`` and checked on resume."""

    data: str
    protocol: Protocol = "test-only"
    missing: MissingKind = "feature"
    mask_seed: MaskSeed = "official"
    quick: bool = False
    overrides: dict[str, str] = field(default_factory=dict)


@dataclass
class SweepResult:
    out_dir: Path
    models: list[str]
    conditions: list[Condition]
    seeds: list[int]
    keys: tuple[str, ...]
    points: list[dict[str, Any]]
    summary: dict[str, dict[str, dict[str, tuple[float, float]]]]
    """model -> condition name -> metric -> (mean, std) over seeds."""
    auilc: dict[str, dict[str, dict[str, float]]]
    """model -> metric -> {"auilc": area of the seed-mean curve, "std": std over the seeds' own areas}."""
    ran: int
    """Points computed by this call (the rest were already on disk)."""
    notes: list[str] = field(default_factory=list)
    """What the reports must say about the numbers (e.g. undefined correlations counted as 0 in an AUILC)."""


def point_path(out_dir: Path, model: str, condition: Condition, seed: int) -> Path:
    return Path(out_dir) / "points" / model / condition.name / f"seed{seed}.json"


def run_sweep(
    models: Sequence[str],
    corpus: Corpus,
    *,
    out_dir: Path | str,
    conditions: Sequence[Condition],
    seeds: Sequence[int],
    settings: SweepSettings,
    progress: bool = True,
    on_point: Callable[[dict[str, Any]], None] | None = None,
    plots: bool = True,
) -> SweepResult:
    """Run (or finish) a sweep and write its reports; see the module docstring for protocols, masks and resuming.

    `on_point` is called with each point after its file is written (progress hooks; tests interrupt from it).
    `plots=False` skips the PNG/SVG curves (the JSON, CSV and Markdown reports are always written).
    """
    from ..config.registry import get_entry
    from ..engine.evaluate import evaluate
    from ..engine.runs import resolve_recipe

    out = Path(out_dir)
    with claim(out):
        for name in models:
            get_entry(name)  # fail on a typo before training anything
        if not conditions or not seeds:
            raise ValueError("a sweep needs at least one condition and one seed")
        check_settings(out, settings, corpus)
        keys = metrics_for(corpus.spec).keys
        user = dict(settings.overrides)
        grid = [(m, c, s) for m in models for s in seeds for c in conditions]
        done = {(m, c.name, s) for m, c, s in grid if point_path(out, m, c, s).exists()}
        ran = 0
        with job_bar(len(grid), done=len(done), desc="sweep", enabled=progress) as bar:
            for name in models:
                recipe_name, recipe = resolve_recipe(name, corpus)
                # features the `auto` plan standardises are dropped in the model's input space (a dropped step is
                # the train mean there), and both protocols train and test on the same standardised view
                data = standardised(corpus) if recipe_name == "auto" and AUTO_STANDARDISE else corpus
                overrides: dict[str, Any] = {}
                if settings.quick:
                    overrides.update(quick_overrides(name, recipe.train.max_epochs, recipe.train.patience))
                overrides.update(user)
                simulates = any(f.name == "missing_rate" for f in dataclasses.fields(get_entry(name).config))
                for seed in seeds:
                    todo = [c for c in conditions if (name, c.name, seed) not in done]
                    if not todo:
                        continue
                    seeds_m = mask_seeds(settings.mask_seed, seed)
                    trained = None
                    for condition in todo:
                        bar.set_postfix_str(f"{name} {condition.label} seed {seed}")
                        start = time.perf_counter()
                        if settings.protocol == "test-only":
                            if trained is None:
                                bar.set_postfix_str(f"{name} seed {seed}: training on complete data")
                                trained = _trained_model(name, data, seed, overrides, out, progress)
                            model, run = trained
                            test = drop_splits(data, condition, ("test",), seeds_m).split("test")
                            metrics = evaluate(model, test)
                        else:
                            run = _train_at(name, data, condition, seed, seeds_m, overrides, simulates, progress)
                            metrics = run.test
                        point = {
                            "model": name,
                            "condition": condition.name,
                            "label": condition.label,
                            "rate": condition.rate,
                            "rates": condition.rates,
                            "seed": seed,
                            "protocol": settings.protocol,
                            "mask_seeds": dict(seeds_m.items()),
                            "metrics": metrics,
                            "valid": run.valid,
                            "best_epoch": run.best_epoch,
                            "parameters": run.parameters,
                            "train_seconds": run.seconds,
                            "seconds": round(time.perf_counter() - start, 3),
                        }
                        write_json(point_path(out, name, condition, seed), point)
                        ran += 1
                        bar.update(1)
                        if on_point is not None:
                            on_point(point)
        return collect(out, models, conditions, seeds, keys, ran=ran, plots=plots)


def _trained_model(
    name: str, corpus: Corpus, seed: int, overrides: dict[str, Any], out: Path, progress: bool
) -> tuple[Any, Any]:
    """The test-only protocol's model for (name, seed): reused from disk when its training finished, else trained."""
    from ..engine.checkpoint import load_model
    from ..engine.runs import RunResult, train_model

    run_dir = out / "models" / name / f"seed{seed}"
    result = run_dir / "result.json"  # train_model writes it after best.pt: its presence means training finished
    if not result.exists():
        (run_dir / "log.jsonl").unlink(missing_ok=True)  # an interrupted training's log; the retrain starts afresh
        train_model(name, corpus, seed=seed, overrides=overrides, out_dir=run_dir, progress=progress)
    saved = json.loads(result.read_text())
    run = RunResult(**{f.name: saved[f.name] for f in dataclasses.fields(RunResult)})
    return load_model(run_dir / "best.pt"), run


def _train_at(
    name: str,
    corpus: Corpus,
    condition: Condition,
    seed: int,
    seeds_m: Modalities[int],
    overrides: dict[str, Any],
    simulates: bool,
    progress: bool,
) -> Any:
    """The train-and-test protocol: one model trained, selected and tested under `condition`."""
    from ..engine.runs import train_model

    if simulates and condition.rate is not None:
        # EMT-DLFR pairs the complete view with its own incomplete one (official code): complete training split,
        # its missing_rate set to the sweep's rate, validation and test dropped by the static masks.
        data = drop_splits(corpus, condition, ("valid", "test"), seeds_m)
        overrides = {"missing_rate": condition.rate, **overrides}
    else:
        data = drop_splits(corpus, condition, ("train", "valid", "test"), seeds_m)
    return train_model(name, data, seed=seed, overrides=overrides, progress=progress)


def check_settings(out: Path, settings: SweepSettings, corpus: Corpus) -> None:
    """Record the sweep's settings, or refuse to resume a folder that holds a sweep with other settings."""
    path = out / "sweep_config.json"
    current = {**dataclasses.asdict(settings), "source": corpus.source, "data_sha256": corpus.fingerprint()}
    if path.exists():
        saved = json.loads(path.read_text())
        # the data is compared by content: the same path with changed content is another sweep (a folder from before
        # fingerprints were recorded has none to compare)
        changed = sorted(k for k in current if saved.get(k, current[k]) != current[k])
        if changed:
            detail = "; ".join(f"{k}: {saved.get(k)!r} there, {current[k]!r} now" for k in changed)
            raise ValueError(
                f"{out} holds a sweep with other settings ({detail}); rerun with the same settings to resume it, "
                "or pass another --out"
            )
        return
    write_json(path, current)


# ---------------------------------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------------------------------


def collect(
    out: Path,
    models: Sequence[str],
    conditions: Sequence[Condition],
    seeds: Sequence[int],
    keys: Sequence[str],
    *,
    ran: int = 0,
    plots: bool = True,
) -> SweepResult:
    """Read the points of the grid back from disk, aggregate over seeds, compute AUILC and write the reports."""
    points = []
    for m, c, s in itertools.product(models, conditions, seeds):
        path = point_path(out, m, c, s)
        if not path.exists():
            raise ValueError(f"sweep point {path} is missing; rerun the sweep to finish it")
        points.append(json.loads(path.read_text()))
    summary: dict[str, dict[str, dict[str, tuple[float, float]]]] = {}
    for m in models:
        for c in conditions:
            runs = [p["metrics"] for p in points if p["model"] == m and p["condition"] == c.name]
            summary.setdefault(m, {})[c.name] = aggregate(runs)
    areas: dict[str, dict[str, dict[str, float]]] = {}
    notes: list[str] = []
    curve = [c for c in conditions if c.rate is not None]
    if len(curve) >= 2:
        rates = [c.rate for c in curve]
        for m in models:
            for key in keys:
                # (seeds, rates) values. A correlation is undefined (NaN) when the predictions are constant, which
                # is what a model does once every feature is gone (r = 1 with one step per modality); it counts as
                # 0 in the area (no linear association) and the report says where. Other NaNs make the area NaN.
                table = np.array([[_value(points, m, c.name, s, key) for c in curve] for s in seeds])
                undefined = np.isnan(table)
                if key.startswith("corr") and undefined.any():
                    where = sorted({curve[j].label for j in np.nonzero(undefined.any(0))[0]}, key=float)
                    notes.append(f"{m} {key}: undefined (constant predictions) in {int(undefined.sum())} of "
                                 f"{table.size} runs, at r = {', '.join(where)}; counted as 0 in its AUILC")
                    table = np.where(undefined, 0.0, table)
                per_seed = [_area(rates, row) for row in table]
                areas.setdefault(m, {})[key] = {
                    "auilc": _area(rates, table.mean(0)), "std": float(np.std(per_seed))
                }
    result = SweepResult(
        out_dir=out, models=list(models), conditions=list(conditions), seeds=list(seeds), keys=tuple(keys),
        points=points, summary=summary, auilc=areas, ran=ran, notes=notes,
    )
    write_reports(result, plots=plots)
    return result


def _value(points: Sequence[dict[str, Any]], model: str, condition: str, seed: int, key: str) -> float:
    for p in points:
        if p["model"] == model and p["condition"] == condition and p["seed"] == seed:
            return float(p["metrics"][key])
    raise KeyError(f"no point for {model} {condition} seed {seed}")


def _area(rates: Sequence[float], values: Sequence[float]) -> float:
    return auilc(rates, values) if all(math.isfinite(v) for v in values) else math.nan


