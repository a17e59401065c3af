"""`affectfuse export`: a trained checkpoint -> a model folder (safetensors + JSON) or one TorchScript file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro


@dataclass
class ExportArgs:
    """Export a trained model for use outside affectfuse's training runs. `pretrained`: a folder with config.json
    and model.safetensors, which `from_pretrained`, `load_model` and every command taking a checkpoint read.
    `torchscript`: one file that `torch.jit.load` runs without affectfuse (inputs: dicts of features and masks per
    modality; output: the predictions), checked against the model before it is written."""

    checkpoint: tyro.conf.Positional[Path]
    """A checkpoint written by `affectfuse train` (e.g. runs/demo/lmf/seed1111/best.pt) or a pretrained folder."""
    out: Path
    """The folder (pretrained) or file (torchscript, e.g. lmf.ts.pt) to write."""
    format: Literal["pretrained", "torchscript"] = "pretrained"
    """What to write."""


def cmd_export(args: ExportArgs) -> None:
    from ..engine.checkpoint import load_model, save_pretrained
    from ..engine.export import export_torchscript

    model = load_model(args.checkpoint)
    if args.format == "pretrained":
        written = save_pretrained(model, args.out)
    else:
        written = export_torchscript(model, args.out)
    print(f"exported {model.model_name} from {args.checkpoint} to {written} ({args.format})")
