"""One efficiency profiler for every registered model: parameters, FLOPs/MACs, latency, peak memory, throughput.

Every model is measured the same way, on random full-length features of a named corpus shape (the worst case for
time and memory), with its own recipe for that corpus:

- **Parameters**: total, *inference* and *training-only*. Training-only modules are declared by the model, not
  guessed here: every `FusionModel` keeps them under its `aux` module (DMD's distillers, decoders and auxiliary
  heads; EMT-DLFR's SimSiam projectors, predictors and reconstruction heads), and `forward` never uses them
  (`tests/test_profile.py` checks this with hooks). Inference = total - training-only.
- **FLOPs** of one forward pass (eval mode) with `torch.utils.flop_counter.FlopCounterMode`; MACs = FLOPs / 2
  (the counter counts a multiply-add as 2 FLOPs). Only matrix products, convolutions and attention are counted
  (element-wise work is not), as in the papers' MAC tables. Two kernels the stock counter misses are added here:
  CPU fused attention (`_scaled_dot_product_flash_attention_for_cpu`, forward and backward) and the oneDNN LSTM
  layer (`mkldnn_rnn_layer`). Training-step FLOPs (forward + backward of the model's full training loss) too.
- **Latency**: median over `repeats` timed runs after `warmup` untimed ones, of one forward (eval, no grad) and of
  one full training step (zero grad, `model.loss`, backward, the recipe's gradient clipping, optimiser step), with
  `torch.cuda.synchronize` around each run on CUDA. Throughput = batch / median.
- **Peak memory**: CUDA: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats` (tensors only).
  CPU: PyTorch's CPU allocator keeps no statistics and `tracemalloc` does not see it, so a child process measures
  the peak *anonymous resident memory* (`VmHWM` from /proc, reset through /proc/self/clear_refs, minus the
  file-backed pages of the loaded libraries) above its own baseline taken after imports, with glibc's mmap
  threshold fixed at 64 KiB so that freed tensors go back to the OS instead of staying cached. One warm-up run
  precedes each measured run. Both figures include the weights and inputs; the training figure also includes
  gradients and the optimiser state. Linux only (elsewhere CPU memory is reported as unavailable).

`python -m affectfuse profile --help` for the command line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pickle
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from .config import InputSpec, Recipe
from .data.batch import Batch
from .train import autocast, build_optimizer, grad_scaler, optimizer_step

Precision = Literal["fp32", "bf16", "fp16"]


# ---------------------------------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """Feature dims and padded lengths of a corpus as the papers feed it, and which recipe applies."""

    name: str
    dims: dict[str, int]
    lengths: dict[str, int]
    recipe: str
    """Dataset key of the models' recipes (a model without one uses its defaults)."""
    task: Literal["regression", "classification"] = "regression"
    targets: tuple[str, ...] = ("sentiment",)
    num_classes: int = 0
    metric_family: str = "mosi"

    def spec(self) -> InputSpec:
        return InputSpec(
            dims=dict(self.dims),
            lengths=dict(self.lengths),
            task=self.task,
            targets=self.targets,
            num_classes=self.num_classes,
            metric_family=self.metric_family,  # type: ignore[arg-type]
            aligned=len(set(self.lengths.values())) == 1,
        )


MOSEI_DIMS = {"text": 768, "audio": 74, "vision": 35}
SHAPES: dict[str, Shape] = {
    # MMSA unaligned_50.pkl (spec §0.1): BERT 768 x 50, COVAREP 5 x 375, Facet 20 x 500.
    "mosi": Shape("mosi", {"text": 768, "audio": 5, "vision": 20}, {"text": 50, "audio": 375, "vision": 500}, "mosi"),
    # MMSA / DMD unaligned MOSEI: BERT 768 x 50, COVAREP 74 x 500, Facet 35 x 500.
    "mosei": Shape("mosei", MOSEI_DIMS, {"text": 50, "audio": 500, "vision": 500}, "mosei"),
    # MMSA unaligned_39.pkl: BERT-chinese 768 x 39, LibROSA 33 x 400, OpenFace2 709 x 55; labels in [-1, 1].
    "sims": Shape(
        "sims",
        {"text": 768, "audio": 33, "vision": 709},
        {"text": 39, "audio": 400, "vision": 55},
        "sims",
        metric_family="sims",
    ),
    # MulT iemocap_data_noalign.pkl: GloVe 300 x 20, COVAREP 74 x 400, Facet 35 x 500; 4 emotions x 2 classes.
    "iemocap": Shape(
        "iemocap",
        {"text": 300, "audio": 74, "vision": 35},
        {"text": 20, "audio": 400, "vision": 500},
        "iemocap",
        task="classification",
        targets=("neutral", "happy", "sad", "angry"),
        num_classes=2,
        metric_family="iemocap",
    ),
}


