"""SFT: Sparse Fusion Transformers (Ding, Rich, Wang, Stier, Turk, Sen, Höllerer; arXiv 2111.11992, 2021).

Each modality m is tokenised into a learned [CLS] token followed by T_m feature tokens, and runs through L_pre
unimodal transformer blocks of its own. A *sparse-pooling block* then shrinks every modality before fusion: one more
attention sub-layer, after which the modalities' [CLS] tokens are summed into the fused [CLS] and each modality's
other tokens are max-pooled along time with kernel = stride = k_m. The fused sequence

    z = [CLS_text + CLS_audio + CLS_vision; pool(z_text); pool(z_audio); pool(z_vision)]

has 1 + Σ_m ⌊T_m / k_m⌋ tokens (16 on MOSEI instead of 1,053 for plain concatenation), and the remaining L_post
joint blocks run on it. That is where the paper's "up to 6x lower compute and memory" comes from: fusion happens
once, after one unimodal block, and 11 of the 12 blocks see only the few pooled tokens. The prediction is read from
the fused [CLS] token.

Symbols: d = width (`dim`); z_m = the token sequence of modality m; k_m = `pool_kernel[m]`, the token-reduction
factor; L_pre / L_post = `n_layers_pre_fusion` / `n_layers_post_fusion`.

Spec: shared/spec/methods.md §7 and §8. Official code: yding37/sft @854cc79 (no licence; re-implemented from the
description, nothing copied). Where the paper and the code disagree the code is followed (its run.sh is the only
published setting).

Faithful details easy to miss: the attention sub-layers normalise with a LayerNorm *without* learnable scale and shift
(the code calls F.layer_norm with no weights), while the MLP's LayerNorm has them; the MLP is d wide, not 4d; there is
no attention dropout, and one dropout p (0 in every published run) acts on the residual branches and inside the MLP.
The official MLP is LN -> Linear -> Dropout -> ReLU -> Linear; `layers.FeedForward` applies ReLU before the dropout,
which is the same function (ReLU commutes with dropout's zeroing and positive rescaling).

Deviations from the official code:
- Dense attention in the sparse-pooling block. The code uses fairseq's SparseMultiheadAttention (the Sparse
  Transformer's fixed factorised pattern, stride 32), but in fairseq >= 0.10 its forward takes the dense fast path
  and never applies the sparse mask, so the published runs very probably attended densely (spec §7.2). We implement
  what ran. Of the code's pooling types, `max` (every published run) and `avg` are implemented; the attention-based,
  top-k, random and k-medoids variants and the optional second "weak fusion" pooling stage are not.
- Padding (`mask_padding=True`, kept). The code has no masks: padded frames are tokens like any other, so a
  prediction depends on how much padding its batch carries. Here each modality's real steps are first moved to the
  front (`layers.front_align`: front- and end-padded corpora give the same tokens and positions), every attention
  ignores padded keys, padded steps never win a max nor count in an average, and a window without a real step becomes
  a padded token. A sample missing a modality keeps that modality's [CLS] (which then attends only to itself) in the
  fused [CLS] sum and contributes no pooled token. Identical on unpadded input; measured on the `padded` parity
  fixture (end padding with zeros, logits within ±0.44): the unpadded sample's logits equal the official to 1e-7,
  the padded samples' move by 0.06 to 0.40. `mask_padding=False` restores the official handling (every step of the
  corpus's padded length T_m a token, zeros beyond the batch's length; tested against the official code).
- Windows (`pool_windows="floor"`, official, default). nn.MaxPool1d without padding keeps ⌊T/k⌋ windows of the
  padded length and never sees the last T mod k steps (MOSEI: 500 steps, k = 64 -> 7 tokens, the last 52 steps
  dropped; 1/7/7 text/audio/vision tokens, a fused length of 16). `pool_windows="ceil"` keeps ⌈T/k⌉ windows, the last
  one partial, so no real step is lost (MOSEI: 1/8/8, fused length 18); on the `floor` fixture it moves the logits by
  up to 0.069. No measured gain in accuracy, hence not the default.
- A kernel longer than the corpus's padded length T_m is clamped to T_m (utterance-level features, T_m = 1, give one
  token per modality; the official MaxPool1d would fail).
- Learned positions exist for T_m + 1 slots, sized from `spec.lengths`. A batch with more *real* steps than that is an
  error naming the modality and both lengths; extra padded steps are cut off.
- Task head: LN -> Linear on the fused [CLS]; K scores for regression corpora (L1 loss and the MSA metrics), K x C
  logits for classification corpora (cross-entropy), as the corpus's `spec` says. The paper poses MOSEI as 7-class
  classification (class = round(y) + 3, cross-entropy); that needs a classification corpus with those labels, which
  is not built in: the MOSEI recipe here regresses the score.
- Latent mixup is off by default (`mixup`). Every published command enables it (`--mixup any --alpha_type
  permodality`): per sample and modality λ ~ Beta(0.3, 0.3), a random block (pre- or post-fusion) after which hidden
  states are mixed with a permuted batch, and loss λ̄ L(y_a) + (1 - λ̄) L(y_b) with λ̄ the modalities' mean. Whether
  the paper's numbers use it is unclear (spec §7.3), and the code's warm-up cannot be expressed by a model: it skips
  mixup for the first 5 epochs (2 under run.sh's `--debug`), which a model without epoch state cannot count, so with
  `mixup=True` it starts at the first step. It lives in `loss` only; `forward` never mixes. With a given draw
  (`mixup_loss`) the mixed logits, loss and gradients equal the official code's (parity fixtures, mixing after the
  unimodal block and after a joint block). The code mixes the fused sequence with its *first* modality's λ (vision)
  while weighting the loss with λ̄; that is the default (`mixup_fused_lambda="vision"`); `"mean"` mixes it with λ̄, so
  the loss weights match the mix (moves the mixed logits of the `mixup_post` fixture by up to 0.061). Padding: a mixed
  step is real if it is real in either sample, and a step real in one sample only carries that sample's weighted
  state (padded states are zeroed first); the official code mixes padded frames like any other.
- Training: the recipes follow run.sh's stated 20 epochs; its lines also pass `--debug`, which would cut a run to 5
  epochs of 11 batches. The code keeps the best validation cross-entropy after epoch 6 (`delay_stop`) and skips
  incomplete batches; here the trainer selects on its monitor over all epochs and uses every batch.

Initialisation (`init="official"`, default): [CLS] tokens and position tables N(0, 1); the unimodal and joint
attention as torch's nn.MultiheadAttention (Xavier-uniform over the packed (3d, d) query/key/value matrix, zero
biases, nn.Linear's default output weight), the sparse-pooling attention as fairseq's (Xavier-uniform with gain 1/√2
per query/key/value matrix, nn.Linear's default biases, Xavier-uniform output weight, zero output bias); every other
layer nn.Linear/LayerNorm defaults, as there. `init="pytorch"`: nn.Linear's defaults everywhere.

Parity: with converted official weights, logits (eval; train with every dropout 0), the cross-entropy (with and
without mixup) and every gradient equal the official code's within 1e-5, measured ≤ 2.4e-7 (tests/parity/test_sft.py,
docs/parity/sft.md; the official sparse-pooling attention runs fairseq's dense path through a stand-in, see
tests/fixtures/parity/make_sft.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..config import InputSpec, Modalities, Recipe, TrainConfig
from ..config.registry import register_model
from ..data.batch import Batch
from .base import FusionModel, Losses, Output
from .layers import Dropout, FeedForward, MultiHeadAttention, PlainLayerNorm, front_align
from .text_encoder import TextEncoder


@dataclass(frozen=True, kw_only=True)
class SFTConfig:
    """Hyper-parameters of SFT. Defaults are the official run.sh setting for CMU-MOSEI (spec §7.2, §8)."""

    dim: int = 40
    """Token width d of every block."""
    heads: int = 5
    """Attention heads of every block; must divide d."""
    n_layers_pre_fusion: int = 1
    """Unimodal blocks per modality before the sparse-pooling block (L_pre)."""
    n_layers_post_fusion: int = 11
    """Joint blocks on the fused sequence (L_post)."""
    pool_kernel: Modalities[int] = Modalities(text=50, audio=64, vision=64)
    """Token-reduction factor k_m: kernel = stride of the pooling along time (run.sh `--ks_modality 64,64,50` for
    video, audio, text). A modality of T_m steps keeps ⌊T_m / k_m⌋ tokens (⌈T_m / k_m⌉ with `pool_windows="ceil"`);
    k_m is clamped to T_m."""
    pool: Literal["max", "avg"] = "max"
    """Pooling of each window: `max` (every published run) or `avg`, both over real steps only."""
    pool_windows: Literal["floor", "ceil"] = "floor"
    """`floor` (official): nn.MaxPool1d's ⌊T_m / k_m⌋ windows of the padded length T_m, so the last T_m mod k_m
    steps are never pooled (MOSEI: 52 of the 500 audio and vision steps); `ceil`: ⌈T_m / k_m⌉ windows, the last one
    partial, so every real step is pooled."""
    mask_padding: bool = True
    """True: padded steps are moved behind the real ones and ignored by every attention and pooling window; False
    (official): no masks, padded frames are tokens like any other (module docstring, "Padding")."""
    init: Literal["official", "pytorch"] = "official"
    """`official`: the attention weights start as the official modules' (torch nn.MultiheadAttention in the
    unimodal and joint blocks: Xavier-uniform over the (3d, d) query/key/value matrix, zero biases; fairseq's
    attention in the sparse-pooling block: Xavier-uniform with gain 1/√2 per query/key/value matrix, Xavier-uniform
    output, zero output bias); `pytorch`: nn.Linear's defaults everywhere."""
    dropout: float = 0.0
    """Dropout on every residual branch and inside the MLPs (official `--dropout`, 0 in every published run)."""
    mixup: bool = False
    """Latent mixup in `loss` (training only): the published runs enable it after 5 warm-up epochs, which a model
    cannot count, so here it is on from the first step or off (see the module docstring)."""
    mixup_alpha: float = 0.3
    """α of the Beta(α, α) distribution of the mixing weights λ (official `--alpha`)."""
    mixup_fused_lambda: Literal["vision", "mean"] = "vision"
    """λ that mixes the fused sequence after a joint block: `vision` (official: the first modality's λ, vision in
    the code's rgb/spec/text order; audio's, then text's where vision is absent) or `mean`, the modalities' mean λ̄
    that also weights the two labels in the loss."""


