"""MMIM against numbers of the official code (tests/fixtures/parity/mmim, made by make_mmim.py).

The official weights (a tiny random BERT and the whole `MMIM`) go through our converter into our model, built with
our default config plus the fixture's sizes (every dropout 0 in train mode). Both optimisation stages are compared
on the official batches: the MMILB stage's likelihood and gradients on batch A, and the main stage over batches A, B,
C with its entropy memory (the H term enters the loss on C), every term and, on C, every gradient.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import affectfuse.convert.mmim  # noqa: F401 - registers the converter
from affectfuse.config import InputSpec
from affectfuse.convert import ConversionError, get_converter, load_converted
from affectfuse.data.batch import Batch
from affectfuse.models.mmim import MMIMConfig

from .official import FIXTURES, tiny_bert
from .test_emt_dlfr import unpack

HERE = FIXTURES / "mmim"
VARIANTS = ("official", "bidirectional_va")
CASES = [(v, mode) for v in VARIANTS for mode in ("eval", "train")]
TERMS = {"task": "y_loss", "nce": "nce", "lld": "lld", "entropy": "H", "nce_text": "nce_t", "nce_vision": "nce_v",
         "nce_audio": "nce_a"}


def load(variant: str) -> tuple[dict, dict[str, np.ndarray]]:
    meta = json.loads((HERE / f"{variant}.json").read_text())
    with np.load(HERE / f"{variant}.npz", allow_pickle=False) as z:
        return meta, dict(z)


def config_of(meta: dict, *, train: bool, bert_path: str = "") -> MMIMConfig:
    s = meta["sizes"]
    dropouts = dict(audio_dropout=0.0, vision_dropout=0.0, fusion_dropout=0.0) if train else {}
    return MMIMConfig(
        audio_hidden=s["d_ah"], vision_hidden=s["d_vh"], audio_out=s["d_aout"], vision_out=s["d_vout"],
        fusion_hidden=s["d_prjh"], rnn_layers=s["n_layer"], cpc_layers=s["cpc_layers"],
        bidirectional=s["bidirectional"], add_va=s["add_va"], bert_path=bert_path, **dropouts,
    )


def spec_of(arrays: dict[str, np.ndarray]) -> InputSpec:
    a, v = arrays["input/0/audio"].shape[1:], arrays["input/0/vision"].shape[1:]
    return InputSpec(dims={"text": 3, "audio": a[1], "vision": v[1]},
                     lengths={"text": arrays["input/0/ids"].shape[1], "audio": a[0], "vision": v[0]},
                     extractors={"text": "bert-tokens"})


def batch_of(arrays: dict[str, np.ndarray], i: int) -> Batch:
    x = {k.removeprefix(f"input/{i}/"): torch.from_numpy(v) for k, v in arrays.items() if k.startswith(f"input/{i}/")}
    text = torch.stack([x["ids"], x["attention"], x["segments"]], dim=-1).float()
    masks = {"text": x["attention"] > 0}
    for m in ("audio", "vision"):
        masks[m] = torch.arange(x[m].shape[1]) < x[f"{m}_lengths"][:, None]
    features = {"text": text, "audio": x["audio"], "vision": x["vision"]}
    return Batch(features=features, masks=masks, label=x["labels"], ids=[str(j) for j in range(len(text))])


@pytest.fixture(scope="module")
def bert_path(tmp_path_factory) -> str:
    return tiny_bert(tmp_path_factory, load("official")[0]["bert_config"])


def expected_grads(meta, arrays, key: str, config) -> dict[str, torch.Tensor]:
    """The official gradients under our names; zeros where the official parameter got none."""
    state = unpack(arrays["weights"], meta["index"]["weights"])
    grads = unpack(arrays[key], meta["index"][key])
    return get_converter("mmim", "official")({k: grads.get(k, torch.zeros_like(v)) for k, v in state.items()}, config)


def assert_grads(model, expected, tol) -> None:
    checked = 0
    for name, p in model.named_parameters():
        if p.grad is None:  # the MMILB stage's loss does not reach the fusion head and the CPC predictors
            assert not expected[name].any(), name
            continue
        torch.testing.assert_close(p.grad, expected[name], rtol=0, atol=tol, msg=name)
        checked += 1
    assert checked > 20


def test_default_config_is_the_official_one_but_sizes():
    meta, _ = load("official")
    c = MMIMConfig()
    assert (c.alpha, c.beta, c.memory_size) == (meta["alpha"], meta["beta"], meta["mem_size"])
    assert (c.audio_dropout, c.vision_dropout, c.fusion_dropout) == tuple(meta["dropouts"].values())
    assert [c.mmilb_activation, c.cpc_activation] == meta["activations"]
    assert not c.bidirectional and not c.add_va and c.rnn_layers == 1 and c.cpc_layers == 1


@pytest.mark.parametrize(("variant", "mode"), CASES)
def test_both_stages_match_the_official_code(variant, mode, bert_path):
    meta, arrays = load(variant)
    config = config_of(meta, train=mode == "train", bert_path=bert_path)
    state = unpack(arrays["weights"], meta["index"]["weights"])
    model = load_converted("mmim", "official", state, config, spec_of(arrays)).train(mode == "train")
    tol = meta["tolerance"]
    batches = [batch_of(arrays, i) for i in range(3)]

    # Stage 1 (MMILB): -lld on batch A.
    model.zero_grad(set_to_none=True)
    mmilb = model.stages()[0]
    losses = mmilb.loss(batches[0])
    assert losses.terms["lld"].item() == pytest.approx(float(arrays[f"{mode}/stage0/lld"]), abs=tol)
    torch.testing.assert_close(losses.prediction, torch.from_numpy(arrays[f"{mode}/stage0/prediction"]), rtol=0,
                               atol=tol)
    losses.total.backward()
    assert_grads(model, expected_grads(meta, arrays, f"{mode}/grads0", config), tol)

    # Stage 2 (main) over A, B, C: the memory of the previous batch, H in the loss from C on.
    model.stages()[1].start()
    for i, batch in enumerate(batches):
        model.zero_grad(set_to_none=True)
        losses = model.loss(batch)
        official = {k.removeprefix(f"{mode}/stage1/{i}/"): torch.from_numpy(v) for k, v in arrays.items()
                    if k.startswith(f"{mode}/stage1/{i}/")}
        torch.testing.assert_close(losses.prediction, official["prediction"], rtol=0, atol=tol)
        for ours, theirs in TERMS.items():
            assert losses.terms[ours].item() == pytest.approx(float(official[theirs]), abs=tol), (i, ours)
        assert losses.total.item() == pytest.approx(float(official["loss"]), abs=tol), i
    assert float(official["H"]) != 0 and losses.terms["entropy"].item() != 0
    losses.total.backward()
    assert_grads(model, expected_grads(meta, arrays, f"{mode}/grads1", config), tol)


def test_stages_step_the_parameters_of_the_official_optimisers(bert_path):
    """The official MMILB optimiser holds the parameters whose name contains 'mi' (BERT's aside), the main one all
    others; our stages select the same tensors."""
    meta, arrays = load("bidirectional_va")
    state = unpack(arrays["weights"], meta["index"]["weights"])
    model = load_converted("mmim", "official", state, config_of(meta, train=False, bert_path=bert_path),
                           spec_of(arrays))
    flags = {k: torch.full_like(v, float("mi" in k and "bert" not in k)) for k, v in state.items()}
    mapped = get_converter("mmim", "official")(flags, model.config)
    mmilb, main = model.stages()
    for name, _ in model.named_parameters():
        official = bool(mapped[name].flatten()[0])
        assert mmilb.params(name) == official and main.params(name) != official, name
    assert sum(mmilb.params(n) for n, _ in model.named_parameters()) == 3 * 8  # 3 pairs x (mu, logvar) x 2 Linears


def test_converter_refuses_missing_unexpected_and_reshaped_weights():
    meta, arrays = load("official")
    state = unpack(arrays["weights"], meta["index"]["weights"])
    config = config_of(meta, train=False)
    convert = get_converter("mmim", "official")
    assert len(convert(state, config)) > 30
    cases = {
        "missing": ({k: v for k, v in state.items() if k != "fusion_prj.linear_2.bias"}, "linear_2.bias"),
        "unexpected": (state | {"mi_va.mlp_mu.0.weight": torch.zeros(8, 8)}, "mi_va.mlp_mu.0.weight"),
        "reshaped": (state | {"cpc_za.net.weight": torch.zeros(3, 10)}, "aux.cpc.audio.net.weight"),
    }
    for case, (broken, named) in cases.items():
        with pytest.raises(ConversionError, match=named.replace(".", r"\.")) as error:
            convert(broken, config)
        assert "\n" not in str(error.value), case
    with pytest.raises(ConversionError, match="bidirectional=True"):
        convert(state, dataclasses.replace(config, bidirectional=True))
