"""What every reader shares: split names, label conventions, the Source that names a file in errors."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..corpus import SPLITS, Corpus, DataFormatError, NonFinite, Split, check_finite, spec_from_splits

PathLike = str | os.PathLike[str]

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

# ---------------------------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------------------------


def normalise_split(name: object) -> str | None:
    """`train`/`valid`/`test` for any accepted spelling (bytes too, case-insensitive), None for anything else."""
    return SPLIT_ALIASES.get(as_text(name).strip().lower()) if isinstance(name, str | bytes) else None


def as_text(value: object) -> str:
    """Bytes (Python 2 pickles, HDF5 strings) decoded as UTF-8; anything else through `str`."""
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def str_keys(d: Mapping[Any, Any]) -> dict[str, Any]:
    """The mapping with bytes keys decoded: pickles written by Python 2 or read with encoding='bytes' have them."""
    return {as_text(k): v for k, v in d.items()}


def existing_path(path: PathLike) -> Path:
    """An existing data file or folder; a FIFO or device is refused (reading it would block or never end)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"no such file or folder: {p}")
    if not (p.is_file() or p.is_dir()):
        raise DataFormatError(f"{p}: a special file (FIFO, device or socket), expected a data file or folder")
    return p



@dataclass
class Source:
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
        """Regression labels as (N, K) float32. NaN marks an unlabelled sample (kept: `data inspect` counts it,
        training leaves it out, evaluation refuses it, prediction works); an infinite label is an error."""
        y = self.numeric(value, where=where, ndim=(1, 2, 3), length=length)
        y = y.reshape(len(y), -1).astype(np.float32)
        bad = int(np.count_nonzero(np.isinf(y)))
        if bad:
            raise self.error(where, f"{bad} labels are infinite")
        return y

    def corpus(self, name: str, fmt: str, splits: dict[str, Split], **spec: Any) -> Corpus:
        """Assemble the corpus after checking that every split has the same modalities and feature dims."""
        if not splits:
            raise DataFormatError(
                f"{self.path}: no train/valid/test split found (accepted names: {sorted(SPLIT_ALIASES)})"
            )
        ordered = {s: splits[s] for s in sorted(splits, key=split_rank)}
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


def split_rank(name: str) -> int:
    return SPLITS.index(name) if name in SPLITS else len(SPLITS)


def splits_of(obj: Any, src: Source) -> dict[str, dict[str, Any]]:
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
        out[split] = str_keys(value)
    if not out:
        raise DataFormatError(
            f"{src.path}: no train/valid/test split dicts at the top level; keys are {sorted(as_text(k) for k in obj)}"
        )
    return out


def read_ids(value: Any, n: int, split: str, src: Source) -> list[str]:
    """Sample ids as strings; rows of several fields (MulT: video, start, end) are joined with '_'."""
    if value is None:
        return [f"{split}_{i}" for i in range(n)]
    arr = np.asarray(value, dtype=object)
    if len(arr) != n:
        raise src.error(f"split {split!r}, key 'id'", f"expected {n} ids (one per sample), found {len(arr)}")
    if arr.ndim == 1:
        return [as_text(v) for v in arr]
    return ["_".join(as_text(v) for v in np.ravel(row)) for row in arr]


def length_mask(value: Any, steps: int, n: int, *, split: str, key: str, src: Source) -> np.ndarray:
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


def targets_for(k: int, names: Sequence[str] | None = None) -> tuple[str, ...]:
    if names is not None and len(names) == k:
        return tuple(names)
    return ("sentiment",) if k == 1 else tuple(f"label_{i:02d}" for i in range(k))


def check_text_mode(text: str) -> None:
    if text not in ("features", "bert_tokens"):
        raise ValueError(f"text must be 'features' or 'bert_tokens', got {text!r}")


def fet_extractors(config: Mapping[str, Any], *, text: str) -> dict[str, str]:
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
