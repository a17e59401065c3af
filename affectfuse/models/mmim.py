"""MMIM: MultiModal InfoMax (Han, Chen, Poria, EMNLP 2021), hierarchical mutual-information maximisation.

1. Unimodal encoders: text h_t = BERT's [CLS] output; audio/vision h_a, h_v = an LSTM's final hidden state over the
   real frames, dropout, one Linear.
2. Fusion: Z = tanh(W₂ tanh(W₁ Dropout([h_t; h_a; h_v]))), prediction ŷ = W₃ Z.
3. Input-level MI lower bounds (MMILB, training only, under `aux`) between modality pairs (X, Y) ∈ {(t, v), (t, a)}
   (+ (v, a) with `add_va`): a Gaussian q(y|x) = N(μ(x), diag σ²(x)) whose log-likelihood
       lld = E_b Σ_d -(μ_d(x) - y_d)² / (2 σ_d²(x))
   bounds I(X; Y) from below up to the entropy H(Y), estimated per sentiment class from the projected y's of the
   batch and a memory of the previous batch (`memory_size`): H = ¼ (log det Σ_pos + log det Σ_neg).
4. Fusion-level MI (CPC, training only): for each modality m a predictor G_m(Z) of h_m, and the InfoNCE
       nce_m = -E_b [cos(h_m, G_m(Z)) - log Σ_b' exp cos(h_m, G_m(Z_b'))]    (vectors normalised first).

Two-stage optimisation, every epoch (`stages`): first the MMILB estimators alone maximise lld (their own optimiser,
`mmilb_lr`), over `mmilb_fraction` of the training batches; then every other parameter minimises
    L = L_task + α Σ_m nce_m - β (lld + H)
(the H term from the third batch of the pass on, as the official trainer). Both losses reach parameters their stage
does not step (lld reaches the encoders; L reaches the estimators): the generic trainer steps only the stage's own
(`models.base.Stage`). `loss` is the main stage's objective.

Symbols: t/a/v = text/audio/vision; B the batch; α = `alpha`, β = `beta`. Spec: MMIM appears only in EMT-DLFR's
tables (shared/spec/methods.md §4.6). Official code:
declare-lab/Multimodal-Infomax (`src/model.py`, `src/modules/encoders.py`, `src/solver.py`); MMSA's port
(`singleTask/MMIM`) matches it. Re-implemented, nothing copied.

Deviations from the official code:
- The memory behind H lives in the model (cleared at the start of every main-stage pass, as the official trainer
  creates it per epoch) and counts the batches of the pass; `loss` outside a staged epoch uses it the same way.
- H needs both classes of a batch plus memory: a class with no more samples than the projection's width, or whose
  covariance is singular all the same (every feature of a modality missing makes its samples identical), contributes
  no H term here; the official log det is then -inf or NaN and the run diverges. Classification
  corpora (no sign to split on) and multi-target ones use no H / the first target's sign.
- Corpora without text: the MI pair is (v, a) (otherwise only with `add_va`). Precomputed text features (no BERT):
  h_t is their masked mean.
- The LSTM readout is the last layer's final state (forward, or forward and backward concatenated); the official
  bidirectional readout takes the first layer's two directions, the same when `rnn_layers` = 1 (every config).
- The encoders' dropout is 0 unless `rnn_layers` > 1, as the official code passes it (and every config has 1 layer).
- `contrast` is always on (every official configuration; off, the official code still subtracts β H).
- Model selection: the official solver saves (and finally reports) an epoch only when its validation loss improves
  *and* its test MAE beats the best so far, i.e. it selects on the test split; the generic trainer selects on
  validation only.
- The entropy projection (official `entropy_prj`) holds buffers, not parameters: the official code never trains it
  (see `MMILB`), so the same fixed random projection is kept without an optimiser entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import InputSpec, Recipe, TrainConfig, uses_bert_tokens
from ..config.registry import register_model
from ..data.batch import Batch
from .base import FusionModel, Losses, Output, Stage, task_loss
from .layers import Dropout, front_align, masked_mean, pack_real_steps, run_lstm
from .text_encoder import TextEncoder

LETTER = {"text": "t", "audio": "a", "vision": "v"}


@dataclass(frozen=True, kw_only=True)
class MMIMConfig:
    """Hyper-parameters of MMIM. Defaults are the official code's (`src/config.py`, run with `--contrast`)."""

    audio_hidden: int = 16
    """`d_ah`: LSTM width of the audio encoder."""
    vision_hidden: int = 16
    """`d_vh`."""
    audio_out: int = 16
    """`d_aout`: width of h_a."""
    vision_out: int = 16
    """`d_vout`: width of h_v."""
    rnn_layers: int = 1
    """`n_layer`."""
    bidirectional: bool = False
    """Bidirectional encoder LSTMs (official flag, off by default; MMSA's configs turn it on)."""
    audio_dropout: float = 0.1
    """`dropout_a`, applied only with `rnn_layers` > 1 (official)."""
    vision_dropout: float = 0.1
    fusion_hidden: int = 128
    """`d_prjh`: width of Z."""
    fusion_dropout: float = 0.1
    """`dropout_prj`: dropout on [h_t; h_a; h_v]."""
    mmilb_activation: Literal["ReLU", "Tanh"] = "ReLU"
    """Middle activation of the MMILB networks (`mmilb_mid_activation`)."""
    cpc_layers: int = 1
    cpc_activation: Literal["ReLU", "Tanh"] = "Tanh"
    add_va: bool = False
    """Also bound I(v; a)."""
    alpha: float = 0.1
    """Weight of the CPC terms."""
    beta: float = 0.1
    """Weight of the MMILB terms (lld and H)."""
    memory_size: int = 1
    """Batches of projected samples remembered for the entropy estimate (`mem_size`)."""
    mmilb_fraction: float = 1.0
    """Share of the training batches of the MMILB stage (official: 0.5 on MOSEI)."""
    mmilb_lr: float = 1e-3
    mmilb_weight_decay: float = 1e-4
    """`weight_decay_club`."""
    text_lr: float = 5e-5
    """`lr_bert`; the rest of the main stage uses the training config's lr and weight decay."""
    text_weight_decay: float = 1e-4
    init: Literal["xavier", "pytorch"] = "xavier"
    """Official: every non-BERT weight matrix xavier-normal (biases keep PyTorch's defaults)."""
    bert_path: str = ""
    """Local folder of the BERT model, used only when the corpus's text is BERT token ids; nothing is downloaded."""


