"""The one trainer: selection on validation, early stopping direction, seeds, artefacts, atomic writes."""

from __future__ import annotations

import copy
import json
import math
import os

import pytest
import torch

from affectfuse.config import TrainConfig
from affectfuse.config.registry import create_model
from affectfuse.data.synthetic import make_synthetic
from affectfuse.engine import train as train_module
from affectfuse.engine.checkpoint import CheckpointError, content_digest, load_model, read_checkpoint, save_checkpoint
from affectfuse.engine.evaluate import evaluate
from affectfuse.engine.runs import train_model
from affectfuse.engine.train import EarlyStopping, check_param_groups, fit, resolve_device

from .conftest import TINY


@pytest.fixture(scope="module")
def corpus():
    return make_synthetic(n_train=96, n_valid=48, n_test=40, length=6, seed=5)


def tiny(name, corpus):
    torch.manual_seed(0)
    return create_model(name, corpus.spec, **TINY[name])


def test_early_stopping_follows_the_metric_direction_and_ignores_nan():
    lower = EarlyStopping(patience=2, higher_is_better=False)
    assert lower.step(1.0) and lower.step(0.5) and not lower.step(0.7) and not lower.should_stop
    assert not lower.step(math.nan) and lower.should_stop
    higher = EarlyStopping(patience=1, higher_is_better=True)
    assert higher.step(0.5) and higher.step(0.7) and not higher.step(0.6) and higher.should_stop


def test_fit_keeps_the_best_validation_epoch_and_logs_every_epoch(corpus, tmp_path):
    model = tiny("lmf", corpus)
    train = TrainConfig(lr=3e-3, batch_size=16, max_epochs=6, patience=100, seed=1)
    result = fit(model, corpus.split("train"), corpus.split("valid"), train, out_dir=tmp_path, progress=False)
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and all({"epoch", "train", "valid", "best"} <= set(line) for line in lines)
    maes = [line["valid"]["mae"] for line in lines]
    assert result.best_epoch == min(range(6), key=maes.__getitem__) and result.monitor == "mae"
    # the returned model holds the selected epoch's weights, and so does the checkpoint
    assert evaluate(model, corpus.split("valid"))["mae"] == pytest.approx(min(maes), abs=1e-6)
    assert evaluate(load_model(tmp_path / "best.pt"), corpus.split("valid"))["mae"] == pytest.approx(
        min(maes), abs=1e-6
    )


def test_early_stopping_stops_after_patience(corpus, monkeypatch):
    scores = iter([0.9, 0.8, 0.85, 0.81, 0.95, 0.8, 0.1])  # best at epoch 1, then three epochs without improvement
    monkeypatch.setattr(train_module, "evaluate", lambda *a, **k: {"mae": next(scores), "corr": 0.0})
    model = tiny("tfn", corpus)
    train = TrainConfig(batch_size=32, max_epochs=50, patience=3)
    result = fit(model, corpus.split("train"), corpus.split("valid"), train, progress=False)
    assert len(result.history) == 5 and result.best_epoch == 1 and result.valid["mae"] == 0.8


def test_monitor_can_be_a_higher_is_better_metric(corpus):
    model = tiny("lmf", corpus)
    train = TrainConfig(lr=3e-3, batch_size=16, max_epochs=4, patience=100, monitor="acc2_has0")
    result = fit(model, corpus.split("train"), corpus.split("valid"), train, progress=False)
    accs = [h["valid"]["acc2_has0"] for h in result.history]
    assert result.valid["acc2_has0"] == max(accs) and result.best_epoch == accs.index(max(accs))


def test_same_seed_same_result_and_per_seed_artefacts(corpus, tmp_path):
    overrides = {**TINY["lmf"], "train.max_epochs": 3}
    a = train_model("lmf", corpus, seed=7, overrides=overrides, out_dir=tmp_path / "a", progress=False)
    b = train_model("lmf", corpus, seed=7, overrides=overrides, progress=False)
    c = train_model("lmf", corpus, seed=8, overrides=overrides, progress=False)
    assert a.test == b.test and a.valid == b.valid
    assert a.test != c.test
    for name in ("best.pt", "log.jsonl", "test_predictions.csv", "result.json"):
        assert (tmp_path / "a" / name).is_file()
    rows = (tmp_path / "a" / "test_predictions.csv").read_text().splitlines()
    assert rows[0] == "id,label_sentiment,prediction_sentiment" and len(rows) == 1 + len(corpus.split("test"))
    saved = read_checkpoint(tmp_path / "a" / "best.pt")
    assert saved["metrics"]["test"] == pytest.approx(a.test, nan_ok=True) and saved["train"]["seed"] == 7


def test_training_overrides_reach_the_trainer_and_typos_are_rejected(corpus):
    with pytest.raises(ValueError, match="TrainConfig has no field 'lrr'"):
        train_model("lmf", corpus, overrides={"train.lrr": 1}, progress=False)
    with pytest.raises(ValueError, match="cannot set LMFConfig.rank to 'many'"):
        train_model("lmf", corpus, overrides={"rank": "many"}, progress=False)


def test_param_group_bug_is_caught():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    params = list(model.parameters())
    with pytest.raises(ValueError, match=r"not optimised \['1.weight', '1.bias'\]"):
        check_param_groups(model, torch.optim.Adam(params[:2]))


def test_cuda_request_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu")


