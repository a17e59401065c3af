"""Clips -> a dataset in the MMSA pickle layout, and one clip -> a prediction of a trained checkpoint.

Per clip, the extractors' raw (unaligned) outputs are cached atomically in ``<DATASET>.cache/<extractors digest>/``,
so a rerun skips clips already extracted (and a crash loses at most the clips in flight); word alignment, labels and
splits are applied when the dataset is assembled. Clips are extracted in a process pool with ``workers > 1``; a clip
that fails is reported and skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import pickle
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..config import InputSpec
from ..data.corpus import Corpus, Split, spec_from_splits
from ..data.standardisation import for_model, raw_extractors
from ..io import atomic_write, write_json
from ..workers import stopped_on_exit, watch_parent
from .cache import check_writable, load_cached, save_clip
from .extractors import (
    NO_TEXT,
    ClipFeatures,
    FaceMeshVision,
    Features,
    OpenSmileAudio,
    WordEmbeddingText,
    audio_from_name,
    split_words,
    text_from_name,
    vision_from_name,
)
from .media import VIDEO_SUFFIXES, clip_id, find_clips, probe, require_av
from .transcripts import Words, read_segments, read_transcripts, read_word_csd, read_word_csv, words_for

logger = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: cache files are .npz (arrays) + JSON (names, words), never pickles
POOL_START_METHOD = "spawn"
"""Worker processes start fresh: forking a process whose torch/MediaPipe threads are running can deadlock."""
ABSENT_DIM = 1
"""A dataset without text (or vision) still has the MMSA key: one zero step per clip, masked out, 1-d."""


class Extractors:
    """The audio, vision and (optional) text extractors of one dataset; `names` go into the dataset and checkpoint."""

    def __init__(self, audio: OpenSmileAudio, vision: FaceMeshVision | None, text: WordEmbeddingText | None) -> None:
        self.audio, self.vision, self.text = audio, vision, text

    @classmethod
    def create(
        cls, *, fps: float = 15.0, text_model: str | Path | None = None, text: bool = True, vision: bool = True
    ) -> Extractors:
        """`text=False`, or no model found when `text_model` is None, leaves the text modality absent;
        `vision=False` leaves vision absent (for machines without MediaPipe)."""
        require_av()  # fail before any clip rather than once per clip
        text_extractor = None
        if text:
            try:
                text_extractor = WordEmbeddingText(text_model)
            except ImportError:
                if text_model is not None:
                    raise
        return cls(OpenSmileAudio(), FaceMeshVision(fps).check() if vision else None, text_extractor)

    @classmethod
    def from_names(cls, names: dict[str, str], text_model: str | Path | None = None) -> Extractors:
        text_name = names.get("text", NO_TEXT)
        text = None if text_name == NO_TEXT else text_from_name(text_name, text_model)
        vision = None if names["vision"] == NO_TEXT else vision_from_name(names["vision"])
        return cls(audio_from_name(names["audio"]), vision, text)

    @property
    def names(self) -> dict[str, str]:
        return {
            "text": self.text.name if self.text else NO_TEXT,
            "audio": self.audio.name,
            "vision": self.vision.name if self.vision else NO_TEXT,
        }

    @property
    def dims(self) -> dict[str, int]:
        return {
            "text": self.text.dim if self.text else ABSENT_DIM,
            "audio": self.audio.dim,
            "vision": self.vision.dim if self.vision else ABSENT_DIM,
        }

    def digest(self) -> str:
        # the text model's folder too: two local models may share a name and a dimension
        key = [CACHE_VERSION, self.names, str(self.text.path) if self.text else None]
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]

    def config(self) -> dict[str, Any]:
        """The dataset's top-level `config`, in the MMSA-FET shape the readers take extractor names from."""
        text = (
            {"pretrained": NO_TEXT}
            if self.text is None
            else {"pretrained": self.text.name, "settings": self.text.settings}
        )
        return {
            "audio": {"tool": self.audio.name, "settings": self.audio.settings},
            "video": {"tool": NO_TEXT}
            if self.vision is None
            else {"tool": self.vision.name, "settings": self.vision.settings},
            "text": text,
        }


