"""The contract every registered model honours (design §3.8), checked by iterating the registry."""

from __future__ import annotations

import copy

import pytest
import torch

from affectfuse.config import TrainConfig
from affectfuse.config.registry import create_model, list_models
from affectfuse.data.batch import Batch
from affectfuse.engine.checkpoint import load_model, save_checkpoint
from affectfuse.engine.train import check_param_groups

from .conftest import SPECS, TINY, make_batch

MODELS = list_models()

# Methods whose paper attends over padding list themselves here with the reason (none so far).
PADDING_EXCEPTIONS: dict[str, str] = {}

# Methods whose loss keeps per-sample state across calls list themselves here with how many times (training epochs)
# the loss checks below show them a batch first, and why.
WARM_UP: dict[str, tuple[int, str]] = {
    "self_mm": (2, "a unimodal task is weighted by |y_s - y_m|: zero until its labels are generated at the end of a "
                "sample's second visit"),
}


def build(name: str, spec_name: str = "sentiment"):
    torch.manual_seed(0)
    return create_model(name, SPECS[spec_name], **TINY[name])


def test_every_model_has_a_tiny_config():
    assert set(TINY) == set(MODELS)


@pytest.mark.parametrize("spec_name", list(SPECS))
@pytest.mark.parametrize("name", MODELS)
def test_forward_shape_and_finite(name, spec_name):
    spec = SPECS[spec_name]
    model = build(name, spec_name).eval()
    prediction = model(make_batch(spec, 5)).prediction
    expected = (5, spec.num_targets) if spec.task == "regression" else (5, spec.num_targets, spec.num_classes)
    assert prediction.shape == expected
    assert prediction.dtype == torch.float32
    assert torch.isfinite(prediction).all()


@pytest.mark.parametrize("spec_name", list(SPECS))
@pytest.mark.parametrize("name", MODELS)
def test_loss_gives_every_parameter_a_finite_gradient(name, spec_name):
    model = build(name, spec_name).train()
    batch = make_batch(SPECS[spec_name], 7)  # odd: an L1 bias gradient (mean of signs) cannot cancel
    for _ in range(WARM_UP.get(name, (0,))[0]):
        model.loss(batch)
    losses = model.loss(batch)
    assert losses.total.ndim == 0 and losses.total.requires_grad and torch.isfinite(losses.total)
    assert losses.terms
    losses.total.backward()
    without = [
        n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert not without, f"parameters without gradient: {without}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", MODELS)
def test_param_groups_cover_every_parameter_exactly_once(name):
    model = build(name)
    groups = model.param_groups(TrainConfig(lr=1e-3))
    check_param_groups(model, torch.optim.Adam(groups))
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", MODELS)
def test_batch_of_one_and_independence_of_other_samples(name):
    model = build(name).eval()
    batch = make_batch(SPECS["sentiment"], 4)
    together = model(batch).prediction
    for i in range(4):
        single = Batch(
            features={m: x[i : i + 1] for m, x in batch.features.items()},
            masks={m: x[i : i + 1] for m, x in batch.masks.items()},
            label=batch.label[i : i + 1],
            ids=[batch.ids[i]],
        )
        torch.testing.assert_close(model(single).prediction, together[i : i + 1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_padding_invariance(name):
    if name in PADDING_EXCEPTIONS:
        pytest.skip(PADDING_EXCEPTIONS[name])
    model = build(name).eval()
    batch = make_batch(SPECS["sentiment"], 4)
    padded = copy.deepcopy(batch)
    for m in padded.features:
        extra = 3
        b, _, d = padded.features[m].shape
        padded.features[m] = torch.cat([padded.features[m], torch.randn(b, extra, d) * 10], dim=1)  # garbage on padding
        padded.masks[m] = torch.cat([padded.masks[m], torch.zeros(b, extra, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(model(padded).prediction, model(batch).prediction, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_eval_forward_is_deterministic_and_never_touches_aux(name):
    model = build(name).eval()
    calls = []
    if hasattr(model, "aux"):
        for module in model.aux.modules():
            module.register_forward_hook(lambda *_: calls.append(1))
    batch = make_batch(SPECS["sentiment"], 4)
    torch.testing.assert_close(model(batch).prediction, model(batch).prediction)
    assert not calls


@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_round_trip(name, tmp_path):
    model = build(name).eval()
    batch = make_batch(SPECS["sentiment"], 4)
    path = save_checkpoint(tmp_path / "m.pt", model, metrics={"valid": {"mae": 0.5}})
    restored = load_model(path)
    assert type(restored) is type(model) and restored.config == model.config and restored.spec == model.spec
    torch.testing.assert_close(restored(batch).prediction, model(batch).prediction, rtol=0, atol=0)


@pytest.mark.parametrize("name", MODELS)
def test_unknown_override_is_a_clear_error(name):
    with pytest.raises(ValueError, match="has no field 'not_a_field'; valid fields"):
        create_model(name, SPECS["sentiment"], not_a_field=3)


def test_unknown_model_name_lists_the_available_ones():
    with pytest.raises(ValueError, match="unknown model 'lfm'; available models: .*lmf"):
        create_model("lfm", SPECS["sentiment"])


@pytest.mark.parametrize("name", MODELS)
def test_a_few_steps_lower_the_loss(name):
    model = build(name).train()
    batch = make_batch(SPECS["sentiment"], 8, seed=3)
    optimizer = torch.optim.Adam(model.param_groups(TrainConfig(lr=1e-2)))
    for _ in range(WARM_UP.get(name, (0,))[0]):
        model.loss(batch)
    first = model.loss(batch).total.item()
    for _ in range(30):
        optimizer.zero_grad()
        model.loss(batch).total.backward()
        optimizer.step()
    assert model.loss(batch).total.item() < first
