"""Self-MM against numbers of the official code (tests/fixtures/parity/self_mm, made by make_self_mm.py from the
thuiar/MMSA port of thuiar/Self-MM).

The official weights go through our converter into our model (our default config plus the fixture's sizes, every
dropout 0 in train mode). Over the official three epochs of SGD steps, our four losses, prediction and every gradient
must match the official ones at every step, and so must the generated unimodal labels and the feature centres
after every step (the ULGM update of epochs 2 and 3 included) — our labels live in the model, keyed by sample id.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import affectfuse.convert.self_mm  # noqa: F401 - registers the converter
from affectfuse.config import InputSpec, Modalities
from affectfuse.config.registry import get_recipe
from affectfuse.convert import ConversionError, get_converter, load_converted
from affectfuse.data.batch import Batch
from affectfuse.engine.checkpoint import load_model, save_checkpoint
from affectfuse.models.self_mm import SelfMMConfig

from .official import FIXTURES, group, tiny_bert

TASKS = ("fusion", "text", "audio", "vision")


def load() -> tuple[dict[str, np.ndarray], dict]:
    with np.load(FIXTURES / "self_mm" / "train.npz", allow_pickle=False) as z:
        arrays = dict(z)
    return arrays, json.loads((FIXTURES / "self_mm" / "train.json").read_text())


def config_of(meta: dict, *, train: bool, bert_path: str = "") -> SelfMMConfig:
    s = meta["sizes"]
    dropouts = dict(post_fusion_dropout=0.0, post_dropout=Modalities(text=0.0, audio=0.0, vision=0.0)) if train else {}
    return SelfMMConfig(
        audio_hidden=s["a_lstm_hidden_size"], audio_out=s["audio_out"], vision_hidden=s["v_lstm_hidden_size"],
        vision_out=s["video_out"], post_fusion_dim=s["post_fusion_dim"],
        post_dim=Modalities(text=s["post_text_dim"], audio=s["post_audio_dim"], vision=s["post_video_dim"]),
        bert_path=bert_path, **dropouts,
    )


def split_of(arrays: dict[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], InputSpec]:
    """The official unaligned split as our features (text (N, 3, T) -> (N, T, 3)) and masks."""
    x = group(arrays, "input")
    features = {"text": x["text"].transpose(1, 2).contiguous(), "audio": x["audio"], "vision": x["vision"]}
    masks = {"text": x["text"][:, 1] > 0}
    for m in ("audio", "vision"):
        masks[m] = torch.arange(x[m].shape[1])[None, :] < x[f"{m}_lengths"][:, None]
    spec = InputSpec(dims={m: v.shape[-1] for m, v in features.items()},
                     lengths={m: v.shape[1] for m, v in features.items()}, extractors={"text": "bert-tokens"})
    return features, masks | {"labels": x["labels"]}, spec


def batch_of(features: dict, masks: dict, index: np.ndarray) -> Batch:
    i = torch.from_numpy(index)
    return Batch(features={m: v[i] for m, v in features.items()}, masks={m: masks[m][i] for m in features},
                 label=masks["labels"][i][:, None], ids=[str(int(k)) for k in index])


@pytest.fixture(scope="module")
def bert_path(tmp_path_factory) -> str:
    return tiny_bert(tmp_path_factory, load()[1]["bert_config"])


def converted(bert_path: str, *, train: bool):
    arrays, meta = load()
    features, masks, spec = split_of(arrays)
    model = load_converted("self_mm", "official", group(arrays, "weights"), config_of(meta, train=train,
                                                                                       bert_path=bert_path), spec)
    return model.train(train), arrays, meta, features, masks


def check_step(model, arrays: dict, prefix: str, batch: Batch, tol: float):
    losses = model.loss(batch)
    torch.testing.assert_close(losses.prediction, torch.from_numpy(arrays[f"{prefix}/output/fusion"]), rtol=0,
                               atol=tol)
    for t in TASKS:
        assert losses.terms[t].item() == pytest.approx(float(arrays[f"{prefix}/loss/{t}"]), abs=tol), (prefix, t)
    assert losses.total.item() == pytest.approx(float(arrays[f"{prefix}/loss/total"]), abs=tol)
    losses.total.backward()
    grads = get_converter("self_mm", "official")(group(arrays, f"{prefix}/grad"), model.config)
    with_grad = [(n, p) for n, p in model.named_parameters() if p.grad is not None]
    for name, p in with_grad:
        torch.testing.assert_close(p.grad, grads[name], rtol=0, atol=tol, msg=f"{prefix} {name}")
    # the official code has no gradient where ours has none (the unimodal heads before labels are generated)
    assert {n for n, _ in with_grad} == set(grads) - {"aux.labels._extra_state"}


@pytest.mark.parametrize("dataset", ["mosi", "mosei", "sims"])
def test_recipes_are_the_original_repositorys_settings(dataset):
    """Every setting of the recipe against the original thuiar/Self-MM configuration recorded in the fixture."""
    o = load()[1]["original"]["settings"][dataset]
    recipe = get_recipe("self_mm", dataset)
    c, t = recipe.model, recipe.train
    assert (c.audio_hidden, c.vision_hidden, c.audio_out, c.vision_out, c.post_fusion_dim) == (
        o["a_lstm_hidden_size"], o["v_lstm_hidden_size"], o["audio_out"], o["video_out"], o["post_fusion_dim"])
    assert c.post_dim == Modalities(text=o["post_text_dim"], audio=o["post_audio_dim"], vision=o["post_video_dim"])
    assert (c.post_fusion_dropout, c.audio_dropout, c.vision_dropout) == (
        o["post_fusion_dropout"], o["a_lstm_dropout"], o["v_lstm_dropout"])
    assert c.post_dropout == Modalities(text=o["post_text_dropout"], audio=o["post_audio_dropout"],
                                        vision=o["post_video_dropout"])
    assert c.encoder_lr == Modalities(text=o["learning_rate_bert"], audio=o["learning_rate_audio"],
                                      vision=o["learning_rate_video"])
    assert c.encoder_weight_decay == Modalities(text=o["weight_decay_bert"], audio=o["weight_decay_audio"],
                                                vision=o["weight_decay_video"])
    assert (t.lr, t.weight_decay, t.batch_size, t.accumulate, t.patience) == (
        o["learning_rate_other"], o["weight_decay_other"], o["batch_size"], o["update_epochs"], o["early_stop"])
    assert (c.label_bound, c.exclude_zero) == (o["H"], True)
    if dataset == "mosi":
        assert c == SelfMMConfig()  # the defaults are the MOSI recipe


def test_the_fixture_ran_the_ports_label_settings():
    o = load()[1]["official_settings"]  # MMSA's MOSI settings: the label generation is the same as the original's
    assert (o["H"], o["excludeZero"]) == (SelfMMConfig().label_bound, SelfMMConfig().exclude_zero)


def test_eval_step_matches_and_does_not_update_the_labels(bert_path):
    model, arrays, meta, features, masks = converted(bert_path, train=False)
    batch = batch_of(features, masks, arrays["eval/index"])
    check_step(model, arrays, "eval", batch, meta["tolerance"])
    labels = model.generated_labels(batch.ids)  # looked up (the human labels), never updated in eval mode
    torch.testing.assert_close(labels, batch.label[:, None, :].expand(-1, 4, -1), rtol=0, atol=0)
    assert int(model.aux["labels"].visits.sum()) == 0


def test_three_epochs_of_steps_labels_and_centres_match_the_official_trainer(bert_path, tmp_path):
    model, arrays, meta, features, masks = converted(bert_path, train=True)
    tol = meta["tolerance"]
    optimizer = torch.optim.SGD(model.parameters(), lr=meta["sgd_lr"])
    n = masks["labels"].shape[0]
    ids = [str(i) for i in range(n)]
    for s in range(meta["steps"]):
        batch = batch_of(features, masks, arrays[f"train/{s}/index"])
        check_step(model, arrays, f"train/{s}", batch, tol)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        official = np.stack([arrays[f"train/{s}/labels/{t}"] for t in TASKS], 1)  # (N, 4)
        seen = [i for i in ids if i in model.aux["labels"].rows]
        ours = model.generated_labels(seen)[..., 0]  # (seen, 4)
        torch.testing.assert_close(ours, torch.from_numpy(official[[int(i) for i in seen]]), rtol=0, atol=tol,
                                   msg=f"labels after step {s}")
        if len(seen) == n:  # the official centres of epoch 1 also average zeros of samples not seen yet
            for t, (positive, negative) in model.aux["labels"].centres().items():
                torch.testing.assert_close(positive[0], torch.from_numpy(arrays[f"train/{s}/centre/{t}/pos"]),
                                           rtol=0, atol=tol, msg=f"{t} positive centre after step {s}")
                torch.testing.assert_close(negative[0], torch.from_numpy(arrays[f"train/{s}/centre/{t}/neg"]),
                                           rtol=0, atol=tol, msg=f"{t} negative centre after step {s}")
    generated = model.generated_labels(ids)
    assert not torch.equal(generated[:, 1:], generated[:, :1].expand(-1, 3, -1))  # labels were generated
    # The label state travels with the checkpoint.
    restored = load_model(save_checkpoint(tmp_path / "m.pt", model))
    torch.testing.assert_close(restored.generated_labels(ids), generated, rtol=0, atol=0)
    assert restored.aux["labels"].visits[:n].tolist() == model.aux["labels"].visits[:n].tolist() == [3] * n


def test_converter_refuses_missing_unexpected_and_reshaped_weights(bert_path):
    arrays, meta = load()
    state = group(arrays, "weights")
    config = config_of(meta, train=False, bert_path=bert_path)
    convert = get_converter("self_mm", "official")
    assert len(convert(state, config)) > 30
    cases = {
        "missing": ({k: v for k, v in state.items() if k != "post_text_layer_2.bias"}, "post_text_layer_2.bias"),
        "unexpected": (state | {"audio_model.rnn.weight_ih_l1": torch.zeros(1)}, "audio_model.rnn.weight_ih_l1"),
    }
    for case, (broken, named) in cases.items():
        with pytest.raises(ConversionError, match=named.replace(".", r"\.")) as error:
            convert(broken, config)
        assert "\n" not in str(error.value), case
    _, _, spec = split_of(arrays)
    wider = config_of(meta, train=False, bert_path=bert_path).__class__(post_fusion_dim=16, bert_path=bert_path)
    with pytest.raises(ConversionError, match="other shapes"):
        load_converted("self_mm", "official", state, wider, spec)
