"""The CMU-MOSI utterance corpus of bc-LSTM features (1447/752 split, validation carved by video)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from ..corpus import Corpus, DataFormatError, NonFinite, Split
from .common import MOSI_BCLSTM_LEAKAGE_NOTE, PathLike, Source, existing_path
from .registry import register_format

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
    base = existing_path(root)
    if not 0 <= valid_videos_fraction < 1:
        raise ValueError(f"valid_videos_fraction must be in [0, 1), got {valid_videos_fraction}")
    feats_dir = base / "bclstm_utterance_features"
    transcripts = _read_csv_rows(feats_dir / "transcripts.csv", columns=4)
    scores = _read_sentiment_csv(base / "labels" / "OpinionLevelSentiment.csv")
    src = Source(str(base), nonfinite, notes=[MOSI_BCLSTM_LEAKAGE_NOTE])
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
    feats_dir: Path, split: str, transcripts: list[list[str]], scores: dict[tuple[str, int], float], src: Source
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


def _carve_by_video(train: Split, fraction: float, seed: int, src: Source) -> tuple[Split, Split]:
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


@register_format(
    "mosi-utterance",
    description="CMU-MOSI folder with bclstm_utterance_features/ and labels/OpinionLevelSentiment.csv",
    recognise={"folder": lambda folder: (folder / "bclstm_utterance_features").is_dir()},
    options=("valid_videos_fraction", "seed"),
)
def _read(path: Path, obj: Any, nonfinite: NonFinite, options: dict[str, Any]) -> Corpus:
    return load_mosi_utterance(path, nonfinite=nonfinite, **options)