def _train(**kw: Any) -> TrainConfig:
    """Adam, lr_main 1e-3 with L2 1e-4, gradient norm clipped to 1, lr x0.5 after 20 epochs without validation
    improvement (`when`), early stop after 10, 40 epochs (official main.py defaults)."""
    base = dict(lr=1e-3, weight_decay=1e-4, batch_size=32, grad_clip=1.0, plateau_patience=20, plateau_factor=0.5,
                patience=10, max_epochs=40)
    return TrainConfig(**(base | kw))


RECIPES = {
    "mosi": Recipe(model=MMIMConfig(), train=_train(), source="official src/config.py defaults, --contrast (README)"),
    "mosei": Recipe(
        model=MMIMConfig(mmilb_fraction=0.5), train=_train(),
        source="official defaults, --contrast; the MMILB stage runs on half of the batches on MOSEI (solver.py)",
    ),
    "sims": Recipe(
        model=MMIMConfig(bidirectional=True), train=_train(patience=8, max_epochs=200),
        source="MMSA config_regression.json mmim/sims (bidirectional LSTMs, early stop 8, bert-base-chinese)",
    ),
    "synthetic": Recipe(
        model=MMIMConfig(audio_hidden=16, vision_hidden=16, fusion_hidden=32, fusion_dropout=0.0),
        train=_train(lr=2e-3, batch_size=64, max_epochs=30, patience=5),
        source="affectfuse: sized for the built-in synthetic corpus (not tuned)",
    ),
}


# ---------------------------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------------------------


