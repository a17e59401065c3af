"""LMF: Low-rank Multimodal Fusion with modality-specific factors (Liu, Shen et al., ACL 2018).

TFN computes h = W · Z with Z = ⊗_m [1; z_m], a weight tensor W of size d_y x ∏_m (d_m + 1). LMF writes W as a sum of
r rank-one terms built from modality-specific factors w_m^(i) ∈ R^{(d_m+1) x d_y}, which lets the product be taken
*before* the outer product ever exists:

    h = Σ_{i=1..r} ∏_m ([1; z_m] · w_m^(i))          (∏: element-wise over modalities)

so the cost falls from O(d_y ∏_m d_m) to O(d_y r Σ_m d_m). The unimodal sub-networks are TFN's.
Spec: shared/spec/methods.md §2. Official code: Justin1904/Low-rank-Multimodal-Fusion (no licence; re-implemented).

Deviations from the paper (all follow the official code unless noted):
- The rank terms are combined with a learned 1 x r weighting plus a bias (official code) instead of the paper's
  plain sum; with weights of one and a zero bias the two coincide (`test_lmf.py` checks the identity with TFN).
- There is no post-fusion network: d_y is the output size itself (1 for MOSI, 17 for POM, 2 per IEMOCAP emotion).
- Every parameter is trained, including the rank weighting and bias, which the official optimiser groups skipped
  until 2020 (LMF issue #9; MMSA's positional slice still skips them). The factors have their own learning rate,
  selected by name in `param_groups`.
- Modalities absent from a corpus (POM has no text) are left out of the product.

Deviations from the official code, each with the option that restores it (measured on the parity fixtures):
- Padding is skipped (`mask_padding=True`): audio/vision averaged over real steps only, the text LSTM packed by
  length, so a prediction does not depend on its padding or its batchmates. The official code runs the LSTM over
  the padding and its data average audio/vision over the padded length (the LMF pickles, MMSA's loader). On the
  padded parity fixture (2 of 8 samples padded, predictions around 0.4) the official predictions of the padded
  samples move by up to 0.049 against the same samples unpadded; ours equal the official unpadded ones to 3e-8.
  `mask_padding=False` is the official behaviour (tested).
- Loss averaged over the batch (`loss_reduction="mean"`; official: summed, `size_average=False`): the gradient is
  exactly 1/B of the official one (tested), so the loss does not depend on the batch size; Adam's step is invariant
  to the constant factor except through weight decay, whose relative strength the sum weakens B-fold. The MMSA
  settings our MOSI/MOSEI/SIMS recipes come from average. `loss_reduction="sum"` restores the official loss.
- `use_softmax` as the official option, off by default as there.

Parity: outputs, each loss and every gradient equal the official code's and MMSA's LMF within 1e-5 in eval and in
train mode without dropout (tests/parity/test_lmf.py, fixtures from tests/fixtures/parity/make_lmf.py;
docs/parity/lmf.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ..config import InputSpec, Modalities, Recipe, TrainConfig
from ..config.registry import register_model
from ..data.batch import Batch
from .base import FusionModel, Losses, Output
from .tfn import UnimodalEncoders, append_one, reduce_loss


@dataclass(frozen=True, kw_only=True)
class LMFConfig:
    """Hyper-parameters of LMF. Defaults are MMSA's CMU-MOSI setting (the LMF repo publishes no MOSI row)."""

    hidden: Modalities[int] = Modalities(text=128, audio=16, vision=128)
    """Width of each sub-network (text: LSTM hidden size h_l)."""
    text_out: int = 64
    """Size of z_t (the training scripts use h_l / 2)."""
    dropout: Modalities[float] = Modalities(text=0.3, audio=0.3, vision=0.3)
    rank: int = 3
    """Rank r of the modality-specific factors (the paper searches {1, 4, 8, 16})."""
    factor_lr: float = 1e-3
    """Learning rate of the modality factors (the other parameters use the training config's `lr`)."""
    use_softmax: bool = False
    """Softmax over each target's outputs, as the official `use_softmax` (off by default there too). Our
    classification loss takes logits, so switching it on reproduces the official double softmax."""
    mask_padding: bool = True
    """Skip padded steps (masked means, packed LSTM). False: every step counts as real, as the official code."""
    loss_reduction: Literal["mean", "sum"] = "mean"
    """L1/cross-entropy averaged over the batch, or summed as the official training scripts ("sum")."""


def _emotion(happy: tuple, source: str) -> Recipe[LMFConfig]:
    (ha, hv, hl), (da, dv, dl), factor_lr, lr, rank, bs, wd = happy
    return Recipe(
        model=LMFConfig(
            hidden=Modalities(text=hl, audio=ha, vision=hv),
            text_out=hl // 2,
            dropout=Modalities(text=dl, audio=da, vision=dv),
            rank=rank,
            factor_lr=factor_lr,
        ),
        train=TrainConfig(lr=lr, batch_size=bs, weight_decay=wd, patience=20, max_epochs=100),
        source=source,
    )


