"""Readers for the on-disk formats of multimodal sentiment data, a writer for the MMSA layout, and detection by content.

Every reader returns a :class:`~affectfuse.data.corpus.Corpus` with float32 ``(N, T, D)`` features, boolean ``(N, T)``
masks (True on real steps) and ``(N, K)`` labels (float32 scores or int64 class indices). Malformed input raises
:class:`DataFormatError` naming the file, the split/key/modality and what was expected versus found; a missing file
raises :class:`FileNotFoundError` naming the path. NaN/inf features are rejected unless ``nonfinite="zero"``, in which
case they are replaced by 0 with a warning and counted in ``Corpus.nonfinite``.

Formats (see :data:`FORMATS`): MMSA ``aligned_50.pkl``/``unaligned_50.pkl``/``unaligned_39.pkl``; MulT ``*_data.pkl``
and ``*_data_noalign.pkl``; LMF ``mosi.pkl``/``iemocap.pkl``/``pom.pkl``; CMU-MultimodalSDK ``.csd`` (HDF5); MMSA-FET
per-clip pickles; MFN-style HDF5 split files (POM); the CMU-MOSI bc-LSTM utterance corpus.

Security: a pickle can run arbitrary code while it is being loaded. Only load pickle files you trust (the released
feature files of the papers, or files you wrote yourself). HDF5 and CSV inputs carry no such risk.
"""

from __future__ import annotations

import csv
import json
import math
import os
import pickle
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..config import MODALITIES
from ..io import atomic_write
from .batch import Sample
from .corpus import SPLITS, Corpus, DataFormatError, NonFinite, Split, check_finite, spec_from_splits

PathLike = str | os.PathLike[str]

FORMATS: dict[str, str] = {
    "mmsa": "MMSA pickle: {train, valid, test} dicts with text/audio/vision and regression_labels",
    "mult": "MulT pickle: {train, valid, test} dicts with text/audio/vision and labels",
    "lmf": "LMF pickle: {train, valid, test} dicts with glove/covarep/facet and label (IEMOCAP: one level per emotion)",
    "mmsa-fet": "MMSA-FET clip pickle with audio/vision/text/config at the top level, or a folder of them",
    "csd": "CMU-MultimodalSDK computational sequence: HDF5 with <root>/data/<video>/{features,intervals} and metadata",
    "mfn-h5": "folder of MFN HDF5 files: {audio,video,text}_{train,valid,test}.h5 and y_{train,valid,test}.h5",
    "mosi-utterance": "CMU-MOSI folder with bclstm_utterance_features/ and labels/OpinionLevelSentiment.csv",
}
"""Every format `detect_format` recognises, with what its content looks like."""

SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "valid": "valid",
    "val": "valid",
    "dev": "valid",
    "validation": "valid",
    "test": "test",
    "testing": "test",
}
"""Accepted spellings of split names on input; every corpus uses train/valid/test."""

IEMOCAP_EMOTIONS: tuple[str, ...] = ("neutral", "happy", "sad", "angry")
"""Target order of MulT's IEMOCAP labels (its `eval_iemocap` names them Neutral, Happy, Sad, Angry)."""

POM_LMF_TRAITS: tuple[str, ...] = (
    "confident",
    "passionate",
    "pleasant",
    "dominant",
    "credible",
    "vivid",
    "expertise",
    "entertaining",
    "reserved",
    "trusting",
    "relaxed",
    "outgoing",
    "thorough",
    "nervous",
    "persuasive",
    "humorous",
)
"""The 16 POM traits of LMF's `pom.pkl`, in label-column order (the column order of LMF's `train_pom.py` results)."""

POM_MFN_TARGETS: tuple[str, ...] = tuple(f"trait_{i:02d}" for i in range(17))
"""The 17 label columns of MFN's POM release. No source names them, so they stay numbered (see `read_mfn_h5`)."""

MOSI_BCLSTM_LEAKAGE_NOTE = (
    "Leakage: evaluate the bc-LSTM MOSI features only on their own 1447/752 split. Their text and video extractors "
    "were trained on the bc-LSTM train split, which holds 24 of the 31 SDK standard test videos; on the SDK standard "
    "split a ridge regressor on the text features alone reaches a leaked Acc2 of 0.93."
)

_EPS = 1e-5
"""Interval overlap tolerance in seconds (the SDK's epsilon): rows touching a segment only at its boundary, up to
float32 rounding of the timestamps, do not belong to it."""


# ---------------------------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------------------------


def normalise_split(name: object) -> str | None:
    """`train`/`valid`/`test` for any accepted spelling (bytes too, case-insensitive), None for anything else."""
    return SPLIT_ALIASES.get(_text(name).strip().lower()) if isinstance(name, str | bytes) else None


def _text(value: object) -> str:
    """Bytes (Python 2 pickles, HDF5 strings) decoded as UTF-8; anything else through `str`."""
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _str_keys(d: Mapping[Any, Any]) -> dict[str, Any]:
    """The mapping with bytes keys decoded: pickles written by Python 2 or read with encoding='bytes' have them."""
    return {_text(k): v for k, v in d.items()}


def _existing(path: PathLike) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"no such file or folder: {p}")
    return p


class _NumpyCompatUnpickler(pickle.Unpickler):
    """Maps numpy's private module path between numpy 1 (`numpy.core`) and 2 (`numpy._core`).

    Pickles written by either version then load under the other without the numpy 2 DeprecationWarning.
    """

    _numpy2 = int(np.__version__.split(".")[0]) >= 2

    def find_class(self, module: str, name: str) -> Any:
        if self._numpy2 and (module == "numpy.core" or module.startswith("numpy.core.")):
            module = "numpy._core" + module[len("numpy.core") :]
        elif not self._numpy2 and (module == "numpy._core" or module.startswith("numpy._core.")):
            module = "numpy.core" + module[len("numpy._core") :]
        return super().find_class(module, name)