def _mosei_train() -> TrainConfig:
    """run.sh (MOSEI): AdamW lr 1e-4, no weight decay, batch 24, 20 epochs, clip-grad-norm 0.8, LR / 10 after 10
    epochs without improvement (`--when` 10; official: of the validation cross-entropy, here: of the trainer's
    monitor). No early stopping: the best validation epoch of all is kept."""
    return TrainConfig(
        optimizer="adamw",
        lr=1e-4,
        weight_decay=0.0,
        batch_size=24,
        max_epochs=20,
        patience=20,
        grad_clip=0.8,
        plateau_patience=10,
        plateau_factor=0.1,
    )


RECIPES = {
    "mosei": Recipe(
        model=SFTConfig(),
        train=_mosei_train(),
        source="yding37/sft run.sh (MOSEI) and main.py defaults; regression head, mixup off (module docstring)",
    ),
    # MOSI unaligned is 50/375/500 steps: kernels chosen to keep MOSEI's published token budget of 1/7/7 tokens
    # with the official floor windows (⌊50/50⌋, ⌊375/53⌋, ⌊500/71⌋; 4 and 3 steps left over, against 52 on MOSEI).
    # On utterance-level MOSI (T = 1) every kernel is clamped to 1.
    "mosi": Recipe(
        model=SFTConfig(pool_kernel=Modalities(text=50, audio=53, vision=71)),
        train=_mosei_train(),
        source="affectfuse: the MOSEI run.sh setting with pooling kernels adapted to MOSI's unaligned lengths",
    ),
    # POM (MFN release): audio and video only, 20 word-aligned steps, 600 training videos, 17 trait scores.
    "pom": Recipe(
        model=SFTConfig(n_layers_post_fusion=3, pool_kernel=Modalities(text=4, audio=4, vision=4), dropout=0.1),
        train=TrainConfig(
            optimizer="adamw", lr=1e-3, batch_size=24, max_epochs=60, patience=15, grad_clip=0.8, plateau_patience=8
        ),
        source="affectfuse's choice (no published SFT POM setting): d = 40, 5 heads, 1 + 3 blocks for 600 training "
        "videos, 20 -> 5 tokens per modality, dropout 0.1, lr 1e-3 with early stopping; validation MAE 0.926/0.928 "
        "(2 seeds) on the MFN release, lr 3e-4, 11 joint blocks, no dropout or 1 token per modality all within 0.01",
    ),
    "synthetic": Recipe(
        model=SFTConfig(dim=16, heads=4, n_layers_post_fusion=2, pool_kernel=Modalities(text=4, audio=4, vision=4)),
        train=TrainConfig(optimizer="adamw", lr=2e-3, batch_size=32, max_epochs=12, patience=5, grad_clip=0.8),
        source="affectfuse: sized for the built-in synthetic corpus (T = 20 -> 5 tokens per modality)",
    ),
}


