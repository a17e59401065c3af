"""MulT's dataset pickles (*_data.pkl, *_data_noalign.pkl; IEMOCAP as four binary emotions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...config import MODALITIES
from ..corpus import Corpus, DataFormatError, NonFinite, Split
from .common import IEMOCAP_EMOTIONS, PathLike, Source, read_ids, splits_of, targets_for
from .pickles import load_pickle
from .registry import pickle_splits, register_format

# ---------------------------------------------------------------------------------------------------------------------
# MulT
# ---------------------------------------------------------------------------------------------------------------------


def read_mult_pickle(path: PathLike, *, nonfinite: NonFinite = "error") -> Corpus:
    """Read a MulT pickle: `mosi_data.pkl`, `mosei_senti_data.pkl`, `iemocap_data.pkl` or their `*_noalign` versions.

    Layout: ``{"train"|"valid"|"test": {"vision", "audio", "text": (N, T, D), "labels", "id"?}}``; a modality key may
    be absent (every split then lacks it, and the corpus has only the others). Labels (N, 1, 1)
    are sentiment scores (regression); labels (N, E, C) are one-hot classes per target (IEMOCAP: E=4 emotions in the
    order neutral, happy, sad, angry, C=2) and become (N, E) int64 class indices. ``id`` rows (video, start, end) are
    joined with '_'; without ``id`` the ids are ``<split>_<index>``. Aligned = equal T in all three modalities.

    Security: this unpickles the file; only load files you trust.
    """
    return _mult_from_object(load_pickle(path), Source(str(path), nonfinite))


def _mult_from_object(obj: Any, src: Source) -> Corpus:
    raw = splits_of(obj, src)
    splits: dict[str, Split] = {}
    kinds = set()
    for s, d in raw.items():
        labels, kind = _mult_labels(src.require(d, "labels", s), s, src)
        kinds.add(kind)
        n = len(labels)
        # a corpus may lack a modality (no transcripts): models then train on those present, never a zero stream
        features = {m: src.features(d[m], split=s, modality=m, key=m, length=n) for m in MODALITIES if m in d}
        if not features:
            raise src.error(f"split {s!r}", f"no modality: expected one or more of the keys {list(MODALITIES)}")
        splits[s] = Split(ids=read_ids(d.get("id"), n, s, src), features=features, masks={}, labels=labels)
    if len(kinds) != 1:
        raise DataFormatError(f"{src.path}: the splits disagree on the label layout: {sorted(kinds)}")
    task, k, classes = kinds.pop()
    first = next(iter(splits.values()))
    aligned = len({x.shape[1] for x in first.features.values()}) == 1
    if task == "classification":
        iemocap = (k, classes) == (4, 2)
        spec = dict(
            task="classification",
            targets=IEMOCAP_EMOTIONS if iemocap else targets_for(k),
            num_classes=classes,
            metric_family="iemocap" if iemocap else "classification",
        )
    else:
        spec = dict(task="regression", targets=targets_for(k), metric_family="mosi" if k == 1 else "regression")
    extractors = {m: f"mult-{m}" for m in first.features}
    return src.corpus(Path(src.path).stem, "mult", splits, aligned=aligned, extractors=extractors, **spec)


def _mult_labels(value: Any, split: str, src: Source) -> tuple[np.ndarray, tuple[str, int, int]]:
    where = f"split {split!r}, key 'labels'"
    y = src.numeric(value, where=where, ndim=(1, 2, 3))
    if y.ndim == 3 and y.shape[2] > 1:
        return one_hot_to_index(y, where, src), ("classification", y.shape[1], y.shape[2])
    scores = src.scores(y, where=where)
    return scores, ("regression", scores.shape[1], 0)


def one_hot_to_index(y: np.ndarray, where: str, src: Source) -> np.ndarray:
    """(N, ..., C) one-hot -> (N, ...) int64 class index; anything but exact one-hot rows is an error."""
    if not (np.isin(y, (0, 1)).all() and (y.sum(-1) == 1).all()):
        bad = int(np.count_nonzero(~(np.isin(y, (0, 1)).all(-1) & (y.sum(-1) == 1))))
        raise src.error(where, f"expected one-hot rows over the last axis (shape {y.shape}), {bad} rows are not")
    return y.argmax(-1).astype(np.int64).reshape(len(y), -1)


MMSA_ONLY_KEYS = frozenset({"audio_lengths", "vision_lengths", "raw_text", "text_bert", "classification_labels",
                            "regression_labels_T", "regression_labels_A", "regression_labels_V"})
"""Keys only MMSA's pickles have: a split with them is an MMSA file with a damaged key, not a MulT one (reading it as
MulT would drop its lengths, hence its masks)."""


def _is_mult(obj: Any) -> bool:
    keys = set(next(iter(pickle_splits(obj)[1]), {}))
    return "labels" in keys and bool(keys & set(MODALITIES)) and not keys & MMSA_ONLY_KEYS


@register_format(
    "mult",
    description="MulT pickle: {train, valid, test} dicts with text/audio/vision and labels",
    recognise={"pickle": _is_mult},
)
def _read(path: Path, obj: Any, nonfinite: NonFinite, options: dict[str, Any]) -> Corpus:
    return _mult_from_object(obj, Source(str(path), nonfinite))
