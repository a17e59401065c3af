"""Self-MM: Learning Modality-Specific Representations with Self-Supervised Multi-Task Learning for Multimodal
Sentiment Analysis (Yu, Xu, Yuan, Wu, AAAI 2021).

A late-fusion network trained on four tasks: the multimodal one with the human label y_m, and one per modality with
a unimodal label y_s generated during training from how far the sample's features lie from the positive and negative
feature centres (the Unimodal Label Generation Module, ULGM):

1. Encoders. Text: the [CLS] output of the fine-tuned BERT (or the masked mean of precomputed word features);
   audio / vision: a 1-layer LSTM over the real steps, its final hidden state, dropout, one Linear (`*_out`).
2. Heads. Fusion: F*_m = ReLU(W1 Dropout([F_t; F_a; F_v])), then ReLU(W2 ·), W3 -> ŷ_m (the prediction).
   Unimodal (training only): the same three-layer head on each F_s -> feature F*_s and ŷ_s.
3. ULGM, per training sample (kept across epochs, keyed by `batch.ids`). With the positive / negative centres C_s^p,
   C_s^n (means of the latest features F*_s of the samples whose label for that task is > 0 / < 0):
       α_s = (D_s^n - D_s^p) / D_s^p,   D = ‖F*_s - C‖₂ (eqs. 4-6; the multimodal α_m alike on F*_m),
       ŷ_s = y_m α_s / (2 α_m) + (y_m + α_s - α_m) / 2,  clamped to [-H, H]            (eqs. 9-10, official),
       y_s^(n) = (n - 1)/(n + 1) y_s^(n-1) + 2/(n + 1) ŷ_s   in the n-th epoch, n > 1  (momentum update, eq. 11),
   starting from y_s = y_m. The centres and the features are those after the previous training step.
4. Objective: L = |ŷ_m - y_m| + Σ_s w_s |ŷ_s - y_s| with w_s = tanh(|y_s - y_m|) (eq. 12), means over the batch.
   In the first epoch y_s = y_m, so the unimodal heads get no gradient (as in the official code).

Symbols: s ∈ {t, a, v}; m the multimodal task; F*_x the feature a head's first layer gives (the official
`Feature_*`). Reported numbers: shared/spec/anchors.md and methods.md (results tables). Official code:
thuiar/Self-MM (MIT), ported in thuiar/MMSA (`multiTask/SELF_MM.py`, trainer `trains/multiTask/SELF_MM.py`: the
same model and label-generation code, other MOSI/MOSEI settings); re-implemented, nothing copied.

The label state lives in the model (`aux["labels"]`, a `LabelGenerator`): `loss` looks each sample up by id, computes
the losses with its current labels and then, in training mode only, updates its labels (from its second visit on),
its stored features and visit count. The epoch n of eq. 11 is the sample's visit count: the trainer shows every
training sample once per epoch. The state is saved with the model's state dict (extra state), so a checkpoint holds
it; a converted official checkpoint starts with an empty state (the official one never saves its labels).

Deviations from the official code:
- The label state is keyed by sample id and filled on each sample's first visit, not initialised for the whole split
  before training. The centres are computed over the samples seen so far, when a label update needs them (from the
  second epoch on every training sample has been seen, so they are the official ones); the official centres of the
  first epoch also average zero features of samples not seen yet, but no label update reads them.
- A centre with no sample (every label of that task on one side of 0) is 0 instead of the official NaN, which would
  make every later loss NaN.
- Audio and vision are packed by their own real steps (the official aligned mode packs them with the text length);
  padding anywhere is moved to the end first (`layers.front_align`). A missing modality runs on one zero step.
- Precomputed text features (no BERT): F_t is the masked mean of the real steps (text width = feature width).
- Data-parallel training: each process keeps the labels of the samples of its own shares (every sample is still
  seen once per epoch), and its centres average those samples only.
- Several targets (K > 1, e.g. POM traits): labels, centres and updates are per target. The generation assumes
  labels signed around 0 (MOSI/MOSEI [-3, 3], SIMS [-1, 1]): on scores such as POM's traits (0.67-7, all > 0) there
  is no negative centre and generated labels are clamped to [-H, H], so they mean little there.
- Classification corpora (Self-MM is defined for regression): cross-entropy on the fusion head and on every
  unimodal head against the human labels, no label generation.
- Model selection: the generic trainer's validation metric of `forward`, MAE on MOSI-style corpora; the MMSA runs
  select on `KeyEval` "Loss", the validation L1 of the fusion head, i.e. the same MAE.

Parity (tests/parity/test_self_mm.py, docs/parity/self_mm.md): with the official weights converted by
`affectfuse.convert.self_mm`, the MMSA port's outputs, its four losses, every gradient, its generated labels and its
centres are matched to 1e-5 over three epochs of SGD steps on a tiny BERT, the label update of epochs 2 and 3
included.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..config import InputSpec, Modalities, Recipe, TrainConfig, uses_bert_tokens
from ..config.registry import register_model
from ..data.batch import Batch
from .base import FusionModel, Losses, Output, task_loss, with_rest
from .layers import Dropout, TextSubNet, masked_mean
from .text_encoder import TextEncoder, bert_param_groups

EPS = 1e-8
"""The official `MIN` added to the distances' denominators."""


