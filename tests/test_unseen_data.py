"""Data nobody tuned for: the task read from the labels, metrics per task, the baselines in every result, the
warnings, a corpus without text, and the `auto` recipe by corpus size."""

from __future__ import annotations

import json
import math
import pickle
import re

import numpy as np
import pytest
import torch

from affectfuse.config import InputSpec
from affectfuse.config.recipes import SMALL_CORPUS, auto_plan
from affectfuse.config.registry import create_model, list_models
from affectfuse.data.checks import ready_for_training
from affectfuse.data.corpus import BatchLoader, Corpus, DataFormatError, Split, spec_from_splits
from affectfuse.data.datasets import load_data
from affectfuse.data.tasks import describe_task, interpret_labels
from affectfuse.engine.baselines import baselines, collapsed, confusion, result_warnings, verdicts
from affectfuse.engine.metrics import classification_metrics, metrics_for, rating_metrics
from affectfuse.engine.runs import resolve_recipe, train_model

torch.set_num_threads(1)
SIZES = {"train": 60, "valid": 30, "test": 30}


def corpus_with(labels: dict[str, np.ndarray], *, name: str = "mine", signal: bool = True) -> Corpus:
    """Audio + vision only (no text); with `signal`, the first audio feature carries the first label column."""
    rng = np.random.default_rng(0)
    splits = {}
    for s, y in labels.items():
        audio = rng.normal(size=(len(y), 4, 3)).astype(np.float32)
        if signal:
            column = y.reshape(len(y), -1)[:, :1].astype(np.float32)
            audio[:, :, 0] += 3 * column
        vision = rng.normal(size=(len(y), 4, 2)).astype(np.float32)
        splits[s] = Split([f"{s}{i}" for i in range(len(y))], {"audio": audio, "vision": vision}, {}, y)
    return Corpus(name, splits, spec_from_splits(splits), source=f"{name} (test)")


def draw(values: np.ndarray, k: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s: rng.choice(values, size=(n, k)).astype(np.float32) for s, n in SIZES.items()}


