"""MulT: Multimodal Transformer for unaligned multimodal language sequences (Tsai, Bai et al., ACL 2019).

Each modality is projected to a common width d by a temporal convolution. A *crossmodal transformer* CM_{S→T}
then repeatedly lets a target modality T attend to a source modality S: queries come from T, keys and values from
S, so the output keeps T's length and needs no word alignment. For every target the outputs from its sources are
concatenated, Z_T = [Z_{S1→T}; Z_{S2→T}], passed through a self-attention transformer, and the last step is read
out. The three readouts are concatenated and passed through a residual MLP and a linear output layer.

Symbols (the paper's): L/A/V = text/audio/vision; X̂_m = Conv1D(X_m) ∈ R^{T_m x d}; D = crossmodal layers
(`layers`); Z_{S→T} = CM_{S→T}(X̂_T, X̂_S) ∈ R^{T_T x d}. Every transformer (layers.TransformerEncoder) scales its
input by sqrt(width), adds sinusoidal positions numbered from 1, applies dropout, runs pre-LN layers and ends with a
LayerNorm. As in the official code, a crossmodal transformer embeds its source twice, for the keys and for the
values, with separate dropout masks, and its layers normalise query, keys and values with the same LayerNorm; the
attention and feed-forward linears start from fairseq's xavier-uniform weights and zero biases.

Parity: with the official weights converted (affectfuse/convert/mult.py) our default model reproduces the official
`MULTModel` (and MMSA's `MULT`, with `positions=False, conv_keeps_length=False`) on unpadded batches to 1e-6
(outputs, loss, gradients; tests/parity/test_mult.py, docs/parity/mult.md). Options restoring this project's earlier
behaviour: `position_start=0`, `separate_kv_dropout=False`, `init="pytorch"`.

Spec: shared/spec/methods.md §3. Paper hyper-parameters: Table 5 of the paper (appendix). Official code:
yaohungt/Multimodal-Transformer (MIT); MMSA and EMT-DLFR carry variants of it. Re-implemented, nothing copied.

Deviations from the official code (the paper says nothing about padding). Measured effect of the first two on the
parity fixture `mult/unaligned` (d = 4, official weights, one sample end-padded by 2/1/3 text/audio/vision steps):
the official prediction for that sample moves by 0.089 (0.389 -> 0.301) from its prediction without the padding;
ours stays equal to it (to 1e-7); unpadded samples agree to 1e-7. They have no option: the official behaviour makes
a prediction depend on the batch it is in, which no setting here should reproduce.
- Key-padding masks. The official code attends over padded steps (it has no key-padding mask); here every
  attention ignores padded keys, and a source with no real step (a missing modality) contributes zeros.
- Readout at the last *real* step of each sample, not at the last padded step: with end padding the official code
  reads a padded position. A target modality with no real step reads out zeros. Sequences are first moved to the
  front of the padded length (`layers.front_align`), so front and end padding give the same result.
- Temporal convolution without shortening (`conv_keeps_length=False` restores the official one): the official Conv1d
  (no padding, no bias) returns T - k + 1 steps. Here
  every real step t gets the window t..t+k-1 with zeros beyond the sample's real steps, which is exactly what the
  official code computes for any sample shorter than the padded length; the sequence keeps its length and mask, so
  no short sample loses a modality. A kernel longer than the corpus's padded length T_m (utterance-level features,
  T_m = 1) is clamped to T_m, where the extra taps could never see data. The official code skips the projection when
  a modality's input width already equals d; here it always projects.
- No causal ("future") mask by default. The official code's `attn_mask=True` hides, in every transformer, source
  steps later than the query plus |T_S - T_T|, measured on the *padded* lengths. The paper does not describe it; it
  makes what a step sees depend on how much padding the batch has; and with the readout at the last step the
  self-attention part sees everything either way. `causal=True` restores it (same rule, padded lengths, hence not
  padding-invariant across batches with different padded lengths). Measured: on the unpadded `mult/unaligned_causal`
  fixture, turning the mask off moves predictions by up to 0.016; with it on, our prediction for the end-padded
  sample above moves by 0.004 with the padding (0.375 -> 0.371). Its effect on trained accuracy was not measured.
- The official code ties the dropout on the raw text features and the dropout after the position embedding in one
  flag (`embed_dropout`); MMSA splits them (`text_dropout`, `embed_dropout`). Both are fields here.
- Positions. As the official fairseq table, positions are numbered from 1 (`position_start`, default 1) and the
  table's layout is fairseq's. The official table derives positions from the input values: a step whose *first
  feature* is exactly 0 counts as padding and gets a zero embedding, and the other steps are numbered by their index
  in the padded sequence. Here positions count the real steps of front-aligned sequences, whatever their values:
  padded steps get positions too, but as keys they are masked and as queries their outputs are never read, so
  they cannot matter; with front padding (the SDK's) the official code numbers a sample's first real step after its
  padding, here it is always step 1; and a real step whose first feature is exactly 0 (after the convolution, a
  measure-zero event for real features) keeps its position here. The parity fixtures (unpadded inputs) agree to
  float precision. MMSA's MULT adds no positions at all: `positions=False`.
- Unused official parameters: the official model builds all three self-attention transformers even with
  `--lonly/--aonly/--vonly` (`only`, e.g. ("text",) for `--lonly`); we build those of the kept targets only (the
  converter drops the rest).
- Graph distillation (`graph_distillation`, variant `mult:gd`; DMD's Table 5, not in the MulT paper): each target's
  readout gets a linear unimodal prediction, trained by the task loss, and DMD's HeteroGD unit distils between
  them (prior edges, weights and its min-cosine representation term as DMD's official code). Off by default.
- Two-modality corpora (POM has no text): targets are the present modalities, each attending to the other one, so
  each target stream is d wide instead of 2d (the official partial modes drop targets, not sources).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import InputSpec, Modalities, Recipe, TrainConfig
from ..config.registry import Variant, register_model
from ..data.batch import Batch
from .base import FusionModel, Losses, Output, task_loss
from .grouped import run_crossmodal
from .layers import Dropout, GraphDistillation, TransformerEncoder, front_align, parse_edges, read_last_real_step
from .text_encoder import TextEncoder

MIN_SELF_LAYERS = 3
"""The self-attention transformers have max(layers, 3) layers (official code)."""


@dataclass(frozen=True, kw_only=True)
class MulTConfig:
    """Hyper-parameters of MulT. Defaults are the official code's (its `main.py` defaults, for unaligned MOSEI).

    The official code hard-codes d = 30; the paper's Table 5 uses d = 40 on every dataset (see the recipes).
    """

    dim: int = 30
    """Width d of every crossmodal transformer (the self-attention transformers are (M - 1) d wide for M modalities)."""
    heads: int = 5
    """Attention heads of every transformer; must divide d."""
    layers: int = 5
    """Crossmodal layers D per crossmodal transformer (`nlevels`); the self-attention ones have max(D, 3)."""
    kernel: Modalities[int] = Modalities(text=1, audio=1, vision=1)
    """Temporal convolution kernel size per modality (official 1; Table 5: 1 or 3 for text, 3/5 for audio/vision)."""
    text_dropout: float = 0.25
    """Dropout on the raw text features ("textual embedding dropout"; official: `embed_dropout`)."""
    embed_dropout: float = 0.25
    """Dropout after the scaled input plus positions, at the entry of every transformer."""
    attn_dropout: Modalities[float] = Modalities(text=0.1, audio=0.0, vision=0.0)
    """Attention dropout of the crossmodal transformers whose *source* (keys, values) is each modality, as the
    official `get_network` keys it: CM_{A→L} (`trans_l_with_a`) uses `attn_dropout_a`, CM_{L→A} the text value.
    Table 5's "crossmodal attention block dropout" is the text one, as MMSA and EMT-DLFR read it."""
    self_attn_dropout: float = 0.1
    """Attention dropout of the self-attention transformers (the official code reuses the text value)."""
    relu_dropout: float = 0.1
    """Dropout inside the feed-forward blocks."""
    res_dropout: float = 0.1
    """Dropout on each residual branch."""
    out_dropout: float = 0.0
    """Dropout inside the residual output MLP (Table 5's "output dropout")."""
    only: tuple[str, ...] = ()
    """The target modalities kept (official `--lonly/--aonly/--vonly`, e.g. ("text",)); empty: every modality of the
    corpus is a target, as the official default (all three)."""
    position_start: int = 1
    """First position of the sinusoidal table: 1 as the official (fairseq) code; 0 was this project's earlier
    default (official weights then see shifted positions: predictions move by 0.26-0.49 on the parity fixtures)."""
    positions: bool = True
    """Add sinusoidal positions at the entry of every transformer (official); MMSA's MULT adds none (False)."""
    separate_kv_dropout: bool = True
    """Crossmodal keys and values get separate embedding-dropout masks (official: two dropout calls). False: one
    mask shared by both (this project's earlier behaviour)."""
    init: Literal["xavier", "pytorch"] = "xavier"
    """Initialisation of the attention and feed-forward linears: fairseq's (official: xavier-uniform weights, the
    query/key/value ones as one (3d, d) matrix, zero biases) or `nn.Linear`'s default ("pytorch", this project's
    earlier behaviour). The convolutions and the output MLP keep PyTorch's defaults in both, as the official code."""
    conv_keeps_length: bool = True
    """True: the temporal convolution keeps each sequence's length (module docstring). False: the official valid
    convolution, T_m - k + 1 steps, a sample's real steps shortened by k - 1 (one shorter than k loses the modality)."""
    causal: bool = False
    """Hide source steps later than the query (+ |T_S - T_T|, on padded lengths) as the official `attn_mask` does;
    off by default because it makes predictions depend on the batch's padding (see the module docstring)."""
    graph_distillation: bool = False
    """MulT + GD (DMD's Table 5): a unimodal prediction from each target's readout, trained by the task loss, and a
    graph-distillation unit between them (DMD's HeteroGD unit, `layers.GraphDistillation`). Training only."""
    gd_size: int = 32
    """Vertex embedding size of the distillation unit (DMD's HeteroGD: 32)."""
    gd_weight: float = 0.05
    """Weight of the distillation loss (DMD's λ2)."""
    gd_prior: tuple[str, ...] = ("text->vision", "text->audio", "vision->audio")
    """Edges teacher->student with v = 1 in the edge prior (DMD's HeteroGD prior)."""
    gd_repr_weight: float = 10.0
    """Weight of the unit's representation term (DMD's official min-cosine hinge on the readouts)."""
    gd_reg_weight: float = 10.0
    """Weight of the unit's prior regulariser."""


