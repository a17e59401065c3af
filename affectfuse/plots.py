"""Figures people can trust (matplotlib, extra `plot`): every panel's axes start where the data do (bars from zero,
never a silently cut axis), a legend names every colour and marker, each model has its colour and each seed its
marker, and a mean always comes with the spread of its seeds (error bars, or a band on curves).

`draw_*` build a figure (tests read it back); `save` writes it atomically. Used by the experiment reports
(`experiments.report`), the sweep reports (`robustness.report`) and `affectfuse plot RUN_DIR`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .engine.metrics import higher_is_better
from .io import atomic_write

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
LINESTYLES = ("-", "--", ":", "-.")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def colours(names: Sequence[str]) -> dict[str, Any]:
    """One colour per name, in order (tab10, then tab20 for more than ten)."""
    plt = _pyplot()
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def markers(seeds: Sequence[int]) -> dict[int, str]:
    return {seed: MARKERS[i % len(MARKERS)] for i, seed in enumerate(sorted(set(seeds)))}


def monitor_of(valid: Mapping[str, float], monitor: str = "auto") -> str:
    """The validation metric a run was selected on: its configured monitor, else MAE where there is one."""
    if monitor in valid:
        return monitor
    return "mae" if "mae" in valid else next(iter(valid))


def draw_bars(title: str, rows: Mapping[str, Mapping[str, tuple[float, float]]], keys: Sequence[str],
              seed_values: Mapping[str, Mapping[int, Mapping[str, float]]] | None = None) -> Any:
    """One panel per metric, one bar per row (model or model / setting) in its own colour: the mean over seeds from
    zero, the std as an error bar, each seed's own value as a dot with its seed's marker; legends name both."""
    plt = _pyplot()
    names = list(rows)
    colour = colours(names)
    seed_values = seed_values or {}
    seeds = sorted({s for values in seed_values.values() for s in values})
    marker = markers(seeds)
    columns = min(4, len(keys))
    nrows = math.ceil(len(keys) / columns)
    fig, axes = plt.subplots(nrows, columns, figsize=(3.2 * columns, 2.6 * nrows + 0.8), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        means = [rows[n].get(key, (math.nan, math.nan))[0] for n in names]
        stds = [rows[n].get(key, (math.nan, math.nan))[1] for n in names]
        x = range(len(names))
        ax.bar(x, means, yerr=stds, capsize=3, color=[colour[n] for n in names], edgecolor="black", linewidth=0.4,
               error_kw={"elinewidth": 0.8})
        for i, name in enumerate(names):
            for seed, values in seed_values.get(name, {}).items():
                if key in values:
                    offset = 0.5 * (seeds.index(seed) + 0.5) / len(seeds) - 0.25  # seeds side by side on the bar
                    ax.plot(i + offset, values[key], marker[seed], color="black", markersize=3.5,
                            markerfacecolor="white", markeredgewidth=0.8, zorder=3)
        ax.set_xticks(list(x), names, rotation=30, ha="right", fontsize=7)
        ax.set_title(f"{key} ({'higher' if higher_is_better(key) else 'lower'} is better)", fontsize=9)
        ax.axhline(0, color="black", linewidth=0.6)
        # full axis: bars start at zero, so a bar's length is its value (the error bars say what differs)
        low, high = ax.get_ylim()
        ax.set_ylim(min(0.0, low), max(0.0, high))
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    plt_handles = [plt.Rectangle((0, 0), 1, 1, color=colour[n]) for n in names]
    labels = list(names)
    if seeds:
        plt_handles += [plt.Line2D([], [], linestyle="", marker=marker[s], color="black", markerfacecolor="white")
                        for s in seeds]
        labels += [f"seed {s}" for s in seeds]
    fig.legend(plt_handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=7, frameon=False)
    fig.suptitle(f"{title}: test, mean ± std over seeds (bars from 0)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06 + 0.03 * (len(labels) > 6), 1, 1))
    return fig


def draw_training_curves(title: str, runs: Sequence[Mapping[str, Any]]) -> Any:
    """Per group (a model, or model / setting) a row: training loss and the monitored validation metric per epoch;
    each seed its own colour and marker (the same in every row), a hollow ring on the selected epoch.

    Each run: ``group``, ``seed``, ``history`` (the log.jsonl records), ``best_epoch``, optional ``monitor``."""
    plt = _pyplot()
    groups = list(dict.fromkeys(r["group"] for r in runs))
    seeds = sorted({r["seed"] for r in runs})
    colour, marker = colours([str(s) for s in seeds]), markers(seeds)
    fig, axes = plt.subplots(len(groups), 2, figsize=(9, 2.4 * len(groups) + 0.6), squeeze=False)
    for i, group in enumerate(groups):
        for run in (r for r in runs if r["group"] == group):
            history = run["history"] or []
            if not history:
                continue
            monitor = monitor_of(history[0]["valid"], run.get("monitor", "auto"))
            epochs = [h["epoch"] for h in history]
            style = {"color": colour[str(run["seed"])], "marker": marker[run["seed"]], "markersize": 3,
                     "linewidth": 1, "label": f"seed {run['seed']}"}
            axes[i, 0].plot(epochs, [h["train"]["total"] for h in history], **style)
            axes[i, 1].plot(epochs, [h["valid"][monitor] for h in history], **style)
            best = [h["valid"][monitor] for h in history if h["epoch"] == run["best_epoch"]]
            if best:
                axes[i, 1].scatter([run["best_epoch"]], best, s=60, facecolors="none",
                                   edgecolors=colour[str(run["seed"])], zorder=3)
            axes[i, 1].set_ylabel(f"valid {monitor}", fontsize=8)
        axes[i, 0].set_ylabel(f"{group}\ntrain loss", fontsize=8)
        for ax in axes[i]:
            ax.grid(alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    handles = [plt.Line2D([], [], color=colour[str(s)], marker=marker[s], markersize=4) for s in seeds]
    handles.append(plt.Line2D([], [], linestyle="", marker="o", markersize=8, markerfacecolor="none", color="grey"))
    fig.legend(handles, [f"seed {s}" for s in seeds] + ["selected epoch"], loc="lower center",
               ncol=min(len(handles), 6), fontsize=7, frameon=False)
    fig.suptitle(f"{title}: training curves", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def draw_rate_curves(title: str, rates: Sequence[float],
                     curves: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float], str]]],
                     keys: Sequence[str]) -> Any:
    """Metric vs missing rate: per metric a panel, per model a line (mean over seeds) with error bars and a band of
    ± std; `curves[model][key] = (means, stds, legend label)`."""
    plt = _pyplot()
    models = list(curves)
    colour = colours(models)
    columns = min(4, len(keys))
    nrows = math.ceil(len(keys) / columns)
    fig, axes = plt.subplots(nrows, columns, figsize=(3.6 * columns, 3.0 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        for j, m in enumerate(models):
            mean, std, label = curves[m][key]
            low = [a - b for a, b in zip(mean, std, strict=True)]
            high = [a + b for a, b in zip(mean, std, strict=True)]
            ax.errorbar(rates, mean, yerr=std, color=colour[m], marker=MARKERS[j % len(MARKERS)], markersize=3,
                        linestyle=LINESTYLES[j % len(LINESTYLES)], capsize=2, linewidth=1, label=label)
            ax.fill_between(rates, low, high, color=colour[m], alpha=0.15, linewidth=0)
        ax.set_title(f"{key} ({'higher' if higher_is_better(key) else 'lower'} is better)", fontsize=9)
        ax.set_xlabel("missing rate r")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    fig.suptitle(f"{title}: mean ± std over seeds", fontsize=10)
    fig.tight_layout()
    return fig


def save(fig: Any, path: Path | str) -> Path:
    """Write `fig` atomically in the format of the path's suffix (png, svg, pdf), then close it."""
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", dpi=110)
    plt.close(fig)
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))


