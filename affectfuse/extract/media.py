"""Decoding clips with PyAV (which ships its own FFmpeg): mono audio at a fixed rate, RGB frames at a fixed rate.

Nothing here needs a system FFmpeg or a network connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov")
AUDIO_SUFFIXES = (".wav", ".flac")
CLIP_SUFFIXES = VIDEO_SUFFIXES + AUDIO_SUFFIXES


class ClipError(ValueError):
    """A clip cannot be decoded (unreadable file, no usable stream); the message names the file."""


def require_av():
    try:
        import av
    except ImportError:
        raise ImportError(
            "decoding clips needs PyAV: pip install 'affectfuse[extract]' (it ships its own FFmpeg)"
        ) from None
    return av


def find_clips(path: Path | str) -> list[Path]:
    """One clip, or the clips of a folder (not recursive), sorted by name."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"no such clip or folder: {p}")
    if p.is_file():
        if p.suffix.lower() not in CLIP_SUFFIXES:
            raise ValueError(f"{p}: expected a clip with suffix {', '.join(CLIP_SUFFIXES)}, found {p.suffix!r}")
        return [p]
    clips = sorted(c for c in p.iterdir() if c.is_file() and c.suffix.lower() in CLIP_SUFFIXES)
    if not clips:
        raise ValueError(f"{p}: the folder holds no clips (expected files ending in {', '.join(CLIP_SUFFIXES)})")
    return clips


def clip_id(path: Path) -> str:
    return path.stem


@dataclass
class Probe:
    """What streams a clip has, and how long it lasts."""

    duration: float
    has_audio: bool
    has_video: bool


def probe(path: Path) -> Probe:
    av = require_av()
    try:
        with av.open(str(path)) as container:
            has_audio, has_video = bool(container.streams.audio), bool(container.streams.video)
            duration = container.duration / 1e6 if container.duration else 0.0
            if not duration:
                stream = (container.streams.video or container.streams.audio)[0]
                if stream.duration and stream.time_base:
                    duration = float(stream.duration * stream.time_base)
    except (av.error.FFmpegError, OSError) as error:
        raise ClipError(f"{path}: not a readable audio/video file ({error})") from None
    return Probe(duration=float(duration), has_audio=has_audio, has_video=has_video)


def read_audio(path: Path, rate: int = 16000) -> np.ndarray:
    """The first audio stream as mono float32 samples at `rate` Hz (channels averaged by FFmpeg's resampler)."""
    av = require_av()
    chunks: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ClipError(f"{path}: has no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            for frame in container.decode(audio=0):
                chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    except av.error.FFmpegError as error:
        raise ClipError(f"{path}: cannot decode its audio ({error})") from None
    if not chunks:
        raise ClipError(f"{path}: its audio stream holds no samples")
    return np.concatenate(chunks).astype(np.float32, copy=False)


def iter_frames(path: Path, fps: float) -> Iterator[tuple[float, np.ndarray]]:
    """(time in seconds, RGB uint8 (H, W, 3) frame) at about `fps` frames per second: the first decoded frame at or
    after each multiple of 1/fps, so clips of any native rate give frames in proportion to their duration."""
    av = require_av()
    step, next_time = 1.0 / fps, 0.0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ClipError(f"{path}: has no video stream")
            for frame in container.decode(video=0):
                time = float(frame.time) if frame.time is not None else next_time
                if time + 1e-6 < next_time:
                    continue
                next_time = (int(time / step + 1e-6) + 1) * step
                yield time, frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as error:
        raise ClipError(f"{path}: cannot decode its video ({error})") from None
