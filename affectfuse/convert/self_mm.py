"""Self-MM: the official `SELF_MM` (thuiar/Self-MM, and its port thuiar/MMSA `models/multiTask/SELF_MM.py`, same
names) -> our `self_mm` model.

Official names (optionally under `Model.`, the `AMIO` wrapper): `text_model.model.*` (BERT), `{audio,video}_model.rnn`
and `.linear_1` (1-layer LSTM subnets), `post_fusion_layer_{1,2,3}`, `post_{text,audio,video}_layer_{1,2,3}`. Ours:
`text_encoder.bert.*`, `encoders.{audio,vision}.{rnn,linear}`, `head.layer{1,2,3}`, `aux.heads.{m}.layer{1,2,3}`.

Dropped: BERT's pooler (unused). The official checkpoint never holds the generated unimodal labels (its trainer keeps
them apart): ours start empty (`aux.labels`), i.e. as at the start of training. Deeper LSTMs (`*_lstm_layers` > 1)
have keys this converter does not know and are refused.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..models.self_mm import SelfMMConfig
from . import StateDict, refuse_unknown, register_converter, take

SOURCE = "official Self-MM"
BERT, POOLER = "text_model.model.", "text_model.model.pooler."
OFFICIAL = {"text": "text", "audio": "audio", "vision": "video"}
RNN = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


@register_converter("self_mm", "official")
def convert_official(official: StateDict, config: SelfMMConfig) -> dict[str, Tensor]:
    """The official SELF_MM (or AMIO-wrapped) state dict -> ours (same tensors, our names; an empty label state)."""
    state = {k.removeprefix("Model."): v for k, v in official.items()}
    used: set[str] = set()
    ours: dict[str, Tensor] = {}

    def copy(official_name: str, our_name: str, parts: tuple[str, ...] = ("weight", "bias")) -> None:
        for p in parts:
            ours[f"{our_name}.{p}"] = take(state, f"{official_name}.{p}", SOURCE, used)

    for k, v in state.items():
        if k.startswith(BERT):
            used.add(k)
            if not k.startswith(POOLER):
                ours[f"text_encoder.bert.{k.removeprefix(BERT)}"] = v
    for m in ("audio", "vision"):
        copy(f"{OFFICIAL[m]}_model.rnn", f"encoders.{m}.rnn", RNN)
        copy(f"{OFFICIAL[m]}_model.linear_1", f"encoders.{m}.linear")
    for i in (1, 2, 3):
        copy(f"post_fusion_layer_{i}", f"head.layer{i}")
        for m, o in OFFICIAL.items():
            copy(f"post_{o}_layer_{i}", f"aux.heads.{m}.layer{i}")
    refuse_unknown(state, used, SOURCE, " (deeper LSTMs, or another method's weights)")
    ours["aux.labels._extra_state"] = torch.zeros(0, dtype=torch.uint8)  # no generated labels yet
    return ours
