"""In-memory corpora: splits of pre-collated arrays, the NaN/inf policy, and batching without per-sample work."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import MODALITIES, InputSpec
from .batch import Batch, Sample, collate

NonFinite = Literal["error", "zero"]
SPLITS: tuple[str, ...] = ("train", "valid", "test")


class DataFormatError(ValueError):
    """A data file is missing something, or holds something of the wrong shape or type. The message names both."""


class NonFiniteFeatureError(DataFormatError):
    """Features hold NaN or +-inf (real in COVAREP audio) and the user did not ask for them to be replaced."""


def check_finite(x: np.ndarray, *, source: str, split: str, modality: str, policy: NonFinite) -> np.ndarray:
    """Reject NaN/inf, or replace them by 0 with a warning saying how many, when `policy == "zero"`."""
    bad = ~np.isfinite(x)
    count = int(bad.sum())
    if count == 0:
        return x
    nan, inf = int(np.isnan(x).sum()), count - int(np.isnan(x).sum())
    what = f"{source}: split {split!r}, modality {modality!r} has {count} non-finite values ({nan} NaN, {inf} inf)"
    if policy == "error":
        raise NonFiniteFeatureError(f"{what}; pass nonfinite='zero' (CLI: --nonfinite zero) to replace them by 0")
    if policy != "zero":
        raise ValueError(f"nonfinite policy must be 'error' or 'zero', got {policy!r}")
    warnings.warn(f"{what}; replaced {count} values by 0", stacklevel=2)
    x = x.copy()
    x[bad] = 0.0
    return x


@dataclass
class Split(Dataset):
    """One split as padded arrays; `masks` say which steps are real (left- or right-padded alike).

    Also a `torch.utils.data.Dataset` of `Sample`s, so a plain DataLoader batches it with the same collate as
    everything else: ``DataLoader(split, batch_size=32, shuffle=True, collate_fn=split.collate)`` yields `Batch`es
    (each sample keeps its own mask; `BatchLoader` is the faster path the trainer uses).
    """

    ids: list[str]
    features: dict[str, np.ndarray]
    """modality -> (N, T_m, D_m) float32."""
    masks: dict[str, np.ndarray]
    """modality -> (N, T_m) bool."""
    labels: np.ndarray
    """(N, K) float32 scores or (N, K) int64 classes."""
    standardisation: dict[str, dict[str, list[float]]] | None = field(default=None, repr=False)
    """The statistics these features were z-scored with (`data.standardisation`), None for raw features: `predict`
    standardises a raw split for a model trained on standardised features, and refuses a mismatch."""

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.labels.ndim == 1:
            self.labels = self.labels[:, None]
        for m, x in self.features.items():
            if m not in MODALITIES:
                raise DataFormatError(f"unknown modality {m!r}; expected one of {MODALITIES}")
            if x.ndim != 3 or len(x) != n:
                raise DataFormatError(f"{m} features must be (N={n}, T, D); got shape {x.shape}")
            if m not in self.masks:
                self.masks[m] = np.ones(x.shape[:2], dtype=bool)
            if self.masks[m].shape != x.shape[:2]:
                raise DataFormatError(f"{m} mask must be {x.shape[:2]}; got {self.masks[m].shape}")
        if len(self.labels) != n:
            raise DataFormatError(f"{n} ids but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample:
        """Sample `index`, cut after its last real step of each modality (collate pads it again)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} is out of range for a split of {len(self)} samples")
        features, masks = {}, {}
        for m, x in self.features.items():
            real = np.flatnonzero(self.masks[m][index])
            stop = int(real[-1]) + 1 if real.size else 0
            features[m] = x[index, :stop]
            masks[m] = self.masks[m][index, :stop]
        return Sample(id=self.ids[index], features=features, label=self.labels[index], masks=masks)

    collate = staticmethod(collate)
    """The collate function for `torch.utils.data.DataLoader(split, collate_fn=split.collate)`."""

    @classmethod
    def from_samples(cls, samples: Sequence[Sample]) -> Split:
        batch = collate(samples)
        return cls(
            ids=batch.ids,
            features={m: x.numpy() for m, x in batch.features.items()},
            masks={m: x.numpy() for m, x in batch.masks.items()},
            labels=batch.label.numpy(),
        )

    def subset(self, index: np.ndarray | Sequence[int]) -> Split:
        index = np.asarray(index, dtype=np.int64)
        return Split(
            ids=[self.ids[i] for i in index],
            features={m: x[index] for m, x in self.features.items()},
            masks={m: x[index] for m, x in self.masks.items()},
            labels=self.labels[index],
            standardisation=self.standardisation,
        )


