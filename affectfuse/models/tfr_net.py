"""TFR-Net: Transformer-based Feature Reconstruction Network (Yuan, Li, Xu, Yu, ACM MM 2021).

Robust sentiment analysis under randomly missing features. The network sees only the *incomplete* input (a random
fraction r of each modality's real positions dropped, `robustness.missing.drop_features`); the complete input is
the target of a reconstruction loss that pushes the features towards what was dropped:

1. Text: the text encoder (fine-tuned BERT in the paper) on the incomplete tokens, then dropout. Every modality m is
   brought to width d by a "same" temporal convolution X̂_m = Conv1D(X_m, k_m) (none when it is already d wide).
2. Intra- and inter-modal alignment (MulT's transformers): for each target m, a self-attention transformer and one
   crossmodal transformer per source s ≠ m, concatenated along the channels:
       H_m = [SA_m(X̂_m); CM_{s1→m}(X̂_m, X̂_s1); CM_{s2→m}(X̂_m, X̂_s2)] ∈ R^{T_m x Md}.
3. Fusion ("c_gate"), per modality: a bidirectional GRU over H_m, a convolutional gate g = σ(Conv1D(GRU(H_m))),
   u_t = tanh(W [H_m,t; tanh(GRU(H_m)_t) ⊙ g_t]), max-pooled over time. The M pooled vectors are concatenated and
   classified by BatchNorm → Linear → LeakyReLU → Dropout → Linear.
4. Reconstruction (training only, under `aux`): a "final" transformer reads H_m with its T_m time steps as the
   embedding (width T_m, one head, no positions), so each of the Md channels is one token; a Linear generator maps
   its output back to the raw width of m, X'_m ∈ R^{T_m x D_m}.

Objective: L = L_task + Σ_m w_m L_rec^m, with L_rec^m the SmoothL1 between X'_m and the complete X_m at the dropped
real positions only (summed, divided by their number of elements + 1e-4). The text target is the text encoder's
output on the complete tokens, not detached (as the official code: the reconstruction loss also trains BERT through
its target). The official code has a CMD term too (`weight_sim_loss`), inactive in every official config; it is not
built.

Symbols: l/a/v = text/audio/vision; M the modalities present; d = `dim`; T_m the corpus's padded length of m
(`spec.lengths`), which every batch is padded to (the final transformer's width); kept/dropped as
`robustness.missing`. Spec: shared/spec/methods.md §5. Official code: the copy in sunlicai/EMT-DLFR
(`models/missingTask/TFR_NET`, MIT; also thuiar/TFR-Net and MMSA's `missingTask/TFR_NET`); re-implemented, nothing
copied.

Deviations from the official code:
- The final transformer's axis (`final_axis`). The official code hands the final transformer H_m permuted to
  (B, Md, T_m), which its (sequence, batch, embedding) convention reads as a *sequence of the B samples* with the Md
  channels as the batch: the reconstruction of a sample attends to the other samples of its batch (with `causal`,
  to those before it). Here ("feature", the reading of the spec) the Md channels of one sample are the sequence and
  samples never mix; "batch" restores the official behaviour. Predictions never read the final transformer (it only
  feeds the generator), so this changes the reconstruction loss and through it training, not how a trained model
  predicts. Measured on the parity fixture (tests/fixtures/parity/tfr_net, official weights, 6 samples): the
  prediction is unchanged, the reconstruction terms move from (0.774, 0.621, 0.307) to (0.742, 0.594, 0.315)
  (text, audio, vision) and their weighted sum from 11.255 to 11.207.
- Padding (`mask_padding`, default True). The official transformers attend over padded steps, the fusion max-pools
  over them, and its positions come from the step values (a step whose first channel is exactly 0 gets position
  zero). Here every sequence is moved to the front (`layers.front_align`) and padded to T_m, attention masks padded
  keys, padded steps are zeroed before the convolutions and the final transformer, and the max-pool reads real steps
  only (a sample with no real step pools to zeros): predictions do not depend on how a batch is padded.
  `mask_padding=False` attends and pools over padded steps as the official code (positions still count steps).
  The parity fixtures are unpadded, where both agree.
- Missing simulation, as EMT-DLFR here: `loss` draws a new incomplete view at every call from a per-model generator
  seeded by `missing_seed` (the official loader draws static masks once per split; rate 0.4 in `run.py`, 0.5 in
  the recipes to match EMT-DLFR's). `forward` predicts from the batch as given; `loss_given_missing(batch, kept)`
  takes a fixed incomplete view (the parity tests feed it the official masks).
- Training schedule: the official trainer leaves the reconstruction loss out of the first epoch, and steps the
  optimiser after every batch while zeroing gradients only every 4 batches (a running sum of up to 4 batches'
  gradients). The generic trainer has no epoch in the loss contract and steps on each batch's own gradient: the
  recipes use `accumulate=1`, which keeps the official number of steps per epoch. Not measured.
- Precomputed text features (no BERT): the text stream starts from them (the official code has only the BERT path).

Parity (tests/parity/test_tfr_net.py, docs/parity/tfr_net.md): with the official weights converted by
`affectfuse.convert.tfr_net` and `final_axis="batch"`, the official prediction, every loss term and the gradients of
all 540 parameters are matched to 1e-5 (measured: 5.1e-6 at most) on a tiny BERT with the official static missing
masks (`loss_given_missing`), in eval mode and in train mode with dropout 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import MODALITIES, InputSpec, Modalities, Recipe, TrainConfig
from ..config.registry import register_model
from ..data.batch import Batch
from ..robustness.missing import apply_kept, drop_features
from .base import FusionModel, Losses, Output, task_loss
from .layers import Dropout, TransformerEncoder, front_align, pack_real_steps
from .text_encoder import TextEncoder, bert_param_groups

MIN_SELF_LAYERS = 3
"""The self-attention and final transformers have max(layers, 3) layers (official code)."""
REC_EPS = 1e-4
"""The official reconstruction loss's denominator offset (RECLoss.eps)."""


