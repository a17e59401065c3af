"""MISA against numbers of the official code (tests/fixtures/parity/misa, made by make_misa.py from declare-lab/MISA).

The official weights go through our converter into our model, built with our default config plus the fixture's sizes
(and every dropout 0 in train mode). On the official batch (sequence-first, sorted, word-aligned: converted to ours),
our prediction, every loss term and the gradient of every parameter must match the official ones, for BERT text,
GloVe-style word vectors and the adversarial similarity loss.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import affectfuse.convert.misa  # noqa: F401 - registers the converter
from affectfuse.config import InputSpec
from affectfuse.convert import ConversionError, get_converter, load_converted
from affectfuse.data.batch import Batch
from affectfuse.models.misa import MISAConfig

from .official import FIXTURES, group, tiny_bert

CASES = ("bert", "glove", "adversarial")
MODES = ("eval", "train")


def load(case: str) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(FIXTURES / "misa" / f"{case}.npz", allow_pickle=False) as z:
        arrays = dict(z)
    return arrays, json.loads((FIXTURES / "misa" / f"{case}.json").read_text())


def config_of(meta: dict, *, train: bool, bert_path: str = "") -> MISAConfig:
    s = meta["sizes"]
    dropouts = dict(dropout=0.0, fusion_dropout=0.0) if train else {}
    similarity = "cmd" if meta["case"]["use_cmd_sim"] else "adversarial"
    return MISAConfig(hidden_size=s["hidden_size"], fusion_ffn=s["dim_feedforward"], similarity=similarity,
                      bert_path=bert_path, **dropouts)


def batch_of(arrays: dict[str, np.ndarray], meta: dict) -> tuple[Batch, InputSpec]:
    """The official sequence-first batch as ours (B first, boolean masks from the lengths / BERT mask)."""
    x = group(arrays, "input")
    steps = torch.arange(x["visual"].shape[0])[None, :] < x["lengths"][:, None]  # (B, T)
    features = {"audio": x["acoustic"].transpose(0, 1), "vision": x["visual"].transpose(0, 1)}
    masks = {"audio": steps, "vision": steps}
    if meta["case"]["use_bert"]:
        features["text"] = torch.stack([x["bert_sent"], x["bert_sent_mask"], x["bert_sent_type"]], -1).float()
        masks["text"] = x["bert_sent_mask"] > 0
        extractors = {"text": "bert-tokens"}
    else:
        features["text"], masks["text"], extractors = x["word_vectors"].transpose(0, 1), steps, {}
    spec = InputSpec(dims={m: v.shape[-1] for m, v in features.items()},
                     lengths={m: v.shape[1] for m, v in features.items()}, extractors=extractors)
    return Batch(features=features, masks=masks, label=x["labels"], ids=[str(i) for i in range(len(steps))]), spec


@pytest.fixture(scope="module")
def bert_path(tmp_path_factory) -> str:
    return tiny_bert(tmp_path_factory, load("bert")[1]["bert_config"])


def test_default_config_is_the_official_one_but_sizes():
    _, meta = load("bert")
    official, c = meta["official_settings"], MISAConfig()
    assert (c.dropout, c.diff_weight, c.sim_weight, c.recon_weight, c.reverse_grad_weight, c.rnn) == (
        official["dropout"], official["diff_weight"], official["sim_weight"], official["recon_weight"],
        official["reverse_grad_weight"], official["rnncell"])
    assert c.similarity == "cmd" and meta["case"]["use_cmd_sim"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES)
def test_prediction_losses_and_gradients_match_the_official_code(case, mode, bert_path):
    arrays, meta = load(case)
    tol = meta["tolerance"]
    batch, spec = batch_of(arrays, meta)
    state = group(arrays, "weights")
    model = load_converted("misa", "official", state, config_of(meta, train=mode == "train", bert_path=bert_path),
                           spec).train(mode == "train")
    losses = model.loss(batch)
    expected = torch.from_numpy(arrays[f"{mode}/output/prediction"])
    torch.testing.assert_close(losses.prediction, expected, rtol=0, atol=tol)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(batch).prediction, expected, rtol=0, atol=tol)
    official = {k: float(v) for k, v in group(arrays, f"{mode}/loss").items()}
    for term in ("task", "similarity", "difference", "reconstruction"):
        assert losses.terms[term].item() == pytest.approx(official[term], abs=tol), term
    assert losses.total.item() == pytest.approx(official["total"], abs=tol)

    losses.total.backward()
    grads = get_converter("misa", "official")(group(arrays, f"{mode}/grad"), model.config)
    checked = 0
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], rtol=0, atol=tol, msg=name)
        checked += 1
    assert checked == len(grads) > 40


def test_converter_refuses_missing_unexpected_and_reshaped_weights():
    arrays, meta = load("glove")
    state = group(arrays, "weights")
    config = config_of(meta, train=False)
    convert = get_converter("misa", "official")
    assert len(convert(state, config)) > 40
    cases = {
        "missing": ({k: v for k, v in state.items() if k != "shared.shared_1.bias"}, "shared.shared_1.bias"),
        "unexpected": (state | {"fusion.fusion_layer_2.weight": torch.zeros(1)}, "fusion.fusion_layer_2.weight"),
    }
    for case, (broken, named) in cases.items():
        with pytest.raises(ConversionError, match=named.replace(".", r"\.")) as error:
            convert(broken, config)
        assert "\n" not in str(error.value), case
    # A discriminator the config does not train, or none where it does.
    adversarial, _ = load("adversarial")
    with pytest.raises(ConversionError, match="discriminator"):
        convert(group(adversarial, "weights"), config)
    with pytest.raises(ConversionError, match="discriminator_layer_1"):
        convert(state, MISAConfig(hidden_size=8, fusion_ffn=16, similarity="adversarial"))
    # A wider model: the shapes are refused when loading.
    _, spec = batch_of(arrays, meta)
    with pytest.raises(ConversionError, match="other shapes"):
        load_converted("misa", "official", state, MISAConfig(hidden_size=16, fusion_ffn=16), spec)
