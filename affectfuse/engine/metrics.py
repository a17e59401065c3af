"""Paper metrics for multimodal sentiment and emotion analysis (spec §0.2-§0.4), computed once and exactly.

Every function is pure: it takes predictions and labels (numpy arrays, torch tensors or nested sequences), computes
in full precision and returns `{key: float}` with stable lower-case keys. Nothing is rounded except where a metric's
definition rounds (Acc-7/Acc-5 use `np.round`, i.e. round half to even, as MMSA does); `format_table` rounds only
for printing.

Undefined values are NaN, never a fake number and never a warning:
- Pearson r of a constant vector (zero variance) is NaN.
- The MOSI "non-0" metrics are NaN when every label is exactly 0 (no sample is left).

Families (`InputSpec.metric_family`) and their default monitors:

| family         | function                 | prediction | default monitor |
| -------------- | ------------------------ | ---------- | --------------- |
| mosi           | `sentiment_metrics`      | (N, 1)     | mae             |
| sims           | `sims_metrics`           | (N, 1)     | mae             |
| traits         | `traits_metrics`         | (N, K)     | mae             |
| regression     | `regression_metrics`     | (N, K)     | mae             |
| rating         | `rating_metrics`         | (N, 1)     | mae             |
| iemocap        | `emotion_metrics`        | (N, K, C)  | f1              |
| classification | `classification_metrics` | (N, K, C)  | f1              |
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeAlias

import numpy as np

from ..config import InputSpec

if TYPE_CHECKING:
    import numpy.typing as npt
    import torch

ArrayInput: TypeAlias = "npt.ArrayLike | torch.Tensor"
"""Anything the metric functions accept: numpy arrays, torch tensors (any device) or nested sequences."""

F1ArgOrder = Literal["truth_first", "pred_first"]

_SIMS_EDGES_2 = (0.0,)
_SIMS_EDGES_3 = (-0.1, 0.1)
_SIMS_EDGES_5 = (-0.7, -0.1, 0.1, 0.7)


# ----------------------------------------------------------------------------------------------------------------------
# Input handling


def _as_float_array(x: ArrayInput, name: str) -> np.ndarray:
    """Converts to a finite floating numpy array, keeping float32/float64 as given (see `_bin` for why)."""
    if hasattr(x, "detach"):  # a torch tensor, recognised without importing torch (this module stays light)
        x = x.detach().cpu()
        if x.is_floating_point() and x.element_size() < 4:
            x = x.float()  # numpy has no bfloat16; float32 holds float16 and bfloat16 exactly
        x = x.numpy()
    arr = np.asarray(x)
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    elif arr.dtype.kind in "biu":
        arr = arr.astype(np.float64)
    elif arr.dtype.kind != "f":
        raise ValueError(f"{name} must be numeric; got dtype {arr.dtype}")
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} must be finite; got {int(bad.sum())} NaN/inf value(s) out of {arr.size} (first at index {first})"
        )
    return arr


def _as_class_indices(x: ArrayInput, name: str, num_classes: int) -> np.ndarray:
    """Converts labels to int64 class indices in [0, num_classes), accepting integer-valued floats."""
    arr = _as_float_array(x, name)
    if not np.all(arr == np.round(arr)):
        example = arr[arr != np.round(arr)][0]
        raise ValueError(f"{name} must hold integer class indices; got non-integer values such as {example}")
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(
            f"{name} must hold class indices in [0, {num_classes}); got values in [{arr.min():g}, {arr.max():g}]"
        )
    return arr.astype(np.int64)


def _as_vector(x: ArrayInput, name: str) -> np.ndarray:
    """A 1-D float array; (N, 1) is accepted and flattened, anything else is an error."""
    arr = _as_float_array(x, name)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must have shape (N,) or (N, 1); got shape {arr.shape}")
    return arr


def _check_pair(pred: np.ndarray, label: np.ndarray) -> None:
    if pred.shape[0] != label.shape[0]:
        raise ValueError(
            f"pred and label must have the same number of samples; got {pred.shape[0]} and {label.shape[0]}"
        )
    if pred.shape[0] == 0:
        raise ValueError("metrics need at least one sample; got 0")


def _matrix_pair(pred: ArrayInput, label: ArrayInput) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) prediction and label of equal shape; 1-D inputs are one target, (N,) -> (N, 1)."""
    p = _as_float_array(pred, "pred")
    y = _as_float_array(label, "label")
    p = p[:, None] if p.ndim == 1 else p
    y = y[:, None] if y.ndim == 1 else y
    if p.ndim != 2 or y.ndim != 2:
        raise ValueError(f"pred and label must have shape (N, K) or (N,); got {p.shape} and {y.shape}")
    _check_pair(p, y)
    if p.shape != y.shape:
        raise ValueError(f"pred and label must have the same shape (N, K); got {p.shape} and {y.shape}")
    return p, y


