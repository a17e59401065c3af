"""Resolve a data spec string to a corpus (`load_data`), and summarise a corpus for `data inspect`.

Data specs:

* a path to a file or folder: the format is detected by content (`formats.load_corpus`);
* ``mosi-utterance`` or ``mosi-utterance:ROOT``: CMU-MOSI bc-LSTM utterance features (`formats.load_mosi_utterance`);
* ``pom`` or ``pom:ROOT``: POM in MFN's HDF5 release (`formats.read_mfn_h5`);
* ``synthetic`` or ``synthetic:key=value,...``: the synthetic corpus (`synthetic.synthetic_from_options`);
* MMSA's dataset names ``mosi``, ``mosei``, ``sims``, ``simsv2`` and ``iemocap``, optionally ``:aligned`` /
  ``:unaligned`` (default) and ``:ROOT``: the processed feature files at the paths MMSA's config gives them
  (``MOSI/Processed/unaligned_50.pkl``, ``SIMS/Processed/unaligned_39.pkl``, ...; IEMOCAP, which MMSA lacks, as
  MulT releases it: ``IEMOCAP/iemocap_data_noalign.pkl``), named after the dataset so that its recipe applies.

Named corpora take precedence over a same-named relative path (write ``./pom`` for a folder called `pom`). Without
ROOT they are looked up as ``<data root>/mosi`` and ``<data root>/pom`` under, in order: ``$AFFECTFUSE_DATA`` (one
or more folders separated by the OS path separator), ``./shared/data``, ``../shared/data`` and ``shared/data`` next
to the affectfuse checkout.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

import affectfuse

from .corpus import Corpus, NonFinite, Split
from .formats import load_corpus, load_mosi_utterance, read_mfn_h5

logger = logging.getLogger(__name__)

_NAMED: dict[str, tuple[str, str]] = {
    # name -> (folder under a data root, a file or folder that marks it)
    "mosi-utterance": ("mosi", "bclstm_utterance_features"),
    "pom": ("pom", "y_train.h5"),
}

# MMSA's config (`featurePath` under its dataset root) and, for IEMOCAP, MulT's released file names
MMSA_FILES: dict[str, dict[str, str]] = {
    "mosi": {"unaligned": "MOSI/Processed/unaligned_50.pkl", "aligned": "MOSI/Processed/aligned_50.pkl"},
    "mosei": {"unaligned": "MOSEI/Processed/unaligned_50.pkl", "aligned": "MOSEI/Processed/aligned_50.pkl"},
    "sims": {"unaligned": "SIMS/Processed/unaligned_39.pkl"},
    "simsv2": {"unaligned": "SIMSv2/Processed/sims_unaligned.pkl"},
    "iemocap": {"unaligned": "IEMOCAP/iemocap_data_noalign.pkl", "aligned": "IEMOCAP/iemocap_data.pkl"},
}

VALID_FORMS = (
    "PATH (a file or folder; its format is detected by content)",
    "mosi | mosei | sims | simsv2 | iemocap, each [:aligned|:unaligned][:ROOT] (MMSA's processed files)",
    "mosi-utterance | mosi-utterance:ROOT",
    "pom | pom:ROOT",
    "synthetic | synthetic:key=value,...",
)


def data_roots() -> list[Path]:
    """Folders searched for named corpora, in order (see the module docstring)."""
    roots = [Path(p).expanduser() for p in os.environ.get("AFFECTFUSE_DATA", "").split(os.pathsep) if p]
    roots += [Path.cwd() / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    roots.append(Path(affectfuse.__file__).resolve().parents[2] / "shared" / "data")
    return roots


def resolve_root(name: str, root: str | None = None) -> Path:
    """The folder of named corpus `name`: ROOT itself, ROOT/<folder>, or the first data root that holds it.

    Raises:
        FileNotFoundError: saying where it looked and how to pass a root.
    """
    folder, marker = _NAMED[name]
    if root:
        p = Path(root).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"{name}: no such folder {p}")
        # ROOT may be the corpus folder itself or a data root that contains it
        return p / folder if not (p / marker).exists() and (p / folder / marker).exists() else p
    looked = []
    for base in data_roots():
        candidate = base / folder
        if (candidate / marker).exists():
            return candidate
        looked.append(str(candidate))
    raise FileNotFoundError(
        f"{name}: no {folder}/ folder (holding {marker}) found; looked in {looked}. Pass the folder as "
        f"'{name}:/path/to/{folder}' or set AFFECTFUSE_DATA to a folder that contains {folder}/"
    )


def load_data(
    spec: str, *, nonfinite: NonFinite = "error", task: str = "auto", label_centre: float | None = None,
    standardise: bool = False, **options: Any,
) -> Corpus:
    """Load the corpus named by a data spec (see the module docstring for the forms), its task read from its labels.

    Args:
        spec: a path, or a named corpus with an optional ``:ROOT`` / ``:options`` part.
        nonfinite: "error" rejects NaN/inf features; "zero" replaces them by 0 with a warning and counts them.
        task: "auto" (the task the labels show), "regression" or "classification" (`tasks.interpret_labels`).
        label_centre: the neutral point of a rated scale (e.g. 3 on 1..5): Acc-2/F1 are above vs below it.
        standardise: z-score every feature dimension with the train split's statistics
            (`standardisation.standardise`; a model trained on them standardises raw features itself).
        **options: reader options (e.g. ``emotion="happy"`` for LMF IEMOCAP, ``seed=`` for mosi-utterance).

    Raises:
        ValueError: an unknown name, or options for a corpus that takes none.
        FileNotFoundError: a missing path or named corpus folder.
        DataFormatError: a malformed file.
    """
    from .tasks import interpret_labels

    name, sep, rest = spec.partition(":")
    if name == "synthetic":  # its task is what its options declare, not read from its labels
        if (task, label_centre) != ("auto", None):
            raise ValueError("synthetic data declares its own task; --task and --label-centre apply to data read "
                             "from files")
        if options:
            raise ValueError(
                f"synthetic takes its options in the spec ('synthetic:key=value,...'), got {sorted(options)}"
            )
        from .synthetic import synthetic_from_options  # lazy: the synthetic module is optional at import time

        corpus = synthetic_from_options(rest)
    else:
        corpus = interpret_labels(_load(spec, nonfinite, options), task, label_centre)
    if standardise:
        from .standardisation import standardise as standardised

        return standardised(corpus)
    return corpus


def _load(spec: str, nonfinite: NonFinite, options: dict[str, Any]) -> Corpus:
    name, sep, rest = spec.partition(":")
    if name == "mosi-utterance":
        return load_mosi_utterance(resolve_root(name, rest or None), nonfinite=nonfinite, **options)
    if name == "pom":
        if options:
            raise ValueError(f"pom takes no reader options, got {sorted(options)}")
        return read_mfn_h5(resolve_root(name, rest or None), nonfinite=nonfinite)
    if name in MMSA_FILES:
        corpus = load_corpus(resolve_mmsa(name, rest), nonfinite=nonfinite, **options)
        return dataclasses.replace(corpus, name=name)  # the file's stem (unaligned_50) names no recipe
    path = Path(spec).expanduser()
    if path.exists():
        return load_corpus(path, nonfinite=nonfinite, **options)
    # `name:...` with a word before the colon (not a drive letter like C:) is meant as a named corpus
    named = bool(sep) and re.fullmatch(r"[A-Za-z][\w-]+", name) is not None
    if _looks_like_path(spec) and not named:
        raise FileNotFoundError(f"no such file or folder: {path}")
    forms = "\n".join(f"  {f}" for f in VALID_FORMS)
    close = difflib.get_close_matches(name.lower(), [*MMSA_FILES, *_NAMED, "synthetic"], n=2, cutoff=0.6)
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise ValueError(
        f"unknown data spec {spec!r} (not a named corpus, not an existing path){hint} valid forms:\n{forms}"
    )


def resolve_mmsa(name: str, rest: str = "") -> Path:
    """The file of MMSA dataset `name` for a spec's tail ``[aligned|unaligned][:ROOT]``: ROOT (a data root, or the
    file itself), else the first data root holding it (`data_roots`).

    Raises:
        FileNotFoundError: saying which file is expected where, and how to point at it.
        ValueError: an alignment the dataset is not released in.
    """
    files = MMSA_FILES[name]
    head, _, tail = rest.partition(":")
    alignment, root = (head, tail) if head in ("aligned", "unaligned") else ("unaligned", rest)
    if alignment not in files:
        raise ValueError(f"{name}: MMSA releases no {alignment} features; use {' or '.join(map(repr, files))}")
    relative = files[alignment]
    roots = [Path(root).expanduser()] if root else data_roots()
    for base in roots:
        for candidate in (base, base / relative, base / relative.lower()):
            if candidate.is_file():
                logger.info(f"{name}: reading {candidate}")
                return candidate
    looked = ", ".join(str(b / relative) for b in roots)
    raise FileNotFoundError(
        f"{name}: {relative} not found (looked for {looked}). Put MMSA's processed file there, e.g. "
        f"$AFFECTFUSE_DATA/{relative} with AFFECTFUSE_DATA=/path/to/datasets (MMSA's dataset root), or pass the file "
        f"itself: --data /path/to/{Path(relative).name}"
    )


def _looks_like_path(spec: str) -> bool:
    return any(c in spec for c in "/\\") or bool(Path(spec).suffix) or spec.startswith("~")


def inspect_corpus(corpus: Corpus) -> dict[str, Any]:
    """A JSON-serialisable summary: identity, spec, per-split sizes, dims, true lengths, labels, NaN/inf counts, notes.

    ``nonfinite.replaced_at_load`` holds the counts recorded while loading (only with nonfinite="zero");
    ``nonfinite.remaining`` recounts NaN/inf still present in the features (0 for a corpus read by these readers).
    """
    from .tasks import describe_task

    spec = corpus.spec
    fmt = re.search(r"\(([\w-]+)\)$", corpus.source)
    remaining = {
        f"{s}/{m}": int(np.count_nonzero(~np.isfinite(x)))
        for s, split in corpus.splits.items()
        for m, x in split.features.items()
    }
    return {
        "name": corpus.name,
        "source": corpus.source,
        "format": fmt.group(1) if fmt else None,
        "task": spec.task,
        "task_description": describe_task(spec),
        "label_centre": spec.label_centre,
        "label_scale": list(spec.label_scale) if spec.label_scale else None,
        "targets": list(spec.targets),
        "num_classes": spec.num_classes,
        "metric_family": spec.metric_family,
        "aligned": spec.aligned,
        "extractors": dict(spec.extractors),
        "modalities": list(spec.modalities),
        "splits": {s: _inspect_split(split, corpus) for s, split in corpus.splits.items()},
        "nonfinite": {"replaced_at_load": dict(corpus.nonfinite), "remaining": remaining},
        "notes": list(corpus.notes),
    }


def _inspect_split(split: Split, corpus: Corpus) -> dict[str, Any]:
    modalities = {}
    for m, x in split.features.items():
        lengths = split.masks[m].sum(1)
        modalities[m] = {
            "dim": int(x.shape[-1]),
            "padded_length": int(x.shape[1]),
            "length": _stats(lengths),
            "empty": int(np.count_nonzero(lengths == 0)),
        }
    return {"size": len(split), "modalities": modalities, "labels": _label_summary(split.labels, corpus)}


def _stats(values: np.ndarray) -> dict[str, float | None]:
    """min/mean/max over the finite values (None when there are none: empty splits, unlabelled clips)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return {"min": None, "mean": None, "max": None}
    return {"min": float(v.min()), "mean": float(v.mean()), "max": float(v.max())}


def _label_summary(labels: np.ndarray, corpus: Corpus) -> dict[str, Any]:
    spec = corpus.spec
    summary: dict[str, Any] = {"missing": int(np.count_nonzero(~np.isfinite(labels.astype(np.float64))))}
    if spec.task == "classification":
        summary["missing"] = int(np.count_nonzero((labels < 0).any(1)))
        summary["class_counts"] = {
            t: {str(c): int(n) for c, n in zip(*np.unique(labels[:, i], return_counts=True), strict=True)}
            for i, t in enumerate(spec.targets)
        }
        return summary
    summary.update(_stats(labels))
    if labels.shape[1] > 1:
        summary["per_target"] = {t: _stats(labels[:, i]) for i, t in enumerate(spec.targets)}
    return summary


def inspect_path(spec: str, **options: Any) -> dict[str, Any]:
    """`inspect_corpus` of a data spec loaded with nonfinite="zero", so NaN/inf are counted rather than rejected.

    The loader's warnings are captured instead of printed and returned under ``"warnings"``.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        corpus = load_data(spec, nonfinite="zero", **options)
    report = inspect_corpus(corpus)
    report["warnings"] = [str(w.message) for w in caught]
    return report
