"""LMF and TFN against numbers produced by the official code (tests/fixtures/parity/make_lmf_tfn.py): the official
weights, converted by `affectfuse convert`'s converters, give the same outputs, loss and gradients in our models
built with our defaults (only sizes and dropouts set to the fixture's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from affectfuse import create_model, load_model
from affectfuse.cli import main
from affectfuse.config import InputSpec, Modalities
from affectfuse.convert import ConversionError, load_converted
from affectfuse.data.batch import Batch

from .official import TOL, assert_matches_official, group, load_fixture


def _setup(name: str, source: str = "official"):
    arrays, meta = load_fixture(name if source == "official" else f"{name}_{source}")
    cfg = meta["config"]
    spec = InputSpec(dims={"text": cfg["dims"]["text"], "audio": cfg["dims"]["audio"], "vision": cfg["dims"]["video"]},
                     lengths={"text": meta["text_length"], "audio": 1, "vision": 1})
    sizes = {"hidden": Modalities(text=cfg["hidden"]["text"], audio=cfg["hidden"]["audio"],
                                  vision=cfg["hidden"]["video"]),
             "text_out": cfg["text_out"], "dropout": Modalities(text=0.0, audio=0.0, vision=0.0)}
    if name == "lmf":
        overrides = {**sizes, "rank": cfg["rank"]}
    else:
        overrides = {**sizes, "post_fusion_dim": cfg["post_fusion_dim"], "post_fusion_dropout": 0.0}
    config = create_model(name, spec, **overrides).config
    model = load_converted(name, source, group(arrays, "state"), config, spec)
    b = meta["batch"]
    batch = Batch(
        features={"text": torch.from_numpy(arrays["input/text"]),
                  "audio": torch.from_numpy(arrays["input/audio"])[:, None],
                  "vision": torch.from_numpy(arrays["input/video"])[:, None]},
        masks={"text": torch.ones(b, meta["text_length"], dtype=torch.bool),
               "audio": torch.ones(b, 1, dtype=torch.bool), "vision": torch.ones(b, 1, dtype=torch.bool)},
        label=torch.from_numpy(arrays["label"]), ids=[str(i) for i in range(b)],
    )
    return model, batch, arrays, spec, config, meta


@pytest.mark.parametrize("source", ["official", "mmsa"])
@pytest.mark.parametrize("name", ["lmf", "tfn"])
def test_outputs_loss_and_gradients_equal_the_official_code(name: str, source: str) -> None:
    model, batch, arrays, _, config, meta = _setup(name, source)
    # ours averages the L1 over the batch; the official scripts sum it (documented in the model files), MMSA averages
    assert_matches_official(model, batch, arrays, config, loss_scale=meta.get("loss_scale", len(batch.ids)),
                            source=source)


@pytest.mark.parametrize("name", ["lmf", "tfn"])
def test_converter_refuses_missing_extra_and_misshapen_tensors(name: str) -> None:
    _, _, arrays, spec, config, _ = _setup(name)
    state = group(arrays, "state")
    first = next(k for k in state if k.startswith("audio_subnet.linear_1"))
    with pytest.raises(ConversionError, match="lacks|missing"):
        load_converted(name, "official", {k: v for k, v in state.items() if k != "audio_subnet.linear_3.weight"},
                       config, spec)
    with pytest.raises(ConversionError, match="does not know"):
        load_converted(name, "official", {**state, "surprise.weight": torch.zeros(1)}, config, spec)
    with pytest.raises(ConversionError, match="other shapes"):
        load_converted(name, "official", {**state, first: torch.zeros(3, 3)}, config, spec)


def test_convert_command_writes_a_checkpoint_that_predicts_like_the_official_model(tmp_path: Path, capsys) -> None:
    model, batch, arrays, _, _, _ = _setup("lmf")
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
        np.testing.assert_allclose(loaded(batch).prediction.numpy(), arrays["eval/output"], atol=TOL, rtol=0)
    assert main(["convert", str(official), "-m", "lmf", "--data", data, "--out", str(out), *sets]) == 1  # exists
    state = {k: v for k, v in group(arrays, "state").items() if k != "fusion_bias"}
    torch.save(state, tmp_path / "broken.pt")
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "broken.pt"), "-m", "lmf", "--data", data, "--out",
                 str(tmp_path / "b.pt"), *sets]) == 1
    assert "lacks 'fusion_bias'" in capsys.readouterr().err