@dataclass(frozen=True, kw_only=True)
class SelfMMConfig:
    """Hyper-parameters of Self-MM. Defaults are the original thuiar/Self-MM CMU-MOSI setting (config_regression.py;
    the MMSA port's MOSI setting differs: `RECIPES` notes how)."""

    audio_hidden: int = 32
    """Hidden size of the audio LSTM (`a_lstm_hidden_size`)."""
    vision_hidden: int = 64
    """Hidden size of the vision LSTM (`v_lstm_hidden_size`)."""
    audio_out: int = 16
    """Width of F_a (`audio_out`)."""
    vision_out: int = 32
    """Width of F_v (`video_out`)."""
    audio_dropout: float = 0.0
    """Dropout on the audio LSTM's final state (`a_lstm_dropout`)."""
    vision_dropout: float = 0.0
    """Dropout on the vision LSTM's final state (`v_lstm_dropout`)."""
    post_fusion_dim: int = 128
    """Width of F*_m, the fusion head's hidden layers."""
    post_fusion_dropout: float = 0.1
    """Dropout on the fusion head's input."""
    post_dim: Modalities[int] = Modalities(text=64, audio=16, vision=32)
    """Width of F*_s, each unimodal head's hidden layers (`post_{text,audio,video}_dim`)."""
    post_dropout: Modalities[float] = Modalities(text=0.0, audio=0.1, vision=0.1)
    """Dropout on each unimodal head's input."""
    label_bound: float = 3.0
    """H: generated labels are clamped to [-H, H] (the label range)."""
    exclude_zero: bool = True
    """Samples labelled exactly 0 belong to no centre (`excludeZero`); False counts them as positive."""
    encoder_lr: Modalities[float] = Modalities(text=5e-5, audio=1e-3, vision=1e-4)
    """Learning rate of each unimodal encoder (the text one only if it has parameters, i.e. BERT); the rest of the
    model uses the training config's `lr` (`learning_rate_other`)."""
    encoder_weight_decay: Modalities[float] = Modalities(text=1e-3, audio=1e-2, vision=1e-3)
    """L2 weight decay of each unimodal encoder (none on BERT's biases and LayerNorms); the rest of the model uses
    the training config's `weight_decay`."""
    bert_path: str = ""
    """Local folder of the BERT model, used only when the corpus's text is BERT token ids; nothing is downloaded."""


def _train(*, weight_decay: float) -> TrainConfig:
    """Adam, lr 1e-3 outside the encoders, batches of 32 with gradients summed over 4 (`update_epochs`), early stop
    after 8 epochs; the official code has no epoch cap."""
    return TrainConfig(lr=1e-3, weight_decay=weight_decay, batch_size=32, accumulate=4, patience=8, max_epochs=200)


