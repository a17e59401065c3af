"""TFN against the official code (Justin1904/TensorFusionNetworks) and MMSA's TFN: their weights through our
converters (affectfuse/convert/tfn.py) into our model built with our defaults plus the fixture's sizes, then the
output, the loss and every gradient within 1e-5, in eval mode and in training mode with every dropout at 0.

Fixtures: tests/fixtures/parity/tfn/, made by tests/fixtures/parity/make_tfn.py from the official code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import affectfuse.convert.tfn as convert_tfn
from affectfuse.config import InputSpec
from affectfuse.convert import ConversionError, get_converter, load_converted
from affectfuse.models.tfn import TFNConfig

from .lmf_tfn import (
    assert_within_tolerance,
    batch_of,
    cases,
    check_case,
    check_padding_deviation,
    converted,
    differences,
    group,
    load,
    our_config,
    source_of,
    spec_of,
)

CASES = cases("tfn")


def test_every_case_is_there() -> None:
    assert {"official", "official_padded", "mmsa", "mmsa_classification"} <= set(CASES)


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("case", CASES)
def test_output_loss_and_gradients_equal_the_fixture(case: str, mode: str) -> None:
    check_case("tfn", case, mode)


def test_defaults_ignore_padding_where_the_official_code_does_not() -> None:
    check_padding_deviation("tfn")


def test_summed_loss_option_is_the_official_loss() -> None:
    meta, arrays = load("tfn", "official")
    model = converted("tfn", "official", meta, arrays, loss_reduction="sum")
    assert_within_tolerance(differences("tfn", "official", model, "train", meta, arrays), meta, "sum")  # unscaled


def test_defaults_are_the_official_training_script_s() -> None:
    config = TFNConfig()
    assert (config.hidden.audio, config.hidden.vision, config.hidden.text) == (4, 16, 128)
    assert (config.text_out, config.post_fusion_dim) == (64, 32)
    assert {config.dropout.text, config.dropout.audio, config.dropout.vision, config.post_fusion_dropout} == {0.3}
    assert config.mask_padding and config.loss_reduction == "mean"


def test_both_sources_are_registered_to_this_module() -> None:
    assert get_converter("tfn", "official") is convert_tfn.from_official
    assert get_converter("tfn", "mmsa") is convert_tfn.from_mmsa


def test_outer_product_order_is_permuted_not_copied() -> None:
    """The official first inference layer reads audio ⊗ video ⊗ text; copied unpermuted, the outputs differ."""
    meta, arrays = load("tfn", "official")
    state = group(arrays, "state")
    ours = convert_tfn.from_official(state, our_config("tfn", meta))
    assert not torch.equal(ours["inference.1.weight"], state["post_fusion_layer_1.weight"])
    model = converted("tfn", "official", meta, arrays).eval()
    with torch.no_grad():
        model.inference[1].weight.copy_(state["post_fusion_layer_1.weight"])
        unpermuted = model(batch_of(meta, arrays)).prediction.numpy()
    assert np.abs(unpermuted - arrays["eval/output"]).max() > 1e-3


def test_output_constants_travel_with_the_weights() -> None:
    """MMSA bounds every regression corpus to [-3, 3] (SIMS too): a converted SIMS model keeps the checkpoint's
    bounds. MMSA's classification heads apply no sigmoid: their unused constants are dropped."""
    meta, arrays = load("tfn", "mmsa")
    sims = InputSpec(dims=meta["dims"], lengths=meta["lengths"], metric_family="sims")
    model = load_converted("tfn", "mmsa", group(arrays, "state"), our_config("tfn", meta), sims).eval()
    assert (model.output.scale.item(), model.output.shift.item()) == (6.0, -3.0)
    with torch.no_grad():
        np.testing.assert_allclose(model(batch_of(meta, arrays)).prediction.numpy(), arrays["eval/output"],
                                   atol=meta["tolerance"], rtol=0)
    meta, arrays = load("tfn", "mmsa_classification")
    assert "state/output_range" in arrays
    assert not any(k.startswith("output.") for k in convert_tfn.from_mmsa(group(arrays, "state"), None))


@pytest.mark.parametrize("case", ["official", "mmsa"])
def test_converter_refuses_missing_unknown_and_misshapen_tensors(case: str) -> None:
    meta, arrays = load("tfn", case)
    state, config, spec = group(arrays, "state"), our_config("tfn", meta), spec_of(meta)
    source = source_of(case)
    for key in ("post_fusion_layer_2.bias", "text_subnet.linear_1.weight", "audio_subnet.linear_3.weight"):
        with pytest.raises(ConversionError, match=f"lacks '{key}'") as error:
            load_converted("tfn", source, {k: v for k, v in state.items() if k != key}, config, spec)
        assert "\n" not in str(error.value)
    with pytest.raises(ConversionError, match="missing .*norm.running_var"):
        load_converted("tfn", source, {k: v for k, v in state.items() if k != "video_subnet.norm.running_var"},
                       config, spec)
    with pytest.raises(ConversionError, match=r"does not know: \['fusion_weights'\]"):
        load_converted("tfn", source, {**state, "fusion_weights": torch.zeros(1, 3)}, config, spec)
    with pytest.raises(ConversionError, match=r"post_fusion_layer_1.weight has shape \(8, 119\)"):
        load_converted("tfn", source, {**state, "post_fusion_layer_1.weight": torch.zeros(8, 119)}, config, spec)
    with pytest.raises(ConversionError, match=r"inference.3.weight \(8, 9\) \(expected \(8, 8\)\)"):
        load_converted("tfn", source, {**state, "post_fusion_layer_2.weight": torch.zeros(8, 9)}, config, spec)
