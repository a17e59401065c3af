"""The command line end to end on small synthetic data: names, exit codes, JSON output, errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from affectfuse.cli import main

DATA = "synthetic:n_train=64,n_valid=32,n_test=32,length=5"
TINY_SET = [
    "--set",
    "hidden.text=4",
    "--set",
    "hidden.audio=4",
    "--set",
    "hidden.vision=4",
    "--set",
    "text_out=3",
    "--set",
    "train.max_epochs=2",
]


def test_models_lists_the_registry(capsys):
    assert main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {"tfn", "lmf"} <= set(listed) and "mosi" in listed["lmf"]["recipes"]


def test_train_then_evaluate_round_trip(tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(
        ["train", "--model", "tfn", "lmf", "--data", DATA, "--seed", "1", "2", "--out", str(out), "--json", *TINY_SET]
    )
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload["test"]) == {"tfn", "lmf"} and payload["seeds"] == [1, 2]
    assert {"acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "acc5", "acc7", "mae", "corr"} <= set(
        payload["test"]["lmf"]
    )
    assert len(payload["runs"]) == 4
    checkpoint = out / "lmf" / "seed2" / "best.pt"
    assert checkpoint.is_file() and (out / "summary.json").is_file()
    assert main(["evaluate", str(checkpoint), "--data", DATA, "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)["metrics"]
    run = next(r for r in payload["runs"] if r["model"] == "lmf" and r["seed"] == 2)
    assert scores["mae"] == pytest.approx(run["test"]["mae"])


def test_train_prints_a_table(tmp_path, capsys):
    assert main(["train", "--model", "lmf", "--data", DATA, "--out", str(tmp_path), "--quiet", *TINY_SET]) == 0
    out = capsys.readouterr().out
    assert "| lmf" in out and "acc2_has0" in out and "±" in out


def test_user_errors_exit_1_with_a_message_not_a_traceback(tmp_path, capsys):
    assert main(["train", "--model", "lfm", "--data", DATA, "--out", str(tmp_path)]) == 1
    assert "unknown model 'lfm'; available models:" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nope.pt"), "--data", DATA]) == 1
    assert "nope.pt does not exist" in capsys.readouterr().err
    assert main(["train", "--model", "lmf", "--data", "no/such/path.pkl", "--out", str(tmp_path)]) == 1
    assert "no/such/path.pkl" in capsys.readouterr().err
    assert main(["train", "--model", "lmf", "--data", DATA, "--set", "rank", "--out", str(tmp_path)]) == 1
    assert "--set expects KEY=VALUE" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2


def test_evaluate_refuses_data_the_model_was_not_built_for(tmp_path, capsys):
    assert main(["train", "--model", "lmf", "--data", DATA, "--out", str(tmp_path), "--quiet", *TINY_SET]) == 0
    capsys.readouterr()
    other = "synthetic:n_train=16,n_valid=8,n_test=8,length=5,dims.audio=9"
    assert main(["evaluate", str(tmp_path / "lmf" / "seed1111" / "best.pt"), "--data", other]) == 1
    assert "audio features are 9-d in the data, the model expects" in capsys.readouterr().err


def test_data_inspect_reports_the_corpus(capsys):
    assert main(["data", "inspect", DATA, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["splits"]["train"]["size"] == 64


def test_python_dash_m_entry_point():
    done = subprocess.run([sys.executable, "-m", "affectfuse", "models"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "lmf" in done.stdout and "tfn" in done.stdout


def test_synthetic_corpus_written_in_mmsa_layout_reads_back_and_trains(tmp_path, capsys):
    spec = (
        "synthetic:n_train=40,n_valid=16,n_test=16,aligned=false,lengths.audio=30,lengths.vision=40,"
        "missing_modality=0.2"
    )
    path = tmp_path / "unaligned_50.pkl"
    assert main(["data", "write", spec, str(path)]) == 0
    from affectfuse.data.datasets import load_data
    from affectfuse.data.formats import detect_format

    original, restored = load_data(spec), load_data(str(path))
    assert detect_format(path) == "mmsa" and not restored.spec.aligned
    for name, split in original.splits.items():
        other = restored.split(name)
        assert other.ids == split.ids
        for m in split.features:
            assert (other.masks[m] == split.masks[m]).all()
            assert (other.features[m] == split.features[m]).all()
        assert (other.labels == split.labels).all()
    capsys.readouterr()
    assert (
        main(["train", "--model", "lmf", "--data", str(path), "--out", str(tmp_path / "r"), "--json", *TINY_SET]) == 0
    )
    assert json.loads(capsys.readouterr().out)["test"]["lmf"]["mae"]["mean"] > 0


def test_every_set_override_reaches_the_saved_config(tmp_path, capsys):
    argv = [
        "train",
        "--model",
        "lmf",
        "--data",
        DATA,
        "--out",
        str(tmp_path),
        "--quiet",
        *TINY_SET,
        "--set",
        "rank=2",
        "--set",
        "dropout.audio=0.25",
        "--set",
        "train.batch_size=7",
    ]
    assert main(argv) == 0
    result = json.loads((tmp_path / "lmf" / "seed1111" / "result.json").read_text())
    config, train = result["config"], result["train"]
    assert config["hidden"] == {"text": 4, "audio": 4, "vision": 4} and config["text_out"] == 3
    assert config["rank"] == 2 and config["dropout"]["audio"] == 0.25
    assert train["batch_size"] == 7 and train["max_epochs"] == 2


def test_precision_flag_reaches_the_saved_training_config_and_fp16_on_cpu_is_a_clear_error(tmp_path, capsys):
    base = ["train", "--model", "lmf", "--data", DATA, "--quiet", "--device", "cpu", *TINY_SET]
    assert main([*base, "--out", str(tmp_path / "bf16"), "--precision", "bf16"]) == 0
    result = json.loads((tmp_path / "bf16" / "lmf" / "seed1111" / "result.json").read_text())
    assert result["train"]["precision"] == "bf16" and result["train"]["compile"] is False
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "fp16"), "--precision", "fp16"]) == 1
    assert "fp16' needs CUDA" in capsys.readouterr().err
