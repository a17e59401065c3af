"""EMT-DLFR vs MulT, both trained and tested with half the features missing (issue 3; spec §4.2, §0.5).

The official protocol at one missing rate r (EMT-DLFR/TFR-Net `run_once.py`): every split is corrupted once with the
static per-modality masks (NumPy seeds 111/1111/11111, `robustness.missing.split_missing_masks`), the same masks for
every training seed; a model is trained on the corrupted training split, selected on the corrupted validation split and
tested on the corrupted test split.

- MulT sees only the corrupted splits.
- EMT-DLFR also sees the complete training split, as in the official code (its loss pairs the complete view with an
  incomplete one). Here the incomplete views are drawn afresh at rate r by the model's own `loss` (its documented
  deviation) instead of the static masks; validation and test are the same corrupted splits as MulT's.

- An ablation row trains the same EMT-DLFR with both restoration weights at 0 (only the incomplete view's task
  loss), to show what the dual-level restoration itself adds.

Usage (about 5 minutes on 2 CPU cores):

    python benchmarks/missing_rate_emt_vs_mult.py --data synthetic --rate 0.5 --seeds 1111 1112 1113
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from affectfuse.data.corpus import Corpus
from affectfuse.data.datasets import load_data
from affectfuse.engine.metrics import format_table
from affectfuse.engine.runs import summarise, train_model
from affectfuse.io import write_json
from affectfuse.robustness.missing import apply_masks, split_missing_masks


def corrupted(corpus: Corpus, rate: float, splits: tuple[str, ...]) -> Corpus:
    """`corpus` with the named splits dropped at `rate` by the official static masks; other splits stay complete."""
    out = dict(corpus.splits)
    for name in splits:
        split = corpus.split(name)
        out[name] = apply_masks(split, split_missing_masks(split, rate, spec=corpus.spec), spec=corpus.spec)
    return dataclasses.replace(corpus, splits=out, source=f"{corpus.source}, {'/'.join(splits)} dropped at r={rate}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1111, 1112, 1113])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/missing_rate_emt_vs_mult.json"))
    args = parser.parse_args()

    corpus = load_data(args.data)
    all_dropped = corrupted(corpus, args.rate, ("train", "valid", "test"))
    eval_dropped = corrupted(corpus, args.rate, ("valid", "test"))
    restoration_off = {"missing_rate": args.rate, "attraction_weight": 0.0, "reconstruction_weight": 0.0}
    setups = {  # row -> (model, corpus, config overrides)
        "mult": ("mult", all_dropped, {}),
        "emt_dlfr": ("emt_dlfr", eval_dropped, {"missing_rate": args.rate}),
        # Ablation: the same EMT-DLFR and data, trained on the incomplete view's task loss alone.
        "emt_dlfr, no restoration losses": ("emt_dlfr", eval_dropped, restoration_off),
    }
    results = {}
    for row, (name, data, overrides) in setups.items():
        results[row] = [train_model(name, data, seed=seed, overrides=overrides, progress=False) for seed in args.seeds]
        print(f"{row}: " + ", ".join(f"{r.test['acc2_has0']:.3f}" for r in results[row]), flush=True)
    summary = summarise(results)
    print(format_table(summary, ["acc2_has0", "f1_has0", "acc7", "mae", "corr"], row_header="model"))
    write_json(
        args.out,
        {
            "data": args.data,
            "rate": args.rate,
            "seeds": args.seeds,
            "test": {model: {k: {"mean": m, "std": s} for k, (m, s) in row.items()} for model, row in summary.items()},
            "runs": [dataclasses.asdict(r) for runs in results.values() for r in runs],
        },
    )
    print(json.dumps({m: summary[m]["acc2_has0"] for m in summary}))


if __name__ == "__main__":
    main()
