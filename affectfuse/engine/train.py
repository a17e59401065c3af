"""THE training loop, identical for every method.

It knows nothing about any model beyond the contract in `models/base.py`: it calls `model.loss(batch)`, back-propagates
`total`, logs `terms`, builds the optimiser from `model.param_groups(train)` (one per stage for a model that declares
optimisation stages, `FusionModel.stages`: each stage a pass of its own loss stepping its own parameters), scores
the validation split with `model(batch).prediction`, early-stops on a metric whose direction the metric declares, and
keeps the best weights. The test split is never seen here: model selection uses validation only.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import TrainConfig
from ..data.batch import Batch
from ..data.corpus import BatchLoader, Split
from ..io import append_line, ensure_folder
from ..progress import run_position
from .checkpoint import save_checkpoint
from .evaluate import evaluate
from .metrics import metrics_for


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was requested but CUDA is not available here; use --device cpu or auto")
    if not (name == "cpu" or name.startswith("cuda")):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {name!r}")
    return torch.device(name)


PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision: CUDA autocast to bf16/fp16; CPU autocast to bf16; fp16 on CPU is refused."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError("precision 'fp16' needs CUDA: CPU autocast supports bfloat16 only (use bf16 or fp32)")
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """fp16 gradients underflow without loss scaling; bf16 has float32's range and needs none."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" and device.type == "cuda" else None


def optimizer_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    train: TrainConfig,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """Clip (by value, then by norm, as the recipe asks) on the true gradients, step, and zero the gradients."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    if train.grad_clip_value > 0:
        torch.nn.utils.clip_grad_value_(model.parameters(), train.grad_clip_value)
    if train.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


class EarlyStopping:
    """Tracks the best validation score in the metric's own direction; NaN never counts as an improvement."""

    def __init__(self, *, patience: int, higher_is_better: bool) -> None:
        self.patience = patience
        self.higher_is_better = higher_is_better
        self.best = -math.inf if higher_is_better else math.inf
        self.bad_epochs = 0

    def step(self, score: float) -> bool:
        """Record one epoch's score; True if it is a new best."""
        improved = not math.isnan(score) and (score > self.best if self.higher_is_better else score < self.best)
        if improved:
            self.best, self.bad_epochs = score, 0
        else:
            self.bad_epochs += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience


@dataclass
class FitResult:
    best_epoch: int
    monitor: str
    valid: dict[str, float]
    """Validation metrics of the selected (best) epoch."""
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None


