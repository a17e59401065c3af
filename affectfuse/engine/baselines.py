"""What a model must beat: the constant/majority predictor and a linear model on mean-pooled features, both fitted on
train and tuned on valid exactly like a model (the test split is scored once), plus the warnings a result gets when
it does not beat the first or collapses to (near-)constant predictions on valid.

- constant: regression predicts each target's train median (the best constant under MAE; on a rated scale it sits on
  the majority side of the centre, i.e. the majority-sign answer); classification answers each target's majority class.
- linear: each modality's masked mean over time, concatenated and standardised on train (`StandardScaler`); ridge
  regression (regression) or logistic regression (classification, one per target), the regularisation strength
  chosen on valid by the corpus's monitor metric (`MetricSuite.default_monitor`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..data.corpus import Corpus, Split
from .metrics import MetricSuite, higher_is_better, metrics_for

RIDGE_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
LOGISTIC_CS = (0.001, 0.01, 0.1, 1.0, 10.0)
COLLAPSE_SHARE = 0.98
"""Valid predictions count as collapsed when one class (or one side of the centre) takes this share of them while the
labels do not; or when regression predictions vary by less than `COLLAPSE_SPREAD` of the labels' spread."""
COLLAPSE_SPREAD = 0.1
_FLOOR = -1e4
"""Logit of a class the linear model never saw in train (finite, as the metrics require)."""


@dataclass
class Baseline:
    name: str
    """`constant`/`majority` or `linear`."""
    description: str
    valid: dict[str, float]
    test: dict[str, float]
    chosen: dict[str, Any] = field(default_factory=dict)
    """What was tuned on valid (ridge alpha, logistic C)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_CACHE: dict[str, dict[str, Baseline]] = {}


def pooled(split: Split) -> np.ndarray:
    """(N, sum D_m): each modality's mean over its real steps (zeros for a sample without one), concatenated."""
    parts = []
    for m, x in split.features.items():
        mask = split.masks[m][..., None]
        parts.append((x * mask).sum(1) / np.maximum(mask.sum(1), 1))
    return np.concatenate(parts, axis=1).astype(np.float64)


def baselines(corpus: Corpus) -> dict[str, Baseline]:
    """{"constant" | "majority": ..., "linear": ...} for a corpus ready for training; computed once per content."""
    key = corpus.fingerprint() + repr(corpus.spec)
    if key not in _CACHE:
        suite = metrics_for(corpus.spec)
        train, valid, test = (corpus.split(s) for s in ("train", "valid", "test"))
        _CACHE[key] = {b.name: b for b in (_constant(corpus, suite, train, valid, test),
                                           _linear(corpus, suite, train, valid, test))}
    return _CACHE[key]


def _classification(corpus: Corpus) -> bool:
    return corpus.spec.task == "classification"


