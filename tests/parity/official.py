"""Shared by the parity tests: read a fixture of the official code's numbers and compare a converted model with it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from affectfuse.convert import get_converter
from affectfuse.data.batch import Batch

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "parity"
TOL = 1e-5


def load_fixture(name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with np.load(FIXTURES / f"{name}.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return arrays, json.loads((FIXTURES / f"{name}.json").read_text())


def group(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors stored under `prefix/` (e.g. the official state dict, or its gradients), without the prefix."""
    return {k[len(prefix) + 1:]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith(prefix + "/")}


def assert_matches_official(model: Any, batch: Batch, arrays: dict[str, np.ndarray], config: Any, *,
                            loss_scale: float = 1.0, source: str = "official") -> None:
    """Eval-mode output, train-mode output (every dropout 0), the loss and every gradient equal the official ones
    within TOL. `loss_scale` converts our loss to the official reduction (a batch mean vs a sum: B)."""
    b = len(batch.ids)
    model.eval()
    with torch.no_grad():
        out = model(batch).prediction.reshape(b, -1)
    np.testing.assert_allclose(out.numpy(), arrays["eval/output"].reshape(b, -1), atol=TOL, rtol=0)
    model.train()
    losses = model.loss(batch)
    np.testing.assert_allclose(losses.prediction.reshape(b, -1).numpy(), arrays["train/output"].reshape(b, -1),
                               atol=TOL, rtol=0)
    np.testing.assert_allclose(losses.total.item() * loss_scale, arrays["train/loss"], atol=TOL * loss_scale, rtol=0)
    losses.total.backward()
    expected = get_converter(model.model_name, source)(group(arrays, "grad"), config)
    ours = dict(model.named_parameters())
    assert set(expected) == set(ours)
    for key, grad in expected.items():
        np.testing.assert_allclose(ours[key].grad.numpy() * loss_scale, grad.numpy(), atol=TOL * loss_scale,
                                   rtol=1e-5, err_msg=key)
