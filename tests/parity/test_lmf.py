"""LMF against the official code (Justin1904/Low-rank-Multimodal-Fusion) and MMSA's LMF: their weights through our
converters (affectfuse/convert/lmf.py) into our model built with our defaults plus the fixture's sizes, then the
output, the loss and every gradient within 1e-5, in eval mode and in training mode with every dropout at 0.

Fixtures: tests/fixtures/parity/lmf/, made by tests/fixtures/parity/make_lmf.py from the official code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import affectfuse.convert.lmf as convert_lmf
from affectfuse import load_model
from affectfuse.cli import main
from affectfuse.convert import ConversionError, get_converter, load_converted
from affectfuse.models.lmf import LMFConfig

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

CASES = cases("lmf")


def test_every_case_is_there() -> None:
    assert {"official", "official_softmax", "official_padded", "mmsa", "mmsa_classification"} <= set(CASES)


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("case", CASES)
def test_output_loss_and_gradients_equal_the_fixture(case: str, mode: str) -> None:
    check_case("lmf", case, mode)


def test_defaults_ignore_padding_where_the_official_code_does_not() -> None:
    check_padding_deviation("lmf")


def test_summed_loss_option_is_the_official_loss() -> None:
    meta, arrays = load("lmf", "official")
    summed = converted("lmf", "official", meta, arrays, loss_reduction="sum").eval()
    mean = converted("lmf", "official", meta, arrays).eval()
    ratio = summed.loss(batch_of(meta, arrays)).total / mean.loss(batch_of(meta, arrays)).total
    assert ratio.item() == pytest.approx(meta["batch"])
    model = converted("lmf", "official", meta, arrays, loss_reduction="sum")
    assert_within_tolerance(differences("lmf", "official", model, "train", meta, arrays), meta, "sum")  # unscaled


def test_softmax_option_is_off_by_default_as_in_the_official_code() -> None:
    meta, arrays = load("lmf", "official_softmax")
    assert LMFConfig().use_softmax is False
    model = converted("lmf", "official_softmax", meta, arrays, use_softmax=False).eval()
    with torch.no_grad():
        logits = model(batch_of(meta, arrays)).prediction
    # without the option the same weights give logits whose softmax is the official output
    np.testing.assert_allclose(logits.softmax(-1).reshape(meta["batch"], -1).numpy(), arrays["eval/output"],
                               atol=1e-5, rtol=0)
    assert np.abs(logits.reshape(meta["batch"], -1).numpy() - arrays["eval/output"]).max() > 0.1


def test_both_sources_are_registered_to_this_module() -> None:
    assert get_converter("lmf", "official") is convert_lmf.from_official
    assert get_converter("lmf", "mmsa") is convert_lmf.from_mmsa


@pytest.mark.parametrize("case", ["official", "mmsa"])
def test_converter_refuses_missing_unknown_and_misshapen_tensors(case: str) -> None:
    meta, arrays = load("lmf", case)
    state, config, spec = group(arrays, "state"), our_config("lmf", meta), spec_of(meta)
    source = source_of(case)
    for key in ("text_factor", "video_subnet.linear_2.weight", "text_subnet.rnn.weight_hh_l0"):
        with pytest.raises(ConversionError, match=f"lacks '{key}'|missing .*{key.split('.')[-1]}") as error:
            load_converted("lmf", source, {k: v for k, v in state.items() if k != key}, config, spec)
        assert "\n" not in str(error.value)
    with pytest.raises(ConversionError, match=r"does not know: \['post_fusion_layer_1.weight'\]"):
        load_converted("lmf", source, {**state, "post_fusion_layer_1.weight": torch.zeros(2, 2)}, config, spec)
    with pytest.raises(ConversionError, match=r"factors.audio \(3, 6, 1\) \(expected \(3, 5, 1\)\)"):
        load_converted("lmf", source, {**state, "audio_factor": torch.zeros(3, 6, 1)}, config, spec)
    with pytest.raises(ConversionError, match="other shapes"):  # a rank the config does not have
        load_converted("lmf", source, state, our_config("lmf", meta, rank=4), spec)


def test_convert_command_writes_a_checkpoint_that_predicts_like_the_official_model(tmp_path: Path, capsys) -> None:
    meta, arrays = load("lmf", "official")
    official = tmp_path / "official_lmf.pt"
    torch.save(group(arrays, "state"), official)
    data = "synthetic:dims.text=7,dims.audio=5,dims.vision=6,n_train=8,n_valid=4,n_test=4"
    sets = ["--set", "hidden.text=6", "--set", "hidden.audio=4", "--set", "hidden.vision=5", "--set", "text_out=3",
            "--set", "rank=3"]
    out = tmp_path / "lmf.pt"
    assert main(["convert", str(official), "-m", "lmf", "--data", data, "--out", str(out), *sets]) == 0
    loaded = load_model(out)
    with torch.no_grad():
        # the synthetic corpus's lengths differ, but LMF averages audio/vision and packs text: same predictions
        prediction = loaded(batch_of(meta, arrays)).prediction.numpy()
    np.testing.assert_allclose(prediction, arrays["eval/output"], atol=meta["tolerance"], rtol=0)
    assert main(["convert", str(official), "-m", "lmf", "--data", data, "--out", str(out), *sets]) == 1  # exists
    torch.save({k: v for k, v in group(arrays, "state").items() if k != "fusion_bias"}, tmp_path / "broken.pt")
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "broken.pt"), "-m", "lmf", "--data", data, "--out",
                 str(tmp_path / "b.pt"), *sets]) == 1
    assert "lacks 'fusion_bias'" in capsys.readouterr().err
