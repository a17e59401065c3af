"""LF-LSTM's `encoder="dnn"` (variant `lf_lstm:dnn`) against MMSA's LF_DNN: its weights through our converter
(affectfuse/convert/lf_lstm.py) into our model built with our defaults plus the fixture's sizes, then the output,
the loss and every gradient within 1e-5, in eval mode and in training mode with every dropout at 0.

Fixtures: tests/fixtures/parity/lf_lstm/, made by tests/fixtures/parity/make_lf_lstm.py from MMSA's code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import affectfuse.convert.lf_lstm as convert_lf_lstm  # registers the converter
from affectfuse.config.registry import get_entry
from affectfuse.convert import ConversionError, load_converted

from .lmf_tfn import batch_of, cases, check_case, converted, group, load, our_config, spec_of

CASES = cases("lf_lstm")


def test_every_case_is_there() -> None:
    assert {"mmsa", "mmsa_classification"} <= set(CASES)


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("case", CASES)
def test_output_loss_and_gradients_equal_the_fixture(case: str, mode: str) -> None:
    check_case("lf_lstm", case, mode)


def test_the_dnn_variant_is_mmsa_s_lf_dnn_and_the_default_is_all_lstm() -> None:
    assert get_entry("lf_lstm:dnn").config().encoder == "dnn"
    assert get_entry("lf_lstm").config().encoder == "lstm"
    meta, arrays = load("lf_lstm", "mmsa")
    with pytest.raises(ConversionError, match="encoder='dnn'"):
        load_converted("lf_lstm", "mmsa", group(arrays, "state"), our_config("lf_lstm", meta, encoder="lstm"),
                       spec_of(meta))


def test_concatenation_order_is_permuted_not_copied() -> None:
    """MMSA's first fusion layer reads [audio; video; text]; copied unpermuted, the outputs differ."""
    meta, arrays = load("lf_lstm", "mmsa")
    state = group(arrays, "state")
    model = converted("lf_lstm", "mmsa", meta, arrays).eval()
    with torch.no_grad():
        np.testing.assert_allclose(model(batch_of(meta, arrays)).prediction.numpy(), arrays["eval/output"],
                                   atol=meta["tolerance"], rtol=0)
        model.post_fusion[1].weight.copy_(state["post_fusion_layer_1.weight"])
        unpermuted = model(batch_of(meta, arrays)).prediction.numpy()
    assert np.abs(unpermuted - arrays["eval/output"]).max() > 1e-3


def test_converter_refuses_missing_unknown_and_misshapen_tensors() -> None:
    meta, arrays = load("lf_lstm", "mmsa")
    state, config, spec = group(arrays, "state"), our_config("lf_lstm", meta), spec_of(meta)
    for key in ("post_fusion_layer_2.bias", "text_subnet.linear_1.weight", "audio_subnet.linear_3.weight"):
        with pytest.raises(ConversionError, match=f"lacks '{key}'"):
            load_converted("lf_lstm", "mmsa", {k: v for k, v in state.items() if k != key}, config, spec)
    with pytest.raises(ConversionError, match=r"does not know: \['fusion_weights'\]"):
        load_converted("lf_lstm", "mmsa", {**state, "fusion_weights": torch.zeros(1, 3)}, config, spec)
    with pytest.raises(ConversionError, match=r"post_fusion_layer_1.weight has shape \(8, 11\)"):
        load_converted("lf_lstm", "mmsa", {**state, "post_fusion_layer_1.weight": torch.zeros(8, 11)}, config, spec)
    amio = {f"Model.{k}": v for k, v in state.items()}  # saved through MMSA's AMIO wrapper
    assert convert_lf_lstm.from_mmsa(amio, config).keys() == convert_lf_lstm.from_mmsa(state, config).keys()