def extract_clip(
    path: Path, extractors: Extractors, words: Words | None, *, progress: Callable[[int], object] | None = None
) -> ClipFeatures:
    """Raw features of one clip. A missing stream, a face-less frame or a missing transcript is a masked-out step
    and a note, never an error; an unreadable file raises."""
    info = probe(path)
    notes: list[str] = []
    modalities: dict[str, Features] = {}
    if info.has_audio:
        modalities["audio"] = extractors.audio.extract(path)
    else:
        modalities["audio"] = Features.absent(extractors.audio.dim)
        notes.append("no audio stream: audio absent (zeros, masked)")
    if extractors.vision is None:
        modalities["vision"] = Features.absent(ABSENT_DIM)
    elif info.has_video:
        vision = extractors.vision.extract(path, progress)
        missing = int((~vision.mask).sum())
        if missing == len(vision.mask):
            notes.append(f"no face found in any of its {missing} frames: vision is zeros, masked")
        elif missing:
            notes.append(f"no face found in {missing} of {len(vision.mask)} frames: those are zeros, masked")
        modalities["vision"] = vision
    else:
        modalities["vision"] = Features.absent(extractors.dims["vision"])
        notes.append("no video stream: vision absent (zeros, masked)")
    duration = info.duration or float(modalities["audio"].times[-1, 1])
    clip = ClipFeatures(clip_id(path), duration, modalities, notes=notes)
    if extractors.text is None:
        modalities["text"] = Features.absent(ABSENT_DIM)
    elif words is None or not words.words:
        modalities["text"] = Features.absent(extractors.text.dim)
        notes.append("no transcript (CSV, word timings or sidecar .txt): text absent (zeros, masked)")
    else:
        clip.words, clip.word_times = list(words.words), words.times
        times = words.times if words.times is not None else uniform_times(len(words.words), duration)
        values = extractors.text.embed(clip.words)
        modalities["text"] = Features(values, times, np.ones(len(values), bool))
    return clip


def uniform_times(n: int, duration: float) -> np.ndarray:
    """Equal word intervals over the clip: the alignment used when no word timings are given."""
    edges = np.linspace(0.0, max(duration, 1e-3), n + 1)
    return np.stack([edges[:-1], edges[1:]], 1)


def align_to_words(features: Features, word_times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n_words, D) means of the real frames whose midpoint falls in each word's interval (the nearest real frame
    when none does), and the (n_words,) mask of words that got a real frame. This is how MMSA's aligned_50 files
    average COVAREP/FACET frames over each word."""
    real = features.mask
    mids = features.times.mean(1)
    out = np.zeros((len(word_times), features.values.shape[1]), np.float32)
    ok = np.zeros(len(word_times), bool)
    if not real.any():
        return out, ok
    real_mids, real_values = mids[real], features.values[real]
    for i, (start, end) in enumerate(word_times):
        inside = (real_mids >= start) & (real_mids < end)
        if inside.any():
            out[i] = real_values[inside].mean(0)
        else:
            out[i] = real_values[np.argmin(np.abs(real_mids - (start + end) / 2))]
        ok[i] = True
    return out, ok


def clip_steps(clip: ClipFeatures, *, aligned: bool) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-modality (T, D) features and (T,) masks of one clip, word-aligned or as extracted."""
    if not aligned:
        return ({m: f.values for m, f in clip.modalities.items()}, {m: f.mask for m, f in clip.modalities.items()})
    text = clip.modalities["text"]
    if not text.mask.any():
        raise ValueError(f"clip {clip.clip_id}: --aligned needs its words (a transcript), and it has none")
    features, masks = {"text": text.values}, {"text": text.mask}
    for m in ("audio", "vision"):
        features[m], masks[m] = align_to_words(clip.modalities[m], text.times)
    return features, masks


# ---------------------------------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class ExtractReport:
    dataset: Path
    clips: int
    extracted: int
    reused: int
    failed: dict[str, str]
    notes: dict[str, list[str]]
    extractors: dict[str, str]
    dims: dict[str, int]
    lengths: dict[str, dict[str, float]]
    splits: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["dataset"] = str(self.dataset)
        return d


_WORKER: Extractors | None = None


def _init_worker(names: dict[str, str], text_model: str | None, parent_pid: int) -> None:
    global _WORKER
    watch_parent(parent_pid)  # a worker never outlives the extract that started it
    _WORKER = Extractors.from_names(names, text_model)


def _extract_to_cache(path: Path, words: Words | None, cache: Path) -> tuple[str, str | None]:
    """Pool task: extract one clip into its cache file; (clip id, error message or None)."""
    assert _WORKER is not None
    try:
        save_clip(cache, extract_clip(path, _WORKER, words))
    except Exception as error:  # one bad clip is reported and skipped, never aborting the folder
        return clip_id(path), f"{type(error).__name__}: {error}"
    return clip_id(path), None


