"""EMT-DLFR: Efficient Multimodal Transformer with Dual-Level Feature Restoration (Sun et al., IEEE TAFFC 2023).

Robust sentiment analysis under randomly missing features. Every sample is seen twice, complete and incomplete (a
random fraction r of its real positions dropped, `robustness.missing.drop_features`), through one shared network:

1. Unimodal encoders. Text: the text encoder (fine-tuned BERT in the paper) gives local features H_l and an
   utterance vector h_l ([CLS]). Audio / vision: a 1-layer LSTM whose outputs, mapped by one Linear (none when the
   LSTM is already `*_out` wide), are the local features H_a, H_v; the same map on the final hidden state gives h_a,
   h_v.
2. One bias-free projection per modality to d_model D (none when the modality is already D wide), shared by h_m and
   H_m. The global multimodal context is G⁰ = [proj(h_l); proj(h_a); proj(h_v)] ∈ R^{M x D}; fixed sinusoidal
   positions (`interleaved_positions`) are added to each H_m.
3. EMT: in layer i, for each modality m, a mutual promotion unit (MPU) in both directions, each a cross-self
   transformer (CST: cross-attention, self-attention, GEGLU feed-forward, all pre-LN with residuals):
       H_m^{i+1} = CST(H_m^i, context=G^i)          local  <- global
       G_m^i     = CST(G^i, context=H_m^i)          global <- local (the pre-update H_m^i, padded keys masked)
   and G^{i+1} = attention-pool over the M modality-specific contexts G_m^i. Global-local attention costs O(T M)
   per modality instead of the O(T_m T_n) of local-local cross-modal attention (MulT).
4. Prediction from [h_l; h_a; h_v; flatten(G^L)] by a 3-layer MLP.
5. Dual-level feature restoration (training only, under `aux`): low-level, r(H̃_m) reconstructs the complete view's
   features at the dropped positions; high-level, SimSiam attraction between the two views' g = flatten(G^L) and h_m.

Objective (§4.4, official code):  L = L_pred_m + λ_attra (Σ_{x ∈ g,l,a,v} ℓ_x + L_pred) + λ_recon Σ_m L_recon^m.

Fusion strategies (the paper's efficiency table: MACs, parameters, training time and memory of OOLL, OALL and OAGL;
`fusion`, variants `emt_dlfr:ooll` and `emt_dlfr:oall`). The official code implements OAGL only, so the other two
are our reading of the paper's description: only the local update of each layer changes, what H_m attends to,
    OAGL  H_m^{i+1} = CST(H_m^i, context=G^i)                                  T_m x M keys
    OOLL  H_m^{i+1} = SelfFFN(H_m^i + Σ_{n≠m} CrossAttn(H_m^i, H_n^i))         T_m x T_n keys, per source n
    OALL  H_m^{i+1} = CST(H_m^i, context=[H_l^i; H_a^i; H_v^i])                T_m x Σ_n T_n keys
while G is still gathered from the local features (global <- local) and read by the head, so parameters are equal
and the three differ in attention cost: at MOSI shapes OOLL does (Σ T)² and OALL Σ T_m² + (Σ T)² key-query products
per layer against OAGL's Σ T_m² + 2 M Σ T_m (`affectfuse table emt-fusion` measures MACs, time and memory).

Restoration ablation (the paper's ablation figure; variants `emt_dlfr:no_restoration`, `emt_dlfr:llfr`,
`emt_dlfr:hlfr`): `llfr=False` removes the reconstruction heads and L_recon, `hlfr=False` the SimSiam heads and the
λ_attra group (Σ ℓ_x and the complete view's L_pred, which the official objective puts in that group); with both off
the complete view is not computed. Removed parts have no parameters and no terms (not zero-weighted ones).

Symbols: l/a/v = text/audio/vision; m a modality; M the number of modalities present; D = `d_model`; G the global
multimodal context (B, M, D); H_m local features (B, T_m, D); g_m the kept-position mask (1 kept, 0 dropped).
Spec: shared/spec/methods.md §4 and §8. Official code: sunlicai/EMT-DLFR (MIT); re-implemented, nothing copied.

Deviations from the official code:
- Missing simulation: `loss` draws a new incomplete view at every call from a per-model `torch.Generator` seeded by
  `missing_seed` (dropped with probability `missing_rate`; the rule of `robustness.missing`). The official code draws
  static masks once per split at load time (NumPy seeds 111/1111/11111), identical across epochs and training
  seeds. `forward` predicts from the batch as given: to evaluate at rate r with the official protocol, corrupt the
  validation/test splits with `robustness.missing.split_missing_masks` + `apply_masks` (what the robustness sweep does).
  The generator's state is not checkpointed. `loss_given_missing(batch, kept)` takes a fixed incomplete view
  instead (the parity tests feed it the official static masks); the generic trainer does not.
- Model selection: the generic trainer selects on a metric of `forward` on the validation split (MAE for MOSI-style
  corpora), i.e. the official MOSEI criterion `Loss(pred_m)` on a corrupted validation split; the official MOSI/SIMS
  criterion, the total validation loss including the auxiliary terms, is not available.
- Precomputed text features (no BERT): h_l is the masked mean of the text steps and H_l all real steps. With BERT
  token ids, as the official code, h_l is the [CLS] output and H_l the steps after it, [SEP] and padding masked.
- Padding invariance: every sequence is moved to the front of its padded length first (`layers.front_align`), the
  LSTMs are packed, positions count from the first real step, and every attention masks padded keys.
- A modality with no real step in a sample (missing modality) has h_m = 0 and contributes no keys; attention whose
  keys are all padding returns zeros (the official code attends uniformly over padding).
- Corpora without a modality (POM has no text): G has one slot per present modality, M = 2, and the attention pool
  scores M contexts of M·D; the head, attraction and reconstruction use the present modalities only.
- Positions: the official interleaved table (`interleaved_positions`), counted from each sequence's first real
  step. As the official code, the audio/vision LSTM has no output Linear when it is already as wide as its output,
  and a modality already D wide has no projection (an earlier version always added both: +1,328 parameters at
  MOSEI shapes and another position table). Options that are constant in every official config are not exposed:
  learnable positions (off), position-embedding dropout (0), LSTM dropout (0), pool activation (tanh).
- Loss terms use mean reductions as the official code; classification corpora use cross-entropy task terms.

Parity (tests/parity/test_emt_dlfr.py, docs/parity/emt_dlfr.md): with the official weights converted by
`affectfuse.convert.emt_dlfr`, the official code's outputs, every loss term and every gradient are matched to
1e-5 (measured: 3.4e-6 at most) on a tiny BERT, with the official static missing masks (`loss_given_missing`), in
eval mode and in train mode with dropout 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import InputSpec, Modalities, Recipe, TrainConfig, uses_bert_tokens
from ..config.registry import Variant, register_model
from ..data.batch import Batch
from ..robustness.missing import apply_kept, drop_features
from .base import FusionModel, Losses, Output, task_loss
from .layers import Dropout, FeedForward, MultiHeadAttention, front_align, masked_mean, run_lstm
from .text_encoder import NO_DECAY, TextEncoder


@dataclass(frozen=True, kw_only=True)
class EMTDLFRConfig:
    """Hyper-parameters of EMT-DLFR. Defaults are the official code's CMU-MOSI setting (config_regression.py)."""

    audio_hidden: int = 32
    """Hidden size of the audio LSTM (`a_lstm_hidden_size`)."""
    vision_hidden: int = 64
    """Hidden size of the vision LSTM (`v_lstm_hidden_size`)."""
    audio_out: int = 16
    """Width of h_a and of every step of H_a before projection (`audio_out`)."""
    vision_out: int = 32
    """Width of h_v and of every step of H_v before projection (`video_out`)."""
    d_model: int = 128
    """Width D of the global context and of the projected local features."""
    layers: int = 3
    """EMT depth L (`fusion_layers`)."""
    heads: int = 4
    """Attention heads of every CST; must divide D."""
    ffn_mult: int = 4
    """Expansion of the GEGLU feed-forward block (`ff_expansion`)."""
    attn_dropout: float = 0.3
    """Dropout on the attention weights."""
    ff_dropout: float = 0.1
    """Dropout after the feed-forward block."""
    mpu_share: bool = True
    """The two directions of an MPU (local <- global, global <- local) share one CST."""
    modality_share: bool = True
    """One MPU for all modalities."""
    layer_share: bool = True
    """The same MPUs and attention pool in every layer."""
    post_fusion_dim: int = 256
    """Hidden width of the prediction MLP."""
    post_fusion_dropout: float = 0.3
    """Dropout on the prediction MLP's input."""
    global_bottleneck: int = 128
    """Bottleneck of the SimSiam predictor of g = flatten(G^L) (`gmc_tokens_pred_dim`)."""
    bottleneck: Modalities[int] = Modalities(text=256, audio=8, vision=16)
    """Bottleneck of the SimSiam predictor of each h_m (`{text,audio,video}_pred_dim`)."""
    attraction_weight: float = 1.0
    """λ_attra: weight of the high-level attraction group Σ ℓ_x + L_pred (§4.4)."""
    reconstruction_weight: float = 1.0
    """λ_recon: weight of the low-level reconstruction loss Σ_m L_recon^m (§4.4)."""
    missing_rate: float = 0.5
    """Expected fraction of real positions dropped in the incomplete view, every modality (official scripts/run.sh;
    run.py's default is 0.4)."""
    missing_seed: int = 111
    """Seed of the generator drawing the incomplete views."""
    encoder_lr: Modalities[float] = Modalities(text=5e-5, audio=1e-3, vision=1e-4)
    """Learning rate of each unimodal encoder (the text one only if it has parameters, i.e. BERT); the rest of the
    model uses the training config's `lr`."""
    encoder_weight_decay: Modalities[float] = Modalities(text=1e-3, audio=1e-2, vision=1e-3)
    """L2 weight decay of each unimodal encoder (none on BERT's biases and LayerNorms); the rest of the model uses
    the training config's `weight_decay`."""
    bert_path: str = ""
    """Local folder of the BERT model, used only when the corpus's text is BERT token ids; nothing is downloaded."""
    fusion: Literal["oagl", "ooll", "oall"] = "oagl"
    """What each modality's local features attend to in a layer (the paper's fusion-strategy table): "oagl", EMT's
    one-to-all global-local (the M global tokens of G); "ooll", one-to-one local-local as MulT (each other
    modality's local features, one cross-attention per source); "oall", one-to-all local-local as PMR (the local
    features of all modalities, concatenated). See "Fusion strategies" in the module docstring."""
    llfr: bool = True
    """Low-level feature restoration (the reconstruction heads and L_recon). Off: neither is built (ablation)."""
    hlfr: bool = True
    """High-level feature restoration (the SimSiam projectors/predictors, Σ ℓ_x and the complete view's L_pred,
    i.e. the λ_attra group). Off: neither is built (ablation)."""