# ---------------------------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------------------------


class AttentionSublayer(nn.Module):
    """z + Dropout(MHA(LN(z))), the LayerNorm without learnable scale and shift (as the official code)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm = PlainLayerNorm()
        self.attn = MultiHeadAttention(dim, heads)
        self.drop = Dropout(dropout)

    def forward(self, z: Tensor, mask: Tensor) -> Tensor:  # (B, N, d), (B, N) -> (B, N, d)
        return z + self.drop(self.attn(self.norm(z), key_mask=mask))


class Block(nn.Module):
    """The SFT transformer block: the attention sub-layer, then z + Dropout(MLP(LN(z))) with a d-wide MLP."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attention = AttentionSublayer(dim, heads, dropout)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, dim, dropout=dropout)
        self.drop = Dropout(dropout)

    def forward(self, z: Tensor, mask: Tensor) -> Tensor:  # (B, N, d), (B, N) -> (B, N, d)
        z = self.attention(z, mask)
        return z + self.drop(self.mlp(self.mlp_norm(z)))


class Tokenizer(nn.Module):
    """z_m = [CLS_m; Linear(x_m)] + P_m, with P_m a learned (T_m + 1, d) position table."""

    def __init__(self, in_dim: int, dim: int, length: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)
        self.cls = nn.Parameter(torch.randn(dim))
        self.positions = nn.Parameter(torch.randn(length + 1, dim))

    def forward(self, x: Tensor) -> Tensor:  # (B, T, D_m) -> (B, 1 + T, d)
        cls = self.cls.expand(x.shape[0], 1, -1)
        return torch.cat([cls, self.proj(x)], dim=1) + self.positions[: x.shape[1] + 1]


