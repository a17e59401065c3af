"""`affectfuse table`: lay out one of the papers' tables on the data at hand and write it as Markdown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro


@dataclass
class TableArgs:
    """Compute one of the papers' tables and write it (with the command that made it) as Markdown:
    `emt-incomplete` (EMT-DLFR's AUILC table over missing rates, every registered method), `emt-fusion` (its
    fusion-strategy efficiency table: OOLL, OALL, OAGL) or `dmd-ablation` (DMD's Tables 3 and 5)."""

    name: tyro.conf.Positional[Literal["emt-incomplete", "emt-fusion", "dmd-ablation"]]
    """Which table."""
    data: str = "synthetic"
    """emt-incomplete, dmd-ablation: a path, `synthetic[:key=value,...]`, `mosi-utterance[:ROOT]` or `pom[:ROOT]`."""
    seed: tuple[int, ...] = (1111,)
    """Seeds to run."""
    seeds: int = 3
    """This many consecutive seeds from the first --seed (0: exactly the --seed values)."""
    rates: str = "0,0.5,1"
    """emt-incomplete: missing rates, a list or START:STOP:STEP (the papers: 0:1:0.1)."""
    model: tuple[str, ...] = ()
    """emt-incomplete: the models (default: every method in the registry); emt-fusion: the rows (default: the
    paper's rows that are registered: mult, tfr_net, emt_dlfr:ooll, emt_dlfr:oall, emt_dlfr)."""
    quick: bool = True
    """Narrow one-layer models and at most 12 epochs (the sweep's --quick); --no-quick: the full recipes."""
    set: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """Config overrides KEY=VALUE for every model (e.g. `train.max_epochs=2`; emt-fusion: model fields only)."""
    shape: str = "mosi"
    """emt-fusion: the corpus shape profiled (`mosi`, `mosei`, `sims`, `iemocap` or T_l,T_a,T_v)."""
    batch: int = 2
    """emt-fusion: batch size profiled."""
    repeats: int = 3
    """emt-fusion: timed repeats (median)."""
    memory: bool = True
    """emt-fusion: measure peak memory."""
    device: str = "cpu"
    """emt-fusion: `cpu` or `cuda`."""
    out: Path | None = None
    """The Markdown file (default: docs/tables/<name>.md)."""
    work: Path | None = None
    """Folder of the runs behind the table, reused by a rerun (default: runs/tables/<name>)."""
    quiet: bool = False
    """No progress bars."""


def cmd_table(args: TableArgs) -> None:
    from ..config.overrides import parse_overrides, seed_list
    from ..experiments.tables import TableSettings, write_table
    from ..robustness.sweep import parse_rates

    settings = TableSettings(
        data=args.data, seeds=seed_list(args.seed, args.seeds), rates=parse_rates(args.rates), quick=args.quick,
        overrides=parse_overrides(args.set), models=args.model, shape=args.shape, batch=args.batch,
        repeats=args.repeats, memory=args.memory, device=args.device,
    )
    out = args.out or Path("docs/tables") / f"{args.name}.md"
    work = args.work or Path("runs/tables") / args.name
    document = write_table(args.name, settings, out=out, work_dir=work, progress=not args.quiet)
    print(document)
    print(f"written to {out}")
