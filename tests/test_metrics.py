"""Tests of affectfuse.metrics: hand-computed values (worked out in the comments) and independent references."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from affectfuse.config import InputSpec
from affectfuse.engine.metrics import (
    MetricSuite,
    aggregate,
    classification_metrics,
    emotion_metrics,
    format_table,
    higher_is_better,
    metrics_for,
    pearson,
    regression_metrics,
    sentiment_metrics,
    sims_metrics,
    traits_metrics,
    weighted_f1,
)

approx = pytest.approx


@pytest.fixture(autouse=True)
def _no_warnings():
    """Every metric must be silent: NaN results and zero-division F1 are documented, not warned about."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ----------------------------------------------------------------------------------------------------------------------
# MOSI / MOSEI (spec §0.2)


def test_acc7_uses_round_half_to_even() -> None:
    # labels on .5: np.round gives 2.5 -> 2, -0.5 -> -0, 1.5 -> 2, -2.5 -> -2.
    y = [2.5, -0.5, 1.5, -2.5]
    # predictions equal to those half-to-even roundings: all 4 match (-0 == 0).
    # floor(x + 0.5) would round y to [3, 0, 2, -2] -> 3/4; half away from zero to [3, -1, 2, -3] -> 1/4.
    m = sentiment_metrics([2.0, 0.0, 2.0, -2.0], y)
    assert m["acc7"] == 1.0
    assert m["acc5"] == 1.0  # clip to [-2, 2] changes nothing here: y -> [2, -0.5, 1.5, -2] -> [2, -0, 2, -2]
    # predictions equal to the half-away-from-zero roundings: only 1.5 -> 2 matches -> 1/4.
    assert sentiment_metrics([3.0, -1.0, 2.0, -3.0], y)["acc7"] == 0.25


def test_acc7_acc5_clip_before_rounding_and_mae_is_unclipped() -> None:
    y = [4.0, -2.7, 0.0]
    p = [3.0, -2.0, 0.2]
    m = sentiment_metrics(p, y)
    # acc7: clip y to [-3, 3] -> [3, -2.7, 0] -> round [3, -3, 0]; p -> [3, -2, 0]; matches T, F, T -> 2/3.
    #       (without clipping round(4.0) = 4 != 3 -> 1/3.)
    assert m["acc7"] == approx(2 / 3)
    # acc5: clip y to [-2, 2] -> [2, -2, 0]; p -> [2, -2, 0.2] -> round [2, -2, 0]; all match -> 1.
    assert m["acc5"] == 1.0
    # MAE unclipped: (|3 - 4| + |-2 + 2.7| + |0.2 - 0|) / 3 = (1 + 0.7 + 0.2) / 3 = 1.9 / 3 (clipped would be 0.3).
    assert m["mae"] == approx(1.9 / 3)


def test_zero_labels_positive_in_has0_and_dropped_in_non0() -> None:
    y = [0.0, 0.0, 1.0, -1.0]
    p = [-0.5, -0.5, 2.0, -2.0]
    m = sentiment_metrics(p, y)
    # has-0: truth (y >= 0) = [T, T, T, F], pred (p >= 0) = [F, F, T, F] -> 2/4.
    assert m["acc2_has0"] == 0.5
    # non-0: drop the two zero labels -> truth [T, F], pred [T, F] -> 1.
    assert m["acc2_non0"] == 1.0
    assert m["f1_non0"] == 1.0
    # has-0 weighted F1, truth [1, 1, 1, 0], pred [0, 0, 1, 0]:
    #   class 1: TP 1, FP 0, FN 2 -> P 1, R 1/3 -> F1 = 2 * (1/3) / (4/3) = 1/2
    #   class 0: TP 1, FP 2, FN 0 -> P 1/3, R 1 -> F1 = 1/2
    #   weighted: 3/4 * 1/2 + 1/4 * 1/2 = 1/2
    assert m["f1_has0"] == approx(0.5)


def test_zero_prediction_is_positive_in_has0_negative_in_non0() -> None:
    y = [1.0, 1.0, -1.0]
    p = [0.0, 0.0, -1.0]
    m = sentiment_metrics(p, y)
    assert m["acc2_has0"] == 1.0  # p >= 0: [T, T, F] == truth [T, T, F]
    assert m["acc2_non0"] == approx(1 / 3)  # p > 0: [F, F, F] vs truth [T, T, F]