def pool_tokens(x: Tensor, mask: Tensor, kernel: int, pool: str) -> tuple[Tensor, Tensor]:
    """1-D pooling along time with kernel = stride = k over real steps only: (B, T, d), (B, T) -> (B, ⌈T/k⌉, d) and
    the pooled mask (B, ⌈T/k⌉). The last window may be partial; a window without a real step gives a zero token that
    is marked as padding."""
    pad = -x.shape[1] % kernel
    x = rearrange(F.pad(x, (0, 0, 0, pad)), "b (n k) d -> b n k d", k=kernel)
    real = rearrange(F.pad(mask, (0, pad)), "b (n k) -> b n k 1", k=kernel)
    if pool == "max":
        pooled = x.masked_fill(~real, float("-inf")).amax(2)  # (B, n, d)
    else:
        pooled = x.masked_fill(~real, 0.0).sum(2) / real.sum(2).clamp_min(1)
    window_mask = real.any(2)[..., 0]  # (B, n)
    return pooled.masked_fill(~window_mask[..., None], 0.0), window_mask


class SparsePooling(nn.Module):
    """The sparse-pooling block of one modality: an attention sub-layer (dense; see the module docstring), then its
    [CLS] token for the fused sum and its other tokens pooled to ⌊T/k⌋ windows (⌈T/k⌉ with `keep=None`)."""

    def __init__(self, dim: int, heads: int, dropout: float, *, kernel: int, pool: str, keep: int | None) -> None:
        super().__init__()
        self.attention = AttentionSublayer(dim, heads, dropout)
        self.kernel = kernel
        self.pool = pool
        self.keep = keep  # `floor` windows: only the first ⌊T/k⌋ k steps of the padded length are pooled

    def forward(self, z: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, 1 + T, d), (B, 1 + T) -> [CLS] (B, d), pooled tokens (B, n, d) and their mask (B, n)."""
        z = self.attention(z, mask)
        steps, step_mask = z[:, 1:], mask[:, 1:]
        if self.keep is not None:
            steps, step_mask = steps[:, : self.keep], step_mask[:, : self.keep]
        tokens, token_mask = pool_tokens(steps, step_mask, self.kernel, self.pool)
        return z[:, 0], tokens, token_mask


@dataclass
class LatentMixup:
    """One draw of SFT's latent mixup: after block `layer`, sample i's hidden states become
    λ h_i + (1 - λ) h_index[i]."""

    layer: int
    """Blocks are counted pre-fusion first: 0..L_pre-1 mixes each modality with its own λ after that unimodal block;
    L_pre..L_pre+L_post-1 mixes the fused sequence with λ̄ after that joint block."""
    lam: Tensor
    """(M, B) λ per modality (in `spec.modalities` order) and sample; λ̄ = lam.mean(0)."""
    index: Tensor
    """(B,) partner of each sample (a permutation of the batch)."""

    def mix(self, h: Tensor, mask: Tensor, lam: Tensor) -> tuple[Tensor, Tensor]:
        """(B, N, d), (B, N), (B,) -> mixed states and the union of the two samples' real steps."""
        h = h.masked_fill(~mask[..., None], 0.0)  # a step real in one sample only keeps that sample's weighted state
        lam = lam.to(h.dtype)[:, None, None]
        return lam * h + (1 - lam) * h[self.index], mask | mask[self.index]


