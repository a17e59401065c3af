"""Scoring a model: `predict` runs `forward` only (never `loss`), `evaluate` applies the corpus's paper metrics."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from ..data.batch import Batch
from ..data.corpus import BatchLoader, Split
from ..data.standardisation import split_for_model
from .metrics import MetricSuite, metrics_for


@torch.no_grad()
def predict(
    model: Any, data: Split | Iterable[Batch], *, batch_size: int = 256
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(ids, predictions, labels) over `data`, in order; predictions (N, K) scores or (N, K, C) logits.

    `data`: a `Split`, or any iterable of `Batch`es. Runs `forward` only, in eval mode; labels are passed through as
    they are (NaN for unlabelled samples), never used. A model trained on standardised features standardises a raw
    `Split` with its own statistics (`data.standardisation`); batches are taken as the model's input, as they are.
    """
    if isinstance(data, Split) and getattr(model, "spec", None) is not None:
        data = split_for_model(model.spec, data)
    loader = BatchLoader(data, batch_size=batch_size) if isinstance(data, Split) else data
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    ids, predictions, labels = [], [], []
    for batch in loader:
        ids.extend(batch.ids)
        predictions.append(model(batch.to(device)).prediction.float().cpu())
        labels.append(batch.label)
    model.train(was_training)
    return ids, torch.cat(predictions).numpy(), torch.cat(labels).numpy()


def evaluate(model: Any, data: Split | Iterable[Batch], *, suite: MetricSuite | None = None) -> dict[str, float]:
    """The paper metrics of `model` on `data` (every key of the corpus's metric family, full precision).

    `data`: a `Split`, or any iterable of `Batch`es (e.g. a `DataLoader` over a split with `collate_fn=split.collate`).

    Raises:
        ValueError: some samples are unlabelled (NaN labels, e.g. clips `extract` found no label for); score the
            labelled ones, and use `predict` for the others.
    """
    suite = suite or metrics_for(model.spec)
    _, predictions, labels = predict(model, data)
    unlabelled = int(np.isnan(labels).reshape(len(labels), -1).any(axis=1).sum()) if labels.dtype.kind == "f" else 0
    if unlabelled:
        raise ValueError(
            f"{unlabelled} of {len(labels)} samples are unlabelled (NaN labels); evaluate scores labelled data only "
            "— use predict (or `affectfuse predict`) for unlabelled clips"
        )
    return suite.compute(predictions, labels)
