"""`affectfuse sweep`: robustness to missing features over rates or modalities, resumable."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from ..robustness.kinds import MaskSeed, MissingKind, Protocol

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class SweepArgs:
    """Robustness to missing features: train and test models over missing rates (or missing modalities) and seeds;
    report every metric per rate (mean ± std over seeds), AUILC, a Markdown table, JSON/CSV and a plot.

    Resumable: rerun the same command and finished (model, rate, seed) points are skipped.
    """

    model: Annotated[tuple[str, ...], tyro.conf.arg(aliases=("-m",))]
    """One or more registered model names (see `affectfuse models`)."""
    data: Annotated[str, tyro.conf.arg(aliases=("-d",))] = "synthetic"
    """A path, MMSA's `mosi`/`mosei`/`sims`/`iemocap`, `synthetic[:key=value,...]`, `mosi-utterance[:ROOT]` or
    `pom[:ROOT]`."""
    rates: str = "0:1:0.1"
    """Missing rates: START:STOP:STEP with STOP included (0:1:0.1 = 0.0, 0.1, ..., 1.0) or a list 0,0.5,1."""
    missing: MissingKind = "feature"
    """`feature`: random positions dropped at each rate; `modality`: whole modalities absent, one row per non-empty
    subset of the modalities present (T, A, V, T+A, T+V, A+V, T+A+V), reported as a table."""
    protocol: Protocol = "test-only"
    """`train-and-test` (the papers'): a new model per rate, trained and tested at that rate; `test-only`: one model
    per seed trained on complete data, tested at every rate."""
    seed: Annotated[tuple[int, ...], tyro.conf.arg(aliases=("-s",))] = (1111,)
    """Seeds to run."""
    seeds: int = 0
    """Shorthand: this many consecutive seeds starting at the first --seed (--seeds 3: 1111, 1112, 1113)."""
    mask_seed: MaskSeed = "official"
    """Masks from the official NumPy seeds 111/1111/11111 for every run seed (`official`), or those plus the run
    seed (`per-seed`)."""
    quick: bool = False
    """Smaller recipes for a fast sweep: max_epochs capped at 12 and patience at a third of it, and narrow one-layer
    models (mult: dim=16 heads=2 layers=1; emt_dlfr: d_model=16 layers=1 LSTMs 16; lmf/tfn/lf_lstm: hidden 32/16/16;
    ef_lstm: hidden 32, one layer; sft, dmd: dim=16; tfr_net: dim=16 layers=1; mmim: LSTMs 16, Z 32; a variant
    `method:name` gets its method's), all through the same overrides as --set (which still applies on top)."""
    set: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """Config overrides KEY=VALUE, one per --set: model fields (`rank=8`) or `train.lr=1e-3`; every model gets them."""
    out: Path = Path("runs/sweep")
    """Output folder: points/<model>/<condition>/seed<N>.json, results.{json,csv,md}, curves.{png,svg}."""
    device: str = ""
    """`cpu`, `cuda`, `cuda:N` or `auto` (default: the recipe's, i.e. auto)."""
    nonfinite: Literal["error", "zero"] = "error"
    """What to do with NaN/inf features: refuse (default) or replace by 0 with a warning."""
    json: bool = False
    """Print one JSON object (summary and AUILC) instead of the tables."""
    quiet: bool = False
    """No progress bar."""


def cmd_sweep(args: SweepArgs) -> None:
    from ..config.overrides import parse_overrides, seed_list
    from ..data.datasets import load_data
    from ..robustness.report import markdown
    from ..robustness.sweep import SweepSettings, modality_conditions, parse_rates, rate_conditions, run_sweep
    from . import progress_shown

    overrides = parse_overrides(args.set)
    if args.device:
        overrides["train.device"] = args.device
    seeds = seed_list(args.seed, args.seeds)
    corpus = load_data(args.data, nonfinite=args.nonfinite)
    if args.missing == "modality":
        conditions = modality_conditions(corpus.spec.modalities)
    else:
        conditions = rate_conditions(parse_rates(args.rates))
    settings = SweepSettings(
        data=args.data, protocol=args.protocol, missing=args.missing, mask_seed=args.mask_seed, quick=args.quick,
        overrides=overrides,
    )
    start = time.perf_counter()
    result = run_sweep(
        list(args.model), corpus, out_dir=args.out, conditions=conditions, seeds=seeds, settings=settings,
        progress=progress_shown(args.quiet, args.json),
    )
    wall = time.perf_counter() - start
    if args.json:
        print(json.dumps({
            "out": str(args.out), "ran": result.ran, "seconds": round(wall, 1),
            "summary": {m: {c: {k: {"mean": v[0], "std": v[1]} for k, v in row.items()} for c, row in rows.items()}
                        for m, rows in result.summary.items()},
            "auilc": result.auilc,
        }, default=float))
        return
    what = "rate" if args.missing == "feature" else "modalities present"
    print(f"\n{corpus.name}: test split by {what}, {args.protocol}, mean ± std over seeds {seeds}")
    print(markdown(result))
    logger.info(f"\n{result.ran} runs computed now, {len(result.points) - result.ran} reused; {wall:.0f} s. "
          f"Reports in {args.out}/ (results.json, results.csv, results.md"
          + (", curves.png, curves.svg)" if (args.out / "curves.png").exists() else ")"))