def _train(*, lr: float, weight_decay: float, batch_size: int) -> TrainConfig:
    """Adam with coupled L2 decay, gradients summed over 4 batches, early stop after 8 epochs, no scheduler or
    clipping; the official code has no epoch cap (early stopping ends training)."""
    return TrainConfig(
        lr=lr, weight_decay=weight_decay, batch_size=batch_size, accumulate=4, patience=8, max_epochs=200
    )


RECIPES = {
    "mosi": Recipe(
        model=EMTDLFRConfig(),
        train=_train(lr=1e-3, weight_decay=1e-3, batch_size=32),
        source="official config_regression.py, EMT-DLFR/mosi; missing rate 0.5 from scripts/mosi/run.sh",
    ),
    "mosei": Recipe(
        model=EMTDLFRConfig(
            audio_hidden=16,
            vision_hidden=32,
            layers=2,
            attn_dropout=0.0,
            ff_dropout=0.0,
            post_fusion_dim=128,
            post_fusion_dropout=0.0,
            encoder_lr=Modalities(text=2e-5, audio=1e-4, vision=1e-4),
            encoder_weight_decay=Modalities(text=1e-3, audio=1e-3, vision=1e-3),
        ),
        train=_train(lr=1e-4, weight_decay=1e-3, batch_size=16),
        source="official config_regression.py, EMT-DLFR/mosei (the run script selects on Loss(pred_m), i.e. MAE)",
    ),
    "sims": Recipe(
        model=EMTDLFRConfig(
            audio_hidden=16,
            vision_hidden=32,
            d_model=32,
            layers=4,
            attn_dropout=0.0,
            ff_dropout=0.0,
            post_fusion_dropout=0.0,
            attraction_weight=0.5,
            reconstruction_weight=0.5,
            encoder_lr=Modalities(text=2e-5, audio=1e-3, vision=1e-3),
            encoder_weight_decay=Modalities(text=1e-3, audio=0.0, vision=0.0),
        ),
        train=_train(lr=1e-3, weight_decay=0.0, batch_size=32),
        source="official config_regression.py, EMT-DLFR/sims; the official runs use a normalised copy of SIMS (audio "
        "and vision z-scored per dimension with train-split statistics over real frames, eps 1e-6)",
    ),
    "pom": Recipe(
        model=EMTDLFRConfig(audio_hidden=16, vision_hidden=32, d_model=32, layers=2, post_fusion_dim=64),
        train=_train(lr=1e-3, weight_decay=1e-3, batch_size=32),
        source="no published EMT-DLFR POM setting (POM has no text): the MOSI recipe narrowed to D = 32, L = 2, "
        "MOSEI's LSTM sizes, head 64; best validation MAE (0.933) of 4 variants (MOSI recipe 0.941, MOSEI-like 0.941, "
        "this one without accumulation 0.935) on the MFN POM release, seed 1111, selection on validation only. A later "
        "search of 5 more (vision encoder lr 1e-3, alone 0.934 or with missing rate 0.2 0.930, restoration weights "
        "0.1, lighter dropout, lr 3e-4) gave a tie: its best over 3 seeds has mean validation MAE 0.9375 against this "
        "recipe's 0.9383, within the seeds' spread, so this recipe stays",
    ),
    "synthetic": Recipe(
        model=EMTDLFRConfig(
            audio_hidden=16,
            vision_hidden=16,
            audio_out=16,
            vision_out=16,
            d_model=16,
            layers=1,
            heads=2,
            ffn_mult=2,
            attn_dropout=0.0,
            ff_dropout=0.0,
            post_fusion_dim=64,
            post_fusion_dropout=0.0,
            global_bottleneck=16,
            bottleneck=Modalities(text=16, audio=8, vision=8),
            encoder_lr=Modalities(text=2e-3, audio=2e-3, vision=2e-3),
            encoder_weight_decay=Modalities(text=0.0, audio=0.0, vision=0.0),
            missing_rate=0.2,
            attraction_weight=0.1,
            reconstruction_weight=0.1,
        ),
        train=TrainConfig(lr=2e-3, batch_size=64, patience=6, max_epochs=40),
        source="affectfuse: sized for the built-in synthetic corpus (trains in about 1 min on 2 CPU cores); missing "
        "rate 0.2 chosen over 0.5 on validation MAE (0.406 vs 0.452, seed 1111); λ_attra = λ_recon = 0.1 chosen "
        "over 1 and 0 on validation MAE with every split dropped at rate 0.5 (0.529 vs 0.571 vs 0.557, seeds "
        "1111-1112): at weight 1 the auxiliary terms crowd out the task in a D = 16 model",
    ),
}


