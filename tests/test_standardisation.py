"""Standardisation travels with the model: a model trained on standardised features keeps the train statistics in its
checkpoint, `save_pretrained` folder and TorchScript export, and every way of scoring it takes raw features."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import affectfuse
from affectfuse.config import InputSpec
from affectfuse.data.corpus import Corpus, Split, spec_from_splits
from affectfuse.data.standardisation import SUFFIX, standardise
from affectfuse.engine.checkpoint import CheckpointError, content_digest, load_model
from affectfuse.engine.export import export_torchscript
from affectfuse.engine.runs import evaluate_checkpoint, train_model

torch.set_num_threads(1)
TINY = {"hidden.audio": 4, "hidden.vision": 4, "rank": 2, "train.max_epochs": 3, "train.batch_size": 16}


def raw_corpus(seed: int = 0, shift: float = 0.0) -> Corpus:
    """Audio + vision far from zero mean and unit scale (as COVAREP/FACET are), the label carried by audio[..., 0]."""
    rng = np.random.default_rng(seed)
    splits = {}
    for name, n in {"train": 48, "valid": 24, "test": 24}.items():
        y = rng.normal(size=(n, 1)).clip(-3, 3).astype(np.float32)
        audio = rng.normal(size=(n, 4, 3)) * [50.0, 2.0, 0.1] + [200.0 + shift, -30.0, 5.0]
        audio[..., 0] += 40 * y
        vision = rng.normal(size=(n, 3, 2)) * 10 + 7
        masks = {"audio": np.ones((n, 4), bool), "vision": np.ones((n, 3), bool)}
        masks["audio"][: n // 3, -1] = False  # padding: left out of the statistics, 0 after standardising
        audio[: n // 3, -1] = 0
        splits[name] = Split([f"{name}{i}" for i in range(n)],
                             {"audio": audio.astype(np.float32), "vision": vision.astype(np.float32)}, masks, y)
    spec = spec_from_splits(splits, extractors={"audio": "covarep", "vision": "facet"})
    return Corpus(name="mine", splits=splits, spec=spec, source="mine")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(raw corpus, its standardised view, the run folder of an LMF trained on the standardised one)."""
    raw = raw_corpus()
    scaled = standardise(raw)
    out = tmp_path_factory.mktemp("run")
    train_model("lmf", scaled, recipe="default", overrides=TINY, out_dir=out, progress=False)
    return raw, scaled, out


def test_the_checkpoint_keeps_the_train_statistics(trained) -> None:
    raw, scaled, out = trained
    model = load_model(out / "best.pt")
    stats = model.spec.standardisation
    assert stats == scaled.spec.standardisation and set(stats) == {"audio", "vision"}
    train = raw.split("train")
    real = train.features["audio"][train.masks["audio"]].astype(np.float64)
    assert np.allclose(stats["audio"]["mean"], real.mean(0)) and np.allclose(stats["audio"]["std"], real.std(0))
    assert model.spec.extractors == {"audio": f"covarep{SUFFIX}", "vision": f"facet{SUFFIX}"}


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_raw_and_standardised_data_score_the_same_everywhere(trained, tmp_path) -> None:
    raw, scaled, out = trained
    checkpoint = out / "best.pt"
    on_raw, on_scaled = evaluate_checkpoint(checkpoint, raw), evaluate_checkpoint(checkpoint, scaled)
    assert on_raw == on_scaled
    assert on_raw["mae"] == pytest.approx(json.loads((out / "result.json").read_text())["test"]["mae"])
    model = load_model(checkpoint)
    _, expected, _ = affectfuse.predict(model, scaled.split("test"))
    _, got, _ = affectfuse.predict(model, raw.split("test"))
    np.testing.assert_array_equal(got, expected)
    assert affectfuse.evaluate(model, raw.split("test")) == affectfuse.evaluate(model, scaled.split("test"))
    # the raw features themselves would score otherwise: the statistics were applied, not skipped
    unscaled = dataclasses.replace(raw.split("test"), standardisation=scaled.spec.standardisation)
    assert not np.allclose(affectfuse.predict(model, unscaled)[1], expected)

    folder = affectfuse.save_pretrained(model, tmp_path / "pretrained")
    np.testing.assert_array_equal(affectfuse.predict(affectfuse.from_pretrained(folder), raw.split("test"))[1],
                                  expected)
    assert evaluate_checkpoint(folder, raw) == on_raw

    exported = torch.jit.load(str(export_torchscript(model, tmp_path / "model.ts")))
    test = raw.split("test")
    traced = exported({m: torch.from_numpy(x) for m, x in test.features.items()},
                      {m: torch.from_numpy(x) for m, x in test.masks.items()})
    np.testing.assert_allclose(traced.detach().numpy(), expected, atol=1e-5)