def _as_logits(classes: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, K) class indices -> (N, K, C) one-hot scores (argmax = the class)."""
    return np.eye(num_classes)[classes]


def _constant(corpus: Corpus, suite: MetricSuite, train: Split, valid: Split, test: Split) -> Baseline:
    if _classification(corpus):
        c = corpus.spec.num_classes
        majority = np.array([np.bincount(column, minlength=c).argmax() for column in train.labels.T])

        def predict(split: Split) -> np.ndarray:
            return _as_logits(np.broadcast_to(majority, split.labels.shape), c)

        name, what, chosen = "majority", "always the train split's most frequent class", {"class": majority.tolist()}
    else:
        median = np.median(train.labels.astype(np.float64), axis=0)

        def predict(split: Split) -> np.ndarray:
            return np.broadcast_to(median, split.labels.shape).copy()

        name, what, chosen = "constant", "always the train split's median label", {"value": median.tolist()}
    return Baseline(name, what, suite.compute(predict(valid), valid.labels), suite.compute(predict(test), test.labels),
                    chosen)


def _linear(corpus: Corpus, suite: MetricSuite, train: Split, valid: Split, test: Split) -> Baseline:
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(pooled(train))
    x = {s: scaler.transform(pooled(split)) for s, split in (("train", train), ("valid", valid), ("test", test))}
    monitor = suite.default_monitor
    best: tuple[float, dict[str, float], Any, float] | None = None
    classification = _classification(corpus)
    for strength in LOGISTIC_CS if classification else RIDGE_ALPHAS:
        if classification:
            models = [LogisticRegression(C=strength, max_iter=2000).fit(x["train"], train.labels[:, k])
                      for k in range(train.labels.shape[1])]
            predict = _logistic_predictor(models, corpus.spec.num_classes)
        else:
            ridge = Ridge(alpha=strength).fit(x["train"], train.labels)
            predict = _ridge_predictor(ridge, train.labels.shape[1])
        scores = suite.compute(predict(x["valid"]), valid.labels)
        value = scores[monitor]
        if best is None or better(value, best[3], monitor):
            best = (strength, scores, predict, value)
    assert best is not None
    strength, valid_scores, predict, _ = best
    what = (f"{'logistic' if classification else 'ridge'} regression on mean-pooled {'+'.join(train.features)} "
            "features, standardised on train")
    return Baseline("linear", what, valid_scores, suite.compute(predict(x["test"]), test.labels),
                    {"C" if classification else "alpha": strength, "selected_on": f"valid {monitor}"})


def _ridge_predictor(ridge: Any, k: int) -> Any:
    return lambda x: ridge.predict(x).reshape(len(x), k)


def _logistic_predictor(models: list[Any], num_classes: int) -> Any:
    def predict(x: np.ndarray) -> np.ndarray:
        out = np.full((len(x), len(models), num_classes), _FLOOR)
        for k, model in enumerate(models):
            out[:, k, model.classes_] = np.log(np.clip(model.predict_proba(x), 1e-12, None))
        return out

    return predict


def better(value: float, than: float, key: str) -> bool:
    """`value` improves on `than` in `key`'s direction; NaN never improves, anything improves on NaN."""
    if math.isnan(value):
        return False
    if math.isnan(than):
        return True
    return value > than if higher_is_better(key) else value < than


def losses_to_constant(scores: dict[str, float], reference: Baseline, suite: MetricSuite) -> list[str]:
    """The `suite.versus` keys on which `scores` do not beat the constant/majority predictor (ties lose)."""
    return [key for key in suite.versus if key in scores and key in reference.test
            and not better(scores[key], reference.test[key], key)]


def result_warnings(model: str, scores: dict[str, float], corpus: Corpus, valid_prediction: np.ndarray,
                    valid_labels: np.ndarray) -> list[str]:
    """Warnings for one trained model: it does not beat the constant/majority predictor on test (on any of the
    suite's `versus` keys), or its valid predictions collapsed to (near-)constant."""
    suite = metrics_for(corpus.spec)
    found = baselines(corpus)
    reference = found.get("majority") or found["constant"]
    out = []
    lost = losses_to_constant(scores, reference, suite)
    if lost:
        shown = ", ".join(f"{k} {scores[k]:.4f} vs {reference.test[k]:.4f}" for k in lost)
        out.append(f"{model} does not beat the {reference.name} predictor ({reference.description}) on test: {shown}")
    if (collapse := collapsed(valid_prediction, valid_labels, corpus)) is not None:
        out.append(f"{model} collapsed on valid: {collapse}")
    return out


