"""Experiment trackers behind one small interface, fed from the trainer's per-epoch records (the JSON lines stay the
record; trackers are views of it). All write local files only, no server and no account:

* ``tensorboard``: event files under ``<run>/tensorboard`` (extra `tensorboard`);
* ``mlflow``: an SQLite store ``<run>/mlflow.db`` (``mlflow ui --backend-store-uri sqlite:///<run>/mlflow.db``;
  extra `mlflow`; MLflow 3 keeps its file store in maintenance mode);
* ``wandb``: Weights & Biases in offline mode under ``<run>/wandb`` (``wandb sync`` uploads it later, if ever).

Asking for a tracker whose package is missing is an error that says which extra to install, never a silent no-op.
Each logs the run's settings once (`params`, flattened to dotted keys), then ``train/<term>`` and ``valid/<metric>``
at step = epoch. `engine.runs.train_model(trackers=...)` opens them for a run with an output folder (`train`, `run`).
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

OnEpoch = Callable[[dict[str, Any]], None]


class Tracker(Protocol):
    def log_epoch(self, step: int, scalars: Mapping[str, float]) -> None: ...
    def close(self) -> None: ...


class TensorBoardTracker:
    def __init__(self, folder: Path, name: str, params: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder / "tensorboard"), comment=name)
        self.writer.add_text("params", "\n".join(f"    {k} = {v}" for k, v in params.items()))

    def log_epoch(self, step: int, scalars: Mapping[str, float]) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MLflowTracker:
    def __init__(self, folder: Path, name: str, params: Mapping[str, Any]) -> None:
        from mlflow.tracking import MlflowClient

        # a client of its own (no process-wide tracking URI): runs in one process may log to different stores
        folder.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=f"sqlite:///{(folder / 'mlflow.db').resolve()}")
        experiment = self.client.get_experiment_by_name("affectfuse")
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment("affectfuse")
        self.run_id = self.client.create_run(experiment_id, run_name=name).info.run_id
        for key, value in params.items():
            self.client.log_param(self.run_id, key, str(value)[:500])  # MLflow caps a value's length

    def log_epoch(self, step: int, scalars: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, step) for k, v in scalars.items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class WandbTracker:
    def __init__(self, folder: Path, name: str, params: Mapping[str, Any]) -> None:
        import wandb

        folder.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(mode="offline", dir=str(folder), project="affectfuse", name=name, config=dict(params),
                              reinit="create_new")

    def log_epoch(self, step: int, scalars: Mapping[str, float]) -> None:
        self.run.log(dict(scalars), step=step)

    def close(self) -> None:
        self.run.finish()


TRACKERS: dict[str, tuple[type, str, str]] = {
    # name -> (class, the module it needs, the extra that installs it)
    "tensorboard": (TensorBoardTracker, "tensorboard", "tensorboard"),
    "mlflow": (MLflowTracker, "mlflow", "mlflow"),
    "wandb": (WandbTracker, "wandb", "wandb"),
}


def installed_trackers() -> list[str]:
    """The trackers whose package is importable here."""
    return [name for name, (_, module, _) in TRACKERS.items() if importlib.util.find_spec(module) is not None]


def check_trackers(names: Sequence[str]) -> tuple[str, ...]:
    """`names` validated: known, and installed (else a ValueError naming the extra to install)."""
    for name in names:
        if name not in TRACKERS:
            raise ValueError(f"unknown tracker {name!r}; trackers: {', '.join(TRACKERS)}")
        module, extra = TRACKERS[name][1:]
        if importlib.util.find_spec(module) is None:
            raise ValueError(f"tracker {name!r} needs the {module} package: pip install 'affectfuse[{extra}]'")
    return tuple(dict.fromkeys(names))


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys (``config.hidden.text``), the form the --set flags use."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def open_trackers(names: Sequence[str], folder: Path | str, name: str, params: Mapping[str, Any] | None = None,
                  also: OnEpoch | None = None) -> tuple[OnEpoch | None, Callable[[], None]]:
    """(on_epoch, close) for the trainer: `on_epoch(record)` sends every training loss term as ``train/<term>`` and
    every validation metric as ``valid/<metric>`` at step = epoch to each tracker, then calls `also`.
    (`also`, no-op) without trackers."""
    flat = flatten(params or {})
    trackers: list[Tracker] = [TRACKERS[n][0](Path(folder), name, flat) for n in check_trackers(names)]
    if not trackers:
        return also, lambda: None

    def on_epoch(record: dict[str, Any]) -> None:
        scalars = {f"{split}/{k}": float(v) for split in ("train", "valid") for k, v in record.get(split, {}).items()}
        for tracker in trackers:
            tracker.log_epoch(int(record["epoch"]), scalars)
        if also is not None:
            also(record)

    def close() -> None:
        for tracker in trackers:
            tracker.close()

    return on_epoch, close
