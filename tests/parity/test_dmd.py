"""DMD against numbers from one official training step (tests/fixtures/parity/make_dmd.py): the official weights
(the DMD model and both graph-distillation units), converted, give the official prediction, unimodal logits, every
loss term, the objective and every gradient, in eval mode (the official MOSI dropouts, inactive) and in train mode
with every dropout 0. Our model is built with our defaults plus the fixture's sizes, and for the full comparison the
two documented options the fixture's official run used: `causal` (the official `attn_mask`) and
`orthogonality="batch"` (L_ort as the official code computed it under PyTorch 1.9)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import affectfuse.convert.dmd  # noqa: F401  (registers the converter until the package lists it)
from affectfuse import create_model
from affectfuse.config import InputSpec, Modalities
from affectfuse.convert import ConversionError, get_converter, load_converted
from affectfuse.data.batch import Batch
from affectfuse.models.dmd import flatten_steps

from .official import TOL, load_fixture

LETTER = {"l": "text", "a": "audio", "v": "vision"}
CASES = ["aligned", "unaligned", "unaligned_causal"]
ZERO = Modalities(text=0.0, audio=0.0, vision=0.0)
NO_DROPOUT = dict(text_dropout=0.0, embed_dropout=0.0, attn_dropout=ZERO, memory_attn_dropout=0.0, relu_dropout=0.0,
                  res_dropout=0.0, output_dropout=0.0)


def unpack(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, torch.Tensor]:
    """The named tensors make_dmd.py packed under `prefix` (names, ranks, dims, values)."""
    names, ranks, dims, values = (arrays[f"{prefix}/{k}"] for k in ("names", "ranks", "dims", "values"))
    out, at_dim, at_value = {}, 0, 0
    for name, rank in zip(names.tolist(), ranks.tolist(), strict=True):
        shape = tuple(dims[at_dim:at_dim + rank].tolist())
        size = int(np.prod(shape, dtype=np.int64))
        out[name] = torch.from_numpy(values[at_value:at_value + size].reshape(shape).copy())
        at_dim, at_value = at_dim + rank, at_value + size
    assert at_value == values.size
    return out


def setup(case: str, *, train: bool, **options: Any):
    arrays, meta = load_fixture(f"dmd/{case}")
    spec = InputSpec(dims={LETTER[m]: d for m, d in meta["dims"].items()},
                     lengths={LETTER[m]: t for m, t in meta["lengths"].items()}, aligned=case == "aligned")
    sizes = dict(dim=meta["dim"], heads=meta["heads"], layers=meta["layers"],
                 kernel=Modalities(**{LETTER[m]: k for m, k in meta["kernels"].items()}))
    settings = sizes | (NO_DROPOUT if train else {}) | options
    config = create_model("dmd", spec, **settings).config
    model = load_converted("dmd", "official", unpack(arrays, "state"), config, spec)
    b = meta["batch"]
    batch = Batch(features={LETTER[m]: torch.from_numpy(arrays[f"input/{m}"]) for m in "lav"},
                  masks={LETTER[m]: torch.ones(b, t, dtype=torch.bool) for m, t in meta["lengths"].items()},
                  label=torch.from_numpy(arrays["label"]), ids=[str(i) for i in range(b)])
    return model.train(train), batch, arrays, meta, config, spec


def official_terms(arrays: dict[str, np.ndarray], mode: str) -> dict[str, float]:
    """The official values in our term names; ours report the units' terms before their weights (w_losses, gd_reg)."""
    loss = {k.split("/")[-1]: float(v) for k, v in arrays.items() if k.startswith(f"{mode}/loss/")}
    terms = {"task": sum(v for k, v in loss.items() if k.startswith("task_")),
             "reconstruction": sum(loss[f"recon_{m}"] for m in "lva"),
             "cycle": sum(loss[f"cycle_{m}"] for m in "lva"),
             "orthogonality": sum(loss[f"ort_{m}"] for m in "lva"),
             "margin": loss["margin"]}
    for unit in ("homo", "hetero"):
        terms |= {f"{unit}_logit": loss[f"{unit}_logit"], f"{unit}_repr": loss[f"{unit}_repr"] / 10,
                  f"{unit}_reg": loss[f"{unit}_reg"] / 10}
    return terms | {"total": loss["total"]}