def _table5(
    source: str,
    *,
    heads: int,
    kernel: Modalities[int],
    embed: float,
    attn: float,
    clip: float,
    bs: int,
    lr: float,
    epochs: int,
) -> Recipe[MulTConfig]:
    """One column of the paper's Table 5: d = 40, D = 4. What the table omits (relu/residual and audio/vision
    attention dropout) keeps the official defaults; its one embedding dropout sets both text and transformer dropout
    (one flag in the official code). No early stopping: the official code keeps the best validation epoch of all, and
    divides the learning rate by 10 after 20 epochs without validation improvement (`when` = 20)."""
    model = MulTConfig(
        dim=40,
        heads=heads,
        layers=4,
        kernel=kernel,
        text_dropout=embed,
        embed_dropout=embed,
        attn_dropout=Modalities(text=attn, audio=0.0, vision=0.0),
        self_attn_dropout=attn,
        out_dropout=0.1,
    )
    train = TrainConfig(
        lr=lr,
        batch_size=bs,
        max_epochs=epochs,
        patience=epochs,
        grad_clip=clip,
        plateau_patience=20,
        plateau_factor=0.1,
    )
    return Recipe(model=model, train=train, source=source)


RECIPES = {
    # Table 5 gives the text kernel as "1 or 3"; 1 is the official code's. On utterance-level MOSI (T = 1) the
    # audio/vision kernels are clamped to 1 by the model.
    "mosi": _table5(
        "MulT paper Table 5 (CMU-MOSI) + official code defaults",
        heads=10,
        kernel=Modalities(text=1, audio=3, vision=3),
        embed=0.2,
        attn=0.2,
        clip=0.8,
        bs=128,
        lr=1e-3,
        epochs=100,
    ),
    "mosei": _table5(
        "MulT paper Table 5 (CMU-MOSEI) + official code defaults",
        heads=8,
        kernel=Modalities(text=1, audio=3, vision=3),
        embed=0.3,
        attn=0.1,
        clip=1.0,
        bs=16,
        lr=1e-3,
        epochs=20,
    ),
    # Four binary emotions (8 logits, cross-entropy per emotion). The official code selects on validation loss; the
    # iemocap metric family monitors F1.
    "iemocap": _table5(
        "MulT paper Table 5 (IEMOCAP; kernels L/V/A 3/3/5) + official code defaults",
        heads=10,
        kernel=Modalities(text=3, audio=5, vision=3),
        embed=0.3,
        attn=0.25,
        clip=0.8,
        bs=32,
        lr=2e-3,
        epochs=30,
    ),
    # EMT-DLFR's MulT baseline (MMSA style) on CH-SIMS: its frozen BERT equals MMSA's precomputed 768-d `text`.
    # Its trainer gives Adam no weight decay, clips by value, and zeroes gradients every 8 batches while stepping
    # after every batch (a running sum we do not reproduce: we step on each batch's gradient).
    "sims": Recipe(
        model=MulTConfig(
            dim=50,
            heads=10,
            layers=2,
            kernel=Modalities(text=5, audio=1, vision=1),
            text_dropout=0.3,
            embed_dropout=0.1,
            attn_dropout=Modalities(text=0.2, audio=0.1, vision=0.0),
            self_attn_dropout=0.2,
            relu_dropout=0.0,
            res_dropout=0.2,
            out_dropout=0.1,
        ),
        train=TrainConfig(lr=2e-3, batch_size=16, max_epochs=100, patience=8, grad_clip_value=0.6, plateau_patience=10),
        source="EMT-DLFR repo config_regression.py, MulT/sims (MMSA-style trainer trains/baselines/MULT.py)",
    ),
    "pom": Recipe(
        model=MulTConfig(
            dim=30,
            heads=5,
            layers=3,
            kernel=Modalities(text=1, audio=3, vision=3),
            text_dropout=0.0,
            embed_dropout=0.1,
            attn_dropout=Modalities(text=0.1, audio=0.1, vision=0.1),
            self_attn_dropout=0.1,
            out_dropout=0.1,
        ),
        train=TrainConfig(lr=1e-3, batch_size=32, max_epochs=60, patience=15, grad_clip=0.8, plateau_patience=8),
        source="affectfuse's choice (no published MulT POM setting): official defaults with D = 3 for 600 training "
        "videos, Table 5's audio/vision kernel 3 and output dropout 0.1; best validation MAE (0.919, seed 1111) "
        "against lr 3e-4, d = 16 / D = 2, and heavier dropout; test split not consulted",
    ),
    "synthetic": Recipe(
        model=MulTConfig(
            dim=16,
            heads=2,
            layers=1,
            text_dropout=0.0,
            embed_dropout=0.0,
            attn_dropout=Modalities(text=0.0, audio=0.0, vision=0.0),
            self_attn_dropout=0.0,
            relu_dropout=0.0,
            res_dropout=0.0,
        ),
        train=TrainConfig(lr=3e-3, batch_size=32, max_epochs=10, patience=4, grad_clip=1.0),
        source="affectfuse: sized for the built-in synthetic corpus (about 20 s on 2 CPU cores)",
    ),
}


