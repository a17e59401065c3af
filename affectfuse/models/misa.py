"""MISA: Modality-Invariant and -Specific Representations for Multimodal Sentiment Analysis (Hazarika, Zimmermann,
Poria, ACM MM 2020).

Each modality's utterance vector is split into a part shared by all modalities (invariant) and a part of its own
(specific); the objective keeps the invariant parts alike, the specific parts apart, and both together informative:

1. Utterance representation u_m. Text: the masked mean of the fine-tuned BERT's last layer (word-pieces with [CLS]
   and [SEP]); or, for precomputed word features (GloVe), the sLSTM below. Audio / vision: the sLSTM, two stacked
   bidirectional LSTMs (hidden = feature width D_m) with a LayerNorm between them; u_m = the final hidden states
   [h1_fwd; h2_fwd; h1_bwd; h2_bwd] (4 D_m). Then u_m <- LayerNorm(ReLU(W_m u_m)), width d = `hidden_size`.
2. Subspaces. Invariant h_m^c = E_c(u_m) = σ(W_c u_m), one encoder shared by every modality; specific
   h_m^p = E_p^m(u_m) = σ(W_p^m u_m), one per modality.
3. Fusion. The 2M vectors [h_l^p, h_v^p, h_a^p, h_l^c, h_v^c, h_a^c] (paper order l, v, a) go through one
   transformer encoder layer (multi-head self-attention over the 2M tokens, post-LN, as `nn.TransformerEncoderLayer`);
   the outputs are concatenated and a 2-layer MLP predicts.
4. Objective (eq. 9, official weights): L = L_task + α L_sim + β L_diff + γ L_recon with
     L_sim   = mean over modality pairs of CMD_5(h_m^c, h_n^c)  (central moment discrepancy up to order 5; or the
               adversarial domain classifier on gradient-reversed h_m^c, `similarity="adversarial"`),
     L_diff  = Σ_m ‖(ĥ_m^c)ᵀ ĥ_m^p‖²_F + Σ_{m<n} ‖(ĥ_m^p)ᵀ ĥ_n^p‖²_F  (soft orthogonality of batch-centred,
               row-normalised representations; mean over the d x d entries, as the official `DiffLoss`),
     L_recon = mean over m of MSE(D_m(h_m^p + h_m^c), u_m)   (decoder D_m, training only),
   and L_task the MSE for regression (the official criterion), cross-entropy for classification.

Symbols: l/a/v = text/audio/vision; m a modality; M the number present (POM has no text: M = 2); d = `hidden_size`;
B the batch. Reported numbers: shared/spec/anchors.md and methods.md (results tables). Official code:
declare-lab/MISA (MIT), also ported in thuiar/MMSA (`singleTask/MISA.py`); re-implemented, nothing copied.

Deviations from the official code:
- Lengths. Each modality is packed by its own real steps (its mask), padding anywhere: sequences are moved to the
  front first (`layers.front_align`), so predictions do not depend on padding. The official code packs audio and
  vision with the text's word count (declare-lab, word-aligned data) or the BERT mask length (MMSA, also on
  unaligned data, where it reads the wrong number of frames); on aligned data the two agree. A sample without any
  real step of a modality (missing modality) is run on one zero step (the official code would fail).
- Precomputed text features take the official GloVe path without its embedding lookup: the sLSTM reads the word
  vectors as given (the converter drops the official `embed.weight`; its lookup is the feature extractor).
- Unused modules are not built: the shared-private discriminator `sp_discriminator` (its outputs enter no loss;
  `sp_weight` is never read) and, with `similarity="cmd"` (the official default), the domain discriminator.
- Model selection: the generic trainer selects on the validation metric of `forward` (MAE on MOSI-style corpora);
  the official code selects on validation MSE and stops after `patience + 1` epochs without improvement (its one
  "trial" of reloading the best weights at half the learning rate ends training at once).
- The activation (`relu`, the only one any official config uses) and the fusion layer's 2 heads, 2048-wide
  feed-forward and dropout 0.1 (`nn.TransformerEncoderLayer` defaults) are settings here (`fusion_*`).
- CMD uses `torch.linalg.vector_norm` for ‖·‖₂: equal values, and a zero subgradient where the official
  `sum(·)**0.5` would give NaN (identical moments).

Parity (tests/parity/test_misa.py, docs/parity/misa.md): with the official weights converted by
`affectfuse.convert.misa`, the official declare-lab code's prediction, every loss term and every gradient are
matched to 1e-5 on a tiny BERT and on GloVe-style word vectors, in eval mode and in train mode with dropout 0.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import InputSpec, Recipe, TrainConfig, uses_bert_tokens
from ..config.registry import register_model
from ..data.batch import Batch
from .base import FusionModel, Losses, Output, task_loss
from .layers import Dropout, FeedForward, MultiHeadAttention, front_align, masked_mean
from .text_encoder import TextEncoder

ORDER = ("text", "vision", "audio")
"""The paper's (and official code's) modality order of the fusion tokens and of the head's input."""


