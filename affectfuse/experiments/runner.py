"""Executing an experiment's missing runs: in this process, in local worker processes (default), or on Ray.

Every run goes through the same function, `execute_run`, wherever it executes: it loads the corpus (cached per
worker), trains with `api.train_model` (the one trainer), and returns plain values. Only this coordinating process
writes the results store, one transaction per finished run, so killing the command at any moment loses at most the
runs in flight; rerunning it skips every run already stored with the same configuration.

Parallelism is delegated, never scheduled by hand: `concurrent.futures.ProcessPoolExecutor` locally, Ray tasks
(`--ray ADDRESS`, or `--ray local` to start a private Ray instance) across machines. Each worker uses `threads` torch
threads (1 by default: on a small CPU, N one-thread runs side by side beat one N-thread run for these model sizes),
which also makes a run's numbers independent of where it ran.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import logging
import multiprocessing
import os
import platform
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..outputs import claim
from ..progress import job_bar
from ..trackers import check_trackers
from ..workers import stopped_on_exit, watch_parent
from .plan import Experiment, Run, plan, with_fingerprints
from .store import ResultStore

logger = logging.getLogger(__name__)

Outcome = tuple[Run, dict[str, Any] | None, BaseException | None]


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit of the package's checkout (`+dirty` with uncommitted changes), else the package version."""
    from .. import __version__

    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"affectfuse {__version__}"
    return f"{commit}{'+dirty' if dirty else ''}" if commit else f"affectfuse {__version__}"


def environment(threads: int) -> dict[str, Any]:
    import numpy
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "host": socket.gethostname(),
    }


@functools.lru_cache(maxsize=4)
def _corpus(spec: str, nonfinite: str, missing_rate: float) -> Any:
    """The corpus of a run, loaded once per worker process (runs of the same data share it)."""
    from ..data.datasets import load_data
    from ..robustness.missing import apply_masks, split_missing_masks

    corpus = load_data(spec, nonfinite=nonfinite)
    if missing_rate > 0:
        splits = {
            name: apply_masks(split, split_missing_masks(split, missing_rate, spec=corpus.spec), spec=corpus.spec)
            for name, split in corpus.splits.items()
        }
        corpus = dataclasses.replace(corpus, splits=splits, source=f"{corpus.source} [missing rate {missing_rate}]")
    return corpus


def run_dir(out_dir: Path | str, run: Run) -> Path:
    return Path(out_dir) / "runs" / run.model / run.data / run.setting / f"seed{run.seed}"


def execute_run(run: Run, out_dir: str, threads: int = 1, progress: bool = False) -> dict[str, Any]:
    """Train and test one (cell, seed); returns what the store keeps. Runs in a worker process or a Ray task (no
    epoch bar there: only the parent's overall bar is drawn), or in this process (`progress`: its epoch bar)."""
    import torch

    from ..engine.runs import train_model

    torch.set_num_threads(threads)
    corpus = _corpus(run.data_spec, run.nonfinite, run.missing_rate)
    folder = run_dir(out_dir, run)
    trackers = (*run.trackers, *(("tensorboard",) if run.tensorboard else ()))
    result = train_model(run.model, corpus, seed=run.seed, recipe=run.recipe, overrides=dict(run.overrides),
                         out_dir=folder, progress=progress, trackers=trackers)
    saved = json.loads((folder / "result.json").read_text())
    history = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines() if line.strip()]
    return {
        "recipe": result.recipe,
        "config": saved["config"],
        "train": saved["train"],
        "valid": result.valid,
        "test": result.test,
        "history": [{"epoch": h["epoch"], "train": h["train"], "valid": h["valid"]} for h in history],
        "best_epoch": result.best_epoch,
        "parameters": result.parameters,
        "seconds": result.seconds,
        "run_dir": str(folder),
        "code_version": code_version(),
        "environment": environment(threads),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _in_process(pending: list[Run], out_dir: str, threads: int, progress: bool) -> Iterator[Outcome]:
    for run in pending:
        try:
            yield run, execute_run(run, out_dir, threads, progress), None
        except Exception as error:  # noqa: BLE001  (reported with the run's key; the other runs go on)
            yield run, None, error


def _processes(pending: list[Run], out_dir: str, threads: int, workers: int) -> Iterator[Outcome]:
    # spawn, not fork: a forked child would inherit the parent's torch thread pools and locks
    # each worker exits when this process dies; on Ctrl-C or an error here they are terminated
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=watch_parent, initargs=(os.getpid(),)) as pool:
        with stopped_on_exit(pool):
            futures = {pool.submit(execute_run, run, out_dir, threads): run for run in pending}
            for future in concurrent.futures.as_completed(futures):
                error = future.exception()
                yield futures[future], None if error else future.result(), error