VARIANTS = {"gd": Variant("MulT + GD (DMD's Table 5)", {"graph_distillation": True})}


class TemporalConv(nn.Module):
    """X̂_m = Conv1D(X_m, k): a k-step convolution to width d, no bias (official).

    Padded steps are zeroed first. With `keep_length` k - 1 zero steps are appended, so real step t sees steps
    t..t+k-1 of its own sample and zeros beyond them, whatever the batch's padding, and the mask is unchanged.
    Without it the convolution is the official valid one: T - k + 1 outputs, of which a front-aligned sample of
    length n keeps n - k + 1 real ones (none when n < k).
    """

    def __init__(self, in_dim: int, dim: int, kernel: int, *, keep_length: bool = True) -> None:
        super().__init__()
        self.kernel = kernel
        self.keep_length = keep_length
        self.conv = nn.Conv1d(in_dim, dim, kernel_size=kernel, bias=False)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # (B, T, D_in), (B, T) -> (B, T', d)
        x = (x * mask.unsqueeze(-1).to(x.dtype)).transpose(1, 2)  # (B, D_in, T)
        # A valid convolution of a batch padded to fewer than k steps still returns one (masked) step.
        extra = self.kernel - 1 if self.keep_length else max(0, self.kernel - x.shape[-1])
        return self.conv(F.pad(x, (0, extra))).transpose(1, 2)

    def output_mask(self, mask: Tensor) -> Tensor:
        """The (B, T') mask of the outputs for a front-aligned (B, T) input mask."""
        if self.keep_length:
            return mask
        return F.pad(mask, (0, max(0, self.kernel - mask.shape[1])))[:, self.kernel - 1 :]


