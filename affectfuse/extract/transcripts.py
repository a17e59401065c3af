"""Where a clip's words come from: a transcripts CSV, a sidecar `.txt`, or word timings (CSV or CMU-SDK `.csd`)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .extractors import split_words


@dataclass
class Words:
    """A clip's words, with (n, 2) clip-relative start/end seconds when timings are known (None: unknown)."""

    words: list[str]
    times: np.ndarray | None = None
    source: str = ""


def _rows(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with path.open(newline="", encoding="utf-8") as f:
        return [row for row in csv.reader(f) if any(c.strip() for c in row)]


def read_transcripts(path: Path | str) -> dict[str, str]:
    """clip_id -> transcript from `clip_id,text` rows; a header naming `text` and `id`/`clip_id` columns picks them
    (so `id,text,label,mode` files such as MOSI's label CSV work as they are)."""
    p = Path(path).expanduser()
    rows = _rows(p)
    if not rows:
        raise ValueError(f"{p}: no transcript rows; expected clip_id,text")
    header = [c.strip().lower() for c in rows[0]]
    id_col, text_col = 0, 1
    if "text" in header:
        text_col = header.index("text")
        id_col = header.index("clip_id") if "clip_id" in header else header.index("id") if "id" in header else 0
        rows = rows[1:]
    out = {}
    for line, row in enumerate(rows, start=2 if "text" in header else 1):
        if len(row) <= max(id_col, text_col):
            raise ValueError(f"{p}: line {line}: expected clip_id,text, found {row}")
        out[row[id_col].strip()] = row[text_col].strip()
    return out


def read_word_csv(path: Path) -> dict[str, Words]:
    """clip_id -> Words from `clip_id,word,start,end` rows (clip-relative seconds, optional header)."""
    rows = _rows(path)
    if rows and rows[0][0].strip().lower() == "clip_id":
        rows = rows[1:]
    table: dict[str, tuple[list[str], list[tuple[float, float]]]] = {}
    for line, row in enumerate(rows, start=1):
        try:
            clip, word, start, end = row[0].strip(), row[1].strip(), float(row[2]), float(row[3])
        except (IndexError, ValueError):
            raise ValueError(f"{path}: line {line}: expected clip_id,word,start,end (seconds), found {row}") from None
        if not end >= start >= 0:
            raise ValueError(f"{path}: line {line}: word {word!r} needs 0 <= start <= end, found {start}, {end}")
        words, times = table.setdefault(clip, ([], []))
        words.append(word)
        times.append((start, end))
    return {c: Words(w, np.array(t, np.float64), f"{path}") for c, (w, t) in table.items()}


def read_segments(path: Path) -> dict[str, tuple[float, float]]:
    """clip_id -> (start, end) seconds in its video, from `start,end,video_id,segment` rows (MOSI's
    OpinionLevelSentiment.csv layout); the clip id is `<video_id>_<segment>`."""
    out = {}
    for line, row in enumerate(_rows(path), start=1):
        try:
            start, end, video, segment = float(row[0]), float(row[1]), row[2].strip(), row[3].strip()
        except (IndexError, ValueError):
            raise ValueError(f"{path}: line {line}: expected start,end,video_id,segment, found {row}") from None
        out[f"{video}_{segment}"] = (start, end)
    return out


def read_word_csd(path: Path, segments: dict[str, tuple[float, float]] | None, clips: list[str]) -> dict[str, Words]:
    """Words of `clips` from a CMU-SDK word `.csd` (features: words as bytes, b"sp" = silence).

    With `segments`, a clip `<video>_<n>` takes the words of video `<video>` inside its segment, shifted to start at
    0; without, a clip id must be a video id of the file.
    """
    from ..data.formats import read_csd

    csd = read_csd(path)
    out = {}
    for clip in clips:
        if segments is not None and clip in segments:
            video, (offset, stop) = clip.rsplit("_", 1)[0], segments[clip]
        else:
            video, offset, stop = clip, 0.0, float("inf")
        if video not in csd.data:
            continue
        features, intervals = csd.data[video]
        words = [w.decode("utf-8", "replace") if isinstance(w, bytes) else str(w) for w in features[:, 0]]
        keep = [
            i
            for i, w in enumerate(words)
            if w != "sp" and intervals[i, 1] > offset + 1e-5 and intervals[i, 0] < stop - 1e-5
        ]
        if keep:
            times = np.clip(intervals[keep] - offset, 0.0, None)
            out[clip] = Words([words[i] for i in keep], times, f"{path}")
    return out


def words_for(clip: Path, transcripts: dict[str, str], timed: dict[str, Words]) -> Words | None:
    """Word timings first, then the transcripts CSV, then a sidecar `<clip>.txt`; None when there is no text."""
    cid = clip.stem
    if cid in timed:
        return timed[cid]
    if cid in transcripts:
        return Words(split_words(transcripts[cid]), None, "transcripts CSV")
    sidecar = clip.with_suffix(".txt")
    if sidecar.is_file():
        return Words(split_words(sidecar.read_text(encoding="utf-8")), None, str(sidecar))
    return None