@dataclass(frozen=True, kw_only=True)
class MISAConfig:
    """Hyper-parameters of MISA. Defaults are the official declare-lab `config.py` (MOSI)."""

    hidden_size: int = 128
    """Width d of u_m, of both subspaces and of the fusion tokens."""
    dropout: float = 0.5
    """Dropout of the prediction MLP (and of the domain discriminator)."""
    rnn: Literal["lstm", "gru"] = "lstm"
    """Cell of the sLSTM encoders (`rnncell`)."""
    similarity: Literal["cmd", "adversarial"] = "cmd"
    """L_sim: central moment discrepancy (`use_cmd_sim`, the official default) or a domain discriminator trained
    through gradient reversal."""
    cmd_moments: int = 5
    """Highest central moment matched by CMD."""
    reverse_grad_weight: float = 1.0
    """Scale of the reversed gradient of the adversarial L_sim."""
    sim_weight: float = 1.0
    """α, weight of L_sim."""
    diff_weight: float = 0.3
    """β, weight of L_diff."""
    recon_weight: float = 1.0
    """γ, weight of L_recon."""
    fusion_heads: int = 2
    """Attention heads of the fusion transformer layer; must divide `hidden_size`."""
    fusion_ffn: int = 2048
    """Feed-forward width of the fusion transformer layer."""
    fusion_dropout: float = 0.1
    """Dropout of the fusion transformer layer (attention weights, residual branches, feed-forward)."""
    n_frozen_bert_layers: int = 0
    """BERT's first N encoder layers are not trained (official MOSEI: 9, layers 0-8)."""
    bert_path: str = ""
    """Local folder of the BERT model, used only when the corpus's text is BERT token ids; nothing is downloaded."""


def _train(*, batch_size: int, accumulate: int = 1, patience: int = 7, clip: float = 1.0) -> TrainConfig:
    """Adam at 1e-4, gradients clipped by value; the official code has a 500-epoch cap."""
    return TrainConfig(
        lr=1e-4, batch_size=batch_size, accumulate=accumulate, patience=patience, grad_clip_value=clip,
        max_epochs=500,
    )


RECIPES = {
    "mosi": Recipe(
        model=MISAConfig(),
        train=_train(batch_size=64),
        source="official declare-lab/MISA config.py (mosi: batch 64); patience 6 there ends training after 7 epochs "
        "without improvement",
    ),
    "mosei": Recipe(
        model=MISAConfig(n_frozen_bert_layers=9),
        train=_train(batch_size=16),
        source="official declare-lab/MISA config.py (mosei: batch 16) and solver.py (BERT layers 0-8 frozen)",
    ),
    "sims": Recipe(
        model=MISAConfig(dropout=0.0, reverse_grad_weight=0.5, diff_weight=0.3, sim_weight=1.0, recon_weight=0.8),
        train=_train(batch_size=64, accumulate=2, patience=8),
        source="thuiar/MMSA config_regression.json misa/sims (declare-lab has no SIMS setting; bert-base-chinese); "
        "its weight_decay 5e-5 is never passed to the optimiser, so none here",
    ),
    "synthetic": Recipe(
        model=MISAConfig(hidden_size=32, dropout=0.0, fusion_ffn=64, fusion_dropout=0.0),
        train=TrainConfig(lr=3e-4, batch_size=64, patience=6, max_epochs=40, grad_clip_value=1.0),
        source="affectfuse: for the built-in synthetic corpus, the official loss weights; d 32 at lr 3e-4 (validation "
        "MAE 0.721, seed 1111) chosen over d 16 at lr 2e-3, 1e-3 or 1e-4 (also with L_diff weight 0.03), d 32 or 64 "
        "(dropout 0.2) at 2e-3 (all 0.807-0.827: the "
        "representations collapse, CMD and reconstruction reach 0 while the task loss stays at the label variance); "
        "only dropping L_diff did better (d 16, 0.693), which would not be MISA",
    ),
}


# ---------------------------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------------------------