def unimodal_logits(model: Any, batch: Batch) -> dict[str, torch.Tensor]:
    """Our unimodal heads' logits, named as the official output dict."""
    state, aux = model.encode(batch), model.aux
    out = {"logits_c": aux["common_head"](state.c_fusion)}
    for m, name in LETTER.items():
        flat = flatten_steps(state.c[name], state.masks[name], model.steps[name])
        out[f"logits_{m}_homo"] = aux["homo_head"][name](flat)[1]
        out[f"logits_{m}_hetero"] = aux["hetero_out"][name](aux["hetero_head"][name](state.h[name]))
    return out


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train-no-dropout"])
@pytest.mark.parametrize("case", CASES)
def test_outputs_every_loss_term_and_gradients_equal_the_official_step(case: str, train: bool) -> None:
    causal = load_fixture(f"dmd/{case}")[1]["attn_mask"]
    model, batch, arrays, _, config, _ = setup(case, train=train, causal=causal, orthogonality="batch")
    mode = "train" if train else "eval"
    if not train:
        with torch.no_grad():
            np.testing.assert_allclose(model(batch).prediction.reshape(-1, 1).numpy(), arrays["eval/output"],
                                       atol=TOL, rtol=0)
    with torch.no_grad():
        for name, logit in unimodal_logits(model, batch).items():
            np.testing.assert_allclose(logit.numpy(), arrays[f"{mode}/{name}"], atol=TOL, rtol=0, err_msg=name)
    losses = model.loss(batch)
    np.testing.assert_allclose(losses.prediction.reshape(-1, 1).numpy(), arrays[f"{mode}/output"], atol=TOL, rtol=0)
    expected = official_terms(arrays, mode)
    ours = {k: float(v) for k, v in losses.terms.items()} | {"total": losses.total.item()}
    assert set(expected) == set(ours)
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, abs=TOL, rel=1e-6), name
    losses.total.backward()
    official_grads = unpack(arrays, "grad")
    # the units' biases shift every edge score of a sample alike: the softmax cancels them, so they get no gradient
    for key in [k for k in official_grads if k.startswith(("homo_gd.", "hetero_gd.")) and k.endswith(".bias")]:
        assert official_grads[key].abs().max() < 1e-6, key
    grads = get_converter("dmd", "official")(official_grads, config)
    params = dict(model.named_parameters())
    assert set(grads) == set(params)
    for key, grad in grads.items():
        np.testing.assert_allclose(params[key].grad.numpy(), grad.numpy(), atol=TOL, rtol=1e-5, err_msg=key)


@pytest.mark.parametrize("case", CASES)
def test_defaults_differ_from_the_official_step_only_where_documented(case: str) -> None:
    """Our defaults (per-sample L_ort; no causal mask) on the same weights: every term but L_ort (and, where the
    official run used its `attn_mask`, everything downstream of the attention) equals the official one."""
    model, batch, arrays, meta, _, _ = setup(case, train=True)
    losses = model.loss(batch)
    expected = official_terms(arrays, "train")
    ours = {k: float(v) for k, v in losses.terms.items()}
    unaffected = ["reconstruction", "cycle", "margin", "homo_logit", "homo_repr", "homo_reg"]
    if not meta["attn_mask"]:
        unaffected += ["task", "hetero_logit", "hetero_repr", "hetero_reg"]
        np.testing.assert_allclose(losses.prediction.reshape(-1, 1).numpy(), arrays["train/output"], atol=TOL, rtol=0)
    for name in unaffected:
        assert ours[name] == pytest.approx(expected[name], abs=TOL, rel=1e-6), name
    assert abs(ours["orthogonality"] - expected["orthogonality"]) > 1e-3  # per sample, not across the batch
    batch_model = setup(case, train=True, orthogonality="batch")[0]
    assert float(batch_model.loss(batch).terms["orthogonality"]) == pytest.approx(expected["orthogonality"], abs=TOL)


def test_converter_refuses_what_does_not_fit() -> None:
    _, _, arrays, meta, config, spec = setup("unaligned", train=True)
    state = unpack(arrays, "state")
    with pytest.raises(ConversionError, match=r"missing \['aux.align.text.bias'"):
        load_converted("dmd", "official", {k: v for k, v in state.items() if k != "align_c_l.bias"}, config, spec)
    with pytest.raises(ConversionError, match="lacks keys"):
        load_converted("dmd", "official", {k: v for k, v in state.items() if k != "weight_c.bias"}, config, spec)
    with pytest.raises(ConversionError, match="does not know: \\['trans_x.weight'\\]"):
        load_converted("dmd", "official", {**state, "trans_x.weight": torch.zeros(1)}, config, spec)
    wrong = {**state, "proj_v.weight": torch.zeros(meta["dim"], meta["dims"]["v"], 5)}
    with pytest.raises(ConversionError, match="other shapes.*project.vision.conv.weight"):
        load_converted("dmd", "official", wrong, config, spec)
    bert = {**state, "text_model.model.pooler.dense.bias": torch.zeros(3)}  # BERT weights, but text is features here
    with pytest.raises(ConversionError, match=r"unexpected \['text_encoder.bert.pooler.dense.bias'\]"):
        load_converted("dmd", "official", bert, config, spec)
    partial = {k: v for k, v in state.items() if k != "hetero_gd.W_edge.weight"}
    with pytest.raises(ConversionError, match="aux.hetero_gd.W_edge.weight"):
        load_converted("dmd", "official", partial, config, spec)


def test_an_official_checkpoint_without_the_distillation_units_loads_with_them_at_zero() -> None:
    model, batch, arrays, meta, config, spec = setup("unaligned", train=False)
    checkpoint = {k: v for k, v in unpack(arrays, "state").items() if not k.startswith(("homo_gd.", "hetero_gd."))}
    loaded = load_converted("dmd", "official", checkpoint, config, spec)
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).prediction, model(batch).prediction, rtol=0, atol=0)
    for unit in ("homo_gd", "hetero_gd"):
        assert all(not p.any() for p in loaded.aux[unit].parameters())
    assert loaded.train().loss(batch).terms["homo_reg"] >= 0  # trainable from there
