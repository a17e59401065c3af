"""The per-clip extraction cache: arrays in `.npz`, names and words as JSON inside it, never pickles (a file planted
in the cache folder cannot run code), read back only when it was extracted from the same words."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..io import atomic_write, ensure_folder, write_error
from .extractors import ClipFeatures, Features
from .transcripts import Words


def check_writable(folder: Path) -> None:
    ensure_folder(folder)
    probe = folder / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise write_error(folder, error) from None


def save_clip(cache: Path, clip: ClipFeatures) -> None:
    """One clip's cache file: its arrays and, as a JSON string, its names and words (npz, read back without pickle,
    so a file planted in the cache folder cannot run code)."""
    arrays: dict[str, np.ndarray] = {}
    for m, feats in clip.modalities.items():
        arrays[f"{m}.values"], arrays[f"{m}.times"], arrays[f"{m}.mask"] = feats.values, feats.times, feats.mask
    if clip.word_times is not None:
        arrays["word_times"] = clip.word_times
    meta = {"clip_id": clip.clip_id, "duration": clip.duration, "modalities": list(clip.modalities),
            "words": clip.words, "notes": clip.notes}
    arrays["meta"] = np.array(json.dumps(meta))
    atomic_write(cache / f"{clip.clip_id}.npz", lambda f: np.savez(f, **arrays))


def load_cached(cache: Path, cid: str, words: Words | None) -> ClipFeatures | None:
    """A cached clip, if there is one extracted from the same words (a changed transcript means re-extracting);
    anything unreadable or malformed counts as absent and is extracted again."""
    file = cache / f"{cid}.npz"
    if not file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            modalities = {
                m: Features(data[f"{m}.values"], data[f"{m}.times"], data[f"{m}.mask"]) for m in meta["modalities"]
            }
            clip = ClipFeatures(
                clip_id=str(meta["clip_id"]), duration=float(meta["duration"]), modalities=modalities,
                words=[str(w) for w in meta["words"]], notes=[str(n) for n in meta["notes"]],
                word_times=data["word_times"] if "word_times" in data.files else None,
            )
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
        return None
    want_words = list(words.words) if words is not None and words.words else []
    if clip.words != want_words or clip.clip_id != cid:
        return None
    return clip
