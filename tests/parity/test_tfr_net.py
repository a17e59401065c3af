"""TFR-Net against numbers of the official code (tests/fixtures/parity/tfr_net, made by make_tfr_net.py).

The official weights (a tiny random BERT and the whole `AMIO(TFR_NET)`) go through our converter into our model,
built with our default config plus the fixture's sizes, `final_axis="batch"` (the official reading) and every dropout
0 in train mode. On the official batch with the official static missing masks, our prediction, every loss term and
every gradient must match the official ones, in eval and in train mode.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import affectfuse.convert.tfr_net  # noqa: F401 - registers the converter
from affectfuse.config import InputSpec, Modalities
from affectfuse.convert import ConversionError, get_converter, load_converted
from affectfuse.data.batch import Batch
from affectfuse.models.tfr_net import TFRNetConfig
from affectfuse.robustness.missing import apply_kept

from .official import FIXTURES, tiny_bert
from .test_emt_dlfr import unpack

HERE = FIXTURES / "tfr_net"
MODALITIES = ("text", "audio", "vision")
TERMS = {"task": "pred_loss", "reconstruction": "gen_loss", "reconstruction_text": "rec_text",
         "reconstruction_audio": "rec_audio", "reconstruction_vision": "rec_vision"}
DROPOUTS = dict(text_dropout=0.0, attn_dropout=Modalities(text=0.0, audio=0.0, vision=0.0), self_attn_dropout=0.0,
                relu_dropout=0.0, embed_dropout=0.0, res_dropout=0.0, fusion_dropout=0.0, cls_dropout=0.0)


def load() -> tuple[dict, dict[str, np.ndarray]]:
    """The metadata and every array, the per-mode ones (`eval.npz`, `train.npz`) under `<mode>/`."""
    meta = json.loads((HERE / "official.json").read_text())
    with np.load(HERE / "official.npz", allow_pickle=False) as z:
        arrays = dict(z)
    for mode in ("eval", "train"):
        with np.load(HERE / f"{mode}.npz", allow_pickle=False) as z:
            arrays |= {f"{mode}/{k}": z[k] for k in z.files}
    return meta, arrays


def config_of(meta: dict, *, train: bool, bert_path: str = "", **extra) -> TFRNetConfig:
    """Our default config with the fixture's sizes (official names mapped to ours), the official final axis, and
    `extra` overrides."""
    s = meta["sizes"]
    sizes = dict(
        dim=s["dst_feature_dim_nheads"][0], heads=s["dst_feature_dim_nheads"][1], layers=s["nlevels"],
        fusion_hidden=Modalities(text=s["fusion_t_hid"], audio=s["fusion_a_hid"], vision=s["fusion_v_hid"]),
        fusion_gru_layers=s["fusion_gru_layers"], cls_hidden=s["cls_hidden_dim"],
    )
    config = TFRNetConfig(**sizes, **(DROPOUTS if train else {}), final_axis="batch", bert_path=bert_path)
    return dataclasses.replace(config, **extra)


def spec_of(meta: dict) -> InputSpec:
    lengths = dict(zip(MODALITIES, meta["seq_lens"], strict=True))
    dims = {"text": 3, "audio": meta["feature_dims"][1], "vision": meta["feature_dims"][2]}
    return InputSpec(dims=dims, lengths=lengths, extractors={"text": "bert-tokens"})


def batch_of(arrays: dict[str, np.ndarray]) -> tuple[Batch, dict[str, torch.Tensor]]:
    """The official batch as ours (text (B, 3, T) -> (B, T, 3)) and the official kept masks."""
    x = {k.removeprefix("input/"): torch.from_numpy(v) for k, v in arrays.items() if k.startswith("input/")}
    features = {"text": x["text"].transpose(1, 2).contiguous(), "audio": x["audio"], "vision": x["vision"]}
    masks = {m: x[f"{m}_mask"] > 0 for m in MODALITIES}
    kept = {m: x[f"{m}_missing_mask"] > 0 for m in MODALITIES}
    return Batch(features=features, masks=masks, label=x["labels"], ids=[str(i) for i in range(len(x["labels"]))]), kept


def official_state(meta: dict, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return unpack(arrays["weights"], meta["index"]["weights"])


@pytest.fixture(scope="module")
def bert_path(tmp_path_factory) -> str:
    return tiny_bert(tmp_path_factory, load()[0]["bert_config"])


def converted(bert_path: str, *, train: bool, **extra):
    meta, arrays = load()
    config = config_of(meta, train=train, bert_path=bert_path, **extra)
    model = load_converted("tfr_net", "official", official_state(meta, arrays), config, spec_of(meta))
    return model.train(train), meta, arrays


def test_default_config_is_the_official_mosi_one_but_sizes():
    meta, _ = load()
    c = TFRNetConfig()
    assert tuple(c.reconstruction_weight[m] for m in MODALITIES) == tuple(meta["weight_gen_loss"])
    assert tuple(c.kernel[m] for m in MODALITIES) == tuple(meta["kernels"])
    assert c.causal == meta["attn_mask"]
    d = meta["eval_dropouts"]
    assert (c.text_dropout, c.attn_dropout.text, c.attn_dropout.audio, c.attn_dropout.vision, c.self_attn_dropout) == (
        d["text_dropout"], d["attn_dropout"], d["attn_dropout_a"], d["attn_dropout_v"], d["attn_dropout"])
    assert (c.relu_dropout, c.embed_dropout, c.res_dropout, c.fusion_dropout, c.cls_dropout) == (
        d["relu_dropout"], d["embed_dropout"], d["res_dropout"], d["fusion_drop"], d["cls_dropout"])


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_prediction_losses_and_gradients_match_the_official_code(mode, bert_path):
    torch.manual_seed(0)
    model, meta, arrays = converted(bert_path, train=mode == "train")
    tol = meta["tolerance"]
    batch, kept = batch_of(arrays)
    incomplete = apply_kept(batch, kept, spec=model.spec)  # the official incomplete inputs ([UNK] = 100, zeros)
    for m in MODALITIES:
        official = torch.from_numpy(arrays[f"input/{m}_m"])
        assert torch.equal(incomplete.features[m], official.transpose(1, 2) if m == "text" else official), m

    losses = model.loss_given_missing(batch, kept)
    official_prediction = torch.from_numpy(arrays[f"{mode}/output/prediction"])
    torch.testing.assert_close(losses.prediction, official_prediction, rtol=0, atol=tol)
    if mode == "eval":
        with torch.no_grad():
            torch.testing.assert_close(model(incomplete).prediction, official_prediction, rtol=0, atol=tol)
    official = {k.removeprefix(f"{mode}/loss/"): float(v) for k, v in arrays.items() if k.startswith(f"{mode}/loss/")}
    for ours, theirs in TERMS.items():
        assert losses.terms[ours].item() == pytest.approx(official[theirs], abs=tol), ours
    assert losses.total.item() == pytest.approx(official["loss"], abs=tol)

    losses.total.backward()
    state = official_state(meta, arrays)
    grads = unpack(arrays[f"{mode}/grads"], meta["index"][f"{mode}/grads"])
    expected = get_converter("tfr_net", "official")({k: grads.get(k, v) for k, v in state.items()}, model.config)
    checked = 0
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, expected[name], rtol=0, atol=tol, msg=name)
        checked += 1
    assert checked == len(list(model.parameters())) > 100


def test_final_axis_changes_only_the_reconstruction(bert_path):
    """Our default reads the channels of one sample as the final transformer's sequence: the prediction is the
    official one, the reconstruction terms differ, and a sample's reconstruction no longer depends on the others."""
    official, meta, arrays = converted(bert_path, train=False)
    ours, _, _ = converted(bert_path, train=False, final_axis="feature")
    batch, kept = batch_of(arrays)
    a, b = official.loss_given_missing(batch, kept), ours.loss_given_missing(batch, kept)
    torch.testing.assert_close(a.prediction, b.prediction, rtol=0, atol=0)
    assert abs(a.terms["reconstruction"] - b.terms["reconstruction"]) > 1e-3
    with torch.no_grad():
        incomplete = apply_kept(batch, kept, spec=ours.spec)
        for model, mixes in ((official, True), (ours, False)):
            state = model.align(*model.inputs(incomplete))
            whole = model.reconstruct(state, "audio")
            last = dataclasses.replace(state, H={m: h[-1:] for m, h in state.H.items()},
                                       masks={m: x[-1:] for m, x in state.masks.items()})
            alone = model.reconstruct(last, "audio")
            assert torch.allclose(whole[-1:], alone, atol=1e-6) != mixes


def test_converter_refuses_missing_unexpected_and_reshaped_weights():
    meta, arrays = load()
    state = official_state(meta, arrays)
    config = config_of(meta, train=False)
    convert = get_converter("tfr_net", "official")
    assert len(convert(state, config)) > 100
    cases = {
        "missing": ({k: v for k, v in state.items() if not k.endswith("linear_trans_hidden.bias")},
                    "linear_trans_hidden.bias"),
        "unexpected": (state | {"Model.fusion_subnet.Model.extra.weight": torch.zeros(1)}, "extra.weight"),
        "reshaped": (state | {"Model.generator_a.Model.linear.weight": torch.zeros(3, 12)}, "generator.audio.weight"),
        "transformer": ({k: v for k, v in state.items() if ".trans_v_final." not in k}, "trans_v_final"),
    }
    for case, (broken, named) in cases.items():
        with pytest.raises(ConversionError, match=named.replace(".", r"\.")) as error:
            convert(broken, config)
        assert "\n" not in str(error.value), case
    # A deeper official run than our config: its extra crossmodal layers have no place in ours.
    with pytest.raises(ConversionError, match=r"layers=1.*unexpected \['crossmodal"):
        convert(state, dataclasses.replace(config, layers=1))