class SLSTM(nn.Module):
    """Two stacked bidirectional RNNs (hidden = input width D) with a LayerNorm on the first one's outputs.

    (B, T, D), (B, T) mask -> (B, 4D) = [h1_fwd; h2_fwd; h1_bwd; h2_bwd], the final hidden states of both layers in
    the official order. Only real steps enter (front-aligned, packed).
    """

    def __init__(self, dim: int, cell: str) -> None:
        super().__init__()
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn1 = rnn(dim, dim, bidirectional=True, batch_first=True)
        self.norm = nn.LayerNorm(2 * dim)
        self.rnn2 = rnn(2 * dim, dim, bidirectional=True, batch_first=True)
        for name, p in self.named_parameters():
            if "weight_hh" in name:  # as the official solver
                nn.init.orthogonal_(p)

    def _final(self, out: Any) -> tuple[Any, Tensor]:
        outputs, state = out
        return outputs, state[0] if isinstance(state, tuple) else state  # LSTM (h, c) or GRU h: (2, B, D)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x, lengths = front_align(x.masked_fill(~mask.unsqueeze(-1), 0.0), mask)
        lengths = lengths.clamp_min(1).cpu()  # a missing modality: one zero step
        full = bool((lengths == x.shape[1]).all())
        pack = (lambda y: y) if full else (
            lambda y: nn.utils.rnn.pack_padded_sequence(y, lengths, batch_first=True, enforce_sorted=False)
        )
        h1_seq, h1 = self._final(self.rnn1(pack(x)))
        if not full:
            h1_seq, _ = nn.utils.rnn.pad_packed_sequence(h1_seq, batch_first=True)  # (B, max length, 2D)
        _, h2 = self._final(self.rnn2(pack(self.norm(h1_seq))))
        return torch.cat([h1, h2], dim=-1).transpose(0, 1).reshape(x.shape[0], -1)  # (2, B, 2D) -> (B, 4D)


class FusionLayer(nn.Module):
    """One post-LN transformer encoder layer (`nn.TransformerEncoderLayer`'s structure, ReLU):
    x = LN1(x + Dropout(SelfAttention(x))); x = LN2(x + Dropout(FeedForward(x)))."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(dim, heads, dropout=dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:  # (B, 2M, d) -> (B, 2M, d); every token is real
        x = self.norm1(x + self.drop(self.attn(x)))
        return self.norm2(x + self.drop(self.ffn(x)))


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; the gradient times -weight backward (domain-adversarial training)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: float) -> Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad.neg() * ctx.weight, None


def cmd(x1: Tensor, x2: Tensor, moments: int) -> Tensor:
    """Central moment discrepancy (Zellinger et al. 2017) of two (B, d) samples, without the range scaling:
    ‖E x1 - E x2‖₂ + Σ_{k=2..K} ‖E (x1 - E x1)^k - E (x2 - E x2)^k‖₂."""
    mean1, mean2 = x1.mean(0), x2.mean(0)
    c1, c2 = x1 - mean1, x2 - mean2
    total = torch.linalg.vector_norm(mean1 - mean2)
    for k in range(2, moments + 1):
        total = total + torch.linalg.vector_norm(c1.pow(k).mean(0) - c2.pow(k).mean(0))
    return total


def difference_loss(a: Tensor, b: Tensor) -> Tensor:
    """Soft orthogonality of two (B, d) representations: the mean squared entry of Âᵀ B̂, where each is centred
    over the batch and its rows divided by their L2 norm (+1e-6; the norm is a constant to the gradient, as in the
    official `DiffLoss`)."""
    a, b = a - a.mean(0, keepdim=True), b - b.mean(0, keepdim=True)
    a = a / (torch.linalg.vector_norm(a, dim=1, keepdim=True).detach() + 1e-6)
    b = b / (torch.linalg.vector_norm(b, dim=1, keepdim=True).detach() + 1e-6)
    return (a.t() @ b).pow(2).mean()


@dataclass
class MISAState:
    """One batch through the network, in the paper's symbols (each dict keyed by modality)."""

    u: dict[str, Tensor]
    """Projected utterance vectors u_m (B, d): the reconstruction targets."""
    specific: dict[str, Tensor]
    """h_m^p (B, d)."""
    invariant: dict[str, Tensor]
    """h_m^c (B, d)."""
    prediction: Tensor


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------


