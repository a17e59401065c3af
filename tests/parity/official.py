"""Shared by the parity tests: read a fixture of the official code's numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "parity"
TOL = 1e-5


def load_fixture(name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with np.load(FIXTURES / f"{name}.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return arrays, json.loads((FIXTURES / f"{name}.json").read_text())


def group(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors stored under `prefix/` (e.g. the official state dict, or its gradients), without the prefix."""
    return {k[len(prefix) + 1:]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith(prefix + "/")}


def tiny_bert(tmp_path_factory: Any, config: dict[str, Any]) -> str:
    """A local BERT folder of the fixture's `config` (its random weights are replaced by the converted official
    ones); skips without `transformers`."""
    import pytest

    transformers = pytest.importorskip("transformers", reason="the official text encoder is a BERT")
    path = tmp_path_factory.mktemp("tiny_bert")
    transformers.BertModel(transformers.BertConfig(**config)).save_pretrained(path)
    return str(path)
