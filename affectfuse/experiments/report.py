"""Aggregate tables (Markdown, CSV, LaTeX, JSON) and plots (metric bars with error bars, training curves).

Numbers are the test metrics of each run's selected (best-validation) epoch; a cell's entry is the mean ± population
std (ddof = 0, as `metrics.aggregate` and the README tables) over the seeds stored for it. A cell with fewer stored
seeds than planned is marked `(k/n seeds)`, so a partial table is never mistaken for a finished one.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import math
import warnings
from pathlib import Path
from typing import Any

from ..engine.metrics import aggregate, format_table
from ..io import atomic_write, write_json
from .plan import Experiment, Run, plan, with_fingerprints
from .store import ResultStore

Cells = dict[str, dict[tuple[str, str], list[dict[str, Any]]]]
"""data label -> (model, setting) -> stored rows (one per seed)."""


def collect(experiment: Experiment, store: ResultStore, runs: list[Run] | None = None) -> Cells:
    """Stored rows per cell; `runs` are the experiment's fingerprinted runs when the caller has them already (the
    fingerprints load each data spec)."""
    cells: Cells = {label: {} for label in experiment.data}
    for row in store.rows(runs if runs is not None else with_fingerprints(plan(experiment))):
        cells[row["data"]].setdefault((row["model"], row["setting"]), []).append(row)
    for label, by_cell in cells.items():  # the file's order: models, then settings
        order = {(m, s.name): i for i, (m, s) in enumerate((m, s) for m in experiment.models
                                                            for s in experiment.settings)}
        cells[label] = dict(sorted(by_cell.items(), key=lambda item: order[item[0]]))
    return cells


def _row_name(experiment: Experiment, model: str, setting: str, seeds: int) -> str:
    name = model if len(experiment.settings) == 1 else f"{model} / {setting}"
    planned = len(experiment.seeds)
    return name if seeds == planned else f"{name} ({seeds}/{planned} seeds)"


def summary(experiment: Experiment, cells: Cells) -> dict[str, Any]:
    """data -> row name -> {metric: (mean, std)}, plus cost (parameters, seconds) and the metric order."""
    out: dict[str, Any] = {}
    for label, by_cell in cells.items():
        rows, cost, keys = {}, {}, []
        for (model, setting), runs in by_cell.items():
            name = _row_name(experiment, model, setting, len(runs))
            rows[name] = aggregate([r["test"] for r in runs])
            seconds = aggregate([{"s": r["seconds"]} for r in runs])["s"]
            cost[name] = {"parameters": runs[0]["parameters"], "seconds": seconds, "seeds": [r["seed"] for r in runs]}
            keys += [k for k in runs[0]["test"] if k not in keys]
        out[label] = {"spec": experiment.data[label], "keys": keys, "test": rows, "cost": cost}
    return out


def markdown(experiment: Experiment, table: dict[str, Any]) -> str:
    parts = [f"## {experiment.name}: test split, mean ± std over seeds {list(experiment.seeds)}"]
    for label, entry in table.items():
        parts.append(f"\n### {label} (`{entry['spec']}`)\n")
        if not entry["test"]:
            parts.append("no finished runs yet")
            continue
        parts.append(format_table(entry["test"], entry["keys"]))
        parts.append("\n| model | parameters | seconds per seed (mean ± std) |\n| --- | ---: | ---: |")
        for name, cost in entry["cost"].items():
            mean, std = cost["seconds"]
            parts.append(f"| {name} | {cost['parameters']:,} | {mean:.1f} ± {std:.1f} |")
    return "\n".join(parts) + "\n"


def csv_text(table: dict[str, Any]) -> str:
    """Long format, one line per (data, row, metric): easy to load into pandas or a spreadsheet."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["data", "spec", "row", "metric", "mean", "std", "seeds"])
    for label, entry in table.items():
        for name, scores in entry["test"].items():
            seeds = len(entry["cost"][name]["seeds"])
            for key in entry["keys"]:
                mean, std = scores.get(key, (math.nan, math.nan))
                writer.writerow([label, entry["spec"], name, key, repr(mean), repr(std), seeds])
    return buffer.getvalue()


