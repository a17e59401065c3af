"""What the labels are, read from the labels themselves: a rated scale with its centre, binary or multi-class from
integer or one-hot labels, or MOSI-style sentiment scores; overridable (`--task`, `--label-centre`).

Readers decide only what their format states (MulT's (N, E, C) one-hot emotions, LMF's per-emotion IEMOCAP file,
MMSA's SIMS scores); every other corpus comes out of its reader as float scores, and `interpret_labels` decides:

| labels (all splits, NaN ignored)              | read as                                                      |
| --------------------------------------------- | ------------------------------------------------------------ |
| (N, C) rows that are all one-hot, C >= 2       | one target of C classes (the column index)                   |
| one column of 0/1                              | binary classification                                        |
| one column of integers 0..C-1, C <= 10         | C-class classification                                       |
| one column with negatives inside [-3, 3]       | MOSI-style sentiment (centre 0, Acc-2/5/7, F1, MAE, Corr)     |
| any other single column (e.g. 1..5 ratings)    | a rated scale: range [floor(min), ceil(max)], centre its middle |
| several non-one-hot columns                    | multi-target regression, as the reader said (e.g. POM traits) |

`task="regression"` keeps scores (a 0/1 or 0..C-1 column then is a rated scale); `task="classification"` makes
classes of any integer labels (their sorted distinct values, named in the corpus notes); `centre=` declares the
neutral point of a rated scale (reading one column as a rating around it).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np

from ..config import InputSpec
from .corpus import Corpus, DataFormatError

TaskChoice = Literal["auto", "regression", "classification"]
TASK_CHOICES: tuple[str, ...] = ("auto", "regression", "classification")
MAX_INTEGER_CLASSES = 10
"""Integer labels 0..C-1 read as classes up to this C; beyond it (a 0..10 scale) they are a rating."""
MOSI_RANGE = (-3.0, 3.0)


def interpret_labels(corpus: Corpus, task: str = "auto", centre: float | None = None) -> Corpus:
    """`corpus` with the task its labels show (see the module docstring), or the one asked for.

    Raises:
        ValueError: an unknown `task`, or a `centre` for labels that are not one rated column.
        DataFormatError: labels that cannot be what was asked (e.g. classes from non-integer scores).
    """
    if task not in TASK_CHOICES:
        raise ValueError(f"task must be one of {TASK_CHOICES}, got {task!r}")
    if centre is not None and not math.isfinite(centre):
        raise ValueError(f"the label centre must be a finite number, got {centre!r}")
    spec, where = corpus.spec, corpus.source or corpus.name
    if spec.task == "classification":  # the format itself says classes (MulT/LMF one-hot emotions)
        if task == "regression" or centre is not None:
            raise ValueError(f"{where}: the format stores class labels ({spec.num_classes} classes per target); "
                             "they cannot be read as scores (drop --task regression / --label-centre)")
        return corpus
    labels = np.concatenate([s.labels for s in corpus.splits.values()]).astype(np.float64)
    known = labels[~np.isnan(labels).any(axis=1)]
    if not known.size:
        return corpus
    if labels.shape[1] > 1:
        return _columns(corpus, known, task, centre)
    values = known[:, 0]
    integer = bool(np.all(values == np.round(values)))
    distinct = np.unique(values)
    if task == "classification":
        if not integer:
            example = values[values != np.round(values)][0]
            raise DataFormatError(f"{where}: --task classification needs integer class labels; found scores such as "
                                  f"{example:g}")
        return _classes_from_values(corpus, distinct)
    if centre is None and task == "auto" and integer and distinct.min() >= 0 and distinct.max() < MAX_INTEGER_CLASSES:
        if distinct.min() == 0:
            return _classes_from_values(corpus, np.arange(int(distinct.max()) + 1))
    if centre is None and spec.metric_family in ("mosi", "sims"):
        low, high = spec.label_range or MOSI_RANGE
        if values.min() < 0 and values.min() >= low and values.max() <= high:
            return corpus  # sentiment scores around 0, as the reader said
    low, high = float(np.floor(values.min())), float(np.ceil(values.max()))
    middle = (low + high) / 2 if centre is None else float(centre)
    return _rated(corpus, (low, high), middle)


def _columns(corpus: Corpus, known: np.ndarray, task: str, centre: float | None) -> Corpus:
    """Several label columns: one-hot rows are classes (or, asked for, 0/1 scores); others stay as the reader said."""
    spec, where, k = corpus.spec, corpus.source or corpus.name, known.shape[1]
    one_hot = bool(np.isin(known, (0, 1)).all() and (known.sum(1) == 1).all())
    if centre is not None:
        raise ValueError(f"{where}: a label centre applies to one rated column; these labels have {k} columns")
    if one_hot and task != "regression":
        return _classes_from_one_hot(corpus)
    if one_hot:  # kept as scores: per-column MAE/Corr, not a 1..7 trait scale
        return _with(corpus, dataclasses.replace(spec, metric_family="regression"),
                     f"one-hot labels kept as {k} 0/1 scores (--task regression): MAE and Corr per column")
    if task == "classification":
        raise DataFormatError(f"{where}: {k} label columns that are not one-hot rows; classification needs one "
                              "column of class labels or one-hot rows")
    return corpus


def _rated(corpus: Corpus, scale: tuple[float, float], centre: float) -> Corpus:
    spec = dataclasses.replace(corpus.spec, task="regression", metric_family="rating", label_centre=centre,
                               label_scale=scale, num_classes=0)
    note = (f"labels read as a rating on [{scale[0]:g}, {scale[1]:g}] around centre {centre:g}: Acc-2/F1 compare "
            f"label > {centre:g} with prediction > {centre:g} (override with --label-centre or --task)")
    return _with(corpus, spec, note)


def _classes_from_one_hot(corpus: Corpus) -> Corpus:
    splits = {}
    for name, split in corpus.splits.items():
        labels = np.where(np.isnan(split.labels).any(1), -1, np.nan_to_num(split.labels).argmax(1))
        splits[name] = dataclasses.replace(split, labels=labels.astype(np.int64)[:, None])
    classes = next(iter(corpus.splits.values())).labels.shape[1]
    spec = dataclasses.replace(corpus.spec, task="classification", num_classes=classes, targets=("class",),
                               metric_family="classification")
    note = f"labels read as {classes} classes from one-hot rows: class i is label column i (override with --task)"
    return _with(corpus, spec, note, splits)


def _classes_from_values(corpus: Corpus, values: np.ndarray) -> Corpus:
    """Class index = position of the label among `values` (sorted distinct integers)."""
    if len(values) < 2:
        raise DataFormatError(f"{corpus.source or corpus.name}: every label is {values[0]:g}; classification needs "
                              "at least two classes")
    splits = {}
    for name, split in corpus.splits.items():
        y = split.labels[:, 0].astype(np.float64)
        index = np.searchsorted(values, np.nan_to_num(y, nan=values[0]))
        if np.any(unknown := ~np.isnan(y) & (values[np.minimum(index, len(values) - 1)] != y)):
            raise DataFormatError(f"{corpus.source or corpus.name}: split {name!r} has label {y[unknown][0]:g}, "
                                  f"not one of the classes {values.tolist()}")
        splits[name] = dataclasses.replace(split, labels=np.where(np.isnan(y), -1, index).astype(np.int64)[:, None])
    kind = "binary" if len(values) == 2 else f"{len(values)}-class"
    spec = dataclasses.replace(corpus.spec, task="classification", num_classes=len(values),
                               targets=corpus.spec.targets, metric_family="classification")
    named = ", ".join(f"{i} = {v:g}" for i, v in enumerate(values))
    return _with(corpus, spec, f"labels read as {kind} classification from integer labels ({named}); override "
                               "with --task regression", splits)


def _with(corpus: Corpus, spec: InputSpec, note: str, splits: dict | None = None) -> Corpus:
    return Corpus(name=corpus.name, splits=splits or corpus.splits, spec=spec, source=corpus.source,
                  notes=[*corpus.notes, note], nonfinite=dict(corpus.nonfinite))


def describe_task(spec: InputSpec) -> str:
    """One line for `data inspect`: the task, its classes or range/centre, and the metrics that follow."""
    if spec.task == "classification":
        kind = "binary" if spec.num_classes == 2 else f"{spec.num_classes}-class"
        per = f" per target ({spec.num_targets} targets)" if spec.num_targets > 1 else ""
        return f"{kind} classification{per}: accuracy, weighted and macro F1, confusion matrix"
    if spec.metric_family == "rating":
        low, high = spec.label_scale or (math.nan, math.nan)
        return (f"rating on [{low:g}, {high:g}], centre {spec.label_centre:g}: Acc-2/F1 above vs below the centre, "
                "MAE, Corr")
    if spec.metric_family in ("mosi", "sims"):
        low, high = spec.label_range or MOSI_RANGE
        return f"regression on [{low:g}, {high:g}] ({spec.metric_family} metrics, centre 0)"
    return f"regression of {spec.num_targets} target(s) ({spec.metric_family} metrics: MAE, Corr)"
