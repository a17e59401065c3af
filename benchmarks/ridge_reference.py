"""Ridge-regression reference on a corpus, under the same protocol as `affectfuse train`.

Features: each modality's masked mean over time, concatenated and standardised on train; alpha chosen on the
validation split (lowest MAE); the test split is scored once. Usage:

    python benchmarks/ridge_reference.py mosi-utterance
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

from affectfuse.data.datasets import load_data
from affectfuse.engine.baselines import pooled
from affectfuse.engine.metrics import metrics_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="a data spec, e.g. mosi-utterance or pom")
    args = parser.parse_args()
    corpus = load_data(args.data)
    train, valid, test = (corpus.split(s) for s in ("train", "valid", "test"))
    scaler = StandardScaler().fit(pooled(train))
    suite = metrics_for(corpus.spec)
    best = None
    for alpha in (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 3000.0, 10000.0):
        model = Ridge(alpha=alpha).fit(scaler.transform(pooled(train)), train.labels)
        mae = float(np.abs(model.predict(scaler.transform(pooled(valid))) - valid.labels).mean())
        if best is None or mae < best[0]:
            best = (mae, alpha, model)
    _, alpha, model = best
    test_scores = suite.compute(model.predict(scaler.transform(pooled(test))).reshape(test.labels.shape), test.labels)
    print(json.dumps({"data": args.data, "alpha": alpha, "test": test_scores}, indent=2))


if __name__ == "__main__":
    main()
