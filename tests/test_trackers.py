"""Experiment trackers behind one interface: each installed one receives every epoch's scalars at step = epoch from
a real (tiny) experiment run; a missing or unknown one is a clear error before any run; the rest skip cleanly."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from affectfuse import trackers as tracking
from affectfuse.experiments import load_experiment, run_experiment

DATA = "synthetic:n_train=48,n_valid=16,n_test=16,length=4"
EXPERIMENT = f"""
name = "tracked"
models = ["lmf"]
seeds = [3]
data = {{ syn = "{DATA}" }}

[set]
"train.max_epochs" = 3
"train.device" = "cpu"
"hidden.text" = 4
"hidden.audio" = 4
"hidden.vision" = 4
text_out = 3
rank = 2
"""


def _run(tmp_path: Path, trackers: tuple[str, ...]) -> tuple[Path, list[dict]]:
    path = tmp_path / "tracked.toml"
    path.write_text(EXPERIMENT)
    experiment = dataclasses.replace(load_experiment(path), trackers=trackers)
    out = tmp_path / "out"
    outcome = run_experiment(experiment, out, workers=0, log=lambda _: None)
    assert not outcome["failed"], outcome["failed"]
    (folder,) = list(out.glob("runs/lmf/syn/*/seed3"))
    history = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    return folder, history


@pytest.mark.skipif("mlflow" not in tracking.installed_trackers(), reason="MLflow is not installed (extra mlflow)")
def test_mlflow_sqlite_store_holds_every_epoch(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    folder, history = _run(tmp_path, ("mlflow",))
    client = MlflowClient(tracking_uri=f"sqlite:///{(folder / 'mlflow.db').resolve()}")
    (run,) = client.search_runs([client.get_experiment_by_name("affectfuse").experiment_id])
    params = run.data.params
    assert params["model"] == "lmf" and params["train.seed"] == "3" and params["config.rank"] == "2"
    assert run.info.status == "FINISHED"
    logged = client.get_metric_history(run.info.run_id, "valid/mae")
    assert [m.step for m in logged] == [h["epoch"] for h in history] == [0, 1, 2]
    assert [m.value for m in logged] == pytest.approx([h["valid"]["mae"] for h in history])
    assert {"train/total", "valid/corr"} <= set(run.data.metrics)


@pytest.mark.skipif("wandb" not in tracking.installed_trackers(), reason="wandb is not installed (extra wandb)")
def test_wandb_offline_run_is_written_locally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")  # belt and braces: never reach for a server
    folder, history = _run(tmp_path, ("wandb",))
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal import datastore

    (path,) = list((folder / "wandb").glob("offline-run-*/run-*.wandb"))  # the transaction log `wandb sync` uploads
    store = datastore.DataStore()
    store.open_for_scan(str(path))
    rows = []
    while (data := store.scan_data()) is not None:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    assert [row["_step"] for row in rows] == [h["epoch"] for h in history] == [0, 1, 2]
    assert [row["valid/mae"] for row in rows] == pytest.approx([h["valid"]["mae"] for h in history])
    assert all("train/total" in row for row in rows)


def test_every_installed_tracker_gets_the_same_scalars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The interface itself: a fake tracker registered like the real ones sees train/* and valid/* per epoch."""
    seen: list[tuple[int, dict]] = []

    class Recorder:
        def __init__(self, folder: Path, name: str, params: dict) -> None:
            assert name == "lmf seed 3" and params["model"] == "lmf" and params["config.hidden.text"] == 4

        def log_epoch(self, step: int, scalars: dict) -> None:
            seen.append((step, dict(scalars)))

        def close(self) -> None:
            seen.append((-1, {}))

    monkeypatch.setitem(tracking.TRACKERS, "recorder", (Recorder, "json", "test"))
    _, history = _run(tmp_path, ("recorder",))
    assert [s for s, _ in seen] == [0, 1, 2, -1]
    assert seen[1][1]["valid/mae"] == history[1]["valid"]["mae"]
    assert seen[0][1]["train/total"] == history[0]["train"]["total"]


def test_missing_or_unknown_trackers_fail_before_any_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(tracking.TRACKERS, "absent", (object, "no_such_package_for_affectfuse", "absent"))
    with pytest.raises(ValueError, match=r"tracker 'absent' needs the no_such_package_for_affectfuse package: "
                                         r"pip install 'affectfuse\[absent\]'"):
        _run(tmp_path, ("absent",))
    assert not (tmp_path / "out" / "runs").exists()
    with pytest.raises(ValueError, match="unknown tracker 'neptune'; trackers: tensorboard, mlflow, wandb"):
        tracking.check_trackers(["neptune"])
    path = tmp_path / "bad.toml"
    path.write_text(EXPERIMENT.replace("[set]", 'trackers = ["neptune"]\n\n[set]'))
    with pytest.raises(ValueError, match=r"trackers must be a list of tensorboard, mlflow, wandb.*neptune"):
        load_experiment(path)


def test_train_tracker_flag_logs_each_seed_into_its_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("tensorboard", reason="TensorBoard event files need the optional tensorboard package")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from affectfuse.cli import main

    tiny = [a for kv in ("hidden.text=4", "hidden.audio=4", "hidden.vision=4", "text_out=3", "rank=2",
                         "train.max_epochs=2", "train.device=cpu") for a in ("--set", kv)]
    assert main(["-q", "train", "-m", "lmf", "-d", DATA, "-s", "1", "2", "--tracker", "tensorboard",
                 "--out", str(tmp_path), *tiny]) == 0
    for seed in (1, 2):
        (event_file,) = list((tmp_path / "lmf" / f"seed{seed}" / "tensorboard").glob("events.out.tfevents*"))
        events = EventAccumulator(str(event_file.parent))
        events.Reload()
        assert [e.step for e in events.Scalars("valid/mae")] == [0, 1]
    assert main(["train", "-m", "lmf", "-d", DATA, "--tracker", "neptune", "--out", str(tmp_path / "x")]) == 1
    assert "unknown tracker 'neptune'; trackers: tensorboard, mlflow, wandb" in capsys.readouterr().err
    assert not (tmp_path / "x" / "lmf").exists()
