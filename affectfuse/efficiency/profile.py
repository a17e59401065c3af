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
import math
import os
from dataclasses import dataclass
from typing import Any

import torch

from .counting import count_flops, count_parameters, count_training_flops
from .memory import cpu_peak_memory, cuda_peak_memory
from .shapes import Precision, Shape, parse_shape
from .timing import build_runner, median_seconds

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


