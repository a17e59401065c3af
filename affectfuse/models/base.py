"""The contract every method honours: `forward(batch) -> Output`, `loss(batch) -> Losses`, `param_groups(train)`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import InputSpec, TrainConfig
from ..data.batch import Batch


@dataclass
class Output:
    prediction: Tensor
    """(B, K) scores for regression; (B, K, C) logits for classification."""


@dataclass
class Losses:
    total: Tensor
    """The scalar the trainer back-propagates."""
    terms: dict[str, Tensor]
    """Every named term of the method's objective, for logging."""
    prediction: Tensor
    """Same as `Output.prediction`, so the trainer needs no second forward for training metrics."""


@dataclass(frozen=True)
class Stage:
    """One optimisation stage of a training epoch, for methods trained in alternating stages (MMIM: first the
    MI estimators' likelihood, then the main objective, each with its own optimiser).

    The generic trainer runs a model's stages in order, each as its own pass over the training data: the stage's
    `loss` is back-propagated and only the parameters whose names `params` selects are stepped, by an optimiser of
    their own (built from the model's `param_groups`, restricted to them). Every trainable parameter belongs to exactly
    one stage. Gradients of all parameters are zeroed before each batch and the recipe's clipping sees all of them
    (as a training loop that calls `model.zero_grad()` and clips `model.parameters()`).
    """

    name: str
    loss: Callable[[Batch], Losses]
    params: Callable[[str], bool]
    """Parameter name -> whether this stage's optimiser steps it."""
    fraction: float = 1.0
    """Share of the epoch's batches this stage runs on (its pass stops after ceil(fraction x batches))."""
    start: Callable[[], None] | None = None
    """Called before the stage's pass (e.g. to clear a memory the loss keeps across the batches of a pass)."""


def task_loss(prediction: Tensor, label: Tensor, spec: InputSpec) -> Tensor:
    """L1 for regression (as in the LMF/TFN/MMSA code), cross-entropy per target for classification."""
    if spec.task == "regression":
        return F.l1_loss(prediction, label.to(prediction.dtype))
    return F.cross_entropy(prediction.reshape(-1, spec.num_classes), label.reshape(-1))


class FusionModel(nn.Module):
    """Base of every method. Subclasses implement `forward`; most inherit `loss` and `param_groups`.

    Training-only modules live under `self.aux` (an `nn.ModuleDict`) so that `forward` provably never needs them
    and profiling can report inference-time parameters without per-model code.
    """

    model_name: str = ""

    def __init__(self, config: Any, spec: InputSpec) -> None:
        super().__init__()
        self.config = config
        self.spec = spec

    def forward(self, batch: Batch) -> Output:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, batch: Batch) -> Losses:
        prediction = self(batch).prediction
        task = task_loss(prediction, batch.label, self.spec)
        return Losses(total=task, terms={"task": task.detach()}, prediction=prediction.detach())

    def param_groups(self, train: TrainConfig) -> list[dict[str, Any]]:
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": train.lr}]

    def stages(self) -> list[Stage] | None:
        """The optimisation stages of an epoch, in order (`Stage`); None (the default): one stage, `loss` over every
        parameter with one optimiser."""
        return None

    def shape_output(self, flat: Tensor) -> Tensor:
        """(B, K*C) head output -> (B, K) scores or (B, K, C) logits, as `spec` declares."""
        if self.spec.task == "regression":
            return flat.reshape(flat.shape[0], self.spec.num_targets)
        return flat.reshape(flat.shape[0], self.spec.num_targets, self.spec.num_classes)


def with_rest(model: nn.Module, groups: list[dict[str, Any]], train: TrainConfig) -> list[dict[str, Any]]:
    """`groups` (a method's own learning rates, e.g. per encoder) plus one group of every other trainable parameter at
    the training config's lr and weight decay; empty groups are left out."""
    chosen = {id(p) for g in groups for p in g["params"]}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in chosen]
    groups = [*groups, {"params": rest, "lr": train.lr, "weight_decay": train.weight_decay}]
    return [g for g in groups if g["params"]]


@torch.no_grad()
def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
