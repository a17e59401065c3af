"""SFT against numbers produced by the official code (tests/fixtures/parity/make_sft.py; its sparse-pooling attention
runs fairseq's dense path through a stand-in, see there): the official weights, through our converter, into our SFT
built with our defaults plus only the sizes the fixture records give the official logits (eval mode; train mode with
every dropout 0), loss and gradients within 1e-5. The padded case also needs `mask_padding=False`, the option that
restores the official (mask-free) handling of padding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import affectfuse.convert.sft as convert_sft
from affectfuse.config import InputSpec, Modalities
from affectfuse.config.registry import create_model
from affectfuse.convert import ConversionError, load_converted
from affectfuse.data.batch import Batch
from affectfuse.models.sft import SFT, LatentMixup

ROOT = Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "sft"
CASES = sorted(p.stem for p in ROOT.glob("*.json"))
NAME = convert_sft.MODALITY  # official rgb/spec/text -> our vision/audio/text
OPTIONS = {"padded": {"mask_padding": False}}  # beyond the sizes: the options that restore the official setting
TOL = 1e-5


def load(case: str) -> tuple[dict, dict[str, np.ndarray]]:
    meta = json.loads((ROOT / f"{case}.json").read_text())
    with np.load(ROOT / f"{case}.npz", allow_pickle=False) as data:
        return meta, dict(data)


def prefixed(data: dict[str, np.ndarray], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): torch.from_numpy(v) for k, v in data.items() if k.startswith(prefix)}


def spec_of(meta: dict) -> InputSpec:
    return InputSpec(dims={NAME[m]: d for m, d in meta["dims"].items()},
                     lengths={NAME[m]: t for m, t in meta["lengths"].items()},
                     task="classification", num_classes=meta["classes"], metric_family="iemocap")


def build(case: str, **options) -> tuple[SFT, dict, dict[str, np.ndarray]]:
    """Our default SFT with the fixture's sizes (plus `options`), holding the converted official weights."""
    meta, data = load(case)
    official = meta["official_settings"]
    spec = spec_of(meta)
    config = create_model(
        "sft", spec, dim=official["embed_dim"], heads=official["n_heads"],
        n_layers_pre_fusion=official["n_layers_pre_fusion"], n_layers_post_fusion=official["n_layers_post_fusion"],
        pool_kernel=Modalities(**{NAME[m]: k for m, k in meta["kernels"].items()}),
        **{**OPTIONS.get(case, {}), **options},
    ).config
    return load_converted("sft", "official", prefixed(data, "state/"), config, spec), meta, data


def batch_of(meta: dict, data: dict[str, np.ndarray]) -> Batch:
    return Batch(features={NAME[m]: torch.from_numpy(data[f"input/{m}"]) for m in NAME},
                 masks={NAME[m]: torch.from_numpy(data[f"mask/{m}"]) for m in NAME},
                 label=torch.from_numpy(data["label"]).long()[:, None], ids=[str(i) for i in range(meta["batch"])])


def mixup_of(model: SFT, meta: dict, data: dict[str, np.ndarray]) -> LatentMixup:
    """The official draw (λ in rgb/spec/text order) in ours (λ in spec.modalities order)."""
    official = {NAME[m]: i for i, m in enumerate(meta["official_order"])}
    lam = torch.from_numpy(data["mixup/lam"])[[official[m] for m in model.modalities]]
    return LatentMixup(layer=meta["official_settings"]["mixup_layer"], lam=lam,
                       index=torch.from_numpy(data["mixup/index"]).long())


