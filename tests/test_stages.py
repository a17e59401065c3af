"""Optimisation stages (models.base.Stage): the generic trainer runs each stage's loss over its share of the epoch
and steps only the stage's parameters, with an optimiser of its own."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from affectfuse.config import InputSpec, TrainConfig
from affectfuse.config.registry import create_model
from affectfuse.data.batch import Batch
from affectfuse.engine.train import build_stage_optimizers, train_stages
from affectfuse.models.base import FusionModel, Losses, Output, Stage, task_loss

from .conftest import SPECS

SPEC = InputSpec(dims={"audio": 3}, lengths={"audio": 2})


class TwoStages(FusionModel):
    """An estimator `critic` fitted in a first stage, a predictor `net` trained in a second; both losses reach both."""

    def __init__(self, *, fraction: float = 1.0) -> None:
        super().__init__(None, SPEC)
        self.net = nn.Linear(3, 1)
        self.critic = nn.Linear(3, 1)
        self.fraction = fraction
        self.seen: dict[str, int] = {"fit_critic": 0, "main": 0}
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def forward(self, batch: Batch) -> Output:
        return Output(self.net(batch.features["audio"].mean(1)))

    def stage_loss(self, name: str, batch: Batch) -> Losses:
        self.seen[name] += 1
        x = batch.features["audio"].mean(1)
        prediction = self.net(x)
        if name == "fit_critic":
            total = (self.critic(x) - prediction).pow(2).mean()
        else:
            total = task_loss(prediction, batch.label, self.spec) + self.critic(x).mean() ** 2
        return Losses(total=total, terms={"part": total.detach()}, prediction=prediction.detach())

    def snapshot(self) -> None:
        self.snapshots.append({k: v.detach().clone() for k, v in self.state_dict().items()})

    def stages(self) -> list[Stage]:
        return [
            Stage("fit_critic", lambda b: self.stage_loss("fit_critic", b), lambda n: n.startswith("critic."),
                  fraction=self.fraction, start=self.snapshot),
            Stage("main", lambda b: self.stage_loss("main", b), lambda n: n.startswith("net."), start=self.snapshot),
        ]


def batches(n: int) -> list[Batch]:
    g = torch.Generator().manual_seed(0)
    return [Batch(features={"audio": torch.randn(4, 2, 3, generator=g)}, masks={"audio": torch.ones(4, 2, dtype=bool)},
                  label=torch.randn(4, 1, generator=g), ids=[str(i) for i in range(4)]) for _ in range(n)]


def test_each_stage_steps_only_its_parameters_in_order():
    torch.manual_seed(0)
    model = TwoStages(fraction=0.5)
    train = TrainConfig(lr=0.1)
    stages = model.stages()
    optimizers = build_stage_optimizers(model, train, stages)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    terms = train_stages(model, batches(4), stages, optimizers, train, torch.device("cpu"))
    before_first, before_main = model.snapshots
    after = model.state_dict()
    assert all(torch.equal(before_first[k], initial[k]) for k in initial)
    # the first stage stepped the critic only, although its loss also reaches the predictor
    assert not torch.equal(before_main["critic.weight"], initial["critic.weight"])
    assert torch.equal(before_main["net.weight"], initial["net.weight"])
    # the main stage stepped the predictor only, although its loss also reaches the critic
    assert torch.equal(after["critic.weight"], before_main["critic.weight"])
    assert not torch.equal(after["net.weight"], before_main["net.weight"])
    assert model.seen == {"fit_critic": 2, "main": 4}  # fraction 0.5 of 4 batches
    assert set(terms) == {"total", "part", "fit_critic/total", "fit_critic/part"}
    assert all(p.grad is None for p in model.parameters())  # no gradient left over for the next stage's clipping


def test_stages_must_partition_the_parameters():
    model = TwoStages()
    overlapping = [Stage("a", model.loss, lambda n: True), Stage("b", model.loss, lambda n: n.startswith("net."))]
    with pytest.raises(ValueError, match="must each own their parameters"):
        build_stage_optimizers(model, TrainConfig(), overlapping)
    empty = [*model.stages(), Stage("c", model.loss, lambda n: False)]
    with pytest.raises(ValueError, match="stage 'c' .* selects no trainable parameter"):
        build_stage_optimizers(model, TrainConfig(), empty)


def test_models_train_in_one_stage_by_default():
    model = create_model("tfr_net", SPECS["sentiment"], dim=4, heads=2, layers=1)
    assert model.stages() is None  # fit then takes the single-optimiser path tests/test_train.py covers


def test_fit_runs_mmim_in_its_two_stages_and_refuses_compile():
    from affectfuse.data.synthetic import make_synthetic
    from affectfuse.engine.train import fit

    corpus = make_synthetic(n_train=48, n_valid=24, n_test=8, length=5, seed=5)
    torch.manual_seed(0)
    model = create_model("mmim", corpus.spec, audio_hidden=4, vision_hidden=4, audio_out=8, vision_out=8,
                         fusion_hidden=6, mmilb_fraction=0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = {"mmilb": 0, "main": 0}
    mmilb_loss, main_loss = model.mmilb_loss, model.loss
    model.mmilb_loss = lambda b: calls.__setitem__("mmilb", calls["mmilb"] + 1) or mmilb_loss(b)
    model.loss = lambda b: calls.__setitem__("main", calls["main"] + 1) or main_loss(b)
    train = TrainConfig(lr=1e-2, batch_size=16, max_epochs=2, patience=5, device="cpu")
    result = fit(model, corpus.split("train"), corpus.split("valid"), train, progress=False)
    assert calls == {"mmilb": 2 * 2, "main": 2 * 3}  # per epoch: half of the 3 batches, then all of them
    assert set(result.history[0]["train"]) >= {"total", "task", "nce", "entropy", "mmilb/total", "mmilb/lld"}
    after = model.state_dict()
    assert not torch.equal(after["aux.mmilb.tv.mu.0.weight"], before["aux.mmilb.tv.mu.0.weight"])
    assert not torch.equal(after["linear_1.weight"], before["linear_1.weight"])
    assert torch.equal(after["aux.mmilb.tv.entropy_weight"], before["aux.mmilb.tv.entropy_weight"])
    with pytest.raises(ValueError, match="trains in stages \\(mmilb, main\\).*train.compile"):
        fit(model, corpus.split("train"), corpus.split("valid"), dataclasses.replace(train, compile=True),
            progress=False)
