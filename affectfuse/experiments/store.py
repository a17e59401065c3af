"""The results store: one SQLite file per experiment folder (`results.sqlite`).

Why SQLite (the standard library's `sqlite3`): no new dependency; one file that is easy to copy and to query (`sqlite3
results.sqlite "select model, json_extract(test, '$.mae') from runs"`); and each result is written in one transaction,
so a run killed while writing leaves the previous state, never half a row. That is what makes resuming safe: a run is
done exactly when its row exists with the same configuration hash. JSON lines would need their own torn-line
handling; Parquet would need pyarrow and rewrites whole files. Only the coordinating process writes (workers return
their results to it), so there is never write contention, locally or with Ray.

Each row holds the run's key (model/data/setting/seed), its full resolved model and training configs, the overrides,
validation and test metrics of the selected epoch, the per-epoch history (training curves), the parameter count and
wall time, the code version (git commit, `+dirty` when the tree had uncommitted changes, else the package version)
and the environment (Python, torch, NumPy, platform, CPU, threads, device).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .plan import Run

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    experiment TEXT NOT NULL,
    model TEXT NOT NULL,
    data TEXT NOT NULL,
    data_spec TEXT NOT NULL,
    setting TEXT NOT NULL,
    seed INTEGER NOT NULL,
    config_hash TEXT NOT NULL,
    identity TEXT NOT NULL,
    recipe TEXT,
    config TEXT,
    train TEXT,
    valid TEXT,
    test TEXT,
    history TEXT,
    best_epoch INTEGER,
    parameters INTEGER,
    seconds REAL,
    run_dir TEXT,
    code_version TEXT,
    environment TEXT,
    executor TEXT,
    finished TEXT
)
"""
JSON_COLUMNS = ("identity", "config", "train", "valid", "test", "history", "environment")


class ResultStore:
    """Rows of finished runs keyed by `Run.key`; a row counts for a run only if its `config_hash` matches."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._connect() as con:
                con.execute(SCHEMA)
        except sqlite3.DatabaseError as error:
            raise ValueError(f"results store {self.path} is not a readable SQLite database: {error}") from None

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=60)
        con.row_factory = sqlite3.Row
        return con

    def done(self, runs: Iterable[Run]) -> set[str]:
        """Keys of the runs whose result is stored with the same configuration."""
        with self._connect() as con:
            stored = dict(con.execute("SELECT key, config_hash FROM runs").fetchall())
        return {r.key for r in runs if stored.get(r.key) == r.config_hash}

    def put(self, run: Run, result: Mapping[str, Any]) -> None:
        """Store (or replace, when the configuration changed) one finished run, in one transaction."""
        row = {
            "key": run.key,
            "experiment": run.experiment,
            "model": run.model,
            "data": run.data,
            "data_spec": run.data_spec,
            "setting": run.setting,
            "seed": run.seed,
            "config_hash": run.config_hash,
            "identity": run.identity(),
            **{k: result.get(k) for k in ("recipe", "config", "train", "valid", "test", "history", "best_epoch",
                                           "parameters", "seconds", "run_dir", "code_version", "environment",
                                           "executor", "finished")},
        }
        for column in JSON_COLUMNS:
            row[column] = json.dumps(row[column], default=float)
        columns = ", ".join(row)
        marks = ", ".join(f":{c}" for c in row)
        with self._connect() as con:  # the context manager commits, or rolls back on an exception
            con.execute(f"INSERT OR REPLACE INTO runs ({columns}) VALUES ({marks})", row)

    def rows(self, runs: Iterable[Run] | None = None) -> list[dict[str, Any]]:
        """Stored rows (JSON columns decoded); with `runs`, only theirs and only when the configuration matches."""
        with self._connect() as con:
            rows = [dict(r) for r in con.execute("SELECT * FROM runs ORDER BY rowid").fetchall()]
        if runs is not None:
            wanted = {r.key: r.config_hash for r in runs}
            rows = [r for r in rows if wanted.get(r["key"]) == r["config_hash"]]
        for row in rows:
            for column in JSON_COLUMNS:
                row[column] = json.loads(row[column]) if row[column] is not None else None
        return rows
