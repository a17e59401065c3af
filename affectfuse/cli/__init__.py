"""Command line: parsing and dispatch only; one module per command, each calling library functions.

affectfuse [-v|-q] COMMAND ...              (-v: debug messages; -q: warnings and errors only, no progress bars)
affectfuse models [--json]
affectfuse models NAME [--data SPEC] [--recipe DATASET] [--set KEY=VALUE ...]   (the effective settings, as a
                 recipe file for `train --recipe-file`)
affectfuse data inspect PATH|SPEC [--json]
affectfuse data write SPEC OUT.pkl          (e.g. the synthetic corpus, in the MMSA pickle layout)
affectfuse train --model NAME [NAME ...] --data SPEC [--recipe DATASET] [--seed N ...|--seeds K] [--out DIR]
                 [--set KEY=VALUE ...] [--device cpu|cuda|auto] [--precision fp32|bf16|fp16] [--compile] [--json]
                 [--tracker tensorboard|mlflow|wandb]
affectfuse evaluate CHECKPOINT --data SPEC [--split test] [--json]
affectfuse run EXPERIMENT.toml [--out DIR] [--workers N] [--ray ADDRESS|local] [--report-only]
               [--tracker tensorboard|mlflow|wandb]   (grid of models x data x settings x seeds; resumable; SQLite
               store, tables, plots)
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
affectfuse export CKPT --out DIR|FILE [--format pretrained|torchscript]   (safetensors folder, or TorchScript file)
affectfuse plot RUN_DIR [--out DIR]         (training curves from log.jsonl files; metric-vs-rate curves of a sweep)

MMSA's habits work: `-m lmf -d mosi -s 1111` (-m/-d/-s = --model/--data/--seed); `-d mosi|mosei|sims|simsv2|iemocap`
reads MMSA's processed files (MOSI/Processed/unaligned_50.pkl, ...; `mosi:aligned` for aligned_50.pkl) under
$AFFECTFUSE_DATA.
affectfuse table emt-incomplete|emt-fusion|dmd-ablation [--data SPEC] [--seeds 3] [--rates 0,0.5,1] [--quick]
                 [--set KEY=VALUE ...] [--shape mosi] [--out docs/tables/NAME.md]   (the papers' tables as Markdown)
"""

from __future__ import annotations

import difflib
import importlib
import sys

# command -> (module under affectfuse.cli, its argument dataclass, its handler); imported only when that command runs,
# so `affectfuse --help` pays for neither torch nor tyro
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
    "export": ("export", "ExportArgs", "cmd_export"),
    "plot": ("plot", "PlotArgs", "cmd_plot"),
    "table": ("table", "TableArgs", "cmd_table"),
}
DATA_COMMANDS: dict[str, tuple[str, str, str]] = {
    "inspect": ("data", "InspectArgs", "cmd_inspect"),
    "write": ("data", "WriteArgs", "cmd_write"),
}
USAGE = __doc__ or ""
VERBOSITY = {"-v": 1, "--verbose": 1, "-q": -1, "--quiet": -1}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # global -v/-q before the command; their short forms are also taken after it (no command uses -v or -q)
    verbosity = 0
    while argv and argv[0] in VERBOSITY:
        verbosity = VERBOSITY[argv.pop(0)]
    for flag in ("-v", "-q"):
        while flag in argv[1:]:
            argv.remove(flag)
            verbosity = VERBOSITY[flag]
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE.strip())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from .. import __version__

        print(f"affectfuse {__version__}")
        return 0
    from ..progress import setup_logging

    logger = setup_logging(verbosity)
    command, rest = argv[0], argv[1:]
    if command == "data":
        if rest[:1] in (["-h"], ["--help"]):
            print("usage: affectfuse data inspect PATH|SPEC [--json] | affectfuse data write SPEC OUT.pkl\n"
                  "(`affectfuse data inspect --help` for the options)")
            return 0
        if not rest or rest[0] not in DATA_COMMANDS:
            close = difflib.get_close_matches(rest[0], list(DATA_COMMANDS), n=1) if rest else []
            hint = f"unknown data command {rest[0]!r}; did you mean {close[0]!r}? " if close else ""
            logger.error(f"{hint}usage: affectfuse data inspect PATH|SPEC [--json] | affectfuse data write SPEC OUT")
            return 2
        (module, spec, handler), prog, rest = DATA_COMMANDS[rest[0]], f"affectfuse data {rest[0]}", rest[1:]
    elif command in COMMANDS:
        module, spec, handler = COMMANDS[command]
        prog = f"affectfuse {command}"
    else:
        close = difflib.get_close_matches(command, [*COMMANDS, "data"], n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        logger.error(
            f"affectfuse: unknown command {command!r}; {hint}commands: data inspect, data write, {', '.join(COMMANDS)}"
        )
        return 2
    import tyro

    if command in ("train", "sweep"):  # their --model and --seed take several values
        rest = merge_repeated(merge_repeated(rest, ("-s", "--seed")), ("-m", "--model"))
    loaded = importlib.import_module(f".{module}", __name__)
    args = tyro.cli(getattr(loaded, spec), args=rest, prog=prog)
    try:
        getattr(loaded, handler)(args)
    except (ValueError, OSError, KeyError, FloatingPointError) as error:
        # User errors (bad data, unknown names, corrupted files, unwritable outputs) end with their message, not a
        # traceback (which -v adds).
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        logger.error(f"affectfuse {command}: error: {message}", exc_info=verbosity > 0)
        return 1
    return 0


def progress_shown(*off: bool) -> bool:
    """Whether a command draws progress bars: none of its own switches (`--quiet`, `--json`) is on, and no `-q`."""
    from ..progress import progress_wanted

    return not any(off) and progress_wanted()


def merge_repeated(argv: list[str], spellings: tuple[str, ...]) -> list[str]:
    """MMSA repeats a flag per value (`-s 1111 -s 1112`), where a plain tuple option would keep only the last:
    gather every occurrence's values into one (`--seed 1111 1112`), in order."""
    if sum(a in spellings for a in argv) < 2:
        return argv
    kept, values, i = [], [], 0
    while i < len(argv):
        if argv[i] in spellings:
            i += 1
            while i < len(argv) and not argv[i].startswith("-"):
                values.append(argv[i])
                i += 1
        else:
            kept.append(argv[i])
            i += 1
    return [*kept, spellings[-1], *values]
