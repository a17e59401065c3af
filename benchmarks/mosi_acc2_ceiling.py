"""How high can `acc2_has0` go on the MOSI bc-LSTM utterance features? Oracle ceilings of simple learners.

Not a result to report as a model's: every hyper-parameter below is chosen *on the test split*, to bound what any
validation-selected model could reach. Train + validation are pooled for fitting (standardised on them); each
learner's best test `acc2_has0` over its grid is printed. Usage (about 20 s on one CPU core):

    python benchmarks/mosi_acc2_ceiling.py
"""

from __future__ import annotations

import numpy as np
from ridge_reference import pooled  # the same folder
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from affectfuse.data.datasets import load_data


def main() -> None:
    corpus = load_data("mosi-utterance")
    train, valid, test = (corpus.split(s) for s in ("train", "valid", "test"))
    x_fit = np.concatenate([pooled(train), pooled(valid)])
    y_fit = np.concatenate([train.labels, valid.labels]).reshape(-1)
    scaler = StandardScaler().fit(x_fit)
    x_fit, x_test = scaler.transform(x_fit), scaler.transform(pooled(test))
    y_test = test.labels.reshape(-1) >= 0
    print(f"test: {y_test.mean():.3f} non-negative; fit (train + valid): {(y_fit >= 0).mean():.3f}")
    rows = {}
    for alpha in (0.1, 1, 10, 100, 1000, 3000):
        score = Ridge(alpha=alpha).fit(x_fit, y_fit).predict(x_test)
        rows[f"ridge alpha={alpha}, threshold 0"] = ((score >= 0) == y_test).mean()
        for threshold in (-0.5, -0.4, -0.3, -0.2, -0.1, 0.1):  # moving the boundary = knowing the test prior
            rows[f"ridge alpha={alpha}, threshold {threshold}"] = ((score >= threshold) == y_test).mean()
    for c in (1e-4, 1e-3, 1e-2, 1e-1, 1, 10):
        fitted = LogisticRegression(C=c, max_iter=5000).fit(x_fit, y_fit >= 0)
        rows[f"logistic C={c}"] = (fitted.predict(x_test) == y_test).mean()
    for c in (0.01, 0.1, 1, 10):
        rows[f"rbf SVM C={c}"] = (SVC(C=c).fit(x_fit, y_fit >= 0).predict(x_test) == y_test).mean()
    families = {}
    for name, acc in rows.items():
        family = "ridge, threshold moved" if "threshold 0" not in name and name.startswith("ridge") else name.split()[0]
        if acc > families.get(family, (0, ""))[0]:
            families[family] = (acc, name)
    for family, (acc, name) in families.items():
        print(f"{family:24s} best test acc2_has0 {acc:.4f}  ({name})")


if __name__ == "__main__":
    main()
