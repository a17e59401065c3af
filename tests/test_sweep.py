"""The robustness sweep: AUILC on curves of known area, conditions, reproducible masks, resuming, reports, CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from affectfuse.cli import main
from affectfuse.config.registry import list_models, make_config
from affectfuse.data.datasets import load_data
from affectfuse.robustness.auilc import auilc
from affectfuse.robustness.sweep import (
    QUICK_MODEL,
    SweepSettings,
    drop_splits,
    mask_seeds,
    modality_conditions,
    parse_rates,
    point_path,
    quick_overrides,
    rate_conditions,
    run_sweep,
)

DATA = "synthetic:n_train=48,n_valid=16,n_test=24,length=4"
# A tiny LMF trained for one epoch: the sweep's bookkeeping is under test here, not the model.
TINY_LMF = {"hidden.text": "6", "hidden.audio": "4", "hidden.vision": "4", "text_out": "3", "rank": "2",
            "train.max_epochs": "1", "train.device": "cpu"}


@pytest.fixture(scope="module")
def corpus():
    return load_data(DATA)


# --- AUILC ------------------------------------------------------------------------------------------------------------


def test_auilc_of_a_line_is_its_exact_area():
    rates = np.linspace(0, 1, 11)
    assert auilc(rates, 1 - rates) == pytest.approx(0.5)  # triangle under 1 - r on [0, 1]
    assert auilc(rates, 0.3 + 0.4 * rates) == pytest.approx(0.5)  # trapezoid (0.3 + 0.7) / 2 * 1


def test_auilc_is_not_normalised_by_the_interval():
    # SIMS convention (spec §0.5): R = {0.0, ..., 0.5}, a flat curve at 76.8 has area 38.4.
    assert auilc([0.0, 0.1, 0.2, 0.3, 0.4, 0.5], [76.8] * 6) == pytest.approx(38.4)


def test_auilc_matches_the_official_sum_and_is_step_aware():
    rng = np.random.default_rng(0)
    values = rng.uniform(size=11)
    official = sum((values[i] + values[i + 1]) / 2 * 0.1 for i in range(10))
    assert auilc(np.round(np.arange(11) * 0.1, 1), values) == pytest.approx(official)
    # Uneven grid: each interval has its own width; unsorted input is sorted with its values.
    assert auilc([0.0, 0.5, 0.6], [1.0, 1.0, 0.0]) == pytest.approx(0.5 + 0.05)
    assert auilc([0.6, 0.0, 0.5], [0.0, 1.0, 1.0]) == pytest.approx(0.55)
    # A parabola sampled finely approaches its integral (1/3); coarse trapezoids overestimate a convex curve.
    fine = np.linspace(0, 1, 1001)
    assert auilc(fine, fine**2) == pytest.approx(1 / 3, abs=1e-6)
    assert auilc([0, 0.5, 1], [0, 0.25, 1]) == pytest.approx(0.375)


@pytest.mark.parametrize(
    ("rates", "values", "message"),
    [([0.5], [1.0], "at least two"), ([0, 0.5, 0.5], [1, 2, 3], "repeated"), ([0, 1], [1], "one value per rate"),
     ([0, 1], [1, float("nan")], "finite")],
)
def test_auilc_refuses_bad_curves(rates, values, message):
    with pytest.raises(ValueError, match=message):
        auilc(rates, values)


# --- conditions and masks ---------------------------------------------------------------------------------------------


def test_parse_rates():
    rates = parse_rates("0:1:0.1")
    assert len(rates) == 11 and rates[3] == 0.3 and rates[-1] == 1.0
    assert parse_rates("0.5,0,1") == [0.0, 0.5, 1.0]
    for bad, message in [("0:1", "START:STOP:STEP"), ("0:1:0.3", "whole number"), ("0,2", r"\[0, 1\]"),
                         ("0,0", "repeats"), ("a,b", "comma list")]:
        with pytest.raises(ValueError, match=message):
            parse_rates(bad)


def test_modality_conditions_are_the_non_empty_subsets():
    conditions = modality_conditions(("text", "audio", "vision"))
    assert [c.label for c in conditions] == ["T", "A", "V", "T+A", "T+V", "A+V", "T+A+V"]
    assert conditions[3].rates == {"text": 0.0, "audio": 0.0, "vision": 1.0}
    assert [c.label for c in modality_conditions(("audio", "vision"))] == ["A", "V", "A+V"]  # POM has no text


def test_masks_are_reproducible_from_the_seed_and_nested_over_rates(corpus):
    low, high = rate_conditions([0.3, 0.6])
    test = corpus.split("test")

    def dropped(condition, seed, kind="per-seed"):
        split = drop_splits(corpus, condition, ("test",), mask_seeds(kind, seed)).split("test")
        real = {m: np.abs(test.features[m]).sum(-1) > 0 for m in test.masks}
        return {m: (np.abs(split.features[m]).sum(-1) == 0) & real[m] for m in test.masks}

    a, b = dropped(low, 1111), dropped(low, 1111)
    assert all(np.array_equal(a[m], b[m]) for m in a)  # same (rate, seed) -> same masks
    assert any(not np.array_equal(a[m], dropped(low, 1112)[m]) for m in a)  # per-seed: another seed, other masks
    official = dropped(low, 1111, "official"), dropped(low, 1112, "official")
    assert all(np.array_equal(official[0][m], official[1][m]) for m in a)  # official: the same for every seed
    real = sum(int((np.abs(test.features[m]).sum(-1) > 0).sum()) for m in a)
    rate = sum(int(a[m].sum()) for m in a) / real
    assert 0.2 < rate < 0.4  # about r of the positions are dropped
    more = dropped(high, 1111)
    assert all((more[m] | ~a[m]).all() for m in a)  # everything dropped at 0.3 is dropped at 0.6 too
    # The splits that are not named stay complete.
    untouched = drop_splits(corpus, high, ("test",), mask_seeds("official", 1111)).split("train")
    assert all(np.array_equal(untouched.features[m], corpus.split("train").features[m]) for m in test.masks)


def test_quick_overrides_fit_every_model_and_cap_epochs():
    for name in list_models():
        overrides = quick_overrides(name, max_epochs=200, patience=8)
        assert overrides["train.max_epochs"] == 12 and overrides["train.patience"] == 4
        make_config(name, **{k: v for k, v in overrides.items() if not k.startswith("train.")})  # valid fields
    assert set(QUICK_MODEL) == set(list_models())
    assert quick_overrides("lmf", max_epochs=5, patience=8)["train.max_epochs"] == 5  # never raises the cap


# --- the sweep --------------------------------------------------------------------------------------------------------


class Interrupt(Exception):
    pass


def test_an_interrupted_sweep_resumes_without_duplicated_or_lost_points(corpus, tmp_path):
    conditions, seeds = rate_conditions([0.0, 0.5, 1.0]), [1, 2]
    settings = SweepSettings(data=DATA, overrides=TINY_LMF)
    seen = []

    def stop_after_four(point):
        seen.append(point)
        if len(seen) == 4:
            raise Interrupt  # as a kill between two points would

    with pytest.raises(Interrupt):
        run_sweep(["lmf"], corpus, out_dir=tmp_path, conditions=conditions, seeds=seeds, settings=settings,
                  progress=False, plots=False, on_point=stop_after_four)
    files = sorted(tmp_path.glob("points/**/*.json"))
    assert len(files) == 4
    before = {f: f.read_bytes() for f in files}
    assert not (tmp_path / "results.json").exists()
    trained = tmp_path / "models" / "lmf" / "seed2" / "result.json"  # seed 2 trained, one of its points written
    stamp = trained.stat().st_mtime_ns

    result = run_sweep(["lmf"], corpus, out_dir=tmp_path, conditions=conditions, seeds=seeds, settings=settings,
                       progress=False, plots=False)
    assert result.ran == 2  # only the missing points ran
    keys = [(p["model"], p["condition"], p["seed"]) for p in result.points]
    assert len(keys) == len(set(keys)) == 6
    assert set(keys) == {("lmf", c.name, s) for c in conditions for s in seeds}
    assert all(f.read_bytes() == before[f] for f in files)  # finished points were neither redone nor rewritten
    assert not list(tmp_path.rglob("*.tmp"))  # no half-written file anywhere
    assert trained.stat().st_mtime_ns == stamp  # its model was reused, not retrained
    assert json.loads(point_path(tmp_path, "lmf", conditions[2], 2).read_text())["seed"] == 2

    # A third run computes nothing, and the reports agree with the points.
    again = run_sweep(["lmf"], corpus, out_dir=tmp_path, conditions=conditions, seeds=seeds, settings=settings,
                      progress=False, plots=False)
    assert again.ran == 0
    acc = [[p["metrics"]["acc2_has0"] for p in again.points if p["seed"] == s] for s in seeds]
    expected = auilc([0.0, 0.5, 1.0], np.mean(acc, axis=0))
    assert again.auilc["lmf"]["acc2_has0"]["auilc"] == pytest.approx(expected)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["auilc"]["lmf"]["acc2_has0"]["auilc"] == pytest.approx(expected)
    assert len(saved["points"]) == 6


def test_a_sweep_with_other_settings_is_refused_in_the_same_folder(corpus, tmp_path, monkeypatch):
    conditions = rate_conditions([0.0, 1.0])
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the optional `plot` extra were not installed
    with pytest.warns(UserWarning, match="matplotlib is not installed"):
        run_sweep(["lmf"], corpus, out_dir=tmp_path, conditions=conditions, seeds=[1],
                  settings=SweepSettings(data=DATA, overrides=TINY_LMF), progress=False)
    assert (tmp_path / "results.md").exists() and not (tmp_path / "curves.png").exists()
    with pytest.raises(ValueError, match="protocol"):
        run_sweep(["lmf"], corpus, out_dir=tmp_path, conditions=conditions, seeds=[1], progress=False, plots=False,
                  settings=SweepSettings(data=DATA, protocol="train-and-test", overrides=TINY_LMF))


def test_train_and_test_protocol_gives_emt_dlfr_the_complete_training_split(corpus, tmp_path, monkeypatch):
    import affectfuse.engine.runs as api

    calls = []
    real = api.train_model

    def spy(name, data, **kwargs):
        calls.append((name, data.split("train"), kwargs["overrides"]))
        return real(name, data, **kwargs)

    monkeypatch.setattr(api, "train_model", spy)
    tiny = {"d_model": "8", "heads": "2", "layers": "1", "audio_hidden": "6", "vision_hidden": "6",
            "post_fusion_dim": "8", "train.max_epochs": "1", "train.device": "cpu"}
    result = run_sweep(["emt_dlfr"], corpus, out_dir=tmp_path, conditions=rate_conditions([0.5]), seeds=[1],
                       settings=SweepSettings(data=DATA, protocol="train-and-test", overrides=tiny),
                       progress=False, plots=False)
    (name, train, overrides), = calls
    assert overrides["missing_rate"] == 0.5
    assert all(np.array_equal(train.features[m], corpus.split("train").features[m]) for m in train.features)
    assert result.points[0]["rate"] == 0.5 and result.auilc == {}  # one rate: no area

    calls.clear()
    run_sweep(["lmf"], corpus, out_dir=tmp_path / "lmf", conditions=rate_conditions([0.5]), seeds=[1],
              settings=SweepSettings(data=DATA, protocol="train-and-test", overrides=TINY_LMF),
              progress=False, plots=False)
    (_, train, overrides), = calls
    assert "missing_rate" not in overrides
    zeroed = (np.abs(train.features["audio"]).sum(-1) == 0) & train.masks["audio"]
    assert 0.3 < zeroed.sum() / train.masks["audio"].sum() < 0.7  # LMF trains on the dropped split


def test_cli_modality_sweep_writes_a_table(tmp_path, capsys):
    sets = [a for k, v in TINY_LMF.items() for a in ("--set", f"{k}={v}")]
    assert main(["sweep", "--model", "lmf", "--data", DATA, "--missing", "modality", "--out", str(tmp_path), *sets,
                 "--quiet"]) == 0
    text = capsys.readouterr().out
    for label in ("present=T ", "present=A+V", "present=T+A+V"):
        assert label in text
    assert (tmp_path / "results.md").exists() and (tmp_path / "results.csv").exists()
    assert not (tmp_path / "curves.png").exists()  # no rates, no curve
    assert len(list(tmp_path.glob("points/lmf/present_*/seed1111.json"))) == 7


def test_cli_rate_sweep_writes_json_csv_and_plots(tmp_path, capsys):
    sets = [a for k, v in TINY_LMF.items() for a in ("--set", f"{k}={v}")]
    assert main(["sweep", "-m", "lmf", "--data", DATA, "--rates", "0:1:0.5", "--seeds", "2", "--quick",
                 "--out", str(tmp_path), *sets, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload["summary"]["lmf"]) == {"rate0.000", "rate0.500", "rate1.000"}
    assert "acc2_has0" in payload["auilc"]["lmf"]
    for name in ("curves.png", "curves.svg", "results.csv", "results.json", "results.md"):
        assert (tmp_path / name).stat().st_size > 0
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert rows[0] == "model,condition,rate,metric,mean,std,seeds" and any(r.startswith("lmf,AUILC,") for r in rows)


def test_cli_sweep_errors_name_the_problem(tmp_path, capsys):
    assert main(["sweep", "-m", "nosuch", "--data", DATA, "--out", str(tmp_path)]) == 1
    assert "unknown model 'nosuch'" in capsys.readouterr().err
    assert main(["sweep", "-m", "lmf", "--data", DATA, "--rates", "0:2:0.5", "--out", str(tmp_path)]) == 1
    assert "[0, 1]" in capsys.readouterr().err


def test_reports_refuse_a_missing_point(tmp_path):
    # The reports are rebuilt from the points: a missing point is reported by name, never silently skipped.
    from affectfuse.robustness.sweep import collect

    with pytest.raises(ValueError, match="seed1.json is missing"):
        collect(Path(tmp_path), ["lmf"], rate_conditions([0.0, 1.0]), [1], ("mae",))


def test_reports_from_points_with_an_undefined_correlation(tmp_path):
    # Hand-made points of known area: mae = 1 + r for both seeds; corr = 1 - r, except seed 2 at r = 0.5 where the
    # predictions were constant and Pearson r is undefined (NaN): it counts as 0 in the area, and a note says so.
    from affectfuse.io import write_json
    from affectfuse.robustness.sweep import collect

    conditions = rate_conditions([0.0, 0.5, 1.0])
    for seed in (1, 2):
        for c in conditions:
            corr = float("nan") if (seed, c.rate) == (2, 0.5) else 1 - c.rate
            write_json(point_path(tmp_path, "m", c, seed), {"model": "m", "condition": c.name, "seed": seed,
                                                            "metrics": {"mae": 1 + c.rate, "corr": corr}})
    result = collect(tmp_path, ["m"], conditions, [1, 2], ("mae", "corr"), plots=False)
    assert result.auilc["m"]["mae"] == {"auilc": pytest.approx(1.5), "std": pytest.approx(0.0)}
    # seed 1: (1, 0.5, 0) -> 0.5; seed 2: (1, 0, 0) -> 0.25; the area of their mean curve is 0.375.
    assert result.auilc["m"]["corr"] == {"auilc": pytest.approx(0.375), "std": pytest.approx(0.125)}
    assert result.summary["m"]["rate0.500"]["corr"] == (0.5, 0.0)  # the per-rate table keeps the defined value only
    assert len(result.notes) == 1 and "at r = 0.5" in result.notes[0] and "1 of 6 runs" in result.notes[0]
    assert "Note: m corr" in (tmp_path / "results.md").read_text()


def test_a_training_killed_before_it_finished_is_redone(corpus, tmp_path):
    # What a kill mid-training leaves in test-only: a checkpoint and a log, but no result.json. Neither is trusted.
    run_dir = tmp_path / "models" / "lmf" / "seed1"
    run_dir.mkdir(parents=True)
    (run_dir / "best.pt").write_bytes(b"half")
    (run_dir / "log.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n')
    result = run_sweep(["lmf"], corpus, out_dir=tmp_path, conditions=rate_conditions([0.0, 1.0]), seeds=[1],
                       settings=SweepSettings(data=DATA, overrides=TINY_LMF), progress=False, plots=False)
    assert result.ran == 2 and (run_dir / "result.json").exists()
    assert len((run_dir / "log.jsonl").read_text().splitlines()) == 1  # one epoch (max_epochs=1), the stale log gone


def test_a_sweep_killed_by_sigkill_resumes_to_the_same_points(tmp_path):
    # A real kill (no clean-up code runs) of the command mid-way, then the same command again.
    import os
    import signal
    import subprocess
    import time

    sets = [a for k, v in TINY_LMF.items() for a in ("--set", f"{k}={v}")]
    argv = [sys.executable, "-m", "affectfuse", "sweep", "-m", "lmf", "--data", DATA, "--rates", "0:1:0.25",
            "--seeds", "3", "--out", str(tmp_path), "--quiet", *sets]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("points/**/*.json"))) < 3 and process.poll() is None:
            assert time.monotonic() < deadline, "the sweep wrote no points in 120 s"
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    before = {f: f.read_bytes() for f in tmp_path.glob("points/**/*.json")}
    assert 3 <= len(before) < 15, f"expected an interrupted sweep, got {len(before)} points"
    assert not (tmp_path / "results.json").exists()

    finished = subprocess.run([*argv, "--json"], capture_output=True, text=True, check=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    payload = json.loads(finished.stdout)
    points = sorted(tmp_path.glob("points/**/*.json"))
    assert len(points) == 15 and not list(tmp_path.rglob("*.tmp"))
    assert all(f.read_bytes() == data for f, data in before.items())  # finished points kept, not redone
    keys = [(p["model"], p["condition"], p["seed"]) for p in map(lambda f: json.loads(f.read_text()), points)]
    assert len(set(keys)) == 15
    assert set(payload["summary"]["lmf"]) == {f"rate{r:.3f}" for r in (0, 0.25, 0.5, 0.75, 1)}