RECIPES = {
    "mosi": Recipe(
        model=SelfMMConfig(),
        train=_train(weight_decay=1e-3),
        source="original thuiar/Self-MM config_regression.py, mosi (MMSA's config_regression.json differs: batch 16, "
        "LSTMs 16/32, text head 32, dropouts 0/0.1/0.1/0, audio and vision lr 5e-3, audio decay 1e-3)",
    ),
    "mosei": Recipe(
        model=SelfMMConfig(
            vision_hidden=32, post_fusion_dropout=0.0, post_dim=Modalities(text=32, audio=16, vision=16),
            post_dropout=Modalities(text=0.1, audio=0.0, vision=0.1),
            encoder_lr=Modalities(text=5e-5, audio=5e-3, vision=1e-4),
            encoder_weight_decay=Modalities(text=1e-3, audio=0.0, vision=0.0),
        ),
        train=_train(weight_decay=1e-2),
        source="original thuiar/Self-MM config_regression.py, mosei (MMSA's: LSTMs 16/32, video head 32, dropouts "
        "0.1/0/0/0)",
    ),
    "sims": Recipe(
        model=SelfMMConfig(
            audio_hidden=16, post_fusion_dropout=0.0, post_dropout=Modalities(text=0.1, audio=0.1, vision=0.0),
            label_bound=1.0, encoder_lr=Modalities(text=5e-5, audio=5e-3, vision=5e-3),
            encoder_weight_decay=Modalities(text=1e-3, audio=1e-2, vision=1e-2),
        ),
        train=_train(weight_decay=1e-3),
        source="original thuiar/Self-MM config_regression.py, sims, the same in MMSA (bert-base-chinese; labels in "
        "[-1, 1], H = 1)",
    ),
    "synthetic": Recipe(
        model=SelfMMConfig(
            post_fusion_dim=32, post_dim=Modalities(text=16, audio=16, vision=16),
            encoder_lr=Modalities(text=2e-3, audio=2e-3, vision=2e-3),
            encoder_weight_decay=Modalities(text=0.0, audio=0.0, vision=0.0),
        ),
        train=TrainConfig(lr=2e-3, batch_size=64, patience=6, max_epochs=40),
        source="affectfuse: sized for the built-in synthetic corpus (MOSI-style labels in [-3, 3], H = 3)",
    ),
}


# ---------------------------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------------------------