def read_labels(path: Path | str) -> dict[str, tuple[float, str]]:
    """clip_id -> (label, split) from `clip_id,label[,split]` rows (split defaults to test), via the core reader."""
    from ..data.formats.common import Source
    from ..data.formats.mmsa_fet import read_label_csv

    return read_label_csv(path, Source(str(path)))


def extract_dataset(
    source: Path | str,
    out: Path | str,
    *,
    labels: Path | str | None = None,
    transcripts: Path | str | None = None,
    words: Path | str | None = None,
    segments: Path | str | None = None,
    aligned: bool = False,
    workers: int = 1,
    fps: float = 15.0,
    text_model: str | None = None,
    text: bool = True,
    vision: bool = True,
    progress: bool = True,
) -> ExtractReport:
    """Extract every clip of `source` (one clip or a folder) and write the dataset `out` (MMSA pickle layout).

    Clips without a row in `labels` are unlabelled: label NaN, in the test split (the report says so); training
    leaves them out and `evaluate` refuses them. With no labels at all the dataset is for inspection and prediction
    only. A report JSON is written beside the dataset.
    """
    out = Path(out).expanduser()
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    clips = find_clips(source)
    ids = [clip_id(c) for c in clips]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"{source}: clips share the ids {duplicates} (same name, other suffix); rename one")
    label_table = read_labels(labels) if labels else {}
    text_table = read_transcripts(transcripts) if transcripts else {}
    timed: dict[str, Words] = {}
    if words:
        wp = Path(words).expanduser()
        seg = read_segments(Path(segments).expanduser()) if segments else None
        timed = read_word_csd(wp, seg, ids) if wp.suffix.lower() == ".csd" else read_word_csv(wp)
    extractors = Extractors.create(fps=fps, text_model=text_model, text=text, vision=vision)
    cache = out.parent / f"{out.name}.cache" / extractors.digest()
    check_writable(cache)  # an unwritable output is the output's fault, not each clip's
    clip_words = {clip_id(c): words_for(c, text_table, timed) for c in clips}

    results: dict[str, ClipFeatures] = {}
    todo = []
    for c in clips:
        cached = load_cached(cache, clip_id(c), clip_words[clip_id(c)] if extractors.text else None)
        if cached is not None:
            results[cached.clip_id] = cached
        else:
            todo.append(c)
    reused = len(results)
    failed: dict[str, str] = {}
    overall = tqdm(total=len(clips), initial=reused, desc="clips", unit="clip", disable=not progress)
    run = _extract_here if workers == 1 or len(todo) <= 1 else _extract_in_pool
    run(todo, extractors, clip_words, cache, results, failed, overall, workers=workers, progress=progress)
    overall.close()
    extracted = len(results) - reused
    if aligned:  # a clip without words has nothing to align to: reported and skipped like a failed clip
        for cid in [cid for cid, clip in results.items() if not clip.words]:
            failed[cid] = "--aligned needs its words (transcript or word timings), and it has none"
            del results[cid]
    for cid, error in failed.items():
        logger.warning(f"affectfuse extract: clip {cid} failed and was skipped: {error}")
    if not results:
        raise ValueError(f"{source}: no clip could be extracted ({len(failed)} failed: {failed})")

    notes = {cid: list(clip.notes) for cid, clip in results.items() if clip.notes}
    ordered = [results[i] for i in ids if i in results]
    unlabelled = [c.clip_id for c in ordered if c.clip_id not in label_table]
    if label_table and unlabelled:
        for cid in unlabelled:
            notes.setdefault(cid, []).append("no row in the labels CSV: unlabelled (NaN), test split")
    corpus = build_corpus(ordered, extractors, label_table, aligned=aligned, name=out.stem)
    write_dataset(corpus, out, extractors, ordered, aligned=aligned, labelled=bool(label_table))
    report = ExtractReport(
        dataset=out,
        clips=len(clips),
        extracted=extracted,
        reused=reused,
        failed=failed,
        notes=notes,
        extractors=extractors.names,
        dims=dict(corpus.spec.dims),
        lengths=_length_summary(corpus),
        splits={s: len(split) for s, split in corpus.splits.items()},
    )
    write_json(out.with_name(out.name + ".report.json"), report.to_dict())
    return report