RECIPES = {
    "mosi": Recipe(
        model=LMFConfig(rank=3),
        train=TrainConfig(lr=1e-3, batch_size=64, weight_decay=5e-3, patience=8, max_epochs=100),
        source="MMSA config_regression.json, LMF/mosi (the LMF repo has no MOSI row)",
    ),
    "mosei": Recipe(
        model=LMFConfig(dropout=Modalities(text=0.2, audio=0.2, vision=0.2), rank=4),
        train=TrainConfig(lr=1e-3, batch_size=32, weight_decay=1e-3, patience=8, max_epochs=100),
        source="MMSA config_regression.json, LMF/mosei",
    ),
    "sims": Recipe(
        model=LMFConfig(
            hidden=Modalities(text=64, audio=16, vision=64),
            text_out=32,
            dropout=Modalities(text=0.2, audio=0.2, vision=0.2),
            rank=4,
            factor_lr=5e-4,
        ),
        train=TrainConfig(lr=2e-3, batch_size=64, weight_decay=5e-3, patience=8, max_epochs=100),
        source="MMSA config_regression.json, LMF/sims",
    ),
    # IEMOCAP: one model per emotion (spec §0.4), settings from the LMF repo's best hyper-parameters.
    "iemocap-happy": _emotion(((4, 16, 128), (0.3, 0.1, 0.5), 3e-3, 1e-3, 1, 128, 2e-3), "LMF repo, IEMOCAP Happy"),
    "iemocap-angry": _emotion(((8, 4, 64), (0.3, 0.1, 0.15), 3e-3, 5e-4, 8, 64, 1e-3), "LMF repo, IEMOCAP Angry"),
    "iemocap-sad": _emotion(((8, 4, 128), (0.0, 0.0, 0.0), 5e-4, 3e-3, 4, 64, 2e-3), "LMF repo, IEMOCAP Sad"),
    "iemocap-neutral": _emotion(((32, 8, 64), (0.2, 0.5, 0.2), 3e-3, 5e-4, 16, 16, 2e-3), "LMF repo, IEMOCAP Neutral"),
    "pom": Recipe(
        model=LMFConfig(
            hidden=Modalities(text=64, audio=8, vision=8),
            text_out=32,
            dropout=Modalities(text=0.15, audio=0.15, vision=0.15),
            rank=8,
            factor_lr=3e-3,
        ),
        train=TrainConfig(lr=3e-3, batch_size=64, weight_decay=2e-3, patience=20, max_epochs=200),
        source="the LMF repo publishes no best POM row; best validation MAE of 16 random draws (seed 0) from its "
        "train_pom.py grid on the MFN POM release (audio+video), one training seed each, selection on validation only",
    ),
    "synthetic": Recipe(
        model=LMFConfig(
            hidden=Modalities(text=32, audio=16, vision=16),
            text_out=16,
            dropout=Modalities(text=0.1, audio=0.1, vision=0.1),
            rank=8,
            factor_lr=2e-3,
        ),
        train=TrainConfig(lr=2e-3, batch_size=32, patience=6, max_epochs=25),
        source="affectfuse: sized for the built-in synthetic corpus",
    ),
}


@register_model("lmf", config=LMFConfig, recipes=RECIPES)
class LMF(FusionModel):
    def __init__(self, config: LMFConfig, spec: InputSpec) -> None:
        super().__init__(config, spec)
        self.encoders = UnimodalEncoders(spec, config.hidden, config.dropout, config.text_out, config.mask_padding)
        d_y = spec.output_size
        # w_m^(i) for i = 1..r, stacked: (r, d_m + 1, d_y) per modality.
        self.factors = nn.ParameterDict(
            {m: nn.Parameter(torch.empty(config.rank, d + 1, d_y)) for m, d in self.encoders.out_dims.items()}
        )
        self.fusion_weights = nn.Parameter(torch.empty(1, config.rank))
        self.fusion_bias = nn.Parameter(torch.zeros(1, d_y))
        for factor in self.factors.values():
            nn.init.xavier_normal_(factor)
        nn.init.xavier_normal_(self.fusion_weights)

    def forward(self, batch: Batch) -> Output:
        z = self.encoders(batch)
        product = None
        for m in self.spec.modalities:
            # [1; z_m] · w_m^(i) for every rank term at once: (B, d_m+1) x (r, d_m+1, d_y) -> (B, r, d_y)
            projected = torch.einsum("bd,rdy->bry", append_one(z[m]), self.factors[m])
            product = projected if product is None else product * projected
        h = torch.einsum("or,bry->by", self.fusion_weights, product) + self.fusion_bias  # (B, d_y)
        if self.config.use_softmax:
            h = h.unflatten(1, (self.spec.num_targets, -1)).softmax(-1).flatten(1)
        return Output(self.shape_output(h))

    def loss(self, batch: Batch) -> Losses:
        return reduce_loss(super().loss(batch), batch, self.config.loss_reduction)

    def param_groups(self, train: TrainConfig) -> list[dict[str, Any]]:
        factors = list(self.factors.parameters())
        factor_ids = {id(p) for p in factors}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in factor_ids]
        return [{"params": factors, "lr": self.config.factor_lr}, {"params": rest, "lr": train.lr}]


# `affectfuse tune`: the LMF repo's grid (rank in {1, 4, 8, 16}, sub-network sizes, dropouts, two learning rates,
# weight decay), as ranges where the repo lists many values. Format: affectfuse/tune.py.
SEARCH_SPACE = {
    "rank": ("choice", [1, 4, 8, 16]),
    "hidden.text": ("choice", [64, 128, 256]),
    "hidden.audio": ("choice", [4, 8, 16, 32]),
    "hidden.vision": ("choice", [4, 8, 16, 32]),
    "dropout.text": ("float", 0.0, 0.5),
    "dropout.audio": ("float", 0.0, 0.5),
    "dropout.vision": ("float", 0.0, 0.5),
    "factor_lr": ("log", 1e-4, 5e-3),
    "train.lr": ("log", 1e-4, 5e-3),
    "train.weight_decay": ("choice", [0.0, 1e-4, 1e-3, 1e-2]),
}
