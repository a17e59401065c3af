"""Hyper-parameter search with Optuna: `affectfuse tune --model NAME --data SPEC --trials N`.

Each trial draws a configuration from the model's search space (the `SEARCH_SPACE` dict declared in its model file,
next to its config), trains it with the one trainer, and is scored by the best validation value of the monitored
metric (the recipe's `monitor`; `auto`: the metric family's default, e.g. MAE for MOSI). The test split is never
used. The trainer reports every epoch's validation value to Optuna, and the median pruner stops a trial whose best
value so far is worse than the median of earlier trials at the same epoch.

Output folder (default runs/tune/<model>-<data>):
  study.sqlite  Optuna's own storage: rerunning the command continues the study until it has N finished trials
  trials.csv    one row per trial: state, value, epochs run, parameters
  recipe.json   the best trial's full model and training configuration, for `affectfuse train --recipe-file`

Search-space format (plain values, so model files import nothing for it)::

    SEARCH_SPACE = {
        "rank": ("choice", [1, 4, 8, 16]),       # categorical
        "hidden.text": ("int", 32, 128),          # integer range, both ends included
        "dropout.text": ("float", 0.0, 0.5),      # uniform
        "train.lr": ("log", 1e-4, 1e-2),          # log-uniform
    }

Keys are override keys: model config fields (dotted into nested ones) or `train.` fields.
"""

from __future__ import annotations

import csv
import importlib
import io
import logging
import math
from pathlib import Path
from typing import Any

from ..config.overrides import apply_overrides
from ..config.recipes import write_recipe
from ..config.registry import get_entry
from ..io import atomic_write
from ..outputs import claim
from ..progress import job_bar

logger = logging.getLogger(__name__)

KINDS = ("choice", "int", "float", "log")


def search_space(model: str) -> dict[str, tuple[Any, ...]]:
    """The model's declared search space, checked: known kinds, valid ranges, keys that exist in its configs."""
    entry = get_entry(model)
    space = getattr(importlib.import_module(entry.cls.__module__), "SEARCH_SPACE", None)
    if not space:
        raise ValueError(f"model {model!r} declares no SEARCH_SPACE in {entry.cls.__module__}; nothing to tune")
    for key, spec in space.items():
        kind = spec[0] if isinstance(spec, tuple) and spec else None
        if kind not in KINDS:
            raise ValueError(f"{model} SEARCH_SPACE[{key!r}] = {spec!r}: the kind must be one of {KINDS}")
        if kind == "choice" and not (len(spec) == 2 and isinstance(spec[1], list | tuple) and spec[1]):
            raise ValueError(f"{model} SEARCH_SPACE[{key!r}]: expected ('choice', [values...]), got {spec!r}")
        if kind != "choice" and not (len(spec) == 3 and spec[1] < spec[2] and (kind != "log" or spec[1] > 0)):
            raise ValueError(f"{model} SEARCH_SPACE[{key!r}]: expected ({kind!r}, low, high) with low < high"
                             f"{' and low > 0' if kind == 'log' else ''}, got {spec!r}")
    low = {k: (s[1][0] if s[0] == "choice" else s[1]) for k, s in space.items()}  # every key must apply
    apply_overrides(model, low)
    return dict(space)


