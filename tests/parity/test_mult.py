"""MulT against numbers produced by the official code (tests/fixtures/parity/make_mult.py): official weights,
converted, give the official outputs, loss and gradients in our MulT built with our defaults (sizes, dropouts and,
for the aligned case, the official causal mask set as in the fixture)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from affectfuse import create_model
from affectfuse.config import InputSpec, Modalities
from affectfuse.convert import ConversionError, get_converter, load_converted
from affectfuse.data.batch import Batch

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "parity"
TOL = 1e-5
LETTER = {"l": "text", "a": "audio", "v": "vision"}


def _setup(case: str):
    with np.load(FIXTURES / f"mult_{case}.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads((FIXTURES / f"mult_{case}.json").read_text())
    spec = InputSpec(dims={LETTER[m]: d for m, d in meta["dims"].items()},
                     lengths={LETTER[m]: t for m, t in meta["lengths"].items()}, aligned=case == "aligned")
    zero = Modalities(text=0.0, audio=0.0, vision=0.0)
    config = create_model("mult", spec, dim=meta["dim"], heads=meta["heads"], layers=meta["layers"],
                          text_dropout=0.0, embed_dropout=0.0, attn_dropout=zero, self_attn_dropout=0.0,
                          relu_dropout=0.0, res_dropout=0.0, out_dropout=0.0, causal=meta["attn_mask"],
                          only=() if meta["only"] == "lav" else tuple(LETTER[m] for m in meta["only"])).config
    state = {k[6:]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("state/")}
    model = load_converted("mult", "official", state, config, spec)
    b = meta["batch"]
    batch = Batch(features={LETTER[m]: torch.from_numpy(arrays[f"input/{m}"]) for m in "lav"},
                  masks={LETTER[m]: torch.ones(b, t, dtype=torch.bool) for m, t in meta["lengths"].items()},
                  label=torch.from_numpy(arrays["label"]), ids=[str(i) for i in range(b)])
    return model, batch, arrays, config, spec, state


@pytest.mark.parametrize("case", ["aligned", "unaligned", "lonly"])
def test_outputs_loss_and_gradients_equal_the_official_code(case: str) -> None:
    model, batch, arrays, config, _, _ = _setup(case)
    model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(model(batch).prediction.numpy(), arrays["eval/output"], atol=TOL, rtol=0)
    model.train()
    losses = model.loss(batch)
    np.testing.assert_allclose(losses.prediction.numpy(), arrays["train/output"], atol=TOL, rtol=0)
    np.testing.assert_allclose(losses.total.item(), arrays["train/loss"], atol=TOL, rtol=0)
    losses.total.backward()
    grads = {k[5:]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("grad/")}
    expected = get_converter("mult", "official")(grads, config)
    ours = dict(model.named_parameters())
    assert set(expected) == set(ours)
    for key, grad in expected.items():
        np.testing.assert_allclose(ours[key].grad.numpy(), grad.numpy(), atol=TOL, rtol=1e-5, err_msg=key)


def test_converter_refuses_what_does_not_fit() -> None:
    _, _, _, config, spec, state = _setup("unaligned")
    with pytest.raises(ConversionError, match="missing"):
        load_converted("mult", "official", {k: v for k, v in state.items() if not k.startswith("proj1")}, config,
                       spec)
    with pytest.raises(ConversionError, match="does not know"):
        load_converted("mult", "official", {**state, "trans_x.weight": torch.zeros(1)}, config, spec)
    wide = create_model("mult", spec, dim=16, heads=2, layers=1).config
    with pytest.raises(ConversionError, match="other shapes"):
        load_converted("mult", "official", state, wide, spec)