def one_hot(classes: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {s: np.eye(classes, dtype=np.float32)[rng.integers(0, classes, n)] for s, n in SIZES.items()}


# ---------------------------------------------------------------------------------------------------------------------
# Task inference


def test_a_1_to_5_rating_is_a_scale_around_its_middle() -> None:
    spec = interpret_labels(corpus_with(draw(np.arange(1, 6)))).spec
    assert (spec.task, spec.metric_family, spec.label_scale, spec.label_centre) == ("regression", "rating", (1, 5), 3)
    assert "centre 3" in describe_task(spec)


def test_one_hot_rows_become_classes() -> None:
    corpus = interpret_labels(corpus_with(one_hot(3)))
    assert (corpus.spec.task, corpus.spec.num_classes, corpus.spec.targets) == ("classification", 3, ("class",))
    train = corpus.split("train")
    assert train.labels.dtype == np.int64 and train.labels.shape == (60, 1)
    raw = one_hot(3)["train"]
    assert np.array_equal(train.labels[:, 0], raw.argmax(1))


@pytest.mark.parametrize(("values", "classes"), [(np.array([0, 1]), 2), (np.arange(3), 3)])
def test_integer_labels_from_0_become_classes(values: np.ndarray, classes: int) -> None:
    corpus = interpret_labels(corpus_with(draw(values)))
    assert (corpus.spec.task, corpus.spec.num_classes) == ("classification", classes)
    assert ("binary" if classes == 2 else f"{classes}-class") in describe_task(corpus.spec)


def test_mosi_style_scores_stay_mosi() -> None:
    corpus = corpus_with(draw(np.linspace(-3, 3, 19)))
    corpus.spec = InputSpec(**{**corpus.spec.to_dict(), "metric_family": "mosi"})
    assert interpret_labels(corpus).spec.metric_family == "mosi"


def test_overrides_centre_and_task() -> None:
    rated = interpret_labels(corpus_with(draw(np.arange(1, 6))), centre=2.0).spec
    assert (rated.metric_family, rated.label_centre) == ("rating", 2.0)
    scores = interpret_labels(corpus_with(draw(np.array([0, 1]))), task="regression").spec
    assert (scores.task, scores.label_centre) == ("regression", 0.5)
    classes = interpret_labels(corpus_with(draw(np.arange(1, 6))), task="classification")
    assert classes.spec.num_classes == 5 and classes.split("train").labels.min() == 0
    with pytest.raises(DataFormatError, match="integer class labels"):
        interpret_labels(corpus_with(draw(np.array([1.5, 2.25]))), task="classification")
    with pytest.raises(ValueError, match="one rated column"):
        interpret_labels(corpus_with(draw(np.linspace(1, 7, 13), k=2)), centre=4.0)


# ---------------------------------------------------------------------------------------------------------------------
# Metrics per task


def test_rating_metrics_around_the_centre() -> None:
    label = np.array([1.0, 2.0, 4.0, 5.0, 3.0])
    pred = np.array([2.0, 1.0, 4.0, 2.0, 3.5])
    out = rating_metrics(pred, label, centre=3.0, scale=(1.0, 5.0))
    # the label at the centre is left out of Acc-2: truth F F T T, prediction F F T F
    assert out["acc2"] == pytest.approx(0.75)
    assert out["acc5"] == pytest.approx(0.2)  # rounded predictions 2 1 4 2 4 vs 1 2 4 5 3
    assert out["mae"] == pytest.approx(1.1)
    assert out["f1_macro"] == pytest.approx((0.8 + 2 / 3) / 2)


def test_classification_macro_f1_and_confusion() -> None:
    label = np.array([[0], [0], [1], [2]])
    logits = np.eye(3)[[0, 1, 1, 1]][:, None, :]  # (N, 1, C)
    out = classification_metrics(logits, label)
    assert out["acc"] == pytest.approx(0.5)
    assert out["f1_macro"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)  # class F1: 2/3, 1/2 (P 1/3, R 1), 0
    assert confusion(logits, label) == [[[1, 1, 0], [0, 1, 0], [0, 1, 0]]]


# ---------------------------------------------------------------------------------------------------------------------
# Baselines and warnings


def test_baselines_constant_is_the_train_median_and_linear_finds_the_signal() -> None:
    corpus = ready_for_training(interpret_labels(corpus_with(draw(np.arange(1, 6)))))
    found = baselines(corpus)
    assert found["constant"].chosen["value"] == [float(np.median(corpus.split("train").labels))]
    assert found["linear"].test["f1"] > found["constant"].test["f1"]
    assert found["linear"].chosen["selected_on"] == "valid mae"


def test_majority_baseline_and_the_warning_when_a_model_loses_to_it() -> None:
    corpus = ready_for_training(interpret_labels(corpus_with(one_hot(3))))
    majority = baselines(corpus)["majority"]
    counts = np.bincount(corpus.split("train").labels[:, 0], minlength=3)
    assert majority.chosen["class"] == [int(counts.argmax())]
    worse = {k: v - 0.01 for k, v in majority.test.items()}
    valid = corpus.split("valid")
    spread = np.eye(3)[np.arange(len(valid)) % 3][:, None, :]
    found = result_warnings("mymodel", worse, corpus, spread, valid.labels)
    assert len(found) == 1 and "does not beat the majority predictor" in found[0]
    assert result_warnings("mymodel", {k: v + 0.01 for k, v in majority.test.items()}, corpus, spread,
                           valid.labels) == []
    assert not verdicts({"m": {k: (v - 0.01, 0.0) for k, v in majority.test.items()}}, corpus)["m"]["beats_majority"]


def test_collapse_to_one_side_of_the_centre_is_caught() -> None:
    corpus = ready_for_training(interpret_labels(corpus_with(draw(np.arange(1, 6)))))
    valid = corpus.split("valid")
    assert "above the centre" in collapsed(3.1 + 0.5 * valid.labels, valid.labels, corpus)  # varies, one side
    assert "vary by std" in collapsed(3.5 + 1e-3 * valid.labels, valid.labels, corpus)
    assert collapsed(valid.labels.copy(), valid.labels, corpus) is None


def test_result_json_holds_baselines_task_and_auto_choice(tmp_path) -> None:
    corpus = interpret_labels(corpus_with(draw(np.array([0, 1]))))
    run = train_model("lmf", corpus, out_dir=tmp_path / "run", progress=False,
                      overrides={"train.max_epochs": 1, "train.batch_size": 32})
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert set(saved["baselines"]) == {"majority", "linear"}
    assert saved["task"].startswith("binary classification")
    assert np.array(saved["test_confusion"]).sum() == SIZES["test"]
    assert saved["recipe"] == "auto" and saved["auto"]["chosen"] in saved["auto"]["candidates"]
    assert set(saved["auto"]["valid"]) == set(saved["auto"]["candidates"]) and run.auto == saved["auto"]


# ---------------------------------------------------------------------------------------------------------------------
# No text: models train on the modalities present


def test_a_mult_pickle_without_text_trains_every_model_on_audio_and_vision(tmp_path) -> None:
    rng = np.random.default_rng(0)
    data = {s: {"audio": rng.normal(size=(n, 5, 4)).astype("f4"), "vision": rng.normal(size=(n, 5, 3)).astype("f4"),
                "labels": rng.integers(0, 2, size=(n, 1, 1)).astype("f4")} for s, n in (("train", 8), ("valid", 4),
                                                                                       ("test", 4))}
    path = tmp_path / "notext.pkl"
    path.write_bytes(pickle.dumps(data))
    corpus = load_data(str(path))
    assert corpus.spec.modalities == ("audio", "vision") and corpus.spec.num_classes == 2
    batch = next(iter(BatchLoader(corpus.split("train"), batch_size=4)))
    assert set(batch.features) == {"audio", "vision"}  # no fabricated zero text stream
    for name in list_models():
        torch.manual_seed(0)
        model = create_model(name, corpus.spec, auto_plan(name, len(corpus.split("train"))).base.model)
        textual = [n for n, _ in model.named_parameters() if "text" in re.split(r"[._]", n)]
        assert textual == [], f"{name} built text parameters {textual[:3]} for a corpus without text"
        loss = model.loss(batch).total
        loss.backward()
        assert math.isfinite(loss.item())


# ---------------------------------------------------------------------------------------------------------------------
# The auto recipe


def test_auto_chooses_by_corpus_size() -> None:
    small, large = auto_plan("mult", SMALL_CORPUS - 1), auto_plan("mult", SMALL_CORPUS)
    assert small.base_name == "pom" and len(small.candidates) == 3
    assert large.base_name == "default" and len(large.candidates) == 2
    assert small.base.model.layers < large.base.model.layers  # the smaller model below SMALL_CORPUS clips
    assert all(c[1]["train.max_epochs"] <= small.base.train.max_epochs for c in small.candidates)
    kept = auto_plan("mult", 100, user_overrides={"train.lr": 1e-4})
    assert len(kept.candidates) == 1
    name, recipe = resolve_recipe("mult", corpus_with(draw(np.arange(1, 6)), name="unknown"))
    assert name == "auto" and recipe == small.base
    assert resolve_recipe("mult", corpus_with(draw(np.arange(1, 6)), name="pom"))[0] == "pom"


def test_metric_suite_of_a_rating_names_its_keys() -> None:
    spec = interpret_labels(corpus_with(draw(np.arange(1, 6)))).spec
    suite = metrics_for(spec)
    assert suite.keys == ("acc2", "f1", "f1_macro", "acc5", "mae", "corr") and suite.versus == ("f1", "mae")


def test_an_mmsa_pickle_without_text_has_audio_and_vision_only(tmp_path) -> None:
    rng = np.random.default_rng(0)
    data = {s: {"audio": rng.normal(size=(6, 4, 3)).astype("f4"), "vision": rng.normal(size=(6, 4, 2)).astype("f4"),
                "audio_lengths": np.full(6, 4), "vision_lengths": np.full(6, 3),
                "regression_labels": rng.uniform(1, 5, size=6).astype("f4")} for s in ("train", "valid", "test")}
    path = tmp_path / "notext_mmsa.pkl"
    path.write_bytes(pickle.dumps(data))
    corpus = load_data(str(path))
    assert corpus.spec.modalities == ("audio", "vision") and set(corpus.spec.extractors) == {"audio", "vision"}
    assert corpus.spec.metric_family == "rating" and not corpus.split("train").masks["vision"][:, 3].any()


def test_train_and_inspect_say_the_task_and_put_the_baselines_in_the_output(tmp_path, capsys) -> None:
    from affectfuse.cli import main

    rng = np.random.default_rng(0)
    data = {s: {"audio": rng.normal(size=(n, 3, 4)).astype("f4"), "vision": rng.normal(size=(n, 3, 2)).astype("f4"),
                "labels": np.eye(3, dtype="f4")[rng.integers(0, 3, n)][:, None, :]}
            for s, n in (("train", 24), ("valid", 12), ("test", 12))}
    path = tmp_path / "three.pkl"
    path.write_bytes(pickle.dumps(data))
    assert main(["data", "inspect", str(path)]) == 0
    assert "task: 3-class classification" in capsys.readouterr().out
    out = tmp_path / "runs"
    assert main(["train", "-m", "tfn", "--data", str(path), "--out", str(out), "--json", "--set",
                 "train.max_epochs=1"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload["baselines"]) == {"majority", "linear"} and payload["task"].startswith("3-class")
    assert set(payload["versus_baselines"]["tfn"]) == {"beats_majority", "reaches_linear", "keys"}
    assert json.loads((out / "summary.json").read_text())["baselines"] == payload["baselines"]
    assert main(["train", "-m", "tfn", "--data", str(path), "--out", str(out), "--set", "train.max_epochs=1"]) == 0
    printed = capsys.readouterr().out
    assert "majority (baseline)" in printed and "| beats majority | reaches linear |" in printed


def test_train_warnings_go_through_the_logger_and_stay_under_quiet(tmp_path, capsys, monkeypatch) -> None:
    from affectfuse.cli import main

    monkeypatch.setattr("affectfuse.engine.runs.result_warnings", lambda model, *_: [f"{model} is warned"])
    data = "synthetic:n_train=24,n_valid=12,n_test=12,length=3"
    for i, flags in enumerate(([], ["-q"], ["--json"])):
        out = tmp_path / f"runs{i}"
        assert main(["train", "-m", "lmf", "--data", data, "--out", str(out), "--set", "train.max_epochs=1",
                     *flags]) == 0
        captured = capsys.readouterr()
        assert "tfn is warned" not in captured.err and captured.err.count("warning: lmf is warned") == 1
        if "--json" in flags:  # stdout holds the JSON (with the warnings) or the tables, not the warning lines
            assert json.loads(captured.out)["warnings"] == ["lmf is warned"]
        else:
            assert "is warned" not in captured.out
        assert json.loads((out / "lmf" / "seed1111" / "result.json").read_text())["warnings"] == ["lmf is warned"]


def test_one_hot_rows_kept_as_scores_get_per_column_metrics_not_a_rating() -> None:
    spec = interpret_labels(corpus_with(one_hot(3)), task="regression").spec
    assert (spec.task, spec.metric_family, spec.label_centre) == ("regression", "regression", None)
    with pytest.raises(ValueError, match="one rated column; these labels have 3 columns"):
        interpret_labels(corpus_with(one_hot(3)), centre=0.5)


def test_standardise_uses_train_statistics_keeps_padding_and_renames_the_extractor() -> None:
    from affectfuse.data.standardisation import standardise

    corpus = corpus_with(draw(np.arange(1, 6)))
    corpus.spec = InputSpec(**{**corpus.spec.to_dict(), "extractors": {"audio": "covarep", "vision": "facet"}})
    corpus.splits["train"].masks["audio"][:5, -1] = False
    corpus.splits["train"].features["audio"][:5, -1] = 1e3  # padding: must neither count nor survive
    scaled = standardise(corpus)
    train = scaled.split("train")
    real = train.features["audio"][train.masks["audio"]]
    assert np.allclose(real.mean(0), 0, atol=1e-5) and np.allclose(real.std(0), 1, atol=1e-4)
    assert not train.features["audio"][:5, -1].any()
    assert scaled.spec.extractors == {"audio": "covarep+z(train)", "vision": "facet+z(train)"}
    assert "audio features come from extractor 'covarep'" in scaled.spec.compatible_with(corpus.spec)[0]
