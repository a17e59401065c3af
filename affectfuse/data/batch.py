"""The one batch type every model, metric and tool consumes, and the collate that builds it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class Batch:
    """A padded mini-batch.

    Only the modalities a corpus has are present: POM has no `text` key at all. A sample missing a modality
    altogether (the missing-modality setting) has an all-False mask for it.
    """

    features: dict[str, Tensor]
    """modality -> (B, T_m, D_m) float features; padded steps hold zeros."""
    masks: dict[str, Tensor]
    """modality -> (B, T_m) bool, True on real steps."""
    label: Tensor
    """(B, K) float scores for regression, (B, K) long class indices for classification."""
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.features)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            features={m: x.to(device, non_blocking=True) for m, x in self.features.items()},
            masks={m: x.to(device, non_blocking=True) for m, x in self.masks.items()},
            label=self.label.to(device, non_blocking=True),
            ids=self.ids,
        )


@dataclass
class Sample:
    """One utterance before padding: variable-length features per modality."""

    id: str
    features: dict[str, np.ndarray]
    """modality -> (T_m, D_m)."""
    label: np.ndarray
    """(K,) targets."""
    masks: dict[str, np.ndarray] | None = None
    """modality -> (T_m,) bool, True on real steps; None: every step is real."""


def collate(samples: Sequence[Sample]) -> Batch:
    """Pad variable-length samples at the end to the longest one in the batch, with boolean masks."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    modalities = list(samples[0].features)
    features, masks = {}, {}
    for m in modalities:
        arrays = [s.features[m] for s in samples]
        dims = {a.shape[-1] for a in arrays}
        if len(dims) != 1 or any(a.ndim != 2 for a in arrays):
            shapes = sorted({a.shape for a in arrays})
            raise ValueError(f"{m} features must all be (T, D) with one D to collate; got shapes {shapes[:5]}")
        longest = max(max(len(a) for a in arrays), 1)
        x = np.zeros((len(arrays), longest, dims.pop()), dtype=np.float32)
        mask = np.zeros((len(arrays), longest), dtype=bool)
        for i, (a, sample) in enumerate(zip(arrays, samples, strict=True)):
            x[i, : len(a)] = a
            mask[i, : len(a)] = True if sample.masks is None else sample.masks[m]
        features[m] = torch.from_numpy(x)
        masks[m] = torch.from_numpy(mask)
    label = torch.from_numpy(np.stack([np.asarray(s.label) for s in samples]))
    if label.is_floating_point():
        label = label.float()
    return Batch(features=features, masks=masks, label=label, ids=[s.id for s in samples])