def _extract_here(
    todo: list[Path],
    extractors: Extractors,
    clip_words: dict[str, Words | None],
    cache: Path,
    results: dict[str, ClipFeatures],
    failed: dict[str, str],
    overall: tqdm,
    *,
    workers: int,
    progress: bool,
) -> None:
    """Extract clips in this process, with a progress bar over each clip's frames."""
    for c in todo:
        cid = clip_id(c)
        try:
            info = probe(c) if extractors.vision and c.suffix.lower() in VIDEO_SUFFIXES else None
            frames = int(round(info.duration * extractors.vision.fps)) if info and extractors.vision else 0
            with tqdm(total=frames, desc=cid, unit="frame", leave=False, disable=not progress or not frames) as bar:
                clip = extract_clip(c, extractors, clip_words[cid], progress=bar.update)
            save_clip(cache, clip)
            results[cid] = clip
        except Exception as error:  # reported and skipped, never aborting the folder
            failed[cid] = f"{type(error).__name__}: {error}"
        overall.update(1)


def _extract_in_pool(
    todo: list[Path],
    extractors: Extractors,
    clip_words: dict[str, Words | None],
    cache: Path,
    results: dict[str, ClipFeatures],
    failed: dict[str, str],
    overall: tqdm,
    *,
    workers: int,
    progress: bool,
) -> None:
    """Extract clips in `workers` processes; each writes its clips' cache files, read back here."""
    context = multiprocessing.get_context(POOL_START_METHOD)
    text_model = str(extractors.text.path) if extractors.text else None
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker,
        initargs=(extractors.names, text_model, os.getpid()),
    ) as pool, stopped_on_exit(pool):
        futures = [pool.submit(_extract_to_cache, c, clip_words[clip_id(c)], cache) for c in todo]
        for future in as_completed(futures):
            cid, error = future.result()
            if error:
                failed[cid] = error
            else:
                loaded = load_cached(cache, cid, clip_words[cid] if extractors.text else None)
                if loaded is None:
                    failed[cid] = "its cache file could not be read back"
                else:
                    results[cid] = loaded
            overall.update(1)


def _length_summary(corpus: Corpus) -> dict[str, dict[str, float]]:
    out = {}
    for m in corpus.spec.dims:
        steps = np.concatenate([s.masks[m].sum(1) for s in corpus.splits.values()])
        out[m] = {"min": int(steps.min()), "mean": round(float(steps.mean()), 2), "max": int(steps.max())}
    return out


def build_corpus(
    clips: list[ClipFeatures],
    extractors: Extractors,
    label_table: dict[str, tuple[float, str]],
    *,
    aligned: bool,
    name: str,
) -> Corpus:
    """Pad the clips of each split into (N, T, D) arrays with masks; an aligned corpus keeps audio/vision masks all
    True (zero steps where no frame or face was found), as MMSA's aligned files do, so it reads back as aligned."""
    if aligned and extractors.text is None:
        raise ValueError("--aligned needs the text modality (word timings), but there is no text model")
    by_split: dict[str, list[tuple[ClipFeatures, float]]] = {}
    for clip in clips:
        label, split = label_table.get(clip.clip_id, (float("nan"), "test"))  # unlabelled: NaN, never scored
        by_split.setdefault(split, []).append((clip, label))
    splits = {}
    for split in ("train", "valid", "test"):
        members = by_split.get(split)
        if not members:
            continue
        steps = [clip_steps(c, aligned=aligned) for c, _ in members]
        features, masks = {}, {}
        for m in ("text", "audio", "vision"):
            length = max(len(f[m]) for f, _ in steps)
            x = np.zeros((len(steps), length, extractors.dims[m]), np.float32)
            mask = np.zeros((len(steps), length), bool)
            for i, (f, k) in enumerate(steps):
                x[i, : len(f[m])] = f[m]
                mask[i, : len(f[m])] = True if aligned and m != "text" else k[m]
            features[m], masks[m] = x, mask
        if aligned:  # padded words beyond a clip's length are masked through the text mask only
            for m in ("audio", "vision"):
                masks[m][:] = True
        labels = np.array([[label] for _, label in members], np.float32)
        splits[split] = Split(ids=[c.clip_id for c, _ in members], features=features, masks=masks, labels=labels)
    spec = spec_from_splits(splits, aligned=aligned, extractors=extractors.names)
    return Corpus(name=name, splits=splits, spec=spec, source=name)