def per_sample_task_loss(prediction: Tensor, label: Tensor, spec: InputSpec) -> Tensor:
    """`base.task_loss` before the batch mean, (B,): L1 or cross-entropy, averaged over the K targets."""
    if spec.task == "regression":
        return F.l1_loss(prediction, label.to(prediction.dtype), reduction="none").mean(-1)
    ce = F.cross_entropy(prediction.reshape(-1, spec.num_classes), label.reshape(-1), reduction="none")
    return ce.reshape(prediction.shape[0], -1).mean(-1)


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------


@register_model("sft", config=SFTConfig, recipes=RECIPES)
class SFT(FusionModel):
    def __init__(self, config: SFTConfig, spec: InputSpec) -> None:
        super().__init__(config, spec)
        if config.pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {config.pool!r}")
        if config.pool_windows not in ("floor", "ceil"):
            raise ValueError(f"pool_windows must be 'floor' or 'ceil', got {config.pool_windows!r}")
        if config.init not in ("official", "pytorch"):
            raise ValueError(f"init must be 'official' or 'pytorch', got {config.init!r}")
        if config.mixup_fused_lambda not in ("vision", "mean"):
            raise ValueError(f"mixup_fused_lambda must be 'vision' or 'mean', got {config.mixup_fused_lambda!r}")
        if min(config.n_layers_pre_fusion, config.n_layers_post_fusion) < 0:
            raise ValueError("n_layers_pre_fusion and n_layers_post_fusion must be >= 0")
        if config.mixup and config.n_layers_pre_fusion + config.n_layers_post_fusion == 0:
            raise ValueError("mixup mixes hidden states after a block; this config has no blocks to mix after")
        self.modalities = spec.modalities
        for m in self.modalities:
            if config.pool_kernel[m] < 1:
                raise ValueError(f"pool_kernel.{m} must be >= 1, got {config.pool_kernel[m]}")
        # k_m clamped to T_m: a longer window could only ever hold padding.
        self.kernels = {m: min(config.pool_kernel[m], spec.lengths[m]) for m in self.modalities}
        d, h, p = config.dim, config.heads, config.dropout
        self.text_encoder = TextEncoder(spec) if "text" in self.modalities else None
        in_dims = {m: self.text_encoder.out_dim if m == "text" else spec.dims[m] for m in self.modalities}
        self.tokenizers = nn.ModuleDict({m: Tokenizer(in_dims[m], d, spec.lengths[m]) for m in self.modalities})
        self.unimodal = nn.ModuleDict(
            {m: nn.ModuleList(Block(d, h, p) for _ in range(config.n_layers_pre_fusion)) for m in self.modalities}
        )
        self.sparse_pooling = nn.ModuleDict(
            {
                m: SparsePooling(d, h, p, kernel=k, pool=config.pool,
                                 keep=spec.lengths[m] // k * k if config.pool_windows == "floor" else None)
                for m, k in self.kernels.items()
            }
        )
        self.joint = nn.ModuleList(Block(d, h, p) for _ in range(config.n_layers_post_fusion))
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, spec.output_size))
        if config.init == "official":
            self.official_init()
        # The official fused-sequence λ is its first modality's, in its rgb/spec/text order.
        first = next(m for m in ("vision", "audio", "text") if m in self.modalities)
        self.first_official_modality = self.modalities.index(first)

    @torch.no_grad()
    def official_init(self) -> None:
        """The official attention initialisation (see `SFTConfig.init`); every other layer already starts as there."""
        blocks = [*(b for m in self.modalities for b in self.unimodal[m]), *self.joint]
        for block in blocks:  # torch nn.MultiheadAttention: one Xavier draw for the packed (3d, d) matrix
            attn = block.attention.attn
            packed = nn.init.xavier_uniform_(torch.empty(3 * attn.to_q.in_features, attn.to_q.in_features))
            attn.to_q.weight.copy_(packed[: attn.to_q.out_features])
            attn.to_kv.weight.copy_(packed[attn.to_q.out_features :])
            for linear in (attn.to_q, attn.to_kv, attn.out):
                nn.init.zeros_(linear.bias)
        for pooling in self.sparse_pooling.values():  # fairseq MultiheadAttention: q, k, v drawn one by one
            attn = pooling.attention.attn
            d = attn.to_q.in_features
            nn.init.xavier_uniform_(attn.to_q.weight, gain=2**-0.5)
            for half in (slice(0, d), slice(d, 2 * d)):
                attn.to_kv.weight[half] = nn.init.xavier_uniform_(torch.empty(d, d), gain=2**-0.5)
            nn.init.xavier_uniform_(attn.out.weight)
            nn.init.zeros_(attn.out.bias)  # fairseq leaves the q/k/v biases at nn.Linear's default

    def tokenize(self, batch: Batch) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """z_m (B, 1 + T_m, d) with masks (B, 1 + T_m) whose [CLS] slot is always real."""
        z, masks = {}, {}
        for m in self.modalities:
            table = self.spec.lengths[m]
            if not self.config.mask_padding:
                # official: every step of the corpus's padded length T_m is a token (zeros beyond the batch's)
                x = batch.features[m]
                if x.shape[1] > table:
                    raise ValueError(
                        f"{m} input has {x.shape[1]} steps, but this SFT model learned positions for T_{m} = {table} "
                        "steps (spec.lengths) and mask_padding=False counts every step as real"
                    )
                x = F.pad(x, (0, 0, 0, table - x.shape[1]))
                mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
                if m == "text":
                    x = self.text_encoder(x, mask)
                z[m] = self.tokenizers[m](x)
                masks[m] = F.pad(mask, (1, 0), value=True)
                continue
            x, lengths = front_align(batch.features[m], batch.masks[m])
            if x.shape[1] > table:
                longest = int(lengths.max())
                if longest > table:
                    raise ValueError(
                        f"{m} input has {longest} real steps, but this SFT model learned positions for at most "
                        f"T_{m} = {table} steps (spec.lengths); build the model from a spec with the longer length"
                    )
                x = x[:, :table]  # only padding lies beyond the table once real steps are in front
            mask = torch.arange(x.shape[1], device=x.device) < lengths[:, None]  # (B, T_m)
            if m == "text":
                x = self.text_encoder(x, mask)
            z[m] = self.tokenizers[m](x)
            masks[m] = F.pad(mask, (1, 0), value=True)
        return z, masks

    def fuse(self, batch: Batch, mixup: LatentMixup | None = None) -> tuple[Tensor, Tensor]:
        """Unimodal blocks, sparse pooling and concatenation: the fused sequence (B, 1 + Σ_m n_m, d) and its
        mask, [CLS] first."""
        z, masks = self.tokenize(batch)
        for i in range(self.config.n_layers_pre_fusion):
            for m in self.modalities:
                z[m] = self.unimodal[m][i](z[m], masks[m])
            if mixup is not None and mixup.layer == i:
                for j, m in enumerate(self.modalities):
                    z[m], masks[m] = mixup.mix(z[m], masks[m], mixup.lam[j])
        cls, tokens, token_masks = [], [], []
        for m in self.modalities:
            c, t, t_mask = self.sparse_pooling[m](z[m], masks[m])
            cls.append(c)
            tokens.append(t)
            token_masks.append(t_mask)
        fused_cls = torch.stack(cls).sum(0)[:, None]  # (B, 1, d): CLS_text + CLS_audio + CLS_vision
        mask = torch.cat([token_masks[0].new_ones(fused_cls.shape[:2]), *token_masks], dim=1)
        return torch.cat([fused_cls, *tokens], dim=1), mask

    def encode(self, batch: Batch, mixup: LatentMixup | None = None) -> Tensor:
        """The fused [CLS] token after the joint blocks, (B, d)."""
        h, mask = self.fuse(batch, mixup)
        for j, block in enumerate(self.joint):
            h = block(h, mask)
            if mixup is not None and mixup.layer == self.config.n_layers_pre_fusion + j:
                h, mask = mixup.mix(h, mask, self.fused_lambda(mixup))
        return h[:, 0]

    def forward(self, batch: Batch) -> Output:
        return Output(self.shape_output(self.head(self.encode(batch))))

    def fused_lambda(self, mixup: LatentMixup) -> Tensor:
        """(B,) λ that mixes the fused sequence (`SFTConfig.mixup_fused_lambda`)."""
        if self.config.mixup_fused_lambda == "mean":
            return mixup.lam.mean(0)
        return mixup.lam[self.first_official_modality]

    def loss(self, batch: Batch) -> Losses:
        """The task loss; with `mixup` in training, λ̄ L(ŷ, y_i) + (1 - λ̄) L(ŷ, y_index[i]) averaged over samples,
        where ŷ is the prediction from the mixed hidden states (also what `Losses.prediction` holds)."""
        if not (self.config.mixup and self.training):
            return super().loss(batch)
        return self.mixup_loss(batch, self.sample_mixup(batch))

    def mixup_loss(self, batch: Batch, mixup: LatentMixup) -> Losses:
        """`loss` for one given mixup draw (λ̄ = the modalities' mean λ weights the two labels, as officially)."""
        prediction = self.shape_output(self.head(self.encode(batch, mixup)))
        lam = mixup.lam.mean(0).to(prediction.dtype)  # (B,)
        task = (
            lam * per_sample_task_loss(prediction, batch.label, self.spec)
            + (1 - lam) * per_sample_task_loss(prediction, batch.label[mixup.index], self.spec)
        ).mean()
        return Losses(total=task, terms={"task": task.detach()}, prediction=prediction.detach())

    def sample_mixup(self, batch: Batch) -> LatentMixup:
        """λ ~ Beta(α, α) per modality and sample, a uniformly random block, a random pairing (global RNG)."""
        like = batch.features[self.modalities[0]]
        alpha = like.new_tensor(self.config.mixup_alpha)
        blocks = self.config.n_layers_pre_fusion + self.config.n_layers_post_fusion
        return LatentMixup(
            layer=int(torch.randint(blocks, ())),
            lam=torch.distributions.Beta(alpha, alpha).sample((len(self.modalities), like.shape[0])),
            index=torch.randperm(like.shape[0], device=like.device),
        )


# `affectfuse tune`: width (a multiple of the 5 heads), joint depth, dropout, AdamW settings (format: tune.py).
SEARCH_SPACE = {
    "dim": ("choice", [20, 40]),
    "n_layers_post_fusion": ("int", 2, 11),
    "dropout": ("float", 0.0, 0.3),
    "train.lr": ("log", 1e-4, 1e-3),
    "train.weight_decay": ("choice", [0.0, 1e-4, 1e-3, 1e-2]),
}