@dataclass
class Corpus:
    """A dataset with its splits and what it provides (`spec`)."""

    name: str
    splits: dict[str, Split]
    spec: InputSpec
    source: str = ""
    """Where it was read from (file or folder) and in which format, for messages and `data inspect`."""
    notes: list[str] = field(default_factory=list)
    """Caveats a user must know (e.g. the MOSI bc-LSTM leakage note), shown by `data inspect`."""
    nonfinite: dict[str, int] = field(default_factory=dict)
    """"split/modality" -> number of NaN/inf values replaced by 0 at load time (only with nonfinite="zero")."""
    _fingerprint: str | None = field(default=None, init=False, repr=False, compare=False)
    _ready: Corpus | None = field(default=None, init=False, repr=False, compare=False)
    """The corpus `data.checks.ready_for_training` made of this one (checked once per corpus, not once per run)."""
    _standardised: Corpus | None = field(default=None, init=False, repr=False, compare=False)
    """The corpus `data.standardisation.standardised` made of this one (once per corpus, not once per run)."""

    def fingerprint(self) -> str:
        """sha256 of the content (ids, features, masks, labels of every split): results computed from this corpus
        are reused only while it is the same data, whatever path it was read from."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for name, split in self.splits.items():
                digest.update(f"{name}\0{len(split)}\0{chr(0).join(split.ids)}\0".encode())
                for m in sorted(split.features):
                    for array in (split.features[m], split.masks[m]):
                        digest.update(f"{m}{array.dtype}{array.shape}".encode())
                        digest.update(np.ascontiguousarray(array).tobytes())
                digest.update(f"{split.labels.dtype}{split.labels.shape}".encode())
                digest.update(np.ascontiguousarray(split.labels).tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise KeyError(f"corpus {self.name!r} has no split {name!r}; it has {list(self.splits)}")
        return self.splits[name]


def spec_from_splits(splits: dict[str, Split], **kwargs: object) -> InputSpec:
    """Feature dims and padded lengths read from the data, never from constants (spec §0.1: MOSI is 5/20-d)."""
    first = next(iter(splits.values()))
    dims = {m: int(x.shape[-1]) for m, x in first.features.items()}
    lengths = {m: max(int(s.features[m].shape[1]) for s in splits.values()) for m in dims}
    return InputSpec(dims=dims, lengths=lengths, **kwargs)  # type: ignore[arg-type]


class BatchLoader:
    """Iterates a split in mini-batches by slicing pre-collated tensors (no per-sample Python work per step).

    Each batch is trimmed to the longest real sequence it contains, so short utterances are not padded to the
    corpus maximum. With `bucket > 1` (shuffled loaders only) each epoch's shuffled order is cut into pools of
    `bucket` batches whose samples are sorted by length before batching, and the batches are shuffled again: batches
    hold samples of similar lengths, so trimming removes most padding of unaligned data (less compute per epoch),
    while every sample is still seen once per epoch in a seeded random order.
    """

    def __init__(self, split: Split, *, batch_size: int, shuffle: bool = False, seed: int = 0, bucket: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if bucket < 0:
            raise ValueError(f"bucket must be >= 0 batches per length-sorted pool, got {bucket}")
        self.bucket = bucket
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)
        self.features = {
            m: torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) for m, x in split.features.items()
        }
        self.masks = {m: torch.from_numpy(np.ascontiguousarray(x, dtype=bool)) for m, x in split.masks.items()}
        labels = torch.from_numpy(np.ascontiguousarray(split.labels))
        self.labels = labels.float() if labels.is_floating_point() else labels.long()

    def __len__(self) -> int:
        return (len(self.split) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.split)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        starts = list(range(0, n, self.batch_size))
        if self.shuffle and len(starts) > 1 and n - starts[-1] == 1:
            starts.pop()  # a training batch of one breaks BatchNorm; fold the last sample into the previous batch
        bounds = [(start, starts[i + 1] if i + 1 < len(starts) else n) for i, start in enumerate(starts)]
        if self.shuffle and self.bucket > 1:
            order, bounds = self._bucketed(order, bounds)
        for start, stop in bounds:
            index = order[start:stop]
            features, masks = {}, {}
            for m, x in self.features.items():
                mask = self.masks[m][index]
                steps = torch.nonzero(mask.any(0))
                lo, hi = (int(steps[0]), int(steps[-1]) + 1) if len(steps) else (0, 1)
                features[m] = x[index, lo:hi]
                masks[m] = mask[:, lo:hi]
            yield Batch(
                features=features, masks=masks, label=self.labels[index], ids=[self.split.ids[i] for i in index]
            )

    def _bucketed(
        self, order: torch.Tensor, bounds: list[tuple[int, int]]
    ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Sort each pool of `bucket` consecutive batches by sample length (the longest modality's real steps, then
        the sum over modalities), keep the batch sizes, and shuffle the batch order."""
        if not hasattr(self, "_lengths"):
            per_modality = torch.stack([m.sum(1) for m in self.masks.values()], dim=1)  # (N, M)
            self._lengths = per_modality.amax(1) * (per_modality.sum(1).max() + 1) + per_modality.sum(1)
        pieces = []
        for first in range(0, len(bounds), self.bucket):
            pool = bounds[first : first + self.bucket]
            index = order[pool[0][0] : pool[-1][1]]
            pieces.append(index[torch.sort(self._lengths[index], stable=True).indices])
        order = torch.cat(pieces)
        shuffled = torch.randperm(len(bounds), generator=self.generator).tolist()
        return order, [bounds[i] for i in shuffled]
