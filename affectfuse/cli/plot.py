"""`affectfuse plot RUN_DIR`: training curves and metric-vs-rate curves of a results folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tyro


@dataclass
class PlotArgs:
    """Draw the figures a results folder holds data for: training curves (loss and the monitored validation metric
    per epoch, a line per seed) from every log.jsonl below it, and metric-vs-missing-rate curves from a sweep's
    results.json. Needs matplotlib (extra `plot`)."""

    run_dir: tyro.conf.Positional[Path]
    """A folder written by `train`, `run` or `sweep`."""
    out: Path | None = None
    """Where the PNG files go (default: RUN_DIR/plots)."""


def cmd_plot(args: PlotArgs) -> None:
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise ValueError("affectfuse plot needs matplotlib: pip install 'affectfuse[plot]'")
    from ..plots import plot_folder

    for path in plot_folder(args.run_dir, args.out).values():
        print(path)