def _target_keys(targets: Sequence[str], count: int) -> list[str]:
    """Lower-cased target names used inside keys; their number must match the data's K and they must be unique."""
    if isinstance(targets, str):
        raise ValueError(f"targets must be a sequence of names, not the string {targets!r}")
    names = [t.lower() for t in targets]
    if len(names) != count:
        raise ValueError(f"got {len(names)} target names {list(targets)} for {count} target column(s)")
    for name in names:
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"target names must be non-empty and contain no whitespace; got {name!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"target names must be unique (case-insensitive); got {list(targets)}")
    return names


# ----------------------------------------------------------------------------------------------------------------------
# Building blocks


def pearson(pred: np.ndarray, label: np.ndarray) -> float:
    """Pearson r = cov(p, y) / (std(p) std(y)) via `np.corrcoef`, as MMSA computes Corr.

    Returns NaN when either vector is constant (r is undefined there); checked up front so that numpy emits no
    divide warning and a broken model never reports a plausible-looking 0.
    """
    if np.ptp(pred) == 0 or np.ptp(label) == 0:
        return math.nan
    return float(np.corrcoef(pred.astype(np.float64), label.astype(np.float64))[0, 1])


def weighted_f1(truth: np.ndarray, pred: np.ndarray, *, f1_arg_order: F1ArgOrder = "truth_first") -> float:
    """Support-weighted F1: sum_c (n_c / n) * F1_c, with n_c the count of class c in the FIRST argument to sklearn.

    F1_c itself is symmetric in (truth, pred); only the weights n_c depend on the order. `truth_first` is
    `f1_score(truth, pred, average="weighted")` (MMSA, EMT-DLFR, DMD, sklearn's contract); `pred_first` reproduces
    MulT/SFT, which pass the arguments swapped (MulT issue #33, MMSA #17), for comparisons with their numbers.
    A class that is never predicted has F1_c = 0 (sklearn's value; `zero_division=0` only silences its warning).
    """
    if f1_arg_order == "truth_first":
        first, second = truth, pred
    elif f1_arg_order == "pred_first":
        first, second = pred, truth
    else:
        raise ValueError(f"f1_arg_order must be 'truth_first' or 'pred_first'; got {f1_arg_order!r}")
    from sklearn.metrics import f1_score  # imported on first use: sklearn takes about a second to import

    return float(f1_score(first, second, average="weighted", zero_division=0))


def _accuracy(truth: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(truth == pred))


def _rounded_accuracy(pred: np.ndarray, label: np.ndarray, low: float, high: float) -> float:
    """Acc of np.round(clip(p, low, high)) == np.round(clip(y, low, high)); np.round rounds half to even."""
    return _accuracy(np.round(np.clip(label, low, high)), np.round(np.clip(pred, low, high)))


def _bin(x: np.ndarray, inner_edges: Sequence[float]) -> np.ndarray:
    """Class index of left-open, right-closed bins: class i holds edges[i-1] < x <= edges[i].

    `searchsorted(side="left")` counts the edges strictly below x, which is exactly that rule. MMSA's outer edges
    (-1.01, 1.01) are omitted because the values are already clipped to [-1, 1]. The edges are cast to x's dtype
    because MMSA compares float32 arrays with Python floats, which numpy does in float32: a float32 0.1 is then
    equal to the edge 0.1 (middle bin), whereas in float64 it would be 0.10000000149 > 0.1 (upper bin).
    """
    return np.searchsorted(np.asarray(inner_edges, dtype=x.dtype), x, side="left")


# ----------------------------------------------------------------------------------------------------------------------
# Metric families


