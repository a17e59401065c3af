"""TFN: Tensor Fusion Network (Zadeh et al., EMNLP 2017) — the baseline of LMF.

Each modality is encoded to a vector z_m (utterance-level sub-networks for audio and vision, an LSTM for text), a
constant 1 is appended, and the fused representation is the outer product

    Z = [1; z_t] ⊗ [1; z_a] ⊗ [1; z_v]        (flattened: ∏_m (d_m + 1) entries)

which holds the unimodal, bimodal and trimodal interactions at once. A small MLP (the inference sub-network) maps
Z to the prediction. Spec: shared/spec/methods.md §1. Official code: Justin1904/TensorFusionNetworks (no licence;
re-implemented from the description).

Deviations from the official code (the first two have an option restoring it; the others change nothing on the
official MOSI setting, the only one the official code has):
- Padding is skipped (`mask_padding=True`): audio and vision are averaged over their *real* steps, and the text LSTM
  is packed by true length, so a prediction does not depend on how far it was padded or on its batchmates. The
  official code runs the LSTM over the padding, and its data (the LMF pickles, MMSA's `need_normalized` loader)
  average audio/vision over the padded length. Measured on the padded parity fixture (2 of 8 samples with 1-2 of 6
  text steps and 1-2 of 3 audio/vision steps as padding, predictions around -0.4): the official predictions of the
  padded samples move by up to 0.013 against the same samples unpadded; ours equal the official unpadded ones to
  7e-7. `mask_padding=False` counts every step as real, which is the official behaviour (tested).
- L1 loss averaged over the batch (`loss_reduction="mean"`): the official script sums it, which makes the loss, the
  gradient, and so the relative strength of Adam's weight decay, scale with the batch size; the MMSA settings our
  MOSI/MOSEI/SIMS recipes come from average it. The gradients differ by the factor B exactly (tested);
  `loss_reduction="sum"` restores the official loss.
- The output sigmoid is scaled to the corpus's label range (x6 - 3 on MOSI/MOSEI, the official constants; SIMS
  [-1, 1]); targets with no known range (POM traits) get a linear output; classification gets logits (as MMSA's
  TFN). Converted official/MMSA weights carry their own constants (MMSA keeps [-3, 3] on SIMS too).
- A corpus without a modality (POM has no text) fuses only the modalities it has: Z = ⊗ over those.
- Z is flattened in the corpus's modality order (text, audio, vision); the official code flattens audio ⊗ video ⊗
  text. The order is a permutation of the first inference layer's columns (the converter applies it to official
  weights): no effect on what the model computes.

Defaults are the official training script's model (train.py: hidden audio 4 / video 16 / text 128, text_out 64,
dropouts 0.3, inference width 32); the paper's larger sizes (z_l 128, z_a = z_v = 32, 2 x FC(128)) are not in any
stored source, only in recall (spec §1).

Parity: with converted official (and MMSA) weights, outputs, every loss and every gradient equal the official code's
within 1e-5 in eval and in train mode without dropout (tests/parity/test_tfn.py, fixtures from
tests/fixtures/parity/make_tfn.py; docs/parity/tfn.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ..config import InputSpec, Modalities, Recipe, TrainConfig
from ..config.registry import register_model
from ..data.batch import Batch
from .base import FusionModel, Losses, Output
from .layers import Dropout, SubNet, TextSubNet, bounded_output, masked_mean


@dataclass(frozen=True, kw_only=True)
class TFNConfig:
    """Hyper-parameters of TFN. Defaults are the official train.py's: TFN(hidden=(4, 16, 128), text_out=64,
    dropouts 0.3, post_fusion_dim=32)."""

    hidden: Modalities[int] = Modalities(text=128, audio=4, vision=16)
    """Width of each modality's sub-network (for text: the LSTM hidden size)."""
    text_out: int = 64
    """Size of the text vector z_t after the LSTM's linear layer."""
    dropout: Modalities[float] = Modalities(text=0.3, audio=0.3, vision=0.3)
    """Dropout inside each sub-network."""
    post_fusion_dim: int = 32
    """Width of the two hidden layers of the inference sub-network."""
    post_fusion_dropout: float = 0.3
    mask_padding: bool = True
    """Skip padded steps (masked means, packed LSTM). False: every step counts as real, as the official code."""
    loss_reduction: Literal["mean", "sum"] = "mean"
    """L1/cross-entropy averaged over the batch, or summed as the official training script ("sum")."""


