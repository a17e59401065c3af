"""CMU-MultimodalSDK computational sequences (.csd, HDF5): features, labels, word timings, folds."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ...config import MODALITIES
from ..batch import Sample
from ..corpus import SPLITS, Corpus, DataFormatError, NonFinite, Split
from .common import PathLike, Source, as_text, existing_path, normalise_split, targets_for
from .registry import register_format

# ---------------------------------------------------------------------------------------------------------------------
# CMU-MultimodalSDK computational sequences (.csd)
# ---------------------------------------------------------------------------------------------------------------------


OVERLAP_EPS = 1e-5
"""Interval overlap tolerance in seconds (the SDK's epsilon): rows touching a segment only at its boundary, up to
float32 rounding of the timestamps, do not belong to it."""


@dataclass
class ComputationalSequence:
    """One `.csd` file in memory: per video, features (n, ...) and their time intervals (n, 2) in seconds."""

    root: str
    """Name of the root group (the sequence's name, e.g. "Opinion Segment Labels", "COVAREP")."""
    metadata: dict[str, str]
    """Metadata strings, decoded (one JSON layer of quoting removed), e.g. {"dataset name": "CMU-MOSI", ...}."""
    data: dict[str, tuple[np.ndarray, np.ndarray]]
    """video id -> (features, intervals). Word sequences hold bytes features, b"sp" marking silence."""
    path: str = ""

    @property
    def num_rows(self) -> int:
        return sum(len(f) for f, _ in self.data.values())


def read_csd(path: PathLike) -> ComputationalSequence:
    """Read and validate a CMU-MultimodalSDK `.csd` file (HDF5: ``<root>/data/<video>/{features,intervals}``,
    ``<root>/metadata/<key>``).

    Validation (the SDK's integrity check, plus a consistent feature shape): exactly one root group with ``data`` and
    ``metadata``; every video has ``intervals`` of shape (n, 2) and ``features`` with at least 2 dimensions and the
    same n; all videos share the feature shape after n.

    Raises:
        FileNotFoundError: no such file.
        DataFormatError: not HDF5, or a broken layout (the message names the video and the key).
    """
    p = existing_path(path)
    if p.is_dir() or not h5py.is_hdf5(p):
        raise DataFormatError(f"{p}: not an HDF5 file, so not a .csd computational sequence")
    with h5py.File(p, "r") as f:
        roots = [k for k in f if isinstance(f[k], h5py.Group) and "data" in f[k]]
        if len(roots) != 1:
            raise DataFormatError(
                f"{p}: expected one root group holding 'data' and 'metadata', found "
                f"{len(roots)} among top-level keys {list(f)}"
            )
        group = f[roots[0]]
        if "metadata" not in group:
            raise DataFormatError(f"{p}: root {roots[0]!r} has no 'metadata' group (keys: {list(group)})")
        metadata = {k: _metadata_value(group["metadata"][k]) for k in group["metadata"]}
        data = {vid: _csd_video(p, vid, group["data"][vid]) for vid in group["data"]}
    shapes = {f.shape[1:] for f, _ in data.values()}
    if len(shapes) > 1:
        raise DataFormatError(f"{p}: videos disagree on the feature shape after the row axis: {sorted(shapes)[:5]}")
    return ComputationalSequence(root=roots[0], metadata=metadata, data=data, path=str(p))


def _metadata_value(ds: Any) -> str:
    value = ds[()] if isinstance(ds, h5py.Dataset) else ds
    if isinstance(value, np.ndarray):
        value = value.ravel()[0] if value.size else ""
    s = as_text(value)
    if s.startswith('"'):
        try:
            decoded = json.loads(s)
        except json.JSONDecodeError:
            return s
        return decoded if isinstance(decoded, str) else s
    return s


def _csd_video(path: Path, vid: str, g: Any) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(g, h5py.Group) or "features" not in g or "intervals" not in g:
        keys = list(g) if isinstance(g, h5py.Group) else type(g).__name__
        raise DataFormatError(f"{path}: video {vid!r}: expected 'features' and 'intervals', found {keys}")
    features, intervals = g["features"][()], g["intervals"][()]
    if intervals.ndim != 2 or intervals.shape[1] != 2 or intervals.dtype.kind not in "iuf":
        raise DataFormatError(
            f"{path}: video {vid!r}, key 'intervals': expected numeric (n, 2), found "
            f"{intervals.shape} {intervals.dtype}"
        )
    if features.ndim < 2 or len(features) != len(intervals):
        raise DataFormatError(
            f"{path}: video {vid!r}, key 'features': expected ({len(intervals)}, ...) matching "
            f"the intervals, found {features.shape}"
        )
    return features, intervals.astype(np.float64)


def _as_sequence(value: PathLike | ComputationalSequence) -> ComputationalSequence:
    return value if isinstance(value, ComputationalSequence) else read_csd(value)


def _overlapping(intervals: np.ndarray, start: float, end: float) -> np.ndarray:
    """Rows whose interval overlaps [start, end] by more than the tolerance (zero-length rows strictly inside count)."""
    return (intervals[:, 0] < end - OVERLAP_EPS) & (intervals[:, 1] > start + OVERLAP_EPS)


def _words(seq: ComputationalSequence, vid: str) -> tuple[list[str], np.ndarray]:
    """Words of a video (b"sp" silences dropped) and their intervals."""
    if vid not in seq.data:
        return [], np.zeros((0, 2))
    features, intervals = seq.data[vid]
    if features.dtype.kind not in "SUO":
        raise DataFormatError(f"{seq.path}: video {vid!r}: expected words (bytes), found {features.dtype} features")
    words = [as_text(w) for w in features.reshape(len(features), -1)[:, 0]]
    keep = [i for i, w in enumerate(words) if w.strip() and w != "sp"]
    return [words[i] for i in keep], intervals[keep]


def segment_words(
    labels_csd: PathLike | ComputationalSequence, words_csd: PathLike | ComputationalSequence
) -> dict[str, list[str]]:
    """The words spoken in each labelled segment.

    Segment ids are ``<video>_<k>``, k = 1-based position of the segment among the video's label intervals in stored
    order (for CMU-MOSI these are the official segment ids, e.g. ``03bSnISJMiM_1``). A word belongs to a segment when
    their intervals overlap by more than 1e-5 s; silences (b"sp") are dropped. Videos without words give empty lists.
    """
    labels, words = _as_sequence(labels_csd), _as_sequence(words_csd)
    out: dict[str, list[str]] = {}
    for vid in sorted(labels.data):
        tokens, word_iv = _words(words, vid)
        for k, (start, end) in enumerate(labels.data[vid][1], start=1):
            hit = np.flatnonzero(_overlapping(word_iv, start, end))
            out[f"{vid}_{k}"] = [tokens[i] for i in hit]
    return out


def load_csd_corpus(
    labels: PathLike | ComputationalSequence,
    features: Mapping[str, PathLike | ComputationalSequence],
    folds: PathLike | Mapping[str, Iterable[str]],
    *,
    words: PathLike | ComputationalSequence | None = None,
    nonfinite: NonFinite = "error",
) -> Corpus:
    """Build a corpus from SDK computational sequences: one sample per labelled segment.

    Each label interval is a segment with id ``<video>_<k>`` (k 1-based, stored order; the official MOSI ids). Without
    ``words`` each modality's sample is every feature row overlapping the segment (unaligned, variable T). With a words
    sequence the corpus is word-aligned like the SDK's standard recipe: one step per spoken word in the segment (b"sp"
    dropped), each modality's step the mean of its rows overlapping that word (zeros when none do). Labels are the
    label rows ((n, K) scores; one target is called "sentiment", several take the metadata's dimension names).

    Args:
        labels: label sequence (e.g. `CMU_MOSI_Opinion_Labels.csd`).
        features: modality ("text"/"audio"/"vision") -> feature sequence.
        folds: JSON file or dict ``{"train": [videos], "valid"|"dev": [...], "test": [...]}``. Segments of videos in no
            fold are left out (noted); a video in two folds is an error.
        words: optional word sequence for word alignment.
        nonfinite: NaN/inf policy for features.

    Raises:
        ValueError: an unknown modality name.
        DataFormatError: malformed sequences or folds.
    """
    unknown = sorted(set(features) - set(MODALITIES))
    if unknown or not features:
        raise ValueError(f"features must map modalities {MODALITIES} to .csd files; got {sorted(features)}")
    label_seq = _as_sequence(labels)
    feature_seqs = {m: _as_sequence(features[m]) for m in MODALITIES if m in features}
    word_seq = _as_sequence(words) if words is not None else None
    src = Source(label_seq.path or "labels", nonfinite)
    for m, seq in feature_seqs.items():
        kinds = {f.dtype.kind for f, _ in seq.data.values()}
        if kinds - set("biuf"):
            raise DataFormatError(
                f"{seq.path}: the {m} sequence holds non-numeric features ({sorted(kinds)}); "
                "a words .csd goes to words="
            )
    fold_of = _read_folds(folds, label_seq, src)
    samples: dict[str, list[Sample]] = {s: [] for s in SPLITS}
    for vid in sorted(label_seq.data):
        if vid in fold_of:
            samples[fold_of[vid]] += _csd_video_samples(vid, label_seq, feature_seqs, word_seq, src)
    for m in feature_seqs:
        empty = sum(len(s.features[m]) == 0 for v in samples.values() for s in v)
        if empty:
            src.notes.append(f"{empty} segments have no {m} rows (their {m} mask is all False)")
    checkers = {m: Source(seq.path, nonfinite, src.replaced) for m, seq in feature_seqs.items()}
    splits = {s: _checked_split(Split.from_samples(v), s, checkers) for s, v in samples.items() if v}
    k = next(iter(splits.values())).labels.shape[1] if splits else 1
    names = _json_list(label_seq.metadata.get("dimension names"))
    return src.corpus(
        label_seq.metadata.get("dataset name") or Path(src.path).stem,
        "csd",
        splits,
        task="regression",
        targets=targets_for(k, None if k == 1 else names),
        metric_family="mosi" if k == 1 else "regression",
        aligned=word_seq is not None,
        extractors={m: seq.root for m, seq in feature_seqs.items()},
    )


def _json_list(value: str | None) -> list[str] | None:
    try:
        parsed = json.loads(value) if value else None
    except json.JSONDecodeError:
        return None
    return [str(v) for v in parsed] if isinstance(parsed, list) else None


def _read_folds(
    folds: PathLike | Mapping[str, Iterable[str]], labels: ComputationalSequence, src: Source
) -> dict[str, str]:
    """video -> split, checking that no video is in two folds and noting videos on only one side."""
    where = "folds"
    if not isinstance(folds, Mapping):
        where = str(existing_path(folds))
        try:
            folds = json.loads(Path(where).read_text())
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{where}: not valid JSON ({e})") from None
        if not isinstance(folds, Mapping):
            raise DataFormatError(f"{where}: expected an object {{split: [video ids]}}, found {type(folds).__name__}")
    fold_of: dict[str, str] = {}
    for key, vids in folds.items():
        split = normalise_split(key)
        if split is None:
            raise DataFormatError(f"{where}: unknown fold {key!r}; expected train/valid (or dev)/test")
        if isinstance(vids, str | bytes) or not isinstance(vids, Iterable):
            raise DataFormatError(f"{where}: fold {key!r} must be a list of video ids, found {type(vids).__name__}")
        for vid in vids:
            if fold_of.setdefault(str(vid), split) != split:
                raise DataFormatError(f"{where}: video {vid!r} is in both {fold_of[str(vid)]!r} and {split!r}")
    unlabelled = sorted(set(fold_of) - set(labels.data))
    outside = sorted(set(labels.data) - set(fold_of))
    if unlabelled:
        src.notes.append(f"{len(unlabelled)} fold videos have no labels (e.g. {unlabelled[:3]})")
    if outside:
        src.notes.append(f"{len(outside)} labelled videos are in no fold and were left out (e.g. {outside[:3]})")
    return fold_of


def _csd_video_samples(
    vid: str,
    labels: ComputationalSequence,
    feature_seqs: dict[str, ComputationalSequence],
    word_seq: ComputationalSequence | None,
    src: Source,
) -> list[Sample]:
    label_rows, label_iv = labels.data[vid]
    y = src.scores(label_rows, where=f"video {vid!r}, key 'features' (labels)")
    _, word_iv = _words(word_seq, vid) if word_seq is not None else ([], np.zeros((0, 2)))
    samples = []
    for k, (start, end) in enumerate(label_iv):
        feats = {}
        for m, seq in feature_seqs.items():
            rows, iv = _flat_rows(seq, vid)
            if word_seq is None:
                feats[m] = rows[_overlapping(iv, start, end)]
            else:
                feats[m] = _mean_per_span(rows, iv, word_iv[_overlapping(word_iv, start, end)])
        samples.append(Sample(id=f"{vid}_{k + 1}", features=feats, label=y[k]))
    return samples


def _flat_rows(seq: ComputationalSequence, vid: str) -> tuple[np.ndarray, np.ndarray]:
    """A video's rows as (n, D) (features of rank > 2 flattened) and intervals; (0, D) when the video is absent."""
    some = next(iter(seq.data.values()))[0] if seq.data else np.zeros((0, 0))
    width = int(np.prod(some.shape[1:]))
    rows, intervals = seq.data.get(vid, (np.zeros((0, width)), np.zeros((0, 2))))
    return rows.reshape(len(rows), width), intervals


def _mean_per_span(rows: np.ndarray, intervals: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """One row per span: the mean of the rows overlapping it, zeros where none do (the SDK's mean collapse)."""
    out = np.zeros((len(spans), rows.shape[1]), dtype=np.float64)
    for i, (start, end) in enumerate(spans):
        hit = _overlapping(intervals, start, end)
        if hit.any():
            out[i] = rows[hit].astype(np.float64).mean(0)
    return out


def _checked_split(split: Split, name: str, checkers: dict[str, Source]) -> Split:
    """A collated split whose features went through the NaN policy, each message naming its modality's file."""
    features = {m: checkers[m].features(x, split=name, modality=m, key="features") for m, x in split.features.items()}
    return Split(ids=split.ids, features=features, masks=split.masks, labels=split.labels)


def _is_csd(f: Any) -> bool:
    return any(isinstance(f[k], h5py.Group) and {"data", "metadata"} <= set(f[k]) for k in f)


@register_format(
    "csd",
    description="CMU-MultimodalSDK computational sequence: HDF5 with <root>/data/<video>/{features,intervals} and "
    "metadata",
    recognise={"hdf5": _is_csd},
    options=("features", "folds", "words"),
)
def _read(path: Path, obj: Any, nonfinite: NonFinite, options: dict[str, Any]) -> Corpus:
    if not {"features", "folds"} <= set(options):
        raise DataFormatError(
            f"{path}: a .csd file holds one computational sequence; to build a corpus from this label "
            "sequence pass features={modality: csd path} and folds=<json> (see load_csd_corpus)"
        )
    return load_csd_corpus(path, options["features"], options["folds"], words=options.get("words"), nonfinite=nonfinite)
