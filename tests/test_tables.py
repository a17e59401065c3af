"""`affectfuse table`: each of the papers' tables runs end to end on a tiny synthetic corpus and writes its
Markdown document with the command that made it and one row per model."""

from __future__ import annotations

import pytest

from affectfuse.cli import main
from affectfuse.experiments.tables import DMD_ROWS, MULT_ROWS

TINY_DATA = "synthetic:n_train=48,n_valid=16,n_test=16,length=4,dims.text=6,dims.audio=4,dims.vision=5"
ONE_EPOCH = ["--set", "train.max_epochs=1", "--set", "train.batch_size=16"]


def test_emt_incomplete_table(tmp_path, capsys):
    out = tmp_path / "emt-incomplete.md"
    directive = '<!-- docs-test: tiny "--seeds 1" -> "--seeds 1" -->'
    out.write_text(f"# an earlier version\n\nMade by:\n\n{directive}\n```bash\nold command\n```\n")
    argv = ["table", "emt-incomplete", "--data", TINY_DATA, "--seeds", "1", "--rates", "0,1", "--model", "lmf",
            "ef_lstm", *ONE_EPOCH, "--out", str(out), "--work", str(tmp_path / "work"), "--quiet"]
    assert main(argv) == 0
    text = out.read_text()
    assert "affectfuse table emt-incomplete --data" in text and "--seed 1111 --rates 0,1" in text
    assert f"Made by:\n\n{directive}\n```bash\naffectfuse table" in text  # the docs test's directive kept
    assert "old command" not in text
    header = next(line for line in text.splitlines() if line.startswith("| model |"))
    assert header.split(" | ")[1:4] == ["MAE", "Corr", "Acc-7"] and "F1 non-0" in header
    rows = [line for line in text.splitlines() if line.startswith(("| lmf ", "| ef_lstm "))]
    assert len(rows) == 2 and all(" ± " in row for row in rows)
    assert len(list((tmp_path / "work" / "points" / "ef_lstm").rglob("seed1111.json"))) == 2  # one per rate
    assert "written to" in capsys.readouterr().out


def test_emt_fusion_table(tmp_path):
    out = tmp_path / "fusion.md"
    rows = ["emt_dlfr:ooll", "emt_dlfr:oall", "emt_dlfr"]
    small = ["--set", "d_model=16", "--set", "layers=2", "--set", "heads=2", "--set", "post_fusion_dim=16"]
    assert main(["table", "emt-fusion", "--shape", "4,24,32", "--repeats", "1", "--no-memory", "--model", *rows,
                 *small, "--out", str(out)]) == 0
    text = out.read_text()
    rows = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| O") and "`" in line}
    assert set(rows) == {"`emt_dlfr:ooll`", "`emt_dlfr`", "`emt_dlfr:oall`"}
    macs = {name: float(line.split(" | ")[2]) for name, line in rows.items()}
    assert rows["`emt_dlfr`"].split(" | ")[3] == "1.00"
    assert macs["`emt_dlfr`"] < macs["`emt_dlfr:ooll`"] < macs["`emt_dlfr:oall`"]
    assert "affectfuse table emt-fusion --shape 4,24,32" in text and "--set d_model=16" in text


def test_dmd_ablation_table(tmp_path):
    out = tmp_path / "dmd.md"
    argv = ["table", "dmd-ablation", "--data", TINY_DATA, "--seeds", "1", *ONE_EPOCH, "--set", "dim=4",
            "--set", "heads=1", "--out", str(out), "--work", str(tmp_path / "work"), "--quiet"]
    assert main(argv) == 0
    text = out.read_text()
    for _, name in DMD_ROWS + MULT_ROWS:
        assert f"| `{name}` |" in text
    assert "Table 3" in text and "Table 5" in text and "--set dim=4" in text


def test_unknown_table_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["table", "emt-everything"])
