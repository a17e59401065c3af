"""Command line: parsing and wiring only; every command calls one library function.

affectfuse models [--json]
affectfuse data inspect PATH|SPEC [--json]
affectfuse data write SPEC OUT.pkl          (e.g. the synthetic corpus, in the MMSA pickle layout)
affectfuse train --model NAME [NAME ...] --data SPEC [--recipe DATASET] [--seed N ...|--seeds K] [--out DIR]
                 [--set KEY=VALUE ...] [--device cpu|cuda|auto] [--precision fp32|bf16|fp16] [--compile] [--json]
affectfuse evaluate CHECKPOINT --data SPEC [--split test] [--json]
affectfuse run EXPERIMENT.toml [--out DIR] [--workers N] [--ray ADDRESS|local] [--tensorboard] [--report-only]
               (grid of models x data x settings x seeds; resumable; SQLite store, tables, plots)
affectfuse tune --model NAME --data SPEC [--trials 10] [--set KEY=VALUE ...] [--out DIR]   (Optuna; writes recipe.json)
affectfuse train ... --recipe-file recipe.json   (start from a tuned recipe)
affectfuse profile --model NAME [NAME ...]|--all [--shape mosi|mosei|sims|iemocap|T_l,T_a,T_v] [--batch B]
                   [--device cpu|cuda] [--precision fp32|bf16|fp16] [--compile] [--json]
affectfuse sweep --model NAME [NAME ...] --data SPEC [--rates 0:1:0.1] [--seeds K] [--protocol test-only|train-and-test]
                 [--missing feature|modality] [--quick] [--out DIR]   (robustness to missing features, resumable)
affectfuse extract CLIP|FOLDER --out DATASET.pkl [--labels CSV] [--transcripts CSV] [--words CSV|CSD]
                   [--aligned] [--workers N] [--json]
affectfuse predict CLIP --checkpoint CKPT [--transcript TEXT] [--json]
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from . import models as _models  # noqa: F401  (registers the methods)
from .experiments.cli import RunArgs, cmd_run
from .extract.cli import ExtractArgs, PredictArgs, cmd_extract, cmd_predict
from .profile import ProfileArgs, cmd_profile
from .registry import get_entry, list_models
from .sweep import SweepArgs, cmd_sweep
from .tune import TuneArgs, cmd_tune

Positional = tyro.conf.Positional


@dataclass
class ModelsArgs:
    """List the registered models with their recipes."""

    json: bool = False
    """Print one JSON object instead of a table."""


@dataclass
class InspectArgs:
    """Describe a corpus: format, splits, sizes, dims, lengths (min/mean/max), label range, NaN/inf counts, caveats."""

    data: Positional[str]
    """A path (format detected from content), `synthetic[:key=value,...]`, `mosi-utterance[:ROOT]` or `pom[:ROOT]`."""
    json: bool = False


@dataclass
class WriteArgs:
    """Write a corpus (e.g. the synthetic one) to disk in the MMSA pickle layout (`unaligned_50.pkl`-style)."""

    data: Positional[str]
    """A data spec, e.g. `synthetic:aligned=false,missing_modality=0.2`."""
    out: Positional[Path]
    """The .pkl file to write (atomically)."""
    nonfinite: Literal["error", "zero"] = "error"


@dataclass
class TrainArgs:
    """Train models (each seed separately), select on validation, report the test split."""

    model: Annotated[tuple[str, ...], tyro.conf.arg(aliases=("-m",))]
    """One or more registered model names (see `affectfuse models`)."""
    data: str = "synthetic"
    """A path (format detected from content), `synthetic[:key=value,...]`, `mosi-utterance[:ROOT]` or `pom[:ROOT]`."""
    recipe: str = "auto"
    """Dataset whose paper recipe to start from (`mosi`, `pom`, ...); `auto`: the corpus's own; `default`: none."""
    recipe_file: Path | None = None
    """A recipe file (e.g. written by `affectfuse tune`) to start from instead of --recipe."""
    seed: tuple[int, ...] = (1111,)
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
    json: bool = False
    quiet: bool = False
    """No progress bars."""