@dataclass(frozen=True, kw_only=True)
class TFRNetConfig:
    """Hyper-parameters of TFR-Net. Defaults are the official CMU-MOSI setting (EMT-DLFR repo, config_regression.py
    `__TFR_Net`, which is the same for MOSEI)."""

    dim: int = 30
    """Width d of every alignment transformer (`dst_feature_dim_nheads[0]`)."""
    heads: int = 6
    """Heads of the alignment transformers; must divide d. The final transformers have one."""
    layers: int = 3
    """Crossmodal layers (`nlevels`); the self-attention and final transformers have max(layers, 3)."""
    kernel: Modalities[int] = Modalities(text=1, audio=5, vision=3)
    """Odd kernel of each "same" temporal convolution (`conv1d_kernel_size_{l,a,v}`)."""
    text_dropout: float = 0.2
    """Dropout on the text encoder's output."""
    attn_dropout: Modalities[float] = Modalities(text=0.2, audio=0.1, vision=0.0)
    """Attention dropout of the crossmodal transformers whose *source* is each modality (`attn_dropout`,
    `attn_dropout_a`, `attn_dropout_v`, keyed as the official `get_network`)."""
    self_attn_dropout: float = 0.2
    """Attention dropout of the self-attention and final transformers (the official code reuses the text value)."""
    relu_dropout: float = 0.2
    embed_dropout: float = 0.2
    res_dropout: float = 0.2
    causal: bool = True
    """The official `attn_mask`: every transformer hides keys later than the query (+ |T_S - T_T| across lengths)."""
    fusion_hidden: Modalities[int] = Modalities(text=36, audio=20, vision=48)
    """GRU width and pooled width of each modality's gate (`fusion_{t,a,v}_hid`)."""
    fusion_gru_layers: int = 3
    fusion_dropout: float = 0.2
    """Dropout on each pooled modality vector (`fusion_drop`)."""
    cls_hidden: int = 128
    cls_dropout: float = 0.0
    reconstruction_weight: Modalities[float] = Modalities(text=5.0, audio=2.0, vision=20.0)
    """w_m of each reconstruction term (`weight_gen_loss`)."""
    final_axis: Literal["feature", "batch"] = "feature"
    """The sequence axis of the final transformer: the channels of one sample, or the official samples of the batch
    (module docstring, Deviations)."""
    mask_padding: bool = True
    """Mask padded steps in attention and pooling (module docstring, Deviations); False: the official behaviour."""
    missing_rate: float = 0.5
    """Expected fraction of real positions dropped in the incomplete view, every modality."""
    missing_seed: int = 111
    """Seed of the generator drawing the incomplete views."""
    text_lr: float = 1e-5
    """Learning rate of BERT (`learning_rate_bert`); the rest uses the training config's lr."""
    text_weight_decay: float = 1e-4
    """L2 decay of BERT's weights (none on its biases and LayerNorms); the rest uses the training config's."""
    bert_path: str = ""
    """Local folder of the BERT model, used only when the corpus's text is BERT token ids; nothing is downloaded."""


