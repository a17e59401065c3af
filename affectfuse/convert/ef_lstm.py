"""EF-LSTM weights from MMSA's EF_LSTM (thuiar/MMSA `models/singleTask/EF_LSTM.py`).

MMSA names the step normalisation `norm`, the stacked LSTM `lstm`, the hidden layer `linear` and the output layer
`out`, as ours does, so the tensors carry over as they are; this checks that they are all there, that the LSTM has
the configured number of layers, and that nothing else is. Checkpoints saved through MMSA's `AMIO` wrapper prefix
every name with `Model.`, which is removed. MMSA's aligning `AlignSubNet` ("avg_pool") has no weights.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from . import ConversionError, StateDict, refuse_unknown, register_converter, take

_PARTS = ("norm.", "lstm.", "linear.", "out.")


@register_converter("ef_lstm", "mmsa")
def from_mmsa(state: StateDict, config: Any) -> dict[str, Tensor]:
    """MMSA's `EF_LSTM.state_dict()` (or `AMIO`'s, `Model.`-prefixed) -> ours; buffers are optional (gradients)."""
    source = "MMSA EF_LSTM"
    state = {k.removeprefix("Model."): v for k, v in state.items()}
    used: set[str] = set()
    for key in ("linear.weight", "linear.bias", "out.weight", "out.bias"):
        take(state, key, source, used)
    layers = 1 + max((int(k.rpartition("_l")[2]) for k in state if k.startswith("lstm.weight_ih_l")), default=-1)
    if config is not None and layers != config.layers:
        raise ConversionError(f"{source} has {layers} LSTM layers, the config {config.layers} (set layers={layers})")
    for layer in range(layers):
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            take(state, f"lstm.{kind}_l{layer}", source, used)
    used |= {k for k in state if k.startswith("norm.")}
    if config is not None and config.step_norm and "norm.weight" not in state:
        raise ConversionError(f"{source} state dict lacks 'norm.weight' (or build ours with step_norm=False)")
    refuse_unknown(state, used, source)
    return {k: v for k, v in state.items() if k.startswith(_PARTS)}
