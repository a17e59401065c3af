"""DMD: Decoupled Multimodal Distilling for emotion recognition (Li, Wang, Cui, CVPR 2023).

Each modality is split into a part it shares with the others and a part of its own, and knowledge is then
distilled between modalities separately in the two spaces, along learned, sample-dependent graph edges:

1. Projection. X̃_m = Conv1D(X_m), a k_m-step convolution to width d with no padding (T'_m = T_m - k_m + 1).
2. Feature decoupling. Modality-specific (heterogeneous) features s_m = E_m^prt(X̃_m), one encoder per modality, and
   modality-common (homogeneous) features c_m = E^com(X̃_m), one encoder shared by all modalities (each a
   kernel-1 convolution). A decoder per modality reconstructs X̂_m = D_m([s_m; c_m]); re-encoding the
   reconstruction gives s'_m = E_m^prt(X̂_m) for the cycle-consistency term.
3. Homogeneous graph distillation (HomoGD). Per modality, a head on the flattened c_m gives a representation
   repr_m^homo and a unimodal prediction logit_m^homo; a self-attention transformer over each c_m, read out at the
   last step, gives c_fusion = [c̄_l; c̄_a; c̄_v] and its own prediction logits_c.
4. Heterogeneous graph distillation (HeteroGD). MulT's crossmodal transformers on the specific features (target T
   attends to source S: Z_{S→T} = softmax(Q_T K_Sᵀ / √d) V_S, eq. 10), a memory transformer over [Z_{S1→T}; Z_{S2→T}],
   last step h_T; a residual MLP gives repr_T^hetero and a linear layer logit_T^hetero.
5. Graph distillation unit (one per space, training only). Vertex z_m = [W_logit logit_m; W_repr repr_m]; the edge
   from teacher i to student j is e_{i→j} = W_edge [z_j; z_i] (eq. 8); the M(M-1) edges of a sample are normalised
   by softmax(α e) with α = 1/8. The distillation loss pulls every student's logit toward each *detached* teacher's,
   weighted by its edge (L_dtl = ||W ⊙ E||_1, eq. 9).
6. Fusion. σ(Linear(h_m)) per modality and σ(Linear(c_fusion)), concatenated, residual MLP, linear output.

Objective (eqs. 6 and 11, with the official code's weights; §6.3 of the spec):

    L = L_task + λ2 (L_dtl^homo + L_dtl^hetero) + λ1 (L_rec + L_cyc + γ (L_mar + L_ort))

L_task sums 8 task losses: the prediction, logit_m^homo and logit_m^hetero for each modality, and logits_c.
L_dtl of a unit = w_logit · (logit distillation) + w_reg · (prior regulariser) [+ w_repr · (representation term)].

Ablations (paper Table 3; the official code has no switches, so what each removes is our reading of the paper):
`feature_decoupling` (FD), `homo_gd`, `crossmodal_attention` (CA) and `hetero_gd`, all on by default. A switch that
is off removes its modules and its loss terms (they are absent from `Losses.terms`, not zero-weighted): without FD
both branches read X̃_m and L_rec, L_cyc, L_ort, L_mar go; without a GD unit its L_dtl goes (the unimodal heads and
their task terms stay: they are part of L_task); without CA each memory transformer attends over its own s_m. The
table's rows are registered as variants: `dmd:no_hetero_gd`, `dmd:no_ca`, `dmd:no_ca_hetero_gd`, `dmd:fd_only`,
`dmd:none` (`affectfuse table dmd-ablation` trains them all).

Symbols: l/a/v = text/audio/vision (the official code orders them l, v, a); m a modality, M how many a corpus has;
d = `dim`; T'_m the length after the projection; B the batch. Tensors are (B, T, d), channels last: a kernel-1
convolution is a per-step Linear.
Spec: shared/spec/methods.md §6 and §8. Official code: mdswyz/DMD (MIT); re-implemented, nothing copied.

Deviations from the official code (and where it differs, from the paper):
- Masks. The official code has none. Sequences are first moved to the front of their padded length
  (`layers.front_align`) and padded steps zeroed. The projection keeps the official valid convolution: output step t
  sees input steps t..t+k-1, and it is real when that window lies inside the sample's real steps, so a sample of L
  real steps keeps max(L - k + 1, 1) steps (a sample shorter than the kernel keeps one step, which sees its steps
  and zeros, as it would in a batch padded to exactly its length). Padded steps stay exactly zero through
  E^prt, E^com and D_m (all bias-free), every attention masks padded keys, and h_m / c̄_m are read at the last
  *real* step (the official code reads the last padded one). Predictions are therefore independent of padding.
- No causal ("future") attention mask by default (`causal=True` restores it): the official `attn_mask: true` hides
  source steps later than the query plus |T_S - T_T| measured on *padded* lengths, which makes predictions depend on
  padding (as in affectfuse's MulT). Measured (d 8, eval): with `causal=True` a sample's prediction moves by up to
  0.006 when a batchmate is longer in one modality only (batches are trimmed per modality to their longest sample),
  which happens on unaligned corpora; padding every modality alike (aligned corpora) changes nothing. The option
  reproduces the official masked step within 5e-7 (tests/parity/test_dmd.py); without it the official weights give
  predictions 0.003-0.007 apart on the fixtures.
- Kernel clamping. A kernel longer than the corpus's padded length T_m (utterance-level features, T_m = 1) is
  clamped to T_m: the extra taps could only ever see padding, and the official code would fail.
- Flatten-Linear heads. The homogeneous heads (time-major, as the official `c_l.transpose(0, 1).view`) and the margin
  projection (channel-major, as the official `c_l.view` on (B, d, T')) flatten c_m over a fixed length, so they are
  sized from the corpus: T'_m = spec.lengths[m] - k_m + 1 (the official code hard-codes MOSI/MOSEI lengths). A batch
  shorter than that is padded with zero steps before flattening, and padded steps are zero, so the flattened vector
  does not depend on the batch's padding for every sample whose real steps lie inside the spec length. Real steps
  beyond it (data longer than the corpus it was built for) are an error.
- L_ort. The official `CosineEmbeddingLoss(target=-1)` on (T', B, d) tensors took the cosine over the *batch* axis
  under PyTorch 1.9 and fails on current PyTorch ("1D target tensor expects 2D input tensors"); the paper's eq. (5)
  is a plain Σ_m cos(c_m, s_m) per sample. Here: Σ_m mean_b max(0, cos(flat s_m, flat c_m)) with each sample's
  (T'·d) features flattened (spec §8); zero for orthogonal features, positive for aligned ones. The official form
  makes one sample's loss depend on which other samples share its batch. `orthogonality="batch"` restores it
  (one cosine per step and channel across the batch, mean over real steps and channels; equal to the official value
  under PyTorch 1.9, tests/parity/test_dmd.py). Measured on the parity fixtures (official weights at init, d 4,
  batch 4): Σ_m L_ort is 0.73 / 0.57 per sample vs 1.17 / 0.96 across the batch (aligned / unaligned); with its
  weight λ1·γ = 0.01 the objective moves by 0.004 of 11.3 / 12.9, and the largest gradient entry by 0.01 / 0.007.
  Its effect on trained accuracy was not measured.
- L_rec / L_cyc are MSE over real steps only (official: over every padded position). The reconstruction target is
  X̃_m, the projected features (official), not the raw input of the paper's eq. (2).
- L_mar (eq. 4) follows the code, not the paper's fixed-margin class triplets: the projected common features of all
  modalities of all samples form one set of M·B; positives of an anchor are the others with *exactly* equal labels
  (always including its own other modalities), negatives the rest, margin = 0.15 · |y_anchor - y_negative|. With K
  targets the labels must be equal on every target and the gap is the mean over targets; for classification the
  gap is the fraction of targets whose class differs (for one target a fixed margin 0.15, the paper's form).
- Graph distillation. The prior p = softmax(v / 0.25) over the edges (v = 1 on text→vision and text→audio for
  HomoGD, also vision→audio for HeteroGD: ≈ 0.482 / 0.0088 and ≈ 0.327) and its regulariser
  10 · Σ_e (mean_b softmax_e - p_e)² are the code's; the paper describes neither. The loss weights each edge by
  softmax + prior. W_logit, W_repr and W_edge have no bias here: a bias shifts all edges of a sample equally and
  cancels in the softmax, so it would be a parameter that never learns. repr_m^homo is taken after the ReLU (the
  official in-place ReLU changes the tensor the distillation unit reads).
- Representation terms (spec §8): HomoGD's weighted L1 between representations (× 10) is computed and logged but
  left out of the total, as in the code (`homo_repr_in_total` adds it). HeteroGD's official term, 10 · mean_b
  max(0, cos(repr_j, sg(repr_i))) · mean_b(w), *pushes* student and teacher representations apart; it is the
  default (`hetero_repr="repel"`), and `"attract"` replaces it by the weighted L1 toward the detached teacher.
- Logit distillation uses the mean |logit_j - sg(logit_i)| over the K outputs (official: the sum over its single
  output, the same for K = 1). Classification corpora: cross-entropy for the 8 task terms, distillation on logits.
- Two-modality corpora (POM has no text): the edges are the M(M-1) directed pairs of the present modalities, the
  prior keeps its v on those edges, every memory stream is (M-1)·d wide. One modality is an error.
- Training-only layers (decoders, the per-modality homo/hetero heads, the logits_c head, the margin projection and
  both distillation units) live under `aux`, so `forward` computes only the prediction path. The official forward
  also computes `proj_cosine_*` features that no loss uses; they are left out. The projection is always applied,
  even where a modality is already d wide (official: skipped).
- Fusion follows the code: σ(Linear(h_m)) and σ(Linear(c_fusion)) *replace* the features; they are not gates that
  multiply them (h ⊙ σ(W h)), which is how a weighting of each stream would read (spec §6.7, item 7).
- Crossmodal attention dropout is keyed by the *source* modality and the memory transformers use their own field;
  both as the official code (which reuses the text value for the memory transformers).
- Text: BERT token ids go through `TextEncoder` (fine-tuned at `bert_lr`, the official 1e-4 by default); precomputed
  text features are used as they are. The text dropout acts on the encoder's output, as in the code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import InputSpec, Modalities, Recipe, TrainConfig
from ..config.registry import Variant, register_model
from ..data.batch import Batch
from .base import FusionModel, Losses, Output, task_loss
from .layers import (  # noqa: F401  (DistillationTerms, logit_distance: part of this method's vocabulary)
    DistillationTerms,
    Dropout,
    GraphDistillation,
    TransformerEncoder,
    front_align,
    logit_distance,
    parse_edges,
    read_last_real_step,
)
from .text_encoder import TextEncoder

MIN_MEMORY_LAYERS = 3
"""The memory transformers have max(layers, 3) layers (official code)."""


@dataclass(frozen=True, kw_only=True)
class DMDConfig:
    """Hyper-parameters of DMD. Defaults are the official code's CMU-MOSI setting (config/config.json)."""

    dim: int = 50
    """Width d of the projected, specific and common features (`dst_feature_dim_nheads[0]`)."""
    heads: int = 10
    """Attention heads of every transformer; must divide d."""
    layers: int = 4
    """Layers of the crossmodal and common self-attention transformers (`nlevels`); memory: max(layers, 3)."""
    kernel: Modalities[int] = Modalities(text=5, audio=5, vision=5)
    """Kernel k_m of the projection convolution (`conv1d_kernel_size_*`); clamped to the corpus length T_m."""
    text_dropout: float = 0.5
    """Dropout on the text features before the projection."""
    embed_dropout: float = 0.2
    """Dropout after the scaled input plus positions, at the entry of every transformer."""
    position_start: int = 1
    """First position of the sinusoidal table: 1 as the official (MulT/fairseq-derived) code."""
    attn_dropout: Modalities[float] = Modalities(text=0.3, audio=0.2, vision=0.0)
    """Attention dropout of the common self-attention transformer of each modality and of the crossmodal
    transformers whose *source* is that modality (official `attn_dropout`, `attn_dropout_a`, `attn_dropout_v`)."""
    memory_attn_dropout: float = 0.3
    """Attention dropout of the memory transformers (the official code reuses the text value)."""
    relu_dropout: float = 0.0
    """Dropout inside the transformers' feed-forward blocks."""
    res_dropout: float = 0.0
    """Dropout on each transformer residual branch."""
    output_dropout: float = 0.5
    """Dropout inside every residual MLP head."""
    homo_gd_size: int = 64
    """Vertex embedding size of the homogeneous distillation unit (half for the logit, half for the repr)."""
    hetero_gd_size: int = 32
    """Vertex embedding size of the heterogeneous distillation unit."""
    edge_alpha: float = 0.125
    """α in softmax(α e) over a sample's edges (official 1/8)."""
    prior_temperature: float = 0.25
    """Temperature of the edge prior softmax(v / temperature)."""
    homo_prior: tuple[str, ...] = ("text->vision", "text->audio")
    """Edges teacher->student with v = 1 in the HomoGD prior (official [0, 0, 1, 0, 1, 0]); the others have 0."""
    hetero_prior: tuple[str, ...] = ("text->vision", "text->audio", "vision->audio")
    """Edges teacher->student with v = 1 in the HeteroGD prior (official [0, 0, 1, 0, 1, 1])."""
    gd_logit_weight: float = 1.0
    """Weight of the logit distillation inside each unit (`w_losses[0]`)."""
    gd_repr_weight: float = 10.0
    """Weight of the representation term inside each unit (`w_losses[1]`)."""
    gd_reg_weight: float = 10.0
    """Weight of the prior regulariser inside each unit (`gd_reg`)."""
    causal: bool = False
    """The official `attn_mask`: hide source steps later than the query (+ |T_S - T_T|, on padded lengths) in every
    transformer. Off by default as in affectfuse's MulT: it makes predictions depend on the batch's padding."""
    homo_repr_in_total: bool = False
    """Add HomoGD's representation term to the objective (official: computed, not added)."""
    hetero_repr: Literal["repel", "attract"] = "repel"
    """HeteroGD's representation term: the official min-cosine hinge that pushes student and teacher apart, or a
    weighted L1 that pulls the student toward the detached teacher."""
    orthogonality: Literal["sample", "batch"] = "sample"
    """L_ort's cosine: per sample over its flattened (T'·d) features (paper eq. 5, spec §8), or "batch", the official
    code as PyTorch 1.9 ran it: one cosine per step and channel across the batch (see Deviations)."""
    margin_scale: float = 0.15
    """Adaptive margin of L_mar: scale · |y_anchor - y_negative|."""
    lambda1: float = 0.1
    """λ1: weight of the decoupling loss L_rec + L_cyc + γ (L_mar + L_ort) (eq. 11)."""
    gamma: float = 0.1
    """γ: weight of L_mar + L_ort inside the decoupling loss (eq. 6)."""
    lambda2: float = 0.05
    """λ2: weight of the two graph-distillation losses (eq. 11)."""
    bert_path: str = ""
    """Local folder of the BERT model, used only when the corpus's text is BERT token ids; nothing is downloaded."""
    bert_lr: float = 1e-4
    """Learning rate of the text encoder when it has parameters (BERT; official: fine-tuned at the same 1e-4)."""
    feature_decoupling: bool = True
    """FD (paper Table 3): split X̃_m into s_m and c_m. Off: both branches read X̃_m itself, and E_m^prt, E^com,
    the decoders, the margin projection and their losses (L_rec, L_cyc, L_ort, L_mar) are not built."""
    homo_gd: bool = True
    """HomoGD (Table 3): the homogeneous graph-distillation unit and its loss. Off: neither is built (the
    unimodal homogeneous heads and their task terms stay)."""
    hetero_gd: bool = True
    """HeteroGD (Table 3): the heterogeneous graph-distillation unit and its loss; off as `homo_gd`."""
    crossmodal_attention: bool = True
    """CA (Table 3): the heterogeneous branch's crossmodal transformers. Off: the memory transformer of each
    modality reads its own s_m (width d instead of (M-1)·d) and the crossmodal transformers are not built."""


