"""EMT-DLFR against numbers of the official code (tests/fixtures/parity/emt_dlfr, made by make_emt_dlfr.py).

The official weights (a tiny random BERT and the whole network, as `AMIO`'s state dict) go through our converter
into our model, built with our default config plus the fixture's sizes (and every dropout 0 in train mode). On the
official batch with the official static missing masks, our outputs, every loss term, every gradient and the
BatchNorm statistics after the step must match the official ones. Also: our missing masks against the official
`generate_m` on a whole split, and our AUILC against the official `run_once.py` AUC.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import affectfuse.convert.emt_dlfr  # noqa: F401 - registers the converter
from affectfuse.config import InputSpec, Modalities
from affectfuse.convert import ConversionError, get_converter, load_converted
from affectfuse.data.batch import Batch
from affectfuse.data.corpus import Split
from affectfuse.models.emt_dlfr import EMTDLFRConfig, interleaved_positions
from affectfuse.robustness.auilc import auilc
from affectfuse.robustness.missing import apply_kept, apply_masks, split_missing_masks

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "emt_dlfr"
VARIANTS = ("shared", "unshared")
CASES = [(v, mode) for v in VARIANTS for mode in json.loads((FIXTURES / f"{v}.json").read_text())["modes"]]
TERMS = {  # ours -> the official trainer's variable
    "task_incomplete": "loss_pred_m",
    "task_complete": "loss_pred",
    "attraction_global": "loss_attra_gmc_tokens",
    "attraction_text": "loss_attra_text",
    "attraction_audio": "loss_attra_audio",
    "attraction_vision": "loss_attra_video",
    "reconstruction_text": "loss_recon_text",
    "reconstruction_audio": "loss_recon_audio",
    "reconstruction_vision": "loss_recon_video",
    "reconstruction": "loss_recon",
}
OFFICIAL_M = {"text": "text", "audio": "audio", "vision": "vision"}  # the trainer's batch keys


def load(variant: str) -> tuple[dict, dict[str, np.ndarray]]:
    meta = json.loads((FIXTURES / f"{variant}.json").read_text())
    with np.load(FIXTURES / f"{variant}.npz", allow_pickle=False) as z:
        return meta, dict(z)


def unpack(flat: np.ndarray, index: list) -> dict[str, torch.Tensor]:
    out, start = {}, 0
    for name, shape, dtype in index:
        n = int(np.prod(shape, dtype=np.int64))
        out[name] = torch.from_numpy(flat[start : start + n].copy()).reshape(shape).to(getattr(torch, dtype))
        start += n
    assert start == flat.size
    return out


def official_state(meta: dict, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The official state dict as the official code saves it: every shared tensor under each of its names."""
    stored = unpack(arrays["weights"], meta["index"]["weights"])
    return stored | {k: stored[v] for k, v in meta["aliases"].items()}


def config_of(meta: dict, *, train: bool, bert_path: str = "") -> EMTDLFRConfig:
    """Our default config with only the fixture's sizes (official names mapped to ours), dropouts 0 to train."""
    s = meta["sizes"]
    sizes = dict(
        audio_hidden=s["a_lstm_hidden_size"], audio_out=s["audio_out"], vision_hidden=s["v_lstm_hidden_size"],
        vision_out=s["video_out"], d_model=s["d_model"], layers=s["fusion_layers"], heads=s["heads"],
        ffn_mult=s["ff_expansion"], global_bottleneck=s["gmc_tokens_pred_dim"], post_fusion_dim=s["post_fusion_dim"],
        bottleneck=Modalities(text=s["text_pred_dim"], audio=s["audio_pred_dim"], vision=s["video_pred_dim"]),
        mpu_share=s["mpu_share"], modality_share=s["modality_share"], layer_share=s["layer_share"],
    )
    dropouts = dict(attn_dropout=0.0, ff_dropout=0.0, post_fusion_dropout=0.0) if train else {}
    return EMTDLFRConfig(**sizes, **dropouts, bert_path=bert_path)


def spec_of(arrays: dict[str, np.ndarray]) -> InputSpec:
    t, a, v = arrays["input/text"].shape[2], arrays["input/audio"].shape[1:], arrays["input/vision"].shape[1:]
    return InputSpec(
        dims={"text": 3, "audio": a[1], "vision": v[1]}, lengths={"text": t, "audio": a[0], "vision": v[0]},
        extractors={"text": "bert-tokens"},
    )


