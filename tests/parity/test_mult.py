"""MulT against the official MULTModel and MMSA's MULT: their weights through our converters into our model, then
outputs, the loss and every gradient within the fixtures' tolerances (eval, and training with every dropout at 0).

Fixtures: tests/fixtures/parity/mult{,_mmsa}/, made by tests/fixtures/parity/make_mult.py from the official code.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import affectfuse.convert.mult as convert_mult
from affectfuse.config import InputSpec, Modalities
from affectfuse.config.registry import create_model
from affectfuse.convert import ConversionError, load_converted
from affectfuse.data.batch import Batch
from affectfuse.models.mult import MulTConfig

ROOT = Path(__file__).resolve().parents[1] / "fixtures" / "parity"
CASES = sorted(ROOT.glob("mult/*.json")) + sorted(ROOT.glob("mult_mmsa/*.json"))
CONVERTERS = {"mult": convert_mult.from_official, "mult_mmsa": convert_mult.from_mmsa}
NO_DROPOUT = dict(
    text_dropout=0.0,
    embed_dropout=0.0,
    attn_dropout=Modalities(text=0.0, audio=0.0, vision=0.0),
    self_attn_dropout=0.0,
    relu_dropout=0.0,
    res_dropout=0.0,
    out_dropout=0.0,
)


def load(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    meta = json.loads(path.read_text())
    with np.load(path.with_suffix(".npz"), allow_pickle=False) as data:
        return meta, dict(data)


def our_config(meta: dict, **extra) -> MulTConfig:
    """Our defaults plus only what the fixture records (sizes and the settings matching the official run)."""
    fields = dict(meta["our_config"])
    if "kernel" in fields:
        fields["kernel"] = Modalities(**fields["kernel"])
    if "only" in fields:
        fields["only"] = tuple(fields["only"])
    return MulTConfig(**{**fields, **extra})


def spec_of(meta: dict) -> InputSpec:
    classes = meta["num_classes"]
    return InputSpec(
        dims=meta["dims"],
        lengths=meta["lengths"],
        task=meta["task"],
        targets=tuple(meta["targets"]),
        num_classes=classes,
        metric_family="iemocap" if classes else "mosi",
    )


def batch_of(meta: dict, data: dict[str, np.ndarray]) -> Batch:
    features = {m: torch.from_numpy(data[f"x/{m}"]) for m in meta["dims"]}
    return Batch(
        features=features,
        masks={m: torch.ones(x.shape[:2], dtype=torch.bool) for m, x in features.items()},  # no padding
        label=torch.from_numpy(data["label"]),
        ids=[str(i) for i in range(meta["batch"])],
    )


def prefixed(data: dict[str, np.ndarray], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): torch.from_numpy(v) for k, v in data.items() if k.startswith(prefix)}


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().double() - b.double()).abs().max().item()


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_matches_the_official_implementation(path: Path, mode: str) -> None:
    torch.set_num_threads(1)
    meta, data = load(path)
    tolerance = meta["tolerance"]
    converter = CONVERTERS[path.parent.name]
    config = our_config(meta, **(NO_DROPOUT if mode == "train" else {}))
    model = create_model("mult", spec_of(meta), config)
    model.load_state_dict(converter(prefixed(data, "w/"), config), strict=True)
    model.train(mode == "train")

    losses = model.loss(batch_of(meta, data))
    losses.total.backward()
    output = torch.from_numpy(data[f"{mode}/output"]).reshape(losses.prediction.shape)
    assert max_diff(losses.prediction, output) < tolerance["output"]
    assert set(losses.terms) == {"task"}
    assert max_diff(losses.terms["task"], torch.from_numpy(data[f"{mode}/loss/task"])) < tolerance["loss"]

    expected = converter(prefixed(data, "grad/"), config)  # gradients map like the weights they belong to
    ours = {k: p.grad for k, p in model.named_parameters() if p.requires_grad}
    assert set(expected) == set(ours)
    worst = max(max_diff(ours[k], g) for k, g in expected.items())
    assert worst < tolerance["grad"], worst


def official_case() -> tuple[dict, dict[str, torch.Tensor], MulTConfig]:
    meta, data = load(ROOT / "mult" / "unaligned.json")
    return meta, prefixed(data, "w/"), our_config(meta)


def test_converter_refuses_a_missing_tensor() -> None:
    _, state, config = official_case()
    del state["trans_a_with_v.layers.1.fc1.weight"]
    with pytest.raises(ConversionError, match=r"missing \['trans_a_with_v.layers.1.fc1.weight'\]"):
        convert_mult.from_official(state, config)


def test_converter_refuses_an_unexpected_tensor() -> None:
    _, state, config = official_case()
    state["trans_a_with_v.layers.2.fc1.weight"] = torch.zeros(16, 4)  # a third layer: another depth
    with pytest.raises(ConversionError, match=r"unexpected \['trans_a_with_v.layers.2.fc1.weight'\]"):
        convert_mult.from_official(state, config)


def test_converter_refuses_a_changed_shape() -> None:
    _, state, config = official_case()
    state["trans_l_mem.layers.0.fc2.weight"] = torch.zeros(8, 16)
    with pytest.raises(ConversionError, match=r"trans_l_mem.layers.0.fc2.weight \(8, 16\) \(expected \(8, 32\)\)"):
        convert_mult.from_official(state, config)
    _, state, _ = official_case()
    with pytest.raises(ConversionError, match="proj_a.weight"):
        convert_mult.from_official(state, dataclasses.replace(config, kernel=Modalities(text=1, audio=3, vision=1)))


def test_converter_refuses_the_wrong_position_setting() -> None:
    _, state, config = official_case()
    with pytest.raises(ConversionError, match="positions=True"):
        convert_mult.from_official(state, dataclasses.replace(config, positions=False))
    with pytest.raises(ConversionError, match="positions=False"):
        convert_mult.from_mmsa(state, config)


def test_converter_drops_the_unused_transformers_of_a_partial_mode() -> None:
    meta, data = load(ROOT / "mult" / "unaligned_lonly.json")
    state = prefixed(data, "w/")
    assert any(k.startswith("trans_a_mem.") for k in state)  # the official model builds it, never uses it
    converted = convert_mult.from_official(state, our_config(meta))
    assert not any(k.startswith("self_attention.audio") for k in converted)
    full = our_config(meta, only=())  # the same weights cannot fill all three targets
    with pytest.raises(ConversionError, match="missing"):
        convert_mult.from_official(state, full)


def test_converter_maps_an_unprojected_modality_to_the_identity() -> None:
    _, state, config = official_case()
    state["proj_a.weight"] = torch.randn(4, 4, 1)  # input width d: the official model skips the projection
    weight = convert_mult.from_official(state, config)["conv.audio.conv.weight"]
    torch.testing.assert_close(weight[:, :, 0], torch.eye(4))


@pytest.mark.parametrize("source", ["official", "mmsa"])
def test_the_registry_serves_both_sources(source: str) -> None:
    folder = {"official": "mult", "mmsa": "mult_mmsa"}[source]
    path = sorted((ROOT / folder).glob("*.json"))[-1]
    meta, data = load(path)
    model = load_converted("mult", source, prefixed(data, "w/"), our_config(meta), spec_of(meta))
    with torch.no_grad():
        prediction = model(batch_of(meta, data)).prediction
    assert max_diff(prediction, torch.from_numpy(data["eval/output"]).reshape(prediction.shape)) < 1e-5
