"""The papers' tables, laid out on the data at hand: one function per table (`affectfuse table NAME`).

- ``emt-incomplete``: EMT-DLFR's incomplete-setting table. Every method in the registry is trained, selected and
  tested at each missing rate (the train-and-test protocol of `robustness.sweep`, the official static masks) for
  each seed; each metric's curve over the rates is summarised by its AUILC (`robustness.auilc`), mean ± std over
  the seeds' own areas. Columns as the paper: MAE, Corr, Acc-7, Acc-5, Acc-2 and F1 has-0 / non-0 (fractions, not
  x100).
- ``emt-fusion``: EMT-DLFR's fusion-strategy efficiency table. `efficiency.profile` on random full-length inputs of
  a corpus shape for OOLL, OALL and OAGL (the `emt_dlfr` variants, same weights count) and the paper's other rows
  that are registered (MulT, TFR-Net): forward MACs per sample, parameters, training-step time and peak memory.
- ``dmd-ablation``: DMD's Table 3 (the `dmd` variants switching FD, HomoGD, CA and HeteroGD off) and Table 5 (MulT
  with and without graph distillation), trained over seeds with each model's recipe: Acc-7, Acc-2 / F1 non-0, MAE,
  Corr, mean ± std.

Each function returns the Markdown document (settings, the command that made it, the table); runs are kept under
a work folder, so a rerun with the same settings reuses them (sweep points and finished runs).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.registry import get_entry, list_models

TABLES = ("emt-incomplete", "emt-fusion", "dmd-ablation")

PAPER_COLUMNS = (
    ("mae", "MAE"),
    ("corr", "Corr"),
    ("acc7", "Acc-7"),
    ("acc5", "Acc-5"),
    ("acc2_has0", "Acc-2 has-0"),
    ("acc2_non0", "Acc-2 non-0"),
    ("f1_has0", "F1 has-0"),
    ("f1_non0", "F1 non-0"),
)
DMD_COLUMNS = (
    ("acc7", "Acc-7"), ("acc2_non0", "Acc-2 non-0"), ("f1_non0", "F1 non-0"), ("mae", "MAE"), ("corr", "Corr")
)

FUSION_ROWS = (
    ("MulT", "mult"),
    ("TFR-Net", "tfr_net"),
    ("OOLL (one-to-one local-local, MulT-style)", "emt_dlfr:ooll"),
    ("OALL (one-to-all local-local, PMR-style)", "emt_dlfr:oall"),
    ("OAGL (EMT)", "emt_dlfr"),
)
"""The rows of the paper's efficiency table; a model not registered (yet) is left out."""

DMD_ROWS = (
    ("full (FD, HomoGD, CA, HeteroGD)", "dmd"),
    ("w/o HeteroGD", "dmd:no_hetero_gd"),
    ("w/o CA", "dmd:no_ca"),
    ("w/o CA, HeteroGD", "dmd:no_ca_hetero_gd"),
    ("FD only", "dmd:fd_only"),
    ("none", "dmd:none"),
)
MULT_ROWS = (("MulT", "mult"), ("MulT + GD", "mult:gd"))