class RNNEncoder(nn.Module):
    """LSTM over the real frames -> final hidden state (both directions when bidirectional) -> Dropout -> Linear."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, *, layers: int, bidirectional: bool, dropout: float):
        super().__init__()
        dropout = dropout if layers > 1 else 0.0  # as the official code passes it
        self.rnn = nn.LSTM(in_dim, hidden, num_layers=layers, dropout=dropout, bidirectional=bidirectional,
                           batch_first=True)
        self.drop = Dropout(dropout)
        self.linear = nn.Linear((2 if bidirectional else 1) * hidden, out_dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # (B, T, D_in), (B, T) -> (B, out)
        if not self.rnn.bidirectional:
            return self.linear(self.drop(run_lstm(self.rnn, x, mask)[0]))
        _, (h, _) = self.rnn(pack_real_steps(x, mask))  # (layers x directions, B, hidden)
        h = torch.cat([h[-2], h[-1]], dim=-1)
        return self.linear(self.drop(h))


def _mlp(in_dim: int, out_dim: int, activation: str) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, out_dim), getattr(nn, activation)(), nn.Linear(out_dim, out_dim))


class MMILB(nn.Module):
    """Gaussian q(y|x) (μ and log σ² MLPs of x) and the projection tanh(W y + b) of y for the entropy estimate.

    W and b are buffers: the official optimisers never step them (only the main stage's loss reaches them, and that
    stage's optimiser does not hold them), so they keep their initial random values; `init_projection` draws them
    as the official code does (W xavier-normal with `xavier`, b as `nn.Linear`'s default)."""

    def __init__(self, x_dim: int, y_dim: int, activation: str, *, xavier: bool) -> None:
        super().__init__()
        self.mu = _mlp(x_dim, y_dim, activation)
        self.logvar = _mlp(x_dim, y_dim, activation)
        projection = nn.Linear(y_dim, y_dim // 4)
        if xavier:
            nn.init.xavier_normal_(projection.weight)
        self.register_buffer("entropy_weight", projection.weight.detach().clone())
        self.register_buffer("entropy_bias", projection.bias.detach().clone())

    def project(self, y: Tensor) -> Tensor:
        """(B, d_y) -> (B, d_y / 4): the samples whose class-wise covariances give H."""
        return torch.tanh(F.linear(y, self.entropy_weight, self.entropy_bias))

    def log_likelihood(self, x: Tensor, y: Tensor) -> Tensor:
        """lld = E_b Σ_d -(μ(x) - y)² / (2 exp(log σ²(x))), up to constants."""
        return (-((self.mu(x) - y) ** 2) / 2.0 / torch.exp(self.logvar(x))).sum(-1).mean()


def gaussian_entropy(samples: Tensor) -> Tensor:
    """log det Σ of `samples` (N, k), Σ their covariance with 1/N: twice a Gaussian's entropy up to constants."""
    centred = samples - samples.mean(0)
    return torch.logdet(centred.T @ centred / samples.shape[0])


class CPC(nn.Module):
    """InfoNCE between h_m and a prediction of it from Z (cosine scores over the batch)."""

    def __init__(self, x_dim: int, z_dim: int, layers: int, activation: str) -> None:
        super().__init__()
        if layers == 1:
            self.net = nn.Linear(z_dim, x_dim)
        else:
            parts: list[nn.Module] = [nn.Linear(z_dim, x_dim), getattr(nn, activation)()]
            parts += [nn.Linear(x_dim, x_dim) for _ in range(layers - 1)]
            self.net = nn.Sequential(*parts)

    def forward(self, h: Tensor, z: Tensor) -> Tensor:
        # eps: a sample whose modality is entirely missing has h = 0; the official x / |x| gives NaN for it (and
        # poisons the batch), here a zero vector. Any other vector is normalised exactly as the official code does.
        prediction = F.normalize(self.net(z), dim=1, eps=1e-12)
        h = F.normalize(h, dim=1, eps=1e-12)
        positive = (h * prediction).sum(-1)  # (B,)
        negative = torch.logsumexp(h @ prediction.T, dim=-1)  # (B,)
        return -(positive - negative).mean()


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------


@register_model("mmim", config=MMIMConfig, recipes=RECIPES)
class MMIM(FusionModel):
    def __init__(self, config: MMIMConfig, spec: InputSpec) -> None:
        super().__init__(config, spec)
        self.modalities = spec.modalities
        self.text_encoder = TextEncoder(spec, bert_path=config.bert_path) if "text" in spec.dims else None
        self.encoders = nn.ModuleDict()
        shared = dict(layers=config.rnn_layers, bidirectional=config.bidirectional)
        if "audio" in spec.dims:
            self.encoders["audio"] = RNNEncoder(spec.dims["audio"], config.audio_hidden, config.audio_out,
                                                dropout=config.audio_dropout, **shared)
        if "vision" in spec.dims:
            self.encoders["vision"] = RNNEncoder(spec.dims["vision"], config.vision_hidden, config.vision_out,
                                                 dropout=config.vision_dropout, **shared)
        widths = {"text": self.text_encoder.out_dim if self.text_encoder else 0, "audio": config.audio_out,
                  "vision": config.vision_out}
        self.widths = {m: widths[m] for m in self.modalities}
        self.drop = Dropout(config.fusion_dropout)
        d = config.fusion_hidden
        self.linear_1 = nn.Linear(sum(self.widths.values()), d)
        self.linear_2 = nn.Linear(d, d)
        self.linear_3 = nn.Linear(d, spec.output_size)
        pairs = [("text", "vision"), ("text", "audio")]
        if config.add_va or "text" not in self.modalities:
            pairs.append(("vision", "audio"))
        self.pairs = [(x, y) for x, y in pairs if x in self.modalities and y in self.modalities]
        self.aux = nn.ModuleDict(
            {
                "mmilb": nn.ModuleDict(
                    {LETTER[x] + LETTER[y]: MMILB(self.widths[x], self.widths[y], config.mmilb_activation,
                                                  xavier=config.init == "xavier") for x, y in self.pairs}
                ),
                "cpc": nn.ModuleDict(
                    {m: CPC(w, d, config.cpc_layers, config.cpc_activation) for m, w in self.widths.items()}
                ),
            }
        )
        if config.init == "xavier":
            bert = {id(p) for p in self.text_encoder.parameters()} if self.text_encoder else set()
            for p in self.parameters():
                if p.dim() > 1 and id(p) not in bert:
                    nn.init.xavier_normal_(p)
        self.memory: dict[str, dict[str, list[Tensor]]] = {}
        """Pair -> {"pos": [...], "neg": [...]}: the projected y's of the previous `memory_size` batches."""
        self.batches_seen = 0
        """Batches of the current main-stage pass (the H term starts after `memory_size` + 1 of them)."""

    # -- encoders and prediction ----------------------------------------------------------------------------------

    def encode(self, batch: Batch) -> dict[str, Tensor]:
        """h_m for every modality (B, d_m)."""
        h = {}
        for m in self.modalities:
            x, mask = batch.features[m], batch.masks[m]
            if m == "text":
                x = self.text_encoder(x, mask)
                if uses_bert_tokens(self.spec):  # [CLS]: the first real position
                    x, lengths = front_align(x, mask)
                    h[m] = x[:, 0] * (lengths > 0).unsqueeze(-1).to(x.dtype)
                else:
                    h[m] = masked_mean(x, mask)
            else:
                h[m] = self.encoders[m](x, mask)
        return h

    def fuse(self, h: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Z (B, fusion_hidden) and the prediction from [h_t; h_a; h_v]."""
        z = torch.tanh(self.linear_2(torch.tanh(self.linear_1(self.drop(torch.cat(list(h.values()), dim=-1))))))
        return z, self.shape_output(self.linear_3(z))

    def forward(self, batch: Batch) -> Output:
        return Output(self.fuse(self.encode(batch))[1])

    # -- the two stages -------------------------------------------------------------------------------------------

    def log_likelihood(self, h: dict[str, Tensor]) -> dict[str, Tensor]:
        return {LETTER[x] + LETTER[y]: self.aux["mmilb"][LETTER[x] + LETTER[y]].log_likelihood(h[x], h[y])
                for x, y in self.pairs}

    def mmilb_loss(self, batch: Batch) -> Losses:
        """Stage 1: the estimators maximise Σ lld (-Σ lld is minimised)."""
        h = self.encode(batch)
        lld = self.log_likelihood(h)
        total = -sum(lld.values())
        prediction = self.fuse(h)[1]
        terms = {"lld": -total.detach()} | {f"lld_{k}": v.detach() for k, v in lld.items()}
        return Losses(total=total, terms=terms, prediction=prediction.detach())

    def entropy(self, h: dict[str, Tensor], label: Tensor, use_memory: bool) -> Tensor:
        """Σ over pairs of H = ¼ (log det Σ_pos + log det Σ_neg) of the projected y's, with the memory; updates it."""
        total = h[self.modalities[0]].new_zeros(())
        if self.spec.task != "regression":
            return total
        sign = label.reshape(len(label), -1)[:, 0]
        for x, y in self.pairs:
            key = LETTER[x] + LETTER[y]
            projected = self.aux["mmilb"][key].project(h[y])
            current = {"pos": projected[sign > 0], "neg": projected[sign < 0]}
            memory = self.memory.setdefault(key, {"pos": [], "neg": []})
            if use_memory and memory["pos"]:
                pooled = {c: torch.cat([*memory[c], current[c]]) for c in current}
                if all(len(v) > projected.shape[1] for v in pooled.values()):  # else a singular covariance
                    entropies = [gaussian_entropy(v) for v in pooled.values()]
                    # rank-deficient all the same (e.g. every feature of a modality missing: identical samples)
                    if all(bool(torch.isfinite(e)) for e in entropies):
                        total = total + 0.25 * sum(entropies)
            for c, v in current.items():
                if len(memory[c]) < self.config.memory_size:
                    memory[c].append(v.detach())
                else:  # the oldest slot, as the official ring of `mem_size` batches
                    memory[c][self.batches_seen % self.config.memory_size] = v.detach()
        return total

    def loss(self, batch: Batch) -> Losses:
        """Stage 2 (the main objective): L_task + α Σ nce_m - β (Σ lld + H)."""
        c = self.config
        h = self.encode(batch)
        z, prediction = self.fuse(h)
        task = task_loss(prediction, batch.label, self.spec)
        lld = self.log_likelihood(h)
        nce = {m: self.aux["cpc"][m](h[m], z) for m in self.modalities}
        step = self.batches_seen
        H = self.entropy(h, batch.label, use_memory=step >= c.memory_size)
        total = task + c.alpha * sum(nce.values()) - c.beta * sum(lld.values())
        if step > c.memory_size:  # the official trainer subtracts H from the batch after the first with memory on
            total = total - c.beta * H
        self.batches_seen += 1
        terms = {"task": task, "nce": sum(nce.values()), "lld": sum(lld.values()), "entropy": H}
        terms |= {f"nce_{m}": v for m, v in nce.items()} | {f"lld_{k}": v for k, v in lld.items()}
        return Losses(total=total, terms={k: torch.as_tensor(v).detach() for k, v in terms.items()},
                      prediction=prediction.detach())

    def reset_memory(self) -> None:
        self.memory, self.batches_seen = {}, 0

    def stages(self) -> list[Stage]:
        mmilb = "aux.mmilb."
        return [
            Stage("mmilb", self.mmilb_loss, lambda name: name.startswith(mmilb), fraction=self.config.mmilb_fraction),
            Stage("main", self.loss, lambda name: not name.startswith(mmilb), start=self.reset_memory),
        ]

    def param_groups(self, train: TrainConfig) -> list[dict[str, Any]]:
        """As the official optimisers: BERT (`text_lr`, `text_weight_decay`, biases included), the MMILB estimators
        (`mmilb_lr`, `mmilb_weight_decay`) and everything else (the training config's lr and weight decay)."""
        c = self.config
        bert = [p for p in self.text_encoder.parameters() if p.requires_grad] if self.text_encoder else []
        mmilb = [p for p in self.aux["mmilb"].parameters() if p.requires_grad]
        chosen = {id(p) for p in bert + mmilb}
        other = [p for p in self.parameters() if p.requires_grad and id(p) not in chosen]
        groups = [
            {"params": bert, "lr": c.text_lr, "weight_decay": c.text_weight_decay},
            {"params": other, "lr": train.lr, "weight_decay": train.weight_decay},
            {"params": mmilb, "lr": c.mmilb_lr, "weight_decay": c.mmilb_weight_decay},
        ]
        return [g for g in groups if g["params"]]


# `affectfuse tune`: encoder and fusion widths, the two MI weights and the learning rates.
SEARCH_SPACE = {
    "audio_out": ("choice", [8, 16, 32]),
    "vision_out": ("choice", [8, 16, 32]),
    "fusion_hidden": ("choice", [64, 128]),
    "alpha": ("log", 0.01, 1.0),
    "beta": ("log", 0.01, 1.0),
    "train.lr": ("log", 3e-4, 3e-3),
}
