"""The Python API the CLI mirrors: train one model for some seeds on a corpus, evaluate a checkpoint."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Recipe
from ..config.overrides import apply_overrides
from ..config.recipes import AUTO_STANDARDISE, AutoPlan, auto_plan
from ..config.registry import create_model, default_recipe, get_entry
from ..data.checks import check_split, labelled, ready_for_training
from ..data.corpus import Corpus
from ..data.standardisation import for_model, standardised
from ..data.tasks import describe_task
from ..io import atomic_write, sha256_file, write_json
from ..outputs import FinishedRunError, claim, prepare_run
from ..trackers import check_trackers, open_trackers
from .baselines import baselines, better, confusion, result_warnings
from .checkpoint import load_model, save_checkpoint
from .evaluate import predict
from .metrics import aggregate, metrics_for
from .train import fit, is_main_process, seed_everything


def resolve_recipe(
    model_name: str, corpus: Corpus, recipe: str | Recipe[Any] | None = "auto"
) -> tuple[str, Recipe[Any]]:
    """The recipe to start from: an explicit dataset name, or with "auto" the corpus's own (``mosi-utterance`` uses
    ``mosi``), else ("auto", the base `config.recipes.auto_plan` chooses by corpus size; `train_model` then searches
    around it); a `Recipe` (e.g. from a recipe file) is used as it is. Returns (recipe name, recipe)."""
    entry = get_entry(model_name)
    if isinstance(recipe, Recipe):
        if not isinstance(recipe.model, entry.config):
            raise ValueError(f"the recipe holds a {type(recipe.model).__name__}, not a config of {model_name!r}")
        return "file", recipe
    if recipe in (None, "", "none", "default"):
        return "default", default_recipe(model_name)
    if recipe != "auto":
        if recipe not in entry.recipes:
            raise ValueError(f"model {model_name!r} has no recipe {recipe!r}; recipes: {', '.join(entry.recipes)}")
        return recipe, entry.recipes[recipe]
    for candidate in (corpus.name, corpus.name.split("-")[0]):
        if candidate in entry.recipes:
            return candidate, entry.recipes[candidate]
    return "auto", auto_plan(model_name, _train_size(corpus)).base


def _train_size(corpus: Corpus) -> int:
    return len(corpus.splits["train"]) if "train" in corpus.splits else 0


@dataclass
class RunResult:
    model: str
    seed: int
    recipe: str
    best_epoch: int
    parameters: int
    valid: dict[str, float]
    test: dict[str, float]
    seconds: float
    out_dir: str | None
    warnings: list[str] = dataclasses.field(default_factory=list)
    """The model does not beat the constant/majority predictor, or collapsed on valid (`engine.baselines`)."""
    auto: dict[str, Any] | None = None
    """With the `auto` recipe and no stored one: the plan, each candidate's valid score and the one kept."""


def train_model(
    model_name: str,
    corpus: Corpus,
    *,
    seed: int = 1111,
    recipe: str | Recipe[Any] | None = "auto",
    overrides: dict[str, Any] | None = None,
    out_dir: Path | str | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    overwrite: bool = False,
    trackers: Sequence[str] = (),
    standardise: bool | None = None,
) -> RunResult:
    """Train one model with one seed; select on validation; touch the test split once, with the selected weights.

    `overrides` are dotted config keys: model fields (``rank``, ``hidden.audio``) or training fields prefixed with
    ``train.`` (``train.lr``). With `out_dir`, writes best.pt, log.jsonl, test_predictions.csv and result.json there.
    `recipe` may be a `Recipe` (e.g. from `config.recipes.load_recipe_file`); `on_epoch` goes to `fit`.

    `out_dir` is held by this process while it trains (a second writer is refused). A finished run there is reused
    when it was trained with the same settings on the same data (by content), refused otherwise; `overwrite=True`
    trains again, keeping the old files in `attempt-N/`, as are those of an earlier attempt that did not finish.
    `trackers` (`affectfuse.trackers`: tensorboard, mlflow, wandb) log the settings and every epoch into `out_dir`.
    `standardise`: train on features z-scored with the train split's statistics (`data.standardisation`; the
    checkpoint keeps them). None (default): as the recipe says, i.e. the `auto` plan of a corpus with no stored recipe
    standardises (`config.recipes.AUTO_STANDARDISE`), a stored recipe does not; a standardised corpus stays so.
    """
    check_trackers(trackers)
    if trackers and out_dir is None:
        raise ValueError(f"trackers {list(trackers)} write into the run's folder: give an output folder")
    corpus = ready_for_training(corpus)
    recipe_name, base = resolve_recipe(model_name, corpus, recipe)
    if (recipe_name == "auto" and AUTO_STANDARDISE) if standardise is None else standardise:
        corpus = ready_for_training(standardised(corpus))
    user = {**(overrides or {}), "train.seed": seed}
    plan = auto_plan(model_name, _train_size(corpus), user_overrides=overrides) if recipe_name == "auto" else None
    config, train = apply_overrides(model_name, user, base)
    search = Search(plan, user) if plan is not None else None
    if out_dir is None or not is_main_process():
        return _train(model_name, corpus, recipe_name, config, train, None, progress, on_epoch, search=search)
    with claim(out_dir):
        request = {"model": model_name, "config": dataclasses.asdict(config), "train": dataclasses.asdict(train),
                   "data_sha256": corpus.fingerprint(), **({"auto_plan": plan.to_dict()} if plan else {})}
        finished = None if overwrite else _finished(Path(out_dir), request)
        if finished is not None:
            return finished
        prepare_run(out_dir, overwrite=overwrite)
        on_epoch, close = open_trackers(trackers, out_dir, f"{model_name} seed {seed}", request, also=on_epoch)
        try:
            return _train(model_name, corpus, recipe_name, config, train, Path(out_dir), progress, on_epoch, request,
                          search=search)
        finally:
            close()