def test_mixing_raw_and_standardised_is_refused_in_one_line(trained, tmp_path) -> None:
    raw, scaled, out = trained
    other = standardise(raw_corpus(seed=1, shift=5.0))  # standardised with another train split's statistics
    with pytest.raises(ValueError, match="other statistics than the model's") as error:
        evaluate_checkpoint(out / "best.pt", other)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="other statistics than the model's"):
        affectfuse.predict(load_model(out / "best.pt"), other.split("test"))
    plain = tmp_path / "plain"
    train_model("lmf", raw, recipe="default", overrides={**TINY, "train.max_epochs": 1}, out_dir=plain,
                progress=False)
    with pytest.raises(ValueError, match="trained on raw features"):
        evaluate_checkpoint(plain / "best.pt", scaled)
    with pytest.raises(ValueError, match="trained on raw features"):
        affectfuse.predict(load_model(plain / "best.pt"), scaled.split("test"))
    with pytest.raises(ValueError, match="standardised already"):
        standardise(scaled)


def test_a_corrupted_or_mismatched_statistics_entry_is_a_clear_error(trained, tmp_path) -> None:
    _, scaled, out = trained
    folder = affectfuse.save_pretrained(load_model(out / "best.pt"), tmp_path / "pretrained")
    config = json.loads((folder / "config.json").read_text())
    config["spec"]["standardisation"]["audio"]["std"] = [1.0, 2.0]  # 3-d audio
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"standardisation statistics of 'audio' have 2 std values for 3-d"):
        load_model(folder)

    payload = torch.load(out / "best.pt", weights_only=True)
    payload["spec"]["standardisation"]["vision"]["mean"][0] = float("nan")
    payload["sha256"] = content_digest(payload)  # as if written so: the statistics themselves are checked
    torch.save(payload, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="'vision' have a mean value that is not a finite number"):
        load_model(tmp_path / "nan.pt")
    payload["spec"]["standardisation"]["text"] = payload["spec"]["standardisation"].pop("vision")
    payload["sha256"] = content_digest(payload)
    torch.save(payload, tmp_path / "text.pt")
    with pytest.raises(CheckpointError, match="'text' are for a modality the input spec does not have"):
        load_model(tmp_path / "text.pt")
    with pytest.raises(ValueError, match="have a std <= 0"):
        InputSpec(**{**scaled.spec.to_dict(), "standardisation": {"audio": {"mean": [0.0] * 3, "std": [1, 0, 1]}}})


def test_the_command_line_evaluates_raw_data_with_the_checkpoints_statistics(tmp_path, capsys) -> None:
    from affectfuse.cli import main

    data = "synthetic:n_train=32,n_valid=16,n_test=16,length=3"
    tiny = ["--set", "hidden.text=4", "--set", "hidden.audio=4", "--set", "hidden.vision=4", "--set", "text_out=3",
            "--set", "train.max_epochs=1"]
    assert main(["train", "--model", "lmf", "--data", data, "--standardise", "--out", str(tmp_path), "--json",
                 *tiny]) == 0
    trained = json.loads(capsys.readouterr().out)["runs"][0]["test"]
    checkpoint = str(tmp_path / "lmf" / "seed1111" / "best.pt")
    scores = []
    for flag in ([], ["--standardise"]):
        assert main(["evaluate", checkpoint, "--data", data, "--json", *flag]) == 0
        scores.append(json.loads(capsys.readouterr().out)["metrics"])
    assert scores[0] == scores[1] and scores[0]["mae"] == pytest.approx(trained["mae"])
    assert main(["evaluate", checkpoint, "--data", "synthetic:n_train=32,n_valid=16,n_test=16,length=3,seed=7",
                 "--standardise"]) == 1
    assert "other statistics than the model's" in capsys.readouterr().err