def load_pickle(path: PathLike) -> Any:
    """Unpickle a file (Python 2 and 3 pickles alike).

    Security: unpickling runs code chosen by whoever wrote the file; only load files you trust.

    Raises:
        FileNotFoundError: the file does not exist.
        DataFormatError: the file is not a pickle.
    """
    p = _existing(path)
    if p.is_dir():
        raise DataFormatError(f"{p}: expected a pickle file, found a folder")
    with p.open("rb") as f:
        try:
            # latin1 is the documented way to read numpy arrays pickled by Python 2 (LMF's files); it leaves
            # Python 3 pickles untouched.
            return _NumpyCompatUnpickler(f, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as e:
            raise DataFormatError(f"{p}: not a readable pickle ({type(e).__name__}: {e})") from None


@dataclass
class _Source:
    """One input file: error messages name it, and it counts the NaN/inf values it replaced per split/modality."""

    path: str
    nonfinite: NonFinite = "error"
    replaced: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def error(self, where: str, message: str) -> DataFormatError:
        return DataFormatError(f"{self.path}: {where}: {message}")

    def require(self, d: Mapping[str, Any], key: str, split: str | None) -> Any:
        """`d[key]`, or a DataFormatError listing the keys there are (`split` None: a single-clip file)."""
        if key not in d:
            where, what = (f"split {split!r}", "the split") if split else ("clip", "the file")
            raise self.error(where, f"missing key {key!r}; {what} has keys {sorted(d)}")
        return d[key]

    def numeric(self, value: Any, *, where: str, ndim: int | tuple[int, ...], length: int | None = None) -> np.ndarray:
        """`value` as a numeric ndarray of the given rank (and first dimension), or a DataFormatError saying why not."""
        try:
            arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        except ValueError:
            raise self.error(where, f"expected a numeric array, found a ragged {type(value).__name__}") from None
        if arr.dtype.kind not in "biuf":
            example = f" (e.g. {arr.flat[0]!r})" if arr.size else ""
            raise self.error(where, f"expected a numeric array, found dtype {arr.dtype}{example}")
        ranks = (ndim,) if isinstance(ndim, int) else ndim
        if arr.ndim not in ranks:
            raise self.error(where, f"expected a {' or '.join(f'{r}-D' for r in ranks)} array, found shape {arr.shape}")
        if length is not None and len(arr) != length:
            raise self.error(where, f"expected {length} rows (one per sample), found shape {arr.shape}")
        return arr

    def features(
        self, value: Any, *, split: str, modality: str, key: str, length: int | None = None, ndim: int = 3
    ) -> np.ndarray:
        """Float32 features, checked for NaN/inf under the NaN policy; replaced values are counted."""
        where = f"split {split!r}, key {key!r} ({modality})"
        x = self.numeric(value, where=where, ndim=ndim, length=length).astype(np.float32, copy=False)
        bad = int(np.count_nonzero(~np.isfinite(x)))
        if bad:
            x = check_finite(x, source=self.path, split=split, modality=modality, policy=self.nonfinite)
            self.replaced[f"{split}/{modality}"] = self.replaced.get(f"{split}/{modality}", 0) + bad
        return x

    def scores(self, value: Any, *, where: str, length: int | None = None) -> np.ndarray:
        """Regression labels as (N, K) float32; NaN/inf labels are always an error (no fill value is meaningful)."""
        y = self.numeric(value, where=where, ndim=(1, 2, 3), length=length)
        y = y.reshape(len(y), -1).astype(np.float32)
        bad = int(np.count_nonzero(~np.isfinite(y)))
        if bad:
            raise self.error(where, f"{bad} labels are NaN or infinite")
        return y

    def corpus(self, name: str, fmt: str, splits: dict[str, Split], **spec: Any) -> Corpus:
        """Assemble the corpus after checking that every split has the same modalities and feature dims."""
        if not splits:
            raise DataFormatError(
                f"{self.path}: no train/valid/test split found (accepted names: {sorted(SPLIT_ALIASES)})"
            )
        ordered = {s: splits[s] for s in sorted(splits, key=_split_rank)}
        first_name, first = next(iter(ordered.items()))
        want = {m: x.shape[-1] for m, x in first.features.items()}
        for s, split in ordered.items():
            have = {m: x.shape[-1] for m, x in split.features.items()}
            if have != want:
                raise self.error(f"split {s!r}", f"modalities/dims {have} differ from split {first_name!r}: {want}")
        return Corpus(
            name=name,
            splits=ordered,
            spec=spec_from_splits(ordered, **spec),
            source=f"{self.path} ({fmt})",
            notes=list(self.notes),
            nonfinite=dict(self.replaced),
        )


def _split_rank(name: str) -> int:
    return SPLITS.index(name) if name in SPLITS else len(SPLITS)


def _splits_of(obj: Any, src: _Source) -> dict[str, dict[str, Any]]:
    """The split dicts of a `{split: {key: array}}` pickle, under normalised names; other top-level keys are ignored."""
    if not isinstance(obj, Mapping):
        raise DataFormatError(f"{src.path}: expected a dict of splits, found {type(obj).__name__}")
    out: dict[str, dict[str, Any]] = {}
    for key, value in obj.items():
        split = normalise_split(key)
        if split is None or not isinstance(value, Mapping):
            continue
        if split in out:
            raise DataFormatError(f"{src.path}: two top-level keys both mean split {split!r}")
        out[split] = _str_keys(value)
    if not out:
        raise DataFormatError(
            f"{src.path}: no train/valid/test split dicts at the top level; keys are {sorted(_text(k) for k in obj)}"
        )
    return out


def _ids(value: Any, n: int, split: str, src: _Source) -> list[str]:
    """Sample ids as strings; rows of several fields (MulT: video, start, end) are joined with '_'."""
    if value is None:
        return [f"{split}_{i}" for i in range(n)]
    arr = np.asarray(value, dtype=object)
    if len(arr) != n:
        raise src.error(f"split {split!r}, key 'id'", f"expected {n} ids (one per sample), found {len(arr)}")
    if arr.ndim == 1:
        return [_text(v) for v in arr]
    return ["_".join(_text(v) for v in np.ravel(row)) for row in arr]


def _length_mask(value: Any, steps: int, n: int, *, split: str, key: str, src: _Source) -> np.ndarray:
    """(N, T) mask from true lengths (real steps first). Lengths beyond T are clipped, with a note."""
    lengths = src.numeric(value, where=f"split {split!r}, key {key!r}", ndim=1, length=n)
    if lengths.dtype.kind == "f" and not np.all(np.isfinite(lengths) & (lengths == np.round(lengths))):
        raise src.error(f"split {split!r}, key {key!r}", "expected whole-number lengths")
    lengths = lengths.astype(np.int64)
    if lengths.size and lengths.min() < 0:
        raise src.error(f"split {split!r}, key {key!r}", f"expected lengths >= 0, found {int(lengths.min())}")
    over = int(np.count_nonzero(lengths > steps))
    if over:
        src.notes.append(f"split {split!r}: {over} {key} exceed the padded length {steps} and were clipped to it")
    return np.arange(steps)[None, :] < np.minimum(lengths, steps)[:, None]


def _targets_for(k: int, names: Sequence[str] | None = None) -> tuple[str, ...]:
    if names is not None and len(names) == k:
        return tuple(names)
    return ("sentiment",) if k == 1 else tuple(f"label_{i:02d}" for i in range(k))


def _check_text_mode(text: str) -> None:
    if text not in ("features", "bert_tokens"):
        raise ValueError(f"text must be 'features' or 'bert_tokens', got {text!r}")


# ---------------------------------------------------------------------------------------------------------------------
# MMSA
# ---------------------------------------------------------------------------------------------------------------------


def read_mmsa_pickle(
    path: PathLike,
    *,
    nonfinite: NonFinite = "error",
    text: str = "features",
    dataset: str | None = None,
    unimodal_labels: bool = False,
) -> Corpus:
    """Read an MMSA feature pickle (`aligned_50.pkl`, `unaligned_50.pkl`, `unaligned_39.pkl`, MMSA-FET dataset output).

    Layout: ``{"train"|"valid"|"test": {id, raw_text, text (N,L,768), text_bert (N,3,L), audio (N,Ta,Da),
    vision (N,Tv,Dv), audio_lengths?, vision_lengths?, regression_labels (N,), regression_labels_T/A/V?, ...}}``.
    Unaligned files carry ``*_lengths``; aligned ones do not (their masks are all True). The text mask is the
    ``text_bert`` attention mask when its length matches the text sequence. ``classification_labels`` (deprecated in
    MMSA 2.0) and ``annotations`` are ignored.

    Security: this unpickles the file; only load files you trust.

    Args:
        path: the pickle.
        nonfinite: "error" rejects NaN/inf features (COVAREP audio has -inf); "zero" replaces them with a warning.
        text: "features" reads ``text``; "bert_tokens" reads ``text_bert`` as (N, L, 3) float steps of
            (token id, attention mask, segment id), masked by the attention mask, extractor "bert-tokens".
        dataset: "sims" forces the SIMS metrics; otherwise they are chosen when ``regression_labels_T`` is present.
        unimodal_labels: also return SIMS's unimodal labels as targets 2-4 (needs ``regression_labels_T/A/V``).

    Returns:
        A regression corpus. Extractors: the top-level ``config`` of MMSA-FET dataset files when present, else
        ``mmsa-{text,audio,vision}`` (``mmsa-sims-*`` for SIMS, whose BERT, LibROSA and OpenFace features differ from
        MOSI's), and "bert-tokens" for text in token mode.
    """
    src = _Source(str(path), nonfinite)
    return _mmsa_from_object(load_pickle(path), src, text=text, dataset=dataset, unimodal_labels=unimodal_labels)


_UNIMODAL_KEYS = ("regression_labels_T", "regression_labels_A", "regression_labels_V")


def _mmsa_from_object(obj: Any, src: _Source, *, text: str, dataset: str | None, unimodal_labels: bool) -> Corpus:
    _check_text_mode(text)
    raw = _splits_of(obj, src)
    sims = dataset == "sims" or any("regression_labels_T" in d for d in raw.values())
    splits = {s: _mmsa_split(d, s, src, text=text, unimodal_labels=unimodal_labels) for s, d in raw.items()}
    aligned = not any(k in d for d in raw.values() for k in ("audio_lengths", "vision_lengths"))
    config = _str_keys(obj).get("config")
    if isinstance(config, Mapping):
        extractors = _fet_extractors(config, text=text)
    else:
        tag = "mmsa-sims" if sims else "mmsa"
        extractors = {
            "text": "bert-tokens" if text == "bert_tokens" else f"{tag}-text",
            "audio": f"{tag}-audio",
            "vision": f"{tag}-vision",
        }
    targets = ("sentiment", "sentiment_text", "sentiment_audio", "sentiment_vision") if unimodal_labels else None
    return src.corpus(
        dataset or Path(src.path).stem,
        "mmsa",
        splits,
        task="regression",
        targets=targets or ("sentiment",),
        metric_family="sims" if sims else "mosi",
        aligned=aligned,
        extractors=extractors,
    )


def _mmsa_split(d: dict[str, Any], split: str, src: _Source, *, text: str, unimodal_labels: bool) -> Split:
    y = src.scores(src.require(d, "regression_labels", split), where=f"split {split!r}, key 'regression_labels'")
    n = len(y)
    if y.shape[1] != 1:
        raise src.error(f"split {split!r}, key 'regression_labels'", f"expected shape ({n},), found {y.shape}")
    if unimodal_labels:
        y = np.concatenate(
            [y]
            + [
                src.scores(src.require(d, k, split), where=f"split {split!r}, key {k!r}", length=n)
                for k in _UNIMODAL_KEYS
            ],
            axis=1,
        )
    features, masks = {}, {}
    features["text"], masks["text"] = _mmsa_text(d, split, src, text=text, n=n)
    for m in ("audio", "vision"):
        features[m] = src.features(src.require(d, m, split), split=split, modality=m, key=m, length=n)
        if f"{m}_lengths" in d:
            key = f"{m}_lengths"
            masks[m] = _length_mask(d[key], features[m].shape[1], n, split=split, key=key, src=src)
    return Split(ids=_ids(d.get("id"), n, split, src), features=features, masks=masks, labels=y)


def _mmsa_text(d: dict[str, Any], split: str, src: _Source, *, text: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    tokens = _bert_tokens(d, split, src, n) if "text_bert" in d or text == "bert_tokens" else None
    if tokens is not None and text == "bert_tokens":
        x = src.features(tokens.transpose(0, 2, 1), split=split, modality="text", key="text_bert")
        return x, x[:, :, 1] > 0
    if "text" not in d and tokens is not None:
        raise src.error(
            f"split {split!r}",
            "missing key 'text'; this file has only BERT tokens: pass text='bert_tokens' (CLI: --text bert_tokens)",
        )
    x = src.features(src.require(d, "text", split), split=split, modality="text", key="text", length=n)
    if "text_lengths" in d:  # written by write_mmsa_pickle for corpora whose text mask has no BERT tokens behind it
        return x, _length_mask(d["text_lengths"], x.shape[1], n, split=split, key="text_lengths", src=src)
    if tokens is not None and tokens.shape[2] == x.shape[1]:
        return x, tokens[:, 1, :] > 0
    return x, np.ones(x.shape[:2], dtype=bool)


def _bert_tokens(d: dict[str, Any], split: str, src: _Source, n: int) -> np.ndarray:
    where = f"split {split!r}, key 'text_bert'"
    tokens = src.numeric(src.require(d, "text_bert", split), where=where, ndim=3, length=n)
    if tokens.shape[1] != 3:
        raise src.error(
            where, f"expected shape (N, 3, L) = token ids / attention mask / segment ids, found {tokens.shape}"
        )
    return tokens


def write_mmsa_pickle(corpus: Corpus, path: PathLike) -> Path:
    """Write a single-target regression corpus in the MMSA pickle layout, atomically (temp file, then rename).

    Written keys per split: ``id``, ``raw_text`` (empty strings: a Corpus holds no transcripts), ``regression_labels``,
    ``audio``, ``vision``, and ``text`` or, for a corpus whose text is BERT tokens, ``text_bert`` (N, 3, L). When any
    audio/vision mask is not all True, or the corpus is not aligned, sequences are stored real-steps-first with
    ``audio_lengths``/``vision_lengths`` (the unaligned style). A text mask that is not all True and has no BERT
    tokens behind it is kept in an extra ``text_lengths`` key, which MMSA ignores and `read_mmsa_pickle` reads.

    Raises:
        ValueError: the corpus is not single-target regression, or lacks one of text/audio/vision.
    """
    spec = corpus.spec
    if spec.task != "regression" or spec.num_targets != 1:
        raise ValueError(
            f"the MMSA layout holds one regression target; corpus {corpus.name!r} has {spec.task} "
            f"targets {list(spec.targets)}"
        )
    missing = [m for m in MODALITIES if m not in spec.dims]
    if missing:
        raise ValueError(f"the MMSA layout needs text, audio and vision; corpus {corpus.name!r} lacks {missing}")
    bert = spec.extractors.get("text") == "bert-tokens"
    with_lengths = not spec.aligned or any(
        not s.masks[m].all() for s in corpus.splits.values() for m in ("audio", "vision")
    )
    out: dict[str, dict[str, Any]] = {}
    for name, split in corpus.splits.items():
        n = len(split)
        d: dict[str, Any] = {
            "id": np.array(split.ids, dtype=object),
            "raw_text": np.array([""] * n, dtype=object),
            "regression_labels": np.asarray(split.labels[:, 0], dtype=np.float32),
        }
        text, text_mask = _real_steps_first(split.features["text"], split.masks["text"])
        if bert:
            d["text_bert"] = text.transpose(0, 2, 1).copy()
        else:
            d["text"] = text
            if not text_mask.all():
                d["text_lengths"] = text_mask.sum(1).astype(np.int64)
        for m in ("audio", "vision"):
            x, mask = _real_steps_first(split.features[m], split.masks[m])
            d[m] = x
            if with_lengths:
                d[f"{m}_lengths"] = mask.sum(1).astype(np.int64)
        out[name] = d
    return atomic_write(path, lambda f: pickle.dump(out, f, protocol=pickle.HIGHEST_PROTOCOL))


def _real_steps_first(x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move each row's real steps to the front (stable) and zero the rest, so lengths describe the mask exactly."""
    if mask.all():
        return np.ascontiguousarray(x, dtype=np.float32), mask
    order = np.argsort(~mask, axis=1, kind="stable")
    packed = np.take_along_axis(np.asarray(x, dtype=np.float32), order[:, :, None], axis=1)
    new_mask = np.arange(mask.shape[1])[None, :] < mask.sum(1)[:, None]
    packed[~new_mask] = 0.0
    return packed, new_mask


# ---------------------------------------------------------------------------------------------------------------------
# MulT
# ---------------------------------------------------------------------------------------------------------------------


def read_mult_pickle(path: PathLike, *, nonfinite: NonFinite = "error") -> Corpus:
    """Read a MulT pickle: `mosi_data.pkl`, `mosei_senti_data.pkl`, `iemocap_data.pkl` or their `*_noalign` versions.

    Layout: ``{"train"|"valid"|"test": {"vision", "audio", "text": (N, T, D), "labels", "id"?}}``. Labels (N, 1, 1)
    are sentiment scores (regression); labels (N, E, C) are one-hot classes per target (IEMOCAP: E=4 emotions in the
    order neutral, happy, sad, angry, C=2) and become (N, E) int64 class indices. ``id`` rows (video, start, end) are
    joined with '_'; without ``id`` the ids are ``<split>_<index>``. Aligned = equal T in all three modalities.

    Security: this unpickles the file; only load files you trust.
    """
    return _mult_from_object(load_pickle(path), _Source(str(path), nonfinite))


def _mult_from_object(obj: Any, src: _Source) -> Corpus:
    raw = _splits_of(obj, src)
    splits: dict[str, Split] = {}
    kinds = set()
    for s, d in raw.items():
        labels, kind = _mult_labels(src.require(d, "labels", s), s, src)
        kinds.add(kind)
        n = len(labels)
        features = {m: src.features(src.require(d, m, s), split=s, modality=m, key=m, length=n) for m in MODALITIES}
        splits[s] = Split(ids=_ids(d.get("id"), n, s, src), features=features, masks={}, labels=labels)
    if len(kinds) != 1:
        raise DataFormatError(f"{src.path}: the splits disagree on the label layout: {sorted(kinds)}")
    task, k, classes = kinds.pop()
    first = next(iter(splits.values()))
    aligned = len({first.features[m].shape[1] for m in MODALITIES}) == 1
    if task == "classification":
        iemocap = (k, classes) == (4, 2)
        spec = dict(
            task="classification",
            targets=IEMOCAP_EMOTIONS if iemocap else _targets_for(k),
            num_classes=classes,
            metric_family="iemocap" if iemocap else "classification",
        )
    else:
        spec = dict(task="regression", targets=_targets_for(k), metric_family="mosi" if k == 1 else "regression")
    extractors = {m: f"mult-{m}" for m in MODALITIES}
    return src.corpus(Path(src.path).stem, "mult", splits, aligned=aligned, extractors=extractors, **spec)


def _mult_labels(value: Any, split: str, src: _Source) -> tuple[np.ndarray, tuple[str, int, int]]:
    where = f"split {split!r}, key 'labels'"
    y = src.numeric(value, where=where, ndim=(1, 2, 3))
    if y.ndim == 3 and y.shape[2] > 1:
        return _one_hot_to_index(y, where, src), ("classification", y.shape[1], y.shape[2])
    scores = src.scores(y, where=where)
    return scores, ("regression", scores.shape[1], 0)


def _one_hot_to_index(y: np.ndarray, where: str, src: _Source) -> np.ndarray:
    """(N, ..., C) one-hot -> (N, ...) int64 class index; anything but exact one-hot rows is an error."""
    if not (np.isin(y, (0, 1)).all() and (y.sum(-1) == 1).all()):
        bad = int(np.count_nonzero(~(np.isin(y, (0, 1)).all(-1) & (y.sum(-1) == 1))))
        raise src.error(where, f"expected one-hot rows over the last axis (shape {y.shape}), {bad} rows are not")
    return y.argmax(-1).astype(np.int64).reshape(len(y), -1)


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
    return _lmf_from_object(load_pickle(path), _Source(str(path), nonfinite), emotion=emotion)


def _lmf_from_object(obj: Any, src: _Source, *, emotion: str | None) -> Corpus:
    top = _str_keys(obj) if isinstance(obj, Mapping) else obj
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
    for s, d in _splits_of(top, src).items():
        y_raw, where = src.require(d, "label", s), f"split {s!r}, key 'label'"
        if per_emotion:
            labels = _one_hot_to_index(src.numeric(y_raw, where=where, ndim=2), where, src)
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
        targets=POM_LMF_TRAITS if pom else _targets_for(k),
        metric_family="mosi" if k == 1 else "traits",
        aligned=False,
        extractors=extractors,
    )


def _lmf_features(value: Any, split: str, modality: str, key: str, src: _Source, n: int) -> np.ndarray:
    """Text stays (N, L, D); time-averaged audio/vision (N, D) become one step, (N, 1, D)."""
    if modality == "text":
        return src.features(value, split=split, modality=modality, key=key, length=n)
    x = src.features(value, split=split, modality=modality, key=key, length=n, ndim=2)
    return x[:, None, :]


# ---------------------------------------------------------------------------------------------------------------------
# CMU-MultimodalSDK computational sequences (.csd)
# ---------------------------------------------------------------------------------------------------------------------


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
    p = _existing(path)
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
    s = _text(value)
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
    return (intervals[:, 0] < end - _EPS) & (intervals[:, 1] > start + _EPS)


def _words(seq: ComputationalSequence, vid: str) -> tuple[list[str], np.ndarray]:
    """Words of a video (b"sp" silences dropped) and their intervals."""
    if vid not in seq.data:
        return [], np.zeros((0, 2))
    features, intervals = seq.data[vid]
    if features.dtype.kind not in "SUO":
        raise DataFormatError(f"{seq.path}: video {vid!r}: expected words (bytes), found {features.dtype} features")
    words = [_text(w) for w in features.reshape(len(features), -1)[:, 0]]
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
    src = _Source(label_seq.path or "labels", nonfinite)
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
    checkers = {m: _Source(seq.path, nonfinite, src.replaced) for m, seq in feature_seqs.items()}
    splits = {s: _checked_split(Split.from_samples(v), s, checkers) for s, v in samples.items() if v}
    k = next(iter(splits.values())).labels.shape[1] if splits else 1
    names = _json_list(label_seq.metadata.get("dimension names"))
    return src.corpus(
        label_seq.metadata.get("dataset name") or Path(src.path).stem,
        "csd",
        splits,
        task="regression",
        targets=_targets_for(k, None if k == 1 else names),
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
    folds: PathLike | Mapping[str, Iterable[str]], labels: ComputationalSequence, src: _Source
) -> dict[str, str]:
    """video -> split, checking that no video is in two folds and noting videos on only one side."""
    where = "folds"
    if not isinstance(folds, Mapping):
        where = str(_existing(folds))
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
    src: _Source,
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


def _checked_split(split: Split, name: str, checkers: dict[str, _Source]) -> Split:
    """A collated split whose features went through the NaN policy, each message naming its modality's file."""
    features = {m: checkers[m].features(x, split=name, modality=m, key="features") for m, x in split.features.items()}
    return Split(ids=split.ids, features=features, masks=split.masks, labels=split.labels)


# ---------------------------------------------------------------------------------------------------------------------
# MMSA-FET per-clip pickles
# ---------------------------------------------------------------------------------------------------------------------


def read_mmsa_fet(
    path_or_folder: PathLike,
    *,
    labels_csv: PathLike | None = None,
    nonfinite: NonFinite = "error",
    text: str = "features",
    dataset: str | None = None,
) -> Corpus:
    """Read MMSA-FET single-clip outputs: one pickle, or a folder of them (`*.pkl`), as one corpus.

    Each clip pickle is ``{audio (Ta, Da), vision (Tv, Dv), text (Tt, 768), text_bert (3, Tt), config, align?}``;
    clips of different lengths are padded at the end with masks. The clip id is the file name without `.pkl`.
    Extractor names come from ``config``: audio the tool ("librosa"; "opensmile-<feature set>"; wav2vec's pretrained
    name), vision the tool ("openface", "mediapipe"), text the pretrained model ("bert-base-uncased"); all clips must
    agree. Aligned = every clip has ``align`` and equal lengths across modalities.

    Labels: a CSV ``clip_id,label[,split]`` (an optional header row starts with ``clip_id``; split defaults to
    "test"). Without a CSV every clip goes
    to "test" with a NaN label and a note: a placeholder like 0 would yield plausible-looking but meaningless metrics,
    whereas NaN makes any accidental training or evaluation fail loudly; prediction needs no labels.

    Security: this unpickles the files; only load files you trust. They need nothing beyond numpy and the standard
    library (pickles written under numpy 1 or 2 load under either).

    Args:
        text: "features" (BERT hidden states) or "bert_tokens" (``text_bert`` as (T, 3) steps, as in MMSA).
        dataset: "sims" selects the SIMS metrics, "mosi"/"mosei" the MOSI ones; otherwise the generic regression ones.
    """
    p = _existing(path_or_folder)
    files = sorted(p.glob("*.pkl")) if p.is_dir() else [p]
    if not files:
        raise DataFormatError(f"{p}: no MMSA-FET clip pickles (*.pkl) in this folder")
    return _fet_corpus(
        [(f, load_pickle(f)) for f in files], p, labels_csv=labels_csv, nonfinite=nonfinite, text=text, dataset=dataset
    )


def _fet_corpus(
    clips: list[tuple[Path, Any]],
    origin: Path,
    *,
    labels_csv: PathLike | None,
    nonfinite: NonFinite,
    text: str,
    dataset: str | None,
) -> Corpus:
    _check_text_mode(text)
    src = _Source(str(origin), nonfinite)
    table = _read_label_csv(labels_csv, src) if labels_csv is not None else None
    if table is None:
        src.notes.append("no labels given: every clip is in split 'test' with a NaN label (prediction only)")
    samples: dict[str, list[Sample]] = {}
    extractors: dict[str, str] | None = None
    first_file = clips[0][0]
    aligned = True
    for file, obj in clips:
        clip = _fet_clip(obj, file, text=text)
        if extractors is not None and clip.extractors != extractors:
            raise DataFormatError(
                f"{file}: extractors {clip.extractors} differ from {first_file}'s {extractors}; "
                "clips from different extraction configs cannot form one corpus"
            )
        extractors = clip.extractors
        aligned &= clip.aligned
        clip_id = file.stem
        if table is not None and clip_id not in table:
            raise DataFormatError(f"{labels_csv}: no row for clip {clip_id!r} (file {file})")
        label, split = table[clip_id] if table is not None else (math.nan, "test")
        clip_src = _Source(str(file), nonfinite, src.replaced)
        feats = {m: clip_src.features(x, split=split, modality=m, key=k, ndim=2) for m, (k, x) in clip.features.items()}
        samples.setdefault(split, []).append(Sample(id=clip_id, features=feats, label=np.array([label], np.float32)))
    if table is not None and len(table) > len(clips):
        src.notes.append(f"{len(table) - len(clips)} rows of {labels_csv} have no clip pickle")
    splits = {s: _fet_split(v, s, src) for s, v in samples.items()}
    family = {"sims": "sims", "mosi": "mosi", "mosei": "mosi"}.get(dataset or "", "regression")
    return src.corpus(
        dataset or origin.stem,
        "mmsa-fet",
        splits,
        task="regression",
        targets=("sentiment",),
        metric_family=family,
        aligned=aligned,
        extractors=extractors or {},
    )


@dataclass
class _Clip:
    features: dict[str, tuple[str, np.ndarray]]
    extractors: dict[str, str]
    aligned: bool


def _fet_clip(obj: Any, file: Path, *, text: str) -> _Clip:
    src = _Source(str(file))
    if not isinstance(obj, Mapping):
        raise DataFormatError(f"{file}: expected an MMSA-FET clip dict, found {type(obj).__name__}")
    d = _str_keys(obj)
    if any(normalise_split(k) for k in d):
        raise DataFormatError(
            f"{file}: this is a dataset pickle with splits {sorted(d)}, not an MMSA-FET clip; "
            "load the file itself (format 'mmsa')"
        )
    feats: dict[str, tuple[str, np.ndarray]] = {}
    for m in ("audio", "vision"):
        feats[m] = (m, src.numeric(src.require(d, m, None), where=f"key {m!r}", ndim=2))
    if text == "bert_tokens":
        tokens = src.numeric(src.require(d, "text_bert", None), where="key 'text_bert'", ndim=2)
        if tokens.shape[0] != 3:
            raise src.error("key 'text_bert'", f"expected shape (3, T), found {tokens.shape}")
        feats["text"] = ("text_bert", tokens.T)
    else:
        feats["text"] = ("text", src.numeric(src.require(d, "text", None), where="key 'text'", ndim=2))
    config = d.get("config")
    extractors = (
        _fet_extractors(config, text=text)
        if isinstance(config, Mapping)
        else {
            "text": "bert-tokens" if text == "bert_tokens" else "mmsa-fet-text",
            "audio": "mmsa-fet-audio",
            "vision": "mmsa-fet-vision",
        }
    )
    aligned = "align" in d and len({x.shape[0] for _, x in feats.values()}) == 1
    return _Clip(features={m: feats[m] for m in MODALITIES}, extractors=extractors, aligned=aligned)


def _fet_extractors(config: Mapping[str, Any], *, text: str) -> dict[str, str]:
    """Extractor names from an MMSA-FET config: {"audio": {"tool": ...}, "video": {"tool": ...}, "text": {...}}."""
    audio = config.get("audio") or {}
    video = config.get("video") or {}
    text_cfg = config.get("text") or {}
    audio_name = str(audio.get("tool", "mmsa-fet-audio"))
    if audio_name == "opensmile" and isinstance(audio.get("args"), Mapping) and audio["args"].get("feature_set"):
        audio_name = f"opensmile-{audio['args']['feature_set']}"
    elif audio.get("pretrained"):
        audio_name = str(audio["pretrained"])
    text_name = (
        "bert-tokens"
        if text == "bert_tokens"
        else str(text_cfg.get("pretrained") or text_cfg.get("model") or "mmsa-fet-text")
    )
    return {"text": text_name, "audio": audio_name, "vision": str(video.get("tool", "mmsa-fet-vision"))}


def _fet_split(samples: list[Sample], split: str, src: _Source) -> Split:
    for m in MODALITIES:
        dims = {s.features[m].shape[1] for s in samples}
        if len(dims) > 1:
            raise DataFormatError(
                f"{src.path}: split {split!r}: {m} features of different clips have different dims {sorted(dims)}"
            )
    return Split.from_samples(samples)


def _read_label_csv(path: PathLike, src: _Source) -> dict[str, tuple[float, str]]:
    """clip_id -> (label, split) from `clip_id,label[,split]` rows, after an optional header row starting `clip_id`."""
    p = _existing(path)
    with p.open(newline="") as f:
        rows = [(line, r) for line, r in enumerate(csv.reader(f), start=1) if any(c.strip() for c in r)]
    if rows and rows[0][1][0].strip().lower() == "clip_id":
        rows = rows[1:]
    table: dict[str, tuple[float, str]] = {}
    for line, row in rows:
        if len(row) < 2 or not _is_number(row[1]):
            raise DataFormatError(f"{p}: line {line}: expected clip_id,label[,split] with a numeric label, found {row}")
        split = normalise_split(row[2]) if len(row) > 2 and row[2].strip() else "test"
        if split is None:
            raise DataFormatError(f"{p}: line {line}: unknown split {row[2]!r}; expected train/valid/test")
        table[row[0].strip()] = (float(row[1]), split)
    if not table:
        raise DataFormatError(f"{p}: no label rows")
    return table


def _is_number(s: str) -> bool:
    try:
        return math.isfinite(float(s))
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------------------------------
# MFN-style HDF5 split files (POM)
# ---------------------------------------------------------------------------------------------------------------------

_MFN_MODALITY_FILES = {"audio": ("audio_{}.h5",), "vision": ("video_{}.h5",), "text": ("text_{}.h5", "text_{}_emb.h5")}


def read_mfn_h5(folder: PathLike, *, nonfinite: NonFinite = "error") -> Corpus:
    """Read MFN-style HDF5 splits: ``{audio,video,text?}_{split}.h5`` with features (N, T, D) and ``y_{split}.h5``.

    Each file holds one dataset (key ``d1`` in MFN's releases; any single dataset is accepted). "video" files become
    modality "vision"; ``text_{split}_emb.h5`` is accepted for text. A modality is present when its file exists for
    every split (POM has no text, so its corpus has no "text" key); labels (N, K) or (N,). The files hold no ids or
    lengths: ids are ``<split>_<index>`` and masks are all True. Equal T across modalities counts as aligned (MFN's
    data is word-aligned).

    Targets: one column is "sentiment" (metric family "mosi"); POM's 17 columns are trait scores in [1, 7] (metric
    family "traits") named ``trait_00``..``trait_16``: no source found names MFN's columns. Their value ranges suggest
    columns 0-15 follow LMF's 16-trait order (:data:`POM_LMF_TRAITS`; columns 8-13, the 1-5 personality items, are the
    only ones with maximum 5) plus one more trait, but that is not established.
    """
    root = _existing(folder)
    if not root.is_dir():
        raise DataFormatError(f"{root}: expected a folder of MFN HDF5 files, found a file")
    label_files = {normalise_split(f.stem[2:]): f for f in sorted(root.glob("y_*.h5"))}
    label_files.pop(None, None)
    if not label_files:
        raise DataFormatError(f"{root}: no y_{{train,valid,test}}.h5 label files")
    src = _Source(str(root), nonfinite)
    # A modality is present when any split has its file; every split must then have it.
    tags = [f.stem[2:] for f in label_files.values()]
    present = [m for m in MODALITIES if any(_mfn_file(root, m, t) is not None for t in tags)]
    if not present:
        raise DataFormatError(f"{root}: label files but no audio_/video_/text_<split>.h5 feature files")
    splits: dict[str, Split] = {}
    for split, y_file in label_files.items():
        y_key, y_raw = _h5_single(y_file)
        y = _Source(str(y_file)).scores(y_raw, where=f"split {split!r}, key {y_key!r}")
        features = {}
        for m in present:
            file = _mfn_file(root, m, y_file.stem[2:])
            if file is None:
                wanted = _MFN_MODALITY_FILES[m][0].format(y_file.stem[2:])
                raise DataFormatError(f"{root}: split {split!r} has no {m} file {wanted} (other splits have one)")
            key, x = _h5_single(file)
            features[m] = _Source(str(file), nonfinite, src.replaced).features(
                x, split=split, modality=m, key=key, length=len(y)
            )
        splits[split] = Split(ids=[f"{split}_{i}" for i in range(len(y))], features=features, masks={}, labels=y)
    if "text" not in present:
        src.notes.append("no text modality: this release has no text features (POM's MFN files hold audio and video)")
    first = next(iter(splits.values()))
    k = first.labels.shape[1]
    return src.corpus(
        root.name,
        "mfn-h5",
        splits,
        task="regression",
        targets=POM_MFN_TARGETS if k == len(POM_MFN_TARGETS) else _targets_for(k),
        metric_family="mosi" if k == 1 else "traits",
        aligned=len({x.shape[1] for x in first.features.values()}) == 1,
        extractors={m: f"mfn-{m}" for m in present},
    )


def _mfn_file(root: Path, modality: str, split: str) -> Path | None:
    for pattern in _MFN_MODALITY_FILES[modality]:
        if (root / pattern.format(split)).is_file():
            return root / pattern.format(split)
    return None


def _h5_single(path: Path) -> tuple[str, np.ndarray]:
    """(name, values) of the one dataset of an MFN HDF5 file (`d1` when there are several)."""
    if not h5py.is_hdf5(path):
        raise DataFormatError(f"{path}: not an HDF5 file")
    with h5py.File(path, "r") as f:
        names: list[str] = []
        f.visit(lambda name: names.append(name) if isinstance(f[name], h5py.Dataset) else None)
        if "d1" in names:
            return "d1", f["d1"][()]
        if len(names) != 1:
            raise DataFormatError(f"{path}: expected one dataset (key 'd1'), found datasets {names}")
        return names[0], f[names[0]][()]


# ---------------------------------------------------------------------------------------------------------------------
# CMU-MOSI utterance-level bc-LSTM features
# ---------------------------------------------------------------------------------------------------------------------


def load_mosi_utterance(
    root: PathLike, *, valid_videos_fraction: float = 0.1, seed: int = 0, nonfinite: NonFinite = "error"
) -> Corpus:
    """CMU-MOSI with one bc-LSTM feature vector per utterance (text 100-d, audio 73-d, video 100-d; T = 1).

    ``root`` holds ``bclstm_utterance_features/`` (``text_{train,test}.csv``: row index into ``transcripts.csv`` then
    100 features; ``audio/audio_{split}0.csv``: 73 features + binary label; ``video/video_{split}0.csv``: 100 + binary
    label, rows in the order of the text file) and ``labels/OpinionLevelSentiment.csv`` (start, end, video, segment,
    score; no header), which gives the continuous labels by (video, segment). The binary labels of transcripts, audio
    and video files must all equal (score >= 0).

    Splits: the release's own 1447 train / 752 test utterances (video-disjoint), with a validation split carved from
    train by video (a deterministic function of ``seed``), so no video is in two splits. Use this split only: see
    the leakage note in ``corpus.notes``.

    Args:
        valid_videos_fraction: share of train videos moved to "valid" (0 for no validation split; at least one
            video otherwise).
        seed: seed of the validation carve.

    Raises:
        DataFormatError: a file is malformed, a segment has no continuous label, or binary labels disagree.
    """
    base = _existing(root)
    if not 0 <= valid_videos_fraction < 1:
        raise ValueError(f"valid_videos_fraction must be in [0, 1), got {valid_videos_fraction}")
    feats_dir = base / "bclstm_utterance_features"
    transcripts = _read_csv_rows(feats_dir / "transcripts.csv", columns=4)
    scores = _read_sentiment_csv(base / "labels" / "OpinionLevelSentiment.csv")
    src = _Source(str(base), nonfinite, notes=[MOSI_BCLSTM_LEAKAGE_NOTE])
    splits = {s: _mosi_utterance_split(feats_dir, s, transcripts, scores, src) for s in ("train", "test")}
    if valid_videos_fraction > 0:
        splits["train"], splits["valid"] = _carve_by_video(splits["train"], valid_videos_fraction, seed, src)
    return src.corpus(
        "mosi-utterance",
        "mosi-utterance",
        splits,
        task="regression",
        targets=("sentiment",),
        metric_family="mosi",
        aligned=True,  # T = 1 for every modality, so trivially aligned
        extractors={"text": "bclstm-text", "audio": "bclstm-audio", "vision": "bclstm-video"},
    )


def _read_csv_rows(path: Path, *, columns: int | None = None) -> list[list[str]]:
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with path.open(newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    if not rows:
        raise DataFormatError(f"{path}: empty file")
    widths = {len(r) for r in rows}
    if len(widths) != 1 or (columns is not None and widths != {columns}):
        want = f"{columns} columns" if columns is not None else "the same number of columns on every row"
        raise DataFormatError(f"{path}: expected {want}, found row widths {sorted(widths)}")
    return rows


def _float_table(path: Path, columns: int) -> np.ndarray:
    rows = _read_csv_rows(path, columns=columns)
    try:
        return np.array(rows, dtype=np.float64)
    except ValueError as e:
        raise DataFormatError(f"{path}: expected numbers only ({e})") from None


def _read_sentiment_csv(path: Path) -> dict[tuple[str, int], float]:
    out = {}
    for line, row in enumerate(_read_csv_rows(path, columns=5), start=1):
        try:
            out[(row[2], int(row[3]))] = float(row[4])
        except ValueError:
            raise DataFormatError(f"{path}: row {line}: expected start,end,video,segment,score, found {row}") from None
    return out


def _segment_key(clip_id: str) -> tuple[str, int]:
    video, _, segment = clip_id.rpartition("_")  # video ids may contain '_' themselves (e.g. _dI--eQ6qVU)
    return video, int(segment) if segment.isdigit() else -1


def _mosi_utterance_split(
    feats_dir: Path, split: str, transcripts: list[list[str]], scores: dict[tuple[str, int], float], src: _Source
) -> Split:
    text = _float_table(feats_dir / f"text_{split}.csv", 101)
    audio = _float_table(feats_dir / "audio" / f"audio_{split}0.csv", 74)
    video = _float_table(feats_dir / "video" / f"video_{split}0.csv", 101)
    if not len(text) == len(audio) == len(video):
        raise DataFormatError(
            f"{feats_dir}: split {split!r}: text/audio/video files have {len(text)}/{len(audio)}/"
            f"{len(video)} rows; they must be row-aligned"
        )
    index = text[:, 0].astype(np.int64)
    if index.min() < 0 or index.max() >= len(transcripts):
        raise DataFormatError(
            f"{feats_dir / f'text_{split}.csv'}: column 0 must index transcripts.csv rows "
            f"0..{len(transcripts) - 1}, found {index.min()}..{index.max()}"
        )
    ids = [transcripts[i][0] for i in index]
    missing = [i for i in ids if _segment_key(i) not in scores]
    if missing:
        raise DataFormatError(
            f"{feats_dir.parent / 'labels' / 'OpinionLevelSentiment.csv'}: no score for "
            f"{len(missing)} {split} segments (e.g. {missing[:3]})"
        )
    y = np.array([scores[_segment_key(i)] for i in ids], dtype=np.float32)
    binary = {
        "transcripts.csv": np.array([transcripts[i][3] == "1" for i in index]),
        f"audio_{split}0.csv": audio[:, -1] == 1,
        f"video_{split}0.csv": video[:, -1] == 1,
    }
    for name, b in binary.items():
        wrong = np.flatnonzero(b != (y >= 0))
        if wrong.size:
            raise DataFormatError(
                f"{feats_dir}: split {split!r}: the binary labels of {name} disagree with "
                f"(score >= 0) for {wrong.size} segments (e.g. {ids[wrong[0]]}); the join failed"
            )
    features = {"text": text[:, 1:], "audio": audio[:, :-1], "vision": video[:, :-1]}
    features = {m: src.features(x[:, None, :], split=split, modality=m, key=m) for m, x in features.items()}
    return Split(ids=ids, features=features, masks={}, labels=y[:, None])


def _carve_by_video(train: Split, fraction: float, seed: int, src: _Source) -> tuple[Split, Split]:
    videos = np.array([_segment_key(i)[0] for i in train.ids])
    unique = sorted(set(videos))
    count = max(1, round(fraction * len(unique)))
    chosen = set(np.random.default_rng(seed).choice(unique, size=count, replace=False).tolist())
    is_valid = np.array([v in chosen for v in videos])
    src.notes.append(
        f"validation = {count} of {len(unique)} train videos ({int(is_valid.sum())} utterances), "
        f"drawn with seed {seed}; no video is in two splits"
    )
    return train.subset(np.flatnonzero(~is_valid)), train.subset(np.flatnonzero(is_valid))


# ---------------------------------------------------------------------------------------------------------------------
# Detection by content and dispatch
# ---------------------------------------------------------------------------------------------------------------------


def detect_format(path: PathLike) -> str:
    """The format of a file or folder, decided by content (not name); one of :data:`FORMATS`.

    Pickles are loaded to be inspected (use `load_corpus` to read a file once); only inspect files you trust.

    Raises:
        FileNotFoundError: no such path.
        DataFormatError: unrecognised content (the message lists the known formats).
    """
    return _sniff(_existing(path))[0]


def load_corpus(path: PathLike, *, nonfinite: NonFinite = "error", **options: Any) -> Corpus:
    """Detect the format of `path` by content and read it, loading a pickle only once.

    Options go to the format's reader: mmsa `text`, `dataset`, `unimodal_labels`; lmf `emotion`; mmsa-fet
    `labels_csv`, `text`, `dataset`; csd (a label sequence) `features`, `folds`, `words`; mosi-utterance
    `valid_videos_fraction`, `seed`. Security: pickles are unpickled; only load files you trust.

    Raises:
        ValueError: an option that the detected format does not take.
        DataFormatError, FileNotFoundError: as the readers.
    """
    p = _existing(path)
    fmt, obj = _sniff(p)
    allowed = _OPTIONS[fmt]
    extra = sorted(set(options) - allowed)
    if extra:
        raise ValueError(f"{p} is in format {fmt!r}, which takes options {sorted(allowed) or 'none'}; got {extra}")
    if fmt == "csd" and not {"features", "folds"} <= set(options):
        raise DataFormatError(
            f"{p}: a .csd file holds one computational sequence; to build a corpus from this label "
            "sequence pass features={modality: csd path} and folds=<json> (see load_csd_corpus)"
        )
    return _READERS[fmt](p, obj, nonfinite, options)


_OPTIONS: dict[str, set[str]] = {
    "mmsa": {"text", "dataset", "unimodal_labels"},
    "mult": set(),
    "lmf": {"emotion"},
    "mmsa-fet": {"labels_csv", "text", "dataset"},
    "csd": {"features", "folds", "words"},
    "mfn-h5": set(),
    "mosi-utterance": {"valid_videos_fraction", "seed"},
}

_READERS: dict[str, Callable[[Path, Any, NonFinite, dict[str, Any]], Corpus]] = {
    "mmsa": lambda p, obj, nf, o: _mmsa_from_object(
        obj,
        _Source(str(p), nf),
        text=o.get("text", "features"),
        dataset=o.get("dataset"),
        unimodal_labels=o.get("unimodal_labels", False),
    ),
    "mult": lambda p, obj, nf, o: _mult_from_object(obj, _Source(str(p), nf)),
    "lmf": lambda p, obj, nf, o: _lmf_from_object(obj, _Source(str(p), nf), emotion=o.get("emotion")),
    "mmsa-fet": lambda p, obj, nf, o: (
        read_mmsa_fet(p, nonfinite=nf, **o)
        if obj is None
        else _fet_corpus(
            [(p, obj)],
            p,
            nonfinite=nf,
            labels_csv=o.get("labels_csv"),
            text=o.get("text", "features"),
            dataset=o.get("dataset"),
        )
    ),
    "csd": lambda p, obj, nf, o: load_csd_corpus(p, o["features"], o["folds"], words=o.get("words"), nonfinite=nf),
    "mfn-h5": lambda p, obj, nf, o: read_mfn_h5(p, nonfinite=nf),
    "mosi-utterance": lambda p, obj, nf, o: load_mosi_utterance(p, nonfinite=nf, **o),
}


def _unknown(path: Path, found: str) -> DataFormatError:
    known = "\n".join(f"  {name}: {what}" for name, what in FORMATS.items())
    return DataFormatError(f"{path}: unrecognised data format ({found}); known formats:\n{known}")


def _sniff(path: Path) -> tuple[str, Any]:
    """(format, the loaded pickle or None): pickles are loaded here so that `load_corpus` reads them only once."""
    if path.is_dir():
        return _sniff_folder(path), None
    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            if any(isinstance(f[k], h5py.Group) and {"data", "metadata"} <= set(f[k]) for k in f):
                return "csd", None
            raise _unknown(path, f"an HDF5 file with top-level keys {list(f)[:10]}")
    try:
        obj = load_pickle(path)
    except DataFormatError:
        raise _unknown(path, "neither HDF5 nor a pickle") from None
    return _pickle_format(obj, path), obj


def _sniff_folder(path: Path) -> str:
    if (path / "bclstm_utterance_features").is_dir():
        return "mosi-utterance"
    names = {f.name for f in path.iterdir() if f.is_file()}
    if "y_train.h5" in names and any(n.endswith("_train.h5") and n != "y_train.h5" for n in names):
        return "mfn-h5"
    if any(n.endswith(".pkl") for n in names):
        return "mmsa-fet"
    raise _unknown(path, f"a folder with {len(names)} files, none of a known layout")


def _pickle_format(obj: Any, path: Path) -> str:
    if not isinstance(obj, Mapping):
        raise _unknown(path, f"a pickle of {type(obj).__name__}")
    top = _str_keys(obj)
    splits = [_str_keys(v) for k, v in top.items() if normalise_split(k) and isinstance(v, Mapping)]
    if not splits:
        if {"audio", "vision"} <= set(top):
            return "mmsa-fet"
        nested = [_str_keys(v) for v in top.values() if isinstance(v, Mapping)]
        if nested and all(any(normalise_split(k) for k in v) for v in nested):
            splits = [
                _str_keys(s) for v in nested for k, s in v.items() if normalise_split(k) and isinstance(s, Mapping)
            ]
            if splits and set(_LMF_KEYS.values()) <= set(splits[0]):
                return "lmf"
        raise _unknown(path, f"a pickle dict with keys {sorted(top)[:10]}")
    keys = set(splits[0])
    if "regression_labels" in keys:
        return "mmsa"
    if "labels" in keys and keys & set(MODALITIES):
        return "mult"
    if "label" in keys and set(_LMF_KEYS.values()) <= keys:
        return "lmf"
    raise _unknown(path, f"a pickle of splits whose keys are {sorted(keys)[:12]}")