def test_f1_truth_first_and_pred_first_differ() -> None:
    # No zero labels, so has-0 and non-0 binarise identically: truth [1, 1, 1, 1, 0], pred [1, 1, 0, 0, 0].
    y = [1.0, 2.0, 0.5, 3.0, -1.0]
    p = [1.0, 1.0, -1.0, -2.0, -1.0]
    #   class 1: TP 2, FP 0, FN 2 -> P 1, R 1/2 -> F1 2/3
    #   class 0: TP 1, FP 2, FN 0 -> P 1/3, R 1 -> F1 1/2
    # truth first, weights = truth supports (4, 1): (4 * 2/3 + 1 * 1/2) / 5 = 19/30
    # pred first,  weights = pred supports  (2, 3): (2 * 2/3 + 3 * 1/2) / 5 = 17/30
    truth_first = sentiment_metrics(p, y)
    pred_first = sentiment_metrics(p, y, f1_arg_order="pred_first")
    for key in ("f1_has0", "f1_non0"):
        assert truth_first[key] == approx(19 / 30)
        assert pred_first[key] == approx(17 / 30)
    assert truth_first["acc2_has0"] == pred_first["acc2_has0"] == approx(3 / 5)
    assert weighted_f1(np.array([1, 1, 1, 1, 0]), np.array([1, 1, 0, 0, 0])) == approx(19 / 30)


def test_bad_f1_arg_order() -> None:
    with pytest.raises(ValueError, match="f1_arg_order must be 'truth_first' or 'pred_first'; got 'swapped'"):
        sentiment_metrics([1.0, -1.0], [1.0, -1.0], f1_arg_order="swapped")  # type: ignore[arg-type]


def test_all_zero_labels_give_nan_non0_without_warnings() -> None:
    m = sentiment_metrics([0.1, -0.2, 0.3], [0.0, 0.0, 0.0])
    assert math.isnan(m["acc2_non0"]) and math.isnan(m["f1_non0"])
    assert math.isnan(m["corr"])  # constant labels
    assert m["acc2_has0"] == approx(2 / 3)  # truth all >= 0; pred [T, F, T]


def test_corr_matches_corrcoef_and_is_nan_for_constant_prediction() -> None:
    rng = np.random.default_rng(0)
    y = rng.uniform(-3, 3, 50)
    p = 0.5 * y + rng.normal(0, 1, 50)
    assert sentiment_metrics(p, y)["corr"] == approx(np.corrcoef(p, y)[0, 1], rel=1e-12)
    assert math.isnan(sentiment_metrics(np.full(50, 0.5), y)["corr"])
    assert math.isnan(pearson(np.ones(3), np.arange(3.0)))
    # hand value: p = [1, 2, 3], y = [1, 3, 2]: deviations [-1, 0, 1] and [-1, 1, 0] -> r = 1 / sqrt(2 * 2) = 0.5
    assert pearson(np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0])) == approx(0.5)


def test_never_predicted_class_gives_zero_f1_share_silently() -> None:
    # pred all negative, truth [1, 1, 0]: class 1 F1 = 0, class 0: P 1/3, R 1 -> F1 1/2; weighted 1/3 * 1/2 = 1/6.
    assert sentiment_metrics([-1.0, -1.0, -1.0], [1.0, 2.0, -1.0])["f1_has0"] == approx(1 / 6)


