"""Hyper-parameter search: declared search spaces, the trainer's epoch hook for pruning, and recipe files that
`train --recipe-file` reuses to reproduce the best trial."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from affectfuse.cli import main
from affectfuse.config import TrainConfig
from affectfuse.config.recipes import load_recipe_file
from affectfuse.config.registry import create_model, list_models
from affectfuse.data.datasets import load_data
from affectfuse.engine.runs import train_model
from affectfuse.engine.train import fit
from affectfuse.experiments.tune import search_space

optuna = pytest.importorskip("optuna", reason="tune needs the optional optuna package (in the test extra)")

from affectfuse.experiments.tune import tune  # noqa: E402

from .conftest import TINY  # noqa: E402

DATA = "synthetic:n_train=64,n_valid=24,n_test=24,length=5"
FIXED = {"train.max_epochs": 3, "train.device": "cpu", "text_out": 3}


@pytest.mark.parametrize("name", list_models())
def test_every_model_declares_a_valid_search_space(name: str) -> None:
    space = search_space(name)  # checks kinds, ranges and that every key is a config or TrainConfig field
    assert "train.lr" in space


def test_epoch_hook_sees_every_epoch_and_can_stop_training() -> None:
    corpus = load_data(DATA)
    model = create_model("lmf", corpus.spec, **TINY["lmf"])
    seen: list[int] = []

    def stop_at_second(record: dict) -> None:
        seen.append(record["epoch"])
        assert set(record["valid"]) >= {"mae", "corr"}
        if record["epoch"] == 1:
            raise optuna.TrialPruned("stop")

    with pytest.raises(optuna.TrialPruned):
        fit(model, corpus.split("train"), corpus.split("valid"), TrainConfig(max_epochs=5, device="cpu"),
            progress=False, on_epoch=stop_at_second)
    assert seen == [0, 1]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("tune")
    return tune("lmf", DATA, trials=4, overrides=FIXED, out_dir=out, log=lambda _: None)


def test_tune_writes_a_recipe_that_reproduces_the_best_trial(tuned: dict, tmp_path: Path) -> None:
    assert tuned["trials"] == 4 and tuned["monitor"] == "mae"
    model, recipe = load_recipe_file(tuned["recipe_file"])
    assert model == "lmf"
    for key, value in tuned["best_params"].items():  # the recipe holds the best trial's values ...
        holder = recipe.train if key.startswith("train.") else recipe.model
        for part in key.removeprefix("train.").split("."):
            holder = getattr(holder, part)
        assert holder == value, key
    assert recipe.train.max_epochs == 3 and recipe.model.text_out == 3  # ... and the fixed overrides
    # training from the recipe (same seed) gives exactly the best trial's validation score
    run = train_model("lmf", load_data(DATA), seed=1111, recipe=recipe, progress=False)
    assert run.valid["mae"] == pytest.approx(tuned["best_valid"], abs=1e-9)
    # and the command line accepts it
    assert main(["train", "--model", "lmf", "--data", DATA, "--recipe-file", tuned["recipe_file"],
                 "--out", str(tmp_path / "cli"), "--json"]) == 0
    saved = json.loads((tmp_path / "cli" / "lmf" / "seed1111" / "result.json").read_text())
    assert saved["valid"]["mae"] == pytest.approx(tuned["best_valid"], abs=1e-9)
    assert saved["config"]["rank"] == tuned["best_params"]["rank"]


def test_tune_continues_its_study(tuned: dict) -> None:
    more = tune("lmf", DATA, trials=5, overrides=FIXED, out_dir=tuned["out"], log=lambda _: None)
    assert more["trials"] == 5  # one new trial, the four earlier ones kept
    rows = (Path(tuned["out"]) / "trials.csv").read_text().splitlines()
    assert len(rows) == 1 + 5


def test_tune_and_recipe_errors_name_the_problem(tmp_path: Path, tuned: dict) -> None:
    with pytest.raises(ValueError, match=r"\[.rank.\] would fix parameters"):
        tune("lmf", DATA, trials=1, overrides={"rank": 2}, out_dir=tmp_path / "x")
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": "lmf"}')
    with pytest.raises(ValueError, match="bad.json is not an affectfuse recipe"):
        load_recipe_file(bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_recipe_file(tmp_path / "missing.json")
    # a recipe is for one model: training another with it is refused with exit code 1
    assert main(["train", "--model", "tfn", "--data", DATA, "--recipe-file", tuned["recipe_file"],
                 "--out", str(tmp_path / "cli")]) == 1