@register_model("misa", config=MISAConfig, recipes=RECIPES)
class MISA(FusionModel):
    def __init__(self, config: MISAConfig, spec: InputSpec) -> None:
        super().__init__(config, spec)
        self.modalities = tuple(m for m in ORDER if m in spec.dims)
        self.tokens = "text" in spec.dims and uses_bert_tokens(spec)
        d = config.hidden_size
        self.text_encoder = TextEncoder(spec, bert_path=config.bert_path) if self.tokens else None
        if self.text_encoder is not None and config.n_frozen_bert_layers:
            frozen = tuple(f"encoder.layer.{i}." for i in range(config.n_frozen_bert_layers))
            for name, p in self.text_encoder.bert.named_parameters():
                if name.startswith(frozen):
                    p.requires_grad_(False)
        self.encoders = nn.ModuleDict(
            {m: SLSTM(spec.dims[m], config.rnn) for m in self.modalities if not (m == "text" and self.tokens)}
        )
        widths = {m: self.text_encoder.out_dim if m == "text" and self.tokens else 4 * spec.dims[m]
                  for m in self.modalities}
        self.project = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(w, d), nn.ReLU(), nn.LayerNorm(d)) for m, w in widths.items()}
        )
        self.private = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, d), nn.Sigmoid()) for m in self.modalities})
        self.shared = nn.Sequential(nn.Linear(d, d), nn.Sigmoid())
        self.fusion = FusionLayer(d, config.fusion_heads, config.fusion_ffn, config.fusion_dropout)
        M = len(self.modalities)
        self.head = nn.Sequential(
            nn.Linear(2 * M * d, M * d), Dropout(config.dropout), nn.ReLU(), nn.Linear(M * d, spec.output_size)
        )
        aux: dict[str, nn.Module] = {"reconstruct": nn.ModuleDict({m: nn.Linear(d, d) for m in self.modalities})}
        if config.similarity == "adversarial":
            aux["discriminator"] = nn.Sequential(
                nn.Linear(d, d), nn.ReLU(), Dropout(config.dropout), nn.Linear(d, M)
            )
        self.aux = nn.ModuleDict(aux)

    def encode(self, batch: Batch) -> MISAState:
        u, specific, invariant = {}, {}, {}
        for m in self.modalities:
            x, mask = batch.features[m], batch.masks[m]
            if m == "text" and self.tokens:
                utterance = masked_mean(self.text_encoder(x, mask), mask)  # (B, 768): BERT, [CLS]/[SEP] included
            else:
                utterance = self.encoders[m](x, mask)  # (B, 4 D_m)
            u[m] = self.project[m](utterance)  # (B, d)
            specific[m] = self.private[m](u[m])
            invariant[m] = self.shared(u[m])
        tokens = torch.stack([specific[m] for m in self.modalities] + [invariant[m] for m in self.modalities], 1)
        fused = self.fusion(tokens).flatten(1)  # (B, 2M, d) -> (B, 2M d)
        return MISAState(u=u, specific=specific, invariant=invariant, prediction=self.shape_output(self.head(fused)))

    def forward(self, batch: Batch) -> Output:
        return Output(self.encode(batch).prediction)

    def loss(self, batch: Batch) -> Losses:
        s = self.encode(batch)
        c = self.config
        if self.spec.task == "regression":
            task = F.mse_loss(s.prediction, batch.label.to(s.prediction.dtype))  # the official criterion
        else:
            task = task_loss(s.prediction, batch.label, self.spec)
        pairs = list(itertools.combinations(self.modalities, 2))
        if c.similarity == "cmd":
            similarity = sum(cmd(s.invariant[m], s.invariant[n], c.cmd_moments) for m, n in pairs) / len(pairs)
        else:  # the discriminator tells the modalities apart; the reversed gradient makes h^c hide them
            logits = torch.cat(
                [self.aux["discriminator"](_ReverseGradient.apply(s.invariant[m], c.reverse_grad_weight))
                 for m in self.modalities]
            )
            domains = torch.arange(len(self.modalities), device=logits.device).repeat_interleave(len(batch))
            similarity = F.cross_entropy(logits, domains)
        difference = sum(difference_loss(s.specific[m], s.invariant[m]) for m in self.modalities)
        difference = difference + sum(difference_loss(s.specific[m], s.specific[n]) for m, n in pairs)
        reconstruction = sum(
            F.mse_loss(self.aux["reconstruct"][m](s.specific[m] + s.invariant[m]), s.u[m]) for m in self.modalities
        ) / len(self.modalities)
        total = task + c.sim_weight * similarity + c.diff_weight * difference + c.recon_weight * reconstruction
        terms = {"task": task, "similarity": similarity, "difference": difference, "reconstruction": reconstruction}
        return Losses(total=total, terms={k: v.detach() for k, v in terms.items()}, prediction=s.prediction.detach())


# `affectfuse tune`: width, dropout, the three loss weights and the learning rate. Format: affectfuse/tune.py.
SEARCH_SPACE = {
    "hidden_size": ("choice", [64, 128]),
    "dropout": ("float", 0.0, 0.5),
    "sim_weight": ("log", 0.1, 3.0),
    "diff_weight": ("log", 0.03, 3.0),
    "recon_weight": ("log", 0.1, 3.0),
    "train.lr": ("log", 3e-5, 1e-3),
}