def fit(
    model: Any,
    train_split: Split,
    valid_split: Split,
    train: TrainConfig,
    *,
    out_dir: Path | str | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train `model` on `train_split`, select the epoch with the best validation `train.monitor`.

    On return the model holds the best epoch's weights (in eval mode). With `out_dir`, the best checkpoint is kept in
    `out_dir/best.pt` (written atomically on each improvement) and every epoch appends a line to `out_dir/log.jsonl`
    (never truncated).
    `on_epoch` is called with each epoch's log record (for TensorBoard, or Optuna's pruning); an exception it raises
    stops training and propagates.

    Data-parallel: launched by `torchrun` (WORLD_SIZE > 1), or inside an initialised `torch.distributed` process
    group, each process trains a `DistributedDataParallel` copy on its share of every global batch of
    `train.batch_size` samples; gradients are averaged, so the run is the single-process run with that batch size.
    Every process scores the whole validation split (identical weights, identical early stopping); only rank 0 writes.
    """
    rank, world_size = init_distributed()
    if world_size > 1 and train.batch_size < world_size:
        raise ValueError(f"batch_size {train.batch_size} is smaller than the {world_size} data-parallel processes")
    device = resolve_device(train.device)
    if world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))  # one GPU per process
    autocast(device, train.precision)  # refuses fp16 on CPU before anything trains
    suite = metrics_for(model.spec)
    monitor = suite.monitor(train.monitor)
    if world_size > 1 and device.type == "cuda":
        # batch statistics over the global batch, as one process would compute them (SyncBatchNorm is CUDA-only:
        # on CPU each process normalises by its own share's statistics)
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    stages, stage_optimizers, optimizer = build_optimizers(model, train, world_size)
    # `loss` may run the network several times (EMT-DLFR's two views, DMD's branches), so it is what gets compiled
    loss_fn = torch.compile(model.loss) if train.compile else model.loss
    ddp = None
    if world_size > 1:
        # DDP hooks gradients through its own forward; _LossForward makes that forward the model's loss.
        ddp = torch.nn.parallel.DistributedDataParallel(
            _LossForward(model, loss_fn), device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,  # auxiliary heads (DMD, EMT-DLFR) may skip parameters in some steps
        )
    train_loader = BatchLoader(
        train_split, batch_size=train.batch_size, shuffle=True, seed=train.seed, bucket=train.bucket
    )
    valid_loader = BatchLoader(valid_split, batch_size=max(train.batch_size, 256))
    scaler = grad_scaler(device, train.precision)
    stopper = EarlyStopping(patience=train.patience, higher_is_better=suite.higher_is_better(monitor))
    scheduler = None
    if train.plateau_patience > 0:
        mode = "max" if suite.higher_is_better(monitor) else "min"
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=mode, factor=train.plateau_factor, patience=train.plateau_patience
        )
    out = Path(out_dir) if out_dir is not None and rank == 0 else None
    log_path = out / "log.jsonl" if out else None
    if out:
        ensure_folder(out)

    best_state, best_epoch, best_valid, history = None, -1, {}, []
    epochs = tqdm(
        range(train.max_epochs),
        desc=f"{model.model_name} seed {train.seed}",
        unit="epoch",
        disable=not progress,
        leave=False,
        position=run_position(),  # below a sweep's / run's / tune's overall bar
    )
    for epoch in epochs:
        start = time.perf_counter()
        train_terms = (
            train_stages(model, train_loader, stages, stage_optimizers, train, device, scaler=scaler)
            if stages
            else train_epoch(model, train_loader, optimizer, train, device, ddp=ddp, loss_fn=loss_fn, scaler=scaler)
        )
        if not math.isfinite(train_terms["total"]):
            raise FloatingPointError(
                f"{model.model_name}: training loss became {train_terms['total']} in epoch {epoch}; "
                f"lower the learning rate (now {train.lr}) or enable gradient clipping (--set train.grad_clip=1.0)"
            )
        valid = evaluate(model, valid_loader, suite=suite)
        improved = stopper.step(suite.score(valid, monitor))
        if scheduler is not None and math.isfinite(valid[monitor]):
            scheduler.step(valid[monitor])
        record = {
            "epoch": epoch,
            "train": train_terms,
            "valid": valid,
            "best": improved,
            "seconds": round(time.perf_counter() - start, 3),
        }
        history.append(record)
        if log_path:  # appended, never truncated: an earlier attempt's lines are kept (train_model moves them aside)
            append_line(log_path, json.dumps(record, default=float))
        if on_epoch is not None:
            on_epoch(record)
        if improved:
            best_epoch, best_valid = epoch, valid
            best_state = copy.deepcopy(model.state_dict())
            if out:
                save_checkpoint(out / "best.pt", model, train=train, metrics={"valid": valid, "epoch": epoch})
        epochs.set_postfix({"loss": f"{train_terms['total']:.4f}", monitor: f"{valid[monitor]:.4f}"})
        if stopper.should_stop:
            break
    if best_state is None:
        raise RuntimeError(f"{model.model_name}: validation {monitor} was never finite; nothing to select")
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(
        best_epoch=best_epoch,
        monitor=monitor,
        valid=best_valid,
        history=history,
        checkpoint=Path(out_dir) / "best.pt" if out_dir is not None else None,
    )


def init_distributed() -> tuple[int, int]:
    """(rank, world size): joins the process group `torchrun` describes (WORLD_SIZE > 1) unless one exists already;
    (0, 1) for a single process. NCCL when CUDA is available, gloo (CPU) otherwise."""
    import torch.distributed as dist

    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 0, 1
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def is_main_process() -> bool:
    """False on every data-parallel process but rank 0 (they must not write results)."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class _LossForward(torch.nn.Module):
    """Makes `model.loss` the forward of the module DistributedDataParallel wraps (DDP syncs gradients of what
    goes through its forward); returns (total, terms) so DDP can find the tensors that were used."""

    def __init__(self, model: torch.nn.Module, loss_fn: Callable[[Batch], Any]) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn  # model.loss, or its compiled version

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        losses = self.loss_fn(batch)
        return losses.total, dict(losses.terms)


