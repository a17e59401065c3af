"""Opt-in TensorBoard event files, written from the trainer's per-epoch records (the JSON lines stay the record).

`torch.utils.tensorboard` needs the `tensorboard` package (extra `tensorboard`); asking for event files without it
is an error that says so, never a silent no-op.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

OnEpoch = Callable[[dict[str, Any]], None]


def tensorboard_callback(folder: Path | str, tag: str = "") -> tuple[OnEpoch, Callable[[], None]]:
    """(on_epoch, close): `on_epoch(record)` writes every training loss term as `train/<term>` and every validation
    metric as `valid/<metric>` at step = epoch into event files under `folder`."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ModuleNotFoundError:
        raise ValueError(
            "TensorBoard event files need the tensorboard package: pip install 'affectfuse[tensorboard]'"
        ) from None
    writer = SummaryWriter(log_dir=str(folder), comment=tag)

    def on_epoch(record: dict[str, Any]) -> None:
        for split in ("train", "valid"):
            for name, value in record.get(split, {}).items():
                writer.add_scalar(f"{split}/{name}", float(value), global_step=int(record["epoch"]))
        writer.flush()

    return on_epoch, writer.close
