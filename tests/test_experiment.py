"""Experiment grids: the file's checks, the plan, the SQLite store, kill-and-resume, reports, Ray, TensorBoard."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from affectfuse.experiments import ResultStore, load_experiment, plan, run_experiment
from affectfuse.experiments.plan import parse_experiment

DATA = "synthetic:n_train=64,n_valid=24,n_test=24,length=5"
TINY_SET = {
    "lmf": '"hidden.text" = 6\n"hidden.audio" = 4\n"hidden.vision" = 5\ntext_out = 3\nrank = 3\n',
    "tfn": '"hidden.text" = 6\n"hidden.audio" = 4\n"hidden.vision" = 5\ntext_out = 3\npost_fusion_dim = 8\n',
}


def experiment_text(models: tuple[str, ...] = ("lmf", "tfn"), seeds: str = "2", settings: int = 2) -> str:
    """A tiny grid: tiny models, 3 epochs, a small synthetic corpus; settings `complete` and `missing-0.5`."""
    text = f"""
name = "tiny"
models = {list(models)}
seeds = {seeds}
data = {{ syn = "{DATA}" }}

[set]
"train.max_epochs" = 3
"train.device" = "cpu"
"""
    for model in models:
        text += f"\n[set_model.{model}]\n{TINY_SET[model]}"
    text += '\n[[setting]]\nname = "complete"\n'
    if settings > 1:
        text += '\n[[setting]]\nname = "missing-0.5"\nmissing_rate = 0.5\nset = { "train.lr" = 2e-3 }\n'
    return text


EXPERIMENT = experiment_text()


def write(tmp_path: Path, text: str = EXPERIMENT, name: str = "tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_plan_expands_the_grid_with_overrides_in_order(tmp_path: Path) -> None:
    experiment = load_experiment(write(tmp_path))
    runs = plan(experiment)
    assert len(runs) == 2 * 1 * 2 * 2  # models x data x settings x seeds
    assert {r.seed for r in runs} == {1111, 1112}
    assert len({r.key for r in runs}) == len(runs)
    lmf_missing = next(r for r in runs if r.model == "lmf" and r.setting == "missing-0.5")
    overrides = dict(lmf_missing.overrides)
    assert overrides["train.lr"] == 2e-3 and overrides["rank"] == 3 and overrides["train.max_epochs"] == 3
    assert lmf_missing.missing_rate == 0.5
    assert "post_fusion_dim" not in overrides  # another model's overrides stay with it
    # the identity hash changes with what decides the result, not with logging
    assert dataclasses.replace(lmf_missing, tensorboard=True).config_hash == lmf_missing.config_hash
    assert dataclasses.replace(lmf_missing, missing_rate=0.4).config_hash != lmf_missing.config_hash


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"modles": ["lmf"]}, "unknown key(s) ['modles']"),
        ({"models": ["lmff"]}, "unknown model 'lmff'"),
        ({"seeds": 0}, "seeds = 0"),
        ({"seeds": [1, 1]}, "repeat a seed"),
        ({"set": {"rnak": 3}}, "no field 'rnak'"),
        ({"set": {"train.lrr": 3}}, "TrainConfig has no field 'lrr'"),
        ({"set_model": {"mult": {"dim": 8}}}, "not in models"),
        ({"setting": [{"name": "a"}, {"name": "a"}]}, "share a name"),
        ({"setting": [{"name": "a", "missing_rate": 1.5}]}, "missing_rate must be a number in [0, 1]"),
        ({"set": {"train.seed": 3}}, "not train.seed"),
    ],
)
def test_bad_experiment_files_are_refused_with_the_entry_named(change: dict, message: str) -> None:
    raw = {"name": "x", "models": ["lmf"], "data": ["synthetic"], "seeds": 1, **change}
    with pytest.raises(ValueError, match="x.toml") as error:
        parse_experiment(raw, source="x.toml")
    assert message in str(error.value)


def test_store_counts_a_result_only_for_the_same_configuration(tmp_path: Path) -> None:
    experiment = load_experiment(write(tmp_path))
    run = plan(experiment)[0]
    store = ResultStore(tmp_path / "results.sqlite")
    store.put(run, {"test": {"mae": 1.0}, "valid": {"mae": 0.9}, "history": [], "config": {}, "train": {}})
    assert store.done([run]) == {run.key}
    changed = dataclasses.replace(run, overrides=(*run.overrides, ("train.patience", 2)))
    assert store.done([changed]) == set()  # same key, other configuration: must run again
    (tmp_path / "broken.sqlite").write_text("not a database")
    with pytest.raises(ValueError, match="broken.sqlite"):
        ResultStore(tmp_path / "broken.sqlite").done([run])


def _stored(db: Path) -> dict[str, tuple[str, str]]:
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return {k: (f, t) for k, f, t in con.execute("SELECT key, finished, test FROM runs")}
    except sqlite3.OperationalError:  # table not created yet
        return {}


def test_killed_run_resumes_with_only_the_missing_runs(tmp_path: Path) -> None:
    path = write(tmp_path)
    out = tmp_path / "out"
    db = out / "results.sqlite"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "affectfuse", "run", str(path), "--out", str(out), "--workers", "0", "--json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while len(_stored(db)) < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # no clean-up code runs: as a crash or a lost machine
        process.wait()
    before = _stored(db)
    assert 2 <= len(before) < 8, f"expected an interrupted grid, got {len(before)} stored runs"

    outcome = run_experiment(load_experiment(path), out, workers=2, log=None)
    assert outcome["skipped"] == len(before)
    assert outcome["ran"] == 8 - len(before) and not outcome["failed"]
    after = _stored(db)
    assert len(after) == 8
    assert {k: after[k] for k in before} == before  # the stored runs were not run again
    table = (out / "table.md").read_text()
    for row in ("lmf / complete", "lmf / missing-0.5", "tfn / complete", "tfn / missing-0.5"):
        assert f"| {row} |" in table  # every cell complete: no "(1/2 seeds)" marks
    assert "seeds)" not in table
    for name in ("table.csv", "table.tex", "summary.json", "plots/bars_syn.png", "plots/curves_syn.png"):
        assert (out / name).stat().st_size > 0
    assert "\\pm" in (out / "table.tex").read_text()

    again = run_experiment(load_experiment(path), out, workers=2, log=None)
    assert again["skipped"] == 8 and again["ran"] == 0


def test_rows_hold_config_code_version_environment_and_curves(tmp_path: Path) -> None:
    experiment = load_experiment(write(tmp_path, experiment_text(("lmf",), seeds="[5]", settings=1)))
    run_experiment(experiment, tmp_path / "out", workers=0, log=None)
    (row,) = ResultStore(tmp_path / "out" / "results.sqlite").rows()
    assert row["config"]["rank"] == 3 and row["train"]["max_epochs"] == 3 and row["train"]["seed"] == 5
    assert row["code_version"] and row["environment"]["torch"] and row["environment"]["torch_threads"] == 1
    assert len(row["history"]) == 3 and set(row["test"]) >= {"mae", "corr", "acc2_has0"}
    assert row["identity"]["overrides"]["rank"] == 3


def test_a_run_loads_each_data_spec_once_for_its_fingerprints(tmp_path: Path, monkeypatch) -> None:
    """The runner fingerprints the data and hands the fingerprinted runs to the reports, which do not load it again
    (`run --report-only`, with no runs at hand, does)."""
    import affectfuse.data.datasets as datasets
    from affectfuse.experiments import runner

    runner._corpus.cache_clear()  # the in-process runs' per-process cache may hold this corpus from another test
    loads = []
    real = datasets.load_data
    monkeypatch.setattr(datasets, "load_data", lambda spec, **kw: loads.append(spec) or real(spec, **kw))
    experiment = load_experiment(write(tmp_path, experiment_text(("lmf",), seeds="[5]", settings=1)))
    outcome = run_experiment(experiment, tmp_path / "out", workers=0, log=None)
    assert outcome["ran"] == 1 and (tmp_path / "out" / "table.md").exists()
    # one load to fingerprint, one by the in-process run itself; none by the reports
    assert loads == [DATA, DATA]


def test_ray_gives_the_same_result_per_cell_and_seed_as_local(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the Ray test needs the optional ray package (pip install 'affectfuse[ray]')")
    experiment = load_experiment(write(tmp_path, experiment_text(("lmf",), settings=1)))  # 1 model x 2 seeds
    run_experiment(experiment, tmp_path / "local", workers=0, log=None)
    outcome = run_experiment(experiment, tmp_path / "ray", workers=2, ray_address="local", log=None)
    assert outcome["ran"] == 2 and not outcome["failed"]
    local = {r["key"]: r for r in ResultStore(tmp_path / "local" / "results.sqlite").rows()}
    remote = {r["key"]: r for r in ResultStore(tmp_path / "ray" / "results.sqlite").rows()}
    assert set(local) == set(remote) and len(local) == 2
    for key, row in local.items():
        assert remote[key]["executor"] == "ray:local"
        assert remote[key]["test"] == row["test"], key  # identical, not just close
        assert remote[key]["best_epoch"] == row["best_epoch"]


def test_tensorboard_event_files_are_opt_in(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="TensorBoard event files need the optional tensorboard package")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    experiment = load_experiment(write(tmp_path, experiment_text(("lmf",), seeds="1", settings=1)))
    run_experiment(experiment, tmp_path / "plain", workers=0, log=None)
    assert not list((tmp_path / "plain").rglob("events.out.tfevents*"))
    run_experiment(dataclasses.replace(experiment, tensorboard=True), tmp_path / "tb", workers=0, log=None)
    (event_file,) = list((tmp_path / "tb").rglob("events.out.tfevents*"))
    events = EventAccumulator(str(event_file.parent))
    events.Reload()
    assert {"train/total", "valid/mae", "valid/corr"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("valid/mae")] == [0, 1, 2]
