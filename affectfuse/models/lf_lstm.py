"""LF-LSTM: late-fusion LSTM, the baseline of MulT's and DMD's tables (as benchmarked in MulT's paper; MMSA's
late-fusion baseline is LF_DNN).

Each modality is encoded on its own, z_m = Linear(Dropout(h_m)) from the final hidden state h_m of a one-layer LSTM
over its real steps, and the modalities meet only at the end: the concatenation [z_l; z_a; z_v] goes through
Dropout -> Linear -> ReLU -> Linear -> ReLU -> Linear to the prediction.

What "LF-LSTM" is: MulT's paper (whose baseline rows DMD's tables repeat) names it as the late-fusion counterpart of
EF-LSTM and publishes no code; the DMD repository has no baseline code; MMSA's late-fusion baseline, LF_DNN (from
the same "Multimodal DNN feature fusion" code as its EF_LSTM), encodes the text with this LSTM sub-network but audio
and vision with TFN's utterance-level sub-network (BatchNorm -> Dropout -> 3 x (Linear -> ReLU) on the
time-averaged features). So this file is both: `encoder="lstm"` (default) runs the LSTM sub-network on every
modality, the late-fusion LSTM; `encoder="dnn"` (variant `lf_lstm:dnn`) is MMSA's LF_DNN. The sub-networks are
TFN's (`tfn.UnimodalEncoders`, spec §1-2).

Symbols: l/a/v = text/audio/vision; z_m the modality's vector (`text_out` entries for text, `hidden[m]` otherwise).
Official code: MMSA `models/singleTask/LF_DNN.py` (MIT); re-implemented, nothing copied.

Parity: with MMSA's LF_DNN weights converted (affectfuse/convert/lf_lstm.py), `lf_lstm:dnn` reproduces its output,
loss and every gradient within 1e-5 (regression and classification; tests/parity/test_lf_lstm.py,
docs/parity/lf_lstm.md). The LSTM encoder of audio/vision is the text one's, which that test covers.

Deviations from MMSA:
- Padding is skipped (`mask_padding=True`; False counts every step as real, as MMSA): the LSTMs are packed by each
  sample's real length and audio/vision averaged over real steps (MMSA's `need_normalized` loader averages over the
  padded length; its text LSTM runs over the padding).
- [z_l; z_a; z_v] in the corpus's modality order; MMSA concatenates audio, video, text. A permutation of the first
  post-fusion layer's columns, which the converter applies: no effect on what the model computes.
- Corpora without a modality (POM has no text) fuse the modalities they have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..config import InputSpec, Modalities, Recipe, TrainConfig
from ..config.registry import Variant, register_model
from ..data.batch import Batch
from .base import FusionModel, Output
from .layers import Dropout
from .tfn import UnimodalEncoders


@dataclass(frozen=True, kw_only=True)
class LFLSTMConfig:
    """Hyper-parameters of LF-LSTM. Defaults are MMSA's CMU-MOSI setting for LF_DNN (config_regression.json)."""

    encoder: Literal["lstm", "dnn"] = "lstm"
    """Audio/vision encoders: "lstm", the LSTM sub-network over their steps (LF-LSTM); "dnn", TFN's utterance-level
    sub-network on their averages (MMSA's LF_DNN). Text always has the LSTM one."""
    hidden: Modalities[int] = Modalities(text=128, audio=16, vision=128)
    """Hidden size of each modality's sub-network (`hidden_dims`, MMSA order text/audio/video)."""
    text_out: int = 256
    """Size of z_l (`text_out`)."""
    dropout: Modalities[float] = Modalities(text=0.2, audio=0.2, vision=0.2)
    """Dropout inside each sub-network."""
    post_fusion_dim: int = 128
    """Width of the two hidden layers after the concatenation."""
    post_fusion_dropout: float = 0.2
    """Dropout on the concatenation."""
    mask_padding: bool = True
    """Skip padded steps (packed LSTMs, masked means). False: every step counts as real (MMSA)."""