RECIPES = {
    "mosi": Recipe(
        model=TFNConfig(
            hidden=Modalities(text=128, audio=32, vision=128),
            text_out=32,
            dropout=Modalities(text=0.3, audio=0.3, vision=0.3),
            post_fusion_dim=64,
            post_fusion_dropout=0.5,
        ),
        train=TrainConfig(lr=1e-3, batch_size=32, patience=8, max_epochs=100),
        source="MMSA config_regression.json, TFN/mosi (the setting EMT-DLFR and DMD report TFN with)",
    ),
    "mosei": Recipe(
        model=TFNConfig(
            hidden=Modalities(text=128, audio=16, vision=128),
            text_out=128,
            dropout=Modalities(text=0.4, audio=0.4, vision=0.4),
            post_fusion_dim=16,
            post_fusion_dropout=0.4,
        ),
        train=TrainConfig(lr=5e-3, batch_size=128, patience=8, max_epochs=100),
        source="MMSA config_regression.json, TFN/mosei",
    ),
    "sims": Recipe(
        model=TFNConfig(
            hidden=Modalities(text=128, audio=32, vision=128),
            text_out=256,
            dropout=Modalities(text=0.4, audio=0.4, vision=0.4),
            post_fusion_dim=32,
            post_fusion_dropout=0.4,
        ),
        train=TrainConfig(lr=5e-4, batch_size=32, patience=8, max_epochs=100),
        source="MMSA config_regression.json, TFN/sims",
    ),
    "iemocap": Recipe(
        model=TFNConfig(),
        train=TrainConfig(lr=1e-3, batch_size=32, patience=20, max_epochs=100),
        source="TensorFusionNetworks repo defaults TFN(hidden=(4,16,128), text_out=64, dropouts 0.3, post 32); "
        "no per-emotion TFN setting is published",
    ),
    "pom": Recipe(
        model=TFNConfig(
            hidden=Modalities(text=128, audio=8, vision=8),
            text_out=64,
            dropout=Modalities(text=0.15, audio=0.15, vision=0.15),
            post_fusion_dim=32,
            post_fusion_dropout=0.15,
        ),
        train=TrainConfig(lr=1e-3, batch_size=32, patience=20, max_epochs=200),
        source="no published TFN POM setting; mid-grid values of the LMF repo's POM search (train_pom.py)",
    ),
    "synthetic": Recipe(
        model=TFNConfig(
            hidden=Modalities(text=32, audio=16, vision=16),
            text_out=16,
            post_fusion_dim=32,
            dropout=Modalities(text=0.1, audio=0.1, vision=0.1),
            post_fusion_dropout=0.1,
        ),
        train=TrainConfig(lr=2e-3, batch_size=32, patience=6, max_epochs=25),
        source="affectfuse: sized for the built-in synthetic corpus (trains in about a minute on 2 CPU cores)",
    ),
}


