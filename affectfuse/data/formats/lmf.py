"""LMF's dataset pickles (mosi.pkl, iemocap.pkl with one level per emotion, pom.pkl)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ...config import MODALITIES
from ..corpus import Corpus, DataFormatError, NonFinite, Split
from .common import POM_LMF_TRAITS, PathLike, Source, normalise_split, splits_of, str_keys, targets_for
from .mult import one_hot_to_index
from .pickles import load_pickle
from .registry import pickle_splits, register_format

# ---------------------------------------------------------------------------------------------------------------------
# LMF
# ---------------------------------------------------------------------------------------------------------------------

_LMF_KEYS = {"text": "glove", "audio": "covarep", "vision": "facet"}


def read_lmf_pickle(path: PathLike, *, nonfinite: NonFinite = "error", emotion: str | None = None) -> Corpus:
    """Read an LMF pickle: `mosi.pkl`, `pom.pkl` or `iemocap.pkl` (Justin1904/Low-rank-Multimodal-Fusion).

    Layout: ``{"train"|"valid"|"test": {"glove": (N, L, 300), "covarep": (N, Da), "facet": (N, Dv), "label"}}``;
    IEMOCAP has one such dict per emotion (``{"happy": {"train": ...}, ...}``). Audio and vision are averaged over time,
    so they become (N, 1, D); text is a GloVe sequence (all steps marked real: the file has no lengths). Labels: MOSI
    (N,) or (N, 1) scores; POM (N, 16) trait scores named as in :data:`POM_LMF_TRAITS`; IEMOCAP (N, 2) one-hot, turned
    into one binary target named after the emotion. LMF's code zeroes NaN features silently; here they follow
    ``nonfinite``.

    Security: this unpickles the file; only load files you trust.

    Args:
        emotion: which IEMOCAP emotion to read (required for `iemocap.pkl`; the error lists the available ones).
    """
    return _lmf_from_object(load_pickle(path), Source(str(path), nonfinite), emotion=emotion)


def _lmf_from_object(obj: Any, src: Source, *, emotion: str | None) -> Corpus:
    top = str_keys(obj) if isinstance(obj, Mapping) else obj
    per_emotion = isinstance(top, Mapping) and not any(normalise_split(k) for k in top)
    name = Path(src.path).stem
    if per_emotion:
        available = sorted(k for k, v in top.items() if isinstance(v, Mapping))
        if emotion is None or emotion not in available:
            what = "choose one with emotion=" if emotion is None else f"it has no emotion {emotion!r}"
            raise DataFormatError(
                f"{src.path}: this LMF IEMOCAP file holds one dataset per emotion; {what} (available: {available})"
            )
        top, name = top[emotion], f"{name}-{emotion}"
    elif emotion is not None:
        raise ValueError(f"{src.path}: emotion= applies to LMF's per-emotion IEMOCAP file; this file has splits only")
    splits: dict[str, Split] = {}
    for s, d in splits_of(top, src).items():
        y_raw, where = src.require(d, "label", s), f"split {s!r}, key 'label'"
        if per_emotion:
            labels = one_hot_to_index(src.numeric(y_raw, where=where, ndim=2), where, src)
        else:
            labels = src.scores(y_raw, where=where)
        n = len(labels)
        features = {m: _lmf_features(src.require(d, key, s), s, m, key, src, n) for m, key in _LMF_KEYS.items()}
        splits[s] = Split(ids=[f"{s}_{i}" for i in range(n)], features=features, masks={}, labels=labels)
    extractors = {m: f"lmf-{m}" for m in MODALITIES}
    if per_emotion:
        return src.corpus(
            name,
            "lmf",
            splits,
            task="classification",
            targets=(emotion,),
            num_classes=2,
            metric_family="iemocap",
            aligned=False,
            extractors=extractors,
        )
    k = next(iter(splits.values())).labels.shape[1]
    pom = k == len(POM_LMF_TRAITS)
    return src.corpus(
        name,
        "lmf",
        splits,
        task="regression",
        targets=POM_LMF_TRAITS if pom else targets_for(k),
        metric_family="mosi" if k == 1 else "traits",
        aligned=False,
        extractors=extractors,
    )


def _lmf_features(value: Any, split: str, modality: str, key: str, src: Source, n: int) -> np.ndarray:
    """Text stays (N, L, D); time-averaged audio/vision (N, D) become one step, (N, 1, D)."""
    if modality == "text":
        return src.features(value, split=split, modality=modality, key=key, length=n)
    x = src.features(value, split=split, modality=modality, key=key, length=n, ndim=2)
    return x[:, None, :]


def _is_lmf(obj: Any) -> bool:
    top, splits = pickle_splits(obj)
    if splits:
        return "label" in splits[0] and set(_LMF_KEYS.values()) <= set(splits[0])
    # IEMOCAP: one level per emotion, each with its own splits
    nested = [str_keys(v) for v in top.values() if isinstance(v, Mapping)]
    if not nested or not all(any(normalise_split(k) for k in v) for v in nested):
        return False
    inner = [str_keys(s) for v in nested for k, s in v.items() if normalise_split(k) and isinstance(s, Mapping)]
    return bool(inner) and set(_LMF_KEYS.values()) <= set(inner[0])


@register_format(
    "lmf",
    description="LMF pickle: {train, valid, test} dicts with glove/covarep/facet and label (IEMOCAP: one level per "
    "emotion)",
    recognise={"pickle": _is_lmf},
    options=("emotion",),
)
def _read(path: Path, obj: Any, nonfinite: NonFinite, options: dict[str, Any]) -> Corpus:
    return _lmf_from_object(obj, Source(str(path), nonfinite), emotion=options.get("emotion"))
