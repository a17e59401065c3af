"""Standardised features that travel with the model.

`standardise` z-scores every feature dimension with the mean and std of the train split's real steps (as the linear
baseline sees them) and records those statistics in the corpus's `InputSpec.standardisation`, so a model built for
it carries them into its checkpoint, its `save_pretrained` folder and its TorchScript export. Scoring then takes raw
features: `for_model` (a corpus: `evaluate`, `predict` of a clip) and `split_for_model` (a split: the Python
`predict`/`evaluate`) standardise raw data with the model's own statistics. Data already standardised is taken as it
is when its statistics are the model's, and refused when they are not, as are standardised features for a model
trained on raw ones: raw and standardised inputs are never confused silently. Which is which is known from the
data's own record (`Corpus.spec.standardisation`, `Split.standardisation`, the "+z(train)" extractor suffix), so
features standardised outside affectfuse and saved to disk look raw: give affectfuse the raw ones.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..config import InputSpec, uses_bert_tokens
from .corpus import Corpus, DataFormatError, Split

Statistics = dict[str, dict[str, list[float]]]
"""modality -> {"mean": [...], "std": [...]}, one value per feature dimension (JSON-ready: it lives in the spec)."""
SUFFIX = "+z(train)"
"""Appended to the extractor names of standardised features: a spec check then tells them from raw ones."""


def train_statistics(corpus: Corpus) -> Statistics:
    """Mean and std (float64) of every feature dimension over the train split's real steps (padding left out); a
    constant dimension gets std 1. BERT token ids are not features, and a modality with no real train step has
    nothing to scale: they get none (and stay as they are)."""
    train = corpus.split("train")
    stats: Statistics = {}
    for m, x in train.features.items():
        if m == "text" and uses_bert_tokens(corpus.spec):
            continue
        real = x[train.masks[m]].astype(np.float64)
        if len(real) == 0:
            continue  # absent from every training clip (e.g. no face was found): nothing to scale, nor learnt from
        std = real.std(0)
        stats[m] = {"mean": real.mean(0).tolist(), "std": np.where(std > 1e-8, std, 1.0).tolist()}
    return stats


def standardise(corpus: Corpus, statistics: Statistics | None = None) -> Corpus:
    """`corpus` z-scored with `statistics` (default: its own train split's, `train_statistics`); padding stays 0.
    The statistics go into the spec and every split, and the extractor names get "+z(train)"."""
    where = corpus.source or corpus.name
    if corpus.spec.standardisation is not None:
        raise ValueError(f"{where} is standardised already; standardise the raw corpus once")
    stats = train_statistics(corpus) if statistics is None else statistics
    splits = {name: _apply(split, stats, where=f"{where}: split {name!r}") for name, split in corpus.splits.items()}
    extractors = dict(corpus.spec.extractors)
    for m in stats:
        extractors[m] = f"{extractors.get(m, m)}{SUFFIX}"
    spec = dataclasses.replace(corpus.spec, extractors=extractors, standardisation=stats)
    whose = "the train split" if statistics is None else "the model's training data"
    return dataclasses.replace(corpus, splits=splits, spec=spec,
                               notes=[*corpus.notes, f"features standardised with {whose}'s statistics "
                                                     f"({', '.join(stats)})"])


def standardised(corpus: Corpus) -> Corpus:
    """`standardise(corpus)`, made once per corpus (a grid of models and seeds shares it); a corpus standardised
    already is returned as it is."""
    if corpus.spec.standardisation is not None:
        return corpus
    if corpus._standardised is None:
        corpus._standardised = standardise(corpus)
    return corpus._standardised


def _apply(split: Split, stats: Statistics, *, where: str) -> Split:
    features = dict(split.features)
    for m, moments in stats.items():
        if m not in features:
            continue  # the spec check names a missing modality
        x = split.features[m]
        mean, std = np.asarray(moments["mean"]), np.asarray(moments["std"])
        if x.shape[-1] != len(mean):
            raise DataFormatError(f"{where}: {m} features are {x.shape[-1]}-d, the standardisation statistics are for "
                                  f"{len(mean)}-d ones")
        features[m] = (((x - mean) / std) * split.masks[m][..., None]).astype(np.float32)
    return dataclasses.replace(split, features=features, standardisation=stats)


def same_statistics(a: Statistics, b: Statistics) -> bool:
    """Whether two records hold the same statistics (to float64 round-off)."""
    return a.keys() == b.keys() and all(
        np.allclose(a[m][k], b[m][k], rtol=1e-9, atol=0) for m in a for k in ("mean", "std"))


def raw_extractors(extractors: dict[str, str]) -> dict[str, str]:
    """The extractor names without the "+z(train)" of standardised features."""
    return {m: name.removesuffix(SUFFIX) for m, name in extractors.items()}


def _mismatch(spec: InputSpec, theirs: Statistics | None, what: str) -> str | None:
    """Why data whose statistics are `theirs` cannot go to a model built for `spec` (None: it can, as it is)."""
    ours = spec.standardisation
    if ours is None and any(name.endswith(SUFFIX) for name in spec.extractors.values()):
        return None  # a checkpoint from before the statistics were kept: the extractor names alone are checked
    if ours is None and theirs is not None:
        return (f"{what} is standardised (z-scored with a train split's statistics), but the model was trained on raw "
                "features; give it the raw features (without --standardise)")
    if ours is not None and theirs is not None and not same_statistics(ours, theirs):
        return (f"{what} was standardised with other statistics than the model's (another train split); give it the "
                "raw features (without --standardise): the model standardises them with its own")
    return None


def for_model(spec: InputSpec, corpus: Corpus) -> Corpus:
    """`corpus` as a model built for `spec` takes it: raw features standardised with the model's statistics when it
    was trained on standardised ones; data standardised as the model's was, as it is. Refuses a mismatch."""
    problem = _mismatch(spec, corpus.spec.standardisation, corpus.source or corpus.name)
    if problem:
        raise ValueError(problem)
    if spec.standardisation is None or corpus.spec.standardisation is not None:
        return corpus
    return standardise(corpus, spec.standardisation)


def split_for_model(spec: InputSpec, split: Split) -> Split:
    """`for_model` for one split (`Split.standardisation` says whether it is standardised already)."""
    problem = _mismatch(spec, split.standardisation, f"the split of {len(split)} samples")
    if problem:
        raise ValueError(problem)
    if spec.standardisation is None or split.standardisation is not None:
        return split
    return _apply(split, spec.standardisation, where="the data")