def _train(*, plateau: int) -> TrainConfig:
    """Adam, BERT 1e-5 / others 2e-3 with L2 1e-3, elements clipped to ±0.8, lr x0.1 after `plateau` bad epochs,
    early stop after 6; the official code has no epoch cap."""
    return TrainConfig(
        lr=2e-3, weight_decay=1e-3, batch_size=16, grad_clip_value=0.8, plateau_patience=plateau, plateau_factor=0.1,
        patience=6, max_epochs=200,
    )


RECIPES = {
    "mosi": Recipe(
        model=TFRNetConfig(),
        train=_train(plateau=5),
        source="official config_regression.py __TFR_Net/mosi (EMT-DLFR repo); missing rate 0.5 as EMT-DLFR's recipe",
    ),
    "mosei": Recipe(
        model=TFRNetConfig(),
        train=_train(plateau=5),
        source="official config_regression.py __TFR_Net/mosei (identical to mosi)",
    ),
    "sims": Recipe(
        model=TFRNetConfig(
            layers=2, relu_dropout=0.0, embed_dropout=0.1, cls_dropout=0.1,
            reconstruction_weight=Modalities(text=1.0, audio=0.01, vision=1e-4),
        ),
        train=_train(plateau=10),
        source="official config_regression.py __TFR_Net/sims (its unused `trans_hid_*` generator sizes dropped)",
    ),
    "synthetic": Recipe(
        model=TFRNetConfig(
            dim=8, heads=2, layers=1, kernel=Modalities(text=1, audio=3, vision=3), text_dropout=0.0,
            attn_dropout=Modalities(text=0.0, audio=0.0, vision=0.0), self_attn_dropout=0.0, relu_dropout=0.0,
            embed_dropout=0.0, res_dropout=0.0, fusion_hidden=Modalities(text=8, audio=8, vision=8),
            fusion_gru_layers=1, fusion_dropout=0.0, cls_hidden=32, missing_rate=0.2,
            reconstruction_weight=Modalities(text=0.1, audio=0.1, vision=0.1),
        ),
        train=TrainConfig(lr=2e-3, batch_size=64, patience=5, max_epochs=30, grad_clip_value=0.8),
        source="affectfuse: sized for the built-in synthetic corpus (not tuned)",
    ),
}


# ---------------------------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------------------------


