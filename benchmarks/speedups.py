"""Before/after figures of every speed-up kept in the code, measured A/B in one process with the runs interleaved.

Each speed-up has a switch that restores the straightforward version (the code at the first commit of this work):

- `chunked`: attention with dropout on CPU through `layers.chunked_dropout_attention` (before: SDPA's unfused math
  path, which is what `scaled_dot_product_attention` runs on CPU whenever dropout_p > 0);
- `emt`: EMT-DLFR skips the last layer's local update where nothing reads it: in `forward` and for the complete
  view of the training loss (before: every local update computed). Encoding both views as one batch of 2B was
  tried and dropped: slower on CPU (RESULTS.md);
- `bucket`: length-bucketed batching of unaligned data (`BatchLoader(bucket=...)`; before: random batches, each
  trimmed to its longest sample);
- `precision`: not a switch but an option, `--precision bf16` (CPU autocast) against float32.

Timings interleave A and B repeat by repeat; medians of wall time and of this process's CPU time (single thread,
so CPU time is what a shared machine disturbs least) are reported with the load average.
Usage (CPU, about 8 minutes at batch 8):

    python benchmarks/speedups.py --out benchmarks/results/speedups_cpu.json
    python benchmarks/speedups.py --only precision --out benchmarks/results/precision_cpu.json   # one section
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from affectfuse.efficiency.profile import machine_description
from affectfuse.efficiency.shapes import parse_shape
from affectfuse.efficiency.timing import build_runner
from affectfuse.io import write_json
from affectfuse.models import layers
from affectfuse.models.emt_dlfr import EMTDLFR


@contextlib.contextmanager
def straightforward_attention() -> Iterator[None]:
    original = layers.use_chunked_dropout_attention
    layers.use_chunked_dropout_attention = lambda q: False  # every attention through SDPA (math path with dropout)
    try:
        yield
    finally:
        layers.use_chunked_dropout_attention = original


@contextlib.contextmanager
def straightforward_emt() -> Iterator[None]:
    original_encode = EMTDLFR.encode

    def encode(self: EMTDLFR, batch, *, local_output: bool = True):  # noqa: ANN001
        return original_encode(self, batch, local_output=True)  # every local update, as before

    EMTDLFR.encode = encode  # type: ignore[method-assign]
    try:
        yield
    finally:
        EMTDLFR.encode = original_encode  # type: ignore[method-assign]


def ab(
    before: Callable[[], object],
    after: Callable[[], object],
    switch: Callable[[], contextlib.AbstractContextManager],
    repeats: int,
) -> dict[str, float]:
    """Medians of `before` (run inside `switch()`) and `after`, interleaved, after one warm-up of each: wall seconds
    and CPU seconds of this process. Every run is single-threaded, so CPU time is the figure that other jobs on a
    shared machine disturb least (they still share caches and memory bandwidth)."""
    times: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
    for i in range(repeats + 1):
        for name, run in (("before", before), ("after", after)):
            with switch() if name == "before" else contextlib.nullcontext():
                wall, cpu = time.perf_counter(), time.process_time()
                run()
                if i:
                    times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    out: dict[str, float] = {"repeats": repeats}
    for name, values in times.items():
        out[f"{name}_s"] = statistics.median(v[0] for v in values)
        out[f"{name}_cpu_s"] = statistics.median(v[1] for v in values)
    out["speedup"] = out["before_s"] / out["after_s"]
    out["speedup_cpu"] = out["before_cpu_s"] / out["after_cpu_s"]
    return out


def both(*switches: Callable[[], contextlib.AbstractContextManager]) -> Callable[[], contextlib.AbstractContextManager]:
    @contextlib.contextmanager
    def combined() -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for s in switches:
                stack.enter_context(s())
            yield

    return combined


def training_steps(batch: int, repeats: int) -> dict[str, dict[str, float]]:
    shape = parse_shape("mosei")
    out = {}
    mult = build_runner("mult", shape, batch)
    out["mult train step: chunked dropout attention"] = ab(
        mult.train_step, mult.train_step, straightforward_attention, repeats
    )
    emt = build_runner("emt_dlfr", shape, batch)
    out["emt_dlfr train step: skipped unused local update"] = ab(
        emt.train_step, emt.train_step, straightforward_emt, repeats
    )
    out["emt_dlfr forward: skipped unused local update"] = ab(emt.forward, emt.forward, straightforward_emt, repeats)
    # The EMT-DLFR recipes have no attention dropout; with the official code's MOSI default (0.3) they would:
    emt_drop = build_runner("emt_dlfr", shape, batch, overrides={"attn_dropout": 0.3})
    out["emt_dlfr (attn_dropout 0.3) train step: all speed-ups"] = ab(
        emt_drop.train_step, emt_drop.train_step, both(straightforward_attention, straightforward_emt), repeats
    )
    return out


def precision(batch: int, repeats: int) -> dict[str, dict[str, float]]:
    """float32 against CPU bf16 autocast (`--precision bf16`, an opt-in: bf16 products and activations, float32
    weights, optimiser and attention kernel), each model with its own runner and the same weights and batch."""
    shape = parse_shape("mosei")
    out = {}
    for name in ("mult", "emt_dlfr"):
        fp32 = build_runner(name, shape, batch)
        bf16 = build_runner(name, shape, batch, precision="bf16")
        out[f"{name} train step: bf16 autocast (opt-in)"] = ab(
            fp32.train_step, bf16.train_step, contextlib.nullcontext, repeats
        )
        out[f"{name} forward: bf16 autocast (opt-in)"] = ab(fp32.forward, bf16.forward, contextlib.nullcontext, repeats)
    return out


def bucketing(repeats: int) -> dict[str, dict[str, float]]:
    """One MulT training epoch on unaligned synthetic data with MOSI lengths, true lengths 10-100 % of the padded."""
    from affectfuse.config.registry import create_model, get_recipe
    from affectfuse.data.corpus import BatchLoader
    from affectfuse.data.datasets import load_data
    from affectfuse.engine.train import build_optimizer

    corpus = load_data("synthetic:aligned=false,n_train=256,min_fraction=0.1,seed=1")
    split = corpus.split("train")
    recipe = get_recipe("mult", "synthetic")
    torch.manual_seed(0)
    model = create_model("mult", corpus.spec, recipe.model)
    optimizer = build_optimizer(model, recipe.train)
    loaders = {
        "before": BatchLoader(split, batch_size=16, shuffle=True, seed=0),
        "after": BatchLoader(split, batch_size=16, shuffle=True, seed=0, bucket=8),
    }
    padded = {k: sum(sum(b.features[m].shape[1] for m in b.features) * len(b) for b in v) for k, v in loaders.items()}

    def epoch(loader: BatchLoader) -> Callable[[], None]:
        def run() -> None:
            model.train()
            for batch in loader:
                optimizer.zero_grad(set_to_none=True)
                model.loss(batch).total.backward()
                optimizer.step()

        return run

    result = ab(epoch(loaders["before"]), epoch(loaders["after"]), contextlib.nullcontext, repeats)
    result |= {"padded_steps_before": padded["before"], "padded_steps_after": padded["after"]}
    return {"mult epoch (synthetic unaligned, MOSI lengths, batch 16): length bucketing": result}


def gemm_gflops(size: int = 1024, repeats: int = 5) -> float:
    """This machine's float32 matrix-product rate (one size x size product), the ceiling of compute-bound steps."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.process_time()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.process_time() - start) / 1e9