@register_model("mult", config=MulTConfig, recipes=RECIPES, variants=VARIANTS)
class MulT(FusionModel):
    def __init__(self, config: MulTConfig, spec: InputSpec) -> None:
        super().__init__(config, spec)
        self.targets = spec.modalities
        if len(self.targets) < 2:
            raise ValueError(f"MulT needs at least two modalities to attend across; this corpus has {self.targets}")
        d = config.dim
        unknown = sorted(set(config.only) - set(self.targets))
        if unknown:
            raise ValueError(f"MulTConfig.only names {unknown}, not modalities of this corpus {list(self.targets)}")
        self.outputs = tuple(m for m in self.targets if m in config.only) if config.only else self.targets
        self.text_encoder = TextEncoder(spec) if "text" in self.targets else None
        in_dims = {m: self.text_encoder.out_dim if m == "text" else spec.dims[m] for m in self.targets}
        self.text_drop = Dropout(config.text_dropout)
        self.conv = nn.ModuleDict(
            {
                m: TemporalConv(
                    in_dims[m], d, min(config.kernel[m], spec.lengths[m]), keep_length=config.conv_keeps_length
                )
                for m in self.targets
            }
        )
        shared = dict(
            embed_dropout=config.embed_dropout,
            relu_dropout=config.relu_dropout,
            res_dropout=config.res_dropout,
            causal=config.causal,
            position_start=config.position_start,
            positions=config.positions,
            separate_kv_dropout=config.separate_kv_dropout,
            init=config.init,
        )
        # CM_{S→T} for every ordered pair of distinct modalities, keyed "source_to_target".
        self.crossmodal = nn.ModuleDict(
            {
                f"{s}_to_{t}": TransformerEncoder(
                    d,
                    config.heads,
                    config.layers,
                    cross=True,
                    attn_dropout=config.attn_dropout[s],
                    **shared,
                )
                for t in self.outputs
                for s in self.sources(t)
            }
        )
        width = (len(self.targets) - 1) * d  # Z_T = [Z_{S1→T}; Z_{S2→T}]
        self.self_attention = nn.ModuleDict(
            {
                t: TransformerEncoder(
                    width,
                    config.heads,
                    max(config.layers, MIN_SELF_LAYERS),
                    attn_dropout=config.self_attn_dropout,
                    **shared,
                )
                for t in self.outputs
            }
        )
        combined = len(self.outputs) * width
        self.proj1 = nn.Linear(combined, combined)
        self.proj2 = nn.Linear(combined, combined)
        self.out_drop = Dropout(config.out_dropout)
        self.out = nn.Linear(combined, spec.output_size)
        if config.graph_distillation:
            if len(self.outputs) < 2:
                raise ValueError(f"MulT graph distillation needs two or more targets; `only` keeps {self.outputs}")
            self.aux = nn.ModuleDict(
                {
                    "unimodal": nn.ModuleDict({t: nn.Linear(width, spec.output_size) for t in self.outputs}),
                    "gd": GraphDistillation(
                        self.outputs,
                        logit_dim=spec.output_size,
                        repr_dim=width,
                        size=config.gd_size,
                        prior_edges=parse_edges(config.gd_prior, "gd_prior"),
                        temperature=0.25,
                        alpha=0.125,
                        representation="min_cosine",
                    ),
                }
            )

    def sources(self, target: str) -> list[str]:
        return [m for m in self.targets if m != target]

    def crossmodal_streams(self, batch: Batch) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Z_T = [Z_{S→T} for each source S] per target T, (B, T_T, (M-1) d), with the masks of the aligned inputs."""
        x_hat, masks = {}, {}
        for m in self.targets:
            x, lengths = front_align(batch.features[m], batch.masks[m])
            mask = torch.arange(x.shape[1], device=x.device) < lengths[:, None]  # (B, T_m), real steps first
            if m == "text":
                x = self.text_drop(self.text_encoder(x, mask))
            x_hat[m], masks[m] = self.conv[m](x, mask), self.conv[m].output_mask(mask)
        # CM_{S→T}(X̂_T, X̂_S) for every pair; those of equal shapes as one stacked computation when unpadded
        pairs = [(s, t) for t in self.outputs for s in self.sources(t)]
        streams = run_crossmodal(self.crossmodal, pairs, x_hat, masks)
        z = {t: torch.cat([streams[s, t] for s in self.sources(t)], dim=-1) for t in self.outputs}
        return z, masks

    def readouts(self, batch: Batch) -> dict[str, Tensor]:
        """The last real step of each target's self-attention transformer, (B, (M-1) d)."""
        z, masks = self.crossmodal_streams(batch)
        # each transformer read at the last real step; its last layer computes only that step
        return {t: read_last_real_step(self.self_attention[t], z[t], masks[t]) for t in self.outputs}

    def predict(self, readouts: dict[str, Tensor]) -> Tensor:
        h = torch.cat([readouts[t] for t in self.outputs], dim=-1)
        h = h + self.proj2(self.out_drop(F.relu(self.proj1(h))))  # residual block, (B, M (M-1) d)
        return self.shape_output(self.out(h))

    def forward(self, batch: Batch) -> Output:
        return Output(self.predict(self.readouts(batch)))

    def loss(self, batch: Batch) -> Losses:
        """The task loss; with `graph_distillation`, plus the unimodal task terms and the distillation loss."""
        if not self.config.graph_distillation:
            return super().loss(batch)
        c, spec = self.config, self.spec
        readouts = self.readouts(batch)
        prediction = self.predict(readouts)
        logits = {t: self.aux["unimodal"][t](readouts[t]) for t in self.outputs}
        task = task_loss(prediction, batch.label, spec)
        unimodal = sum(task_loss(self.shape_output(logit), batch.label, spec) for logit in logits.values())
        gd = self.aux["gd"](logits, readouts)
        distillation = gd.logit + c.gd_repr_weight * gd.representation + c.gd_reg_weight * gd.regulariser
        total = task + unimodal + c.gd_weight * distillation
        terms = {"task": task, "unimodal": unimodal, "gd_logit": gd.logit, "gd_repr": gd.representation,
                 "gd_reg": gd.regulariser}
        return Losses(total=total, terms={k: v.detach() for k, v in terms.items()}, prediction=prediction.detach())


# `affectfuse tune`: width (a multiple of the 5 heads), depth, dropouts and learning rate. Format: affectfuse/tune.py.
SEARCH_SPACE = {
    "dim": ("choice", [20, 30, 40]),
    "layers": ("int", 2, 5),
    "embed_dropout": ("float", 0.0, 0.3),
    "relu_dropout": ("float", 0.0, 0.3),
    "res_dropout": ("float", 0.0, 0.3),
    "out_dropout": ("float", 0.0, 0.3),
    "train.lr": ("log", 1e-4, 2e-3),
}
