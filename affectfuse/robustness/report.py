"""Sweep reports: the Markdown table, wide per-metric tables, JSON/CSV files and metric-vs-rate curves."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sweep import SweepResult

import csv
import dataclasses
import io
import warnings
from collections.abc import Sequence
from pathlib import Path

from ..engine.metrics import format_table
from ..io import atomic_write, write_json


def markdown(result: SweepResult) -> str:
    """Per condition and model: every metric as mean ± std over seeds; then the AUILC of every metric."""
    rows = {}
    for m in result.models:
        for c in result.conditions:
            head = "r" if c.rate is not None else "present"
            rows[f"{m} {head}={c.label}" if len(result.models) > 1 else f"{head}={c.label}"] = result.summary[m][c.name]
    lines = [format_table(rows, result.keys, row_header="model, condition")]
    if result.auilc:
        lines += [
            "",
            "AUILC (trapezoid over the rates run, no normalisation; ± std of the seeds' own areas):",
            "",
            format_table({m: {k: (v["auilc"], v["std"]) for k, v in result.auilc[m].items()} for m in result.models},
                         result.keys, row_header="model"),
        ]
    lines += [f"\nNote: {note}" for note in result.notes]
    return "\n".join(lines)


def wide_table(result: SweepResult, key: str) -> str:
    """One metric at a glance: a row per model, a column per condition (mean ± std over seeds), then its AUILC."""
    columns = [c.label for c in result.conditions] + (["AUILC"] if result.auilc else [])
    rows = {}
    for m in result.models:
        row = {c.label: result.summary[m][c.name][key] for c in result.conditions}
        if result.auilc:
            row["AUILC"] = (result.auilc[m][key]["auilc"], result.auilc[m][key]["std"])
        rows[m] = row
    head = "model \\ r" if result.auilc else "model \\ present"
    return format_table(rows, columns, row_header=head)


def write_reports(result: SweepResult, *, plots: bool = True) -> None:
    out = result.out_dir
    payload = {
        "models": result.models,
        "seeds": result.seeds,
        "conditions": [dataclasses.asdict(c) for c in result.conditions],
        "summary": {m: {c: {k: {"mean": v[0], "std": v[1]} for k, v in row.items()} for c, row in rows.items()}
                    for m, rows in result.summary.items()},
        "auilc": result.auilc,
        "notes": result.notes,
        "points": result.points,
    }
    write_json(out / "results.json", payload)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["model", "condition", "rate", "metric", "mean", "std", "seeds"])
    for m in result.models:
        for c in result.conditions:
            for k in result.keys:
                mean, std = result.summary[m][c.name][k]
                writer.writerow([m, c.label, "" if c.rate is None else c.rate, k, mean, std, len(result.seeds)])
        for k, v in result.auilc.get(m, {}).items():
            writer.writerow([m, "AUILC", "", k, v["auilc"], v["std"], len(result.seeds)])
    atomic_write(out / "results.csv", lambda f: f.write(buffer.getvalue()), mode="w")
    glance = "\n\n".join(f"{k}:\n\n{wide_table(result, k)}" for k in result.keys)
    atomic_write(out / "results.md", lambda f: f.write(markdown(result) + "\n\nBy metric:\n\n" + glance + "\n"),
                 mode="w")
    if result.auilc and plots:
        try:
            import matplotlib  # noqa: F401  (optional extra `plot`)
        except ImportError:
            warnings.warn("matplotlib is not installed (pip install 'affectfuse[plot]'): curves.png/svg not drawn; "
                          "the JSON, CSV and Markdown reports are complete", stacklevel=2)
            return
        plot(result, out / "curves.png")
        plot(result, out / "curves.svg")


def plot(result: SweepResult, path: Path, keys: Sequence[str] | None = None) -> Path:
    """Metric vs missing rate, one line per model (mean over seeds) with ± std error bars and band, one panel per
    metric; the legend gives each model's AUILC."""
    from .. import plots

    keys = list(keys or result.keys)
    curve = [c for c in result.conditions if c.rate is not None]
    curves = {}
    for m in result.models:
        rows = [result.summary[m][c.name] for c in curve]
        curves[m] = {key: ([r[key][0] for r in rows], [r[key][1] for r in rows],
                           f"{m} (AUILC {result.auilc[m][key]['auilc']:.3f})") for key in keys}
    title = f"{', '.join(result.models)} over seeds {result.seeds}"
    return plots.save(plots.draw_rate_curves(title, [c.rate for c in curve], curves, keys), path)