def sentiment_metrics(
    pred: ArrayInput, label: ArrayInput, *, f1_arg_order: F1ArgOrder = "truth_first"
) -> dict[str, float]:
    """CMU-MOSI / MOSEI regression metrics exactly as MMSA, EMT-DLFR and DMD compute them (spec §0.2).

    With p the predictions and y the labels in [-3, 3], both of shape (N,) or (N, 1):

    - `mae`  = mean_i |p_i - y_i| on the unclipped values.
    - `corr` = Pearson r(p, y) (`np.corrcoef`); NaN if p or y is constant.
    - `acc7` = mean_i [round(clip(p_i, -3, 3)) == round(clip(y_i, -3, 3))], `acc5` the same with [-2, 2]; `round` is
      `np.round`, half to even (2.5 -> 2, -0.5 -> -0, 1.5 -> 2), which matters because averaged rater labels sit
      on .5.
    - `acc2_has0`, `f1_has0`: over all samples, class = (value >= 0); a 0 label is positive ("negative vs
      non-negative", MMSA `Has0_acc_2`, `Has0_F1_score`).
    - `acc2_non0`, `f1_non0`: samples whose label is exactly 0 are dropped, then class = (value > 0) (MMSA
      `Non0_acc_2`, `Non0_F1_score`; the only Acc-2 that DMD and MulT print). NaN when every label is 0.
    - F1 is the support-weighted F1 of the binarised values, see `weighted_f1` for `f1_arg_order`.

    Returns:
        The keys `acc2_has0`, `f1_has0`, `acc2_non0`, `f1_non0`, `acc5`, `acc7`, `mae`, `corr`.
    """
    p = _as_vector(pred, "pred")
    y = _as_vector(label, "label")
    _check_pair(p, y)
    p64, y64 = p.astype(np.float64), y.astype(np.float64)

    has0_truth, has0_pred = y64 >= 0, p64 >= 0
    keep = y64 != 0
    if keep.any():
        non0_truth, non0_pred = y64[keep] > 0, p64[keep] > 0
        acc2_non0 = _accuracy(non0_truth, non0_pred)
        f1_non0 = weighted_f1(non0_truth, non0_pred, f1_arg_order=f1_arg_order)
    else:
        acc2_non0 = f1_non0 = math.nan
    return {
        "acc2_has0": _accuracy(has0_truth, has0_pred),
        "f1_has0": weighted_f1(has0_truth, has0_pred, f1_arg_order=f1_arg_order),
        "acc2_non0": acc2_non0,
        "f1_non0": f1_non0,
        "acc5": _rounded_accuracy(p64, y64, -2.0, 2.0),
        "acc7": _rounded_accuracy(p64, y64, -3.0, 3.0),
        "mae": float(np.mean(np.abs(p64 - y64))),
        "corr": pearson(p64, y64),
    }


def sims_metrics(pred: ArrayInput, label: ArrayInput, *, f1_arg_order: F1ArgOrder = "truth_first") -> dict[str, float]:
    """CH-SIMS metrics as EMT-DLFR and MMSA compute them (spec §0.3).

    p and y (shape (N,) or (N, 1)) are first clipped to [-1, 1]; everything below uses the clipped values, so
    unlike MOSI the MAE and Corr are of clipped values. Bins are left-open, right-closed (lowest edge -1.01):

    - `acc2`: [-1, 0] vs (0, 1]; 0 is negative, the opposite of MOSI's has-0 rule.
    - `acc3`: [-1, -0.1], (-0.1, 0.1], (0.1, 1].
    - `acc5`: [-1, -0.7], (-0.7, -0.1], (-0.1, 0.1], (0.1, 0.7], (0.7, 1].
    - `f1`: support-weighted F1 of the 2-class bins (truth first by default, see `weighted_f1`).
    - `mae` = mean_i |clip(p_i) - clip(y_i)|, `corr` = Pearson r(clip(p), clip(y)) (NaN if either is constant).

    Bin membership is decided in the input's own float precision (see `_bin`).

    Returns:
        The keys `acc2`, `acc3`, `acc5`, `f1`, `mae`, `corr`.
    """
    p = np.clip(_as_vector(pred, "pred"), -1.0, 1.0)
    y = np.clip(_as_vector(label, "label"), -1.0, 1.0)
    _check_pair(p, y)
    truth2, pred2 = _bin(y, _SIMS_EDGES_2), _bin(p, _SIMS_EDGES_2)
    p64, y64 = p.astype(np.float64), y.astype(np.float64)
    return {
        "acc2": _accuracy(truth2, pred2),
        "acc3": _accuracy(_bin(y, _SIMS_EDGES_3), _bin(p, _SIMS_EDGES_3)),
        "acc5": _accuracy(_bin(y, _SIMS_EDGES_5), _bin(p, _SIMS_EDGES_5)),
        "f1": weighted_f1(truth2, pred2, f1_arg_order=f1_arg_order),
        "mae": float(np.mean(np.abs(p64 - y64))),
        "corr": pearson(p64, y64),
    }


