"""Random feature missing: EMT-DLFR's simulation of incomplete inputs (spec shared/spec/methods.md §4.2, §8).

One rule, used by EMT-DLFR's training objective and by the robustness sweeps, so training-time and test-time
missingness cannot diverge: for each modality, draw one uniform number u per *real* position; the position is kept
when u > r, so r is the expected drop rate. A dropped position is

* zeroed, for audio, vision and precomputed text features;
* for BERT token ids (``spec.extractors["text"] == "bert-tokens"``: (T, 3) steps of (id, attention, segment)),
  replaced by [UNK] (id 100) with its attention mask and segment id unchanged, so it is still attended; the first
  real position ([CLS]) and the last real position ([SEP]) are never dropped.

Padding is never touched and masks never change: a dropped frame is still a real step, it just carries no
information. Every function returns or takes the *kept* masks (True at real steps that were kept); the dropped
positions are ``mask & ~kept``.

Two ways to draw the uniforms:

* `drop_features` (a batch, a `torch.Generator`): a fresh draw per call. EMT-DLFR's `loss` uses it, so each epoch
  sees a new incomplete view of every sample.
* `split_missing_masks` + `apply_masks` (a whole split, NumPy seeded per modality: text 111, audio 1111, vision
  11111): the official protocol's static masks, drawn once per split at load time and identical across epochs and
  training seeds. On a split holding the MMSA pickle's arrays in their original order and padded length they are
  bit-identical to the official code's masks. Sweeps build their fixed corrupted splits with these.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from ..config import MODALITIES, InputSpec, Modalities, uses_bert_tokens
from ..data.batch import Batch
from ..data.corpus import Split

UNK_ID = 100
"""Token id of [UNK] in bert-base-uncased and bert-base-chinese: what a dropped word-piece becomes."""
MISSING_SEEDS: Modalities[int] = Modalities(text=111, audio=1111, vision=11111)
"""The official per-modality NumPy seeds of the static masks (EMT-DLFR/TFR-Net `missing_seed`)."""

Rate = float | Modalities[float] | Mapping[str, float]


def drop_features(
    batch: Batch, rate: Rate, *, generator: torch.Generator, spec: InputSpec
) -> tuple[Batch, dict[str, Tensor]]:
    """Drop each real position of each modality independently with probability `rate`.

    Args:
        batch: the complete batch; it is not modified.
        rate: one expected drop rate for every modality, or per modality (`Modalities`, or a dict whose missing
            modalities get 0).
        generator: where the uniforms come from (on any device; they are drawn there and moved to the batch's), so a
            seeded generator reproduces the same masks on CPU and GPU. Every modality of the batch consumes one
            (B, T_m) draw, in the order text, audio, vision, whatever its rate.
        spec: the corpus's spec; it says whether text holds BERT token ids.

    Returns:
        The incomplete batch (same masks, labels and ids) and the kept masks, modality -> (B, T_m) bool.
    """
    rates = _rates(rate, batch.modalities)
    kept = {}
    for m in (m for m in MODALITIES if m in batch.features):
        mask = batch.masks[m]
        u = torch.rand(mask.shape, generator=generator, device=generator.device).to(mask.device)
        # u >= r (not u > r): the same rule, but r = 0 keeps everything surely and P(drop) = r exactly on [0, 1).
        keep = (u >= rates[m]) & mask
        if m == "text" and uses_bert_tokens(spec):
            keep = keep | _ends(mask)
        kept[m] = keep
    return apply_kept(batch, kept, spec=spec), kept


def apply_kept(batch: Batch, kept: Mapping[str, Tensor], *, spec: InputSpec) -> Batch:
    """The batch with every real position that is not in `kept` dropped (zeroed, or [UNK] for token ids)."""
    features = dict(batch.features)
    for m, keep in kept.items():
        features[m] = _drop(
            batch.features[m], batch.masks[m] & ~keep.to(torch.bool), tokens=m == "text" and uses_bert_tokens(spec)
        )
    return Batch(features=features, masks=batch.masks, label=batch.label, ids=batch.ids)


def split_missing_masks(
    split: Split, rate: Rate, *, spec: InputSpec, seeds: Modalities[int] = MISSING_SEEDS
) -> dict[str, np.ndarray]:
    """The official protocol's static kept masks of a whole split: modality -> (N, T_m) bool.

    As the official loader does: ``np.random.seed(seed_m)``, one uniform per *padded* position of the (N, T_m)
    array in row-major order, kept where u > r and the position is real; for token-id text the first and last real
    positions ([CLS], [SEP]) are kept as well. The masks therefore depend on the split's order and padded length.
    """
    rates = _rates(rate, tuple(split.features))
    kept = {}
    for m in (m for m in MODALITIES if m in split.features):
        mask = split.masks[m]
        u = np.random.RandomState(seeds[m]).uniform(size=mask.shape)
        keep = (u > rates[m]) & mask
        if m == "text" and uses_bert_tokens(spec):
            keep |= _ends(torch.from_numpy(mask)).numpy()
        kept[m] = keep
    return kept


def apply_masks(split: Split, kept: Mapping[str, np.ndarray], *, spec: InputSpec) -> Split:
    """A copy of `split` with the positions outside `kept` dropped: the fixed corrupted split of a sweep point.

    >>> corrupted = apply_masks(test, split_missing_masks(test, 0.3, spec=spec), spec=spec)  # doctest: +SKIP
    """
    features = dict(split.features)
    for m, keep in kept.items():
        dropped = torch.from_numpy(split.masks[m] & ~keep)
        features[m] = _drop(
            torch.from_numpy(split.features[m]), dropped, tokens=m == "text" and uses_bert_tokens(spec)
        ).numpy()
    return dataclasses.replace(split, ids=list(split.ids), features=features, masks=dict(split.masks))


def _drop(x: Tensor, dropped: Tensor, *, tokens: bool) -> Tensor:
    """(B, T, D) features with the `dropped` (B, T) positions zeroed, or their token id (channel 0) set to [UNK]."""
    if tokens:
        ids = x[..., 0].masked_fill(dropped, UNK_ID)
        return torch.cat([ids.unsqueeze(-1), x[..., 1:]], dim=-1)
    return x.masked_fill(dropped.unsqueeze(-1), 0.0)


def _ends(mask: Tensor) -> Tensor:
    """(B, T) True at each sample's first and last real position ([CLS] and [SEP] in token-id text)."""
    steps = torch.arange(mask.shape[1], device=mask.device)
    first = torch.where(mask, steps, mask.shape[1]).amin(1, keepdim=True)
    last = torch.where(mask, steps, -1).amax(1, keepdim=True)
    return mask & ((steps == first) | (steps == last))


def _rates(rate: Rate, modalities: tuple[str, ...]) -> dict[str, float]:
    if isinstance(rate, Modalities):
        rates = {m: float(rate[m]) for m in MODALITIES}
    elif isinstance(rate, Mapping):
        unknown = set(rate) - set(MODALITIES)
        if unknown:
            raise ValueError(f"missing rates given for unknown modalities {sorted(unknown)}; expected {MODALITIES}")
        rates = {m: float(rate.get(m, 0.0)) for m in MODALITIES}
    else:
        rates = dict.fromkeys(MODALITIES, float(rate))
    for m in modalities:
        if not 0.0 <= rates[m] <= 1.0:
            raise ValueError(f"missing rate of {m} must be in [0, 1], got {rates[m]}")
    return rates