class Head(nn.Module):
    """Dropout -> Linear -> ReLU (the feature F*) -> Linear -> ReLU -> Linear (the prediction)."""

    def __init__(self, in_dim: int, dim: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.drop = Dropout(dropout)
        self.layer1 = nn.Linear(in_dim, dim)
        self.layer2 = nn.Linear(dim, dim)
        self.layer3 = nn.Linear(dim, out_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feature = torch.relu(self.layer1(self.drop(x)))
        return feature, self.layer3(torch.relu(self.layer2(feature)))


class LabelGenerator(nn.Module):
    """The ULGM's per-sample state and update: for each training sample (by id) its label for every task
    (slot 0 the multimodal one, the human label; then one per modality), its latest head features and its visits.

    Storage grows by doubling. No parameters; the state is the module's extra state in the state dict (one uint8
    tensor holding an `.npz`), so checkpoints carry it.
    """

    def __init__(self, tasks: tuple[str, ...], dims: dict[str, int], *, bound: float, exclude_zero: bool) -> None:
        super().__init__()
        self.tasks, self.dims, self.bound, self.exclude_zero = tasks, dims, bound, exclude_zero
        self.reset()

    def reset(self) -> None:
        self.rows: dict[str, int] = {}
        self.labels = torch.zeros(0, len(self.tasks), 0)  # (N, tasks, K)
        self.visits = torch.zeros(0, dtype=torch.long)  # (N,)
        self.features = {t: torch.zeros(0, d) for t, d in self.dims.items()}  # task -> (N, d_task)

    def __len__(self) -> int:
        return len(self.rows)

    def _grow(self, n: int, k: int, device: torch.device) -> None:
        capacity = self.labels.shape[0]
        if self.labels.device != device:
            self.labels, self.visits = self.labels.to(device), self.visits.to(device)
            self.features = {t: f.to(device) for t, f in self.features.items()}
        if n <= capacity and self.labels.shape[2] == k:
            return
        if self.labels.shape[2] not in (0, k) and len(self):
            raise ValueError(f"Self-MM labels have {self.labels.shape[2]} targets, this batch {k}")
        new, used = max(n, 2 * capacity, 64), len(self)
        labels = torch.zeros(new, len(self.tasks), k, device=device)
        visits = torch.zeros(new, dtype=torch.long, device=device)
        features = {t: torch.zeros(new, d, device=device) for t, d in self.dims.items()}
        if used:
            labels[:used], visits[:used] = self.labels[:used], self.visits[:used]
            for t, f in self.features.items():
                features[t][:used] = f[:used]
        self.labels, self.visits, self.features = labels, visits, features

    def lookup(self, ids: list[str], label: Tensor) -> tuple[Tensor, Tensor]:
        """Rows of `ids` (new ids get every task's label = `label` (B, K)) and their labels (B, tasks, K), a copy."""
        unseen = [i for i in dict.fromkeys(ids) if i not in self.rows]
        self._grow(len(self) + len(unseen), label.shape[1], label.device)
        for i in unseen:
            self.rows[i] = len(self.rows)
        rows = torch.tensor([self.rows[i] for i in ids], device=label.device)
        if unseen:
            new = set(unseen)
            at = torch.tensor([p for p, i in enumerate(ids) if i in new], device=label.device)
            self.labels[rows[at]] = label.float()[at].unsqueeze(1)  # every task starts from the human label
        return rows, self.labels[rows].clone()

    def centres(self) -> dict[str, tuple[Tensor, Tensor]]:
        """task -> (positive, negative) centres (K, d) of the stored features, by the sign of that task's labels
        (0 where a side is empty)."""
        out = {}
        n = len(self)
        for j, t in enumerate(self.tasks):
            labels, features = self.labels[:n, j], self.features[t][:n]  # (N, K), (N, d)
            sides = []
            for side in ((labels > 0) if self.exclude_zero else (labels >= 0), labels < 0):
                weights = side.to(features.dtype)  # (N, K)
                sides.append((weights.t() @ features) / weights.sum(0).clamp_min(1.0)[:, None])  # (K, d)
            out[t] = (sides[0], sides[1])
        return out

    @torch.no_grad()
    def update(self, rows: Tensor, features: dict[str, Tensor]) -> None:
        """One training step's update: labels of the rows seen before (eqs. 4-11), then their features, visits."""
        self.visits[rows] += 1
        n = self.visits[rows].to(self.labels.dtype)[:, None]  # (B, 1): this sample's epoch
        again = n[:, 0] > 1
        if bool(again.any()):
            centres = self.centres()

            def relative_distance(task: str) -> Tensor:  # (D^n - D^p) / D^p, (B, K)
                positive, negative = centres[task]
                f = features[task][:, None, :]  # (B, 1, d)
                d_p = torch.linalg.vector_norm(f - positive, dim=-1)  # (B, K)
                d_n = torch.linalg.vector_norm(f - negative, dim=-1)
                return (d_n - d_p) / (d_p + EPS)

            alpha_m = relative_distance(self.tasks[0])
            y_m = self.labels[rows, 0]  # (B, K)
            for j, t in enumerate(self.tasks[1:], start=1):
                alpha_s = relative_distance(t)
                generated = 0.5 * (alpha_s / (alpha_m + EPS)) * y_m + 0.5 * (y_m + alpha_s - alpha_m)
                generated = generated.clamp(-self.bound, self.bound)
                updated = (n - 1) / (n + 1) * self.labels[rows, j] + 2 / (n + 1) * generated
                self.labels[rows, j] = torch.where(again[:, None], updated, self.labels[rows, j])
        for t, f in features.items():
            self.features[t][rows] = f.detach().to(self.features[t].dtype)

    def get_extra_state(self) -> Tensor:
        if not len(self):
            return torch.zeros(0, dtype=torch.uint8)
        n, buffer = len(self), io.BytesIO()
        arrays = {f"features_{t}": f[:n].cpu().numpy() for t, f in self.features.items()}
        np.savez(buffer, ids=np.array(list(self.rows)), labels=self.labels[:n].cpu().numpy(),
                 visits=self.visits[:n].cpu().numpy(), **arrays)
        return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)

    def set_extra_state(self, state: Any) -> None:
        self.reset()
        if not isinstance(state, Tensor) or state.numel() == 0:
            return
        with np.load(io.BytesIO(state.cpu().numpy().tobytes()), allow_pickle=False) as z:
            self.rows = {str(i): r for r, i in enumerate(z["ids"])}
            self.labels, self.visits = torch.from_numpy(z["labels"]), torch.from_numpy(z["visits"])
            self.features = {t: torch.from_numpy(z[f"features_{t}"]) for t in self.dims}


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------


@register_model("self_mm", config=SelfMMConfig, recipes=RECIPES)
class SelfMM(FusionModel):
    def __init__(self, config: SelfMMConfig, spec: InputSpec) -> None:
        super().__init__(config, spec)
        self.modalities = spec.modalities
        self.tokens = "text" in spec.dims and uses_bert_tokens(spec)
        self.text_encoder = TextEncoder(spec, bert_path=config.bert_path) if "text" in spec.dims else None
        self.encoders = nn.ModuleDict()
        hidden = {"audio": (config.audio_hidden, config.audio_out, config.audio_dropout),
                  "vision": (config.vision_hidden, config.vision_out, config.vision_dropout)}
        for m in self.modalities:
            if m != "text":
                self.encoders[m] = TextSubNet(spec.dims[m], *hidden[m][:2], dropout=hidden[m][2])
        widths = {m: self.text_encoder.out_dim if m == "text" else hidden[m][1] for m in self.modalities}
        out = spec.output_size
        self.head = Head(sum(widths.values()), config.post_fusion_dim, out, config.post_fusion_dropout)
        self.aux = nn.ModuleDict({
            "heads": nn.ModuleDict(
                {m: Head(w, config.post_dim[m], out, config.post_dropout[m]) for m, w in widths.items()}
            ),
            "labels": LabelGenerator(
                ("fusion", *self.modalities), {"fusion": config.post_fusion_dim} | {
                    m: config.post_dim[m] for m in self.modalities},
                bound=config.label_bound, exclude_zero=config.exclude_zero,
            ),
        })

    def encode(self, batch: Batch) -> dict[str, Tensor]:
        """F_s of each modality (B, d_s)."""
        h = {}
        for m in self.modalities:
            x, mask = batch.features[m], batch.masks[m]
            if m == "text":
                x = self.text_encoder(x, mask)  # (B, T, d_t)
                h[m] = x[:, 0] if self.tokens else masked_mean(x, mask)  # [CLS], or the mean word feature
            else:
                h[m] = self.encoders[m](x, mask)
        return h

    def forward(self, batch: Batch) -> Output:
        h = self.encode(batch)
        return Output(self.shape_output(self.head(torch.cat([h[m] for m in self.modalities], -1))[1]))

    def loss(self, batch: Batch) -> Losses:
        """L1 on the multimodal task, tanh(|y_s - y_m|)-weighted L1 on each unimodal task against its generated
        label; then (training only) the ULGM update with this step's features."""
        h = self.encode(batch)
        feature, prediction = self.head(torch.cat([h[m] for m in self.modalities], -1))
        features, predictions = {"fusion": feature}, {"fusion": self.shape_output(prediction)}
        for m in self.modalities:
            features[m], p = self.aux["heads"][m](h[m])
            predictions[m] = self.shape_output(p)
        terms: dict[str, Tensor] = {}
        if self.spec.task == "classification":
            for t, p in predictions.items():
                terms[t] = task_loss(p, batch.label, self.spec)
        else:
            generator: LabelGenerator = self.aux["labels"]
            rows, labels = generator.lookup(batch.ids, batch.label)  # (B, 1 + M, K)
            y_m = labels[:, 0]
            for j, t in enumerate(generator.tasks):
                weight = 1.0 if j == 0 else torch.tanh((labels[:, j] - y_m).abs())
                terms[t] = (weight * (predictions[t] - labels[:, j]).abs()).mean()
            if self.training:
                generator.update(rows, {t: f.detach() for t, f in features.items()})
        total = sum(terms.values())
        return Losses(total=total, terms={k: v.detach() for k, v in terms.items()},
                      prediction=predictions["fusion"].detach())

    def generated_labels(self, ids: list[str]) -> Tensor:
        """The current labels (len(ids), 1 + M, K) of seen training samples: the human one, then one per modality."""
        generator: LabelGenerator = self.aux["labels"]
        return generator.labels[[generator.rows[i] for i in ids]].clone()

    def param_groups(self, train: TrainConfig) -> list[dict[str, Any]]:
        """As the official optimiser: BERT with decay and without (biases, LayerNorms), the audio encoder, the vision
        encoder, and everything else (the training config's lr and weight decay); empty groups left out."""
        c = self.config
        groups: list[dict[str, Any]] = []
        if self.text_encoder is not None:
            groups += bert_param_groups(self.text_encoder, lr=c.encoder_lr.text,
                                        weight_decay=c.encoder_weight_decay.text)
        groups += [{"params": [p for p in encoder.parameters() if p.requires_grad], "lr": c.encoder_lr[m],
                    "weight_decay": c.encoder_weight_decay[m]} for m, encoder in self.encoders.items()]
        return with_rest(self, groups, train)


# `affectfuse tune`: head widths, dropout, the label bound and the learning rate. Format: affectfuse/tune.py.
SEARCH_SPACE = {
    "post_fusion_dim": ("choice", [64, 128]),
    "post_fusion_dropout": ("float", 0.0, 0.3),
    "label_bound": ("float", 1.0, 3.0),
    "train.lr": ("log", 1e-4, 3e-3),
}
