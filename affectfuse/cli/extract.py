"""`affectfuse extract` and `affectfuse predict`: argument dataclasses and handlers (wired into affectfuse.cli)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import tyro

if TYPE_CHECKING:
    from ..extract.pipeline import ExtractReport

Positional = tyro.conf.Positional
Flag = tyro.conf.FlagCreatePairsOff[bool]
"""A flag without its --no- twin (`--no-text`, not `--no-no-text`)."""


@dataclass
class ExtractArgs:
    """Extract features from raw clips (.mp4 .avi .mov .wav .flac) into a dataset in the MMSA pickle layout."""

    input: Positional[Path]
    """One clip or a folder of clips."""
    out: Path
    """The dataset .pkl to write; per-clip results are cached in `<out>.cache/` so a rerun skips done clips."""
    labels: Path | None = None
    """CSV of `clip_id,label[,split]` (split: train/valid/test, default test)."""
    transcripts: Path | None = None
    """CSV of `clip_id,text` (or with a header naming `id`/`clip_id` and `text`); else a sidecar `<clip>.txt`."""
    words: Path | None = None
    """Word timings: CSV `clip_id,word,start,end` (clip seconds) or a CMU-SDK word `.csd` (see --segments)."""
    segments: Path | None = None
    """With a `.csd` of whole videos: CSV `start,end,video_id,segment` (MOSI's OpinionLevelSentiment.csv)."""
    aligned: Flag = False
    """Average audio/vision frames over each word's interval (needs transcripts)."""
    unaligned: Flag = False
    """Keep each modality at its own frame rate (the default; the flag only makes it explicit)."""
    workers: int = 1
    """Clips extracted in parallel (processes)."""
    fps: float = 15.0
    """Video frames per second given to the face tracker."""
    text_model: Path | None = None
    """A local sentence-transformer/BERT folder; default: all-MiniLM-L6-v2 from its PyPI package, if installed."""
    no_text: Flag = False
    """Leave the text modality out even when a model is available."""
    no_vision: Flag = False
    """Leave the vision modality out (e.g. on a machine without MediaPipe)."""
    json: Flag = False


@dataclass
class PredictArgs:
    """Extract one clip with exactly the checkpoint's extractors and print its predicted sentiment."""

    clip: Positional[Path]
    checkpoint: Path
    """A checkpoint trained on a dataset written by `affectfuse extract`."""
    transcript: str | None = None
    """What is said in the clip (else its sidecar `<clip>.txt`, else no text)."""
    text_model: Path | None = None
    """The local text model folder, when the checkpoint's text model is not the packaged all-MiniLM-L6-v2."""
    json: Flag = False


def _missing_extra(error: ImportError) -> ValueError:
    """A missing optional library is a set-up problem the user fixes, so it ends with one line, not a traceback."""
    return ValueError(str(error))


def cmd_extract(args: ExtractArgs) -> None:
    from ..extract.pipeline import extract_dataset

    if args.aligned and args.unaligned:
        raise ValueError("pass either --aligned or --unaligned, not both")
    try:
        report = extract_dataset(
            args.input,
            args.out,
            labels=args.labels,
            transcripts=args.transcripts,
            words=args.words,
            segments=args.segments,
            aligned=args.aligned,
            workers=args.workers,
            fps=args.fps,
            text_model=str(args.text_model) if args.text_model else None,
            text=not args.no_text,
            vision=not args.no_vision,
        )
    except ImportError as error:
        raise _missing_extra(error) from None
    _print_report(args, report)


def _print_report(args: ExtractArgs, report: ExtractReport) -> None:
    if args.json:
        print(json.dumps(report.to_dict()))
        return
    print(
        f"wrote {report.dataset}: {report.clips} clips ({report.extracted} extracted, {report.reused} reused, "
        f"{len(report.failed)} failed); splits {report.splits}"
    )
    for m, name in report.extractors.items():
        print(f"  {m:<6} {name} ({report.dims[m]}-d), steps per clip {report.lengths[m]}")
    if report.extractors["text"] == "none":
        print("  text is absent: no text model (install affectfuse[extract] or pass --text-model PATH)")
    if report.extractors["vision"] == "none":
        print("  vision is absent (--no-vision)")
    for cid, notes in report.notes.items():
        for note in notes:
            print(f"  {cid}: {note}")
    for cid, error in report.failed.items():
        print(f"  {cid}: FAILED, skipped: {error}")


def cmd_predict(args: PredictArgs) -> None:
    from ..extract.pipeline import predict_clip

    try:
        result = predict_clip(
            args.clip,
            args.checkpoint,
            transcript=args.transcript,
            text_model=str(args.text_model) if args.text_model else None,
        )
    except ImportError as error:
        raise _missing_extra(error) from None
    if args.json:
        print(json.dumps(result))
        return
    if "score" in result:
        print(f"{result['clip']}: sentiment {result['score']:+.3f} ({result['polarity']})")
    for target, value in result.get("scores", {}).items():
        if target != "sentiment":
            print(f"  {target}: {value:+.3f}")
    for target, value in result.get("classes", {}).items():
        print(f"  {target}: class {value}")
    for note in result["notes"]:
        print(f"  note: {note}")
