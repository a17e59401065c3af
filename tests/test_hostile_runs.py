"""Runs and settings, tried as a hostile user (or a bad day) would: two writers, a killed run, a full disk, special
files in the way, corrupted checkpoints, nonsense settings, degenerate data. Each ends in one clear line or correct
behaviour, with nothing lost."""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from affectfuse import load_data, load_model, train_model
from affectfuse.cli import main
from affectfuse.data.corpus import DataFormatError
from affectfuse.engine.checkpoint import CheckpointError
from affectfuse.io import WriteError, append_line, atomic_write, sha256_file
from affectfuse.outputs import FinishedRunError, FolderBusyError, claim

from .conftest import TINY

DATA = "synthetic:n_train=24,n_valid=12,n_test=12,length=4"
QUICK = {"train.max_epochs": 2, "train.batch_size": 8, **{k: v for k, v in TINY["lmf"].items()}}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus():
    return load_data(DATA)


def _one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# --- one writer per output folder -------------------------------------------------------------------------------


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from affectfuse.outputs import claim\n"
         f"with claim({str(tmp_path / 'out')!r}):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusyError, match=rf"out is being written by pid {holder.pid} on "):
            with claim(tmp_path / "out"):
                pass
        code = main(["train", "-m", "lmf", "--data", DATA, "--out", str(tmp_path / "out"), "--quiet"])
        assert code == 1
    finally:
        holder.kill()
        holder.wait()
    with claim(tmp_path / "out"):  # the kernel released a dead holder's lock: no stale lock to clean by hand
        pass


def test_finished_run_is_reused_or_refused_never_overwritten(corpus, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = train_model("lmf", corpus, overrides=QUICK, out_dir=out, progress=False)
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and not p.name.startswith(".")}
    result = json.loads((out / "result.json").read_text())
    assert result["checkpoint"] == "best.pt" and result["checkpoint_sha256"] == sha256_file(out / "best.pt")
    again = train_model("lmf", corpus, overrides=QUICK, out_dir=out, progress=False)  # same settings: reused
    assert again == first
    with pytest.raises(FinishedRunError, match="finished run with other config"):
        train_model("lmf", corpus, overrides={**QUICK, "rank": 2}, out_dir=out, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and not p.name.startswith(".")} == files
    train_model("lmf", corpus, overrides={**QUICK, "rank": 2}, out_dir=out, progress=False, overwrite=True)
    kept = out / "attempt-1"
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == files  # the old run moved aside, byte for byte
    assert json.loads((out / "result.json").read_text())["config"]["rank"] == 2


def test_changed_data_content_is_not_reused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train_model("lmf", load_data(DATA), overrides=QUICK, out_dir=out, progress=False)
    other = load_data(DATA.replace("n_test=12", "n_test=13"))
    with pytest.raises(FinishedRunError, match="data_sha256"):
        train_model("lmf", other, overrides=QUICK, out_dir=out, progress=False)


