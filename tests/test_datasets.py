"""Data specs (`load_data`) and corpus summaries (`inspect_corpus`, `inspect_path`)."""

from __future__ import annotations

import json
import pickle
import sys
import types
from pathlib import Path

import h5py
import numpy as np
import pytest

from affectfuse.data import datasets
from affectfuse.data.corpus import NonFiniteFeatureError
from affectfuse.data.datasets import inspect_corpus, inspect_path, load_data

RNG = np.random.default_rng(1)


def tiny_pom(root: Path) -> Path:
    folder = root / "pom"
    folder.mkdir(parents=True)
    for split, n in {"train": 5, "valid": 2, "test": 3}.items():
        for name, data in {
            "audio": RNG.normal(size=(n, 4, 3)),
            "video": RNG.normal(size=(n, 4, 2)),
            "y": RNG.uniform(1, 7, (n, 17)),
        }.items():
            with h5py.File(folder / f"{name}_{split}.h5", "w") as f:
                f.create_dataset("d1", data=data)
    return folder


def tiny_mmsa(path: Path, *, bad_audio: bool = False) -> Path:
    def split(n: int) -> dict:
        audio = RNG.normal(size=(n, 7, 5)).astype(np.float32)
        if bad_audio:
            audio[0, :3, 0] = -np.inf
        return {
            "id": [f"v$_${i}" for i in range(n)],
            "text": RNG.normal(size=(n, 4, 8)).astype(np.float32),
            "audio": audio,
            "vision": RNG.normal(size=(n, 6, 3)).astype(np.float32),
            "audio_lengths": [7, 3, 1][:n],
            "vision_lengths": [6, 6, 2][:n],
            "regression_labels": np.array([-1.0, 0.5, 2.0][:n], np.float32),
        }

    with path.open("wb") as f:
        pickle.dump({"train": split(3), "valid": split(2), "test": split(2)}, f)
    return path


def test_load_data_path(tmp_path: Path) -> None:
    corpus = load_data(str(tiny_mmsa(tmp_path / "data.pkl")))
    assert corpus.source.endswith("(mmsa)") and len(corpus.split("train")) == 3


def test_load_data_named_with_root(tmp_path: Path) -> None:
    folder = tiny_pom(tmp_path)
    assert load_data(f"pom:{folder}").spec.num_targets == 17
    assert len(load_data(f"pom:{tmp_path}").split("test")) == 3  # a data root holding pom/ works too
    with pytest.raises(ValueError, match=r"pom takes no reader options, got \['seed'\]"):
        load_data(f"pom:{folder}", seed=1)


def test_load_data_named_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny_pom(tmp_path / "env")
    monkeypatch.setenv("AFFECTFUSE_DATA", str(tmp_path / "env"))
    assert load_data("pom").source.startswith(str(tmp_path / "env" / "pom"))
    monkeypatch.setattr(datasets, "data_roots", lambda: [tmp_path / "nothing"])
    with pytest.raises(FileNotFoundError, match=r"pom: no pom/ folder.*looked in .*nothing/pom.*'pom:/path/to/pom'"):
        load_data("pom")
    with pytest.raises(FileNotFoundError, match="mosi-utterance: no mosi/ folder"):
        load_data("mosi-utterance")


def test_data_roots_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AFFECTFUSE_DATA", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    roots = datasets.data_roots()
    assert roots[:3] == [tmp_path, tmp_path / "shared" / "data", tmp_path.parent / "shared" / "data"]
    assert roots[3] == Path(datasets.__file__).resolve().parents[3] / "shared" / "data"


def test_load_data_unknown_and_missing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"(?s)unknown data spec 'mosii'.*did you mean.*valid forms:.*mosi-utterance.*"
                                         r"synthetic"):
        load_data("mosii")
    with pytest.raises(ValueError, match="unknown data spec"):
        load_data("meld:/somewhere")
    # MMSA's names are named corpora: absent, they say which file goes where
    with pytest.raises(FileNotFoundError, match=r"mosei: MOSEI/Processed/unaligned_50.pkl not found .*/somewhere/"):
        load_data("mosei:/somewhere")
    with pytest.raises(FileNotFoundError, match=r"no such file or folder: .*absent\.pkl"):
        load_data(str(tmp_path / "absent.pkl"))


def test_load_data_synthetic_delegates(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    fake = types.ModuleType("affectfuse.data.synthetic")
    fake.synthetic_from_options = lambda options: seen.append(options) or "corpus"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "affectfuse.data.synthetic", fake)
    assert load_data("synthetic:n_train=8,length=3") == "corpus"
    assert load_data("synthetic") == "corpus"
    assert seen == ["n_train=8,length=3", ""]
    with pytest.raises(ValueError, match="synthetic takes its options in the spec"):
        load_data("synthetic", seed=3)


def test_nonfinite_policy_passes_through(tmp_path: Path) -> None:
    path = str(tiny_mmsa(tmp_path / "inf.pkl", bad_audio=True))
    with pytest.raises(NonFiniteFeatureError, match="nonfinite='zero'"):
        load_data(path)
    with pytest.warns(UserWarning, match="replaced 3 values"):
        assert load_data(path, nonfinite="zero").nonfinite == {"train/audio": 3, "valid/audio": 3, "test/audio": 3}


def test_inspect_corpus(tmp_path: Path) -> None:
    report = inspect_corpus(load_data(str(tiny_mmsa(tmp_path / "data.pkl"))))
    json.dumps(report)  # JSON-serialisable as is
    assert (report["format"], report["task"], report["targets"]) == ("mmsa", "regression", ["sentiment"])
    train = report["splits"]["train"]
    assert train["size"] == 3
    assert train["modalities"]["audio"] == {
        "dim": 5,
        "padded_length": 7,
        "empty": 0,
        "length": {"min": 1.0, "mean": pytest.approx(11 / 3), "max": 7.0},
    }
    assert train["labels"]["min"] == -1.0 and train["labels"]["max"] == 2.0
    assert report["nonfinite"]["remaining"]["train/audio"] == 0


def test_inspect_corpus_classification_and_traits(tmp_path: Path) -> None:
    report = inspect_corpus(load_data(f"pom:{tiny_pom(tmp_path)}"))
    assert set(report["splits"]["train"]["labels"]["per_target"]) == {f"trait_{i:02d}" for i in range(17)}
    assert report["modalities"] == ["audio", "vision"]
    assert any("no text modality" in n for n in report["notes"])


def test_inspect_path_counts_instead_of_rejecting(tmp_path: Path) -> None:
    report = inspect_path(str(tiny_mmsa(tmp_path / "inf.pkl", bad_audio=True)))
    assert report["nonfinite"]["replaced_at_load"] == {"train/audio": 3, "valid/audio": 3, "test/audio": 3}
    assert len(report["warnings"]) == 3 and all("replaced 3 values" in w for w in report["warnings"])
    json.dumps(report)


def test_real_named_corpora(tmp_path: Path) -> None:
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not shared.is_dir():
        pytest.skip("../shared/data is absent")
    assert len(load_data(f"mosi-utterance:{shared / 'mosi'}").split("test")) == 752
    report = inspect_path(f"pom:{shared / 'pom'}")
    assert {s: v["size"] for s, v in report["splits"].items()} == {"train": 600, "valid": 100, "test": 203}