class SameConv(nn.Module):
    """X̂ = Conv1D(X, k) with (k - 1) / 2 zero steps on each side, no bias: the length is kept (official)."""

    def __init__(self, in_dim: int, dim: int, kernel: int) -> None:
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"TFR-Net's temporal convolutions keep the length: the kernel must be odd, got {kernel}")
        self.conv = nn.Conv1d(in_dim, dim, kernel, padding=(kernel - 1) // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, D_in) -> (B, T, d)
        return self.conv(x.transpose(1, 2)).transpose(1, 2)


class GatedPooling(nn.Module):
    """The "c_gate" fusion encoder of one modality: BiGRU, convolutional gate, tanh projection, max over time."""

    def __init__(self, in_dim: int, hidden: int, gru_layers: int, dropout: float) -> None:
        super().__init__()
        self.gru = nn.GRU(in_dim, hidden, num_layers=gru_layers, bidirectional=True, batch_first=True)
        self.gate = nn.Conv1d(2 * hidden, 1, kernel_size=3, padding=1)
        self.project = nn.Linear(2 * hidden + in_dim, hidden)
        self.drop = Dropout(dropout)

    def forward(self, h: Tensor, mask: Tensor, *, pool_mask: Tensor | None) -> Tensor:
        """H_m (B, T, Md), its front-aligned (B, T) mask -> (B, hidden); `pool_mask` None pools over every step."""
        packed = pack_real_steps(h, mask)  # a sample with no real step runs on one (zero) step
        out, _ = nn.utils.rnn.pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=h.shape[1])
        g = torch.sigmoid(self.gate(out.transpose(1, 2))).transpose(1, 2)  # (B, T, 1)
        u = torch.tanh(self.project(torch.cat([h, torch.tanh(out) * g], dim=-1)))  # (B, T, hidden)
        if pool_mask is not None:
            u = u.masked_fill(~pool_mask.unsqueeze(-1), float("-inf"))
            pooled = u.amax(1)
            pooled = pooled.masked_fill(~pool_mask.any(1, keepdim=True), 0.0)
        else:
            pooled = u.amax(1)
        return self.drop(pooled)


def reconstruction_loss(reconstruction: Tensor, target: Tensor, dropped: Tensor) -> Tensor:
    """SmoothL1 summed over the dropped real positions, divided by their number of elements + 1e-4 (official).

    Args:
        reconstruction, target: (B, T, D).
        dropped: (B, T) bool, True where a real position was dropped.
    """
    gate = dropped.to(reconstruction.dtype).unsqueeze(-1).expand_as(reconstruction)  # (B, T, D)
    error = F.smooth_l1_loss(reconstruction * gate, target * gate, reduction="sum")
    return error / (gate.sum() + REC_EPS)


@dataclass
class TFRState:
    """The incomplete view through the alignment module."""

    H: dict[str, Tensor]
    """H_m (B, T_m, Md): the aligned features of each modality, front-aligned and padded to T_m."""
    masks: dict[str, Tensor]
    """(B, T_m) real positions of H_m."""


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------