def _logits_and_labels(logits: ArrayInput, label: ArrayInput) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, C) logits and (N, K) int64 labels, validated against each other."""
    z = _as_float_array(logits, "logits")
    if z.ndim != 3 or z.shape[2] < 2:
        raise ValueError(f"logits must have shape (N, K, C) with C >= 2 classes; got shape {z.shape}")
    raw = _as_float_array(label, "label")
    if raw.ndim == 3:
        raise ValueError(
            f"label must hold class indices of shape (N, K); got shape {raw.shape}, which looks one-hot "
            "(convert it with argmax over the last axis)"
        )
    if raw.ndim != 2:
        raise ValueError(f"label must have shape (N, K); got shape {raw.shape}")
    _check_pair(z, raw)
    if z.shape[1] != raw.shape[1]:
        raise ValueError(
            f"logits have {z.shape[1]} target(s) (shape {z.shape}), label has {raw.shape[1]} (shape {raw.shape})"
        )
    return z, _as_class_indices(raw, "label", z.shape[2])


def emotion_metrics(logits: ArrayInput, label: ArrayInput, targets: Sequence[str]) -> dict[str, float]:
    """IEMOCAP metrics as MulT and LMF compute them (spec §0.4): one classification task per emotion.

    With logits z of shape (N, K, C) (MulT: K = 4 emotions, C = 2) and labels y of shape (N, K) holding class
    indices, for each emotion k with prediction yhat_k = argmax_c z[:, k, c] (ties go to the lowest class, as
    `np.argmax`):

    - `acc_<k>` = mean_i [yhat_ik == y_ik]
    - `f1_<k>`  = support-weighted F1 of (y_k, yhat_k), truth first (MulT's IEMOCAP code is truth first).

    plus `acc` and `f1`, the unweighted means over the K emotions. `<k>` is the lower-cased target name.

    Args:
        logits: (N, K, C) scores; only their argmax is used, so logits and probabilities give the same result.
        label: (N, K) class indices in [0, C).
        targets: the K emotion names, in column order.
    """
    z, y = _logits_and_labels(logits, label)
    names = _target_keys(targets, z.shape[1])
    yhat = np.argmax(z, axis=2)
    out: dict[str, float] = {}
    for k, name in enumerate(names):
        out[f"acc_{name}"] = _accuracy(y[:, k], yhat[:, k])
        out[f"f1_{name}"] = weighted_f1(y[:, k], yhat[:, k])
    out["acc"] = float(np.mean([out[f"acc_{n}"] for n in names]))
    out["f1"] = float(np.mean([out[f"f1_{n}"] for n in names]))
    return out


def traits_metrics(pred: ArrayInput, label: ArrayInput, targets: Sequence[str]) -> dict[str, float]:
    """POM-style multi-target regression metrics (speaker traits scored 1..7).

    With p and y of shape (N, K), for each target k:

    - `mae_<k>`  = mean_i |p_ik - y_ik| (unclipped)
    - `corr_<k>` = Pearson r(p_k, y_k); NaN if either column is constant
    - `acc7_<k>` = mean_i [round(clip(p_ik, 1, 7)) == round(clip(y_ik, 1, 7))], `np.round` (half to even); the
      7-class accuracy on POM's 1..7 scale, the analogue of MOSI's Acc-7 on [-3, 3].

    plus `mae`, `corr` and `acc7`, the unweighted means over the K targets. `corr` is NaN if any target's r is
    NaN: the mean over all targets is then undefined, and averaging over a subset would silently change its meaning.
    `<k>` is the lower-cased target name.
    """
    p, y = _matrix_pair(pred, label)
    names = _target_keys(targets, p.shape[1])
    p64, y64 = p.astype(np.float64), y.astype(np.float64)
    out: dict[str, float] = {}
    for k, name in enumerate(names):
        out[f"mae_{name}"] = float(np.mean(np.abs(p64[:, k] - y64[:, k])))
        out[f"corr_{name}"] = pearson(p64[:, k], y64[:, k])
        out[f"acc7_{name}"] = _rounded_accuracy(p64[:, k], y64[:, k], 1.0, 7.0)
    for metric in ("mae", "corr", "acc7"):
        out[metric] = float(np.mean([out[f"{metric}_{n}"] for n in names]))
    return out


def regression_metrics(pred: ArrayInput, label: ArrayInput) -> dict[str, float]:
    """Generic regression metrics for (N,) or (N, K) scores.

    - `mae`  = mean over targets of mean_i |p_ik - y_ik| (= the mean over all N*K errors).
    - `corr` = mean over targets of Pearson r(p_k, y_k); NaN if any target's r is undefined (constant column).
    """
    p, y = _matrix_pair(pred, label)
    p64, y64 = p.astype(np.float64), y.astype(np.float64)
    return {
        "mae": float(np.mean(np.abs(p64 - y64))),
        "corr": float(np.mean([pearson(p64[:, k], y64[:, k]) for k in range(p.shape[1])])),
    }


def rating_metrics(
    pred: ArrayInput, label: ArrayInput, *, centre: float, scale: tuple[float, float] | None = None
) -> dict[str, float]:
    """One rated score (e.g. 1..5) around its neutral point `centre`: `acc2`, `f1` (weighted), `f1_macro` of label >
    centre vs prediction > centre, labels at the centre left out (MOSI's non-0 Acc-2 around 0; NaN if none is left);
    `acc<n>` on a whole-number `scale` of n <= 11 points (rounded, clipped, as Acc-7); `mae` (unclipped), `corr`."""
    p = _as_vector(pred, "pred").astype(np.float64)
    y = _as_vector(label, "label").astype(np.float64)
    _check_pair(p, y)
    keep, out = y != centre, {"acc2": math.nan, "f1": math.nan, "f1_macro": math.nan}
    if keep.any():
        from sklearn.metrics import f1_score

        truth, guess = y[keep] > centre, p[keep] > centre
        out.update(acc2=_accuracy(truth, guess), f1=weighted_f1(truth, guess),
                   f1_macro=float(f1_score(truth, guess, average="macro", labels=[False, True], zero_division=0)))
    if scale is not None and (key := rounded_accuracy_key(scale)) is not None:
        out[key] = _rounded_accuracy(p, y, *scale)
    out.update(mae=float(np.mean(np.abs(p - y))), corr=pearson(p, y))
    return out


def rounded_accuracy_key(scale: tuple[float, float] | None) -> str | None:
    """`acc<n>` for a whole-number scale lo..hi of n <= 11 points, else None."""
    if scale is None or any(v != round(v) for v in scale) or not 2 <= scale[1] - scale[0] + 1 <= 11:
        return None
    return f"acc{int(scale[1] - scale[0] + 1)}"


def classification_metrics(logits: ArrayInput, label: ArrayInput) -> dict[str, float]:
    """Generic classification metrics over all targets flattened into one pool of N*K decisions.

    Logits (N, C) with labels (N,), or (N, K, C) with (N, K). With yhat = argmax over the class axis:

    - `acc` = mean over all (i, k) of [yhat_ik == y_ik]
    - `f1`  = support-weighted F1 of (y, yhat) over all (i, k), truth first.
    - `f1_macro` = the unweighted mean over the C classes of F1_c (a majority-class answer scores <= 1/C).
    """
    z = _as_float_array(logits, "logits")
    y = _as_float_array(label, "label")
    if z.ndim == 2 and y.ndim == 1:
        z, y = z[:, None, :], y[:, None]
    z, yi = _logits_and_labels(z, y)
    yhat = np.argmax(z, axis=2).ravel()
    truth = yi.ravel()
    from sklearn.metrics import f1_score

    macro = f1_score(truth, yhat, average="macro", labels=np.arange(z.shape[2]), zero_division=0)
    return {"acc": _accuracy(truth, yhat), "f1": weighted_f1(truth, yhat), "f1_macro": float(macro)}


# ----------------------------------------------------------------------------------------------------------------------
# Direction, suites, reporting


def higher_is_better(key: str) -> bool:
    """Direction of a metric key: False for `mae` and every key starting with `mae` (errors), True otherwise.

    Every other key this module produces (accuracies, F1, correlations) is better when higher; an unknown key is
    assumed to be a score as well.
    """
    return not key.startswith("mae")


@dataclass(frozen=True)
class MetricSuite:
    """The metrics of one family, bound to an `InputSpec`'s shapes; build it with `metrics_for`.

    Attributes:
        name: the metric family (`InputSpec.metric_family`).
        keys: the headline keys in the order papers print them, for tables.
        default_monitor: the key early stopping and model selection watch when `TrainConfig.monitor` is `auto`.
        versus: the keys on which a model must beat the constant/majority predictor (`engine.baselines`).
    """

    name: str
    keys: tuple[str, ...]
    default_monitor: str
    _compute: Callable[[ArrayInput, ArrayInput], dict[str, float]] = field(repr=False)
    versus: tuple[str, ...] = ()

    def compute(self, prediction: ArrayInput, label: ArrayInput) -> dict[str, float]:
        """All metrics of the family: prediction (N, K) scores or (N, K, C) logits, label (N, K)."""
        return self._compute(prediction, label)

    def monitor(self, requested: str) -> str:
        """The key to select on: `auto` is the family's default; any other must be a headline key or a per-target
        variant of one (`mae_<target>`), checked against the first validation scores by `score`."""
        return self.default_monitor if requested == "auto" else requested

    @staticmethod
    def score(scores: dict[str, float], monitor: str) -> float:
        if monitor not in scores:
            raise ValueError(f"train.monitor {monitor!r} is not a metric of this corpus; choose 'auto' or one of "
                             f"{sorted(scores)}")
        return scores[monitor]

    @staticmethod
    def higher_is_better(key: str) -> bool:
        """See the module-level `higher_is_better`."""
        return higher_is_better(key)


_REGRESSION_FAMILIES = ("mosi", "sims", "traits", "regression", "rating")
_CLASSIFICATION_FAMILIES = ("iemocap", "classification")
_FAMILIES = _REGRESSION_FAMILIES + _CLASSIFICATION_FAMILIES


def metrics_for(spec: InputSpec) -> MetricSuite:
    """The `MetricSuite` of `spec.metric_family`, checking that predictions and labels have the spec's shapes.

    Regression families take (N, K) scores with K = `spec.num_targets` ((N,) accepted when K = 1); `mosi` and `sims`
    need K = 1 and flatten. Classification families take (N, K, C) logits with C = `spec.num_classes`. Labels are
    (N, K) in both cases.

    Headline keys (paper order): mosi as MMSA (has-0 then non-0 Acc-2/F1, Acc-5, Acc-7, MAE, Corr); sims as MMSA
    (Acc-2, Acc-3, Acc-5, F1, MAE, Corr); iemocap as MulT (Acc and F1 per emotion) then the means.
    """
    family = spec.metric_family
    k = spec.num_targets
    _check_family(spec)

    def scores(prediction: ArrayInput, label: ArrayInput) -> tuple[np.ndarray, np.ndarray]:
        p, y = _as_float_array(prediction, "prediction"), _as_float_array(label, "label")
        for name, arr in (("prediction", p), ("label", y)):
            if not (arr.ndim == 2 and arr.shape[1] == k) and not (arr.ndim == 1 and k == 1):
                raise ValueError(f"{family} {name} must have shape (N, {k}); got shape {arr.shape}")
        return p, y

    def logits(prediction: ArrayInput, label: ArrayInput) -> tuple[np.ndarray, np.ndarray]:
        z, y = _as_float_array(prediction, "prediction"), _as_float_array(label, "label")
        if z.ndim != 3 or z.shape[1:] != (k, spec.num_classes):
            raise ValueError(f"{family} prediction must have shape (N, {k}, {spec.num_classes}); got shape {z.shape}")
        if y.ndim != 2 or y.shape[1] != k:
            raise ValueError(f"{family} label must have shape (N, {k}); got shape {y.shape}")
        return z, y

    if family == "mosi":
        keys = ("acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "acc5", "acc7", "mae", "corr")
        return MetricSuite(family, keys, "mae", lambda p, y: sentiment_metrics(*(a.ravel() for a in scores(p, y))),
                           ("f1_non0", "mae"))
    if family == "sims":
        keys = ("acc2", "acc3", "acc5", "f1", "mae", "corr")
        return MetricSuite(family, keys, "mae", lambda p, y: sims_metrics(*(a.ravel() for a in scores(p, y))),
                           ("f1", "mae"))
    if family == "rating":
        return _rating_suite(spec, scores)
    if family == "traits":
        keys = ("mae", "corr", "acc7")
        return MetricSuite(family, keys, "mae", lambda p, y: traits_metrics(*scores(p, y), spec.targets), ("mae",))
    if family == "regression":
        return MetricSuite(family, ("mae", "corr"), "mae", lambda p, y: regression_metrics(*scores(p, y)), ("mae",))
    if family == "iemocap":
        names = _target_keys(spec.targets, k)
        keys = tuple(f"{m}_{n}" for n in names for m in ("acc", "f1")) + ("acc", "f1")
        return MetricSuite(family, keys, "f1", lambda z, y: emotion_metrics(*logits(z, y), spec.targets), ("f1",))
    if family == "classification":
        return MetricSuite(family, ("acc", "f1", "f1_macro"), "f1",
                           lambda z, y: classification_metrics(*logits(z, y)), ("f1", "f1_macro"))
    raise ValueError(f"unknown metric family {family!r}; expected one of {_FAMILIES}")


def _check_family(spec: InputSpec) -> None:
    family, k = spec.metric_family, spec.num_targets
    if family in _REGRESSION_FAMILIES and spec.task != "regression":
        raise ValueError(f"metric family {family!r} needs task 'regression'; the spec has task {spec.task!r}")
    if family in _CLASSIFICATION_FAMILIES and (spec.task != "classification" or spec.num_classes < 2):
        raise ValueError(f"metric family {family!r} needs task 'classification' with num_classes >= 2; "
                         f"the spec has task {spec.task!r}, num_classes={spec.num_classes}")
    if family in ("mosi", "sims") and k != 1:
        raise ValueError(f"metric family {family!r} scores one sentiment target; the spec has {k}: {spec.targets}")


def _rating_suite(spec: InputSpec, scores: Callable[..., tuple[np.ndarray, np.ndarray]]) -> MetricSuite:
    if spec.label_centre is None or spec.num_targets != 1:
        raise ValueError(f"metric family 'rating' scores one target around a label_centre; the spec has "
                         f"{spec.num_targets} target(s) and label_centre={spec.label_centre}")
    centre, scale = spec.label_centre, spec.label_scale
    rounded = rounded_accuracy_key(scale)
    keys = ("acc2", "f1", "f1_macro", *((rounded,) if rounded else ()), "mae", "corr")
    return MetricSuite("rating", keys, "mae", lambda p, y: rating_metrics(
        *(a.ravel() for a in scores(p, y)), centre=centre, scale=scale), ("f1", "mae"))


def _cell(value: float | tuple[float, float] | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, tuple):
        mean, std = value
        return f"{mean:.4f} ± {std:.4f}"
    return f"{value:.4f}"


def format_table(
    rows: Mapping[str, Mapping[str, float | tuple[float, float]]], keys: Sequence[str], *, row_header: str = ""
) -> str:
    """A Markdown table with one row per entry of `rows` and one column per key, values to 4 decimals.

    A float is shown as `0.7812`, a (mean, std) tuple (e.g. from `aggregate`) as `0.7812 ± 0.0123`, NaN as `nan`,
    and a key missing from a row as `—`. Rounding happens only here, for display.

    Args:
        rows: row name -> {key: value}.
        keys: the columns, in order (e.g. `MetricSuite.keys`).
        row_header: heading of the first column, which holds the row names.
    """
    header = [row_header, *keys]
    lines = [
        "| " + " | ".join(header) + " |",
        "| --- |" + " ---: |" * len(keys),
    ]
    for name, values in rows.items():
        cells = [name.replace("|", "\\|"), *(_cell(values.get(key)) for key in keys)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def aggregate(results: Sequence[Mapping[str, float]]) -> dict[str, tuple[float, float]]:
    """Mean and population standard deviation (ddof=0) of each key over runs (e.g. seeds).

    mean = (1/n) sum_r v_r and std = sqrt((1/n) sum_r (v_r - mean)^2), over the runs whose value is not NaN (as
    `np.nanmean` / `np.nanstd`); (nan, nan) when every run's value is NaN. Every run must have the same keys.
    """
    if not results:
        raise ValueError("aggregate needs at least one result; got an empty list")
    keys = list(results[0])
    for i, result in enumerate(results):
        if set(result) != set(keys):
            raise ValueError(f"result {i} has keys {sorted(result)}; result 0 has {sorted(keys)}")
    out: dict[str, tuple[float, float]] = {}
    for key in keys:
        values = np.array([float(r[key]) for r in results])
        values = values[~np.isnan(values)]  # filtered by hand: np.nanmean warns on an all-NaN slice
        out[key] = (float(values.mean()), float(values.std())) if values.size else (math.nan, math.nan)
    return out
