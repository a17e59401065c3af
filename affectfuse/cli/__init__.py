"""Command line: parsing and dispatch only; one module per command, each calling library functions.

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
affectfuse convert OFFICIAL.pt --model NAME --data SPEC --out CKPT [--source official|mmsa] [--set KEY=VALUE ...]
affectfuse table emt-incomplete|emt-fusion|dmd-ablation [--data SPEC] [--seeds 3] [--rates 0,0.5,1] [--quick]
                 [--set KEY=VALUE ...] [--shape mosi] [--out docs/tables/NAME.md]   (the papers' tables as Markdown)
"""

from __future__ import annotations

import difflib
import importlib
import sys

import tyro

# command -> (module under affectfuse.cli, its argument dataclass, its handler); imported only when that command runs,
# so `affectfuse --help` does not pay for torch and every model
COMMANDS: dict[str, tuple[str, str, str]] = {
    "models": ("models", "ModelsArgs", "cmd_models"),
    "train": ("train", "TrainArgs", "cmd_train"),
    "evaluate": ("train", "EvaluateArgs", "cmd_evaluate"),
    "run": ("run", "RunArgs", "cmd_run"),
    "tune": ("tune", "TuneArgs", "cmd_tune"),
    "profile": ("profile", "ProfileArgs", "cmd_profile"),
    "extract": ("extract", "ExtractArgs", "cmd_extract"),
    "predict": ("extract", "PredictArgs", "cmd_predict"),
    "sweep": ("sweep", "SweepArgs", "cmd_sweep"),
    "convert": ("convert", "ConvertArgs", "cmd_convert"),
    "table": ("table", "TableArgs", "cmd_table"),
}
DATA_COMMANDS: dict[str, tuple[str, str, str]] = {
    "inspect": ("data", "InspectArgs", "cmd_inspect"),
    "write": ("data", "WriteArgs", "cmd_write"),
}
USAGE = __doc__ or ""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE.strip())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from .. import __version__

        print(f"affectfuse {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "data":
        if not rest or rest[0] not in DATA_COMMANDS:
            print(
                "usage: affectfuse data inspect PATH|SPEC [--json] | affectfuse data write SPEC OUT.pkl",
                file=sys.stderr,
            )
            return 2
        (module, spec, handler), prog, rest = DATA_COMMANDS[rest[0]], f"affectfuse data {rest[0]}", rest[1:]
    elif command in COMMANDS:
        module, spec, handler = COMMANDS[command]
        prog = f"affectfuse {command}"
    else:
        close = difflib.get_close_matches(command, [*COMMANDS, "data"], n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        print(
            f"affectfuse: unknown command {command!r}; {hint}commands: data inspect, data write, {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    loaded = importlib.import_module(f".{module}", __name__)
    args = tyro.cli(getattr(loaded, spec), args=rest, prog=prog)
    try:
        getattr(loaded, handler)(args)
    except (ValueError, OSError, KeyError, FloatingPointError) as error:
        # User errors (bad data, unknown names, corrupted files, unwritable outputs) end with their message, not a
        # traceback.
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"affectfuse {command}: error: {message}", file=sys.stderr)
        return 1
    return 0