def _train(**changes: Any) -> TrainConfig:
    """The official schedule: Adam without weight decay (the config's value is never used), batches of 16 summed
    over 10 before each step, clip by value 0.6 after every backward (here: before each step), ReduceLROnPlateau
    (factor 0.5, patience 5) and early stop after 10 epochs without a better validation L1 (MAE), which also selects
    the checkpoint. The official loop has no epoch cap; 100 is one here."""
    base = dict(
        lr=1e-4,
        weight_decay=0.0,
        batch_size=16,
        accumulate=10,
        grad_clip_value=0.6,
        plateau_patience=5,
        plateau_factor=0.5,
        patience=10,
        max_epochs=100,
    )
    return TrainConfig(**(base | changes))


RECIPES = {
    # On the utterance-level MOSI corpus (T = 1) every kernel is clamped to 1.
    "mosi": Recipe(
        model=DMDConfig(),
        train=_train(),
        source="DMD official config/config.json (dmd, mosi) and trains/singleTask/DMD.py",
    ),
    "mosei": Recipe(
        model=DMDConfig(
            dim=30,
            heads=6,
            kernel=Modalities(text=5, audio=1, vision=3),
            text_dropout=0.3,
            embed_dropout=0.0,
            attn_dropout=Modalities(text=0.4, audio=0.0, vision=0.0),
            memory_attn_dropout=0.4,
        ),
        train=_train(),
        source="DMD official config/config.json (dmd, mosei) and trains/singleTask/DMD.py",
    ),
    # POM has no text: the two distillation graphs have the edges audio -> vision and vision -> audio.
    "pom": Recipe(
        model=DMDConfig(
            dim=30,
            heads=6,
            layers=2,
            kernel=Modalities(text=1, audio=3, vision=3),
            text_dropout=0.0,
            embed_dropout=0.1,
            attn_dropout=Modalities(text=0.1, audio=0.1, vision=0.1),
            memory_attn_dropout=0.1,
        ),
        train=_train(lr=3e-4, accumulate=1, max_epochs=60),
        source="affectfuse's choice (no published DMD POM setting): the MOSEI width (d 30, 6 heads) with 2 layers and "
        "kernel 3 for 600 training videos, the official schedule without gradient accumulation; best validation MAE "
        "(0.931, seed 1111) of 10 runs varying lr (1e-4 with the official accumulation of 10, 3e-4, 1e-3), batch "
        "16/32, d 16/30/60, kernels 1/3 and dropouts (all within 0.931-0.945); test split not consulted",
    ),
    "synthetic": Recipe(
        model=DMDConfig(
            dim=16,
            heads=2,
            layers=1,
            kernel=Modalities(text=3, audio=3, vision=3),
            text_dropout=0.0,
            embed_dropout=0.0,
            attn_dropout=Modalities(text=0.0, audio=0.0, vision=0.0),
            memory_attn_dropout=0.0,
            output_dropout=0.1,
            homo_gd_size=16,
            hetero_gd_size=16,
        ),
        train=TrainConfig(lr=5e-3, batch_size=32, max_epochs=12, patience=4, grad_clip_value=0.6),
        source="affectfuse: sized for the built-in synthetic corpus",
    ),
}


