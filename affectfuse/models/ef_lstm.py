"""EF-LSTM: early-fusion LSTM, the baseline of MulT's and DMD's tables (Williams et al. 2018, "Recognizing emotions in
video using multimodal DNN feature fusion"; as benchmarked by MMSA).

The modalities are fused at the input: at every step t the features of all modalities are concatenated,
x_t = [x_t^l; x_t^a; x_t^v], each step position is normalised (BatchNorm over the batch and the features of that
position, as MMSA), a stacked LSTM runs over the steps, and its last layer's final hidden state h_T goes through
Dropout -> Linear -> ReLU -> Dropout -> Linear to the prediction.

Early fusion needs the modalities on one time axis. On aligned corpora they already are. On unaligned ones (MOSI
50 words, 375 audio and 500 video frames) every modality is averaged over windows onto the text's steps, as MMSA's
`need_model_aligned` (`AlignSubNet`, "avg_pool") does before its EF_LSTM.

Symbols: l/a/v = text/audio/vision; T_l the reference (text) length; B the batch; h = `hidden`.
Spec: the baseline rows of shared/spec/methods.md §6.6 (DMD's tables, from MulT's). Official code: MMSA
`models/singleTask/EF_LSTM.py` (MIT, the re-implementation the papers' baseline numbers come from); re-implemented,
nothing copied.

Parity: with MMSA's weights converted (affectfuse/convert/ef_lstm.py) the output, the loss and every gradient equal
MMSA's EF_LSTM within 1e-5 on unpadded batches, aligned and unaligned with lengths that are multiples of the text's
(tests/parity/test_ef_lstm.py, docs/parity/ef_lstm.md).

Deviations from MMSA:
- Padding (`mask_padding=True`; False treats every step as real, as MMSA). Sequences are moved to the front
  (`layers.front_align`), the LSTM is packed by each sample's real length and h_T is read at its last real step;
  MMSA runs the LSTM over the padding to the padded end. Padded positions are normalised as MMSA does (their
  running statistics per position) but never reach the LSTM.
- Alignment of unaligned corpora: each sample's *real* steps of modality m are split into L windows, L its number
  of real text steps, window k covering steps floor(k n_m / L) .. ceil((k+1) n_m / L) - 1 (n_m real steps), and
  averaged. MMSA's avg_pool splits the *padded* length into chunks of ceil(T_m / T_l) steps (the last chunk padded
  by repeating the last step), whatever each sample's length. Both are the identity on aligned corpora and equal
  on unpadded batches whose T_m is a multiple of T_l (the parity fixture's unaligned case); otherwise MMSA's
  windows depend on the padding. A sample without text uses min(max_m n_m, T_l) steps; a modality without real
  steps contributes zeros. Corpora without text (POM) align onto their first modality.
- MMSA applies the LSTM dropout between layers also with one layer (a PyTorch warning, no effect); here it is 0 for
  one layer. MMSA squeezes h_T, which fails for a batch of one; here it does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import InputSpec, Recipe, TrainConfig
from ..config.registry import register_model
from ..data.batch import Batch
from .base import FusionModel, Output
from .layers import Dropout, front_align, run_lstm


@dataclass(frozen=True, kw_only=True)
class EFLSTMConfig:
    """Hyper-parameters of EF-LSTM. Defaults are MMSA's CMU-MOSI setting (config_regression.json, ef_lstm)."""

    hidden: int = 128
    """Hidden size h of the LSTM and of the output MLP (`hidden_dims`)."""
    layers: int = 4
    """Stacked LSTM layers (`num_layers`)."""
    dropout: float = 0.5
    """Dropout between LSTM layers, on h_T and on the MLP's hidden layer (one value in MMSA)."""
    step_norm: bool = True
    """Normalise each step position (BatchNorm1d over T_l positions, as MMSA); False: no normalisation."""
    mask_padding: bool = True
    """Skip padded steps (front-aligned, packed LSTM, windows over real steps). False: every step is real (MMSA)."""


def _mmsa(hidden: int, layers: int, dropout: float, *, bs: int, lr: float, wd: float, dataset: str) -> Recipe:
    return Recipe(
        model=EFLSTMConfig(hidden=hidden, layers=layers, dropout=dropout),
        train=TrainConfig(lr=lr, weight_decay=wd, batch_size=bs, patience=8, max_epochs=100),
        source=f"MMSA config_regression.json, ef_lstm/{dataset} (Adam with L2 decay, early stop 8 on validation L1)",
    )