def collapsed(prediction: np.ndarray, labels: np.ndarray, corpus: Corpus) -> str | None:
    """Why the valid predictions are (near-)constant, or None when they are not."""
    spec = corpus.spec
    if spec.task == "classification":
        guess = np.argmax(prediction, axis=-1).ravel()
        top = np.bincount(guess).max() / guess.size
        truth_top = np.bincount(labels.ravel()).max() / labels.size
        if top >= COLLAPSE_SHARE and truth_top < COLLAPSE_SHARE:
            return f"{top:.0%} of its predictions are one class (the labels' largest class is {truth_top:.0%})"
        return None
    p = prediction.reshape(labels.shape).astype(np.float64)
    y = labels.astype(np.float64)
    spread, label_spread = p.std(0), y.std(0)
    if np.any(spread < COLLAPSE_SPREAD * label_spread):
        k = int(np.argmax(label_spread - spread / COLLAPSE_SPREAD))
        return (f"its predictions vary by std {spread[k]:.3g}, under {COLLAPSE_SPREAD:g} x the labels' std "
                f"{label_spread[k]:.3g}")
    centre = spec.label_centre if spec.metric_family == "rating" else 0.0 if spec.metric_family == "mosi" else None
    if centre is not None:
        above, truth_above = float((p > centre).mean()), float((y > centre).mean())
        if max(above, 1 - above) >= COLLAPSE_SHARE and max(truth_above, 1 - truth_above) < COLLAPSE_SHARE:
            side = "above" if above >= 0.5 else "at or below"
            return (f"{max(above, 1 - above):.0%} of its predictions are {side} the centre {centre:g} "
                    f"({truth_above:.0%} of the labels are above it)")
    return None


def confusion(logits: np.ndarray, labels: np.ndarray) -> list[list[list[int]]]:
    """Per target k, the C x C confusion matrix of argmax predictions: row = true class, column = predicted class
    (`sklearn.metrics.confusion_matrix`). Logits (N, K, C), labels (N, K)."""
    from sklearn.metrics import confusion_matrix

    classes = np.arange(logits.shape[-1])
    guess = np.argmax(logits, axis=-1).reshape(labels.shape)
    return [confusion_matrix(labels[:, k], guess[:, k], labels=classes).tolist() for k in range(labels.shape[1])]


def verdicts(summary: dict[str, dict[str, tuple[float, float]]], corpus: Corpus) -> dict[str, dict[str, Any]]:
    """Per model (test means over seeds): does it beat the constant/majority predictor and reach the linear model
    on every `versus` key of the corpus's metrics?"""
    suite, found = metrics_for(corpus.spec), baselines(corpus)
    reference, linear = found.get("majority") or found["constant"], found["linear"]
    out = {}
    for model, scores in summary.items():
        means = {k: v[0] for k, v in scores.items()}
        keys = [k for k in suite.versus if k in means]
        out[model] = {
            "beats_" + reference.name: not losses_to_constant(means, reference, suite),
            "reaches_linear": all(not better(linear.test[k], means[k], k) for k in keys),
            "keys": keys,
        }
    return out


def verdict_table(summary: dict[str, dict[str, tuple[float, float]]], corpus: Corpus) -> str:
    """One Markdown table: each model's test means on the `versus` keys next to the two baselines', and the verdict."""
    suite, found = metrics_for(corpus.spec), baselines(corpus)
    reference, linear = found.get("majority") or found["constant"], found["linear"]
    keys = [k for k in suite.versus if all(k in s for s in summary.values())]
    judged = verdicts(summary, corpus)
    head = " | ".join(keys)
    lines = [f"| model | {head} | beats {reference.name} | reaches linear |",
             "| --- |" + " ---: |" * len(keys) + " :---: | :---: |"]
    lines.append(f"| {reference.name} (baseline) | " + " | ".join(f"{reference.test[k]:.4f}" for k in keys) + " | | |")
    # a linear model that cannot beat the constant either says the labels are barely predictable from these features
    beats = "yes" if not losses_to_constant(linear.test, reference, suite) else "**no**"
    lines.append("| linear (baseline) | " + " | ".join(f"{linear.test[k]:.4f}" for k in keys) + f" | {beats} | |")
    for model, scores in summary.items():
        verdict = judged[model]
        marks = ["yes" if verdict["beats_" + reference.name] else "**no**",
                 "yes" if verdict["reaches_linear"] else "**no**"]
        lines.append(f"| {model} | " + " | ".join(f"{scores[k][0]:.4f}" for k in keys) + f" | {' | '.join(marks)} |")
    return "\n".join(lines)
