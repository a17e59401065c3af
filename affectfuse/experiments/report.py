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


def _monitor(row: dict[str, Any]) -> str:
    monitor = (row.get("train") or {}).get("monitor", "auto")
    valid = row["history"][0]["valid"] if row.get("history") else row["valid"]
    if monitor in valid:
        return monitor
    return "mae" if "mae" in valid else next(iter(valid))  # the mosi/sims/traits families monitor MAE by default


def plot_bars(label: str, entry: dict[str, Any], path: Path) -> Path:
    """One panel per metric; one bar per row (model / setting) with the std over seeds as its error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys, names = entry["keys"], list(entry["test"])
    columns = min(4, len(keys))
    rows = math.ceil(len(keys) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes.flat, keys, strict=False):
        means = [entry["test"][n].get(key, (math.nan, math.nan))[0] for n in names]
        stds = [entry["test"][n].get(key, (math.nan, math.nan))[1] for n in names]
        ax.bar(range(len(names)), means, yerr=stds, capsize=3,
               color=[colours[i % len(colours)] for i in range(len(names))])
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
        ax.set_title(key, fontsize=9)
        finite = [m - s for m, s in zip(means, stds, strict=True) if math.isfinite(m - s)]
        if finite and min(finite) > 0:  # zoom in: differences between models are small next to the values
            top = max(m + s for m, s in zip(means, stds, strict=True) if math.isfinite(m + s))
            ax.set_ylim(max(0.0, min(finite) - 0.1 * (top - min(finite) + 1e-9)), top + 0.05 * (top + 1e-9))
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle(f"{label} ({entry['spec']}): test, mean ± std over seeds", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_curves(label: str, by_cell: dict[tuple[str, str], list[dict[str, Any]]], path: Path) -> Path:
    """Per model: training loss and the monitored validation metric per epoch, one line per (setting, seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(model for model, _ in by_cell))
    settings = list(dict.fromkeys(setting for _, setting in by_cell))
    fig, axes = plt.subplots(len(models), 2, figsize=(9, 2.4 * len(models)), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, model in enumerate(models):
        for (m, setting), runs in by_cell.items():
            if m != model:
                continue
            colour = colours[settings.index(setting) % len(colours)]
            for j, run in enumerate(runs):
                history = run["history"] or []
                monitor = _monitor(run)
                epochs = [h["epoch"] for h in history]
                tag = setting if j == 0 and len(settings) > 1 else None
                axes[i, 0].plot(epochs, [h["train"]["total"] for h in history], color=colour, alpha=0.7, label=tag)
                axes[i, 1].plot(epochs, [h["valid"][monitor] for h in history], color=colour, alpha=0.7)
                axes[i, 1].scatter([run["best_epoch"]], [run["valid"][monitor]], color=colour, s=12, zorder=3)
                axes[i, 1].set_ylabel(f"valid {monitor}", fontsize=8)
        axes[i, 0].set_ylabel(f"{model}\ntrain loss", fontsize=8)
        if len(settings) > 1:
            axes[i, 0].legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    fig.suptitle(f"{label}: training curves (one line per seed; dot = selected epoch)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))


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
                paths[f"bars_{label}"] = plot_bars(label, entry, out / "plots" / f"bars_{label}.png")
                paths[f"curves_{label}"] = plot_curves(label, cells[label], out / "plots" / f"curves_{label}.png")
    return paths