def write_dataset(
    corpus: Corpus, out: Path, extractors: Extractors, clips: list[ClipFeatures], *, aligned: bool, labelled: bool
) -> Path:
    """The MMSA pickle (core writer), then the same file again with `config` (the extractors' identity and settings)
    and `raw_text` filled in; both writes are atomic."""
    from ..data.formats import load_pickle, write_mmsa_pickle

    write_mmsa_pickle(corpus, out)
    data = load_pickle(out)
    words = {c.clip_id: " ".join(c.words) for c in clips}
    for split in corpus.splits.values():
        name = next(k for k, v in corpus.splits.items() if v is split)
        data[name]["raw_text"] = np.array([words.get(i, "") for i in split.ids], dtype=object)
    config = extractors.config()
    config["affectfuse_extract"] = {
        "version": CACHE_VERSION,
        "aligned": aligned,
        "labelled": labelled,
        "extractors": extractors.names,
        "alignment": "mean of the frames within each word's interval" if aligned else "none (frame rates as below)",
        "word_timing": {
            c.clip_id: ("given" if c.word_times is not None else "uniform over the clip") for c in clips if c.words
        },
    }
    data["config"] = config
    return atomic_write(out, lambda f: pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL))


# ---------------------------------------------------------------------------------------------------------------------
# prediction
# ---------------------------------------------------------------------------------------------------------------------


def _polarity(score: float) -> str:
    return "positive" if score > 0 else "negative" if score < 0 else "neutral"


def checkpoint_extractors(spec: InputSpec, checkpoint: Path | str, text_model: str | None) -> Extractors:
    """The extractors a checkpoint's training data came from, or a clear error when they are not ours."""
    names = spec.extractors
    needed = [m for m in ("audio", "vision") if m not in spec.dims]
    if needed or "text" not in spec.dims:
        raise ValueError(
            f"checkpoint {checkpoint} was trained on modalities {list(spec.dims)}; predict needs text, audio and "
            "vision as written by `affectfuse extract`"
        )
    try:
        return Extractors.from_names(raw_extractors(names), text_model)
    except ValueError as error:
        raise ValueError(
            f"checkpoint {checkpoint} was trained on features from extractors {names}, which `affectfuse extract` "
            f"cannot re-create ({error}); train on a dataset written by `affectfuse extract`"
        ) from None


def predict_clip(
    clip: Path | str,
    checkpoint: Path | str,
    *,
    transcript: str | None = None,
    text_model: str | None = None,
) -> dict[str, Any]:
    """Extract one clip with exactly the checkpoint's extractors and run the model: score(s), polarity, notes."""
    from ..engine.checkpoint import load_model
    from ..engine.evaluate import predict

    path = Path(clip).expanduser()
    find_clips(path)  # validates existence and suffix
    model = load_model(checkpoint)
    spec: InputSpec = model.spec
    extractors = checkpoint_extractors(spec, checkpoint, text_model)
    words = Words(split_words(transcript), None, "--transcript") if transcript else words_for(path, {}, {})
    features = extract_clip(path, extractors, words)
    corpus = for_model(spec, build_corpus([features], extractors, {}, aligned=spec.aligned, name=path.stem))
    problems = spec.compatible_with(corpus.spec)
    if problems:
        raise ValueError(f"checkpoint {checkpoint} cannot score {path}: " + "; ".join(problems))
    split = corpus.split("test")
    split.labels = np.zeros((1, spec.num_targets), np.int64 if spec.task == "classification" else np.float32)
    _, prediction, _ = predict(model, split)
    result: dict[str, Any] = {"clip": str(path), "checkpoint": str(checkpoint), "model": model.model_name}
    if spec.task == "classification":
        classes = prediction[0].argmax(-1)
        result["classes"] = {t: int(c) for t, c in zip(spec.targets, classes, strict=True)}
    else:
        scores = {t: float(v) for t, v in zip(spec.targets, prediction[0], strict=True)}
        result["scores"] = scores
        if "sentiment" in scores:
            result["score"] = scores["sentiment"]
            result["polarity"] = _polarity(round(scores["sentiment"], 6))
    result["extractors"] = extractors.names
    result["words"] = features.words
    result["notes"] = features.notes
    if not all(np.isfinite(v) for v in result.get("scores", {}).values()):
        raise FloatingPointError(f"the model gave a non-finite score for {path}")
    return result
