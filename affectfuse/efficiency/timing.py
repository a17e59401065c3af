"""Latency: a model, one batch and its optimiser, timed as the trainer runs them."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..config import Recipe
from ..data.batch import Batch
from ..engine.train import autocast, build_optimizer, grad_scaler, optimizer_step
from .shapes import Precision, Shape, random_batch, recipe_for

# ---------------------------------------------------------------------------------------------------------------------
# Timing and memory
# ---------------------------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(run: Callable[[], object], *, repeats: int, warmup: int, device: torch.device) -> float:
    """Median wall time of `run` over `repeats` timed calls after `warmup` untimed ones."""
    for _ in range(warmup):
        run()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclass
class Runner:
    """A model, one batch and an optimiser, with the forward and training-step closures the profiler times."""

    model: nn.Module
    batch: Batch
    recipe: Recipe[Any]
    device: torch.device
    precision: Precision = "fp32"
    compile: bool = False
    optimizer: torch.optim.Optimizer = field(init=False)
    scaler: torch.amp.GradScaler | None = field(init=False)

    def __post_init__(self) -> None:
        self.optimizer = build_optimizer(self.model, self.recipe.train)
        self.scaler = grad_scaler(self.device, self.precision)
        self._forward: Callable[[Batch], Any] = self.model
        self._loss: Callable[[Batch], Any] = self.model.loss
        if self.compile:
            # Both entry points: `loss` may run the network several times (EMT-DLFR's two views, DMD's branches).
            self._forward = torch.compile(self.model)
            self._loss = torch.compile(self.model.loss)

    def forward(self) -> None:
        self.model.eval()
        with torch.no_grad(), autocast(self.device, self.precision):
            self._forward(self.batch)

    def train_step(self) -> None:
        """What `train.train_epoch` does for one batch (accumulate = 1)."""
        self.model.train()
        with autocast(self.device, self.precision):
            total = self._loss(self.batch).total
        (self.scaler.scale(total) if self.scaler else total).backward()
        optimizer_step(self.model, self.optimizer, self.recipe.train, self.scaler)


def build_runner(
    name: str,
    shape: Shape,
    batch_size: int,
    *,
    device: str = "cpu",
    precision: Precision = "fp32",
    compile: bool = False,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
) -> Runner:
    from ..config.registry import create_model

    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch.cuda.is_available() is False on this machine")
    autocast(dev, precision)  # refuses fp16 on CPU before anything is built
    recipe = recipe_for(name, shape)
    spec = shape.spec()
    torch.manual_seed(seed)
    model = create_model(name, spec, recipe.model, **(overrides or {})).to(dev)
    batch = random_batch(spec, batch_size, seed=seed, device=dev)
    return Runner(model=model, batch=batch, recipe=recipe, device=dev, precision=precision, compile=compile)
