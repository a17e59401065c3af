"""MMSA's dataset pickles (aligned_50.pkl, unaligned_50.pkl, unaligned_39.pkl): reader and writer."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ...config import MODALITIES
from ...io import atomic_write
from ..corpus import Corpus, DataFormatError, NonFinite, Split
from .common import PathLike, Source, check_text_mode, fet_extractors, length_mask, read_ids, splits_of, str_keys
from .pickles import load_pickle
from .registry import pickle_splits, register_format

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
    vision (N,Tv,Dv), audio_lengths?, vision_lengths?, regression_labels (N,), regression_labels_T/A/V?, ...}}``; a
    modality whose key is absent from every split is absent from the corpus.
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
    src = Source(str(path), nonfinite)
    return _mmsa_from_object(load_pickle(path), src, text=text, dataset=dataset, unimodal_labels=unimodal_labels)


_UNIMODAL_KEYS = ("regression_labels_T", "regression_labels_A", "regression_labels_V")


def _mmsa_from_object(obj: Any, src: Source, *, text: str, dataset: str | None, unimodal_labels: bool) -> Corpus:
    check_text_mode(text)
    raw = splits_of(obj, src)
    sims = dataset == "sims" or any("regression_labels_T" in d for d in raw.values())
    splits = {s: _mmsa_split(d, s, src, text=text, unimodal_labels=unimodal_labels) for s, d in raw.items()}
    aligned = not any(k in d for d in raw.values() for k in ("audio_lengths", "vision_lengths"))
    config = str_keys(obj).get("config")
    if isinstance(config, Mapping):
        extractors = fet_extractors(config, text=text)
    else:
        tag = "mmsa-sims" if sims else "mmsa"
        extractors = {
            "text": "bert-tokens" if text == "bert_tokens" else f"{tag}-text",
            "audio": f"{tag}-audio",
            "vision": f"{tag}-vision",
        }
    present = next(iter(splits.values())).features if splits else {}
    if splits and not present:
        raise DataFormatError(f"{src.path}: no modality: expected one or more of the keys text/text_bert, audio, "
                              "vision")
    extractors = {m: name for m, name in extractors.items() if m in present}
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


def _mmsa_split(d: dict[str, Any], split: str, src: Source, *, text: str, unimodal_labels: bool) -> Split:
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
    # a modality without its key is absent (e.g. no transcripts): models train on the others, never a zero stream
    if "text" in d or "text_bert" in d:
        features["text"], masks["text"] = _mmsa_text(d, split, src, text=text, n=n)
    for m in ("audio", "vision"):
        if m not in d:
            continue
        features[m] = src.features(d[m], split=split, modality=m, key=m, length=n)
        if f"{m}_lengths" in d:
            key = f"{m}_lengths"
            masks[m] = length_mask(d[key], features[m].shape[1], n, split=split, key=key, src=src)
    return Split(ids=read_ids(d.get("id"), n, split, src), features=features, masks=masks, labels=y)


def _mmsa_text(d: dict[str, Any], split: str, src: Source, *, text: str, n: int) -> tuple[np.ndarray, np.ndarray]:
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
        return x, length_mask(d["text_lengths"], x.shape[1], n, split=split, key="text_lengths", src=src)
    if tokens is not None and tokens.shape[2] == x.shape[1]:
        return x, tokens[:, 1, :] > 0
    return x, np.ones(x.shape[:2], dtype=bool)


def _bert_tokens(d: dict[str, Any], split: str, src: Source, n: int) -> np.ndarray:
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


@register_format(
    "mmsa",
    description="MMSA pickle: {train, valid, test} dicts with text/audio/vision and regression_labels",
    recognise={"pickle": lambda obj: "regression_labels" in next(iter(pickle_splits(obj)[1]), {})},
    options=("text", "dataset", "unimodal_labels"),
)
def _read(path: Path, obj: Any, nonfinite: NonFinite, options: dict[str, Any]) -> Corpus:
    return _mmsa_from_object(
        obj,
        Source(str(path), nonfinite),
        text=options.get("text", "features"),
        dataset=options.get("dataset"),
        unimodal_labels=options.get("unimodal_labels", False),
    )