def _mmsa_reference(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """MMSA's __eval_mosei_regression transcribed independently (loops and sklearn instead of this module's helpers)."""
    non_zeros = np.array([i for i, e in enumerate(y) if e != 0])
    return {
        "acc2_has0": accuracy_score(y >= 0, p >= 0),
        "f1_has0": f1_score(y >= 0, p >= 0, average="weighted"),
        "acc2_non0": accuracy_score(y[non_zeros] > 0, p[non_zeros] > 0),
        "f1_non0": f1_score(y[non_zeros] > 0, p[non_zeros] > 0, average="weighted"),
        "acc5": float(np.sum(np.round(np.clip(p, -2, 2)) == np.round(np.clip(y, -2, 2))) / len(y)),
        "acc7": float(np.sum(np.round(np.clip(p, -3, 3)) == np.round(np.clip(y, -3, 3))) / len(y)),
        "mae": float(np.mean(np.absolute(p - y))),
        "corr": float(np.corrcoef(p, y)[0][1]),
    }


@pytest.mark.parametrize("seed", range(5))
def test_sentiment_matches_reference_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # labels on the MOSI grid (multiples of 1/6 incl. .5 and 0) plus predictions that also hit .5 and 0 exactly
    y = rng.integers(-18, 19, 300) / 6
    p = np.where(rng.random(300) < 0.2, rng.integers(-8, 9, 300) / 2, rng.uniform(-3.5, 3.5, 300))
    assert (y == 0).any() and (np.abs(y) % 1 == 0.5).any()
    got = sentiment_metrics(p, y)
    want = _mmsa_reference(p, y)
    assert list(got) == list(want)
    for key in want:
        assert got[key] == approx(want[key], rel=1e-12), key


def test_torch_and_column_inputs_equal_numpy() -> None:
    # half-precision tensors are upcast to float32 (numpy has no bfloat16) instead of failing
    half = torch.tensor([0.5, -1.0, 2.0], dtype=torch.bfloat16)
    assert sentiment_metrics(half, half.half())["acc7"] == 1.0
    rng = np.random.default_rng(1)
    y = rng.uniform(-3, 3, 40)
    p = rng.uniform(-3, 3, 40)
    want = sentiment_metrics(p, y)
    assert sentiment_metrics(torch.tensor(p, requires_grad=True)[:, None], torch.tensor(y)[:, None]) == want
    assert sentiment_metrics(list(p), list(y)) == want


@pytest.mark.parametrize(
    ("pred", "label", "message"),
    [
        ([1.0, 2.0], [1.0, 2.0, 3.0], "same number of samples; got 2 and 3"),
        (np.zeros((3, 2)), np.zeros(3), r"pred must have shape \(N,\) or \(N, 1\); got shape \(3, 2\)"),
        (
            [1.0, float("nan"), 2.0],
            [1.0, 2.0, 3.0],
            r"pred must be finite; got 1 NaN/inf value\(s\) out of 3 \(first at index \(1,\)\)",
        ),
        ([1.0, 2.0], [1.0, float("inf")], r"label must be finite; got 1 NaN/inf"),
        ([], [], "at least one sample; got 0"),
        (["a"], ["b"], "pred must be numeric"),
    ],
)
def test_sentiment_input_validation(pred: object, label: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sentiment_metrics(pred, label)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------------------------
# SIMS (spec §0.3)


@pytest.mark.parametrize(
    ("key", "label", "same_bin", "other_bin"),
    [
        ("acc2", 0.0, -0.5, 0.05),  # exactly 0 is negative: [-1, 0]
        ("acc2", -1.0, -0.2, 0.2),  # the lowest edge -1.01 keeps -1 in the first bin
        ("acc3", -0.1, -0.5, -0.05),  # -0.1 -> [-1, -0.1], the lower bin
        ("acc3", 0.1, 0.0, 0.15),  # 0.1 -> (-0.1, 0.1], the middle bin
        ("acc5", -0.7, -0.9, -0.5),  # -0.7 -> [-1, -0.7]
        ("acc5", -0.1, -0.4, 0.0),  # -0.1 -> (-0.7, -0.1]
        ("acc5", 0.1, 0.0, 0.3),  # 0.1 -> (-0.1, 0.1]
        ("acc5", 0.7, 0.4, 0.8),  # 0.7 -> (0.1, 0.7], middle-high
        ("acc5", -1.5, -0.8, -0.6),  # clipped to -1 -> [-1, -0.7]
        ("acc5", 1.5, 0.8, 0.6),  # clipped to 1 -> (0.7, 1]
    ],
)
def test_sims_bin_edges(key: str, label: float, same_bin: float, other_bin: float) -> None:
    assert sims_metrics([same_bin], [label])[key] == 1.0
    assert sims_metrics([other_bin], [label])[key] == 0.0


def test_sims_bins_compare_in_the_inputs_float32_precision() -> None:
    # MMSA bins float32 tensors against Python floats, which numpy compares in float32: float32(0.1) is then the edge
    # 0.1 itself -> middle bin. Upcast to float64 it would be 0.10000000149 > 0.1 -> bin (0.1, 0.7] and miss.
    y = torch.tensor([0.1, 0.7, -0.1], dtype=torch.float32)  # acc5 bins 2, 3, 1
    p = np.array([0.0, 0.5, -0.3])  # acc5 bins 2, 3, 1
    assert sims_metrics(p, y)["acc5"] == 1.0


def test_sims_mae_and_corr_use_clipped_values() -> None:
    y = [1.0, -1.0, 0.5]
    p = [1.8, -1.4, 0.3]
    m = sims_metrics(p, y)
    # clipped p = [1, -1, 0.3]: MAE = (0 + 0 + 0.2) / 3 (unclipped would be (0.8 + 0.4 + 0.2) / 3).
    assert m["mae"] == approx(0.2 / 3)
    assert m["corr"] == approx(np.corrcoef([1.0, -1.0, 0.3], y)[0, 1], rel=1e-12)
    assert m["corr"] != approx(np.corrcoef(p, y)[0, 1], rel=1e-6)


def test_sims_f1_by_hand() -> None:
    # truth bins [1, 1, 1, 1, 0], pred bins [1, 1, 0, 0, 0] (0.0 is negative): the same counts as the MOSI F1 test,
    # so F1 = 19/30 truth first, 17/30 pred first, and acc2 = 3/5.
    y = [0.2, 0.4, 0.6, 0.8, -0.2]
    p = [0.5, 0.5, -0.5, 0.0, -0.5]
    assert sims_metrics(p, y)["f1"] == approx(19 / 30)
    assert sims_metrics(p, y, f1_arg_order="pred_first")["f1"] == approx(17 / 30)
    assert sims_metrics(p, y)["acc2"] == approx(3 / 5)
    assert math.isnan(sims_metrics([0.3, 0.3], [0.2, 0.4])["corr"])


def _mmsa_sims_reference(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """MMSA's __eval_sims_regression transcribed independently (explicit edges and masks)."""
    p, y = np.clip(p, -1.0, 1.0), np.clip(y, -1.0, 1.0)

    def bins(x: np.ndarray, edges: list[float]) -> np.ndarray:
        out = x.copy()
        for i in range(len(edges) - 1):
            out[np.logical_and(x > edges[i], x <= edges[i + 1])] = i
        return out

    ms2, ms3, ms5 = [-1.01, 0.0, 1.01], [-1.01, -0.1, 0.1, 1.01], [-1.01, -0.7, -0.1, 0.1, 0.7, 1.01]
    return {
        "acc2": float(np.mean(bins(p, ms2) == bins(y, ms2))),
        "acc3": float(np.mean(bins(p, ms3) == bins(y, ms3))),
        "acc5": float(np.mean(bins(p, ms5) == bins(y, ms5))),
        "f1": f1_score(bins(y, ms2), bins(p, ms2), average="weighted"),
        "mae": float(np.mean(np.absolute(p - y))),
        "corr": float(np.corrcoef(p, y)[0][1]),
    }


@pytest.mark.parametrize("seed", range(5))
def test_sims_matches_reference_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(-5, 6, 200) / 5  # SIMS labels are multiples of 0.2 in [-1, 1]
    edges = np.array([-1.0, -0.7, -0.1, 0.0, 0.1, 0.7, 1.0])
    p = np.where(rng.random(200) < 0.3, rng.choice(edges, 200), rng.uniform(-1.3, 1.3, 200))
    got = sims_metrics(p, y)
    want = _mmsa_sims_reference(p, y)
    assert list(got) == list(want)
    for key in want:
        assert got[key] == approx(want[key], rel=1e-12), key


# ----------------------------------------------------------------------------------------------------------------------
# IEMOCAP (spec §0.4) and generic classification


def _logits_for(classes: list[list[int]]) -> np.ndarray:
    """(N, K, 2) logits whose argmax is `classes`, deliberately not probabilities."""
    table = {0: [2.0, -1.0], 1: [0.1, 0.9]}
    return np.array([[table[c] for c in row] for row in classes])


def test_emotion_metrics_by_hand() -> None:
    truth = np.array([[1, 1], [0, 1], [0, 0], [0, 0]])  # columns: Happy, Sad
    pred = [[1, 0], [1, 1], [0, 0], [0, 1]]
    m = emotion_metrics(_logits_for(pred), truth, ("Happy", "Sad"))
    # Happy: truth [1, 0, 0, 0], pred [1, 1, 0, 0] -> acc 3/4
    #   class 1: TP 1, FP 1, FN 0 -> P 1/2, R 1 -> F1 2/3; class 0: TP 2, FP 0, FN 1 -> P 1, R 2/3 -> F1 4/5
    #   weighted by truth supports (1, 3): (2/3 + 3 * 4/5) / 4 = 23/30
    assert m["acc_happy"] == 0.75
    assert m["f1_happy"] == approx(23 / 30)
    # Sad: truth [1, 1, 0, 0], pred [0, 1, 0, 1] -> acc 1/2; both classes TP 1, FP 1, FN 1 -> F1 1/2 each -> 1/2
    assert m["acc_sad"] == 0.5
    assert m["f1_sad"] == approx(0.5)
    assert m["acc"] == approx((0.75 + 0.5) / 2)
    assert m["f1"] == approx((23 / 30 + 0.5) / 2)
    assert list(m) == ["acc_happy", "f1_happy", "acc_sad", "f1_sad", "acc", "f1"]


def test_emotion_argmax_ties_go_to_the_lowest_class() -> None:
    m = emotion_metrics(np.array([[[0.5, 0.5]], [[0.5, 0.5]]]), np.array([[0], [1]]), ("angry",))
    assert m["acc_angry"] == 0.5


@pytest.mark.parametrize("seed", range(3))
def test_emotion_and_classification_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(120, 4, 3))
    truth = rng.integers(0, 3, (120, 4))
    names = ("neutral", "happy", "sad", "angry")
    m = emotion_metrics(torch.tensor(logits), torch.tensor(truth), names)
    pred = logits.argmax(-1)
    for k, name in enumerate(names):
        assert m[f"acc_{name}"] == approx(accuracy_score(truth[:, k], pred[:, k]), rel=1e-12)
        assert m[f"f1_{name}"] == approx(f1_score(truth[:, k], pred[:, k], average="weighted"), rel=1e-12)
    c = classification_metrics(logits, truth)
    assert c["acc"] == approx(accuracy_score(truth.ravel(), pred.ravel()), rel=1e-12)
    assert c["f1"] == approx(f1_score(truth.ravel(), pred.ravel(), average="weighted"), rel=1e-12)
    assert classification_metrics(logits[:, 0], truth[:, 0]) == classification_metrics(logits[:, :1], truth[:, :1])


@pytest.mark.parametrize(
    ("logits", "label", "targets", "message"),
    [
        (np.zeros((4, 2, 2)), np.zeros((4, 2, 2)), ("a", "b"), "looks one-hot"),
        (np.zeros((4, 2)), np.zeros((4, 2)), ("a", "b"), r"logits must have shape \(N, K, C\) with C >= 2"),
        (np.zeros((4, 2, 2)), np.full((4, 2), 2), ("a", "b"), r"class indices in \[0, 2\); got values in \[2, 2\]"),
        (np.zeros((4, 2, 2)), np.full((4, 2), 0.5), ("a", "b"), "integer class indices"),
        (np.zeros((4, 2, 2)), np.zeros((3, 2)), ("a", "b"), "same number of samples; got 4 and 3"),
        (np.zeros((4, 2, 2)), np.zeros((4, 3)), ("a", "b"), "logits have 2 target"),
        (np.zeros((4, 2, 2)), np.zeros((4, 2)), ("a",), "got 1 target names"),
        (np.zeros((4, 2, 2)), np.zeros((4, 2)), ("Sad", "sad"), "unique"),
        (np.zeros((4, 2, 2)), np.zeros((4, 2)), "ab", "not the string"),
        (np.full((4, 2, 2), np.nan), np.zeros((4, 2)), ("a", "b"), "logits must be finite; got 16 NaN"),
    ],
)
def test_emotion_input_validation(
    logits: np.ndarray, label: np.ndarray, targets: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        emotion_metrics(logits, label, targets)


# ----------------------------------------------------------------------------------------------------------------------
# Traits (POM) and generic regression


def test_traits_metrics_by_hand() -> None:
    y = np.array([[1.0, 7.4], [4.0, 2.5], [7.0, 5.0]])
    p = np.array([[2.0, 8.0], [4.0, 2.0], [6.0, 0.0]])
    m = traits_metrics(p, y, ("confident", "Passionate"))
    # confident: |errors| [1, 0, 1] -> MAE 2/3; p = 4 + 2/3 (y - 4) is linear in y -> r = 1;
    #   acc7: round(p) [2, 4, 6] vs round(y) [1, 4, 7] -> 1/3
    assert m["mae_confident"] == approx(2 / 3)
    assert m["corr_confident"] == approx(1.0)
    assert m["acc7_confident"] == approx(1 / 3)
    # passionate: |errors| [0.6, 0.5, 5] -> MAE 6.1/3 (unclipped);
    #   acc7: clip p to [1, 7] -> [7, 2, 1]; round(y) = [7, 2, 5] (2.5 -> 2, half to even) -> 2/3
    #   (without clipping 8 != 7 -> 1/3; with half-up rounding 2.5 -> 3 -> 1/3)
    assert m["mae_passionate"] == approx(6.1 / 3)
    assert m["acc7_passionate"] == approx(2 / 3)
    # r by the definition: sum(dp * dy) / sqrt(sum(dp^2) * sum(dy^2))
    dp, dy = p[:, 1] - p[:, 1].mean(), y[:, 1] - y[:, 1].mean()
    r = float(np.sum(dp * dy) / np.sqrt(np.sum(dp**2) * np.sum(dy**2)))
    assert m["corr_passionate"] == approx(r)
    assert m["mae"] == approx((2 / 3 + 6.1 / 3) / 2)
    assert m["corr"] == approx((1.0 + r) / 2)
    assert m["acc7"] == approx((1 / 3 + 2 / 3) / 2)


def test_traits_corr_mean_is_nan_when_one_target_is_undefined() -> None:
    m = traits_metrics([[1.0, 3.0], [2.0, 3.0], [3.0, 3.0]], [[1.0, 1.0], [2.0, 2.0], [3.0, 4.0]], ("a", "b"))
    assert m["corr_a"] == approx(1.0)
    assert math.isnan(m["corr_b"]) and math.isnan(m["corr"])


def test_regression_metrics() -> None:
    y = np.array([[1.0, 0.0], [2.0, 1.0], [3.0, 5.0]])
    p = np.array([[1.5, 0.0], [2.0, 2.0], [2.0, 3.0]])
    m = regression_metrics(p, y)
    # |errors| = [0.5, 0, 0, 1, 1, 2] -> MAE 4.5 / 6 = 0.75
    assert m["mae"] == approx(0.75)
    assert m["corr"] == approx((np.corrcoef(p[:, 0], y[:, 0])[0, 1] + np.corrcoef(p[:, 1], y[:, 1])[0, 1]) / 2)
    assert regression_metrics(p[:, 0], y[:, 0]) == regression_metrics(p[:, :1], y[:, :1])
    with pytest.raises(ValueError, match=r"same shape \(N, K\); got \(3, 2\) and \(3, 1\)"):
        regression_metrics(p, y[:, :1])


# ----------------------------------------------------------------------------------------------------------------------
# Direction, suites, tables, aggregation


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("mae", False),
        ("mae_confident", False),
        ("acc7", True),
        ("corr", True),
        ("f1_has0", True),
        ("acc2_non0", True),
        ("f1_happy", True),
        ("something_new", True),
    ],
)
def test_higher_is_better(key: str, expected: bool) -> None:
    assert higher_is_better(key) is expected
    assert MetricSuite.higher_is_better(key) is expected


def _spec(**kwargs: object) -> InputSpec:
    return InputSpec(dims={"text": 4}, lengths={"text": 1}, **kwargs)  # type: ignore[arg-type]


def test_metrics_for_mosi_and_sims_flatten_one_target() -> None:
    rng = np.random.default_rng(3)
    p, y = rng.uniform(-3, 3, (30, 1)), rng.uniform(-3, 3, (30, 1))
    mosi = metrics_for(_spec(metric_family="mosi"))
    assert (mosi.name, mosi.default_monitor) == ("mosi", "mae")
    assert mosi.keys == ("acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "acc5", "acc7", "mae", "corr")
    assert mosi.compute(torch.tensor(p), torch.tensor(y)) == sentiment_metrics(p[:, 0], y[:, 0])
    sims = metrics_for(_spec(metric_family="sims"))
    assert (sims.default_monitor, sims.keys) == ("mae", ("acc2", "acc3", "acc5", "f1", "mae", "corr"))
    assert sims.compute(p, y) == sims_metrics(p[:, 0], y[:, 0])
    with pytest.raises(ValueError, match=r"mosi prediction must have shape \(N, 1\); got shape \(30, 2\)"):
        mosi.compute(np.hstack([p, p]), y)
    with pytest.raises(ValueError, match="scores one sentiment target; the spec has 2"):
        metrics_for(_spec(metric_family="mosi", targets=("a", "b")))


def test_metrics_for_traits_and_regression() -> None:
    rng = np.random.default_rng(4)
    p, y = rng.uniform(1, 7, (20, 3)), rng.uniform(1, 7, (20, 3))
    names = ("a", "b", "c")
    traits = metrics_for(_spec(metric_family="traits", targets=names))
    assert (traits.default_monitor, traits.keys) == ("mae", ("mae", "corr", "acc7"))
    assert traits.compute(p, y) == traits_metrics(p, y, names)
    reg = metrics_for(_spec(metric_family="regression", targets=names))
    assert (reg.default_monitor, reg.keys) == ("mae", ("mae", "corr"))
    assert reg.compute(p, y) == regression_metrics(p, y)
    with pytest.raises(ValueError, match=r"traits label must have shape \(N, 3\); got shape \(20, 2\)"):
        traits.compute(p, y[:, :2])


def test_metrics_for_iemocap_and_classification() -> None:
    rng = np.random.default_rng(5)
    names = ("Neutral", "Happy", "Sad", "Angry")
    z, y = rng.normal(size=(25, 4, 2)), rng.integers(0, 2, (25, 4))
    iemocap = metrics_for(_spec(task="classification", num_classes=2, targets=names, metric_family="iemocap"))
    assert iemocap.default_monitor == "f1"
    assert iemocap.keys == (
        "acc_neutral",
        "f1_neutral",
        "acc_happy",
        "f1_happy",
        "acc_sad",
        "f1_sad",
        "acc_angry",
        "f1_angry",
        "acc",
        "f1",
    )
    assert iemocap.compute(z, y) == emotion_metrics(z, y, names)
    clf = metrics_for(_spec(task="classification", num_classes=2, targets=names, metric_family="classification"))
    assert (clf.default_monitor, clf.keys) == ("f1", ("acc", "f1", "f1_macro"))
    assert clf.compute(z, y) == classification_metrics(z, y)
    with pytest.raises(ValueError, match=r"iemocap prediction must have shape \(N, 4, 2\); got shape \(25, 8\)"):
        iemocap.compute(z.reshape(25, 8), y)


def test_metrics_for_rejects_inconsistent_specs() -> None:
    with pytest.raises(ValueError, match="needs task 'classification' with num_classes >= 2"):
        metrics_for(_spec(metric_family="iemocap", targets=("happy",)))
    with pytest.raises(ValueError, match="needs task 'regression'"):
        metrics_for(_spec(task="classification", num_classes=2, metric_family="mosi"))
    with pytest.raises(ValueError, match="unknown metric family 'pom'"):
        metrics_for(_spec(metric_family="pom"))


def test_format_table() -> None:
    rows = {
        "dmd": {"acc7": 0.4567891, "mae": (0.71234, 0.01236), "corr": float("nan")},
        "a|b": {"acc7": 1.0},
    }
    assert format_table(rows, ["acc7", "mae", "corr"], row_header="model") == (
        "| model | acc7 | mae | corr |\n"
        "| --- | ---: | ---: | ---: |\n"
        "| dmd | 0.4568 | 0.7123 ± 0.0124 | nan |\n"
        "| a\\|b | 1.0000 | — | — |"
    )


def test_aggregate_mean_and_population_std_ignoring_nan() -> None:
    runs = [
        {"mae": 1.0, "acc": 0.5, "corr": float("nan")},
        {"mae": 3.0, "acc": float("nan"), "corr": float("nan")},
        {"mae": 2.0, "acc": 0.7, "corr": float("nan")},
    ]
    out = aggregate(runs)
    # mae: mean 2, ddof=0 std sqrt((1 + 1 + 0) / 3) = sqrt(2/3) (ddof=1 would give 1)
    assert out["mae"] == approx((2.0, math.sqrt(2 / 3)))
    # acc: the NaN run is ignored -> mean 0.6, std sqrt((0.01 + 0.01) / 2) = 0.1
    assert out["acc"] == approx((0.6, 0.1))
    assert all(math.isnan(v) for v in out["corr"])
    assert list(out) == ["mae", "acc", "corr"]
    with pytest.raises(ValueError, match="result 1 has keys"):
        aggregate([{"mae": 1.0}, {"acc": 1.0}])
    with pytest.raises(ValueError, match="at least one result"):
        aggregate([])
