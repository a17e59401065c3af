"""`affectfuse train | evaluate`: train models over seeds and report the test split; score a checkpoint."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

logger = logging.getLogger(__name__)
Flag = tyro.conf.FlagCreatePairsOff[bool]


@dataclass
class TrainArgs:
    """Train models (each seed separately), select on validation, report the test split."""

    model: Annotated[tuple[str, ...], tyro.conf.arg(aliases=("-m",))]
    """One or more registered model names (see `affectfuse models`)."""
    data: Annotated[str, tyro.conf.arg(aliases=("-d",))] = "synthetic"
    """A path (format detected from content), MMSA's `mosi`/`mosei`/`sims`/`iemocap` (`:aligned`), `synthetic[:...]`,
    `mosi-utterance[:ROOT]` or `pom[:ROOT]`."""
    recipe: str = "auto"
    """Dataset whose paper recipe to start from (`mosi`, `pom`, ...); `auto`: the corpus's own; `default`: none."""
    recipe_file: Path | None = None
    """A recipe file (e.g. written by `affectfuse tune`) to start from instead of --recipe."""
    seed: Annotated[tuple[int, ...], tyro.conf.arg(aliases=("-s",))] = (1111,)
    """Seeds to run (MMSA reports 1111-1115)."""
    seeds: int = 0
    """Shorthand: run this many consecutive seeds starting at the first --seed."""
    set: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """Config overrides KEY=VALUE, one per --set: model fields (`rank=8`, `hidden.audio=16`) or `train.lr=1e-3`."""
    out: Path = Path("runs")
    """Output folder: <out>/<model>/seed<N>/{best.pt, log.jsonl, test_predictions.csv, result.json}, summary.json."""
    device: str = ""
    """`cpu`, `cuda`, `cuda:N` or `auto` (default: the recipe's, i.e. auto)."""
    precision: Literal["fp32", "bf16", "fp16"] | None = None
    """Autocast of the training loss (same as `--set train.precision=...`): bf16/fp16 on CUDA, bf16 on CPU."""
    compile: bool = False
    """Train through `torch.compile(model.loss)` (same as `--set train.compile=true`)."""
    nonfinite: Literal["error", "zero"] = "error"
    """What to do with NaN/inf features: refuse (default) or replace by 0 with a warning."""
    tracker: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """Experiment trackers, one per --tracker (`tensorboard`, `mlflow`, `wandb`): local files in each run's folder."""
    task: Literal["auto", "regression", "classification"] = "auto"
    """What the labels are: `auto` reads it from them (`data inspect` shows it), or force scores or classes."""
    label_centre: float | None = None
    """The neutral point of a rated scale (e.g. 3 on 1..5): Acc-2/F1 compare above vs below it."""
    standardise: Flag = False
    """Z-score every feature dimension with the train split's statistics; the checkpoint keeps them and applies them
    to raw features itself (`evaluate`, `predict`). The `auto` plan of a corpus with no stored recipe does it
    without this flag; a stored recipe (mosi, pom, ...) does not."""
    no_standardise: Flag = False
    """Train on the raw features, also under the `auto` plan (which standardises by default)."""
    json: bool = False
    quiet: bool = False
    """No progress bars."""
    overwrite: bool = False
    """Train again the runs that already finished in --out with other settings or data (their files move to
    attempt-N/); without it such runs are refused, and finished runs of the same settings are reused."""


@dataclass
class EvaluateArgs:
    """Score a checkpoint on a corpus split with the paper metrics."""

    checkpoint: tyro.conf.Positional[Path]
    data: str
    """A path, `synthetic[:...]`, `mosi-utterance[:ROOT]` or `pom[:ROOT]`."""
    split: str = "test"
    nonfinite: Literal["error", "zero"] = "error"
    task: Literal["auto", "regression", "classification"] = "auto"
    """What the labels are: `auto` reads it from them (`data inspect` shows it), or force scores or classes."""
    label_centre: float | None = None
    """The neutral point of a rated scale (e.g. 3 on 1..5): Acc-2/F1 compare above vs below it."""
    standardise: Flag = False
    """Z-score the features with this corpus's own train statistics. Not needed: a checkpoint trained on standardised
    features standardises raw ones with its own statistics (and refuses features standardised with others)."""
    json: bool = False