def _mmsa(hidden: Modalities[int], text_out: int, post: int, dropout: tuple[float, float, float, float], *,
          bs: int, lr: float, wd: float, dataset: str) -> Recipe[LFLSTMConfig]:
    audio, vision, text, post_dropout = dropout  # MMSA's order
    return Recipe(
        model=LFLSTMConfig(hidden=hidden, text_out=text_out, post_fusion_dim=post, post_fusion_dropout=post_dropout,
                           dropout=Modalities(text=text, audio=audio, vision=vision)),
        train=TrainConfig(lr=lr, weight_decay=wd, batch_size=bs, patience=8, max_epochs=100),
        source=f"MMSA config_regression.json, lf_dnn/{dataset} (Adam with L2 decay, early stop 8 on validation L1)",
    )


RECIPES = {
    "mosi": _mmsa(Modalities(text=128, audio=16, vision=128), 256, 128, (0.2, 0.2, 0.2, 0.2),
                  bs=128, lr=1e-3, wd=1e-2, dataset="mosi"),
    "mosei": _mmsa(Modalities(text=128, audio=32, vision=128), 128, 128, (0.2, 0.2, 0.2, 0.2),
                   bs=64, lr=2e-3, wd=1e-3, dataset="mosei"),
    "sims": _mmsa(Modalities(text=128, audio=32, vision=128), 256, 32, (0.3, 0.3, 0.3, 0.5),
                  bs=128, lr=5e-3, wd=5e-3, dataset="sims"),
    "synthetic": Recipe(
        model=LFLSTMConfig(hidden=Modalities(text=32, audio=16, vision=16), text_out=16, post_fusion_dim=32,
                           dropout=Modalities(text=0.1, audio=0.1, vision=0.1), post_fusion_dropout=0.1),
        train=TrainConfig(lr=3e-3, batch_size=32, patience=6, max_epochs=25),
        source="affectfuse: sized for the built-in synthetic corpus",
    ),
}

VARIANTS = {"dnn": Variant("MMSA's LF_DNN: audio/vision by utterance-level sub-networks", {"encoder": "dnn"})}


@register_model("lf_lstm", config=LFLSTMConfig, recipes=RECIPES, variants=VARIANTS)
class LFLSTM(FusionModel):
    def __init__(self, config: LFLSTMConfig, spec: InputSpec) -> None:
        super().__init__(config, spec)
        lstm = spec.modalities if config.encoder == "lstm" else ("text",)
        self.encoders = UnimodalEncoders(spec, config.hidden, config.dropout, config.text_out, config.mask_padding,
                                         lstm=lstm)
        fused = sum(self.encoders.out_dims.values())
        self.post_fusion = nn.Sequential(
            Dropout(config.post_fusion_dropout),
            nn.Linear(fused, config.post_fusion_dim),
            nn.ReLU(),
            nn.Linear(config.post_fusion_dim, config.post_fusion_dim),
            nn.ReLU(),
            nn.Linear(config.post_fusion_dim, spec.output_size),
        )

    def forward(self, batch: Batch) -> Output:
        z = self.encoders(batch)
        fused = torch.cat([z[m] for m in self.spec.modalities], dim=-1)  # [z_l; z_a; z_v]
        return Output(self.shape_output(self.post_fusion(fused)))


# `affectfuse tune`: sub-network and fusion widths, dropout, learning rate and decay. Format: affectfuse/tune.py.
SEARCH_SPACE = {
    "hidden.text": ("choice", [32, 64, 128]),
    "hidden.audio": ("choice", [8, 16, 32]),
    "hidden.vision": ("choice", [16, 32, 64, 128]),
    "text_out": ("choice", [32, 64, 128, 256]),
    "post_fusion_dim": ("choice", [32, 64, 128]),
    "post_fusion_dropout": ("float", 0.0, 0.5),
    "train.lr": ("log", 1e-4, 5e-3),
    "train.weight_decay": ("choice", [0.0, 1e-4, 1e-3, 1e-2]),
}