def test_a_checkpoint_standardised_before_the_statistics_were_kept_takes_standardised_data(trained) -> None:
    raw, scaled, out = trained
    model = load_model(out / "best.pt")
    model.spec = dataclasses.replace(model.spec, standardisation=None)  # as `--standardise` wrote it before
    np.testing.assert_array_equal(affectfuse.predict(model, scaled.split("test"))[1],
                                  affectfuse.predict(load_model(out / "best.pt"), raw.split("test"))[1])


def test_the_auto_plan_standardises_by_default_and_stored_recipes_do_not(tmp_path, capsys) -> None:
    from affectfuse.cli import main

    raw = raw_corpus()
    one = {**TINY, "train.max_epochs": 1}
    train_model("lmf", raw, overrides=one, out_dir=tmp_path / "auto", progress=False)  # "mine": no stored recipe
    result = json.loads((tmp_path / "auto" / "result.json").read_text())
    assert result["standardised"] and result["auto"]["features"] == "standardised on train"
    assert load_model(tmp_path / "auto" / "best.pt").spec.standardisation == standardise(raw).spec.standardisation
    assert evaluate_checkpoint(tmp_path / "auto" / "best.pt", raw)["mae"] == pytest.approx(result["test"]["mae"])
    train_model("lmf", raw, overrides=one, out_dir=tmp_path / "raw", progress=False, standardise=False)
    assert load_model(tmp_path / "raw" / "best.pt").spec.standardisation is None
    assert not json.loads((tmp_path / "raw" / "result.json").read_text())["standardised"]
    stored = dataclasses.replace(raw, name="pom")  # a corpus with a stored recipe trains as it always did
    train_model("lmf", stored, overrides=one, out_dir=tmp_path / "pom", progress=False)
    assert load_model(tmp_path / "pom" / "best.pt").spec.standardisation is None

    assert main(["train", "-m", "lmf", "--data", "synthetic", "--standardise", "--no-standardise"]) == 1
    assert "contradict each other" in capsys.readouterr().err


def test_a_sweep_under_the_auto_plan_drops_features_in_the_standardised_space(tmp_path) -> None:
    from affectfuse.robustness.sweep import SweepSettings, drop_splits, mask_seeds, rate_conditions, run_sweep

    raw = raw_corpus()  # no stored recipe: the `auto` plan standardises
    condition = rate_conditions([0.5])
    settings = SweepSettings(data="mine", overrides={k: str(v) for k, v in {**TINY, "train.max_epochs": 1}.items()})
    result = run_sweep(["lmf"], raw, out_dir=tmp_path, conditions=condition, seeds=[1], settings=settings,
                       progress=False, plots=False)
    model = load_model(tmp_path / "models" / "lmf" / "seed1" / "best.pt")
    assert model.spec.standardisation == standardise(raw).spec.standardisation
    dropped = drop_splits(standardise(raw), condition[0], ("test",), mask_seeds(settings.mask_seed, 1))
    expected = affectfuse.evaluate(model, dropped.split("test"))
    assert result.points[0]["metrics"]["mae"] == pytest.approx(expected["mae"])
    # dropping raw features (0 there is far from the train mean) and then standardising would score otherwise
    late = drop_splits(raw, condition[0], ("test",), mask_seeds(settings.mask_seed, 1))
    assert affectfuse.evaluate(model, late.split("test"))["mae"] != pytest.approx(expected["mae"])
