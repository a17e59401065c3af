"""What a corpus must satisfy before a model trains or is scored on it, checked once with one clear line each:
non-empty splits, no zero-length modality, labels of the task's type and range, no absurd feature magnitudes, and
unlabelled samples (NaN labels) set apart instead of scored as 0."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from .corpus import Corpus, DataFormatError, Split

MAX_ABS_FEATURE = 1e6
"""Features beyond this magnitude are a unit or parsing error (float32 attention and LSTMs overflow on them)."""


def labelled(split: Split) -> np.ndarray:
    """(N,) True for samples with every label present: NaN marks an unlabelled sample (e.g. an extracted clip), and
    class -1 one whose scores were NaN before they became classes (`data.tasks`)."""
    if not np.issubdtype(split.labels.dtype, np.floating):
        return (split.labels >= 0).all(axis=1)
    return ~np.isnan(split.labels).any(axis=1)


def check_split(corpus: Corpus, name: str, *, need_labels: bool = True) -> Split:
    """The split `name`, checked for training or scoring; raises DataFormatError naming what is wrong."""
    where = f"{corpus.source or corpus.name}: split {name!r}"
    split = corpus.split(name)
    if len(split) == 0:
        raise DataFormatError(f"{where} is empty; training needs samples in train and valid, scoring in the split "
                              "scored")
    for m, x in split.features.items():
        if x.shape[1] == 0:
            raise DataFormatError(f"{where}, modality {m!r} has length 0 (features {x.shape}); every modality needs at "
                                  "least one step (a missing modality is one masked step, not zero steps)")
        if x.size and (big := np.abs(x[np.isfinite(x)]).max(initial=0.0)) > MAX_ABS_FEATURE:
            count = int((np.abs(x) > MAX_ABS_FEATURE).sum())
            raise DataFormatError(f"{where}, modality {m!r} has {count} features of magnitude above "
                                  f"{MAX_ABS_FEATURE:.0e} (largest {big:.3g}); rescale or standardise them")
    labels = split.labels
    if labels.dtype == bool:
        raise DataFormatError(f"{where} has boolean labels; expected float scores (regression) or integer class "
                              "indices (classification): convert them first")
    if not need_labels:
        return split
    task = corpus.spec
    if task.task == "classification":
        if np.issubdtype(labels.dtype, np.floating):
            raise DataFormatError(f"{where} has float labels for a classification task; expected class indices")
        if labels.size and (labels.min() < 0 or labels.max() >= task.num_classes):
            raise DataFormatError(f"{where} has class labels {int(labels.min())}..{int(labels.max())}; expected "
                                  f"0..{task.num_classes - 1}")
    elif task.label_range is not None:
        known = labels[~np.isnan(labels)] if np.issubdtype(labels.dtype, np.floating) else labels
        low, high = task.label_range
        if known.size and (known.min() < low - 1e-6 or known.max() > high + 1e-6):
            raise DataFormatError(
                f"{where} has labels from {known.min():g} to {known.max():g}, outside [{low:g}, {high:g}] of the "
                f"{task.metric_family!r} metrics (Acc-2/5/7 and F1 assume that scale); rescale the labels to it"
            )
    return split


def drop_unlabelled(corpus: Corpus, splits: tuple[str, ...] = ("train", "valid", "test")) -> Corpus:
    """`corpus` with the unlabelled samples (NaN labels) of `splits` removed, warning with the counts; a split left
    with no labelled sample is an error (scoring it would score nothing)."""
    changed = {}
    for name in splits:
        if name not in corpus.splits:
            continue
        split = corpus.splits[name]
        keep = labelled(split)
        if keep.all():
            continue
        if not keep.any():
            raise DataFormatError(f"{corpus.source or corpus.name}: split {name!r} has no labelled sample (all "
                                  f"{len(split)} labels are NaN); unlabelled clips can be predicted, not trained or "
                                  "scored on")
        warnings.warn(f"{corpus.source or corpus.name}: split {name!r} has {int((~keep).sum())} unlabelled samples "
                      "(NaN labels); they are left out of training and scoring", stacklevel=2)
        changed[name] = split.subset(np.flatnonzero(keep))
    return dataclasses.replace(corpus, splits={**corpus.splits, **changed}) if changed else corpus


def ready_for_training(corpus: Corpus) -> Corpus:
    """The corpus a run trains on: unlabelled samples set apart, train/valid/test checked. Memoised on the corpus,
    so a grid of models and seeds scans (and fingerprints) its data once."""
    if corpus._ready is not None:
        return corpus._ready
    original, corpus = corpus, drop_unlabelled(corpus)
    for name in ("train", "valid", "test"):
        if name not in corpus.splits:
            raise DataFormatError(f"{corpus.source or corpus.name} has no {name!r} split (it has "
                                  f"{list(corpus.splits)}); training needs train, valid and test")
        check_split(corpus, name)
    if len(corpus.splits["train"]) < 2:
        raise DataFormatError(f"{corpus.source or corpus.name}: split 'train' has {len(corpus.splits['train'])} "
                              "sample; training needs at least 2 (batch statistics)")
    original._ready = corpus._ready = corpus
    return corpus