def batch_of(arrays: dict[str, np.ndarray]) -> tuple[Batch, dict[str, torch.Tensor]]:
    """The official batch as ours (text (B, 3, T) -> (B, T, 3)) and the official kept masks."""
    x = {k.removeprefix("input/"): torch.from_numpy(v) for k, v in arrays.items() if k.startswith("input/")}
    features = {"text": x["text"].transpose(1, 2).contiguous(), "audio": x["audio"], "vision": x["vision"]}
    masks = {"text": x["text"][:, 1] > 0, "audio": x["audio_mask"] > 0, "vision": x["vision_mask"] > 0}
    kept = {m: x[f"{m}_missing_mask"] > 0 for m in OFFICIAL_M}
    ids = [str(int(i)) for i in x["index"]]
    return Batch(features=features, masks=masks, label=x["labels"], ids=ids), kept


@pytest.fixture(scope="module")
def bert_path(tmp_path_factory) -> str:
    """A BERT folder of the fixture's configuration (its random weights are replaced by the official ones)."""
    transformers = pytest.importorskip("transformers", reason="the official text encoder is a BERT")
    path = tmp_path_factory.mktemp("tiny_bert")
    transformers.BertModel(transformers.BertConfig(**load("shared")[0]["bert_config"])).save_pretrained(path)
    return str(path)


def converted(variant: str, bert_path: str, *, train: bool):
    meta, arrays = load(variant)
    config = config_of(meta, train=train, bert_path=bert_path)
    model = load_converted("emt_dlfr", "official", official_state(meta, arrays), config, spec_of(arrays))
    return model.train(train), meta, arrays


def test_default_config_is_the_official_mosi_one_but_sizes():
    """Only sizes come from the fixture: everything else (loss weights, sharing) is our default."""
    meta, _ = load("shared")
    c = EMTDLFRConfig()
    assert (c.attraction_weight, c.reconstruction_weight) == (meta["loss_weights"]["attra"],
                                                              meta["loss_weights"]["recon"])
    assert (c.attn_dropout, c.ff_dropout, c.post_fusion_dropout) == tuple(meta["eval_dropouts"].values())
    assert c.mpu_share and c.modality_share and c.layer_share


@pytest.mark.parametrize(("variant", "mode"), CASES)
def test_outputs_losses_gradients_and_batchnorm_match_the_official_code(variant, mode, bert_path):
    torch.manual_seed(0)
    model, meta, arrays = converted(variant, bert_path, train=mode == "train")
    tol = meta["tolerance"]
    batch, kept = batch_of(arrays)
    # The official incomplete view is ours with the official kept masks ([UNK] = 100 for text, zero frames).
    incomplete = apply_kept(batch, kept, spec=model.spec)
    for m in OFFICIAL_M:
        official = torch.from_numpy(arrays[f"input/{m}_m"])
        official = official.transpose(1, 2) if m == "text" else official
        assert torch.equal(incomplete.features[m], official), m

    losses = model.loss_given_missing(batch, kept)
    official_pred_m = torch.from_numpy(arrays[f"{mode}/output/pred_m"])
    torch.testing.assert_close(losses.prediction, official_pred_m, rtol=0, atol=tol)
    with torch.no_grad():
        torch.testing.assert_close(model(batch).prediction, torch.from_numpy(arrays[f"{mode}/output/pred"]),
                                   rtol=0, atol=tol)
    official = {k.removeprefix(f"{mode}/loss/"): float(v) for k, v in arrays.items() if k.startswith(f"{mode}/loss/")}
    for ours, theirs in TERMS.items():
        assert losses.terms[ours].item() == pytest.approx(official[theirs], abs=tol), ours
    # The official attraction group holds the complete-view task loss (§4.4).
    attraction = losses.terms["attraction"] + losses.terms["task_complete"]
    assert attraction.item() == pytest.approx(official["loss_attra"], abs=tol)
    assert losses.total.item() == pytest.approx(official["loss"], abs=tol)

    losses.total.backward()
    state = official_state(meta, arrays)
    grads = unpack(arrays[f"{mode}/grads"], meta["index"][f"{mode}/grads"])
    # Gradients under the official names; buffers (and BERT's unused pooler) keep their values, so the converter
    # still finds the position table it checks.
    canonical = {k: meta["aliases"].get(k, k) for k in state}
    as_state = {k: grads[canonical[k]] if canonical[k] in grads else v for k, v in state.items()}
    expected = get_converter("emt_dlfr", "official")(as_state, model.config)
    checked = 0
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, expected[name], rtol=0, atol=tol, msg=name)
        checked += 1
    assert checked == len(list(model.parameters())) > 50

    if mode == "train":  # BatchNorm running statistics after the step: each SimSiam BN saw both views in order
        after = state | unpack(arrays["train/buffers"], meta["index"]["train/buffers"])
        expected = get_converter("emt_dlfr", "official")(after, model.config)
        for name, b in model.named_buffers():
            if "running" in name or "num_batches" in name:
                torch.testing.assert_close(b, expected[name].to(b.dtype), rtol=0, atol=tol, msg=name)