def test_killed_run_is_restarted_with_the_killed_attempt_kept(tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [sys.executable, "-m", "affectfuse", "train", "-m", "lmf", "--data", DATA.replace("24", "600"),
               "--out", str(out), "--quiet", "--set", "train.max_epochs=200", "--set", "train.patience=200"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    log = out / "lmf" / "seed1111" / "log.jsonl"
    deadline = time.monotonic() + 60
    while (not log.exists() or len(log.read_text().splitlines()) < 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    lines = log.read_text().splitlines()
    assert len(lines) >= 2 and all(json.loads(line) for line in lines)  # whole lines only
    code = main(["train", "-m", "lmf", "--data", DATA.replace("24", "600"), "--out", str(out), "--quiet",
                 "--set", "train.max_epochs=1"])
    assert code == 0
    run = out / "lmf" / "seed1111"
    assert (run / "attempt-1" / "log.jsonl").read_text().splitlines() == lines
    assert (run / "result.json").exists() and len((run / "log.jsonl").read_text().splitlines()) == 1


# --- writes ------------------------------------------------------------------------------------------------------


def test_symlink_is_followed_and_special_files_refused(tmp_path: Path) -> None:
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    atomic_write(link, lambda f: f.write("new"), mode="w")
    assert link.is_symlink() and target.read_text() == "new"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(WriteError, match="pipe: it is a special file"):
        atomic_write(fifo, lambda f: f.write("x"), mode="w")
    assert fifo.exists() and not fifo.is_file()
    with pytest.raises(WriteError, match="it is a folder"):
        atomic_write(tmp_path, lambda f: f.write("x"), mode="w")


@pytest.mark.parametrize(("code", "reason"), [
    (errno.ENOSPC, "the disk is full"), (errno.EROFS, "the file system is read-only"),
    (errno.EACCES, "permission denied"),
])
def test_disk_errors_are_one_line_and_leave_the_previous_file(tmp_path: Path, monkeypatch, code, reason) -> None:
    path = tmp_path / "result.json"
    path.write_text("previous")

    def fail(fd, *args):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(WriteError, match=rf"cannot write .*result\.json: {reason}"):
        atomic_write(path, lambda f: f.write("new"), mode="w")
    assert path.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_full_disk_while_logging_keeps_whole_lines(tmp_path: Path, monkeypatch) -> None:
    log = tmp_path / "log.jsonl"
    append_line(log, '{"epoch": 0}')
    real = os.write

    def half(fd, data):
        real(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half)
    with pytest.raises(WriteError, match="log.jsonl: the disk is full"):
        append_line(log, '{"epoch": 1}')
    monkeypatch.undo()
    assert log.read_text() == '{"epoch": 0}\n'


def test_unwritable_output_folder_is_one_line(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(["train", "-m", "lmf", "--data", DATA, "--out", str(blocker / "out"), "--quiet"])
    assert "cannot write" in _one_line_error(capsys, code)


# --- checkpoints -------------------------------------------------------------------------------------------------


def test_corrupted_and_truncated_checkpoints_are_named(corpus, tmp_path: Path, capsys) -> None:
    train_model("lmf", corpus, overrides=QUICK, out_dir=tmp_path / "run", progress=False)
    good = (tmp_path / "run" / "best.pt").read_bytes()
    flipped = bytearray(good)
    flipped[_largest_tensor_offset(tmp_path / "run" / "best.pt") + 5] ^= 0x10  # one bit of a weight
    assert torch.load(io.BytesIO(bytes(flipped)), weights_only=True)  # still a loadable file: only the digest knows
    (tmp_path / "flipped.pt").write_bytes(bytes(flipped))
    (tmp_path / "truncated.pt").write_bytes(good[: len(good) // 3])
    for name in ("flipped.pt", "truncated.pt"):
        with pytest.raises(CheckpointError, match=rf"{name}.* corrupted"):
            load_model(tmp_path / name)
        code = main(["evaluate", str(tmp_path / name), "--data", DATA])
        assert "corrupted" in _one_line_error(capsys, code)


def _largest_tensor_offset(path: Path) -> int:
    """Byte offset of the largest stored tensor's data inside a torch.save zip archive."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = path.read_bytes()
    name_length, extra_length = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    return info.header_offset + 30 + name_length + extra_length


def test_version1_checkpoints_without_a_digest_still_load(corpus, tmp_path: Path) -> None:
    train_model("lmf", corpus, overrides=QUICK, out_dir=tmp_path / "run", progress=False)
    payload = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    payload["format_version"] = 1
    del payload["sha256"]
    torch.save(payload, tmp_path / "v1.pt")
    assert load_model(tmp_path / "v1.pt").model_name == "lmf"


# --- nonsense settings -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "expected"), [
    (["--set", "rank=0"], "LMFConfig.rank must be an integer >= 1"),
    (["--set", "train.lr=-1"], "TrainConfig.lr must be a positive number"),
    (["--seeds", "-3"], "--seeds is a count"),
    (["--set", "train.max_epochs=0"], "TrainConfig.max_epochs must be a positive number"),
    (["--set", "train.max_epochs=-1"], "TrainConfig.max_epochs must be a positive number"),
    (["--set", "train.batch_size=0"], "TrainConfig.batch_size must be a positive number"),
    (["--set", "train.monitor=bogus"], "train.monitor 'bogus' is not a metric of this corpus; choose 'auto' or one "),
    (["--set", "train.optimizer=sgd"], "expected one of ['adam', 'adamw']"),
    (["--set", "dropout.audio=1.5"], "dropout probability and must be in [0, 1)"),
])
def test_nonsense_settings_are_one_clear_line(tmp_path: Path, capsys, args, expected) -> None:
    code = main(["train", "-m", "lmf", "--data", DATA, "--out", str(tmp_path / "o"), "--quiet",
                 "--set", "train.max_epochs=1", *args])
    assert expected in _one_line_error(capsys, code)


def test_recipe_file_with_wrong_types_is_refused_naming_the_field(tmp_path: Path) -> None:
    from affectfuse.config.recipes import RECIPE_FORMAT, load_recipe_file

    path = tmp_path / "recipe.json"
    path.write_text(json.dumps({"format": RECIPE_FORMAT, "model": "lmf", "config": {"rank": "four"},
                                "train": {"lr": [1, 2]}}))
    with pytest.raises(ValueError, match=r"LMFConfig\.rank: expected an integer, got 'four'"):
        load_recipe_file(path)


# --- degenerate data ---------------------------------------------------------------------------------------------


def _with(corpus, split: str = "train", **changes):
    return dataclasses.replace(corpus, splits={**corpus.splits, split: dataclasses.replace(corpus.splits[split],
                                                                                          **changes)})


@pytest.mark.parametrize("model", list(TINY))
def test_zero_length_sequences_are_a_clear_error_for_every_model(corpus, model) -> None:
    train = corpus.split("train")
    features = {**train.features, "audio": train.features["audio"][:, :0]}
    masks = {**train.masks, "audio": train.masks["audio"][:, :0]}
    bad = _with(corpus, features=features, masks=masks)
    with pytest.raises(DataFormatError, match=r"split 'train', modality 'audio' has length 0"):
        train_model(model, bad, overrides={**TINY[model], "train.max_epochs": 1}, progress=False)


def test_empty_split_and_single_sample_training(corpus) -> None:
    with pytest.raises(DataFormatError, match=r"split 'valid' is empty"):
        train_model("lmf", _with(corpus, "valid", **_subset(corpus.split("valid"), [])), overrides=QUICK,
                    progress=False)
    with pytest.raises(DataFormatError, match="training needs at least 2"):
        train_model("lmf", _with(corpus, **_subset(corpus.split("train"), [0])), overrides=QUICK, progress=False)


def _subset(split, index):
    part = split.subset(np.asarray(index, dtype=np.int64))
    return {"ids": part.ids, "features": part.features, "masks": part.masks, "labels": part.labels}


def test_labels_of_the_wrong_kind_or_scale_are_refused(corpus) -> None:
    train = corpus.split("train")
    with pytest.raises(DataFormatError, match="boolean labels"):
        train_model("lmf", _with(corpus, labels=train.labels > 0), overrides=QUICK, progress=False)
    with pytest.raises(DataFormatError, match=r"labels from -300 to 300, outside \[-3, 3\]"):
        train_model("lmf", _with(corpus, labels=np.sign(train.labels) * 300), overrides=QUICK, progress=False)
    huge = {**train.features, "vision": train.features["vision"] * 1e30}
    with pytest.raises(DataFormatError, match="modality 'vision' has .* features of magnitude above 1e\\+06"):
        train_model("lmf", _with(corpus, features=huge), overrides=QUICK, progress=False)


def test_a_corpus_is_checked_once_for_a_grid_of_runs(corpus, monkeypatch) -> None:
    """train_many runs ready_for_training per (model, seed); the scan of the data (and its fingerprint, cached on the
    corpus it returns) happens for the first run only, and its unlabelled-samples warning once."""
    import affectfuse.data.checks as checks

    labels = corpus.split("train").labels.copy()
    labels[:2] = np.nan
    partly = _with(corpus, labels=labels)
    scans = []
    real = checks.check_split
    monkeypatch.setattr(checks, "check_split", lambda c, name, **kw: scans.append(name) or real(c, name, **kw))
    with pytest.warns(UserWarning, match="2 unlabelled samples"):
        first = checks.ready_for_training(partly)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would now fail the test
        again = checks.ready_for_training(partly)
    assert again is first and checks.ready_for_training(first) is first
    assert scans == ["train", "valid", "test"]


def test_nan_labels_are_unlabelled_left_out_of_training_refused_by_evaluate(corpus, tmp_path: Path) -> None:
    labels = corpus.split("train").labels.copy()
    labels[:3] = np.nan
    with pytest.warns(UserWarning, match="3 unlabelled samples"):
        run = train_model("lmf", _with(corpus, labels=labels), overrides=QUICK, out_dir=tmp_path / "r",
                          progress=False)
    assert np.isfinite(run.test["mae"])
    from affectfuse import evaluate_checkpoint

    test_labels = corpus.split("test").labels.copy()
    test_labels[0] = np.nan
    with pytest.raises(ValueError, match="1 of 12 samples of split 'test' are unlabelled"):
        evaluate_checkpoint(tmp_path / "r" / "best.pt", _with(corpus, "test", labels=test_labels))
    from affectfuse import predict

    ids, prediction, _ = predict(load_model(tmp_path / "r" / "best.pt"), _with(corpus, "test", labels=test_labels)
                                 .split("test"))
    assert len(ids) == 12 and np.isfinite(prediction).all()


# --- workers -----------------------------------------------------------------------------------------------------


def test_pool_workers_exit_when_their_parent_is_killed(tmp_path: Path) -> None:
    script = (
        "import concurrent.futures, multiprocessing, os, time\n"
        "from affectfuse.workers import watch_parent\n"
        "if __name__ == '__main__':\n"
        "    pool = concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context('spawn'),\n"
        "        initializer=watch_parent, initargs=(os.getpid(),))\n"
        "    print(*pool.map(os.getpid, [None] * 0) or '', end='')\n"
        "    futures = [pool.submit(time.sleep, 120) for _ in range(2)]\n"
        "    time.sleep(0.5)\n"
        "    print(' '.join(str(p) for p in pool._processes), flush=True)\n"
        "    time.sleep(120)\n"
    )
    (tmp_path / "parent.py").write_text(script)
    parent = subprocess.Popen([sys.executable, str(tmp_path / "parent.py")], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT)
    workers = [int(p) for p in parent.stdout.readline().split()]
    assert len(workers) == 2 and all(_alive(p) for p in workers)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers)


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return status != "Z"  # a zombie has exited (its parent, reaped by init, is gone)


@pytest.mark.parametrize("command", [
    ["data", "inspect", "{fifo}"],
    ["evaluate", "{fifo}", "--data", DATA],
    ["train", "-m", "lmf", "--data", "{fifo}", "--out", "{tmp}/o"],
    ["train", "-m", "lmf", "--data", DATA, "--recipe-file", "{fifo}", "--out", "{tmp}/o"],
])
def test_a_fifo_given_as_input_is_refused_without_blocking(tmp_path: Path, capsys, command) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it to read would block forever: nobody writes into it
    code = main([part.format(fifo=fifo, tmp=tmp_path) for part in command])
    assert "special file" in _one_line_error(capsys, code)