def plot_folder(folder: Path | str, out: Path | str | None = None) -> dict[str, Path]:
    """`affectfuse plot`: the figures a results folder holds data for, written under `out` (default
    ``<folder>/plots``): ``training_curves.png`` from every ``log.jsonl`` below it (train, run and sweep folders) and
    ``rate_curves.png`` from a sweep's ``results.json``.

    Raises:
        FileNotFoundError: `folder` does not exist.
        ValueError: it holds nothing to plot.
    """
    import json
    import re

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (give a folder written by train, run or sweep)")
    target = Path(out) if out is not None else folder / "plots"
    written: dict[str, Path] = {}
    runs = []
    for log in sorted(folder.rglob("log.jsonl")):
        history = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        if not history:
            continue
        result_file = log.parent / "result.json"
        result = json.loads(result_file.read_text()) if result_file.exists() else {}
        seed = result.get("seed")
        if seed is None:
            found = re.fullmatch(r"seed(\d+)", log.parent.name)
            seed = int(found.group(1)) if found else 0
        chosen = [h["epoch"] for h in history if h.get("best")]  # an unfinished run: its best epoch so far
        group = log.parent.parent.relative_to(folder).as_posix() if log.parent != folder else folder.name
        runs.append({"group": group if group != "." else result.get("model", folder.name), "seed": seed,
                     "history": history, "best_epoch": result.get("best_epoch", chosen[-1] if chosen else -1),
                     "monitor": (result.get("train") or {}).get("monitor", "auto")})
    if runs:
        written["training_curves"] = save(draw_training_curves(folder.name, runs), target / "training_curves.png")
    sweep = folder / "results.json"
    if sweep.exists():
        data = json.loads(sweep.read_text())
        curve = [c for c in data.get("conditions", []) if c.get("rate") is not None]
        if data.get("auilc") and len(curve) >= 2:
            keys = list(next(iter(next(iter(data["summary"].values())).values())))
            curves = {
                m: {k: ([data["summary"][m][c["name"]][k]["mean"] for c in curve],
                        [data["summary"][m][c["name"]][k]["std"] for c in curve],
                        f"{m} (AUILC {data['auilc'][m][k]['auilc']:.3f})") for k in keys}
                for m in data["models"]
            }
            figure = draw_rate_curves(f"{folder.name}, seeds {data['seeds']}", [c["rate"] for c in curve], curves, keys)
            written["rate_curves"] = save(figure, target / "rate_curves.png")
    if not written:
        raise ValueError(f"{folder}: nothing to plot (no log.jsonl of a training run below it, no sweep results.json "
                         "with missing rates)")
    return written
