"""EF-LSTM against MMSA's EF_LSTM (behind its AlignSubNet "avg_pool" for the unaligned case): MMSA's weights through
our converter (affectfuse/convert/ef_lstm.py) into our model built with our defaults plus the fixture's sizes, then
the output, the loss and every gradient within 1e-5, in eval mode and in training mode with every dropout at 0.

Fixtures: tests/fixtures/parity/ef_lstm/, made by tests/fixtures/parity/make_ef_lstm.py from MMSA's code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import affectfuse.convert.ef_lstm as convert_ef_lstm  # registers the converter
from affectfuse.config import InputSpec
from affectfuse.config.registry import create_model
from affectfuse.convert import ConversionError, load_converted
from affectfuse.data.batch import Batch
from affectfuse.models.ef_lstm import EFLSTMConfig

from .official import group

FOLDER = Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "ef_lstm"
CASES = sorted(p.stem for p in FOLDER.glob("*.json"))


def load(case: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    with np.load(FOLDER / f"{case}.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return json.loads((FOLDER / f"{case}.json").read_text()), arrays


def spec_of(meta: dict[str, Any]) -> InputSpec:
    if meta["task"] == "classification":
        return InputSpec(dims=meta["dims"], lengths=meta["lengths"], task="classification", targets=("emotion",),
                         num_classes=meta["num_classes"], metric_family="iemocap")
    return InputSpec(dims=meta["dims"], lengths=meta["lengths"])


def converted(meta: dict[str, Any], arrays: dict[str, np.ndarray], **extra: Any) -> Any:
    config = create_model("ef_lstm", spec_of(meta), **meta["our_config"], **extra).config
    return load_converted("ef_lstm", "mmsa", group(arrays, "state"), config, spec_of(meta))


def batch_of(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Batch:
    return Batch(features={m: torch.from_numpy(arrays[f"input/{m}"]) for m in meta["dims"]},
                 masks={m: torch.from_numpy(arrays[f"mask/{m}"]) for m in meta["dims"]},
                 label=torch.from_numpy(arrays["label"]), ids=[str(i) for i in range(meta["batch"])])


def test_every_case_is_there() -> None:
    assert {"mmsa", "mmsa_unaligned", "mmsa_classification"} <= set(CASES)


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("case", CASES)
def test_output_loss_and_gradients_equal_the_fixture(case: str, mode: str) -> None:
    meta, arrays = load(case)
    model = converted(meta, arrays)
    if mode == "train":
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        model.lstm.dropout = 0.0
    model.train(mode == "train")
    losses = model.loss(batch_of(meta, arrays))
    losses.total.backward()
    tol = meta["tolerance"]
    np.testing.assert_allclose(losses.prediction.reshape(meta["batch"], -1).numpy(), arrays[f"{mode}/output"],
                               atol=tol, rtol=0)
    assert abs(losses.terms["task"].item() - float(arrays[f"{mode}/loss/task"])) <= tol
    expected = convert_ef_lstm.from_mmsa(group(arrays, f"{mode}/grad"), model.config)
    ours = dict(model.named_parameters())
    assert set(expected) == set(ours)
    for name, grad in expected.items():
        np.testing.assert_allclose(ours[name].grad.numpy(), grad.numpy(), atol=tol, rtol=0, err_msg=name)


def test_windows_over_real_steps_ignore_padding_where_mmsa_s_chunks_do_not() -> None:
    """Unaligned case with garbage end-padding on one sample: our prediction for it is unchanged."""
    meta, arrays = load("mmsa_unaligned")
    model = converted(meta, arrays).eval()
    batch = batch_of(meta, arrays)
    for m in batch.features:
        b, _, d = batch.features[m].shape
        batch.features[m] = torch.cat([batch.features[m], torch.randn(b, 3, d) * 10], dim=1)
        batch.masks[m] = torch.cat([batch.masks[m], torch.zeros(b, 3, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        np.testing.assert_allclose(model(batch).prediction.numpy(), arrays["eval/output"], atol=meta["tolerance"],
                                   rtol=0)


def test_defaults_are_mmsa_s_mosi_setting() -> None:
    config = EFLSTMConfig()
    assert (config.hidden, config.layers, config.dropout, config.step_norm, config.mask_padding) == (
        128, 4, 0.5, True, True)


def test_converter_refuses_missing_unknown_and_misshapen_tensors() -> None:
    meta, arrays = load("mmsa")
    state, spec = group(arrays, "state"), spec_of(meta)
    config = create_model("ef_lstm", spec, **meta["our_config"]).config
    for key in ("out.weight", "lstm.bias_hh_l1", "linear.bias"):
        with pytest.raises(ConversionError, match=f"lacks '{key}'"):
            load_converted("ef_lstm", "mmsa", {k: v for k, v in state.items() if k != key}, config, spec)
    with pytest.raises(ConversionError, match="has 2 LSTM layers, the config 3"):
        load_converted("ef_lstm", "mmsa", state, create_model("ef_lstm", spec, hidden=6, layers=3).config, spec)
    with pytest.raises(ConversionError, match=r"does not know: \['extra.weight'\]"):
        load_converted("ef_lstm", "mmsa", {**state, "extra.weight": torch.zeros(1)}, config, spec)
    with pytest.raises(ConversionError, match="other shapes"):
        load_converted("ef_lstm", "mmsa", {**state, "linear.weight": torch.zeros(6, 7)}, config, spec)
    amio = {f"Model.{k}": v for k, v in state.items()}  # saved through MMSA's AMIO wrapper
    model = load_converted("ef_lstm", "mmsa", amio, config, spec)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