def parse_shape(text: str) -> Shape:
    """A named shape (`mosi`, `mosei`, `sims`, `iemocap`) or `T_l,T_a,T_v` lengths with MOSEI's feature dims."""
    if text in SHAPES:
        return SHAPES[text]
    parts = text.split(",")
    try:
        lengths = [int(p) for p in parts]
    except ValueError:
        lengths = []
    if len(lengths) != 3 or min(lengths) < 1:
        raise ValueError(
            f"--shape must be one of {', '.join(SHAPES)} or three positive lengths T_l,T_a,T_v (e.g. 50,500,500); "
            f"got {text!r}"
        )
    return Shape(text, MOSEI_DIMS, dict(zip(("text", "audio", "vision"), lengths, strict=True)), "mosei")


def random_batch(spec: InputSpec, batch_size: int, *, seed: int = 0, device: str | torch.device = "cpu") -> Batch:
    """Full-length random features (every step real) with labels of the spec's task."""
    if batch_size < 2:
        raise ValueError(f"batch size must be >= 2 (BatchNorm layers need two samples to train), got {batch_size}")
    g = torch.Generator().manual_seed(seed)
    features = {m: torch.randn(batch_size, spec.lengths[m], spec.dims[m], generator=g) for m in spec.modalities}
    masks = {m: torch.ones(batch_size, spec.lengths[m], dtype=torch.bool) for m in spec.modalities}
    if spec.task == "regression":
        low, high = spec.label_range or (-1.0, 1.0)
        label = torch.rand(batch_size, spec.num_targets, generator=g) * (high - low) + low
    else:
        label = torch.randint(0, spec.num_classes, (batch_size, spec.num_targets), generator=g)
    return Batch(features=features, masks=masks, label=label, ids=[f"s{i}" for i in range(batch_size)]).to(device)


def recipe_for(name: str, shape: Shape) -> Recipe[Any]:
    """The model's recipe for the shape's corpus; IEMOCAP-style per-emotion recipes use the first emotion's; a model
    with no recipe for the corpus uses its config defaults."""
    from .registry import default_recipe, get_entry

    recipes = get_entry(name).recipes
    if shape.recipe in recipes:
        return recipes[shape.recipe]
    prefixed = [key for key in recipes if key.startswith(f"{shape.recipe}-")]
    return recipes[prefixed[0]] if prefixed else default_recipe(name)


# ---------------------------------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------------------------------

TRAINING_ONLY_ATTRIBUTE = "aux"
"""Where every model declares its training-only modules (see `models.base.FusionModel`)."""


def training_only_modules(model: nn.Module) -> nn.Module | None:
    """The module holding `model`'s training-only parts (its `aux`), or None when it has none."""
    aux = getattr(model, TRAINING_ONLY_ATTRIBUTE, None)
    return aux if isinstance(aux, nn.Module) else None


def count_parameters(model: nn.Module) -> dict[str, int]:
    """{"total", "inference", "training_only"}: a parameter shared by `aux` and the rest counts as inference."""
    aux = training_only_modules(model)
    aux_ids = {id(p) for p in aux.parameters()} if aux is not None else set()
    inference_ids = {id(p) for n, p in model.named_parameters() if not n.startswith(f"{TRAINING_ONLY_ATTRIBUTE}.")}
    total = {id(p): p.numel() for p in model.parameters()}
    training_only = sum(total[i] for i in aux_ids - inference_ids)
    return {
        "total": sum(total.values()),
        "inference": sum(total.values()) - training_only,
        "training_only": training_only,
    }


