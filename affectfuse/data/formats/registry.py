"""Formats by name, recognised by content: each reader registers how to spot its files (like the model registry)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h5py

from ..corpus import Corpus, DataFormatError, NonFinite
from . import pickles
from .common import PathLike, existing_path, normalise_split, str_keys

Kind = Literal["folder", "hdf5", "pickle"]
Reader = Callable[[Path, Any, NonFinite, dict[str, Any]], Corpus]
"""(path, the unpickled object or None, NaN policy, reader options) -> Corpus."""


@dataclass(frozen=True)
class FormatEntry:
    name: str
    description: str
    """What its content looks like (listed when a file is not recognised)."""
    recognise: Mapping[Kind, Callable[[Any], bool]]
    """Per thing detection looks at (a folder's Path, an open h5py.File, an unpickled object): is it this format?"""
    options: frozenset[str]
    read: Reader


_REGISTRY: dict[str, FormatEntry] = {}


def register_format(
    name: str,
    *,
    description: str,
    recognise: Mapping[Kind, Callable[[Any], bool]],
    options: tuple[str, ...] = (),
) -> Callable[[Reader], Reader]:
    """Register a reader with how to recognise its folders, HDF5 files or pickles; formats are tried in
    registration order."""

    def decorate(read: Reader) -> Reader:
        if name in _REGISTRY:
            raise ValueError(f"data format {name!r} is already registered")
        _REGISTRY[name] = FormatEntry(name, description, dict(recognise), frozenset(options), read)
        return read

    return decorate


def list_formats() -> dict[str, str]:
    """Every format `detect` recognises, with what its content looks like."""
    return {name: entry.description for name, entry in _REGISTRY.items()}


def get_format(name: str) -> FormatEntry:
    if name not in _REGISTRY:
        raise ValueError(f"unknown data format {name!r}; known formats: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def detect(path: PathLike) -> str:
    """The format of a file or folder, decided by content (not name).

    Pickles are unpickled to be inspected, through the one restricted loader (`pickles.load_pickle`).

    Raises:
        FileNotFoundError: no such path.
        DataFormatError: unrecognised content (the message lists the known formats).
    """
    return _sniff(existing_path(path))[0]


detect_format = detect


def load_corpus(path: PathLike, *, nonfinite: NonFinite = "error", **options: Any) -> Corpus:
    """Detect the format of `path` by content and read it, loading a pickle only once.

    Options go to the format's reader: mmsa `text`, `dataset`, `unimodal_labels`; lmf `emotion`; mmsa-fet
    `labels_csv`, `text`, `dataset`; csd (a label sequence) `features`, `folds`, `words`; mosi-utterance
    `valid_videos_fraction`, `seed`.

    Raises:
        ValueError: an option that the detected format does not take.
        DataFormatError, FileNotFoundError: as the readers.
    """
    p = existing_path(path)
    fmt, obj = _sniff(p)
    entry = _REGISTRY[fmt]
    extra = sorted(set(options) - entry.options)
    if extra:
        raise ValueError(
            f"{p} is in format {fmt!r}, which takes options {sorted(entry.options) or 'none'}; got {extra}"
        )
    return entry.read(p, obj, nonfinite, options)


def _unknown(path: Path, found: str) -> DataFormatError:
    known = "\n".join(f"  {name}: {what}" for name, what in list_formats().items())
    return DataFormatError(f"{path}: unrecognised data format ({found}); known formats:\n{known}")


def _first(kind: Kind, thing: Any) -> str | None:
    return next((e.name for e in _REGISTRY.values() if kind in e.recognise and e.recognise[kind](thing)), None)


def _sniff(path: Path) -> tuple[str, Any]:
    """(format, the unpickled object or None): pickles are loaded here so that `load_corpus` reads them once."""
    if path.is_dir():
        found = _first("folder", path)
        if found is None:
            files = sum(1 for f in path.iterdir() if f.is_file())
            raise _unknown(path, f"a folder with {files} files, none of a known layout")
        return found, None
    if h5py.is_hdf5(path):
        try:
            with h5py.File(path, "r") as f:
                found = _first("hdf5", f)
                keys = list(f)[:10]
        except (OSError, KeyError) as error:  # truncated or damaged HDF5
            raise DataFormatError(f"{path}: a damaged HDF5 file ({error})") from None
        if found is None:
            raise _unknown(path, f"an HDF5 file with top-level keys {keys}")
        return found, None
    try:
        obj = pickles.load_pickle(path)
    except pickles.ForbiddenPickleError:
        raise  # a refused global is the answer, not "unrecognised"
    except DataFormatError:
        raise _unknown(path, "neither HDF5 nor a pickle") from None
    found = _first("pickle", obj)
    if found is None:
        raise _unknown(path, _describe_pickle(obj))
    return found, obj


def pickle_splits(obj: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(top level with str keys, the split dicts) of a dataset pickle; no splits for anything else."""
    if not isinstance(obj, Mapping):
        return {}, []
    top = str_keys(obj)
    return top, [str_keys(v) for k, v in top.items() if normalise_split(k) and isinstance(v, Mapping)]


def _describe_pickle(obj: Any) -> str:
    if not isinstance(obj, Mapping):
        return f"a pickle of {type(obj).__name__}"
    top, splits = pickle_splits(obj)
    if not splits:
        return f"a pickle dict with keys {sorted(top)[:10]}"
    return f"a pickle of splits whose keys are {sorted(splits[0])[:12]}"