@dataclass
class Search:
    """The `auto` candidates of one run: each trained and early-stopped on valid, the best on valid kept."""

    plan: AutoPlan
    user: dict[str, Any]

    def run(self, model_name: str, corpus: Corpus, out_dir: Path | None, progress: bool,
            on_epoch: Callable[[dict[str, Any]], None] | None) -> tuple[Any, Any, Any, dict[str, Any]]:
        """(model, fit result, train config, record) of the candidate with the best valid monitor."""
        suite = metrics_for(corpus.spec)
        best: tuple[Any, Any, Any, float, str] | None = None
        scores: dict[str, float] = {}
        for label, overrides in self.plan.candidates:
            config, train = apply_overrides(model_name, {**overrides, **self.user}, self.plan.base)
            seed_everything(train.seed)
            model = create_model(model_name, corpus.spec, config)
            where = out_dir / "auto" / label if out_dir is not None else None
            result = fit(model, corpus.split("train"), corpus.split("valid"), train, out_dir=where,
                         progress=progress, on_epoch=on_epoch)
            monitor = suite.monitor(train.monitor)
            value = scores[label] = suite.score(result.valid, monitor)
            if best is None or better(value, best[3], monitor):
                best = (model, result, train, value, label)
        assert best is not None
        model, result, train, _, label = best
        if out_dir is not None:  # the run's log is the kept candidate's (each candidate's stays under auto/)
            shutil.copyfile(out_dir / "auto" / label / "log.jsonl", out_dir / "log.jsonl")
        record = {**self.plan.to_dict(), "valid": scores, "monitor": monitor, "chosen": label}
        return model, result, train, record


def _finished(out: Path, request: dict[str, Any]) -> RunResult | None:
    """The finished run in `out` if it answers `request` exactly; a finished run of other settings is refused."""
    path = out / "result.json"
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text())
        differs = [k for k, v in request.items() if json.loads(json.dumps(v, default=float)) != stored.get(k)]
        optional = {"warnings", "auto"}  # absent from results written before they existed
        run = RunResult(**{f.name: stored[f.name] for f in dataclasses.fields(RunResult)
                           if f.name in stored or f.name not in optional})
    except (OSError, ValueError, KeyError, TypeError):
        differs, run = ["result.json (unreadable)"], None
    if differs or run is None:
        raise FinishedRunError(
            f"{out} holds a finished run with other {', '.join(differs)}; use --overwrite (overwrite=True) to "
            "replace it — the old files are kept in attempt-N/ — or choose another output folder"
        )
    return run