def shard_batch(batch: Batch, rank: int, world_size: int) -> Batch:
    """This process's contiguous share of a global batch (sizes differ by at most one sample)."""
    index = torch.tensor_split(torch.arange(len(batch)), world_size)[rank]
    lo, hi = (int(index[0]), int(index[-1]) + 1) if len(index) else (0, 0)
    return Batch(
        features={m: x[lo:hi] for m, x in batch.features.items()},
        masks={m: x[lo:hi] for m, x in batch.masks.items()},
        label=batch.label[lo:hi],
        ids=batch.ids[lo:hi],
    )


def new_optimizer(groups: list[dict[str, Any]], train: TrainConfig) -> torch.optim.Optimizer:
    """`train.optimizer` over `groups`, fused where PyTorch has the kernel: one fused kernel for every parameter
    instead of ~10 small ops each (the default on CPU), 2.6 ms instead of 14 ms per step for MulT's 657 tensors; the
    same update up to float rounding."""
    optimizer_class = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[train.optimizer]
    params = [p for group in groups for p in group["params"]]
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return optimizer_class(groups, lr=train.lr, weight_decay=train.weight_decay, fused=fused or None)


def build_optimizer(model: Any, train: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser over `model.param_groups(train)`; refuses groups that skip or repeat a parameter."""
    if train.accumulate < 1:
        raise ValueError(f"accumulate must be >= 1, got {train.accumulate}")
    optimizer = new_optimizer(model.param_groups(train), train)
    check_param_groups(model, optimizer)
    return optimizer


def build_optimizers(
    model: Any, train: TrainConfig, world_size: int = 1
) -> tuple[list[Any] | None, list[torch.optim.Optimizer], torch.optim.Optimizer]:
    """(the model's stages or None, one optimiser per stage, the optimiser the scheduler follows): for a staged
    model the last (main) stage's, as MMIM's official trainer schedules its main optimiser; else the one optimiser."""
    stages = model.stages()
    if not stages:
        return None, [], build_optimizer(model, train)
    if world_size > 1 or train.compile:
        raise ValueError(f"{model.model_name} trains in stages ({', '.join(s.name for s in stages)}), which "
                         "data-parallel training and train.compile do not support; run it in one process, uncompiled")
    optimizers = build_stage_optimizers(model, train, stages)
    return stages, optimizers, optimizers[-1]


def build_stage_optimizers(model: Any, train: TrainConfig, stages: list[Any]) -> list[torch.optim.Optimizer]:
    """One optimiser per stage (`models.base.Stage`) over `model.param_groups(train)` restricted to the parameters the
    stage selects; refuses stages that leave a parameter out, share one, or select none."""
    names = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    owner: dict[str, list[str]] = {n: [s.name for s in stages if s.params(n)] for n in names.values()}
    wrong = {n: o for n, o in owner.items() if len(o) != 1}
    if wrong:
        raise ValueError(f"stages of {type(model).__name__} must each own their parameters; owners: "
                         f"{dict(list(wrong.items())[:4])}")
    groups = model.param_groups(train)
    optimizers = []
    for stage in stages:
        mine = [g | {"params": [p for p in g["params"] if stage.params(names[id(p)])]} for g in groups]
        mine = [g for g in mine if g["params"]]
        if not mine:
            raise ValueError(f"stage {stage.name!r} of {type(model).__name__} selects no trainable parameter")
        optimizers.append(new_optimizer(mine, train))
    check_param_groups(model, _Union(optimizers))
    return optimizers


class _Union:
    """The parameter groups of several optimisers, as `check_param_groups` reads them."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.param_groups = [g for o in optimizers for g in o.param_groups]


def train_stages(
    model: Any,
    loader: BatchLoader,
    stages: list[Any],
    optimizers: list[torch.optim.Optimizer],
    train: TrainConfig,
    device: torch.device,
    *,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """One epoch of a staged model: each stage's pass over (its fraction of) `loader`, in order. The last stage's
    terms are returned as they are, every earlier stage's under `<stage>/`."""
    terms: dict[str, float] = {}
    for i, (stage, optimizer) in enumerate(zip(stages, optimizers, strict=True)):
        if stage.start is not None:
            stage.start()
        limit = max(1, math.ceil(stage.fraction * len(loader)))
        done = train_epoch(model, loader, optimizer, train, device, loss_fn=stage.loss, scaler=scaler, limit=limit,
                           zero_all=True)
        last = i == len(stages) - 1
        terms |= done if last else {f"{stage.name}/{k}": v for k, v in done.items()}
    return terms


def train_epoch(
    model: Any,
    loader: BatchLoader,
    optimizer: torch.optim.Optimizer,
    train: TrainConfig,
    device: torch.device,
    *,
    ddp: torch.nn.parallel.DistributedDataParallel | None = None,
    loss_fn: Callable[[Batch], Any] | None = None,
    scaler: torch.amp.GradScaler | None = None,
    limit: int | None = None,
    zero_all: bool = False,
) -> dict[str, float]:
    """One pass over `loader` (its first `limit` batches); returns every loss term averaged over samples (over all
    processes under `ddp`).

    `loss_fn` defaults to `model.loss` (`fit` passes the compiled one with `train.compile`, `train_stages` a stage's
    loss); the loss runs under `train.precision`'s autocast, and `scaler` scales it for fp16. `zero_all`: zero every
    parameter's gradient after each step, not only the optimiser's (a stage's loss reaches parameters it does not
    step)."""
    loss_fn = loss_fn or model.loss
    model.train()
    sums: dict[str, torch.Tensor] = {}
    count = 0
    optimizer.zero_grad(set_to_none=True)
    if zero_all:
        model.zero_grad(set_to_none=True)
    last = len(loader) if limit is None else min(limit, len(loader))
    for step, batch in enumerate(loader, start=1):
        if step > last:
            break
        stepping = not (step % train.accumulate and step != last)
        if ddp is None:
            with autocast(device, train.precision):
                losses = loss_fn(batch.to(device))
            total, terms = losses.total, losses.terms
            (scaler.scale(total) if scaler else total).backward()
        else:
            import torch.distributed as dist

            global_size = len(batch)
            batch = shard_batch(batch, dist.get_rank(), dist.get_world_size())
            # DDP averages gradients over processes; weighting each share by its size makes that the gradient of
            # the global batch's mean loss even when the shares differ by a sample.
            weight = len(batch) * dist.get_world_size() / global_size
            with contextlib.nullcontext() if stepping else ddp.no_sync():  # all-reduce only before a step
                with autocast(device, train.precision):
                    total, terms = ddp(batch.to(device))
                scaled = total * weight
                (scaler.scale(scaled) if scaler else scaled).backward()
        for name, value in {"total": total, **terms}.items():
            sums[name] = sums.get(name, 0) + value.detach().float() * len(batch)  # summed on device: no sync per step
        count += len(batch)
        if stepping:  # else accumulate gradients over `accumulate` batches, as the official EMT-DLFR/DMD code does
            optimizer_step(model, optimizer, train, scaler)
            if zero_all:
                model.zero_grad(set_to_none=True)
    if ddp is not None:  # the logged loss is the global one, so every process sees (and checks) the same value
        import torch.distributed as dist

        names = list(sums)
        packed = torch.stack([torch.as_tensor(sums[k], dtype=torch.float64, device=device) for k in names] + [
            torch.tensor(float(count), dtype=torch.float64, device=device)])
        dist.all_reduce(packed)
        sums, count = dict(zip(names, packed[:-1], strict=True)), int(packed[-1])
    return {k: float(v) / count for k, v in sums.items()}


def check_param_groups(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Every trainable parameter must be optimised exactly once (MMSA's positional slice left LMF's fusion
    weights untrained; this check makes such a bug an error)."""
    seen: dict[int, int] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            seen[id(p)] = seen.get(id(p), 0) + 1
    names = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    missing = [n for i, n in names.items() if i not in seen]
    twice = [names.get(i, "?") for i, c in seen.items() if c > 1]
    if missing or twice:
        raise ValueError(f"param_groups of {type(model).__name__}: not optimised {missing}, optimised twice {twice}")


def train_config_dict(train: TrainConfig) -> dict[str, Any]:
    return asdict(train)