# The paper's fusion-strategy table (OAGL is `emt_dlfr` itself) and its restoration ablation (EMT-DLFR is both on).
VARIANTS = {
    "ooll": Variant("fusion-strategy table: one-to-one local-local (MulT-style) in place of OAGL", {"fusion": "ooll"}),
    "oall": Variant("fusion-strategy table: one-to-all local-local (PMR-style) in place of OAGL", {"fusion": "oall"}),
    "no_restoration": Variant("ablation: EMT without restoration (no LLFR, no HLFR)", {"llfr": False, "hlfr": False}),
    "llfr": Variant("ablation: EMT + LLFR (low-level reconstruction only)", {"hlfr": False}),
    "hlfr": Variant("ablation: EMT + HLFR (high-level attraction only)", {"llfr": False}),
}


# ---------------------------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------------------------


def interleaved_positions(length: int, dim: int, *, device: torch.device | None = None) -> Tensor:
    """The official fixed position table (T, D) for positions 0 .. T - 1, sines and cosines interleaved:
    channel 2i holds sin(t ω_i) and channel 2i + 1 cos(t ω_i), with ω_i = 10000^(-2i / D) (an odd D has one sine
    more than cosines). Not `layers.sinusoidal_positions`: its fairseq table puts the sines first and its frequencies
    are 10000^(-i / (D/2 - 1)); even with its channels interleaved it differs from this one by up to 0.28 at D = 128
    and 1.8 at D = 8 over 50 positions."""
    freqs = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * freqs  # (T, ceil(D/2))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = angles.sin()
    table[:, 1::2] = angles[:, : dim // 2].cos()
    return table


class AudioVisualEncoder(nn.Module):
    """1-layer LSTM over the real steps, one Linear on every output step (H_m) and on the final hidden state (h_m);
    as the official code, no Linear (the identity) when the LSTM is already `out_dim` wide."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.rnn = nn.LSTM(in_dim, hidden, batch_first=True)
        self.linear = nn.Linear(hidden, out_dim) if hidden != out_dim else nn.Identity()

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, D_in), front-aligned (B, T) mask -> local (B, T, out), utterance (B, out)."""
        h, steps = run_lstm(self.rnn, x, mask, steps=True)  # (B, hidden), (B, T, hidden)
        utterance = self.linear(h) * mask.any(1, keepdim=True).to(x.dtype)  # a missing modality: h_m = 0
        return self.linear(steps), utterance


class CrossSelfTransformer(nn.Module):
    """CST, pre-LN with residuals: cross-attention (own LayerNorms on query and context), self-attention, GEGLU FFN.

    `cross` and `self_ffn` are its two halves, for one-to-one local-local fusion (several cross-attentions, one
    per source, summed into one residual before the self-attention)."""

    def __init__(self, dim: int, heads: int, *, ffn_mult: int, attn_dropout: float, ff_dropout: float) -> None:
        super().__init__()
        self.cross_norm = nn.LayerNorm(dim)
        self.context_norm = nn.LayerNorm(dim)
        self.cross_attn = MultiHeadAttention(dim, heads, dropout=attn_dropout, qkv_bias=False)
        self.self_norm = nn.LayerNorm(dim)
        self.self_attn = MultiHeadAttention(dim, heads, dropout=attn_dropout, qkv_bias=False)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_mult * dim, activation="geglu")
        self.ffn_drop = Dropout(ff_dropout)  # after the block, as the official code (not on the hidden layer)

    def forward(self, x: Tensor, context: Tensor, *, mask: Tensor | None, context_mask: Tensor | None) -> Tensor:
        """x (B, Tq, D) with key mask `mask` (None: all real) attends to context (B, Tk, D) with `context_mask`."""
        return self.self_ffn(x + self.cross(x, context, context_mask), mask)

    def cross(self, x: Tensor, context: Tensor, context_mask: Tensor | None) -> Tensor:
        """The cross-attention branch (without its residual): (B, Tq, D) attending to (B, Tk, D)."""
        return self.cross_attn(self.cross_norm(x), self.context_norm(context), key_mask=context_mask)

    def self_ffn(self, x: Tensor, mask: Tensor | None) -> Tensor:
        x = x + self.self_attn(self.self_norm(x), key_mask=mask)
        return x + self.ffn_drop(self.ffn(self.ffn_norm(x)))


