"""Every registered model at the papers' unaligned MOSI / MOSEI shapes: parameters, and one training step on CPU.

Shapes (spec §0.1, MMSA `unaligned_50.pkl`): text 50 steps of 768-d BERT features, audio 375 (MOSI) or 500 (MOSEI)
COVAREP frames of 5 / 74 dims, vision 500 Facet frames of 20 / 35 dims. Each model uses its own `mosi` / `mosei`
recipe. Text is given as precomputed 768-d features, so BERT-base (109.5 M parameters, fine-tuned by DMD and
EMT-DLFR, and by MulT in the EMT-DLFR paper's table) is *not* counted; the "+ BERT" column adds it where the paper's
count includes it. Training-only parameters are those under a model's `aux` module (DMD's distillers and decoders,
EMT-DLFR's projectors, predictors and reconstruction heads, TFR-Net's final transformers and generators, MMIM's MI
estimators and CPC predictors); "inference" excludes them.

Usage (about a minute on 2 CPU cores):

    python benchmarks/paper_shapes.py            # prints the Markdown table of the README
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from affectfuse import models as _models  # noqa: F401  (registers the methods)
from affectfuse.config import InputSpec
from affectfuse.config.registry import create_model, get_recipe, list_models
from affectfuse.data.batch import Batch
from affectfuse.engine.train import build_optimizer

SHAPES = {
    "mosi": (dict(text=768, audio=5, vision=20), dict(text=50, audio=375, vision=500)),
    "mosei": (dict(text=768, audio=74, vision=35), dict(text=50, audio=500, vision=500)),
}
BERT_BASE = 109_482_240
"""Parameters of bert-base-uncased as `BertModel` (pooler included): what the official DMD / EMT-DLFR code tunes."""
PAPER = {
    # model -> (what the paper counts, millions); only numbers the spec records (§2.4, §4.6).
    "emt_dlfr": ("EMT-DLFR table, with BERT", 110.5),
    "mult": ("EMT-DLFR table (MulT with BERT)", 111.0),
    # the official TFR-Net count includes its training-only final transformers: total + BERT-base = 124.3 M at MOSI
    "tfr_net": ("EMT-DLFR table, with BERT and the training-only final transformers", 124.3),
}
# BERT adds to these models' counted parameters (MISA's BERT replaces its text sLSTM instead)
USES_BERT = {"emt_dlfr", "dmd", "mult", "tfr_net", "mmim", "self_mm"}


def random_batch(spec: InputSpec, batch_size: int, *, seed: int = 0) -> Batch:
    """Full-length random features (the worst case for time) with a regression label in [-3, 3]."""
    g = torch.Generator().manual_seed(seed)
    features = {m: torch.randn(batch_size, spec.lengths[m], spec.dims[m], generator=g) for m in spec.modalities}
    masks = {m: torch.ones(batch_size, spec.lengths[m], dtype=torch.bool) for m in spec.modalities}
    label = torch.empty(batch_size, 1).uniform_(-3, 3, generator=g)
    return Batch(features=features, masks=masks, label=label, ids=[f"s{i}" for i in range(batch_size)])


def training_step_seconds(name: str, dataset: str, *, batch_size: int, repeats: int) -> tuple[int, int, float]:
    """(total parameters, training-only parameters, median seconds of one optimiser step)."""
    dims, lengths = SHAPES[dataset]
    spec = InputSpec(dims=dims, lengths=lengths, aligned=False)
    recipe = get_recipe(name, dataset)
    torch.manual_seed(0)
    model = create_model(name, spec, recipe.model)
    total = sum(p.numel() for p in model.parameters())
    aux = getattr(model, "aux", None)
    training_only = sum(p.numel() for p in aux.parameters()) if isinstance(aux, torch.nn.Module) else 0
    optimizer = build_optimizer(model, recipe.train)
    batch = random_batch(spec, batch_size)
    model.train()
    times = []
    for _ in range(repeats + 1):  # the first step warms up allocators and kernels
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = model.loss(batch).total
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{name} at {dataset} shapes: non-finite training loss {loss.item()}")
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return total, training_only, statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}\n")
    print("| model | shapes | parameters (total) | inference | + BERT-base | paper | train step (s) |")
    print("| --- | --- | ---: | ---: | ---: | --- | ---: |")
    for name in list_models():
        for dataset in SHAPES:
            total, training_only, seconds = training_step_seconds(
                name, dataset, batch_size=args.batch_size, repeats=args.repeats
            )
            inference = total - training_only
            with_bert = f"{(inference + BERT_BASE) / 1e6:.1f} M" if name in USES_BERT else "—"
            paper = f"{PAPER[name][1]} M ({PAPER[name][0]})" if name in PAPER else "—"
            print(
                f"| {name} | {dataset} | {total:,} | {inference:,} | {with_bert} | {paper} | {seconds:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