def run(model: SFT, meta: dict, data: dict[str, np.ndarray]) -> dict[str, float]:
    """Max abs differences to the official numbers: eval logits; train logits, loss and gradients."""
    b, batch = meta["batch"], batch_of(meta, data)
    model.eval()
    with torch.no_grad():
        logits = model(batch).prediction.reshape(b, -1)
    model.train()
    model.zero_grad()
    losses = model.loss(batch) if "mixup/lam" not in data else model.mixup_loss(batch, mixup_of(model, meta, data))
    losses.total.backward()
    expected = convert_sft.sft_from_official(prefixed(data, "grad/"), model.config)
    ours = dict(model.named_parameters())
    assert set(expected) == set(ours), "every parameter of ours has an official gradient and no other"
    torch.testing.assert_close(losses.terms["task"], losses.total.detach())
    return {
        "eval/output": float(np.abs(logits.numpy() - data["eval/output"]).max()),
        "train/output": float(np.abs(losses.prediction.reshape(b, -1).numpy() - data["train/output"]).max()),
        "train/loss": abs(losses.total.item() - float(data["train/loss"])),
        "grad": max(float((ours[k].grad - g).abs().max()) for k, g in expected.items()),
    }


@pytest.mark.parametrize("case", CASES)
def test_outputs_loss_and_gradients_equal_the_official_code(case: str) -> None:
    model, meta, data = build(case)
    diffs = run(model, meta, data)
    assert max(diffs.values()) <= meta["tolerance"] == TOL, diffs


def test_every_case_is_there() -> None:
    assert CASES == ["divisible", "floor", "mixup_post", "mixup_pre", "padded"]


def test_ceil_windows_differ_from_the_official_floor_only_when_steps_are_left_over() -> None:
    assert max(run(build("divisible", pool_windows="ceil")[0], *load("divisible")).values()) <= TOL
    diffs = run(build("floor", pool_windows="ceil")[0], *load("floor"))
    assert diffs["eval/output"] > 1e-3 and diffs["grad"] > 1e-3  # the left-over steps now count


def test_mean_fused_lambda_differs_from_the_official_only_when_mixing_after_fusion() -> None:
    assert max(run(build("mixup_pre", mixup_fused_lambda="mean")[0], *load("mixup_pre")).values()) <= TOL
    diffs = run(build("mixup_post", mixup_fused_lambda="mean")[0], *load("mixup_post"))
    assert diffs["eval/output"] <= TOL and diffs["train/output"] > 1e-3


def test_masked_padding_keeps_unpadded_samples_official_and_moves_padded_ones() -> None:
    model, meta, data = build("padded", mask_padding=True)
    batch = batch_of(meta, data)
    with torch.no_grad():
        logits = model.eval()(batch).prediction.reshape(meta["batch"], -1).numpy()
    full = np.all([m.all(1).numpy() for m in batch.masks.values()], axis=0)
    assert full.tolist() == [True, False, False, False]
    diff = np.abs(logits - data["eval/output"]).max(1)
    assert diff[full].max() <= TOL and diff[~full].min() > 1e-3


def test_converter_refuses_a_missing_an_unknown_key_and_a_changed_shape() -> None:
    model, meta, data = build("divisible")
    state, spec = prefixed(data, "state/"), spec_of(meta)
    missing = {k: v for k, v in state.items() if k != "network.sparse_attn.1.k_proj.weight"}
    with pytest.raises(ConversionError, match=r"lacks 'network.sparse_attn.1.k_proj.weight'") as error:
        load_converted("sft", "official", missing, model.config, spec)
    assert "\n" not in str(error.value)
    with pytest.raises(ConversionError, match=r"does not know.*network.attns_fused.9.in_proj_weight"):
        load_converted("sft", "official", {**state, "network.attns_fused.9.in_proj_weight": torch.zeros(24, 8)},
                       model.config, spec)
    wrong = {**state, "spec_tokenizer.proj.weight": torch.zeros(8, 4)}  # audio is 3 wide
    with pytest.raises(ConversionError, match=r"tokenizers.audio.proj.weight \(8, 4\) \(expected \(8, 3\)\)") as error:
        load_converted("sft", "official", wrong, model.config, spec)
    assert "\n" not in str(error.value)