# ---------------------------------------------------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------------------------------------------------


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001
    """CPU fused attention: QK^T and AV, 2 * B * h * T_q * T_k * (d_k + d_v)."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kw) -> int:  # noqa: ANN001
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _mkldnn_lstm_flop(input_shape, w_ih_shape, w_hh_shape, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001
    """One unpacked oneDNN LSTM layer over (T, B, D): input and recurrent products of the 4 gates at every step."""
    steps, batch = input_shape[0], input_shape[1]
    gates, d_in = w_ih_shape
    return 2 * steps * batch * gates * (d_in + w_hh_shape[1])


aten = torch.ops.aten
EXTRA_FLOP_FORMULAS: dict[Any, Callable[..., int]] = {
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flop,
    aten.mkldnn_rnn_layer: _mkldnn_lstm_flop,
}
"""Kernels the stock `FlopCounterMode` does not count (PyTorch 2.13): without them attention on CPU counts zero."""


def flop_counter() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS)


def count_flops(model: nn.Module, batch: Batch) -> int:
    """FLOPs of one eval-mode forward pass over `batch`."""
    was_training = model.training
    model.eval()
    counter = flop_counter()
    try:
        with torch.no_grad(), counter:
            model(batch)
    finally:
        model.train(was_training)
    return counter.get_total_flops()


def count_training_flops(model: nn.Module, batch: Batch) -> int:
    """FLOPs of the model's full training loss (every view and auxiliary term) plus its backward pass."""
    was_training = model.training
    model.train()
    counter = flop_counter()
    try:
        with counter:
            model.loss(batch).total.backward()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return counter.get_total_flops()


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
    from .registry import create_model

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