class AttentionPool(nn.Module):
    """Aggregate M modality-specific global contexts: score flatten(G_m) by Linear -> tanh -> Linear, softmax over m."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1))

    def forward(self, contexts: Tensor) -> Tensor:  # (B, M, M, D) -> (B, M, D)
        b, m, slots, d = contexts.shape
        flat = contexts.reshape(b, m, slots * d)  # (B, M, M*D)
        weights = self.score(flat).softmax(dim=1)  # (B, M, 1)
        return (weights * flat).sum(1).reshape(b, slots, d)


class EMT(nn.Module):
    """L layers of mutual promotion between the global context G and each modality's local features H_m.

    With sharing, several (layer, modality, direction) slots use the same CST (official default: one CST and one
    pool for everything).
    """

    def __init__(self, config: EMTDLFRConfig, num_modalities: int) -> None:
        super().__init__()
        self.depth = config.layers
        self.fusion = config.fusion
        self.shape = (
            1 if config.layer_share else config.layers,
            1 if config.modality_share else num_modalities,
            1 if config.mpu_share else 2,
        )
        self.blocks = nn.ModuleList(
            CrossSelfTransformer(
                config.d_model,
                config.heads,
                ffn_mult=config.ffn_mult,
                attn_dropout=config.attn_dropout,
                ff_dropout=config.ff_dropout,
            )
            for _ in range(self.shape[0] * self.shape[1] * self.shape[2])
        )
        self.pools = nn.ModuleList(AttentionPool(num_modalities * config.d_model) for _ in range(self.shape[0]))

    def block(self, layer: int, modality: int, direction: int) -> CrossSelfTransformer:
        """The CST of one MPU direction (0: local <- global, 1: global <- local)."""
        n_layer, n_modality, n_direction = self.shape
        i, m, d = layer % n_layer, modality % n_modality, direction % n_direction
        return self.blocks[(i * n_modality + m) * n_direction + d]

    def forward(
        self, G: Tensor, H: list[Tensor], masks: list[Tensor], *, local_output: bool = True
    ) -> tuple[Tensor, list[Tensor]]:
        """G (B, M, D), H_m (B, T_m, D) with key masks (B, T_m) -> G^L, [H_m^L].

        With `local_output=False` the last layer's local update is skipped and [] is returned for H^L: the prediction
        reads G^L only, so inference need not pay for the largest (T_m-long) block of the last layer.
        """
        for i in range(self.depth):
            contexts, promoted = [], []
            skip_local = not local_output and i == self.depth - 1
            everything = (torch.cat(H, dim=1), torch.cat(masks, dim=1)) if self.fusion == "oall" else None
            for m, (x, mask) in enumerate(zip(H, masks, strict=True)):
                if not skip_local:
                    block = self.block(i, m, 0)
                    if self.fusion == "oagl":  # local <- global
                        promoted.append(block(x, G, mask=mask, context_mask=None))
                    elif everything is not None:  # "oall": local <- all local features (B, Σ T_n, D)
                        promoted.append(block(x, everything[0], mask=mask, context_mask=everything[1]))
                    else:  # "ooll": local <- each other modality's local features, one attention per source
                        cross = [block.cross(x, H[n], masks[n]) for n in range(len(H)) if n != m]
                        promoted.append(block.self_ffn(x + torch.stack(cross).sum(0), mask))
                contexts.append(self.block(i, m, 1)(G, x, mask=None, context_mask=mask))  # global <- local (H_m^i)
            G = self.pools[i % len(self.pools)](torch.stack(contexts, dim=1))  # (B, M, M, D) -> (B, M, D)
            H = promoted
        return G, H


class Projector(nn.Module):
    """SimSiam projector: Linear(d, d) -> BatchNorm (no affine)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.BatchNorm1d(dim, affine=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Predictor(nn.Module):
    """SimSiam predictor: Linear(d, k, no bias) -> BatchNorm -> ReLU -> Linear(k, d), bottleneck k."""

    def __init__(self, dim: int, bottleneck: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, bottleneck, bias=False), nn.BatchNorm1d(bottleneck), nn.ReLU(), nn.Linear(bottleneck, dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """-cos(p, sg(z)), averaged over the batch: SimSiam's loss with the stop-gradient on the target branch z."""
    return -F.cosine_similarity(p, z.detach(), dim=-1).mean()


def attraction_loss(p_incomplete: Tensor, z_incomplete: Tensor, p_complete: Tensor, z_complete: Tensor) -> Tensor:
    """ℓ_x = -½ [cos(p̃_x, sg(z_x)) + cos(p_x, sg(z̃_x))]: each view's prediction attracted to the other's projection."""
    return 0.5 * (negative_cosine(p_incomplete, z_complete) + negative_cosine(p_complete, z_incomplete))


def reconstruction_loss(reconstruction: Tensor, target: Tensor, dropped: Tensor) -> Tensor:
    """SmoothL1 summed over the dropped real positions only, divided by their number of elements (+1e-6).

    Args:
        reconstruction, target: (B, T, D).
        dropped: (B, T), 1 where a real position was dropped (1 - g_m on real steps), 0 at kept steps and padding.
    """
    gate = dropped.to(reconstruction.dtype).unsqueeze(-1)  # (B, T, 1)
    error = F.smooth_l1_loss(reconstruction, target, reduction="none") * gate
    return error.sum() / (gate.sum() * reconstruction.shape[-1] + 1e-6)


@dataclass
class EMTState:
    """One view through the network, in the paper's symbols."""

    h: dict[str, Tensor]
    """Utterance-level unimodal features h_m (B, d_m): text encoder width, `audio_out`, `vision_out`."""
    G: Tensor
    """Global multimodal context after the last layer, G^L (B, M, D)."""
    H: dict[str, Tensor]
    """Local features after the last layer, H_m^L (B, T_m, D), front-aligned (text: the steps after [CLS]); empty
    when `encode(..., local_output=False)` skipped them (`forward` does: the prediction never reads them)."""
    masks: dict[str, Tensor]
    """(B, T_m) real positions of H_m (text: [CLS] and [SEP] excluded)."""
    text_local: Tensor | None
    """The text encoder's outputs at the positions of H_l (B, T_l, d_l): the text reconstruction target."""


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------


@register_model("emt_dlfr", config=EMTDLFRConfig, recipes=RECIPES, variants=VARIANTS)
class EMTDLFR(FusionModel):
    def __init__(self, config: EMTDLFRConfig, spec: InputSpec) -> None:
        super().__init__(config, spec)
        self.modalities = spec.modalities
        self.tokens = uses_bert_tokens(spec)
        self.text_encoder = TextEncoder(spec, bert_path=config.bert_path) if "text" in spec.dims else None
        self.encoders = nn.ModuleDict()
        if "audio" in spec.dims:
            self.encoders["audio"] = AudioVisualEncoder(spec.dims["audio"], config.audio_hidden, config.audio_out)
        if "vision" in spec.dims:
            self.encoders["vision"] = AudioVisualEncoder(spec.dims["vision"], config.vision_hidden, config.vision_out)
        widths = {"text": self.text_encoder.out_dim if self.text_encoder else 0}
        widths |= {"audio": config.audio_out, "vision": config.vision_out}
        widths = {m: widths[m] for m in self.modalities}  # d_m of h_m and of the local features before projection
        d, M = config.d_model, len(self.modalities)
        # As the official code: a modality already D wide is not projected.
        self.project = nn.ModuleDict(
            {m: nn.Linear(w, d, bias=False) if w != d else nn.Identity() for m, w in widths.items()}
        )
        self.fusion = EMT(config, M)
        self.head = nn.Sequential(
            Dropout(config.post_fusion_dropout),
            nn.Linear(sum(widths.values()) + M * d, config.post_fusion_dim),
            nn.ReLU(),
            nn.Linear(config.post_fusion_dim, config.post_fusion_dim),
            nn.ReLU(),
            nn.Linear(config.post_fusion_dim, spec.output_size),
        )
        # Training only. Reconstruction targets: the text encoder's outputs for text, the raw features otherwise.
        raw = {m: widths["text"] if m == "text" else spec.dims[m] for m in self.modalities}
        attracted = {"global": M * d} | widths
        bottleneck = {"global": config.global_bottleneck} | {m: config.bottleneck[m] for m in self.modalities}
        self.aux = nn.ModuleDict()
        if config.llfr:
            self.aux["reconstruct"] = nn.ModuleDict({m: nn.Linear(d, raw[m]) for m in self.modalities})
        if config.hlfr:
            self.aux["projector"] = nn.ModuleDict({x: Projector(w) for x, w in attracted.items()})
            self.aux["predictor"] = nn.ModuleDict({x: Predictor(w, bottleneck[x]) for x, w in attracted.items()})
        self.generator = torch.Generator().manual_seed(config.missing_seed)

    def encode(self, batch: Batch, *, local_output: bool = True) -> EMTState:
        """One view through the network; `local_output=False` leaves `H` empty (see `EMT.forward`)."""
        h, H, masks, text_local = {}, {}, {}, None
        for m in self.modalities:
            x, mask = batch.features[m], batch.masks[m]
            if m == "text":
                x = self.text_encoder(x, mask)  # (B, T, d_l)
            x, lengths = front_align(x.masked_fill(~mask.unsqueeze(-1), 0.0), mask)
            steps = torch.arange(x.shape[1], device=x.device)
            if m == "text" and self.tokens:  # [CLS] = h_l; H_l = the word-pieces after it, [SEP] masked
                h[m] = x[:, 0] * (lengths > 0).unsqueeze(-1).to(x.dtype)
                text_local = x[:, 1:]
                masks[m] = steps[:-1] < (lengths - 2).unsqueeze(-1)
            elif m == "text":
                masks[m] = steps < lengths.unsqueeze(-1)
                h[m], text_local = masked_mean(x, masks[m]), x
            else:
                masks[m] = steps < lengths.unsqueeze(-1)
                x, h[m] = self.encoders[m](x, masks[m])
            local = text_local if m == "text" else x
            positions = interleaved_positions(local.shape[1], self.config.d_model, device=local.device)
            H[m] = self.project[m](local) + positions.to(local.dtype)  # (B, T_m, D)
        G = torch.stack([self.project[m](h[m]) for m in self.modalities], dim=1)  # G⁰ (B, M, D)
        G, promoted = self.fusion(
            G, [H[m] for m in self.modalities], [masks[m] for m in self.modalities], local_output=local_output
        )
        H = dict(zip(self.modalities, promoted, strict=True)) if promoted else {}
        return EMTState(h=h, G=G, H=H, masks=masks, text_local=text_local)

    def predict(self, state: EMTState) -> Tensor:
        fused = torch.cat([state.h[m] for m in self.modalities] + [state.G.flatten(1)], dim=-1)
        return self.shape_output(self.head(fused))

    def forward(self, batch: Batch) -> Output:
        return Output(self.predict(self.encode(batch, local_output=False)))

    def loss(self, batch: Batch) -> Losses:
        """The training objective on a fresh incomplete view of `batch` (see `loss_given_missing`)."""
        _, kept = drop_features(batch, self.config.missing_rate, generator=self.generator, spec=self.spec)
        return self.loss_given_missing(batch, kept)

    def loss_given_missing(self, batch: Batch, kept: dict[str, Tensor]) -> Losses:
        """The objective of §4.4 with the incomplete view fixed by `kept` (modality -> (B, T_m) bool, True at the real
        positions kept), e.g. the official static masks of `robustness.missing.split_missing_masks`.

        Terms: the two task losses, the sum of the four attraction terms and of the reconstruction terms, and each
        of them (`attraction_<x>`, `reconstruction_<m>`) for logging and parity checks.
        """
        c = self.config
        incomplete = apply_kept(batch, kept, spec=self.spec)
        # Complete view first, as the official code: the SimSiam BatchNorms update their running statistics in this
        # order. Only the incomplete view's H^L is read (reconstruction). Without restoration the complete view is
        # not needed at all.
        s = self.encode(batch, local_output=False) if c.llfr or c.hlfr else None
        s_m = self.encode(incomplete, local_output=c.llfr)
        prediction_m = self.predict(s_m)
        task_incomplete = task_loss(prediction_m, batch.label, self.spec)  # L_pred_m
        terms = {"task_incomplete": task_incomplete}
        total = task_incomplete
        if s is not None and c.hlfr:
            attraction = self.attraction_losses(s, s_m)
            terms["task_complete"] = task_loss(self.predict(s), batch.label, self.spec)  # L_pred
            terms["attraction"] = sum(attraction.values())
            terms |= {f"attraction_{x}": v for x, v in attraction.items()}
            total = total + c.attraction_weight * (terms["attraction"] + terms["task_complete"])
        if s is not None and c.llfr:
            reconstruction = self.reconstruction_losses(batch, kept, s, s_m)
            terms["reconstruction"] = sum(reconstruction.values())
            terms |= {f"reconstruction_{m}": v for m, v in reconstruction.items()}
            total = total + c.reconstruction_weight * terms["reconstruction"]
        # Training metrics on the incomplete view's prediction, as the official code logs them.
        return Losses(total=total, terms={k: v.detach() for k, v in terms.items()}, prediction=prediction_m.detach())

    def attraction_losses(self, s: EMTState, s_m: EMTState) -> dict[str, Tensor]:
        """High-level feature attraction (SimSiam) ℓ_x between the views, for x in {g, h_l, h_a, h_v}."""
        features = {"global": s.G.flatten(1)} | s.h
        features_m = {"global": s_m.G.flatten(1)} | s_m.h
        attraction = {}
        for x, projector in self.aux["projector"].items():
            predictor = self.aux["predictor"][x]
            z = projector(features[x])
            p = predictor(z)
            z_m = projector(features_m[x])
            attraction[x] = attraction_loss(predictor(z_m), z_m, p, z)
        return attraction

    def reconstruction_losses(
        self, batch: Batch, kept: dict[str, Tensor], s: EMTState, s_m: EMTState
    ) -> dict[str, Tensor]:
        """Low-level reconstruction of the complete view at the dropped real positions of the incomplete one."""
        reconstruction = {}
        for m, head in self.aux["reconstruct"].items():
            mask = batch.masks[m]
            dropped, _ = front_align((mask & ~kept[m]).unsqueeze(-1).to(s.G.dtype), mask)  # (B, T, 1)
            if m == "text":
                target = s.text_local.detach()
                dropped = dropped[:, 1:] if self.tokens else dropped
            else:
                target, _ = front_align(batch.features[m], mask)
            reconstruction[m] = reconstruction_loss(head(s_m.H[m]), target, dropped[..., 0])
        return reconstruction

    def param_groups(self, train: TrainConfig) -> list[dict[str, Any]]:
        """Five groups as the official optimiser, chosen by module and name: BERT with decay, BERT biases and
        LayerNorms (`text_encoder.NO_DECAY`) without, the audio encoder, the vision encoder, and everything else
        (the training config's lr and weight decay). Empty groups (no BERT, or a corpus without text) are left out."""
        c = self.config
        groups: list[dict[str, Any]] = []
        if self.text_encoder is not None:
            named = [(n, p) for n, p in self.text_encoder.named_parameters() if p.requires_grad]
            plain = [p for n, p in named if not any(k in n for k in NO_DECAY)]
            no_decay = [p for n, p in named if any(k in n for k in NO_DECAY)]
            groups.append({"params": plain, "lr": c.encoder_lr.text, "weight_decay": c.encoder_weight_decay.text})
            groups.append({"params": no_decay, "lr": c.encoder_lr.text, "weight_decay": 0.0})
        for m, encoder in self.encoders.items():
            params = [p for p in encoder.parameters() if p.requires_grad]
            groups.append({"params": params, "lr": c.encoder_lr[m], "weight_decay": c.encoder_weight_decay[m]})
        chosen = {id(p) for g in groups for p in g["params"]}
        other = [p for p in self.parameters() if p.requires_grad and id(p) not in chosen]
        groups.append({"params": other, "lr": train.lr, "weight_decay": train.weight_decay})
        return [g for g in groups if g["params"]]


# `affectfuse tune`: width (a multiple of the 4 heads), depth, dropouts, loss weights and learning rate (the paper
# reports sensitivity to the two loss weights). Format: affectfuse/tune.py.
SEARCH_SPACE = {
    "d_model": ("choice", [64, 128]),
    "layers": ("int", 1, 3),
    "attn_dropout": ("float", 0.0, 0.4),
    "post_fusion_dropout": ("float", 0.0, 0.5),
    "attraction_weight": ("log", 0.1, 10.0),
    "reconstruction_weight": ("log", 0.1, 10.0),
    "train.lr": ("log", 1e-4, 3e-3),
}
