"""Shared by test_lmf.py and test_tfn.py: read a fixture of tests/fixtures/parity/{lmf,tfn}/, build our model for
it (our defaults plus the sizes the fixture records), convert the official weights and compare.

`python -m tests.parity.lmf_tfn` prints the largest differences of every case and mode (for docs/parity/).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from affectfuse.config import InputSpec, Modalities
from affectfuse.config.registry import create_model
from affectfuse.convert import get_converter, load_converted
from affectfuse.data.batch import Batch
from affectfuse.models.base import FusionModel

from .official import group

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "parity"


def cases(model_name: str) -> list[str]:
    return sorted(p.stem for p in (FIXTURES / model_name).glob("*.json"))


def load(model_name: str, case: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    path = FIXTURES / model_name / f"{case}.json"
    with np.load(path.with_suffix(".npz"), allow_pickle=False) as data:
        return json.loads(path.read_text()), dict(data)


def source_of(case: str) -> str:
    return "mmsa" if case.startswith("mmsa") else "official"


def spec_of(meta: dict[str, Any]) -> InputSpec:
    if meta["task"] == "classification":
        return InputSpec(dims=meta["dims"], lengths=meta["lengths"], task="classification", targets=("emotion",),
                         num_classes=meta["num_classes"], metric_family="iemocap")
    return InputSpec(dims=meta["dims"], lengths=meta["lengths"])  # MOSI: scores in [-3, 3]


def our_config(model_name: str, meta: dict[str, Any], **extra: Any) -> Any:
    """Our default config plus only the fixture's sizes (and the settings it records, e.g. use_softmax)."""
    fields = {**meta["our_config"], **extra}
    fields["hidden"] = Modalities(**fields["hidden"])
    return create_model(model_name, spec_of(meta), **fields).config


def converted(model_name: str, case: str, meta: dict[str, Any], arrays: dict[str, np.ndarray],
              **extra: Any) -> FusionModel:
    return load_converted(model_name, source_of(case), group(arrays, "state"), our_config(model_name, meta, **extra),
                          spec_of(meta))


def batch_of(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Batch:
    return Batch(
        features={m: torch.from_numpy(arrays[f"input/{m}"]) for m in meta["dims"]},
        masks={m: torch.from_numpy(arrays[f"mask/{m}"]) for m in meta["dims"]},
        label=torch.from_numpy(arrays["label"]),
        ids=[str(i) for i in range(meta["batch"])],
    )


def without_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def official_loss_scale(meta: dict[str, Any], batch: Batch, model: FusionModel) -> float:
    """Our loss times this is the fixture's: the official scripts sum over the batch, MMSA and we average (unless
    our `loss_reduction="sum"`)."""
    summed = meta["loss"].startswith("summed")
    return float(batch.label.numel()) if summed and model.config.loss_reduction == "mean" else 1.0


def differences(model_name: str, case: str, model: FusionModel, mode: str, meta: dict[str, Any],
                arrays: dict[str, np.ndarray]) -> dict[str, float]:
    """Largest absolute differences from the fixture in `mode` ("eval", or "train" with every dropout at 0): the
    output, the loss and every gradient (official gradients mapped to our names by the same converter). Our loss
    and gradients are compared after scaling to the official reduction."""
    batch = batch_of(meta, arrays)
    if mode == "train":
        without_dropout(model)
    model.train(mode == "train")
    model.zero_grad()
    losses = model.loss(batch)
    losses.total.backward()
    scale = official_loss_scale(meta, batch, model)
    expected = get_converter(model_name, source_of(case))(group(arrays, f"{mode}/grad"), model.config)
    ours = dict(model.named_parameters())
    if set(expected) != set(ours):
        raise AssertionError(f"gradients of {sorted(set(expected) ^ set(ours))} on one side only")
    b = meta["batch"]
    return {
        "output": float(np.abs(losses.prediction.reshape(b, -1).numpy() - arrays[f"{mode}/output"]).max()),
        "loss/task": abs(losses.terms["task"].item() * scale - float(arrays[f"{mode}/loss/task"])),
        "grad": max(float((ours[k].grad * scale - g).abs().max()) for k, g in expected.items()),
    }


def assert_within_tolerance(diffs: dict[str, float], meta: dict[str, Any], where: str) -> None:
    tol = meta["tolerance"]
    bad = {k: v for k, v in diffs.items() if not v <= tol}
    assert not bad, f"{where}: differences above {tol}: {bad}"


def report(model_name: str) -> None:
    for case in cases(model_name):
        meta, arrays = load(model_name, case)
        extra = {"mask_padding": False} if meta["padded"] else {}
        for mode in ("eval", "train"):
            model = converted(model_name, case, meta, arrays, **extra)
            diffs = differences(model_name, case, model, mode, meta, arrays)
            print(f"{model_name} {case} {mode}: " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))


if __name__ == "__main__":
    torch.set_num_threads(1)
    report("lmf")
    report("tfn")


def check_case(model_name: str, case: str, mode: str) -> None:
    """Our converted model against one fixture case in one mode; the padded cases compare with `mask_padding=False`,
    which is the official code's counting of padding as real steps."""
    meta, arrays = load(model_name, case)
    model = converted(model_name, case, meta, arrays, **({"mask_padding": False} if meta["padded"] else {}))
    assert_within_tolerance(differences(model_name, case, model, mode, meta, arrays), meta,
                            f"{model_name}/{case} {mode}")


def check_padding_deviation(model_name: str) -> None:
    """Our default predicts for a padded sample what the official model predicts for it unpadded; the official
    prediction with the padding differs by the effect the fixture records (the deviation the model file documents)."""
    meta, arrays = load(model_name, "official_padded")
    model = converted(model_name, "official_padded", meta, arrays).eval()
    with torch.no_grad():
        ours = model(batch_of(meta, arrays)).prediction.numpy()
    np.testing.assert_allclose(ours, arrays["eval/output_unpadded"], atol=meta["tolerance"], rtol=0)
    assert np.abs(ours - arrays["eval/output"]).max() == pytest.approx(meta["official_padding_effect"], abs=1e-5)
    assert meta["official_padding_effect"] > 1e-3