class UnimodalEncoders(nn.Module):
    """z_m for every modality the corpus has: sub-networks on time-averaged audio/vision, an LSTM on text.

    Shared by TFN and LMF, which use the same sub-networks (spec §2.1), and LF-LSTM, which can also run the LSTM
    sub-network on audio and vision (`lstm`: the modalities encoded by it; z_m then has `hidden[m]` entries).
    """

    def __init__(
        self,
        spec: InputSpec,
        hidden: Modalities[int],
        dropout: Modalities[float],
        text_out: int,
        mask_padding: bool = True,
        lstm: tuple[str, ...] = ("text",),
    ) -> None:
        super().__init__()
        self.mask_padding = mask_padding
        self.lstm = lstm
        self.encoders = nn.ModuleDict()
        self.out_dims = {m: (text_out if m == "text" else hidden[m]) for m in spec.modalities}
        for m in spec.modalities:
            if m in lstm:
                self.encoders[m] = TextSubNet(spec.dims[m], hidden[m], self.out_dims[m], dropout[m])
            else:
                self.encoders[m] = SubNet(spec.dims[m], hidden[m], dropout[m])

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        z = {}
        for m, encoder in self.encoders.items():
            x, mask = batch.features[m], batch.masks[m]
            if not self.mask_padding:  # the official code: padded steps enter the LSTM and the means
                mask = torch.ones_like(mask)
            z[m] = encoder(x, mask) if m in self.lstm else encoder(masked_mean(x, mask))  # (B, d_m)
        return z


def reduce_loss(losses: Losses, batch: Batch, reduction: str) -> Losses:
    """`reduction="sum"`: the official scripts' summed L1/cross-entropy (`size_average=False`), i.e. the batch mean
    times the number of terms."""
    if reduction == "mean":
        return losses
    if reduction != "sum":
        raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {reduction!r}")
    n = batch.label.numel()  # (B, K) targets: one L1 or cross-entropy term each
    return Losses(total=losses.total * n, terms={k: v * n for k, v in losses.terms.items()},
                  prediction=losses.prediction)


def append_one(z: Tensor) -> Tensor:
    """z -> [1; z], (B, d) -> (B, d + 1): the constant that keeps lower-order terms in the product."""
    return torch.cat([z.new_ones(z.shape[0], 1), z], dim=1)


def tensor_fusion(zs: list[Tensor]) -> Tensor:
    """Flattened outer product of [1; z_m] over modalities: (B, ∏ (d_m + 1))."""
    fused = append_one(zs[0])
    for z in zs[1:]:
        fused = torch.einsum("bi,bj->bij", fused, append_one(z)).flatten(1)
    return fused


@register_model("tfn", config=TFNConfig, recipes=RECIPES)
class TFN(FusionModel):
    def __init__(self, config: TFNConfig, spec: InputSpec) -> None:
        super().__init__(config, spec)
        self.encoders = UnimodalEncoders(spec, config.hidden, config.dropout, config.text_out, config.mask_padding)
        fused_dim = 1
        for d in self.encoders.out_dims.values():
            fused_dim *= d + 1
        self.inference = nn.Sequential(
            Dropout(config.post_fusion_dropout),
            nn.Linear(fused_dim, config.post_fusion_dim),
            nn.ReLU(),
            nn.Linear(config.post_fusion_dim, config.post_fusion_dim),
            nn.ReLU(),
            nn.Linear(config.post_fusion_dim, spec.output_size),
        )
        self.output = bounded_output(spec.label_range if spec.task == "regression" else None)

    def forward(self, batch: Batch) -> Output:
        z = self.encoders(batch)
        fused = tensor_fusion([z[m] for m in self.spec.modalities])  # (B, ∏ (d_m + 1))
        return Output(self.shape_output(self.output(self.inference(fused))))

    def loss(self, batch: Batch) -> Losses:
        return reduce_loss(super().loss(batch), batch, self.config.loss_reduction)


# `affectfuse tune`: what is searched and over which ranges (the format is described in affectfuse/tune.py).
SEARCH_SPACE = {
    "hidden.text": ("choice", [32, 64, 128]),
    "hidden.audio": ("choice", [4, 8, 16, 32]),
    "hidden.vision": ("choice", [4, 8, 16, 32]),
    "text_out": ("choice", [32, 64, 128]),
    "post_fusion_dim": ("choice", [16, 32, 64, 128]),
    "post_fusion_dropout": ("float", 0.0, 0.5),
    "train.lr": ("log", 1e-4, 1e-2),
    "train.weight_decay": ("choice", [0.0, 1e-4, 1e-3, 1e-2]),
}