# The papers' own numbers, printed under each table for reference (shared/spec/methods.md §4.6 and §6.6).
PAPER_INCOMPLETE = """The paper (CMU-MOSI, AUILC over r = 0, 0.1, ..., 1, mean of 3 runs; x100 for accuracies):

| model | MAE | Corr | Acc-7 | Acc-5 | Acc-2 has-0 / non-0 | F1 has-0 / non-0 |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
| EMT-DLFR | 1.106 | 0.486 | 32.5 | 35.6 | 69.6 / 70.3 | 69.6 / 70.3 |
| TFR-Net | 1.156 | 0.452 | 27.7 | 30.5 | 67.6 / 67.8 | 65.7 / 66.1 |
| Self-MM | 1.162 | 0.444 | 27.8 | 30.3 | 66.9 / 67.5 | 65.4 / 66.2 |
| MMIM | 1.168 | 0.450 | 27.0 | 29.4 | 66.8 / 66.9 | 64.6 / 65.8 |
| MISA | 1.202 | 0.405 | 25.7 | 27.4 | 63.9 / 63.7 | 59.0 / 58.8 |
| MulT | 1.263 | 0.348 | 23.1 | 24.6 | 63.1 / 63.2 | 60.7 / 61.0 |
| LMF | 1.310 | 0.299 | 21.5 | 22.7 | 59.7 / 59.3 | 56.4 / 56.1 |
| TFN | 1.316 | 0.308 | 22.3 | 23.7 | 61.0 / 60.9 | 59.7 / 59.7 |"""
PAPER_FUSION = """The paper (with fine-tuned BERT-base, on a GPU; dataset and batch as in the paper):

| strategy | MACs (G) | params (M) | train time (s) | GPU memory (GB) |
| --- | ---: | ---: | ---: | ---: |
| MulT | – | 111.0 | 17.5 | 17.8 |
| TFR-Net | – | 124.3 | 24.8 | 16.9 |
| OOLL | 3.1 | 110.5 | 17.1 | 17.8 |
| OALL | 8.3 | 110.5 | 21.2 | 31.5 |
| OAGL (EMT) | 1.5 | 110.5 | 15.4 | 10.8 |"""
PAPER_DMD = """The paper (unaligned, x100; Acc-7 / F1, Table 3; Table 5: Acc-7 / Acc-2 / F1):

| variant | MOSI | MOSEI |
| --- | --- | --- |
| full | 41.9 / 83.5 | 54.6 / 84.7 |
| w/o HeteroGD | 38.8 / 81.1 | 53.2 / 84.1 |
| w/o CA | 37.5 / 80.6 | 52.4 / 83.8 |
| w/o CA, HeteroGD | 37.2 / 80.8 | 52.4 / 84.3 |
| FD only | 34.7 / 79.3 | 51.6 / 82.8 |
| none | 32.4 / 79.0 | 50.0 / 81.9 |
| MulT + GD (Table 5) | 39.4 / 82.2 / 82.2 | 51.0 / 82.3 / 82.5 |"""


@dataclass
class TableSettings:
    """What a table is computed from; every field appears in the document's command."""

    data: str = "synthetic"
    seeds: Sequence[int] = (1111, 1112, 1113)
    rates: Sequence[float] = (0.0, 0.5, 1.0)
    quick: bool = True
    overrides: dict[str, str] = field(default_factory=dict)
    models: Sequence[str] = ()
    """emt-incomplete: the models (default: every method in the registry); emt-fusion: the rows' models (default:
    all of the paper's rows that are registered)."""
    shape: str = "mosi"
    batch: int = 2
    repeats: int = 3
    memory: bool = True
    device: str = "cpu"


def command(name: str, settings: TableSettings, out: Path | str) -> str:
    """The `affectfuse table` command line that makes `name` with `settings` (written into the document)."""
    parts = ["affectfuse", "table", name]
    if name == "emt-fusion":
        parts += ["--shape", settings.shape, "--batch", str(settings.batch), "--repeats", str(settings.repeats)]
        if not settings.memory:
            parts.append("--no-memory")
        if settings.device != "cpu":
            parts += ["--device", settings.device]
        if settings.models:
            parts += ["--model", *settings.models]
        for key, value in settings.overrides.items():
            parts += ["--set", f"{key}={value}"]
    else:
        parts += ["--data", settings.data, "--seed", *map(str, settings.seeds)]
        if name == "emt-incomplete":
            parts += ["--rates", ",".join(f"{r:g}" for r in settings.rates)]
            if settings.models:
                parts += ["--model", *settings.models]
        parts.append("--quick" if settings.quick else "--no-quick")
        for key, value in settings.overrides.items():
            parts += ["--set", f"{key}={value}"]
    parts += ["--out", str(out)]
    return shlex.join(parts)