@register_model("tfr_net", config=TFRNetConfig, recipes=RECIPES)
class TFRNet(FusionModel):
    def __init__(self, config: TFRNetConfig, spec: InputSpec) -> None:
        super().__init__(config, spec)
        self.modalities = spec.modalities
        d, M = config.dim, len(spec.modalities)
        self.text_encoder = TextEncoder(spec, bert_path=config.bert_path) if "text" in spec.dims else None
        raw = {m: self.text_encoder.out_dim if m == "text" else spec.dims[m] for m in self.modalities}
        self.text_drop = Dropout(config.text_dropout)
        # As the official code: a modality already d wide is not convolved.
        self.conv = nn.ModuleDict(
            {m: SameConv(w, d, config.kernel[m]) if w != d else nn.Identity() for m, w in raw.items()}
        )
        shared = dict(
            embed_dropout=config.embed_dropout, relu_dropout=config.relu_dropout, res_dropout=config.res_dropout,
            causal=config.causal, init="xavier",
        )
        aligned = dict(shared, position_start=1, positions=True, separate_kv_dropout=True)
        self.self_attention = nn.ModuleDict(
            {
                m: TransformerEncoder(
                    d, config.heads, max(config.layers, MIN_SELF_LAYERS), attn_dropout=config.self_attn_dropout,
                    **aligned,
                )
                for m in self.modalities
            }
        )
        self.crossmodal = nn.ModuleDict(
            {
                f"{s}_to_{t}": TransformerEncoder(
                    d, config.heads, config.layers, cross=True, attn_dropout=config.attn_dropout[s], **aligned
                )
                for t in self.modalities
                for s in self.sources(t)
            }
        )
        self.fusion = nn.ModuleDict(
            {
                m: GatedPooling(M * d, config.fusion_hidden[m], config.fusion_gru_layers, config.fusion_dropout)
                for m in self.modalities
            }
        )
        pooled = sum(config.fusion_hidden[m] for m in self.modalities)
        self.classifier = nn.Sequential(
            nn.BatchNorm1d(pooled),
            nn.Linear(pooled, config.cls_hidden),
            nn.LeakyReLU(),
            Dropout(config.cls_dropout),
            nn.Linear(config.cls_hidden, spec.output_size),
        )
        # Training only: the final transformers (embedding = the T_m time steps) and the generators.
        self.aux = nn.ModuleDict(
            {
                "final": nn.ModuleDict(
                    {
                        m: TransformerEncoder(
                            spec.lengths[m], 1, max(config.layers, MIN_SELF_LAYERS),
                            attn_dropout=config.self_attn_dropout, positions=False, **shared,
                        )
                        for m in self.modalities
                    }
                ),
                "generator": nn.ModuleDict({m: nn.Linear(M * d, raw[m]) for m in self.modalities}),
            }
        )
        self.generator = torch.Generator().manual_seed(config.missing_seed)

    def sources(self, target: str) -> list[str]:
        return [m for m in MODALITIES if m in self.modalities and m != target]

    def padded(self, x: Tensor, mask: Tensor, m: str) -> tuple[Tensor, Tensor]:
        """Front-aligned x (B, T_m, D) and its mask, padded (or cut, where only padding is cut) to the corpus's T_m."""
        x, lengths = front_align(x, mask)
        length = self.spec.lengths[m]
        if int(lengths.max()) > length:
            raise ValueError(
                f"a {m} sequence has {int(lengths.max())} real steps, more than the {length} of the spec the TFR-Net "
                "model was built for (its final transformer is as wide as that length)"
            )
        x = F.pad(x[:, :length], (0, 0, 0, max(0, length - x.shape[1])))
        return x, torch.arange(length, device=x.device) < lengths.unsqueeze(-1)

    def inputs(self, batch: Batch) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Every modality front-aligned and padded to T_m, text encoded: X_m (B, T_m, D_m) and masks (B, T_m)."""
        x, masks = {}, {}
        for m in self.modalities:
            x[m], masks[m] = self.padded(batch.features[m], batch.masks[m], m)
            if m == "text":
                x[m] = self.text_encoder(x[m], masks[m])
        return x, masks

    def align(self, x: dict[str, Tensor], masks: dict[str, Tensor]) -> TFRState:
        """H_m = [SA_m(X̂_m); CM_{s→m}(X̂_m, X̂_s) for each source s], each (B, T_m, Md)."""
        key_mask = masks if self.config.mask_padding else dict.fromkeys(masks)
        x_hat = {}
        for m in self.modalities:
            h = self.text_drop(x[m]) if m == "text" else x[m]
            if self.config.mask_padding:
                h = h * masks[m].unsqueeze(-1).to(h.dtype)
            x_hat[m] = self.conv[m](h)  # (B, T_m, d)
        H = {}
        for t in self.modalities:
            parts = [self.self_attention[t](x_hat[t], key_mask[t])]
            for s in self.sources(t):
                parts.append(
                    self.crossmodal[f"{s}_to_{t}"](
                        x_hat[t], key_mask[t], context=x_hat[s], context_mask=key_mask[s]
                    )
                )
            H[t] = torch.cat(parts, dim=-1)  # (B, T_t, Md)
        return TFRState(H=H, masks=masks)

    def predict(self, state: TFRState) -> Tensor:
        pool = self.config.mask_padding
        pooled = [
            self.fusion[m](state.H[m], state.masks[m], pool_mask=state.masks[m] if pool else None)
            for m in self.modalities
        ]
        return self.shape_output(self.classifier(torch.cat(pooled, dim=-1)))

    def forward(self, batch: Batch) -> Output:
        return Output(self.predict(self.align(*self.inputs(batch))))

    def reconstruct(self, state: TFRState, m: str) -> Tensor:
        """X'_m (B, T_m, D_m): the generator on the final transformer's output."""
        h = state.H[m]
        if self.config.mask_padding:
            h = h * state.masks[m].unsqueeze(-1).to(h.dtype)
        final = self.aux["final"][m]
        if self.config.final_axis == "feature":  # tokens: the Md channels of a sample, embedded by their T_m steps
            g = final(h.transpose(1, 2)).transpose(1, 2)
        else:  # the official reading: tokens are the B samples, one sequence per channel
            g = final(h.permute(2, 0, 1)).permute(1, 2, 0)
        return self.aux["generator"][m](g)

    def loss(self, batch: Batch) -> Losses:
        """The training objective on a fresh incomplete view of `batch` (see `loss_given_missing`)."""
        _, kept = drop_features(batch, self.config.missing_rate, generator=self.generator, spec=self.spec)
        return self.loss_given_missing(batch, kept)

    def loss_given_missing(self, batch: Batch, kept: dict[str, Tensor]) -> Losses:
        """L_task on the incomplete view fixed by `kept` (modality -> (B, T_m) bool, True at kept real positions)
        plus the weighted reconstruction terms; terms `task`, `reconstruction` (weighted sum) and
        `reconstruction_<m>` (unweighted)."""
        incomplete = apply_kept(batch, kept, spec=self.spec)
        state = self.align(*self.inputs(incomplete))
        prediction = self.predict(state)
        task = task_loss(prediction, batch.label, self.spec)
        complete, _ = self.inputs(batch)  # targets (text: the encoder on the complete tokens, not detached)
        reconstruction = {}
        for m in self.modalities:
            dropped, _ = self.padded((batch.masks[m] & ~kept[m]).unsqueeze(-1).to(task.dtype), batch.masks[m], m)
            reconstruction[m] = reconstruction_loss(self.reconstruct(state, m), complete[m], dropped[..., 0] > 0)
        weighted = sum(self.config.reconstruction_weight[m] * v for m, v in reconstruction.items())
        terms = {"task": task, "reconstruction": weighted}
        terms |= {f"reconstruction_{m}": v for m, v in reconstruction.items()}
        return Losses(
            total=task + weighted, terms={k: v.detach() for k, v in terms.items()}, prediction=prediction.detach()
        )

    def param_groups(self, train: TrainConfig) -> list[dict[str, Any]]:
        """As the official optimiser: BERT with decay, BERT's biases and LayerNorms without (both `text_lr`), and
        everything else at the training config's lr and weight decay."""
        c = self.config
        groups = []
        if self.text_encoder is not None:
            groups = bert_param_groups(self.text_encoder, lr=c.text_lr, weight_decay=c.text_weight_decay)
        chosen = {id(p) for g in groups for p in g["params"]}
        other = [p for p in self.parameters() if p.requires_grad and id(p) not in chosen]
        return [*groups, {"params": other, "lr": train.lr, "weight_decay": train.weight_decay}]


# `affectfuse tune`: width (a multiple of the 6 heads), depth, dropouts, reconstruction strength and learning rate.
SEARCH_SPACE = {
    "dim": ("choice", [24, 30, 36]),
    "layers": ("int", 1, 3),
    "embed_dropout": ("float", 0.0, 0.3),
    "fusion_dropout": ("float", 0.0, 0.4),
    "missing_rate": ("float", 0.1, 0.6),
    "train.lr": ("log", 3e-4, 3e-3),
}