def cmd_train(args: TrainArgs) -> None:
    from ..config.overrides import parse_overrides, seed_list
    from ..data.checks import ready_for_training
    from ..data.datasets import load_data
    from ..data.tasks import describe_task
    from ..engine.baselines import baselines, verdict_table, verdicts
    from ..engine.metrics import aggregate, format_table, metrics_for
    from ..engine.runs import summarise, train_many
    from ..io import write_json
    from ..outputs import claim
    from . import progress_shown

    overrides: dict[str, Any] = parse_overrides(args.set)
    if args.device:
        overrides["train.device"] = args.device
    if args.precision is not None:
        overrides["train.precision"] = args.precision
    if args.compile:
        overrides["train.compile"] = True
    seeds = seed_list(args.seed, args.seeds)
    if args.standardise and args.no_standardise:
        raise ValueError("--standardise and --no-standardise contradict each other; give one")
    corpus = load_data(args.data, nonfinite=args.nonfinite, task=args.task, label_centre=args.label_centre,
                       standardise=args.standardise)
    from ..engine.train import is_main_process

    # one writer per output folder, summary.json included (under torchrun rank 0 writes)
    with claim(args.out) if is_main_process() else contextlib.nullcontext():
        recipe: Any = args.recipe
        if args.recipe_file is not None:
            from ..config.recipes import load_recipe_file

            recipe_model, recipe = load_recipe_file(args.recipe_file)
            if list(args.model) != [recipe_model]:
                raise ValueError(
                    f"recipe file {args.recipe_file} is for model {recipe_model!r}; got --model {args.model}"
                )
        results = train_many(
            list(args.model),
            corpus,
            seeds=seeds,
            out_dir=args.out,
            recipe=recipe,
            overrides=overrides,
            progress=progress_shown(args.quiet, args.json),
            overwrite=args.overwrite,
            trackers=args.tracker,
            standardise=False if args.no_standardise else None,
        )
        if not is_main_process():
            return  # under torchrun every process trained together; rank 0 reports
        summary = summarise(results)
        ready = ready_for_training(corpus)
        warned = [w for runs in results.values() for r in runs for w in r.warnings]
        payload = {
            "data": corpus.source or args.data,
            "task": describe_task(corpus.spec),
            "seeds": seeds,
            "test": {m: {k: {"mean": v[0], "std": v[1]} for k, v in s.items()} for m, s in summary.items()},
            "baselines": {name: b.to_dict() for name, b in baselines(ready).items()},
            "versus_baselines": verdicts(summary, ready),
            "warnings": warned,
            "runs": [dataclasses.asdict(r) for runs in results.values() for r in runs],
        }
        write_json(args.out / "summary.json", payload)
        if args.json:
            print(json.dumps(payload, default=float))
            log_warnings(warned)
            return
        suite = metrics_for(corpus.spec)
        print(f"\n{corpus.name} ({describe_task(corpus.spec)}): test split, mean ± std over seeds {seeds} (each "
              "checkpoint selected on validation), and two baselines fitted on train, tuned on valid")
        print(format_table({**summary, **{f"{n} (baseline)": b.test for n, b in baselines(ready).items()}},
                           suite.keys))
        print(f"\nversus the baselines (test means):\n{verdict_table(summary, ready)}")
        log_warnings(warned)
        if corpus.spec.num_targets > 1:
            print(f"\nper target ({', '.join(suite.keys)} are means over the {corpus.spec.num_targets} targets)")
            print(per_target_table(summary, corpus.spec.targets))
        print("\n| model | parameters | seconds per seed (mean ± std) |\n| --- | ---: | ---: |")
        for name, runs in results.items():
            seconds = aggregate([{"s": r.seconds} for r in runs])["s"]
            print(f"| {name} | {runs[0].parameters:,} | {seconds[0]:.1f} ± {seconds[1]:.1f} |")
        logger.info(f"\nper-seed checkpoints, logs and predictions under {args.out}/")


def log_warnings(lines: list[str]) -> None:
    """The runs' warnings (`engine.baselines`; each is in its run's result.json too), once each, through the logger:
    on stderr, shown by default and under -q, never mixed into the tables or the JSON on stdout."""
    for line in dict.fromkeys(lines):
        logger.warning(f"warning: {line}")


def per_target_table(summary: dict[str, dict[str, tuple[float, float]]], targets: tuple[str, ...]) -> str:
    """Rows = targets, columns = model/metric, for metric keys of the form `<metric>_<target>`."""
    from ..engine.metrics import format_table

    rows: dict[str, dict[str, tuple[float, float]]] = {}
    columns: list[str] = []
    for model, scores in summary.items():
        for key, value in scores.items():
            for target in targets:
                suffix = f"_{target.lower()}"
                if key.endswith(suffix):
                    column = f"{model} {key.removesuffix(suffix)}"
                    rows.setdefault(target, {})[column] = value
                    columns += [column] if column not in columns else []
    return format_table(rows, columns, row_header="target")


def cmd_evaluate(args: EvaluateArgs) -> None:
    from ..data.datasets import load_data
    from ..engine.runs import evaluate_checkpoint

    corpus = load_data(args.data, nonfinite=args.nonfinite, task=args.task, label_centre=args.label_centre,
                       standardise=args.standardise)
    scores = evaluate_checkpoint(args.checkpoint, corpus, split=args.split)
    found = scored_baselines(corpus, args.split)
    if args.json:
        print(json.dumps({"checkpoint": str(args.checkpoint), "split": args.split, "metrics": scores,
                          "baselines": {n: {**b.to_dict(), "scores": b.test if args.split == "test" else b.valid}
                                        for n, b in found.items()}}, default=float))
        return
    names = list(found)
    print(f"{'metric':20s} {'model':>10s}" + "".join(f" {n:>10s}" for n in names))
    for key, value in scores.items():
        others = "".join(f" {(found[n].test if args.split == 'test' else found[n].valid).get(key, float('nan')):10.4f}"
                         for n in names)
        print(f"{key:20s} {value:10.4f}{others}")
    if not found:
        print("(no baselines: they need the corpus's train and valid splits, and the split scored is test or valid)")


def scored_baselines(corpus: Any, split: str) -> dict[str, Any]:
    """The baselines of `corpus` when it has train/valid/test and `split` is valid or test, else {}."""
    from ..data.checks import ready_for_training
    from ..engine.baselines import baselines

    if split not in ("valid", "test") or not {"train", "valid", "test"} <= set(corpus.splits):
        return {}
    return baselines(ready_for_training(corpus))
