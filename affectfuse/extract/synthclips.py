"""Tiny synthetic clips (a tone plus a moving face-like drawing), written with PyAV: fixtures for the tests and the
README demo, so neither needs real recordings.

The drawing is a pale ellipse with two dark eyes and a mouth on a dark background; MediaPipe may or may not take it
for a face, so tests must accept both (the no-face path gives zeros, a mask and a note).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def _frame(t: float, width: int, height: int, smile: float, face: bool = True) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx = width * (0.5 + 0.15 * np.sin(2 * np.pi * 0.5 * t))  # the face drifts left and right
    cy, rx, ry = height * 0.5, width * 0.22, height * 0.34
    img = np.full((height, width, 3), 30, np.uint8)
    if not face:  # a moving grey square: something changes, nothing face-like
        img[(np.abs(xx - cx) < rx * 0.5) & (np.abs(yy - cy) < ry * 0.3)] = 128
        return img
    face = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
    img[face] = (224, 186, 160)
    for side in (-1, 1):
        eye = ((xx - (cx + side * rx * 0.4)) / (rx * 0.14)) ** 2 + ((yy - (cy - ry * 0.25)) / (ry * 0.08)) ** 2 <= 1
        img[eye] = (40, 30, 30)
    mouth_y = cy + ry * 0.45 - smile * ry * 0.1 * ((xx - cx) / (rx * 0.45)) ** 2
    mouth = (np.abs(yy - mouth_y) < ry * 0.05) & (np.abs(xx - cx) < rx * 0.45)
    img[mouth] = (150, 40, 50)
    return img


def write_clip(
    path: Path | str,
    *,
    seconds: float = 1.0,
    tone_hz: float = 220.0,
    fps: int = 15,
    size: tuple[int, int] = (128, 96),
    smile: float = 1.0,
    face: bool = True,
    video: bool = True,
    sample_rate: int = 16000,
) -> Path:
    """An .mp4 (video=True: MPEG-4 video + AAC audio) or a .wav/.flac (audio only) clip of `seconds` seconds;
    `face=False` draws a moving square instead of the face."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    # a tone with a slow loudness swell and a little noise, so openSMILE finds a voiced-like pitch
    signal = 0.3 * np.sin(2 * np.pi * tone_hz * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t))
    signal = (signal + 0.01 * np.random.default_rng(0).standard_normal(n)).astype(np.float32)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    with av.open(str(tmp), "w") as container:
        audio_codec = {".wav": "pcm_s16le", ".flac": "flac"}.get(path.suffix.lower(), "aac")
        vstream = None
        if video:
            vstream = container.add_stream("mpeg4", rate=fps)
            vstream.width, vstream.height = size
            vstream.pix_fmt = "yuv420p"
        astream = container.add_stream(audio_codec, rate=sample_rate, layout="mono")
        if vstream is not None:
            for i in range(int(round(seconds * fps))):
                frame = av.VideoFrame.from_ndarray(_frame(i / fps, size[0], size[1], smile, face), format="rgb24")
                container.mux(vstream.encode(frame))
            container.mux(vstream.encode(None))
        chunk = 1024
        fmt = "s16" if audio_codec == "pcm_s16le" else "s16" if audio_codec == "flac" else "fltp"
        for start in range(0, n, chunk):
            part = signal[start : start + chunk]
            data = (part * 32767).astype(np.int16)[None] if fmt == "s16" else part[None]
            frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = start
            frame.time_base = Fraction(1, sample_rate)
            container.mux(astream.encode(frame))
        container.mux(astream.encode(None))
    tmp.replace(path)
    return path


_POSITIVE = ("good", "great", "lovely", "fun", "brilliant")
_NEGATIVE = ("bad", "awful", "boring", "poor", "dull")
_FILLER = ("the", "movie", "was", "really", "quite", "and", "so")


def write_corpus(folder: Path | str, *, n: int = 30, seconds: float = 1.0, seed: int = 0) -> Path:
    """`n` synthetic clips plus `labels.csv` (clip_id,label,split: 60/20/20 %) and `transcripts.csv`.

    The label mixes what is said (positive vs negative words), the tone's pitch and the drawn mouth's curve, so each
    modality carries part of it; the point is a working extract -> train -> predict path, not a benchmark.
    """
    import csv

    folder = Path(folder)
    rng = np.random.default_rng(seed)
    labels, transcripts = [], []
    for i in range(n):
        cid = f"synth_{i:03d}"
        words_sign = rng.choice([-1.0, 1.0])
        pitch = rng.uniform(-1, 1)
        smile = float(rng.uniform(-1, 1))
        words = list(rng.choice(_FILLER, 3)) + list(rng.choice(_POSITIVE if words_sign > 0 else _NEGATIVE, 2))
        rng.shuffle(words)
        write_clip(folder / f"{cid}.mp4", seconds=seconds, tone_hz=250 + 100 * pitch, smile=smile)
        label = float(np.clip(1.5 * words_sign + pitch + smile, -3, 3))
        split = "train" if i < 0.6 * n else "valid" if i < 0.8 * n else "test"
        labels.append((cid, round(label, 3), split))
        transcripts.append((cid, " ".join(words)))
    for name, header, rows in (
        ("labels.csv", ("clip_id", "label", "split"), labels),
        ("transcripts.csv", ("clip_id", "text"), transcripts),
    ):
        with (folder / name).open("w", newline="") as f:
            csv.writer(f).writerows([header, *rows])
    return folder