def test_position_table_is_the_official_one():
    meta, arrays = load("shared")
    pe = official_state(meta, arrays)["Model.fusion.pos_embed.pe"][0]
    torch.testing.assert_close(interleaved_positions(*pe.shape), pe, rtol=0, atol=0)


def test_converter_refuses_missing_unexpected_reshaped_and_unshared_weights():
    meta, arrays = load("shared")
    state = official_state(meta, arrays)
    config = config_of(meta, train=False)
    convert = get_converter("emt_dlfr", "official")
    assert len(convert(state, config)) > 50

    cases = {
        "missing": ({k: v for k, v in state.items() if k != "Model.post_fusion_layer_1.weight"},
                    "post_fusion_layer_1.weight"),
        "unexpected": (state | {"Model.fusion.extra.weight": torch.zeros(1)}, "fusion.extra.weight"),
        "reshaped": (state | {"Model.recon_audio.weight": torch.zeros(3, 8)}, "recon_audio.weight"),
        "learnt positions": (state | {"Model.fusion.pos_embed.pe": torch.randn(1, 16, 8)}, "pos_embed.pe"),
    }
    for case, (broken, named) in cases.items():
        with pytest.raises(ConversionError, match=named.replace(".", r"\.")) as error:
            convert(broken, config)
        assert "\n" not in str(error.value), case
    # Weights trained without sharing cannot go into a model that shares its blocks.
    unshared_meta, unshared_arrays = load("unshared")
    with pytest.raises(ConversionError, match="mpu_share"):
        convert(official_state(unshared_meta, unshared_arrays), config)
    # An unexpected layer (the official run was deeper than our config).
    with pytest.raises(ConversionError, match=r"unexpected \['fusion\.attn_pools\.1"):
        convert(state, dataclasses.replace(config, layers=1))


def test_missing_masks_are_bit_identical_to_the_official_generate_m():
    meta = json.loads((FIXTURES / "missing.json").read_text())
    with np.load(FIXTURES / "missing.npz", allow_pickle=False) as z:
        a = dict(z)
    text = a["split/text"].transpose(0, 2, 1)  # (N, 3, T) -> (N, T, 3)
    steps = {m: np.arange(a[f"split/{m}"].shape[1]) for m in ("audio", "vision")}
    masks = {"text": text[..., 1] > 0} | {m: steps[m] < a[f"split/{m}_lengths"][:, None] for m in steps}
    features = {"text": text, "audio": a["split/audio"], "vision": a["split/vision"]}
    split = Split(ids=[str(i) for i in range(len(text))], features=features, masks=masks,
                  labels=a["split/labels"].reshape(-1, 1))
    spec = InputSpec(dims={m: x.shape[2] for m, x in features.items()},
                     lengths={m: x.shape[1] for m, x in features.items()}, extractors={"text": "bert-tokens"})
    for rate in meta["rates"]:
        kept = split_missing_masks(split, rate, spec=spec)
        corrupted = apply_masks(split, kept, spec=spec)
        for m in ("text", "audio", "vision"):
            np.testing.assert_array_equal(kept[m], a[f"rate{rate}/{m}_missing_mask"] > 0, err_msg=f"{m} at {rate}")
            official = a[f"rate{rate}/{m}_m"]
            official = official.transpose(0, 2, 1) if m == "text" else official
            np.testing.assert_array_equal(corrupted.features[m], official, err_msg=f"{m} at {rate}")
        assert (kept["audio"] != masks["audio"]).any()  # something was dropped


def test_auilc_is_the_official_auc():
    tol = json.loads((FIXTURES / "missing.json").read_text())["tolerance"]
    with np.load(FIXTURES / "missing.npz", allow_pickle=False) as z:
        for grid in ("mosi", "sims"):
            rates, means, auc = (z[f"auilc/{grid}/{k}"] for k in ("rates", "means", "auc"))
            ours = [auilc(rates, means[:, k]) for k in range(means.shape[1])]
            np.testing.assert_allclose(ours, auc, rtol=0, atol=tol)
