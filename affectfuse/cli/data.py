"""`affectfuse data inspect | write`: describe a corpus, or write one in the MMSA pickle layout."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro


@dataclass
class InspectArgs:
    """Describe a corpus: format, splits, sizes, dims, lengths (min/mean/max), label range, NaN/inf counts, caveats."""

    data: tyro.conf.Positional[str]
    """A path (format detected from content), `synthetic[:key=value,...]`, `mosi-utterance[:ROOT]` or `pom[:ROOT]`."""
    json: bool = False
    task: Literal["auto", "regression", "classification"] = "auto"
    """What the labels are: `auto` reads it from them; or force scores or classes."""
    label_centre: float | None = None
    """The neutral point of a rated scale (e.g. 3 on 1..5)."""


@dataclass
class WriteArgs:
    """Write a corpus (e.g. the synthetic one) to disk in the MMSA pickle layout (`unaligned_50.pkl`-style)."""

    data: tyro.conf.Positional[str]
    """A data spec, e.g. `synthetic:aligned=false,missing_modality=0.2`."""
    out: tyro.conf.Positional[Path]
    """The .pkl file to write (atomically)."""
    nonfinite: Literal["error", "zero"] = "error"



def cmd_inspect(args: InspectArgs) -> None:
    from ..data.datasets import inspect_path

    report = inspect_path(args.data, task=args.task, label_centre=args.label_centre)
    if args.json:
        print(json.dumps(report, default=str))
        return
    targets = report["targets"]
    shown = ", ".join(targets) if len(targets) <= 4 else f"{targets[0]} … {targets[-1]}"
    print(f"{report['name']}: {report['source']}")
    print(f"  task: {report['task_description']}")
    print(
        f"  {len(targets)} target(s) ({shown}), metrics: {report['metric_family']}, "
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
        if "class_counts" in labels:
            described = f"classes {labels['class_counts']}"
        elif labels.get("min") is None:
            described = "no labels"
        else:
            described = f"labels {labels['min']:.3g} .. {labels['max']:.3g} (mean {labels['mean']:.3g})"
        if labels.get("missing"):
            described += f", {labels['missing']} unlabelled (NaN)"
        print(f"  {name:5s} {split['size']:6d} samples | {' | '.join(parts)} | {described}")
    replaced = report["nonfinite"]["replaced_at_load"]
    print(f"  NaN/inf feature values: {sum(replaced.values())}" + (f" {replaced}" if replaced else ""))
    for note in report["notes"]:
        print(f"  note: {note}")


def cmd_write(args: WriteArgs) -> None:
    from ..data.datasets import load_data
    from ..data.formats import write_mmsa_pickle

    corpus = load_data(args.data, nonfinite=args.nonfinite)
    path = write_mmsa_pickle(corpus, args.out)
    sizes = ", ".join(f"{name} {len(split)}" for name, split in corpus.splits.items())
    logging.getLogger(__name__).info(f"wrote {corpus.name} ({sizes}) to {path} in the MMSA pickle layout")