def achieved_gflops(name: str, batch: int, repeats: int) -> dict[str, float]:
    """Training FLOPs per second of one model's step at MOSEI shapes (after the speed-ups)."""
    from affectfuse.efficiency.counting import count_training_flops

    runner = build_runner(name, parse_shape("mosei"), batch)
    flops = count_training_flops(runner.model, runner.batch)
    runner.train_step()
    cpu = []
    for _ in range(repeats):
        start = time.process_time()
        runner.train_step()
        cpu.append(time.process_time() - start)
    seconds = statistics.median(cpu)
    return {"train_gflops": flops / 1e9, "train_step_cpu_s": seconds, "gflops_per_cpu_s": flops / seconds / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/speedups_cpu.json"))
    parser.add_argument("--only", choices=("steps", "bucketing", "precision"), action="append",
                        help="run only these sections (repeatable; default: all, plus the compute rates)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    sections = {
        "steps": lambda: training_steps(args.batch, args.repeats),
        "bucketing": lambda: bucketing(args.repeats),
        "precision": lambda: precision(args.batch, args.repeats),
    }
    results = {}
    for name in args.only or sections:
        results |= sections[name]()
    rates = {} if args.only else {"gemm_1024_gflops_per_s": gemm_gflops()} | {
        name: achieved_gflops(name, args.batch, args.repeats) for name in ("mult", "emt_dlfr")
    }
    payload = {
        "machine": machine_description(),
        "compute_rates": rates,
        "load_average_start_end": [load_before, os.getloadavg()[0]],
        "batch": args.batch,
        "shape": "mosei (50/500/500, dims 768/74/35)",
        "results": results,
    }
    write_json(args.out, payload)
    print(f"{payload['machine']}; load {load_before:.2f} -> {os.getloadavg()[0]:.2f}")
    print("| what | before CPU s | after CPU s | speed-up (CPU time) | speed-up (wall) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        print(
            f"| {name} | {r['before_cpu_s']:.3f} | {r['after_cpu_s']:.3f} | {r['speedup_cpu']:.2f}x | "
            f"{r['speedup']:.2f}x |"
        )
    print(f"compute rates: {rates}")


if __name__ == "__main__":
    main()
