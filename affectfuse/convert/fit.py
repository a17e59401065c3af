"""Shared by the converters that map onto a probe of our model (TFR-Net, MMIM): the one-line refusals when the
mapped tensors do not have our model's names or shapes."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from . import ConversionError


def check_fit(ours: Mapping[str, Tensor], expected: Mapping[str, Tensor], source: str, settings: str) -> None:
    """Refuse (one line) mapped tensors `ours` that miss, add to or reshape `expected` (a probe's state dict);
    `settings` names the config fields that decide the layout, for the message."""
    missing = sorted(set(expected) - set(ours))
    unexpected = sorted(set(ours) - set(expected))
    if missing or unexpected:
        raise ConversionError(f"{source} weights do not fit our config ({settings}): missing {missing[:4]}, "
                              f"unexpected {unexpected[:4]}")
    wrong = [f"{k} {tuple(v.shape)} (ours {tuple(expected[k].shape)})" for k, v in ours.items()
             if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        raise ConversionError(f"{source} weights have other shapes than our config ({settings}): "
                              f"{', '.join(wrong[:3])}")