def _train(
    model_name: str,
    corpus: Corpus,
    recipe_name: str,
    config: Any,
    train: Any,
    out_dir: Path | None,
    progress: bool,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    request: dict[str, Any] | None = None,
    *,
    search: Search | None = None,
) -> RunResult:
    start = time.perf_counter()
    auto = None
    if search is not None:
        model, result, train, auto = search.run(model_name, corpus, out_dir, progress, on_epoch)
        auto["features"] = "standardised on train" if corpus.spec.standardisation is not None else "raw"
    else:
        seed_everything(train.seed)
        model = create_model(model_name, corpus.spec, config)
        result = fit(
            model, corpus.split("train"), corpus.split("valid"), train, out_dir=out_dir, progress=progress,
            on_epoch=on_epoch,
        )
    _, valid_predictions, valid_labels = predict(model, corpus.split("valid"))
    ids, predictions, labels = predict(model, corpus.split("test"))
    test = metrics_for(corpus.spec).compute(predictions, labels)
    warned = result_warnings(model_name, test, corpus, valid_predictions, valid_labels)
    run = RunResult(
        model=model_name,
        seed=train.seed,
        recipe=recipe_name,
        best_epoch=result.best_epoch,
        parameters=sum(p.numel() for p in model.parameters()),
        valid=result.valid,
        test=test,
        seconds=round(time.perf_counter() - start, 2),
        out_dir=str(out_dir) if out_dir is not None else None,
        warnings=warned,
        auto=auto,
    )
    if out_dir is not None:
        out = out_dir
        save_checkpoint(
            out / "best.pt",
            model,
            train=train,
            metrics={"valid": result.valid, "test": test, "epoch": result.best_epoch},
        )
        write_predictions(out / "test_predictions.csv", ids, predictions, labels, corpus.spec.targets)
        # written last: a result.json describes a complete run, and names the checkpoint it describes
        write_json(
            out / "result.json",
            {
                **dataclasses.asdict(run),
                **(request or {}),
                "data": corpus.source,
                "task": describe_task(corpus.spec),
                "standardised": corpus.spec.standardisation is not None,
                "baselines": {name: b.to_dict() for name, b in baselines(corpus).items()},
                **({"test_confusion": confusion(predictions, labels)} if corpus.spec.task == "classification" else {}),
                "checkpoint": "best.pt",
                "checkpoint_sha256": sha256_file(out / "best.pt"),
            },
        )
    return run


def write_predictions(
    path: Path | str, ids: list[str], predictions: np.ndarray, labels: np.ndarray, targets: tuple[str, ...]
) -> Path:
    """One row per sample: id, then label and prediction per target (class logits flattened for classification)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    flat = predictions.reshape(len(ids), len(targets), -1)
    width = flat.shape[-1]
    header = ["id"]
    for t in targets:
        header += [f"label_{t}"] + ([f"prediction_{t}"] if width == 1 else [f"logit_{t}_{c}" for c in range(width)])
    writer.writerow(header)
    for i, sample in enumerate(ids):
        row: list[Any] = [sample]
        for k in range(len(targets)):
            row += [labels[i, k].item(), *flat[i, k].tolist()]
        writer.writerow(row)
    return atomic_write(path, lambda f: f.write(buffer.getvalue()), mode="w")


def train_many(
    models: list[str], corpus: Corpus, *, seeds: list[int], out_dir: Path | str | None = None, **kwargs: Any
) -> dict[str, list[RunResult]]:
    """Every model x seed; each seed keeps its own checkpoint and predictions under out_dir/<model>/seed<N>/.

    `out_dir` is held for the whole grid; finished seeds of the same settings are reused, so a killed grid resumes.
    """
    results: dict[str, list[RunResult]] = {}
    for name in models:
        get_entry(name)  # fail on a typo before training anything
    with claim(out_dir) if out_dir is not None and is_main_process() else contextlib.nullcontext():
        for name in models:
            for seed in seeds:
                run_dir = Path(out_dir) / name / f"seed{seed}" if out_dir is not None else None
                results.setdefault(name, []).append(train_model(name, corpus, seed=seed, out_dir=run_dir, **kwargs))
    return results


def summarise(results: dict[str, list[RunResult]], split: str = "test") -> dict[str, dict[str, tuple[float, float]]]:
    """mean and std over seeds of every metric, per model."""
    return {name: aggregate([getattr(r, split) for r in runs]) for name, runs in results.items()}


def evaluate_checkpoint(checkpoint: Path | str, corpus: Corpus, *, split: str = "test") -> dict[str, float]:
    """Metrics of a saved model on one split of a corpus, after checking the data fits the model. Raw features are
    standardised with the model's statistics when it was trained on standardised ones (`data.standardisation`)."""
    model = load_model(checkpoint)
    corpus = for_model(model.spec, corpus)
    problems = model.spec.compatible_with(corpus.spec)
    if problems:
        raise ValueError(
            f"checkpoint {checkpoint} cannot be evaluated on {corpus.source or corpus.name}: " + "; ".join(problems)
        )
    scored = check_split(corpus, split)
    unlabelled = int((~labelled(scored)).sum())
    if unlabelled:
        raise ValueError(
            f"{unlabelled} of {len(scored)} samples of split {split!r} are unlabelled (NaN labels); evaluate scores "
            "labelled data only — use `affectfuse predict` (or affectfuse.predict) for unlabelled clips"
        )
    _, predictions, labels = predict(model, scored)
    return metrics_for(model.spec).compute(predictions, labels)
