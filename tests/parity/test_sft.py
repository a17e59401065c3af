"""SFT against numbers produced by the official code (tests/fixtures/parity/make_sft.py; its sparse-pooling attention
is a dense stand-in under fairseq's names, see there): official weights, converted, give the official logits,
cross-entropy and gradients in our SFT built with our defaults (sizes, kernels and, for the "floor" case, the
official pooling windows set as in the fixture)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affectfuse import create_model
from affectfuse.config import InputSpec, Modalities
from affectfuse.convert import ConversionError, load_converted
from affectfuse.data.batch import Batch

from .official import assert_matches_official, group, load_fixture

NAME = {"rgb": "vision", "spec": "audio", "text": "text"}


def _setup(case: str):
    arrays, meta = load_fixture(f"sft_{case}")
    spec = InputSpec(dims={NAME[m]: d for m, d in meta["dims"].items()},
                     lengths={NAME[m]: t for m, t in meta["lengths"].items()},
                     task="classification", num_classes=meta["classes"], metric_family="iemocap")
    kernels = {NAME[m]: k for m, k in meta["kernels"].items()}
    config = create_model("sft", spec, dim=meta["dim"], heads=meta["heads"],
                          n_layers_pre_fusion=meta["n_layers_pre_fusion"],
                          n_layers_post_fusion=meta["n_layers_post_fusion"], pool_kernel=Modalities(**kernels),
                          pool_windows="floor" if case == "floor" else "ceil").config
    state = group(arrays, "state")
    model = load_converted("sft", "official", state, config, spec)
    b = meta["batch"]
    batch = Batch(features={NAME[m]: torch.from_numpy(arrays[f"input/{m}"]) for m in NAME},
                  masks={NAME[m]: torch.ones(b, t, dtype=torch.bool) for m, t in meta["lengths"].items()},
                  label=torch.from_numpy(arrays["label"]).long()[:, None], ids=[str(i) for i in range(b)])
    return model, batch, arrays, config, spec, state


@pytest.mark.parametrize("case", ["divisible", "floor"])
def test_outputs_loss_and_gradients_equal_the_official_code(case: str) -> None:
    model, batch, arrays, config, _, _ = _setup(case)
    assert_matches_official(model, batch, arrays, config)


def test_ceil_windows_differ_from_the_official_floor_only_when_steps_are_left_over() -> None:
    model, batch, arrays, config, spec, state = _setup("floor")
    ceil = load_converted("sft", "official", state, create_model("sft", spec, config, pool_windows="ceil").config,
                          spec).eval()
    with torch.no_grad():
        different = ceil(batch).prediction.reshape(len(batch.ids), -1).numpy()
    assert np.abs(different - arrays["eval/output"]).max() > 1e-4  # the left-over steps now count


def test_converter_refuses_what_does_not_fit() -> None:
    _, _, _, config, spec, state = _setup("divisible")
    with pytest.raises(ConversionError, match="lacks"):
        load_converted("sft", "official", {k: v for k, v in state.items() if "classifier.1" not in k}, config, spec)
    with pytest.raises(ConversionError, match="does not know"):
        load_converted("sft", "official", {**state, "network.attns_fused.9.in_proj_weight": torch.zeros(3, 1)},
                       config, spec)