@dataclass
class EvaluateArgs:
    """Score a checkpoint on a corpus split with the paper metrics."""

    checkpoint: Positional[Path]
    data: str
    """A path, `synthetic[:...]`, `mosi-utterance[:ROOT]` or `pom[:ROOT]`."""
    split: str = "test"
    nonfinite: Literal["error", "zero"] = "error"
    json: bool = False


def cmd_models(args: ModelsArgs) -> None:
    rows = {
        name: {"config": get_entry(name).config.__name__, "recipes": list(get_entry(name).recipes)}
        for name in list_models()
    }
    if args.json:
        print(json.dumps(rows))
        return
    for name, row in rows.items():
        print(f"{name:12s} {row['config']:14s} recipes: {', '.join(row['recipes'])}")


def cmd_inspect(args: InspectArgs) -> None:
    from .data.datasets import inspect_path

    report = inspect_path(args.data)
    if args.json:
        print(json.dumps(report, default=str))
        return
    targets = report["targets"]
    shown = ", ".join(targets) if len(targets) <= 4 else f"{targets[0]} … {targets[-1]}"
    kind = f"{report['num_classes']}-class" if report["task"] == "classification" else "regression"
    print(f"{report['name']}: {report['source']}")
    print(
        f"  {kind}, {len(targets)} target(s) ({shown}), metrics: {report['metric_family']}, "
        f"{'aligned' if report['aligned'] else 'unaligned'}; extractors: {report['extractors']}"
    )
    for name, split in report["splits"].items():
        parts = []
        for m, info in split["modalities"].items():
            length = info["length"]
            parts.append(
                f"{m} {info['dim']}-d x T {length['min']:g}/{length['mean']:.1f}/{length['max']:g}"
                + (f" ({info['empty']} empty)" if info["empty"] else "")
            )
        labels = split["labels"]
        print(
            f"  {name:5s} {split['size']:6d} samples | {' | '.join(parts)} | "
            f"labels {labels['min']:.3g} .. {labels['max']:.3g} (mean {labels['mean']:.3g})"
        )
    replaced = report["nonfinite"]["replaced_at_load"]
    print(f"  NaN/inf feature values: {sum(replaced.values())}" + (f" {replaced}" if replaced else ""))
    for note in report["notes"]:
        print(f"  note: {note}")


def cmd_write(args: WriteArgs) -> None:
    from .data.datasets import load_data
    from .data.formats import write_mmsa_pickle

    corpus = load_data(args.data, nonfinite=args.nonfinite)
    path = write_mmsa_pickle(corpus, args.out)
    sizes = ", ".join(f"{name} {len(split)}" for name, split in corpus.splits.items())
    print(f"wrote {corpus.name} ({sizes}) to {path} in the MMSA pickle layout")


def parse_overrides(items: tuple[str, ...]) -> dict[str, str]:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE (e.g. rank=8 or train.lr=1e-3), got {item!r}")
        overrides[key.strip()] = value.strip()
    return overrides