def _tex(text: str) -> str:
    return text.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("%", "\\%").replace("&", "\\&")


def latex(experiment: Experiment, table: dict[str, Any]) -> str:
    """One booktabs `tabular` per data set, cells `$m \\pm s$` with 4 decimals."""
    parts = [f"% {experiment.name}: test split, mean $\\pm$ std over seeds {list(experiment.seeds)}",
             "% needs \\usepackage{booktabs}"]
    for label, entry in table.items():
        keys = entry["keys"]
        parts += [f"% {label}: {entry['spec']}", "\\begin{tabular}{l" + "r" * len(keys) + "}", "\\toprule",
                  " & ".join(["", *(_tex(k) for k in keys)]) + " \\\\", "\\midrule"]
        for name, scores in entry["test"].items():
            cells = [f"${scores[k][0]:.4f} \\pm {scores[k][1]:.4f}$" if k in scores else "--" for k in keys]
            parts.append(" & ".join([_tex(name), *cells]) + " \\\\")
        parts += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(parts)


def plot_bars(label: str, entry: dict[str, Any], by_cell: dict[tuple[str, str], list[dict[str, Any]]],
              path: Path) -> Path:
    """One panel per metric; one bar per row (model / setting) from zero, the std over seeds as its error bar and
    each seed's value as a dot (`plots.draw_bars`)."""
    from .. import plots

    names = list(entry["test"])
    seed_values = {name: {r["seed"]: r["test"] for r in runs}
                   for name, runs in zip(names, by_cell.values(), strict=True)}
    return plots.save(plots.draw_bars(f"{label} ({entry['spec']})", entry["test"], entry["keys"], seed_values), path)


def plot_curves(label: str, by_cell: dict[tuple[str, str], list[dict[str, Any]]], path: Path) -> Path:
    """Per model (/ setting): training loss and the monitored validation metric per epoch, one line per seed."""
    from .. import plots

    several = len({setting for _, setting in by_cell}) > 1
    runs = [{"group": f"{model} / {setting}" if several else model, "seed": run["seed"], "history": run["history"],
             "best_epoch": run["best_epoch"], "monitor": (run.get("train") or {}).get("monitor", "auto")}
            for (model, setting), rows in by_cell.items() for run in rows]
    return plots.save(plots.draw_training_curves(label, runs), path)


def write_reports(experiment: Experiment, store: ResultStore, out: Path, *, plots: bool = True,
                  runs: list[Run] | None = None) -> dict[str, Path]:
    """table.md, table.csv, table.tex, summary.json and plots/{bars,curves}_<data>.png under `out` (atomically)."""
    cells = collect(experiment, store, runs)
    table = summary(experiment, cells)
    paths = {
        "markdown": atomic_write(out / "table.md", lambda f: f.write(markdown(experiment, table)), mode="w"),
        "csv": atomic_write(out / "table.csv", lambda f: f.write(csv_text(table)), mode="w"),
        "latex": atomic_write(out / "table.tex", lambda f: f.write(latex(experiment, table)), mode="w"),
        "json": write_json(out / "summary.json", {
            label: {**entry, "test": {n: {k: {"mean": v[0], "std": v[1]} for k, v in s.items()}
                                      for n, s in entry["test"].items()}}
            for label, entry in table.items()
        }),
    }
    if plots and importlib.util.find_spec("matplotlib") is None:
        warnings.warn("matplotlib is not installed (pip install 'affectfuse[plot]'): plots not drawn; the tables are "
                      "written", stacklevel=2)
        plots = False
    if plots:
        for label, entry in table.items():
            if entry["test"]:
                paths[f"bars_{label}"] = plot_bars(label, entry, cells[label], out / "plots" / f"bars_{label}.png")
                paths[f"curves_{label}"] = plot_curves(label, cells[label], out / "plots" / f"curves_{label}.png")
    return paths

