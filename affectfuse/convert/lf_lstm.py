"""LF-LSTM (`encoder="dnn"`, the `lf_lstm:dnn` variant) weights from MMSA's LF_DNN (`models/singleTask/LF_DNN.py`).

LF_DNN's sub-networks are named as TFN's (`{audio,video}_subnet`, `text_subnet`; mapped by `convert.tfn.subnetworks`)
and its fusion layers `post_fusion_layer_{1,2,3}`. It concatenates audio, video, text; ours text, audio, vision, so
the first fusion layer's columns are permuted (which changes nothing the model computes). Checkpoints saved through
MMSA's `AMIO` wrapper prefix every name with `Model.`, which is removed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import ConversionError, StateDict, refuse_unknown, register_converter, take
from .tfn import subnetworks

_FUSION = {"post_fusion_layer_1": "1", "post_fusion_layer_2": "3", "post_fusion_layer_3": "5"}


@register_converter("lf_lstm", "mmsa")
def from_mmsa(state: StateDict, config: Any) -> dict[str, Tensor]:
    """MMSA's `LF_DNN.state_dict()` -> ours (built with `encoder="dnn"`); buffers are optional (gradients)."""
    source = "MMSA LF_DNN"
    if config is not None and config.encoder != "dnn":
        raise ConversionError(f"{source} encodes audio/vision with utterance-level sub-networks: build ours with "
                              f"encoder='dnn' (the lf_lstm:dnn variant), not {config.encoder!r}")
    state = {k.removeprefix("Model."): v for k, v in state.items()}
    ours, used = subnetworks(state)
    for layer, index in _FUSION.items():
        for leaf in ("weight", "bias"):
            ours[f"post_fusion.{index}.{leaf}"] = take(state, f"{layer}.{leaf}", source, used)
    a = take(state, "audio_subnet.linear_3.weight", source).shape[0]
    v = take(state, "video_subnet.linear_3.weight", source).shape[0]
    t = take(state, "text_subnet.linear_1.weight", source).shape[0]
    first = ours["post_fusion.1.weight"]
    if first.ndim != 2 or first.shape[1] != a + v + t:
        raise ConversionError(f"{source} post_fusion_layer_1.weight has shape {tuple(first.shape)}, expected "
                              f"(width, audio + video + text = {a + v + t})")
    # MMSA's columns: audio, video, text; ours: text, audio, vision
    ours["post_fusion.1.weight"] = torch.cat([first[:, a + v :], first[:, :a], first[:, a : a + v]], dim=1)
    refuse_unknown(state, used, source)
    return ours