def _cell(mean: float, std: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _document(title: str, cmd: str, about: str, table: str, paper: str, notes: Sequence[str] = ()) -> str:
    lines = [f"# {title}", "", about, "", "Made by:", "", "```bash", cmd, "```", "", table, ""]
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    return "\n".join(lines + [paper, ""])


def _settings_line(settings: TableSettings) -> str:
    quick = "`--quick` sizes (narrow one-layer models, at most 12 epochs)" if settings.quick else "full recipes"
    over = ", ".join(f"`{k}={v}`" for k, v in settings.overrides.items()) or "none"
    return f"Data `{settings.data}`; seeds {', '.join(map(str, settings.seeds))}; {quick}; overrides: {over}."


# ---------------------------------------------------------------------------------------------------------------------
# EMT-DLFR: the incomplete setting (AUILC over missing rates)
# ---------------------------------------------------------------------------------------------------------------------


def emt_incomplete(settings: TableSettings, *, work_dir: Path, out: Path | str, progress: bool = False) -> str:
    from ..data.datasets import load_data
    from ..robustness.sweep import SweepSettings, rate_conditions, run_sweep

    if len(settings.rates) < 2:
        raise ValueError(f"an AUILC needs two or more missing rates, got {list(settings.rates)}")
    models = list(settings.models) or list_models()
    corpus = load_data(settings.data)
    sweep = SweepSettings(
        data=settings.data, protocol="train-and-test", quick=settings.quick, overrides=dict(settings.overrides)
    )
    result = run_sweep(
        models, corpus, out_dir=work_dir, conditions=rate_conditions(settings.rates), seeds=list(settings.seeds),
        settings=sweep, progress=progress, plots=False,
    )
    columns = [(k, label) for k, label in PAPER_COLUMNS if k in result.keys] or [(k, k) for k in result.keys]
    lines = ["| model | " + " | ".join(label for _, label in columns) + " |",
             "| --- | " + " | ".join("---:" for _ in columns) + " |"]
    # ordered by MAE's AUILC (lower first), as the paper lists the methods best first
    for m in sorted(models, key=lambda m: result.auilc[m][columns[0][0]]["auilc"]):
        cells = [_cell(result.auilc[m][k]["auilc"], result.auilc[m][k]["std"]) for k, _ in columns]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    about = (
        "EMT-DLFR's incomplete-setting table: each model trained, selected and tested at every missing rate "
        f"r in {{{', '.join(f'{r:g}' for r in settings.rates)}}} (train-and-test protocol, the official static "
        "masks; EMT-DLFR trains on the complete split with its own incomplete view at rate r), and each metric's "
        "curve over r summarised by its AUILC (area under the curve over [0, 1] by the trapezoid rule, "
        "`robustness.auilc`); mean of the seeds' curve ± std of the seeds' own areas. Accuracies and F1 are "
        f"fractions (the paper prints x100). {_settings_line(settings)} Sweep points in `{work_dir}`."
    )
    return _document("EMT-DLFR incomplete setting (AUILC)", command("emt-incomplete", settings, out), about,
                     "\n".join(lines), PAPER_INCOMPLETE, result.notes)


# ---------------------------------------------------------------------------------------------------------------------
# EMT-DLFR: fusion strategies (efficiency)
# ---------------------------------------------------------------------------------------------------------------------


def emt_fusion(settings: TableSettings, *, out: Path | str) -> str:
    from ..efficiency.profile import machine_description, profile_model
    from ..efficiency.shapes import parse_shape

    shape = parse_shape(settings.shape)
    rows = [(label, name) for label, name in FUSION_ROWS
            if _registered(name) and (not settings.models or name in settings.models)]
    profiles = {
        name: profile_model(name, shape, batch_size=settings.batch, device=settings.device, repeats=settings.repeats,
                            memory=settings.memory, overrides=dict(settings.overrides))
        for _, name in rows
    }
    base = profiles.get("emt_dlfr")
    lines = [
        "| strategy | model | GMACs / sample (fwd) | MACs / OAGL's | params (M) | train step ms | train peak MB | "
        "fwd peak MB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, name in rows:
        p = profiles[name]
        mem = ["—" if x is None else f"{x:,.0f}" for x in (p.train_peak_mb, p.forward_peak_mb)]
        ratio = f"{p.macs / base.macs:.2f}" if base else "—"
        lines.append(f"| {label} | `{name}` | {p.macs / settings.batch / 1e9:.4g} | {ratio} | "
                     f"{p.params_total / 1e6:.3f} | {p.train_step_ms:.0f} | {mem[0]} | {mem[1]} |")
    about = (
        "EMT-DLFR's fusion-strategy table: `affectfuse profile` of each strategy on random full-length inputs of the "
        f"`{shape.name}` shape (lengths {shape.lengths}, dims {shape.dims}), each model with its recipe for that "
        f"corpus{_overrides_note(settings)}, batch {settings.batch}, medians of {settings.repeats} timed runs, "
        f"{machine_description(settings.device)}."
        " Text enters as precomputed 768-d features, so BERT-base (109.5 M parameters in the paper's counts) is in "
        "no row; the paper's MACs/params/time/memory include it and were measured on a GPU. MACs count matrix "
        "products, convolutions and attention (FLOPs / 2) of one eval-mode forward, divided by the batch; the "
        "forward runs L - 1 local updates (the prediction reads G only, so the last layer's is skipped), a training "
        "step all L, on two views."
    )
    return _document("EMT-DLFR fusion strategies (efficiency)", command("emt-fusion", settings, out), about,
                     "\n".join(lines), PAPER_FUSION)


def _overrides_note(settings: TableSettings) -> str:
    return f" and the overrides {', '.join(f'`{k}={v}`' for k, v in settings.overrides.items())}" if (
        settings.overrides) else ""


def _registered(name: str) -> bool:
    try:
        get_entry(name)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------------------------
# DMD: ablation (Table 3) and MulT + GD (Table 5)
# ---------------------------------------------------------------------------------------------------------------------


def dmd_ablation(settings: TableSettings, *, work_dir: Path, out: Path | str, progress: bool = False) -> str:
    from ..data.datasets import load_data
    from ..engine.metrics import aggregate
    from ..engine.runs import resolve_recipe, train_model
    from ..robustness.sweep import quick_overrides

    corpus = load_data(settings.data)
    tables = []
    for title, rows in (("Table 3 (ablation)", DMD_ROWS), ("Table 5 (graph distillation on MulT)", MULT_ROWS)):
        lines = [f"**{title}**", "", "| variant | model | " + " | ".join(label for _, label in DMD_COLUMNS) + " |",
                 "| --- | --- | " + " | ".join("---:" for _ in DMD_COLUMNS) + " |"]
        for label, name in rows:
            overrides: dict[str, Any] = {}
            if settings.quick:
                _, recipe = resolve_recipe(name, corpus)
                overrides |= quick_overrides(name, recipe.train.max_epochs, recipe.train.patience)
            overrides |= settings.overrides
            runs = [
                train_model(name, corpus, seed=seed, overrides=overrides, progress=progress,
                            out_dir=work_dir / name.replace(":", "-") / f"seed{seed}")
                for seed in settings.seeds
            ]
            summary = aggregate([r.test for r in runs])
            cells = [_cell(*summary[k]) if k in summary else "—" for k, _ in DMD_COLUMNS]
            lines.append(f"| {label} | `{name}` | " + " | ".join(cells) + " |")
        tables.append("\n".join(lines))
    about = (
        "DMD's ablation (Table 3: feature decoupling FD, the homogeneous and heterogeneous graph-distillation units "
        "HomoGD / HeteroGD, crossmodal attention CA in HeteroGD) and Table 5 (MulT with DMD's graph distillation), "
        "each row a registered variant trained with its recipe for the corpus, selected on validation, scored on "
        f"test; mean ± std over seeds. {_settings_line(settings)} Runs in `{work_dir}`."
    )
    return _document("DMD ablation", command("dmd-ablation", settings, out), about, "\n\n".join(tables), PAPER_DMD)


def make_table(
    name: str, settings: TableSettings, *, out: Path | str, work_dir: Path | str, progress: bool = False
) -> str:
    """The Markdown document of table `name` (one of `TABLES`)."""
    work = Path(work_dir)
    if name == "emt-incomplete":
        return emt_incomplete(settings, work_dir=work, out=out, progress=progress)
    if name == "emt-fusion":
        return emt_fusion(settings, out=out)
    if name == "dmd-ablation":
        return dmd_ablation(settings, work_dir=work, out=out, progress=progress)
    raise ValueError(f"unknown table {name!r}; tables: {', '.join(TABLES)}")


def write_table(
    name: str, settings: TableSettings, *, out: Path | str, work_dir: Path | str, progress: bool = False
) -> str:
    """`make_table`, written to `out` (atomically; its folder created); returns the document."""
    from ..io import atomic_write, ensure_folder

    document = make_table(name, settings, out=out, work_dir=work_dir, progress=progress)
    # A rewritten page keeps the docs test's directive above its command (docs/contributing.md): the test runs the
    # command on the tiny settings it names instead of the minutes the table takes.
    previous = Path(out).read_text(encoding="utf-8") if Path(out).is_file() else ""
    directive = next((line for line in previous.splitlines() if line.startswith("<!-- docs-test:")), None)
    if directive is not None:
        document = document.replace("Made by:\n\n```bash", f"Made by:\n\n{directive}\n```bash", 1)
    ensure_folder(Path(out).parent)
    atomic_write(out, lambda f: f.write(document.encode()))
    return document
