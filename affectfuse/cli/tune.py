"""`affectfuse tune`: a validation search of a model's hyper-parameters (Optuna), written as a recipe file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro


@dataclass
class TuneArgs:
    """Search a model's hyper-parameters on a corpus's validation split (Optuna TPE, median pruning); writes the
    best configuration as a recipe file for `affectfuse train --recipe-file`."""

    model: Annotated[str, tyro.conf.arg(aliases=("-m",))]
    data: Annotated[str, tyro.conf.arg(aliases=("-d",))] = "synthetic"
    """A path, `synthetic[:...]`, `mosi-utterance[:ROOT]` or `pom[:ROOT]`."""
    trials: int = 10
    """Finished trials the study should have (a rerun in the same --out continues it)."""
    recipe: str = "auto"
    """Recipe the search starts from (as `train --recipe`)."""
    seed: Annotated[int, tyro.conf.arg(aliases=("-s",))] = 1111
    """Training seed of every trial, and the sampler's seed."""
    set: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """Fixed overrides KEY=VALUE for every trial (e.g. train.max_epochs=20)."""
    out: Path | None = None
    """Output folder; default runs/tune/<model>-<data>."""
    nonfinite: str = "error"
    json: bool = False


def cmd_tune(args: TuneArgs) -> None:
    import json

    from ..config.overrides import parse_overrides
    from ..experiments.tune import tune
    from . import progress_shown

    result = tune(args.model, args.data, trials=args.trials, seed=args.seed, recipe=args.recipe,
                  overrides=parse_overrides(args.set), out_dir=args.out, nonfinite=args.nonfinite,
                  log=(lambda _: None) if args.json else None, progress=progress_shown(args.json))
    if args.json:
        print(json.dumps(result, default=float))
        return
    print(f"best validation {result['monitor']} {result['best_valid']:.4f} "
          f"({result['complete']} complete of {result['trials']} trials): {result['best_params']}")
    print(f"recipe written to {result['recipe_file']}; reuse it with: affectfuse train --model {args.model} "
          f"--data {args.data} --recipe-file {result['recipe_file']}")
