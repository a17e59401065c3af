"""A newcomer's first hour: a fast --help, "did you mean" for every name, MMSA's spellings and file layout, a recipe
printed and trained back, -v/-q through stdlib logging, and an overall progress bar above each run's own."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from affectfuse.cli import COMMANDS, DATA_COMMANDS, main

DATA = "synthetic:n_train=32,n_valid=16,n_test=16,length=4"
TINY = ["--set", "hidden.text=4", "--set", "hidden.audio=4", "--set", "hidden.vision=4", "--set", "text_out=3",
        "--set", "rank=2", "--set", "train.max_epochs=1", "--set", "train.device=cpu"]


def test_help_is_fast_and_no_command_help_imports_torch():
    # best of three wall-clock runs of the real entry point (a loaded machine may slow one of them)
    walls = []
    for _ in range(3):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "affectfuse", "--help"], capture_output=True, text=True,
                              check=True)
        walls.append(time.perf_counter() - start)
    assert "affectfuse models NAME" in done.stdout and "-m lmf -d mosi" in done.stdout
    assert min(walls) < 0.3, walls
    commands = [[c, "--help"] for c in COMMANDS] + [["data", c, "--help"] for c in DATA_COMMANDS]
    code = (
        "import sys\nfrom affectfuse.cli import main\n"
        f"for argv in {commands!r}:\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'numpy', 'matplotlib', 'sklearn'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert done.stdout.count("usage: affectfuse") == len(commands)


def test_did_you_mean_for_commands_flags_models_and_datasets(tmp_path, capsys):
    assert main(["trian"]) == 2
    assert "unknown command 'trian'; did you mean 'train'?" in capsys.readouterr().err
    assert main(["data", "inspcet", DATA]) == 2
    assert "unknown data command 'inspcet'; did you mean 'inspect'?" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["train", "-m", "lmf", "--dat", DATA])
    assert exit_.value.code == 2 and "--data" in capsys.readouterr().err  # tyro's "Perhaps you meant"
    assert main(["train", "-m", "lfm", "-d", DATA, "--out", str(tmp_path)]) == 1
    assert "unknown model 'lfm'; available models: " in (err := capsys.readouterr().err) and "did you mean 'lmf'" in err
    assert main(["train", "-m", "lmf", "-d", "mosie", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "unknown data spec 'mosie'" in err and "did you mean" in err and "'mosei'" in err


def test_mmsa_spellings_and_dataset_names_find_mmsas_files(tmp_path, capsys, monkeypatch):
    root = tmp_path / "datasets"
    pickle = root / "MOSI" / "Processed" / "unaligned_50.pkl"
    pickle.parent.mkdir(parents=True)
    assert main(["data", "write", f"{DATA},aligned=false,lengths.audio=6", str(pickle)]) == 0
    monkeypatch.setenv("AFFECTFUSE_DATA", str(root))
    capsys.readouterr()
    out = tmp_path / "runs"
    # MMSA repeats -s per seed: both seeds run (a plain tuple option would keep the last only)
    assert main(["-q", "train", "-m", "lmf", "-d", "mosi", "-s", "1111", "-s", "1112", "--out", str(out), *TINY]) == 0
    assert json.loads((out / "summary.json").read_text())["seeds"] == [1111, 1112]
    result = json.loads((out / "lmf" / "seed1112" / "result.json").read_text())
    assert result["recipe"] == "mosi"  # named after MMSA's dataset, so the paper recipe applies
    assert json.loads((out / "summary.json").read_text())["data"].startswith(str(pickle))
    capsys.readouterr()  # the run's own warnings (stderr) are not what follows
    # absent files: one line saying which file goes where
    for spec, expected in (("mosi:aligned", "MOSI/Processed/aligned_50.pkl"),
                           ("sims", "SIMS/Processed/unaligned_39.pkl"),
                           ("mosei", "MOSEI/Processed/unaligned_50.pkl"),
                           ("iemocap", "IEMOCAP/iemocap_data_noalign.pkl")):
        assert main(["data", "inspect", spec]) == 1
        err = capsys.readouterr().err
        assert f"{expected} not found" in err and "AFFECTFUSE_DATA" in err and str(root / expected) in err
        assert len(err.strip().splitlines()) == 1
    assert main(["data", "inspect", f"mosi:{pickle}"]) == 0  # ROOT may be the file itself
    assert "mosi:" in capsys.readouterr().out


def test_models_name_prints_a_recipe_that_train_accepts(tmp_path, capsys):
    assert main(["models", "lmf", "-d", DATA, "--set", "rank=2", "--set", "train.max_epochs=1",
                 "--set", "hidden.text=5"]) == 0
    recipe = json.loads(capsys.readouterr().out)
    assert recipe["model"] == "lmf" and recipe["config"]["rank"] == 2 and recipe["config"]["hidden"]["text"] == 5
    assert "recipe 'synthetic'" in recipe["source"]  # --data picked the synthetic corpus's recipe, as train does
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))
    assert main(["-q", "train", "-m", "lmf", "-d", DATA, "--recipe-file", str(path), "--out", str(tmp_path / "a"),
                 "--set", "train.device=cpu"]) == 0
    from_file = json.loads((tmp_path / "a" / "lmf" / "seed1111" / "result.json").read_text())
    assert from_file["config"] == recipe["config"]
    assert {k: v for k, v in from_file["train"].items() if k not in ("seed", "device")} == {
        k: v for k, v in recipe["train"].items() if k not in ("seed", "device")}
    # the same settings given directly train the same configuration
    assert main(["-q", "train", "-m", "lmf", "-d", DATA, "--out", str(tmp_path / "b"), "--set", "rank=2",
                 "--set", "train.max_epochs=1", "--set", "hidden.text=5", "--set", "train.device=cpu"]) == 0
    direct = json.loads((tmp_path / "b" / "lmf" / "seed1111" / "result.json").read_text())
    assert direct["config"] == from_file["config"] and direct["train"] == from_file["train"]
    assert direct["test"] == pytest.approx(from_file["test"])


def test_quiet_and_verbose_set_the_log_level(tmp_path, capsys):
    assert main(["train", "-m", "lmf", "-d", DATA, "--out", str(tmp_path / "a"), *TINY]) == 0
    captured = capsys.readouterr()
    assert "per-seed checkpoints, logs and predictions under" in captured.err  # a message, not output
    assert "| lmf" in captured.out and "lmf seed 1111" in captured.err  # the table; the epoch bar
    assert main(["-q", "train", "-m", "lmf", "-d", DATA, "--out", str(tmp_path / "b"), *TINY]) == 0
    captured = capsys.readouterr()
    # no messages or bars under -q, only warnings (a tiny model's run warnings, when it collapsed)
    assert all(line.startswith("warning: ") for line in captured.err.splitlines()) and "| lmf" in captured.out
    assert main(["-q", "train", "-m", "lmf", "-d", "nope.pkl", "--out", str(tmp_path / "c")]) == 1
    assert "no such file or folder" in capsys.readouterr().err  # errors still show under -q
    assert main(["-v", "train", "-m", "lmf", "-d", "nope.pkl", "--out", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert "ERROR affectfuse: affectfuse train: error:" in err and "Traceback" in err  # -v adds the traceback


def test_sweep_draws_an_overall_bar_above_each_runs_bar(tmp_path, capsys):
    from affectfuse.progress import job_bar, run_position

    assert run_position() == 0
    with job_bar(3, desc="job", enabled=False):
        assert run_position() == 1
    assert run_position() == 0
    assert main(["sweep", "-m", "lmf", "-d", DATA, "--rates", "0,1", "--protocol", "train-and-test",
                 "--out", str(tmp_path), *TINY]) == 0
    err = capsys.readouterr().err
    assert "sweep: 100%" in err and "2/2" in err  # runs done / total
    assert "lmf seed 1111" in err  # each run's epoch bar
    assert "2 runs computed now, 0 reused" in err
