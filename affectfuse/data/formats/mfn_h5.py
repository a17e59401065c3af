"""MFN-style HDF5 split files ({audio,video,text}_{split}.h5 and y_{split}.h5; POM's release)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ...config import MODALITIES
from ..corpus import Corpus, DataFormatError, NonFinite, Split
from .common import POM_MFN_TARGETS, PathLike, Source, existing_path, normalise_split, targets_for
from .registry import register_format

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
    root = existing_path(folder)
    if not root.is_dir():
        raise DataFormatError(f"{root}: expected a folder of MFN HDF5 files, found a file")
    label_files = {normalise_split(f.stem[2:]): f for f in sorted(root.glob("y_*.h5"))}
    label_files.pop(None, None)
    if not label_files:
        raise DataFormatError(f"{root}: no y_{{train,valid,test}}.h5 label files")
    src = Source(str(root), nonfinite)
    # A modality is present when any split has its file; every split must then have it.
    tags = [f.stem[2:] for f in label_files.values()]
    present = [m for m in MODALITIES if any(_mfn_file(root, m, t) is not None for t in tags)]
    if not present:
        raise DataFormatError(f"{root}: label files but no audio_/video_/text_<split>.h5 feature files")
    splits: dict[str, Split] = {}
    for split, y_file in label_files.items():
        y_key, y_raw = _h5_single(y_file)
        y = Source(str(y_file)).scores(y_raw, where=f"split {split!r}, key {y_key!r}")
        features = {}
        for m in present:
            file = _mfn_file(root, m, y_file.stem[2:])
            if file is None:
                wanted = _MFN_MODALITY_FILES[m][0].format(y_file.stem[2:])
                raise DataFormatError(f"{root}: split {split!r} has no {m} file {wanted} (other splits have one)")
            key, x = _h5_single(file)
            features[m] = Source(str(file), nonfinite, src.replaced).features(
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
        targets=POM_MFN_TARGETS if k == len(POM_MFN_TARGETS) else targets_for(k),
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


def _is_mfn_folder(folder: Path) -> bool:
    names = {f.name for f in folder.iterdir() if f.is_file()}
    return "y_train.h5" in names and any(n.endswith("_train.h5") and n != "y_train.h5" for n in names)


@register_format(
    "mfn-h5",
    description="folder of MFN HDF5 files: {audio,video,text}_{train,valid,test}.h5 and y_{train,valid,test}.h5",
    recognise={"folder": _is_mfn_folder},
)
def _read(path: Path, obj: Any, nonfinite: NonFinite, options: dict[str, Any]) -> Corpus:
    return read_mfn_h5(path, nonfinite=nonfinite)
