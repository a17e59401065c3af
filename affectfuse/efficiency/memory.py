"""Peak memory: CUDA's allocator statistics, or on CPU a child process's peak anonymous resident memory."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from typing import Any

import torch
from torch import nn

from .shapes import Precision, Shape
from .timing import Runner, build_runner


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
    from ..engine import train  # noqa: F401

    lstm, linear = nn.LSTM(4, 4, batch_first=True), nn.Linear(4, 4)
    optimizer = torch.optim.Adam([*lstm.parameters(), *linear.parameters()])
    x = torch.randn(2, 3, 4)
    y = torch.nn.functional.scaled_dot_product_attention(linear(x), x, x)
    (lstm(y)[0].sum()).backward()
    optimizer.step()


def _measure_cpu_memory_child() -> None:
    """Entry point of the memory child process: reads its arguments (JSON from `cpu_peak_memory`) from stdin and
    prints {"forward": bytes, "train": bytes}."""
    a = json.loads(sys.stdin.buffer.read())
    a["shape"] = Shape(**{**a["shape"], "targets": tuple(a["shape"]["targets"])})
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
    """Peak resident bytes of one forward and of one training step, measured in a fresh child process (see
    `affectfuse.efficiency.profile`); None where /proc is not available."""
    if not cpu_memory_supported():
        return None
    arguments = json.dumps(
        {
            "name": name,
            "shape": dataclasses.asdict(shape),
            "batch": batch_size,
            "precision": precision,
            "overrides": _dotted(overrides or {}),
            "threads": torch.get_num_threads(),
        }
    ).encode()
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    code = "from affectfuse.efficiency.memory import _measure_cpu_memory_child as m; m()"
    done = subprocess.run([sys.executable, "-c", code], input=arguments, capture_output=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory measurement of {name} failed:\n{done.stderr.decode().strip()[-2000:]}")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def _dotted(overrides: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Overrides with nested configs (e.g. a `Modalities`) spelled as dotted keys, so that they travel as JSON."""
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            flat.update(_dotted(dataclasses.asdict(value), f"{prefix}{key}."))
        elif isinstance(value, dict):
            flat.update(_dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


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