def suggest(trial: Any, space: dict[str, tuple[Any, ...]]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, spec in space.items():
        kind = spec[0]
        if kind == "choice":
            values[key] = trial.suggest_categorical(key, list(spec[1]))
        elif kind == "int":
            values[key] = trial.suggest_int(key, int(spec[1]), int(spec[2]))
        else:
            values[key] = trial.suggest_float(key, float(spec[1]), float(spec[2]), log=kind == "log")
    return values


def _optuna() -> Any:
    try:
        import optuna
    except ModuleNotFoundError:
        raise ValueError("tune needs the optuna package: pip install 'affectfuse[tune]'") from None
    return optuna


def tune(
    model: str,
    data: str,
    *,
    trials: int = 10,
    seed: int = 1111,
    recipe: str = "auto",
    overrides: dict[str, Any] | None = None,
    out_dir: Path | str | None = None,
    nonfinite: str = "error",
    log: Any = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Search until the study in `out_dir` has `trials` finished (complete or pruned) trials; write recipe.json.

    `overrides` are fixed for every trial (e.g. ``{"train.max_epochs": 20}``); the search space may not repeat them.
    Every trial trains with the same `seed`, so trials differ only by their configuration. Messages go to `log`
    (default: this module's logger); `progress` draws an overall bar of the trials above each trial's epoch bar.
    """
    optuna = _optuna()
    from ..data.datasets import load_data
    from ..engine.metrics import higher_is_better, metrics_for
    from ..engine.runs import resolve_recipe, train_model
    from .plan import slug

    if trials < 1:
        raise ValueError(f"--trials must be >= 1, got {trials}")
    fixed = dict(overrides or {})
    space = search_space(model)
    clash = sorted(set(space) & set(fixed))
    if clash:
        raise ValueError(f"--set {clash} would fix parameters the search space of {model!r} searches; drop them")
    apply_overrides(model, fixed)  # typos fail before any training
    corpus = load_data(data, nonfinite=nonfinite)
    recipe_name, base = resolve_recipe(model, corpus, recipe)
    monitor_key = base.train.monitor if "train.monitor" not in fixed else str(fixed["train.monitor"])
    monitor = metrics_for(corpus.spec).default_monitor if monitor_key == "auto" else monitor_key
    direction = "maximize" if higher_is_better(monitor) else "minimize"
    out = Path(out_dir or f"runs/tune/{model}-{slug(data)}")
    with claim(out):
        out.mkdir(parents=True, exist_ok=True)

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            study_name=f"{model}-{slug(data)}",
            storage=f"sqlite:///{(out / 'study.sqlite').resolve()}",
            load_if_exists=True,
            direction=direction,
            sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, trials)),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
        )

        def objective(trial: Any) -> float:
            params = suggest(trial, space)

            def report(record: dict[str, Any]) -> None:
                value = record["valid"][monitor]
                trial.set_user_attr("epochs", record["epoch"] + 1)
                if math.isfinite(value):
                    trial.report(value, record["epoch"])
                if trial.should_prune():
                    raise optuna.TrialPruned(f"epoch {record['epoch']}: validation {monitor} {value:.4f}")

            try:
                result = train_model(model, corpus, seed=seed, recipe=recipe, overrides={**fixed, **params},
                                     progress=progress, on_epoch=report)
            except FloatingPointError as error:  # a diverging configuration is a bad trial, not a crash
                trial.set_user_attr("error", str(error))
                raise optuna.TrialPruned(str(error)) from None
            return float(result.valid[monitor])

        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        remaining = trials - len(study.get_trials(states=finished))
        if remaining > 0:
            say = log or logger.info
            say(f"tune {model} on {data}: {remaining} trial(s) to run, {direction} validation {monitor}")
            with job_bar(trials, done=trials - remaining, desc=f"tune {model}", enabled=progress,
                         unit="trial") as bar:

                def finished_trial(study: Any, trial: Any) -> None:
                    bar.update(1)
                    value = "pruned" if trial.state == optuna.trial.TrialState.PRUNED else f"{trial.value:.4f}"
                    say(f"  trial {trial.number}: {value} ({trial.user_attrs.get('epochs', '?')} epochs) "
                        f"{trial.params}")

                study.optimize(objective, n_trials=remaining, callbacks=[finished_trial], catch=())
        complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        if not complete:
            raise ValueError(f"tune {model}: no trial completed (all {len(study.trials)} pruned or failed)")
        best = study.best_trial
        write_trials(out / "trials.csv", study.trials)
        recipe_path = write_recipe(
            out / "recipe.json",
            model,
            base,
            {**fixed, **best.params},
            source=(f"affectfuse tune: Optuna TPE + median pruning, {len(complete)} complete / {len(study.trials)} "
                    f"trials on {data} (seed {seed}), best validation {monitor} {best.value:.4f} "
                    f"(trial {best.number}), "
                    f"starting from recipe {recipe_name!r}"),
            extra={"tuned": best.params, "fixed": fixed, "monitor": monitor, "best_valid": best.value,
                   "best_trial": best.number, "data": data, "trials": len(study.trials),
                   "pruned": len(study.get_trials(states=(optuna.trial.TrialState.PRUNED,)))},
        )
        return {"recipe_file": str(recipe_path), "best_params": best.params, "best_valid": best.value,
                "monitor": monitor, "trials": len(study.trials), "complete": len(complete), "out": str(out)}


def write_trials(path: Path, trials: list[Any]) -> Path:
    keys = sorted({k for t in trials for k in t.params})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["trial", "state", "value", "epochs", *keys])
    for t in trials:
        writer.writerow([t.number, t.state.name, "" if t.value is None else repr(t.value),
                         t.user_attrs.get("epochs", ""), *(t.params.get(k, "") for k in keys)])
    return atomic_write(path, lambda f: f.write(buffer.getvalue()), mode="w")


