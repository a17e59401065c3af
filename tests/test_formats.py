"""Readers, writer and detection of the on-disk data formats: tiny files in each exact layout, plus the real files
under ../shared/data when present (skipped otherwise)."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from affectfuse.data.corpus import DataFormatError, NonFiniteFeatureError
from affectfuse.data.formats import (
    IEMOCAP_EMOTIONS,
    POM_LMF_TRAITS,
    ComputationalSequence,
    detect_format,
    load_corpus,
    load_csd_corpus,
    load_mosi_utterance,
    pickles,
    read_csd,
    read_lmf_pickle,
    read_mfn_h5,
    read_mmsa_fet,
    read_mmsa_pickle,
    read_mult_pickle,
    segment_words,
    write_mmsa_pickle,
)

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def shared_data() -> Path:
    root = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not root.is_dir():
        pytest.skip("../shared/data is absent (real data is not part of the project)")
    return root


def dump(obj: Any, path: Path) -> Path:
    with path.open("wb") as f:
        pickle.dump(obj, f)
    return path


# ---------------------------------------------------------------------------------------------------------------------
# MMSA
# ---------------------------------------------------------------------------------------------------------------------


def mmsa_split(n: int = 4, *, aligned: bool = False, sims: bool = False) -> dict[str, Any]:
    length = 6
    ta, tv = (length, length) if aligned else (8, 5)
    text_bert = np.zeros((n, 3, length), dtype=np.float32)
    text_bert[:, 0] = RNG.integers(100, 2000, (n, length))
    text_len = np.array([6, 3, 4, 2][:n] + [6] * max(0, n - 4))
    text_bert[:, 1] = np.arange(length)[None] < text_len[:, None]
    d: dict[str, Any] = {
        "id": np.array([f"vid{i // 2}$_${i}" for i in range(n)], dtype=object),
        "raw_text": np.array(["words"] * n, dtype=object),
        "text": RNG.normal(size=(n, length, 768)).astype(np.float32),
        "text_bert": text_bert,
        "audio": RNG.normal(size=(n, ta, 5)).astype(np.float32),
        "vision": RNG.normal(size=(n, tv, 20)).astype(np.float32),
        "regression_labels": RNG.uniform(-3, 3, n).astype(np.float32),
        "classification_labels": np.zeros(n),
        "annotations": np.array(["Neutral"] * n, dtype=object),
    }
    if not aligned:
        d["audio_lengths"] = [8, 2, 5, 1][:n] + [8] * max(0, n - 4)
        d["vision_lengths"] = np.array([5, 5, 0, 3][:n] + [5] * max(0, n - 4))
    if sims:
        for k in "TAV":
            d[f"regression_labels_{k}"] = RNG.uniform(-1, 1, n).astype(np.float32)
    return d


def mmsa_file(tmp_path: Path, name: str = "unaligned_50.pkl", **kwargs: Any) -> Path:
    return dump({s: mmsa_split(**kwargs) for s in ("train", "valid", "test")}, tmp_path / name)


def test_mmsa_unaligned_masks_from_lengths_and_attention(tmp_path: Path) -> None:
    corpus = read_mmsa_pickle(mmsa_file(tmp_path))
    train = corpus.split("train")
    assert list(corpus.splits) == ["train", "valid", "test"]
    assert train.features["audio"].dtype == np.float32 and train.features["audio"].shape == (4, 8, 5)
    assert train.masks["audio"].sum(1).tolist() == [8, 2, 5, 1]
    assert train.masks["vision"].sum(1).tolist() == [5, 5, 0, 3]
    assert train.masks["text"].sum(1).tolist() == [6, 3, 4, 2]
    assert train.labels.shape == (4, 1) and train.labels.dtype == np.float32
    assert train.ids[1] == "vid0$_$1"
    spec = corpus.spec
    assert (spec.dims, spec.lengths) == ({"text": 768, "audio": 5, "vision": 20}, {"text": 6, "audio": 8, "vision": 5})
    assert (spec.task, spec.targets, spec.metric_family, spec.aligned) == ("regression", ("sentiment",), "mosi", False)
    assert spec.extractors == {"text": "mmsa-text", "audio": "mmsa-audio", "vision": "mmsa-vision"}
    assert corpus.source.endswith("(mmsa)")


def test_mmsa_aligned_without_lengths(tmp_path: Path) -> None:
    corpus = read_mmsa_pickle(mmsa_file(tmp_path, "aligned_50.pkl", aligned=True))
    assert corpus.spec.aligned
    assert corpus.split("test").masks["audio"].all()


def test_mmsa_bert_tokens(tmp_path: Path) -> None:
    corpus = read_mmsa_pickle(mmsa_file(tmp_path), text="bert_tokens")
    x, mask = corpus.split("train").features["text"], corpus.split("train").masks["text"]
    assert x.shape == (4, 6, 3) and corpus.spec.extractors["text"] == "bert-tokens"
    assert np.array_equal(mask, x[:, :, 1] > 0)


def test_mmsa_sims_and_unimodal_labels(tmp_path: Path) -> None:
    path = mmsa_file(tmp_path, "unaligned_39.pkl", sims=True)
    assert read_mmsa_pickle(path).spec.metric_family == "sims"
    corpus = read_mmsa_pickle(path, unimodal_labels=True)
    assert corpus.spec.targets == ("sentiment", "sentiment_text", "sentiment_audio", "sentiment_vision")
    assert corpus.split("train").labels.shape == (4, 4)
    assert corpus.spec.extractors["audio"] == "mmsa-sims-audio"


def test_mmsa_split_aliases(tmp_path: Path) -> None:
    path = dump({"train": mmsa_split(), "dev": mmsa_split(), "test": mmsa_split()}, tmp_path / "x.pkl")
    assert list(read_mmsa_pickle(path).splits) == ["train", "valid", "test"]


def test_mmsa_missing_key(tmp_path: Path) -> None:
    bad = mmsa_split()
    del bad["vision"]  # a modality absent from every split is absent from the corpus; from one split, an error
    assert read_mmsa_pickle(dump({"train": bad}, tmp_path / "audio_text.pkl")).spec.modalities == ("text", "audio")
    path = dump({"train": mmsa_split(), "valid": bad}, tmp_path / "bad.pkl")
    with pytest.raises(DataFormatError, match=r"bad\.pkl: split 'valid': modalities/dims .* differ from split 'train'"):
        read_mmsa_pickle(path)


def test_mmsa_wrong_shape(tmp_path: Path) -> None:
    bad = mmsa_split()
    bad["audio"] = bad["audio"][:, 0]
    path = dump({"train": bad}, tmp_path / "bad.pkl")
    with pytest.raises(
        DataFormatError,
        match=r"bad\.pkl: split 'train', key 'audio' \(audio\): expected a 3-D array, "
        r"found shape \(4, 5\)",
    ):
        read_mmsa_pickle(path)


def test_mmsa_labels_as_strings(tmp_path: Path) -> None:
    bad = mmsa_split()
    bad["regression_labels"] = np.array(["1.0", "2.0", "0.5", "1"])
    path = dump({"train": bad}, tmp_path / "bad.pkl")
    with pytest.raises(DataFormatError, match=r"key 'regression_labels': expected a numeric array, found dtype <U3"):
        read_mmsa_pickle(path)


def test_mmsa_row_count_mismatch(tmp_path: Path) -> None:
    bad = mmsa_split()
    bad["vision"] = bad["vision"][:3]
    path = dump({"train": bad}, tmp_path / "bad.pkl")
    with pytest.raises(DataFormatError, match=r"key 'vision' \(vision\): expected 4 rows"):
        read_mmsa_pickle(path)


def test_mmsa_nonfinite_rejected_by_default(tmp_path: Path) -> None:
    split = mmsa_split()
    split["audio"][0, 0, 0] = -np.inf
    split["audio"][1, 1, 1] = np.nan
    path = dump({"train": split}, tmp_path / "inf.pkl")
    with pytest.raises(
        NonFiniteFeatureError,
        match=r"inf\.pkl: split 'train', modality 'audio' has 2 non-finite "
        r"values \(1 NaN, 1 inf\)",
    ):
        read_mmsa_pickle(path)


def test_mmsa_nonfinite_zero_warns_and_counts(tmp_path: Path) -> None:
    split = mmsa_split()
    split["audio"][0, 0, :2] = -np.inf
    path = dump({"train": split}, tmp_path / "inf.pkl")
    with pytest.warns(UserWarning, match=r"modality 'audio' has 2 non-finite.*replaced 2 values by 0"):
        corpus = read_mmsa_pickle(path, nonfinite="zero")
    assert corpus.nonfinite == {"train/audio": 2}
    assert np.isfinite(corpus.split("train").features["audio"]).all()


def test_mmsa_nan_labels_are_unlabelled_and_inf_labels_rejected(tmp_path: Path) -> None:
    split = mmsa_split()
    split["regression_labels"][2] = np.nan
    corpus = read_mmsa_pickle(dump({"train": split}, tmp_path / "nan.pkl"))
    labels = corpus.split("train").labels
    assert np.isnan(labels[2, 0]) and np.isfinite(np.delete(labels, 2)).all()
    split["regression_labels"][2] = np.inf
    with pytest.raises(DataFormatError, match=r"key 'regression_labels': 1 labels are infinite"):
        read_mmsa_pickle(dump({"train": split}, tmp_path / "inf.pkl"), nonfinite="zero")


def test_mmsa_lengths_checked(tmp_path: Path) -> None:
    split = mmsa_split()
    split["audio_lengths"] = [9, 2, 5, 1]  # longer than the padded 8 steps: clipped, with a note
    corpus = read_mmsa_pickle(dump({"train": split}, tmp_path / "long.pkl"))
    assert corpus.split("train").masks["audio"].sum(1).tolist() == [8, 2, 5, 1]
    assert any("audio_lengths exceed the padded length 8" in n for n in corpus.notes)
    split["audio_lengths"] = [-1, 2, 5, 1]
    with pytest.raises(DataFormatError, match=r"key 'audio_lengths': expected lengths >= 0"):
        read_mmsa_pickle(dump({"train": split}, tmp_path / "neg.pkl"))


def test_mmsa_text_only_tokens_needs_bert_mode(tmp_path: Path) -> None:
    split = mmsa_split()
    del split["text"]
    with pytest.raises(DataFormatError, match=r"missing key 'text'.*text='bert_tokens'"):
        read_mmsa_pickle(dump({"train": split}, tmp_path / "tok.pkl"))


def assert_same_corpus(a: Any, b: Any) -> None:
    assert list(a.splits) == list(b.splits)
    for s in a.splits:
        x, y = a.split(s), b.split(s)
        assert x.ids == y.ids
        np.testing.assert_array_equal(x.labels, y.labels)
        for m in x.features:
            np.testing.assert_array_equal(x.masks[m], y.masks[m])
            np.testing.assert_array_equal(x.features[m] * x.masks[m][..., None], y.features[m] * y.masks[m][..., None])


@pytest.mark.parametrize("text", ["features", "bert_tokens"])
def test_write_mmsa_round_trip(tmp_path: Path, text: str) -> None:
    original = read_mmsa_pickle(mmsa_file(tmp_path), text=text)
    out = write_mmsa_pickle(original, tmp_path / "out" / "copy.pkl")
    assert sorted(p.name for p in out.parent.iterdir()) == ["copy.pkl"]  # the temp file was renamed, none left over
    again = read_mmsa_pickle(out, text=text)
    assert_same_corpus(original, again)
    assert again.spec == original.spec
    with out.open("rb") as f:
        raw = pickle.load(f)
    assert set(raw["train"]) >= {"id", "raw_text", "regression_labels", "audio", "vision", "audio_lengths"}
    assert ("text_bert" in raw["train"]) == (text == "bert_tokens")


def test_write_mmsa_packs_left_padding(tmp_path: Path) -> None:
    corpus = read_mmsa_pickle(mmsa_file(tmp_path))
    train = corpus.split("train")
    train.masks["audio"] = train.masks["audio"][:, ::-1].copy()  # left-padded: real steps at the end
    train.features["audio"] = train.features["audio"][:, ::-1].copy()
    again = read_mmsa_pickle(write_mmsa_pickle(corpus, tmp_path / "packed.pkl"))
    got = again.split("train")
    assert got.masks["audio"].sum(1).tolist() == [8, 2, 5, 1]
    np.testing.assert_array_equal(got.features["audio"][1, :2], train.features["audio"][1, 6:])


def test_write_mmsa_rejects_classification(tmp_path: Path) -> None:
    corpus = read_mult_pickle(mult_file(tmp_path, iemocap=True))
    with pytest.raises(ValueError, match="one regression target"):
        write_mmsa_pickle(corpus, tmp_path / "x.pkl")


# ---------------------------------------------------------------------------------------------------------------------
# MulT
# ---------------------------------------------------------------------------------------------------------------------


def mult_split(n: int = 5, *, iemocap: bool = False, aligned: bool = True) -> dict[str, Any]:
    t, a, v = (20, 20, 20) if aligned else (20, 40, 50)
    if iemocap:
        labels = np.eye(2, dtype=np.float32)[RNG.integers(0, 2, (n, 4))]  # (n, 4, 2) one-hot
    else:
        labels = RNG.uniform(-3, 3, (n, 1, 1)).astype(np.float32)
    return {
        "vision": RNG.normal(size=(n, v, 35)).astype(np.float32),
        "audio": RNG.normal(size=(n, a, 74)).astype(np.float32),
        "text": RNG.normal(size=(n, t, 300)).astype(np.float32),
        "labels": labels,
        "id": np.array([[f"v{i}".encode(), b"1.5", b"3.25"] for i in range(n)]),
    }


def mult_file(tmp_path: Path, **kwargs: Any) -> Path:
    return dump({s: mult_split(**kwargs) for s in ("train", "valid", "test")}, tmp_path / "mosi_data.pkl")


def test_mult_regression(tmp_path: Path) -> None:
    corpus = read_mult_pickle(mult_file(tmp_path))
    train = corpus.split("train")
    assert train.labels.shape == (5, 1) and train.labels.dtype == np.float32
    assert train.ids[0] == "v0_1.5_3.25"
    assert corpus.spec.aligned and corpus.spec.metric_family == "mosi"
    assert corpus.spec.dims == {"text": 300, "audio": 74, "vision": 35}


def test_mult_iemocap_one_hot_to_classes(tmp_path: Path) -> None:
    path = mult_file(tmp_path, iemocap=True, aligned=False)
    raw = pickle.loads(path.read_bytes())
    corpus = read_mult_pickle(path)
    spec = corpus.spec
    assert (spec.task, spec.targets, spec.num_classes, spec.metric_family) == (
        "classification",
        IEMOCAP_EMOTIONS,
        2,
        "iemocap",
    )
    assert not spec.aligned
    labels = corpus.split("valid").labels
    assert labels.dtype == np.int64 and labels.shape == (5, 4)
    np.testing.assert_array_equal(labels, raw["valid"]["labels"].argmax(-1))


def test_mult_bad_one_hot(tmp_path: Path) -> None:
    split = mult_split(iemocap=True)
    split["labels"][0, 0] = [1, 1]
    with pytest.raises(DataFormatError, match=r"key 'labels': expected one-hot rows.*1 rows are not"):
        read_mult_pickle(dump({"train": split}, tmp_path / "iemocap_data.pkl"))


def test_mult_missing_labels(tmp_path: Path) -> None:
    split = mult_split()
    del split["labels"]
    with pytest.raises(DataFormatError, match=r"split 'test': missing key 'labels'"):
        read_mult_pickle(dump({"test": split}, tmp_path / "m.pkl"))


# ---------------------------------------------------------------------------------------------------------------------
# LMF
# ---------------------------------------------------------------------------------------------------------------------


def lmf_split(n: int = 6, labels: np.ndarray | None = None, *, as_bytes: bool = False) -> dict[Any, Any]:
    d = {
        "covarep": RNG.normal(size=(n, 74)),
        "facet": RNG.normal(size=(n, 35)),
        "glove": RNG.normal(size=(n, 20, 300)),
        "label": RNG.uniform(-3, 3, (n, 1)) if labels is None else labels,
    }
    return {k.encode(): v for k, v in d.items()} if as_bytes else d


def test_lmf_mosi_with_bytes_keys(tmp_path: Path) -> None:
    # a Python 2 pickle read with encoding="bytes" has bytes keys at every level
    obj = {s.encode(): lmf_split(as_bytes=True) for s in ("train", "valid", "test")}
    corpus = read_lmf_pickle(dump(obj, tmp_path / "mosi.pkl"))
    train = corpus.split("train")
    assert {m: x.shape for m, x in train.features.items()} == {
        "text": (6, 20, 300),
        "audio": (6, 1, 74),
        "vision": (6, 1, 35),
    }
    assert corpus.spec.metric_family == "mosi" and corpus.spec.targets == ("sentiment",)


def test_lmf_pom_traits(tmp_path: Path) -> None:
    obj = {s: lmf_split(labels=RNG.uniform(1, 7, (6, 16))) for s in ("train", "valid", "test")}
    corpus = read_lmf_pickle(dump(obj, tmp_path / "pom.pkl"))
    assert corpus.spec.targets == POM_LMF_TRAITS and corpus.spec.metric_family == "traits"
    assert corpus.split("test").labels.shape == (6, 16)


def test_lmf_iemocap_per_emotion(tmp_path: Path) -> None:
    one_hot = np.eye(2)[RNG.integers(0, 2, 6)]
    obj = {e: {s: lmf_split(labels=one_hot) for s in ("train", "valid", "test")} for e in ("happy", "sad")}
    path = dump(obj, tmp_path / "iemocap.pkl")
    with pytest.raises(DataFormatError, match=r"one dataset per emotion; choose one with emotion=.*\['happy', 'sad'\]"):
        read_lmf_pickle(path)
    with pytest.raises(DataFormatError, match=r"no emotion 'angry'"):
        read_lmf_pickle(path, emotion="angry")
    corpus = read_lmf_pickle(path, emotion="sad")
    assert (corpus.spec.task, corpus.spec.targets, corpus.spec.num_classes) == ("classification", ("sad",), 2)
    np.testing.assert_array_equal(corpus.split("train").labels[:, 0], one_hot.argmax(1))
    assert corpus.name == "iemocap-sad"


def test_lmf_nan_audio(tmp_path: Path) -> None:
    split = lmf_split()
    split["covarep"][3, 5] = np.nan
    path = dump({"train": split}, tmp_path / "mosi.pkl")
    with pytest.raises(NonFiniteFeatureError, match=r"mosi\.pkl: split 'train', modality 'audio' has 1 non-finite"):
        read_lmf_pickle(path)
    with pytest.warns(UserWarning, match="replaced 1 values"):
        assert read_lmf_pickle(path, nonfinite="zero").nonfinite == {"train/audio": 1}


# ---------------------------------------------------------------------------------------------------------------------
# CMU-MultimodalSDK .csd
# ---------------------------------------------------------------------------------------------------------------------


def write_csd(
    path: Path, root: str, data: dict[str, tuple[np.ndarray, np.ndarray]], metadata: dict[str, str] | None = None
) -> Path:
    with h5py.File(path, "w") as f:
        g = f.create_group(root)
        d = g.create_group("data")
        for vid, (features, intervals) in data.items():
            v = d.create_group(vid)
            v.create_dataset("features", data=features)
            v.create_dataset("intervals", data=intervals)
        m = g.create_group("metadata")
        for k, value in (metadata or {"root name": root}).items():
            m.create_dataset(k, data=np.array([value.encode()], dtype=object), dtype=h5py.string_dtype())
    return path


def tiny_csd(tmp_path: Path) -> dict[str, Path]:
    labels = {
        "vidA": (np.array([[1.5], [-2.0]], np.float32), np.array([[0.0, 2.0], [2.0, 4.0]])),
        "vidB": (np.array([[0.5]], np.float32), np.array([[1.0, 3.0]])),
        "vidC": (np.array([[3.0]], np.float32), np.array([[0.0, 1.0]])),
    }
    steps = np.arange(0, 4, 0.5)
    audio = {
        v: (np.arange(16, dtype=np.float32).reshape(8, 2) + 100 * i, np.c_[steps, steps + 0.5])
        for i, v in enumerate(("vidA", "vidB", "vidC"))
    }
    vision = {"vidA": (np.ones((2, 3), np.float32), np.array([[0.5, 1.0], [3.0, 3.5]]))}  # vidB/vidC have none
    words = {
        "vidA": (
            np.array([[b"hi"], [b"sp"], [b"there"], [b"you"]]),
            np.array([[0.0, 1.0], [1.0, 1.5], [1.5, 2.0], [2.5, 3.5]]),
        )
    }
    meta = {"root name": '"Opinion Segment Labels"', "dataset name": '"TINY"', "dimension names": '["sentiment score"]'}
    return {
        "labels": write_csd(tmp_path / "labels.csd", "Opinion Segment Labels", labels, meta),
        "audio": write_csd(tmp_path / "audio.csd", "COVAREP", audio),
        "vision": write_csd(tmp_path / "vision.csd", "FACET 4.2", vision),
        "words": write_csd(tmp_path / "words.csd", "Words", words),
    }


def test_read_csd(tmp_path: Path) -> None:
    seq = read_csd(tiny_csd(tmp_path)["labels"])
    assert isinstance(seq, ComputationalSequence)
    assert seq.root == "Opinion Segment Labels" and seq.num_rows == 4
    assert seq.metadata["dataset name"] == "TINY" and seq.metadata["dimension names"] == '["sentiment score"]'
    assert seq.data["vidA"][1].shape == (2, 2)


@pytest.mark.parametrize(
    ("features", "intervals", "match"),
    [
        (np.zeros((2, 1)), np.zeros((2, 3)), r"video 'v', key 'intervals': expected numeric \(n, 2\), found \(2, 3\)"),
        (np.zeros((3, 1)), np.zeros((2, 2)), r"video 'v', key 'features': expected \(2, \.\.\.\) matching"),
        (np.zeros(2), np.zeros((2, 2)), r"video 'v', key 'features'"),
    ],
)
def test_read_csd_validates(tmp_path: Path, features: np.ndarray, intervals: np.ndarray, match: str) -> None:
    path = write_csd(tmp_path / "bad.csd", "X", {"v": (features, intervals)})
    with pytest.raises(DataFormatError, match=match):
        read_csd(path)


def test_read_csd_layout_errors(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "nometa.csd", "w") as f:
        f.create_group("X").create_group("data")
    with pytest.raises(DataFormatError, match=r"nometa\.csd: root 'X' has no 'metadata' group"):
        read_csd(tmp_path / "nometa.csd")
    (tmp_path / "text.csd").write_text("not hdf5")
    with pytest.raises(DataFormatError, match=r"text\.csd: not an HDF5 file"):
        read_csd(tmp_path / "text.csd")
    with pytest.raises(FileNotFoundError, match="missing.csd"):
        read_csd(tmp_path / "missing.csd")


def test_load_csd_corpus_unaligned(tmp_path: Path) -> None:
    files = tiny_csd(tmp_path)
    folds = {"train": ["vidA"], "dev": ["vidB"], "test": ["vidX"]}
    corpus = load_csd_corpus(files["labels"], {"audio": files["audio"], "vision": files["vision"]}, folds)
    assert list(corpus.splits) == ["train", "valid"]  # vidX has no labels; vidC is in no fold
    train = corpus.split("train")
    assert train.ids == ["vidA_1", "vidA_2"]
    np.testing.assert_array_equal(train.labels[:, 0], [1.5, -2.0])
    assert train.masks["audio"].sum(1).tolist() == [4, 4]  # rows [0,0.5)..[1.5,2) and [2,2.5)..[3.5,4)
    np.testing.assert_array_equal(train.features["audio"][1, 0], [8, 9])
    assert train.masks["vision"].sum(1).tolist() == [1, 1]
    assert not corpus.split("valid").masks["vision"].any()
    assert corpus.name == "TINY" and not corpus.spec.aligned
    assert corpus.spec.extractors == {"audio": "COVAREP", "vision": "FACET 4.2"}
    assert any("no vision rows" in n for n in corpus.notes)
    assert any("in no fold" in n for n in corpus.notes) and any("have no labels" in n for n in corpus.notes)


def test_load_csd_corpus_word_aligned(tmp_path: Path) -> None:
    files = tiny_csd(tmp_path)
    corpus = load_csd_corpus(files["labels"], {"audio": files["audio"]}, {"train": ["vidA"]}, words=files["words"])
    train = corpus.split("train")
    assert corpus.spec.aligned
    assert train.masks["audio"].sum(1).tolist() == [2, 1]  # "hi", "there" | "you" ("sp" dropped)
    np.testing.assert_allclose(train.features["audio"][0, 0], [1, 2])  # mean of rows [0, 0.5) and [0.5, 1)
    np.testing.assert_allclose(train.features["audio"][1, 0], [11, 12])  # rows 5-6 overlap "you" [2.5, 3.5]


def test_load_csd_corpus_errors(tmp_path: Path) -> None:
    files = tiny_csd(tmp_path)
    with pytest.raises(DataFormatError, match=r"folds: video 'vidA' is in both 'train' and 'test'"):
        load_csd_corpus(files["labels"], {"audio": files["audio"]}, {"train": ["vidA"], "test": ["vidA"]})
    with pytest.raises(ValueError, match="features must map modalities"):
        load_csd_corpus(files["labels"], {"video": files["audio"]}, {"train": ["vidA"]})
    with pytest.raises(DataFormatError, match=r"words\.csd: the audio sequence holds non-numeric features"):
        load_csd_corpus(files["labels"], {"audio": files["words"]}, {"train": ["vidA"]})
    (tmp_path / "folds.json").write_text("{not json")
    with pytest.raises(DataFormatError, match=r"folds\.json: not valid JSON"):
        load_csd_corpus(files["labels"], {"audio": files["audio"]}, tmp_path / "folds.json")


def test_load_csd_corpus_nonfinite_names_feature_file(tmp_path: Path) -> None:
    files = tiny_csd(tmp_path)
    steps = np.arange(0, 4, 0.5)
    rows = (np.full((8, 2), -np.inf), np.c_[steps, steps + 0.5])
    bad = write_csd(tmp_path / "covarep.csd", "COVAREP", {"vidA": rows})
    with pytest.raises(NonFiniteFeatureError, match=r"covarep\.csd: split 'train', modality 'audio' has 16"):
        load_csd_corpus(files["labels"], {"audio": bad}, {"train": ["vidA"]})


def test_segment_words(tmp_path: Path) -> None:
    files = tiny_csd(tmp_path)
    words = segment_words(files["labels"], files["words"])
    assert words == {"vidA_1": ["hi", "there"], "vidA_2": ["you"], "vidB_1": [], "vidC_1": []}


def test_real_mosi_csd(shared_data: Path) -> None:
    labels = read_csd(shared_data / "mosi" / "labels" / "CMU_MOSI_Opinion_Labels.csd")
    assert len(labels.data) == 93 and labels.num_rows == 2199
    assert labels.metadata["dataset name"] == "CMU-MOSI"
    words_seq = read_csd(shared_data / "mosi" / "words" / "CMU_MOSI_ModifiedTimestampedWords.csd")
    assert words_seq.num_rows == 51056
    words = segment_words(labels, words_seq)
    assert len(words) == 2199 and not any("sp" in w for w in words.values())
    # the label file's timestamps are offset from the word file's by up to a word, so only the core words are exact
    assert {"anyhow", "it", "was", "really"} <= set(words["03bSnISJMiM_1"])
    # a numeric stand-in feature (one row per word) exercises the standard folds on the real labels
    stand_in = ComputationalSequence(
        "stand-in", {}, {v: (np.ones((len(iv), 1), np.float32), iv) for v, (_, iv) in words_seq.data.items()}
    )
    corpus = load_csd_corpus(labels, {"text": stand_in}, shared_data / "mosi" / "folds" / "mosi_std_folds.json")
    assert {s: len(v) for s, v in corpus.splits.items()} == {"train": 1284, "valid": 229, "test": 686}
    test = corpus.split("test")
    assert all(i.rpartition("_")[2].isdigit() for i in test.ids)


# ---------------------------------------------------------------------------------------------------------------------
# MMSA-FET
# ---------------------------------------------------------------------------------------------------------------------

FET_CONFIG = {
    "audio": {"tool": "librosa"},
    "video": {"tool": "openface"},
    "text": {"model": "bert", "pretrained": "bert-base-uncased"},
}


def fet_clip(ta: int, tv: int, tt: int, *, audio_dim: int = 33) -> dict[str, Any]:
    return {
        "audio": RNG.normal(size=(ta, audio_dim)),
        "vision": RNG.normal(size=(tv, 7)),
        "text": RNG.normal(size=(tt, 768)).astype(np.float32),
        "text_bert": np.stack([RNG.integers(100, 999, tt), np.ones(tt, int), np.zeros(tt, int)]),
        "config": FET_CONFIG,
    }


def fet_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "clips"
    folder.mkdir()
    for name, lengths in {"c1": (10, 4, 5), "c2": (3, 2, 7), "c3": (6, 6, 6)}.items():
        dump(fet_clip(*lengths), folder / f"{name}.pkl")
    return folder


def test_fet_folder_with_labels(tmp_path: Path) -> None:
    folder = fet_folder(tmp_path)
    (tmp_path / "labels.csv").write_text("clip_id,label,split\nc1,0.5,train\nc2,-1,dev\nc3,1,train\n")
    corpus = read_mmsa_fet(folder, labels_csv=tmp_path / "labels.csv")
    assert list(corpus.splits) == ["train", "valid"]
    train = corpus.split("train")
    assert train.ids == ["c1", "c3"]
    assert train.masks["audio"].sum(1).tolist() == [10, 6] and train.features["audio"].shape == (2, 10, 33)
    np.testing.assert_array_equal(train.labels[:, 0], [0.5, 1.0])
    assert corpus.spec.extractors == {"text": "bert-base-uncased", "audio": "librosa", "vision": "openface"}
    assert not corpus.spec.aligned


def test_fet_without_labels_is_nan_test(tmp_path: Path) -> None:
    corpus = read_mmsa_fet(fet_folder(tmp_path), text="bert_tokens")
    assert list(corpus.splits) == ["test"] and np.isnan(corpus.split("test").labels).all()
    assert corpus.spec.dims["text"] == 3 and corpus.spec.extractors["text"] == "bert-tokens"
    assert any("NaN label" in n for n in corpus.notes)


def test_fet_errors(tmp_path: Path) -> None:
    folder = fet_folder(tmp_path)
    (tmp_path / "few.csv").write_text("c1,0.5\nc2,1\n")
    with pytest.raises(DataFormatError, match=r"few\.csv: no row for clip 'c3'"):
        read_mmsa_fet(folder, labels_csv=tmp_path / "few.csv")
    (tmp_path / "text.csv").write_text("clip_id,label\nc1,positive\n")
    with pytest.raises(DataFormatError, match=r"text\.csv: line 2: expected clip_id,label\[,split\] with a numeric"):
        read_mmsa_fet(folder, labels_csv=tmp_path / "text.csv")
    dump(fet_clip(4, 4, 4, audio_dim=5), folder / "c4.pkl")
    with pytest.raises(DataFormatError, match=r"split 'test': audio features of different clips have different dims"):
        read_mmsa_fet(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match=r"empty: no MMSA-FET clip pickles"):
        read_mmsa_fet(tmp_path / "empty")
    clip = fet_clip(2, 2, 2)
    del clip["vision"]
    with pytest.raises(DataFormatError, match=r"novision\.pkl: clip: missing key 'vision'; the file has keys"):
        read_mmsa_fet(dump(clip, tmp_path / "novision.pkl"))


def test_fet_nonfinite_names_clip(tmp_path: Path) -> None:
    clip = fet_clip(3, 3, 3)
    clip["audio"][0, 0] = np.nan
    path = dump(clip, tmp_path / "clip9.pkl")
    with pytest.raises(NonFiniteFeatureError, match=r"clip9\.pkl: split 'test', modality 'audio' has 1"):
        read_mmsa_fet(path)


def test_real_fet_clips(shared_data: Path) -> None:
    samples = shared_data / "ch-sims" / "raw_samples"
    aligned = read_mmsa_fet(samples / "video_0001_0001_mmsafet_aligned.pkl")
    assert aligned.spec.dims == {"text": 768, "audio": 25, "vision": 171} and aligned.spec.aligned
    assert aligned.spec.extractors == {
        "text": "bert-base-uncased",
        "audio": "opensmile-eGeMAPSv02",
        "vision": "openface",
    }
    unaligned = read_mmsa_fet(samples / "video_0001_0001_mmsafet_unaligned.pkl")
    assert unaligned.spec.lengths == {"text": 11, "audio": 221, "vision": 32} and not unaligned.spec.aligned
    assert unaligned.spec.extractors["audio"] == "librosa"
    assert unaligned.split("test").ids == ["video_0001_0001_mmsafet_unaligned"]


# ---------------------------------------------------------------------------------------------------------------------
# MFN HDF5
# ---------------------------------------------------------------------------------------------------------------------


def write_h5(path: Path, data: np.ndarray, key: str = "d1") -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset(key, data=data)


def mfn_folder(tmp_path: Path, *, text: bool = True, k: int = 1) -> Path:
    folder = tmp_path / "mfn"
    folder.mkdir()
    for split, n in {"train": 6, "valid": 2, "test": 3}.items():
        write_h5(folder / f"audio_{split}.h5", RNG.normal(size=(n, 20, 5)))
        write_h5(folder / f"video_{split}.h5", RNG.normal(size=(n, 20, 20)))
        if text:
            write_h5(folder / f"text_{split}_emb.h5", RNG.normal(size=(n, 20, 300)))
        write_h5(folder / f"y_{split}.h5", RNG.uniform(-3, 3, (n,) if k == 1 else (n, k)), key="data")
    return folder


def test_mfn_h5(tmp_path: Path) -> None:
    corpus = read_mfn_h5(mfn_folder(tmp_path))
    assert {s: len(v) for s, v in corpus.splits.items()} == {"train": 6, "valid": 2, "test": 3}
    assert corpus.spec.dims == {"text": 300, "audio": 5, "vision": 20} and corpus.spec.aligned
    assert corpus.spec.targets == ("sentiment",) and corpus.spec.metric_family == "mosi"
    assert corpus.split("valid").ids == ["valid_0", "valid_1"]


def test_mfn_h5_errors(tmp_path: Path) -> None:
    folder = mfn_folder(tmp_path, text=False, k=17)
    assert "text" not in read_mfn_h5(folder).spec.dims
    write_h5(folder / "video_test.h5", RNG.normal(size=(4, 20, 20)))
    with pytest.raises(DataFormatError, match=r"video_test\.h5: split 'test', key 'd1' \(vision\): expected 3 rows"):
        read_mfn_h5(folder)
    (folder / "video_test.h5").unlink()
    with pytest.raises(DataFormatError, match=r"split 'test' has no vision file video_test\.h5"):
        read_mfn_h5(folder)
    with h5py.File(folder / "video_test.h5", "w") as f:
        f.create_dataset("a", data=np.zeros((3, 20, 20)))
        f.create_dataset("b", data=np.zeros((3, 20, 20)))
    with pytest.raises(DataFormatError, match=r"video_test\.h5: expected one dataset \(key 'd1'\), found datasets"):
        read_mfn_h5(folder)


def test_real_pom(shared_data: Path) -> None:
    corpus = read_mfn_h5(shared_data / "pom")
    assert {s: len(v) for s, v in corpus.splits.items()} == {"train": 600, "valid": 100, "test": 203}
    assert "text" not in corpus.spec.dims and corpus.spec.dims == {"audio": 43, "vision": 41}
    assert corpus.spec.num_targets == 17 and corpus.spec.metric_family == "traits"
    labels = np.concatenate([s.labels for s in corpus.splits.values()])
    assert 0.66 < labels.min() and labels.max() <= 7


# ---------------------------------------------------------------------------------------------------------------------
# MOSI utterance-level bc-LSTM features
# ---------------------------------------------------------------------------------------------------------------------


def write_rows(path: Path, rows: list[list[Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        csv.writer(f, quoting=csv.QUOTE_ALL).writerows(rows)


def mosi_folder(tmp_path: Path, *, flip_label: bool = False, drop_score: bool = False) -> Path:
    root = tmp_path / "mosi"
    videos = {"train": ["_a_b", "vc", "vd", "ve"], "test": ["vf"]}
    transcripts, scores = [], []
    for split_videos in videos.values():
        for v in split_videos:
            for seg in (1, 2):
                score = 1.5 if seg == 1 else -0.5
                transcripts.append([f"{v}_{seg}", "SOME WORDS", "1", int(score >= 0)])
                scores.append([0.0, 1.0, v, seg, score])
    if drop_score:
        scores.pop()
    write_rows(root / "labels" / "OpinionLevelSentiment.csv", scores)
    feats = root / "bclstm_utterance_features"
    write_rows(feats / "transcripts.csv", transcripts)
    index = {"train": list(range(8)), "test": [8, 9]}
    for split, rows in index.items():
        binary = [int(transcripts[i][3]) for i in rows]
        if flip_label and split == "train":
            binary[0] = 1 - binary[0]
        write_rows(feats / f"text_{split}.csv", [[i, *RNG.normal(size=100)] for i in rows])
        write_rows(feats / "audio" / f"audio_{split}0.csv", [[*RNG.normal(size=73), b] for b in binary])
        write_rows(feats / "video" / f"video_{split}0.csv", [[*RNG.normal(size=100), b] for b in binary])
    return root


def test_mosi_utterance_tiny(tmp_path: Path) -> None:
    corpus = load_mosi_utterance(mosi_folder(tmp_path), valid_videos_fraction=0.25, seed=1)
    sizes = {s: len(v) for s, v in corpus.splits.items()}
    assert sizes == {"train": 6, "valid": 2, "test": 2}
    videos = {s: {i.rpartition("_")[0] for i in v.ids} for s, v in corpus.splits.items()}
    assert not videos["train"] & videos["valid"]
    assert "_a_b" in videos["train"] | videos["valid"]  # ids whose video contains '_' join correctly
    assert corpus.spec.lengths == {"text": 1, "audio": 1, "vision": 1}


def test_mosi_utterance_join_errors(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"binary labels of audio_train0\.csv disagree with \(score >= 0\) for 1"):
        load_mosi_utterance(mosi_folder(tmp_path / "a", flip_label=True))
    with pytest.raises(DataFormatError, match=r"OpinionLevelSentiment\.csv: no score for 1 test segments"):
        load_mosi_utterance(mosi_folder(tmp_path / "b", drop_score=True))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_mosi_utterance(tmp_path / "nowhere")


def test_real_mosi_utterance(shared_data: Path) -> None:
    corpus = load_mosi_utterance(shared_data / "mosi")
    sizes = {s: len(v) for s, v in corpus.splits.items()}
    assert sizes["train"] + sizes["valid"] == 1447 and sizes["test"] == 752 and sum(sizes.values()) == 2199
    videos = {s: {i.rpartition("_")[0] for i in v.ids} for s, v in corpus.splits.items()}
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        assert not videos[a] & videos[b]
    assert len(videos["valid"]) == 6  # 10% of the 62 train videos
    test = corpus.split("test")
    assert test.labels[test.ids.index("03bSnISJMiM_1"), 0] == pytest.approx(2.4)
    assert corpus.spec.dims == {"text": 100, "audio": 73, "vision": 100}
    assert any("Leakage" in n for n in corpus.notes)
    again = load_mosi_utterance(shared_data / "mosi")
    assert again.split("valid").ids == corpus.split("valid").ids  # deterministic for one seed
    assert load_mosi_utterance(shared_data / "mosi", seed=5).split("valid").ids != corpus.split("valid").ids


# ---------------------------------------------------------------------------------------------------------------------
# Detection and dispatch
# ---------------------------------------------------------------------------------------------------------------------


def test_detect_format_by_content(tmp_path: Path) -> None:
    # file names say nothing: only the content decides
    cases = {
        "mmsa": mmsa_file(tmp_path, "a.bin"),
        "mult": dump({"train": mult_split()}, tmp_path / "b.bin"),
        "lmf": dump({"train": lmf_split()}, tmp_path / "c.bin"),
        "mmsa-fet": dump(fet_clip(2, 2, 2), tmp_path / "d.bin"),
        "csd": tiny_csd(tmp_path)["labels"],
        "mfn-h5": mfn_folder(tmp_path),
        "mosi-utterance": mosi_folder(tmp_path),
    }
    one_hot = np.eye(2)[RNG.integers(0, 2, 6)]
    cases_lmf_iemocap = dump({"happy": {"train": lmf_split(labels=one_hot)}}, tmp_path / "e.bin")
    for expected, path in cases.items():
        assert detect_format(path) == expected, path
    assert detect_format(cases_lmf_iemocap) == "lmf"
    assert detect_format(fet_folder(tmp_path)) == "mmsa-fet"


def test_detect_format_unknown(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(
        DataFormatError,
        match=r"notes\.txt: unrecognised data format \(neither HDF5 nor a pickle\); "
        r"known formats:\n  mmsa: .*\n  mult: ",
    ):
        detect_format(tmp_path / "notes.txt")
    with pytest.raises(DataFormatError, match=r"unrecognised data format \(a pickle of list\)"):
        detect_format(dump([1, 2], tmp_path / "list.pkl"))
    write_h5(tmp_path / "plain.h5", np.zeros(3))
    with pytest.raises(DataFormatError, match=r"plain\.h5: unrecognised data format \(an HDF5 file"):
        detect_format(tmp_path / "plain.h5")
    with pytest.raises(FileNotFoundError, match=r"absent\.pkl"):
        detect_format(tmp_path / "absent.pkl")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "readme.md").write_text("#")
    with pytest.raises(DataFormatError, match=r"folder: unrecognised data format \(a folder with 1 files"):
        detect_format(tmp_path / "folder")


def test_load_corpus_reads_pickle_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = mmsa_file(tmp_path)
    calls = []
    real = pickles.load_pickle
    monkeypatch.setattr(pickles, "load_pickle", lambda p: calls.append(p) or real(p))
    corpus = load_corpus(path, text="bert_tokens")
    assert calls == [path] and corpus.spec.extractors["text"] == "bert-tokens"


def test_load_corpus_dispatch_and_options(tmp_path: Path) -> None:
    one_hot = np.eye(2)[RNG.integers(0, 2, 6)]
    iemocap = dump({"angry": {"train": lmf_split(labels=one_hot)}}, tmp_path / "iemocap.pkl")
    assert load_corpus(iemocap, emotion="angry").spec.targets == ("angry",)
    with pytest.raises(ValueError, match=r"format 'mult', which takes options none; got \['emotion'\]"):
        load_corpus(mult_file(tmp_path), emotion="happy")
    files = tiny_csd(tmp_path)
    with pytest.raises(DataFormatError, match="a .csd file holds one computational sequence"):
        load_corpus(files["labels"])
    corpus = load_corpus(files["labels"], features={"audio": files["audio"]}, folds={"train": ["vidA", "vidB"]})
    assert len(corpus.split("train")) == 3 and corpus.source.endswith("(csd)")
    assert load_corpus(fet_folder(tmp_path)).source.endswith("(mmsa-fet)")
    assert len(load_corpus(dump(fet_clip(2, 3, 4), tmp_path / "one.pkl")).split("test")) == 1


def test_fet_reader_rejects_dataset_pickle(tmp_path: Path) -> None:
    folder = tmp_path / "pkls"
    folder.mkdir()
    mmsa_file(folder, "aligned_50.pkl")
    with pytest.raises(DataFormatError, match=r"aligned_50\.pkl: this is a dataset pickle with splits"):
        load_corpus(folder)
