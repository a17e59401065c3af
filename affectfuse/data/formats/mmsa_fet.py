"""MMSA-FET per-clip pickles (one clip per file, or a folder of them, with a labels CSV)."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...config import MODALITIES
from ..batch import Sample
from ..corpus import Corpus, DataFormatError, NonFinite, Split
from .common import PathLike, Source, check_text_mode, existing_path, fet_extractors, normalise_split, str_keys
from .pickles import load_pickle
from .registry import pickle_splits, register_format

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
    p = existing_path(path_or_folder)
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
    check_text_mode(text)
    src = Source(str(origin), nonfinite)
    table = read_label_csv(labels_csv, src) if labels_csv is not None else None
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
        clip_src = Source(str(file), nonfinite, src.replaced)
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
    src = Source(str(file))
    if not isinstance(obj, Mapping):
        raise DataFormatError(f"{file}: expected an MMSA-FET clip dict, found {type(obj).__name__}")
    d = str_keys(obj)
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
        fet_extractors(config, text=text)
        if isinstance(config, Mapping)
        else {
            "text": "bert-tokens" if text == "bert_tokens" else "mmsa-fet-text",
            "audio": "mmsa-fet-audio",
            "vision": "mmsa-fet-vision",
        }
    )
    aligned = "align" in d and len({x.shape[0] for _, x in feats.values()}) == 1
    return _Clip(features={m: feats[m] for m in MODALITIES}, extractors=extractors, aligned=aligned)


def _fet_split(samples: list[Sample], split: str, src: Source) -> Split:
    for m in MODALITIES:
        dims = {s.features[m].shape[1] for s in samples}
        if len(dims) > 1:
            raise DataFormatError(
                f"{src.path}: split {split!r}: {m} features of different clips have different dims {sorted(dims)}"
            )
    return Split.from_samples(samples)


def read_label_csv(path: PathLike, src: Source) -> dict[str, tuple[float, str]]:
    """clip_id -> (label, split) from `clip_id,label[,split]` rows, after an optional header row starting `clip_id`."""
    p = existing_path(path)
    with p.open(newline="") as f:
        rows = [(line, r) for line, r in enumerate(csv.reader(f), start=1) if any(c.strip() for c in r)]
    if rows and rows[0][1][0].strip().lower() == "clip_id":
        rows = rows[1:]
    table: dict[str, tuple[float, str]] = {}
    for line, row in rows:
        if len(row) < 2 or not is_number(row[1]):
            raise DataFormatError(f"{p}: line {line}: expected clip_id,label[,split] with a numeric label, found {row}")
        split = normalise_split(row[2]) if len(row) > 2 and row[2].strip() else "test"
        if split is None:
            raise DataFormatError(f"{p}: line {line}: unknown split {row[2]!r}; expected train/valid/test")
        table[row[0].strip()] = (float(row[1]), split)
    if not table:
        raise DataFormatError(f"{p}: no label rows")
    return table


def is_number(s: str) -> bool:
    try:
        return math.isfinite(float(s))
    except ValueError:
        return False


def _is_fet_clip(obj: Any) -> bool:
    top, splits = pickle_splits(obj)
    return not splits and {"audio", "vision"} <= set(top)


def _is_fet_folder(folder: Path) -> bool:
    return any(f.is_file() and f.suffix == ".pkl" for f in folder.iterdir())


@register_format(
    "mmsa-fet",
    description="MMSA-FET clip pickle with audio/vision/text/config at the top level, or a folder of them",
    recognise={"pickle": _is_fet_clip, "folder": _is_fet_folder},
    options=("labels_csv", "text", "dataset"),
)
def _read(path: Path, obj: Any, nonfinite: NonFinite, options: dict[str, Any]) -> Corpus:
    if obj is None:  # a folder
        return read_mmsa_fet(path, nonfinite=nonfinite, **options)
    return _fet_corpus(
        [(path, obj)],
        path,
        nonfinite=nonfinite,
        labels_csv=options.get("labels_csv"),
        text=options.get("text", "features"),
        dataset=options.get("dataset"),
    )
