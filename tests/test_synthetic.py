"""The synthetic corpus: determinism, shapes, masks, missing modalities, labels, options, and that fusion is needed."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score

from affectfuse.config import MODALITIES, Modalities
from affectfuse.data.corpus import Corpus, Split
from affectfuse.data.synthetic import RATER_COUNTS, SyntheticConfig, make_synthetic, synthetic_from_options

SMALL = {"n_train": 60, "n_valid": 20, "n_test": 20}


@pytest.fixture(scope="module")
def default_corpus() -> Corpus:
    return make_synthetic()


def _arrays(corpus: Corpus) -> list[np.ndarray]:
    return [
        a for split in corpus.splits.values() for a in (*split.features.values(), *split.masks.values(), split.labels)
    ]


def test_same_seed_gives_identical_arrays_and_another_seed_does_not() -> None:
    first, again, other = make_synthetic(**SMALL), make_synthetic(**SMALL), make_synthetic(seed=1, **SMALL)
    assert all(np.array_equal(a, b) for a, b in zip(_arrays(first), _arrays(again), strict=True))
    assert first.split("train").ids == again.split("train").ids
    assert not np.array_equal(first.split("train").labels, other.split("train").labels)
    assert not np.array_equal(first.split("train").features["text"], other.split("train").features["text"])
    assert other.split("test").ids[3] == "syn1_test_3"


def test_a_split_does_not_depend_on_the_size_of_another() -> None:
    base, bigger_valid = make_synthetic(**SMALL), make_synthetic(**{**SMALL, "n_valid": 40})
    assert np.array_equal(base.split("train").features["audio"], bigger_valid.split("train").features["audio"])
    assert np.array_equal(base.split("test").labels, bigger_valid.split("test").labels)


def test_aligned_default_shapes_and_spec(default_corpus: Corpus) -> None:
    corpus = default_corpus
    assert corpus.name == "synthetic" and corpus.source == "synthetic:"
    sizes = {"train": 1200, "valid": 300, "test": 300}
    dims = {"text": 32, "audio": 16, "vision": 24}
    assert list(corpus.splits) == list(sizes)
    for name, split in corpus.splits.items():
        n = sizes[name]
        assert split.ids[0] == f"syn0_{name}_0" and len(set(split.ids)) == n
        assert split.labels.shape == (n, 1) and split.labels.dtype == np.float32
        for m in MODALITIES:
            assert split.features[m].shape == (n, 20, dims[m]) and split.features[m].dtype == np.float32
            assert split.masks[m].shape == (n, 20) and split.masks[m].dtype == np.bool_
        # Word-aligned: a sample has the same true length in every modality.
        assert all(np.array_equal(split.masks["text"], split.masks[m]) for m in MODALITIES)
    spec = corpus.spec
    assert spec.dims == dims and spec.lengths == {m: 20 for m in MODALITIES}
    assert (spec.task, spec.targets, spec.metric_family, spec.aligned) == ("regression", ("sentiment",), "mosi", True)
    assert spec.extractors == {m: "synthetic" for m in MODALITIES} and spec.num_classes == 0


def test_unaligned_shapes_follow_mosi_lengths() -> None:
    corpus = make_synthetic(aligned=False, n_train=200, n_valid=50, n_test=50)
    lengths = {"text": 50, "audio": 375, "vision": 500}
    assert corpus.spec.lengths == lengths and not corpus.spec.aligned
    split = corpus.split("train")
    for m, t in lengths.items():
        assert split.features[m].shape == (200, t, corpus.spec.dims[m]) and split.masks[m].shape == (200, t)
    # One duration per utterance, but its number of steps differs between modalities.
    assert (split.masks["vision"].sum(1) > split.masks["text"].sum(1)).all()


@pytest.mark.parametrize("aligned", [True, False])
def test_masks_are_padded_at_the_end_with_variable_lengths_and_zero_features(aligned: bool) -> None:
    config = SyntheticConfig(aligned=aligned, min_fraction=0.4, **SMALL)
    split = make_synthetic(config).split("train")
    for m, t in config.padded_lengths.items():
        mask, x = split.masks[m], split.features[m]
        assert not (mask[:, 1:] & ~mask[:, :-1]).any(), "a real step follows padding"
        true_length = mask.sum(1)
        assert true_length.min() >= round(0.4 * t) and true_length.max() <= t
        assert len(np.unique(true_length)) > 3
        assert (x[~mask] == 0).all() and (np.abs(x[mask]).sum(-1) > 0).all()


def test_true_length_carries_no_label_information(default_corpus: Corpus) -> None:
    split = default_corpus.split("train")
    assert abs(np.corrcoef(split.masks["text"].sum(1), split.labels[:, 0])[0, 1]) < 0.1


def test_missing_modality_drops_one_whole_modality_in_the_requested_fraction() -> None:
    sizes = {"n_train": 500, "n_valid": 100, "n_test": 100}
    full, missing = make_synthetic(**sizes), make_synthetic(missing_modality=0.2, **sizes)
    assert not any((~s.masks[m].any(1)).any() for s in full.splits.values() for m in MODALITIES)
    for name, split in missing.splits.items():
        absent = np.stack([~split.masks[m].any(1) for m in MODALITIES], axis=1)  # (N, 3)
        assert absent.any(1).sum() == round(0.2 * len(split)) and absent.sum(1).max() == 1
        if name == "train":
            assert (absent.sum(0) > 20).all(), f"100 drops should spread over the modalities: {absent.sum(0)}"
        reference = full.split(name)
        assert np.array_equal(split.labels, reference.labels)
        for k, m in enumerate(MODALITIES):
            assert (split.features[m][absent[:, k]] == 0).all()
            kept = ~absent[:, k]
            assert np.array_equal(split.features[m][kept], reference.features[m][kept])
            assert np.array_equal(split.masks[m][kept], reference.masks[m][kept])


def test_labels_are_mosi_like_rater_averages(default_corpus: Corpus) -> None:
    y = np.concatenate([s.labels[:, 0] for s in default_corpus.splits.values()])
    assert y.min() >= -3 and y.max() <= 3 and (np.abs(y) == 3).any()
    on_grid = np.zeros_like(y, dtype=bool)
    for r in RATER_COUNTS:
        on_grid |= np.abs(y * r - np.round(y * r)) < 1e-4
    assert on_grid.all()
    assert 0.05 < (y == 0).mean() < 0.25 and not np.signbit(y[y == 0]).any()
    for half in (0.5, 1.5, 2.5):
        assert (np.abs(y) == half).any(), f"no exact +-{half}: banker's rounding ties would go untested"
    positive = (y > 0).sum() / (y != 0).sum()
    assert 0.45 < positive < 0.55


def test_options_are_parsed_with_the_fields_types() -> None:
    assert SyntheticConfig.from_options("") == SyntheticConfig()
    options = " n_train=500, aligned=false ,seed=3,noise=0.5,dims.audio=8,lengths.vision=100 "
    config = SyntheticConfig.from_options(options)
    assert config == SyntheticConfig(
        n_train=500,
        aligned=False,
        seed=3,
        noise=0.5,
        dims=Modalities(text=32, audio=8, vision=24),
        lengths=Modalities(text=50, audio=375, vision=100),
    )
    assert SyntheticConfig.from_options(config.to_options()) == config
    assert config.to_options() == "n_train=500,seed=3,aligned=false,lengths.vision=100,dims.audio=8,noise=0.5"


def test_synthetic_from_options_builds_the_corpus_it_names() -> None:
    corpus = synthetic_from_options("n_train=30,n_valid=10,n_test=10,aligned=false,lengths.audio=40,seed=2")
    assert corpus.source == "synthetic:n_train=30,n_valid=10,n_test=10,seed=2,aligned=false,lengths.audio=40"
    assert len(corpus.split("train")) == 30 and corpus.spec.lengths["audio"] == 40
    assert corpus.split("valid").ids[0] == "syn2_valid_0"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("n_trian=5", "has no field 'n_trian'; valid fields: ['aligned', 'dims', 'length', 'lengths', 'min_fraction'"),
        ("n_train=abc", "cannot set synthetic.n_train to 'abc': expected int"),
        ("aligned=maybe", "cannot set synthetic.aligned to 'maybe': expected bool"),
        ("noise=loud", "cannot set synthetic.noise to 'loud': expected float"),
        ("dims.audio=x", "cannot set synthetic.dims.audio to 'x': expected int"),
        ("dims.video=3", "synthetic.dims has no field 'video'"),
        ("n_train", "'n_train' is not key=value"),
        ("seed=1,seed=2", "'seed' is given twice"),
        ("n_train=0", "n_train must be an integer >= 1"),
        ("dims.text=0", "dims must be Modalities of integers >= 1"),
        ("missing_modality=1.5", "missing_modality must be in [0, 1]"),
        ("min_fraction=0", "min_fraction must be in (0, 1]"),
    ],
)
def test_bad_options_raise_a_clear_value_error(options: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        SyntheticConfig.from_options(options)


def test_make_synthetic_rejects_unknown_overrides() -> None:
    with pytest.raises(ValueError, match="synthetic has no field 'size'"):
        make_synthetic(size=10)


def _masked_mean(split: Split) -> dict[str, np.ndarray]:
    # Padded features are 0, so the sum over all steps is the sum over real steps.
    return {m: x.sum(1) / np.maximum(split.masks[m].sum(1, keepdims=True), 1) for m, x in split.features.items()}


def _test_r2(corpus: Corpus, features: Callable[[dict[str, np.ndarray]], np.ndarray]) -> float:
    """Ridge on `features` of the pooled inputs; alpha chosen on valid, R^2 reported on test."""
    x = {name: features(_masked_mean(split)) for name, split in corpus.splits.items()}
    y = {name: split.labels[:, 0] for name, split in corpus.splits.items()}
    fits = [Ridge(alpha=alpha).fit(x["train"], y["train"]) for alpha in (1.0, 10.0, 100.0)]
    best = max(fits, key=lambda fit: r2_score(y["valid"], fit.predict(x["valid"])))
    return float(r2_score(y["test"], best.predict(x["test"])))


def _linear(pooled: dict[str, np.ndarray]) -> np.ndarray:
    return np.hstack([pooled[m] for m in MODALITIES])


def _with_products(pooled: dict[str, np.ndarray]) -> np.ndarray:
    pairs = [(a, b) for i, a in enumerate(MODALITIES) for b in MODALITIES[i + 1 :]]
    products = [(pooled[a][:, :, None] * pooled[b][:, None, :]).reshape(len(pooled[a]), -1) for a, b in pairs]
    return np.hstack([_linear(pooled), *products])


def test_the_label_needs_all_modalities_and_their_interaction(default_corpus: Corpus) -> None:
    single = {m: _test_r2(default_corpus, lambda pooled, m=m: pooled[m]) for m in MODALITIES}
    linear = _test_r2(default_corpus, _linear)
    interaction = _test_r2(default_corpus, _with_products)
    # Measured on seed 0: single text 0.29 / audio 0.05 / vision 0.00, linear 0.32, with products 0.81.
    assert max(single.values()) < 0.35, single
    assert linear < 0.45
    assert interaction > 0.65
    assert interaction - linear > 0.3
