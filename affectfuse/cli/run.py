"""`affectfuse run EXPERIMENT.toml`: the command's arguments and handler (cli.py only registers it)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

logger = logging.getLogger(__name__)


@dataclass
class RunArgs:
    """Run an experiment grid (models x data x settings x seeds) from a TOML/YAML file; resumable; writes tables
    (Markdown, CSV, LaTeX), plots and one SQLite results store."""

    experiment: tyro.conf.Positional[Path]
    """The experiment file (see examples/core_grid.toml)."""
    out: Path | None = None
    """Output folder (results.sqlite, table.md/.csv/.tex, plots/, runs/); default: the file's `out`, else
    runs/experiments/<name>."""
    workers: int = 2
    """Runs in parallel (local processes, or Ray tasks with --ray local); 0: one after the other in this process."""
    threads: int = 1
    """torch threads per run."""
    ray: str | None = None
    """Run on Ray: a cluster address (`ray://host:10001`, `auto`), or `local` to start a private local instance."""
    limit: int | None = None
    """Run at most this many of the missing runs now."""
    report_only: bool = False
    """Run nothing; rebuild the tables and plots from the store."""
    tensorboard: bool = False
    """Also write TensorBoard event files per run (same as --tracker tensorboard)."""
    tracker: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """Experiment trackers, one per --tracker (`tensorboard`, `mlflow`, `wandb`), added to the file's `trackers`:
    local files per run, no server (TensorBoard events, an MLflow file store, W&B offline); each needs its package
    (extras tensorboard, mlflow, wandb)."""
    json: bool = False


def cmd_run(args: RunArgs) -> None:
    import dataclasses

    from ..experiments.plan import load_experiment
    from ..experiments.report import write_reports
    from ..experiments.runner import run_experiment
    from ..experiments.store import ResultStore
    from . import progress_shown

    experiment = load_experiment(args.experiment)
    if args.tensorboard or args.tracker:
        trackers = tuple(dict.fromkeys((*experiment.trackers, *args.tracker)))
        experiment = dataclasses.replace(experiment, tensorboard=experiment.tensorboard or args.tensorboard,
                                         trackers=trackers)
    out = args.out or Path(experiment.out or f"runs/experiments/{experiment.name}")
    if args.workers < 0 or args.threads < 1:
        raise ValueError(f"--workers must be >= 0 and --threads >= 1, got {args.workers} and {args.threads}")
    if args.report_only:
        reports = write_reports(experiment, ResultStore(out / "results.sqlite"), out)
        outcome = {"experiment": experiment.name, "out": str(out), "reports": {k: str(v) for k, v in reports.items()}}
    else:
        outcome = run_experiment(experiment, out, workers=args.workers, threads=args.threads, ray_address=args.ray,
                                 limit=args.limit, log=(lambda _: None) if args.json else None,
                                 progress=progress_shown(args.json))
    if args.json:
        print(json.dumps(outcome))
    else:
        print((out / "table.md").read_text())
        logger.info(f"results store {out / 'results.sqlite'}; tables and plots under {out}/")
    if outcome.get("failed"):
        raise ValueError(f"{len(outcome['failed'])} run(s) failed: " + "; ".join(
            f"{k}: {v}" for k, v in outcome["failed"].items()))
