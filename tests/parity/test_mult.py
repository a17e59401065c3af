"""MulT against numbers produced by the official code (tests/fixtures/parity/make_mult.py): official weights,
converted, give the official outputs, loss and gradients in our MulT built with our defaults (sizes, dropouts and,
for the aligned case, the official causal mask set as in the fixture)."""

from __future__ import annotations

import pytest
import torch

from affectfuse import create_model
from affectfuse.config import InputSpec, Modalities
from affectfuse.convert import ConversionError, load_converted
from affectfuse.data.batch import Batch

from .official import assert_matches_official, group, load_fixture

LETTER = {"l": "text", "a": "audio", "v": "vision"}


def _setup(case: str):
    arrays, meta = load_fixture(f"mult_{case}")
    spec = InputSpec(dims={LETTER[m]: d for m, d in meta["dims"].items()},
                     lengths={LETTER[m]: t for m, t in meta["lengths"].items()}, aligned=case == "aligned")
    zero = Modalities(text=0.0, audio=0.0, vision=0.0)
    config = create_model("mult", spec, dim=meta["dim"], heads=meta["heads"], layers=meta["layers"],
                          text_dropout=0.0, embed_dropout=0.0, attn_dropout=zero, self_attn_dropout=0.0,
                          relu_dropout=0.0, res_dropout=0.0, out_dropout=0.0, causal=meta["attn_mask"],
                          only=() if meta["only"] == "lav" else tuple(LETTER[m] for m in meta["only"])).config
    state = group(arrays, "state")
    model = load_converted("mult", "official", state, config, spec)
    b = meta["batch"]
    batch = Batch(features={LETTER[m]: torch.from_numpy(arrays[f"input/{m}"]) for m in "lav"},
                  masks={LETTER[m]: torch.ones(b, t, dtype=torch.bool) for m, t in meta["lengths"].items()},
                  label=torch.from_numpy(arrays["label"]), ids=[str(i) for i in range(b)])
    return model, batch, arrays, config, spec, state


@pytest.mark.parametrize("case", ["aligned", "unaligned", "lonly"])
def test_outputs_loss_and_gradients_equal_the_official_code(case: str) -> None:
    model, batch, arrays, config, _, _ = _setup(case)
    assert_matches_official(model, batch, arrays, config)


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