# The rows of the paper's ablation (Table 3, unaligned MOSI/MOSEI), as `dmd:<row>`; `dmd` itself is the full model.
VARIANTS = {
    "no_hetero_gd": Variant("Table 3, w/o HeteroGD", {"hetero_gd": False}),
    "no_ca": Variant("Table 3, w/o CA (crossmodal attention in HeteroGD)", {"crossmodal_attention": False}),
    "no_ca_hetero_gd": Variant("Table 3, w/o CA and HeteroGD", {"crossmodal_attention": False, "hetero_gd": False}),
    "fd_only": Variant(
        "Table 3, FD only (no HomoGD, CA or HeteroGD)",
        {"homo_gd": False, "crossmodal_attention": False, "hetero_gd": False},
    ),
    "none": Variant(
        "Table 3, none of FD, HomoGD, CA, HeteroGD",
        {"feature_decoupling": False, "homo_gd": False, "crossmodal_attention": False, "hetero_gd": False},
    ),
}


# ---------------------------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------------------------


class Projection(nn.Module):
    """X̃_m = Conv1D(X_m): a k-step convolution to width d without padding or bias (official), T' = T - k + 1.

    Input: front-aligned steps and their mask. Padded input steps are zeroed first; an output step is real when its
    window lies inside the sample's real steps (at least one step for a non-empty sample); padded output steps are 0.
    """

    def __init__(self, in_dim: int, dim: int, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(in_dim, dim, kernel_size=kernel, bias=False)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:  # (B, T, D_in), (B, T) -> (B, T', d), (B, T')
        x = x * mask.unsqueeze(-1).to(x.dtype)
        if x.shape[1] < self.kernel:  # a batch of samples all shorter than the kernel
            x = F.pad(x, (0, 0, 0, self.kernel - x.shape[1]))
        y = self.conv(x.transpose(1, 2)).transpose(1, 2)  # (B, T', d)
        lengths = mask.sum(1)
        kept = torch.where(lengths > 0, (lengths - self.kernel + 1).clamp_min(1), 0)  # (B,)
        out_mask = torch.arange(y.shape[1], device=y.device) < kept[:, None]
        return y * out_mask.unsqueeze(-1).to(y.dtype), out_mask


def flatten_steps(x: Tensor, mask: Tensor, steps: int) -> Tensor:
    """(B, T', d) features, zero on padding -> (B, steps · d): the official flatten over the corpus's fixed length."""
    if x.shape[1] > steps:
        if mask[:, steps:].any():
            raise ValueError(
                f"a sample has more than {steps} real steps after the projection; this DMD was built for a corpus "
                "with shorter sequences (its flatten layers are sized from the corpus's InputSpec.lengths)"
            )
        x = x[:, :steps]
    return F.pad(x, (0, 0, 0, steps - x.shape[1])).flatten(1)


class ResidualMLP(nn.Module):
    """h + proj2(Dropout(ReLU(proj1(h)))): the residual block in front of every MulT-style output layer."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.proj1 = nn.Linear(dim, dim)
        self.proj2 = nn.Linear(dim, dim)
        self.drop = Dropout(dropout)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.proj2(self.drop(F.relu(self.proj1(h))))


class HomogeneousHead(nn.Module):
    """Unimodal head on a flattened c_m (B, T'·d): repr_m^homo = ReLU(proj1(c)) (B, d), and
    logit_m^homo = out(c + proj2(Dropout(repr_m^homo)))."""

    def __init__(self, flat_dim: int, dim: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.proj1 = nn.Linear(flat_dim, dim)
        self.proj2 = nn.Linear(dim, flat_dim)
        self.out = nn.Linear(flat_dim, out_dim)
        self.drop = Dropout(dropout)

    def forward(self, flat: Tensor) -> tuple[Tensor, Tensor]:
        representation = F.relu(self.proj1(flat))
        return representation, self.out(flat + self.proj2(self.drop(representation)))


def masked_mse(x: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the real steps of (B, T, d) tensors."""
    weights = mask.unsqueeze(-1).to(x.dtype)
    return ((x - target).pow(2) * weights).sum() / (weights.sum() * x.shape[-1]).clamp_min(1.0)


def orthogonality_loss(specific: Tensor, common: Tensor) -> Tensor:
    """L_ort for one modality: mean_b max(0, cos(s_m, c_m)) over each sample's flattened (T'·d) features."""
    return F.relu(F.cosine_similarity(specific.flatten(1), common.flatten(1), dim=-1)).mean()


def batch_orthogonality_loss(specific: Tensor, common: Tensor, mask: Tensor) -> Tensor:
    """L_ort for one modality as the official code under PyTorch 1.9: max(0, cos) of the (B,) vectors at each
    (step, channel), averaged over the steps real in some sample and the channels. Padded steps are zero."""
    dot = (specific * common).sum(0)  # (T', d)
    norms = (specific.pow(2).sum(0) + 1e-12) * (common.pow(2).sum(0) + 1e-12)
    steps = mask.any(0).to(dot.dtype)[:, None]  # (T', 1)
    return (F.relu(dot / norms.sqrt()) * steps).sum() / (steps.sum() * dot.shape[-1]).clamp_min(1.0)


def margin_loss(features: Tensor, labels: Tensor, *, scale: float, categorical: bool) -> Tensor:
    """L_mar as the official code: (N, d) features with (N, K) labels; positives have exactly equal labels.

    For each anchor a with positives p (equal labels, p ≠ a) and negatives n (different labels), the hinge
    max(0, scale · gap(a, n) - cos(a, p) + cos(a, n)) is averaged over all (p, n) pairs, then over the anchors
    that have both. gap = mean |y_a - y_n| over targets, or for categorical labels the fraction that differ.
    """
    n = features.shape[0]
    norms = features.pow(2).sum(-1).add(1e-8).sqrt()
    cosine = features @ features.T / (norms[:, None] * norms[None, :])  # (N, N)
    same = (labels[:, None] == labels[None, :]).all(-1)  # (N, N)
    if categorical:
        gap = (labels[:, None] != labels[None, :]).to(features.dtype).mean(-1)
    else:
        gap = (labels[:, None] - labels[None, :]).abs().to(features.dtype).mean(-1)
    positive = same & ~torch.eye(n, dtype=torch.bool, device=features.device)
    pairs = positive[:, :, None] & ~same[:, None, :]  # (N anchors, N positives, N negatives)
    hinge = F.relu(scale * gap[:, None, :] - cosine[:, :, None] + cosine[:, None, :])  # (N, N, N)
    counts = pairs.sum((1, 2))
    per_anchor = (hinge * pairs.to(hinge.dtype)).sum((1, 2)) / counts.clamp_min(1)
    return per_anchor.sum() / (counts > 0).sum().clamp_min(1)


@dataclass
class DMDState:
    """The prediction path of one batch, in the paper's symbols; all sequences front-aligned, zero on padding."""

    x_tilde: dict[str, Tensor]
    """Projected features X̃_m (B, T'_m, d)."""
    s: dict[str, Tensor]
    """Modality-specific features s_m (B, T'_m, d)."""
    c: dict[str, Tensor]
    """Modality-common features c_m (B, T'_m, d)."""
    masks: dict[str, Tensor]
    """(B, T'_m) real steps after the projection."""
    c_fusion: Tensor
    """[c̄_m for each modality]: last real steps of the common self-attention transformers (B, M·d)."""
    h: dict[str, Tensor]
    """Last real step of each memory transformer, h_m (B, (M-1)·d)."""


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------


@register_model("dmd", config=DMDConfig, recipes=RECIPES, variants=VARIANTS)
class DMD(FusionModel):
    def __init__(self, config: DMDConfig, spec: InputSpec) -> None:
        super().__init__(config, spec)
        self.modalities = spec.modalities
        if len(self.modalities) < 2:
            raise ValueError(
                f"DMD distils between modalities and needs at least two; this corpus has {self.modalities}"
            )
        homo_prior = parse_edges(config.homo_prior, "homo_prior")
        hetero_prior = parse_edges(config.hetero_prior, "hetero_prior")
        d, M, out = config.dim, len(self.modalities), spec.output_size
        # each memory stream: [Z_{S→T} for every source S]; without CA, s_T itself
        width = (M - 1) * d if config.crossmodal_attention else d

        self.text_encoder = TextEncoder(spec, bert_path=config.bert_path) if "text" in self.modalities else None
        in_dims = {m: self.text_encoder.out_dim if m == "text" else spec.dims[m] for m in self.modalities}
        self.text_drop = Dropout(config.text_dropout)
        kernels = {m: min(config.kernel[m], spec.lengths[m]) for m in self.modalities}
        self.steps = {m: spec.lengths[m] - kernels[m] + 1 for m in self.modalities}  # T'_m of the corpus
        self.project = nn.ModuleDict({m: Projection(in_dims[m], d, kernels[m]) for m in self.modalities})

        # Feature decoupling: E_m^prt per modality, one shared E^com (kernel-1 convolutions = per-step Linears).
        if config.feature_decoupling:
            self.specific = nn.ModuleDict({m: nn.Linear(d, d, bias=False) for m in self.modalities})
            self.common = nn.Linear(d, d, bias=False)

        def transformer(dim: int, layers: int, attn_dropout: float, *, cross: bool = False) -> TransformerEncoder:
            return TransformerEncoder(
                dim,
                config.heads,
                layers,
                cross=cross,
                embed_dropout=config.embed_dropout,
                position_start=config.position_start,
                attn_dropout=attn_dropout,
                relu_dropout=config.relu_dropout,
                res_dropout=config.res_dropout,
                causal=config.causal,
            )

        # Homogeneous branch: self-attention over each c_m.
        self.common_attention = nn.ModuleDict(
            {m: transformer(d, config.layers, config.attn_dropout[m]) for m in self.modalities}
        )
        # Heterogeneous branch: crossmodal transformers on the specific features, keyed "source_to_target".
        self.crossmodal = nn.ModuleDict(
            {
                f"{s}_to_{t}": transformer(d, config.layers, config.attn_dropout[s], cross=True)
                for t in self.modalities
                for s in self.sources(t)
                if config.crossmodal_attention
            }
        )
        memory_layers = max(config.layers, MIN_MEMORY_LAYERS)
        self.memory = nn.ModuleDict(
            {t: transformer(width, memory_layers, config.memory_attn_dropout) for t in self.modalities}
        )
        # Fusion: σ(Linear(·)) of every h_m and of c_fusion replaces the feature, then a residual MLP.
        self.modality_weight = nn.ModuleDict({m: nn.Linear(width, width) for m in self.modalities})
        self.common_weight = nn.Linear(M * d, M * d)
        fused = M * width + M * d
        self.fusion = ResidualMLP(fused, config.output_dropout)
        self.out = nn.Linear(fused, out)

        # Training only: what the objective reads besides the prediction.
        def unit(size: int, repr_dim: int, prior: set[tuple[str, str]], representation: str) -> GraphDistillation:
            return GraphDistillation(
                self.modalities,
                logit_dim=out,
                repr_dim=repr_dim,
                size=size,
                prior_edges=prior,
                temperature=config.prior_temperature,
                alpha=config.edge_alpha,
                representation=representation,
            )

        dropout = config.output_dropout
        self.aux = nn.ModuleDict(
            {
                "homo_head": nn.ModuleDict(
                    {m: HomogeneousHead(self.steps[m] * d, d, out, dropout) for m in self.modalities}
                ),
                "common_head": nn.Sequential(ResidualMLP(M * d, dropout), nn.Linear(M * d, out)),  # logits_c
                "hetero_head": nn.ModuleDict(
                    {m: ResidualMLP(width, dropout) for m in self.modalities}
                ),  # repr_m^hetero
                "hetero_out": nn.ModuleDict({m: nn.Linear(width, out) for m in self.modalities}),  # logit_m^hetero
            }
        )
        # The ablation switches (Table 3) leave out what they disable, so it has no parameters and no loss term.
        if config.feature_decoupling:
            self.aux["decoder"] = nn.ModuleDict({m: nn.Linear(2 * d, d, bias=False) for m in self.modalities})  # D_m
            self.aux["align"] = nn.ModuleDict({m: nn.Linear(self.steps[m] * d, d) for m in self.modalities})  # L_mar
        if config.homo_gd:
            self.aux["homo_gd"] = unit(config.homo_gd_size, d, homo_prior, "l1")
        if config.hetero_gd:
            representation = "min_cosine" if config.hetero_repr == "repel" else "l1"
            self.aux["hetero_gd"] = unit(config.hetero_gd_size, width, hetero_prior, representation)

    def sources(self, target: str) -> list[str]:
        return [m for m in self.modalities if m != target]

    def encode(self, batch: Batch) -> DMDState:
        x_tilde, masks = {}, {}
        for m in self.modalities:
            x, lengths = front_align(batch.features[m], batch.masks[m])
            mask = torch.arange(x.shape[1], device=x.device) < lengths[:, None]  # (B, T_m), real steps first
            if m == "text":
                x = self.text_drop(self.text_encoder(x, mask))
            x_tilde[m], masks[m] = self.project[m](x, mask)
        if self.config.feature_decoupling:
            s = {m: self.specific[m](x_tilde[m]) for m in self.modalities}
            c = {m: self.common(x_tilde[m]) for m in self.modalities}
        else:  # no decoupling: both spaces are the projected features themselves
            s, c = x_tilde, x_tilde
        c_fusion = torch.cat(
            [read_last_real_step(self.common_attention[m], c[m], masks[m]) for m in self.modalities], dim=-1
        )
        h = {}
        for t in self.modalities:
            if self.config.crossmodal_attention:
                # one by one: stacked as MulT's (models/grouped.py), the step took 419 ms instead of 414 at the
                # official MOSI shape (d 50, 10 heads, batch 32, 2 threads)
                z = torch.cat(
                    [
                        self.crossmodal[f"{src}_to_{t}"](s[t], masks[t], context=s[src], context_mask=masks[src])
                        for src in self.sources(t)
                    ],
                    dim=-1,
                )  # (B, T'_t, (M-1) d)
            else:
                z = s[t]  # (B, T'_t, d)
            h[t] = read_last_real_step(self.memory[t], z, masks[t])  # its last layer computes only that step
        return DMDState(x_tilde=x_tilde, s=s, c=c, masks=masks, c_fusion=c_fusion, h=h)

    def predict(self, state: DMDState) -> Tensor:
        gated = [torch.sigmoid(self.modality_weight[m](state.h[m])) for m in self.modalities]
        gated.append(torch.sigmoid(self.common_weight(state.c_fusion)))
        return self.shape_output(self.out(self.fusion(torch.cat(gated, dim=-1))))

    def forward(self, batch: Batch) -> Output:
        return Output(self.predict(self.encode(batch)))

    def loss(self, batch: Batch) -> Losses:
        state = self.encode(batch)
        prediction = self.predict(state)
        aux, c, spec = self.aux, self.config, self.spec

        # Unimodal heads of the two spaces and the common prediction.
        flat = {m: flatten_steps(state.c[m], state.masks[m], self.steps[m]) for m in self.modalities}
        homo = {m: aux["homo_head"][m](flat[m]) for m in self.modalities}  # (repr_m^homo, logit_m^homo)
        homo_repr, homo_logit = {m: r for m, (r, _) in homo.items()}, {m: lg for m, (_, lg) in homo.items()}
        hetero_repr = {m: aux["hetero_head"][m](state.h[m]) for m in self.modalities}
        hetero_logit = {m: aux["hetero_out"][m](hetero_repr[m]) for m in self.modalities}
        logits_c = aux["common_head"](state.c_fusion)
        unimodal = [*homo_logit.values(), *hetero_logit.values(), logits_c]
        task = task_loss(prediction, batch.label, spec)
        task = task + sum(task_loss(self.shape_output(logit), batch.label, spec) for logit in unimodal)

        terms = {"task": task}
        total = task
        if c.feature_decoupling:
            decoupling = self.decoupling_losses(state, flat, batch)
            terms |= decoupling
            total = total + c.lambda1 * (
                decoupling["reconstruction"]
                + decoupling["cycle"]
                + c.gamma * (decoupling["margin"] + decoupling["orthogonality"])
            )

        # Graph distillation in both spaces (each unit only where its switch is on).
        if c.homo_gd:
            homo_gd = aux["homo_gd"](homo_logit, homo_repr)
            homo_dtl = c.gd_logit_weight * homo_gd.logit + c.gd_reg_weight * homo_gd.regulariser
            if c.homo_repr_in_total:
                homo_dtl = homo_dtl + c.gd_repr_weight * homo_gd.representation
            total = total + c.lambda2 * homo_dtl
            terms |= {"homo_logit": homo_gd.logit, "homo_repr": homo_gd.representation,
                      "homo_reg": homo_gd.regulariser}
        if c.hetero_gd:
            hetero_gd = aux["hetero_gd"](hetero_logit, hetero_repr)
            hetero_dtl = (
                c.gd_logit_weight * hetero_gd.logit
                + c.gd_repr_weight * hetero_gd.representation
                + c.gd_reg_weight * hetero_gd.regulariser
            )
            total = total + c.lambda2 * hetero_dtl
            terms |= {"hetero_logit": hetero_gd.logit, "hetero_repr": hetero_gd.representation,
                      "hetero_reg": hetero_gd.regulariser}
        return Losses(total=total, terms={k: v.detach() for k, v in terms.items()}, prediction=prediction.detach())

    def decoupling_losses(self, state: DMDState, flat: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """Feature decoupling's terms: reconstruction, cycle consistency, orthogonality and margin (eqs. 2-5)."""
        aux, c, spec = self.aux, self.config, self.spec
        zero = state.c_fusion.new_zeros(())
        reconstruction = cycle = orthogonality = zero
        for m in self.modalities:
            x_hat = aux["decoder"][m](torch.cat([state.s[m], state.c[m]], dim=-1))  # X̂_m, zero on padding
            reconstruction = reconstruction + masked_mse(x_hat, state.x_tilde[m], state.masks[m])
            cycle = cycle + masked_mse(self.specific[m](x_hat), state.s[m], state.masks[m])
            if c.orthogonality == "batch":
                orthogonality = orthogonality + batch_orthogonality_loss(state.s[m], state.c[m], state.masks[m])
            else:
                orthogonality = orthogonality + orthogonality_loss(state.s[m], state.c[m])
        # the margin projection reads c_m channel-major, (d, T') flattened, as the official `c_l.view(B, -1)` on
        # (B, d, T') tensors: official weights then load as they are
        channel_major = {m: f.unflatten(1, (self.steps[m], -1)).transpose(1, 2).flatten(1) for m, f in flat.items()}
        aligned = torch.stack([aux["align"][m](channel_major[m]) for m in self.modalities], dim=1).flatten(0, 1)
        labels = batch.label.reshape(len(batch), -1).repeat_interleave(len(self.modalities), dim=0)  # (B·M, K)
        margin = margin_loss(aligned, labels, scale=c.margin_scale, categorical=spec.task == "classification")
        return {"reconstruction": reconstruction, "cycle": cycle, "orthogonality": orthogonality, "margin": margin}

    def param_groups(self, train: TrainConfig) -> list[dict[str, Any]]:
        """The text encoder (BERT, when the corpus has token ids) at `bert_lr`, everything else at the training lr."""
        text = [p for p in self.text_encoder.parameters() if p.requires_grad] if self.text_encoder else []
        text_ids = {id(p) for p in text}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in text_ids]
        groups = [{"params": rest, "lr": train.lr}]
        return groups + ([{"params": text, "lr": self.config.bert_lr}] if text else [])


# `affectfuse tune`: width (a multiple of the 10 heads), depth, dropouts, learning rate. Format: affectfuse/tune.py.
SEARCH_SPACE = {
    "dim": ("choice", [30, 50]),
    "layers": ("int", 2, 4),
    "embed_dropout": ("float", 0.0, 0.3),
    "output_dropout": ("float", 0.0, 0.5),
    "train.lr": ("log", 1e-4, 1e-3),
}
