"""Paper-independent blocks shared by several methods."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over real steps only: (B, T, D), (B, T) -> (B, D).

    A sample with no real step (a missing modality) pools to zeros instead of dividing by zero. MMSA averages over
    the padded length, which shrinks the features of short clips; we never do.
    """
    weights = mask.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
    return (x * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def front_align(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Move each sample's real steps to the front, keeping their order; returns (x, lengths).

    Recurrent encoders pack sequences by length, which assumes end padding; the SDK pads at the front. After this
    both paddings give identical results.
    """
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices  # real steps first, in time order
    x = torch.gather(x, 1, order.unsqueeze(-1).expand_as(x))
    return x, mask.sum(1)


class SubNet(nn.Module):
    """The utterance-level audio/vision sub-network of TFN and LMF: BatchNorm -> Dropout -> 3 x (Linear -> ReLU)."""

    def __init__(self, in_size: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(in_size)
        self.drop = nn.Dropout(dropout)
        self.layers = nn.Sequential(
            nn.Linear(in_size, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )

    def forward(self, x: Tensor) -> Tensor:  # (B, D_in) -> (B, hidden)
        return self.layers(self.drop(self.norm(x)))


class TextSubNet(nn.Module):
    """The text sub-network of TFN and LMF: 1-layer LSTM -> final hidden state -> Dropout -> Linear.

    Padding-invariant: sequences are front-aligned and packed, so padded steps never enter the LSTM. A sample with
    no text step (missing modality) is run on a single zero step.
    """

    def __init__(self, in_size: int, hidden: int, out_size: int, dropout: float) -> None:
        super().__init__()
        self.rnn = nn.LSTM(in_size, hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden, out_size)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # (B, T, D_in), (B, T) -> (B, out)
        x, lengths = front_align(x, mask)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False)
        _, (h, _) = self.rnn(packed)  # h: (1, B, hidden)
        return self.linear(self.drop(h[0]))


def bounded_output(range_: tuple[float, float] | None) -> nn.Module:
    """TFN's sigmoid scaled to the label range (spec §1: x6 - 3 for MOSI); identity when the range is unknown."""
    return nn.Identity() if range_ is None else ScaledSigmoid(*range_)


class ScaledSigmoid(nn.Module):
    def __init__(self, low: float, high: float) -> None:
        super().__init__()
        # Constants are buffers, not frozen Parameters (MMSA's TFN), so optimisers and parameter counts ignore them.
        self.register_buffer("scale", torch.tensor(high - low))
        self.register_buffer("shift", torch.tensor(low))

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x) * self.scale + self.shift