def _read_status(key: str) -> int:
    """A /proc/self/status memory field (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {key} field")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def _peak_anonymous() -> int:
    """Peak anonymous (heap / mmap) bytes since the last reset: VmHWM minus the file-backed pages (the shared
    libraries' code, paged in on first use), which stay constant once a warm-up run has touched them."""
    return _read_status("VmHWM") - (_read_status("VmRSS") - _read_status("RssAnon"))


def cpu_memory_supported() -> bool:
    return sys.platform.startswith("linux") and os.path.exists("/proc/self/clear_refs")


def _warm_runtime() -> None:
    """Import every model module and run a tiny training step (LSTM, attention, Adam), so that the Python modules and
    the one-time runtime buffers they allocate are in the baseline rather than in a model's figure."""
    from . import models, train  # noqa: F401

    lstm, linear = nn.LSTM(4, 4, batch_first=True), nn.Linear(4, 4)
    optimizer = torch.optim.Adam([*lstm.parameters(), *linear.parameters()])
    x = torch.randn(2, 3, 4)
    y = torch.nn.functional.scaled_dot_product_attention(linear(x), x, x)
    (lstm(y)[0].sum()).backward()
    optimizer.step()


def _measure_cpu_memory_child() -> None:
    """Entry point of the memory child process: reads its arguments (a pickle written by `cpu_peak_memory` in this
    package, never user data) from stdin and prints {"forward": bytes, "train": bytes}."""
    a = pickle.loads(sys.stdin.buffer.read())
    torch.set_num_threads(a["threads"])
    _warm_runtime()
    baseline = _read_status("RssAnon")
    runner = build_runner(a["name"], a["shape"], a["batch"], precision=a["precision"], overrides=a["overrides"])
    runner.forward()  # warm-up: one-time kernel caches belong to neither figure
    _reset_peak_rss()
    runner.forward()
    forward = _peak_anonymous() - baseline
    runner.train_step()  # warm-up, allocates the optimiser state (kept: it is part of a training step's footprint)
    runner.optimizer.zero_grad(set_to_none=True)
    _reset_peak_rss()
    runner.train_step()
    train = _peak_anonymous() - baseline
    print(json.dumps({"forward": forward, "train": train}))


def cpu_peak_memory(
    name: str, shape: Shape, batch_size: int, *, precision: Precision = "fp32", overrides: dict[str, Any] | None = None
) -> dict[str, int] | None:
    """Peak resident bytes of one forward and of one training step, measured in a fresh child process (module
    docstring); None where /proc is not available."""
    if not cpu_memory_supported():
        return None
    arguments = pickle.dumps(
        {
            "name": name,
            "shape": shape,
            "batch": batch_size,
            "precision": precision,
            "overrides": overrides or {},
            "threads": torch.get_num_threads(),
        }
    )
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    code = "from affectfuse.profile import _measure_cpu_memory_child as m; m()"
    done = subprocess.run([sys.executable, "-c", code], input=arguments, capture_output=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory measurement of {name} failed:\n{done.stderr.decode().strip()[-2000:]}")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def cuda_peak_memory(runner: Runner) -> dict[str, int]:
    runner.forward()
    torch.cuda.synchronize(runner.device)
    torch.cuda.reset_peak_memory_stats(runner.device)
    runner.forward()
    forward = torch.cuda.max_memory_allocated(runner.device)
    runner.train_step()
    runner.optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize(runner.device)
    torch.cuda.reset_peak_memory_stats(runner.device)
    runner.train_step()
    return {"forward": forward, "train": torch.cuda.max_memory_allocated(runner.device)}


# ---------------------------------------------------------------------------------------------------------------------
# The profile
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Profile:
    model: str
    shape: str
    batch: int
    device: str
    precision: str
    compiled: bool
    params_total: int
    params_inference: int
    params_training_only: int
    flops: int
    """One eval-mode forward pass of the whole batch."""
    macs: int
    """flops / 2."""
    train_flops: int
    """The full training loss and its backward pass, whole batch."""
    forward_ms: float
    train_step_ms: float
    forward_samples_per_s: float
    train_samples_per_s: float
    forward_peak_mb: float | None
    train_peak_mb: float | None
    memory_method: str
    repeats: int
    threads: int

    def row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


MEMORY_METHODS = {
    "cuda": "torch.cuda.max_memory_allocated (tensors)",
    "cpu": "peak anonymous RSS above a post-import baseline (child process, /proc VmHWM, mmap threshold 64 KiB)",
}


def profile_model(
    name: str,
    shape: Shape | str = "mosei",
    *,
    batch_size: int = 8,
    device: str = "cpu",
    repeats: int = 5,
    warmup: int = 1,
    precision: Precision = "fp32",
    compile: bool = False,
    memory: bool = True,
    overrides: dict[str, Any] | None = None,
) -> Profile:
    """Profile one registered model on random full-length features of `shape` (see the module docstring)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    shape = parse_shape(shape) if isinstance(shape, str) else shape
    runner = build_runner(
        name, shape, batch_size, device=device, precision=precision, compile=compile, overrides=overrides
    )
    params = count_parameters(runner.model)
    flops = count_flops(runner.model, runner.batch)
    train_flops = count_training_flops(runner.model, runner.batch)
    warmup = max(warmup, 1 if compile else 0)  # never time a compilation
    forward_s = median_seconds(runner.forward, repeats=repeats, warmup=warmup, device=runner.device)
    train_s = median_seconds(runner.train_step, repeats=repeats, warmup=warmup, device=runner.device)
    peaks: dict[str, int] | None = None
    if memory:
        if runner.device.type == "cuda":
            peaks = cuda_peak_memory(runner)
        else:
            peaks = cpu_peak_memory(name, shape, batch_size, precision=precision, overrides=overrides)
    mb = 1024**2
    return Profile(
        model=name,
        shape=shape.name,
        batch=batch_size,
        device=str(runner.device),
        precision=precision,
        compiled=compile,
        params_total=params["total"],
        params_inference=params["inference"],
        params_training_only=params["training_only"],
        flops=flops,
        macs=flops // 2,
        train_flops=train_flops,
        forward_ms=forward_s * 1e3,
        train_step_ms=train_s * 1e3,
        forward_samples_per_s=batch_size / forward_s,
        train_samples_per_s=batch_size / train_s,
        forward_peak_mb=peaks["forward"] / mb if peaks else None,
        train_peak_mb=peaks["train"] / mb if peaks else None,
        memory_method=MEMORY_METHODS[runner.device.type] if peaks else "not measured",
        repeats=repeats,
        threads=torch.get_num_threads(),
    )


def format_profiles(profiles: list[Profile]) -> str:
    """A Markdown table, one row per profile."""

    def mem(x: float | None) -> str:
        return "—" if x is None or math.isnan(x) else f"{x:,.0f}"

    lines = [
        "| model | shape | batch | params | inference | training-only | GMACs (fwd) | GFLOPs (train) | forward ms | "
        "train step ms | fwd samples/s | train samples/s | fwd peak MB | train peak MB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in profiles:
        lines.append(
            f"| {p.model} | {p.shape} | {p.batch} | {p.params_total:,} | {p.params_inference:,} | "
            f"{p.params_training_only:,} | {p.macs / 1e9:.3f} | {p.train_flops / 1e9:.2f} | {p.forward_ms:.1f} | "
            f"{p.train_step_ms:.1f} | {p.forward_samples_per_s:.1f} | {p.train_samples_per_s:.1f} | "
            f"{mem(p.forward_peak_mb)} | {mem(p.train_peak_mb)} |"
        )
    return "\n".join(lines)


def machine_description(device: str = "cpu") -> str:
    """The device in words, for result files."""
    import platform

    if device.startswith("cuda") and torch.cuda.is_available():
        what = torch.cuda.get_device_name(torch.device(device))
    else:
        what = platform.processor() or platform.machine()
        with contextlib.suppress(OSError):
            with open("/proc/cpuinfo") as f:
                names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
            what = f"{names[0]} ({len(names)} logical CPUs)" if names else what
    load = ""
    with contextlib.suppress(OSError):
        load = f", load average {os.getloadavg()[0]:.2f}"
    return f"{what}, torch {torch.__version__}, {torch.get_num_threads()} thread(s){load}"


# ---------------------------------------------------------------------------------------------------------------------
# Command line (wired into affectfuse.cli as `affectfuse profile`)
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class ProfileArgs:
    """Profile models on random full-length features of a corpus shape: parameters (inference vs training-only),
    FLOPs and MACs (= FLOPs / 2) of one forward, forward latency and training-step time (medians of warmed-up
    repeats), peak memory (CUDA: max_memory_allocated; CPU: peak anonymous resident memory of a child process,
    from /proc VmHWM, above its post-import baseline; tracemalloc cannot see torch's allocations) and samples/s.
    Each model uses its recipe for the shape's corpus."""

    model: tuple[str, ...] = ()
    """Registered model name(s) (see `affectfuse models`)."""
    all: bool = False
    """Profile every registered model."""
    shape: str = "mosei"
    """`mosi` (50/375/500), `mosei` (50/500/500), `sims` (39/400/55), `iemocap` (20/400/500), or T_l,T_a,T_v lengths
    with MOSEI's feature dims (768/74/35)."""
    batch: int = 8
    """Batch size (small by default so that CPU runs stay short)."""
    device: str = "cpu"
    """`cpu` or `cuda` (`cuda:N`)."""
    repeats: int = 5
    """Timed repeats; the median is reported."""
    warmup: int = 1
    """Untimed runs before timing."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Autocast precision: bf16/fp16 on CUDA, bf16 on CPU; fp16 on CPU is refused."""
    compile: bool = False
    """Run the forward pass and the training loss through `torch.compile` (compile time is not timed)."""
    memory: bool = True
    """Measure peak memory (on CPU this starts one child process per model)."""
    json: bool = False
    """Print one JSON object instead of a table."""


def cmd_profile(args: ProfileArgs) -> None:
    from .registry import get_entry, list_models

    if args.all == bool(args.model):
        raise ValueError("profile needs either --model NAME [NAME ...] or --all (not both)")
    names = list_models() if args.all else list(args.model)
    for name in names:
        get_entry(name)  # unknown names fail before any work
    shape = parse_shape(args.shape)
    profiles = []
    for name in names:
        profile = profile_model(
            name,
            shape,
            batch_size=args.batch,
            device=args.device,
            repeats=args.repeats,
            warmup=args.warmup,
            precision=args.precision,
            compile=args.compile,
            memory=args.memory,
        )
        profiles.append(profile)
        if not args.json:
            print(f"profiled {name}", file=sys.stderr, flush=True)
    if args.json:
        payload = {
            "machine": machine_description(args.device),
            "shape": dataclasses.asdict(shape),
            "macs_definition": "MACs = FLOPs / 2 (torch.utils.flop_counter counts a multiply-add as 2 FLOPs)",
            "profiles": [p.row() for p in profiles],
        }
        print(json.dumps(payload))
        return
    print(f"{machine_description(args.device)}; shape {shape.name} {shape.lengths}; medians of {args.repeats}")
    print(format_profiles(profiles))
    print(f"memory: {profiles[0].memory_method}; MACs = FLOPs / 2")