def _ray(pending: list[Run], out_dir: str, threads: int, workers: int, address: str) -> Iterator[Outcome]:
    try:
        import ray
    except ModuleNotFoundError:
        raise ValueError("--ray needs the ray package: pip install 'affectfuse[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        if address == "local":  # a private single-machine instance, stopped again at the end
            ray.init(num_cpus=max(workers, 1) * threads, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=threads, max_retries=0)(execute_run)
        refs = {task.remote(run, out_dir, threads): run for run in pending}
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            for ref in ready:
                run = refs.pop(ref)
                try:
                    yield run, ray.get(ref), None
                except Exception as error:  # noqa: BLE001  (ray wraps the task's exception)
                    yield run, None, error
    finally:
        if started_here:
            ray.shutdown()


def run_experiment(
    experiment: Experiment,
    out_dir: Path | str,
    *,
    workers: int = 2,
    threads: int = 1,
    ray_address: str | None = None,
    limit: int | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run every run of `experiment` not yet in `out_dir/results.sqlite`, then write the reports.

    workers: parallel runs (local processes, or Ray tasks in flight with `--ray local`); 0 runs them one after the
    other in this process. limit: run at most this many of the missing runs (the rest stay missing).
    log: where messages go (default: this module's logger, at info level); progress: an overall bar of the runs.
    Returns counts, failures and the report paths.
    """
    from .report import write_reports

    out = Path(out_dir)
    with claim(out):
        out.mkdir(parents=True, exist_ok=True)
        store = ResultStore(out / "results.sqlite")
        runs = with_fingerprints(plan(experiment))
        done = store.done(runs)
        pending = [r for r in runs if r.key not in done]
        check_trackers(experiment.trackers + (("tensorboard",) if experiment.tensorboard else ()))  # before any run
        if limit is not None:
            pending = pending[:limit]
        say = log or logger.info
        executor = f"ray:{ray_address}" if ray_address else ("processes" if workers > 0 else "in-process")
        say(f"{experiment.name}: {len(runs)} runs, {len(done)} already stored, {len(pending)} to run ({executor})")
        if ray_address:
            outcomes = _ray(pending, str(out), threads, workers, ray_address)
        elif workers > 0 and len(pending) > 1:
            outcomes = _processes(pending, str(out), threads, workers)
        else:
            outcomes = _in_process(pending, str(out), threads, progress)
        failed: dict[str, str] = {}
        start = time.perf_counter()
        with job_bar(len(runs), done=len(runs) - len(pending), desc=experiment.name, enabled=progress) as bar:
            for count, (run, result, error) in enumerate(outcomes, start=1):
                bar.update(1)
                if error is not None:
                    failed[run.key] = f"{type(error).__name__}: {error}"
                    say(f"[{count}/{len(pending)}] {run.key} FAILED: {failed[run.key]}")
                    continue
                assert result is not None
                store.put(run, {**result, "executor": executor})
                main = next(iter(result["test"]))
                say(f"[{count}/{len(pending)}] {run.key}: test {main} {result['test'][main]:.4f} "
                    f"({result['seconds']:.1f} s; {time.perf_counter() - start:.0f} s elapsed)")
        reports = write_reports(experiment, store, out, runs=runs)
        return {
            "experiment": experiment.name,
            "out": str(out),
            "planned": len(runs),
            "skipped": len(done),
            "ran": len(pending) - len(failed),
            "failed": failed,
            "reports": {k: str(v) for k, v in reports.items()},
        }