RECIPES = {
    "mosi": _mmsa(128, 4, 0.5, bs=32, lr=1e-3, wd=5e-3, dataset="mosi"),
    "mosei": _mmsa(256, 2, 0.4, bs=128, lr=5e-3, wd=1e-4, dataset="mosei"),
    "sims": _mmsa(32, 3, 0.5, bs=128, lr=5e-4, wd=1e-3, dataset="sims"),
    "synthetic": Recipe(
        model=EFLSTMConfig(hidden=32, layers=1, dropout=0.1),
        train=TrainConfig(lr=3e-3, batch_size=32, patience=6, max_epochs=25),
        source="affectfuse: sized for the built-in synthetic corpus",
    ),
}


def window_average(x: Tensor, lengths: Tensor, steps: Tensor, out_len: int) -> Tensor:
    """Average each sample's n real (front-aligned) steps over `steps` windows: (B, T, D) -> (B, out_len, D).

    Window k of a sample covers steps floor(k n / L) .. ceil((k+1) n / L) - 1 (L = its `steps`); rows k >= L and
    samples with n = 0 are zero. With n = L the windows are single steps (the identity)."""
    k = torch.arange(out_len, device=x.device)[None, :, None]  # (1, L_max, 1)
    s = torch.arange(x.shape[1], device=x.device)[None, None, :]  # (1, 1, T)
    n, L = lengths[:, None, None], steps.clamp_min(1)[:, None, None]
    start, end = (k * n) // L, ((k + 1) * n + L - 1) // L
    window = ((s >= start) & (s < end) & (k < steps[:, None, None])).to(x.dtype)  # (B, L_max, T)
    return window @ x / window.sum(-1, keepdim=True).clamp_min(1.0)


@register_model("ef_lstm", config=EFLSTMConfig, recipes=RECIPES)
class EFLSTM(FusionModel):
    def __init__(self, config: EFLSTMConfig, spec: InputSpec) -> None:
        super().__init__(config, spec)
        self.reference = "text" if "text" in spec.modalities else spec.modalities[0]
        self.steps = spec.lengths[self.reference]  # T_l: the fused sequence's padded length
        self.norm = nn.BatchNorm1d(self.steps) if config.step_norm else None
        width = sum(spec.dims[m] for m in spec.modalities)
        self.lstm = nn.LSTM(
            width, config.hidden, num_layers=config.layers, batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.dropout = Dropout(config.dropout)
        self.linear = nn.Linear(config.hidden, config.hidden)
        self.out = nn.Linear(config.hidden, spec.output_size)

    def fused_steps(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """x_t = [x_t^l; x_t^a; x_t^v] on the reference modality's steps, (B, T_l, Σ D_m), and the (B,) lengths."""
        aligned, lengths = {}, {}
        for m in self.spec.modalities:
            mask = batch.masks[m] if self.config.mask_padding else torch.ones_like(batch.masks[m])
            x, lengths[m] = front_align(batch.features[m] * mask[..., None].to(batch.features[m].dtype), mask)
            aligned[m] = x
        longest = torch.stack(list(lengths.values())).amax(0).clamp_max(self.steps)
        steps = torch.where(lengths[self.reference] > 0, lengths[self.reference], longest)  # (B,)
        x = torch.cat([window_average(aligned[m], lengths[m], steps, self.steps) for m in self.spec.modalities], -1)
        return x, steps

    def forward(self, batch: Batch) -> Output:
        x, steps = self.fused_steps(batch)  # (B, T_l, Σ D_m)
        if self.norm is not None:
            x = self.norm(x)  # statistics per step position, over the batch and the features
        real = torch.arange(x.shape[1], device=x.device)[None, :] < steps.clamp_min(1)[:, None]  # (B, T_l)
        h, _ = run_lstm(self.lstm, x, real)  # h_T of the last layer, (B, h)
        hidden = torch.relu(self.linear(self.dropout(h)))
        return Output(self.shape_output(self.out(self.dropout(hidden))))


# `affectfuse tune`: width, depth, dropout, learning rate and decay. Format: affectfuse/tune.py.
SEARCH_SPACE = {
    "hidden": ("choice", [32, 64, 128, 256]),
    "layers": ("int", 1, 4),
    "dropout": ("float", 0.0, 0.5),
    "train.lr": ("log", 1e-4, 5e-3),
    "train.weight_decay": ("choice", [0.0, 1e-4, 1e-3, 5e-3]),
}
