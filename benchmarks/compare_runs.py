"""Side by side: the test means ± std over seeds, and the verdicts against the baselines, of `affectfuse train` output
folders made with different settings on the same corpus (e.g. raw vs `--standardise`), as one Markdown table.

Each setting is LABEL=FOLDER[,FOLDER...]: the `--out` folders of `train` runs (their summary.json; several folders
of one setting, e.g. one per model group, are merged). Usage (docs/unseen_data.md):

    python benchmarks/compare_runs.py raw=runs/unseen-3class z=runs/unseen-3class-z --keys f1 f1_macro
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def read_setting(folders: list[Path]) -> dict[str, Any]:
    """summary.json of `folders` merged: test means/stds, verdicts and seconds per model; the baselines."""
    merged: dict[str, Any] = {"test": {}, "versus": {}, "seconds": {}, "baselines": None, "seeds": None}
    for folder in folders:
        path = folder / "summary.json"
        if not path.is_file():
            raise SystemExit(f"{folder} holds no summary.json (the --out folder of a finished `affectfuse train`)")
        summary = json.loads(path.read_text())
        merged["test"].update(summary["test"])
        merged["versus"].update(summary["versus_baselines"])
        merged["baselines"] = merged["baselines"] or summary["baselines"]
        merged["seeds"] = merged["seeds"] or summary["seeds"]
        for run in summary["runs"]:
            merged["seconds"].setdefault(run["model"], []).append(run["seconds"])
    return merged


def table(settings: dict[str, dict[str, Any]], keys: list[str]) -> str:
    first = next(iter(settings.values()))
    labels = list(settings)
    models = [m for m in first["test"] if all(m in s["test"] for s in settings.values())]
    header = ["model"] + [f"{k} {label}" for k in keys for label in labels]
    header += [f"beats constant / reaches linear {label}" for label in labels]
    header += [f"s per seed {label}" for label in labels]
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1 - 2 * len(labels))
             + " :---: |" * len(labels) + " ---: |" * len(labels)]
    for name, baseline in first["baselines"].items():
        scores = baseline["test"]
        row = [f"{name} (baseline)"] + [f"{scores[k]:.3f}" for k in keys for _ in labels] + [""] * (2 * len(labels))
        lines.append("| " + " | ".join(row) + " |")
    for model in models:
        row = [model]
        for k in keys:
            for label in labels:
                stat = settings[label]["test"][model][k]
                row.append(f"{stat['mean']:.3f} ± {stat['std']:.3f}")
        for label in labels:
            verdict = settings[label]["versus"][model]
            beats = next(v for k, v in verdict.items() if k.startswith("beats_"))
            row.append(f"{'yes' if beats else '**no**'} / {'yes' if verdict['reaches_linear'] else '**no**'}")
        for label in labels:
            seconds = settings[label]["seconds"][model]
            row.append(f"{sum(seconds) / len(seconds):.0f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", nargs="+", help="LABEL=FOLDER[,FOLDER...]: `train --out` folders of one setting")
    parser.add_argument("--keys", nargs="+", default=["f1", "f1_macro"], help="test metrics to show")
    args = parser.parse_args()
    settings = {}
    for item in args.settings:
        label, sep, folders = item.partition("=")
        if not sep:
            parser.error(f"expected LABEL=FOLDER[,FOLDER...], got {item!r}")
        settings[label] = read_setting([Path(f) for f in folders.split(",")])
    seeds = {label: s["seeds"] for label, s in settings.items()}
    print(f"test split, mean ± std over seeds {seeds}\n")
    print(table(settings, args.keys))


if __name__ == "__main__":
    main()
