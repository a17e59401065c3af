"""`affectfuse convert`: an official implementation's trained weights -> an affectfuse checkpoint."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro


@dataclass
class ConvertArgs:
    """Convert a checkpoint trained with a method's official code (or MMSA) into an affectfuse checkpoint that
    `evaluate`, `predict` and the Python API load. The file is read as tensors only; the model is built with our
    defaults plus --set, for the feature dims of --data, and every official tensor must find its place."""

    checkpoint: tyro.conf.Positional[Path]
    """The official state dict (torch.save(model.state_dict(), ...))."""
    model: Annotated[str, tyro.conf.arg(aliases=("-m",))]
    """Our model name (see `affectfuse models`)."""
    data: Annotated[str, tyro.conf.arg(aliases=("-d",))]
    """A data spec whose feature dims and lengths the weights were trained for (e.g. the same MMSA pickle)."""
    out: Path
    """The affectfuse checkpoint to write (refused if it exists)."""
    source: Literal["official", "mmsa"] = "official"
    """Which implementation wrote the weights."""
    set: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """Model config overrides KEY=VALUE matching the official run's hyper-parameters (e.g. rank=4)."""


def cmd_convert(args: ConvertArgs) -> None:
    from ..config.overrides import apply_overrides, parse_overrides
    from ..convert import load_converted, read_official_state_dict
    from ..data.datasets import load_data
    from ..engine.checkpoint import save_checkpoint

    if args.out.exists():
        raise ValueError(f"{args.out} exists; choose another --out (a converted checkpoint is never overwritten)")
    config, _ = apply_overrides(args.model, parse_overrides(args.set))
    state_dict = read_official_state_dict(args.checkpoint)
    spec = load_data(args.data).spec
    model = load_converted(args.model, args.source, state_dict, config, spec)
    save_checkpoint(args.out, model)
    logging.getLogger(__name__).info(
        f"converted {args.source} {args.model} ({len(state_dict)} tensors) from {args.checkpoint} to {args.out}")