def test_checkpoint_errors_name_the_file(corpus, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt does not exist"):
        load_model(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pt is corrupted"):
        load_model(garbage)
    good = save_checkpoint(tmp_path / "good.pt", tiny("tfn", corpus))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pt is corrupted"):
        load_model(truncated)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="other.pt is not an affectfuse checkpoint"):
        load_model(other)
    payload = read_checkpoint(good)
    payload["state_dict"] = {k: v[..., :1] if v.ndim else v for k, v in payload["state_dict"].items()}
    payload["sha256"] = content_digest(payload)  # consistent, but not weights of this config
    torch.save(payload, tmp_path / "shapes.pt")
    with pytest.raises(CheckpointError, match="shapes.pt: weights do not fit model 'tfn'"):
        load_model(tmp_path / "shapes.pt")


def test_checkpoint_write_is_atomic_under_a_crash(corpus, tmp_path, monkeypatch):
    model = tiny("tfn", corpus)
    path = save_checkpoint(tmp_path / "best.pt", model)
    before = path.read_bytes()

    def crash(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # no temporary file left behind


def test_gradient_accumulation_sums_gradients_over_batches(corpus):
    """accumulate=4 over four batches makes one optimiser step instead of four."""
    torch.manual_seed(0)
    a = tiny("lmf", corpus)
    b = copy.deepcopy(a)
    train_split = corpus.split("train").subset(range(32))
    settings = dict(lr=1e-2, batch_size=8, max_epochs=1, patience=5, optimizer="adamw", weight_decay=0.0)
    fit(a, train_split, corpus.split("valid"), TrainConfig(**settings, accumulate=4), progress=False)
    fit(b, train_split, corpus.split("valid"), TrainConfig(**settings, accumulate=1), progress=False)
    # one optimiser step versus four: the weights must differ, and the accumulated run moved less far
    start = tiny("lmf", corpus)
    moved_a = sum((p - q).abs().sum() for p, q in zip(a.parameters(), start.parameters(), strict=True))
    moved_b = sum((p - q).abs().sum() for p, q in zip(b.parameters(), start.parameters(), strict=True))
    assert 0 < moved_a < moved_b


def test_plateau_scheduler_lowers_the_learning_rate(corpus, monkeypatch):
    scores = iter([0.9, 1.0, 1.0, 1.0, 1.0, 1.0])
    monkeypatch.setattr(train_module, "evaluate", lambda *a, **k: {"mae": next(scores), "corr": 0.0})
    seen = []
    original = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[-1]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    train = TrainConfig(lr=1e-2, batch_size=48, max_epochs=5, patience=10, plateau_patience=1, plateau_factor=0.5)
    fit(tiny("tfn", corpus), corpus.split("train"), corpus.split("valid"), train, progress=False)
    assert seen[0] == 1e-2 and seen[-1] < 1e-2


def test_bf16_autocast_trains_in_bf16_and_keeps_float32_weights(corpus):
    model = tiny("mult", corpus)
    seen: set[torch.dtype] = set()
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
        for m in model.modules()
        if isinstance(m, torch.nn.Linear)
    ]
    train = TrainConfig(batch_size=16, max_epochs=2, patience=100, precision="bf16", device="cpu")
    result = fit(model, corpus.split("train"), corpus.split("valid"), train, progress=False)
    for hook in hooks:
        hook.remove()
    assert torch.bfloat16 in seen  # the training loss ran under autocast...
    assert torch.float32 in seen  # ...and validation in float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(math.isfinite(r["train"]["total"]) for r in result.history)
    assert math.isfinite(result.valid["mae"])


def test_fp16_on_cpu_and_unknown_precisions_are_refused_before_training(corpus):
    with pytest.raises(ValueError, match="fp16.*needs CUDA"):
        fit(tiny("lmf", corpus), corpus.split("train"), corpus.split("valid"),
            TrainConfig(precision="fp16", device="cpu"), progress=False)
    with pytest.raises(ValueError, match=r"precision: expected one of \[.fp32., .bf16., .fp16.\]"):
        fit(tiny("lmf", corpus), corpus.split("train"), corpus.split("valid"),
            TrainConfig(precision="int8", device="cpu"), progress=False)  # type: ignore[arg-type]


def test_compile_trains_through_the_compiled_loss(corpus, monkeypatch):
    # A real inductor compile costs ~40 s on 2 cores; the wiring is what this test checks: with `compile`, every
    # training step goes through what torch.compile returned, and nothing else is compiled.
    compiled, calls = [], []

    def fake_compile(fn, **_):
        compiled.append(fn)

        def wrapper(batch):
            calls.append(len(batch))
            return fn(batch)

        return wrapper

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = tiny("lmf", corpus)
    train = TrainConfig(batch_size=16, max_epochs=2, patience=100, compile=True, device="cpu")
    fit(model, corpus.split("train"), corpus.split("valid"), train, progress=False)
    assert compiled == [model.loss]
    assert sum(calls) == 2 * len(corpus.split("train"))


def test_a_write_removes_the_temporary_file_a_killed_writer_left_but_not_a_live_writers(tmp_path):
    import subprocess
    import sys

    from affectfuse.io import _HOST, write_json

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f".result.json.{_HOST}-{int(dead.stdout)}.abc123.tmp"  # its writer was SIGKILLed mid-write
    live = tmp_path / f".result.json.{_HOST}-{os.getpid()}.def456.tmp"  # a write in progress in a live process
    other = tmp_path / f".other.json.{_HOST}-{int(dead.stdout)}.ghi789.tmp"  # another file's: not this write's
    for p in (orphan, live, other):
        p.write_text('{"half')
    write_json(tmp_path / "result.json", {"a": 1})
    assert json.loads((tmp_path / "result.json").read_text()) == {"a": 1}
    assert not orphan.exists() and live.exists() and other.exists()