def cmd_train(args: TrainArgs) -> None:
    from .api import summarise, train_many
    from .data.datasets import load_data
    from .io import write_json
    from .metrics import aggregate, format_table, metrics_for

    overrides: dict[str, Any] = parse_overrides(args.set)
    if args.device:
        overrides["train.device"] = args.device
    if args.precision is not None:
        overrides["train.precision"] = args.precision
    if args.compile:
        overrides["train.compile"] = True
    seeds = list(args.seed) if args.seeds <= 0 else [args.seed[0] + i for i in range(args.seeds)]
    corpus = load_data(args.data, nonfinite=args.nonfinite)
    recipe: Any = args.recipe
    if args.recipe_file is not None:
        from .tune import load_recipe_file

        recipe_model, recipe = load_recipe_file(args.recipe_file)
        if list(args.model) != [recipe_model]:
            raise ValueError(f"recipe file {args.recipe_file} is for model {recipe_model!r}; got --model {args.model}")
    results = train_many(
        list(args.model),
        corpus,
        seeds=seeds,
        out_dir=args.out,
        recipe=recipe,
        overrides=overrides,
        progress=not (args.quiet or args.json),
    )
    from .train import is_main_process

    if not is_main_process():
        return  # under torchrun every process trained together; rank 0 reports
    summary = summarise(results)
    payload = {
        "data": corpus.source or args.data,
        "seeds": seeds,
        "test": {m: {k: {"mean": v[0], "std": v[1]} for k, v in s.items()} for m, s in summary.items()},
        "runs": [dataclasses.asdict(r) for runs in results.values() for r in runs],
    }
    write_json(args.out / "summary.json", payload)
    if args.json:
        print(json.dumps(payload, default=float))
        return
    suite = metrics_for(corpus.spec)
    print(f"\n{corpus.name}: test split, mean ± std over seeds {seeds} (each checkpoint selected on validation)")
    print(format_table(summary, suite.keys))
    if corpus.spec.num_targets > 1:
        print(f"\nper target ({', '.join(suite.keys)} are means over the {corpus.spec.num_targets} targets)")
        print(per_target_table(summary, corpus.spec.targets))
    print("\n| model | parameters | seconds per seed (mean ± std) |\n| --- | ---: | ---: |")
    for name, runs in results.items():
        seconds = aggregate([{"s": r.seconds} for r in runs])["s"]
        print(f"| {name} | {runs[0].parameters:,} | {seconds[0]:.1f} ± {seconds[1]:.1f} |")
    print(f"\nper-seed checkpoints, logs and predictions under {args.out}/")


def per_target_table(summary: dict[str, dict[str, tuple[float, float]]], targets: tuple[str, ...]) -> str:
    """Rows = targets, columns = model/metric, for metric keys of the form `<metric>_<target>`."""
    from .metrics import format_table

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
    from .api import evaluate_checkpoint
    from .data.datasets import load_data

    corpus = load_data(args.data, nonfinite=args.nonfinite)
    scores = evaluate_checkpoint(args.checkpoint, corpus, split=args.split)
    if args.json:
        print(json.dumps({"checkpoint": str(args.checkpoint), "split": args.split, "metrics": scores}, default=float))
        return
    for key, value in scores.items():
        print(f"{key:20s} {value:.4f}")


COMMANDS = {
    "models": (ModelsArgs, cmd_models),
    "train": (TrainArgs, cmd_train),
    "evaluate": (EvaluateArgs, cmd_evaluate),
    "run": (RunArgs, cmd_run),
    "tune": (TuneArgs, cmd_tune),
    "profile": (ProfileArgs, cmd_profile),
    "extract": (ExtractArgs, cmd_extract),
    "predict": (PredictArgs, cmd_predict),
    "sweep": (SweepArgs, cmd_sweep),
}
USAGE = __doc__ or ""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE.strip())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "data":
        data_commands = {"inspect": (InspectArgs, cmd_inspect), "write": (WriteArgs, cmd_write)}
        if not rest or rest[0] not in data_commands:
            print(
                "usage: affectfuse data inspect PATH|SPEC [--json] | affectfuse data write SPEC OUT.pkl",
                file=sys.stderr,
            )
            return 2
        (spec, handler), prog, rest = data_commands[rest[0]], f"affectfuse data {rest[0]}", rest[1:]
    elif command in COMMANDS:
        spec, handler = COMMANDS[command]
        prog = f"affectfuse {command}"
    else:
        print(
            f"affectfuse: unknown command {command!r}; commands: data inspect, data write, {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    args = tyro.cli(spec, args=rest, prog=prog)
    try:
        handler(args)
    except (ValueError, FileNotFoundError, KeyError, FloatingPointError) as error:
        # User errors (bad data, unknown names, corrupted files) end with their message, not a traceback.
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"affectfuse {command}: error: {message}", file=sys.stderr)
        return 1
    return 0
