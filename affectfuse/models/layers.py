"""Paper-independent blocks shared by several methods."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

from ..config import MODALITIES


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over real steps only: (B, T, D), (B, T) -> (B, D).

    A sample with no real step (a missing modality) pools to zeros instead of dividing by zero. MMSA averages over
    the padded length, which shrinks the features of short clips; we never do.
    """
    if bool(mask.all()):  # every step real (utterance-level or aligned full-length data): a plain mean
        return x.mean(1)
    weights = mask.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
    return (x * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def front_align(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Move each sample's real steps to the front, keeping their order; returns (x, lengths).

    Recurrent encoders pack sequences by length, which assumes end padding; the SDK pads at the front. After this
    both paddings give identical results.
    """
    if not bool((mask[:, 1:] & ~mask[:, :-1]).any()):  # no real step after a padded one: already in front
        return x, mask.sum(1)
    b, t = mask.shape
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices  # real steps first, in time order
    rows = (order + torch.arange(b, device=x.device)[:, None] * t).flatten()  # whole feature rows: a copy, no gather
    return x.reshape(b * t, -1).index_select(0, rows).view(x.shape), mask.sum(1)


KEEP_RESOLUTION = 1 << 15
"""Dropout draws compare 15 random bits with round(p * 2^15): p is honoured within 2^-16 (0.1 -> 0.100006)."""


def keep_mask(shape: tuple[int, ...], p: float, device: torch.device | str = "cpu") -> Tensor:
    """A bool mask, True with probability 1 - p (to within 2^-16): dropout's kept elements.

    CPU random numbers come from one serial Mersenne Twister, the largest cost of dropout there: `bernoulli_` spends
    one draw (and a conversion) per element, `uniform_` one draw. Here each 64-bit integer draw gives four 15-bit
    uniforms (bit 63 of the draw is unused: `random_` on int64 spans [0, 2^63)), so the mask costs a quarter of the
    draws: 2x faster than `uniform_() >= p`, 4x faster than `bernoulli_`.
    """
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_()
    bits = words.view(torch.int16)[:n].view(shape).bitwise_and_(KEEP_RESOLUTION - 1)  # uniform on [0, 2^15)
    return bits >= round(p * KEEP_RESOLUTION)


FAST_DROPOUT_MIN = 1 << 14
"""Below this many elements `F.dropout`'s single C++ call beats the fast path's Python overhead (measured crossover
~10k elements on CPU: 0.57x at 1.5k, 1.37x at 24k, 1.74x at 400k)."""


class Dropout(nn.Dropout):
    """`nn.Dropout` with a CPU training path 2x faster (forward + backward) and the same 1-byte saved mask.

    CPU `F.dropout` draws its noise with `bernoulli_`, one Mersenne Twister draw per element, and scales in separate
    passes; here the mask comes from `keep_mask` (a quarter of the draws) and scaling happens in place.
    Elsewhere (CUDA, float64, compile, p = 1) it is `F.dropout` itself; a subclass, so code that finds or zeroes
    every `nn.Dropout` still does.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        fast = x.device.type == "cpu" and x.dtype == torch.float32 and x.numel() >= FAST_DROPOUT_MIN
        if fast and self.p < 1.0 and not torch.compiler.is_compiling():
            return _FastDropout.apply(x, self.p)
        return F.dropout(x, self.p, True, self.inplace)


class _FastDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, p: float) -> Tensor:  # noqa: ANN001
        keep = keep_mask(tuple(x.shape), p)
        ctx.save_for_backward(keep)  # 1 byte per element, as F.dropout's
        ctx.scale = 1.0 / (1.0 - p)
        return keep.to(x.dtype).mul_(x).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ANN001
        (keep,) = ctx.saved_tensors
        return keep.to(grad.dtype).mul_(grad).mul_(ctx.scale), None


def read_last_real_step(encoder: nn.Module, x: Tensor, mask: Tensor) -> Tensor:
    """A self-attention `TransformerEncoder`'s output at each front-aligned sequence's last real step, computing only
    that step in its last layer (MulT's and DMD's readouts): (B, T, D), (B, T) -> (B, D); zeros for a sample with no
    real step."""
    lengths = mask.sum(1)
    h = encoder(x, mask, read_at=(lengths - 1).clamp_min(0))
    return h * (lengths > 0)[:, None].to(h.dtype)


LSTM_CALL_COST = 175
"""The fixed cost of one LSTM call (forward and backward), in sample-steps: measured on 2 CPU threads with oneDNN
(B x T from 2 x 10 to 32 x 50, input 300, hidden 128: 0.73 ms a call, 0.0067 ms a step, 0.0042 ms a sample-step)."""
LSTM_STEP_COST = 2
"""The latency of one recurrent step whatever the batch, in sample-steps (same measurement)."""


def _cut_candidates(lengths: list[int]) -> list[int]:
    """0 and the batch's distinct lengths, ascending (at most 12 of them: its length quantiles, the longest kept)."""
    values = sorted(set(lengths))
    if len(values) > 12:
        values = sorted({values[round(q * (len(values) - 1) / 11)] for q in range(12)})
    return [0, *values]


def _cheapest_cuts(points: list[int], cost) -> list[int]:  # noqa: ANN001  (cost: (i, j) -> float)
    """The stops, ascending, of the cheapest split of (0, points[-1]] into spans (points[i], points[j]]."""
    best, cut_from = [0.0], [0]
    for j in range(1, len(points)):
        costs = [best[i] + cost(i, j) for i in range(j)]
        i = min(range(j), key=costs.__getitem__)
        best.append(costs[i])
        cut_from.append(i)
    stops, j = [], len(points) - 1
    while j > 0:
        stops.append(points[j])
        j = cut_from[j]
    return stops[::-1]


def lstm_segments(lengths: list[int]) -> list[int]:
    """Where to cut the time axis for `run_lstm`: the stop step of each segment, ascending, the last being the
    longest length. Chosen to minimise the measured cost (`LSTM_CALL_COST` per call, `LSTM_STEP_COST` per step, one
    per sample-step of the samples still running) over cut points at the batch's lengths."""
    points = _cut_candidates(lengths)
    running = [sum(1 for n in lengths if n > p) for p in points]  # samples still running after each point
    return _cheapest_cuts(points, lambda i, j: LSTM_CALL_COST + (running[i] + LSTM_STEP_COST) * (points[j] - points[i]))


def length_groups(lengths: list[int], call_cost: float) -> list[int]:
    """Groups of samples of similar lengths for a model whose samples are independent (BERT): the upper length of
    each group, ascending; a group holds the samples with lengths in (previous upper, upper] and runs trimmed to its
    upper length. Chosen to minimise `call_cost` per group plus one per token run."""
    points = _cut_candidates(lengths)
    upto = [sum(1 for n in lengths if n <= p) for p in points]
    return _cheapest_cuts(points, lambda i, j: call_cost + (upto[j] - upto[i]) * points[j])


def pack_real_steps(x: Tensor, mask: Tensor) -> nn.utils.rnn.PackedSequence:
    """Each sample's real steps of (B, T, D), moved to the front, as a `PackedSequence` (a sample with no real step
    keeps one step: its first)."""
    x, lengths = front_align(x, mask)
    return nn.utils.rnn.pack_padded_sequence(x, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False)


def run_lstm(rnn: nn.LSTM, x: Tensor, mask: Tensor, *, steps: bool = False) -> tuple[Tensor, Tensor | None]:
    """A unidirectional LSTM over each sample's real steps only, as if packed by length: (B, T, D), (B, T) mask (real
    steps anywhere, e.g. the SDK's front padding) -> the last layer's hidden state at each sample's last real step,
    (B, H), and with `steps` its outputs at the real steps moved to the front, zeros after them, (B, T, H). A
    sample with no real step runs on one zero step.

    The same numbers as packing, on PyTorch's fast unpacked LSTM kernel (oneDNN on CPU; packed sequences take a
    step-by-step path 1.6x slower than even the full padded length): the samples are sorted longest first, their real
    steps gathered to the front in one copy, and the time axis cut into a few segments (`lstm_segments`); each
    segment runs the samples still going, from the state the previous segment left them in, and a sample's result is
    read at its own last step. On CMU-MOSI's word counts (median 10 words, padded to 50) a batch of 32 runs about
    40% of the padded sample-steps.
    """
    b, t = mask.shape
    lengths = mask.sum(1)
    if torch.jit.is_tracing():  # a trace records one path, and only packing's holds for every batch
        out, (h, _) = rnn(pack_real_steps(x * mask.unsqueeze(-1).to(x.dtype), mask))
        out = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=t)[0] if steps else None
        return h[-1], out
    if bool(mask.all()):  # full-length batch: one call, nothing to skip
        out, (h, _) = rnn(x)
        return h[-1], (out if steps else None)
    sorted_lengths, order = torch.sort(lengths.clamp_min(1), descending=True, stable=True)
    longest = int(sorted_lengths[0])
    real_first = torch.sort((~mask[order]).to(torch.int8), dim=1, stable=True).indices[:, :longest]
    rows = (order[:, None] * t + real_first).flatten()
    x = x.reshape(b * t, -1).index_select(0, rows).view(b, longest, -1)  # sorted, front-aligned, trimmed
    if bool((lengths == 0).any()):  # no real step: its one step is zeros
        x = x * (lengths[order] > 0).to(x.dtype)[:, None, None]
    as_list = sorted_lengths.tolist()
    finals, pieces, state, start = [], [], None, 0
    for stop in lstm_segments(as_list):
        running = sum(1 for n in as_list if n > start)  # a prefix: the batch is sorted longest first
        going_on = sum(1 for n in as_list if n > stop)
        out, (h, c) = rnn(x[:running, start:stop], state)  # (running, stop - start, H)
        ending = torch.arange(going_on, running, device=x.device)
        finals.append(out[ending, sorted_lengths[going_on:running] - start - 1])
        if steps:
            pieces.append(F.pad(out, (0, 0, 0, 0, 0, b - running)))
        state = (h[:, :going_on].contiguous(), c[:, :going_on].contiguous())
        start = stop
    unsort = torch.argsort(order)
    h = torch.cat(finals[::-1])[unsort]  # the longest samples end in the last segment: (B, H)
    if not steps:
        return h, None
    real = torch.arange(longest, device=x.device)[None, :] < sorted_lengths[:, None]  # (B, longest)
    out = (torch.cat(pieces, dim=1) * real.unsqueeze(-1).to(x.dtype))[unsort]
    return h, F.pad(out, (0, 0, 0, t - longest))


def plain_layer_norm(x: Tensor, eps: float = 1e-5) -> Tensor:
    """LayerNorm over the last axis without learnable scale and shift. Computed with a unit affine: PyTorch's CPU
    kernel without one is 2.9x slower (1.3 ms vs 0.45 ms on 6 x 1600 x 30, one thread), same numbers."""
    d = x.shape[-1]
    return F.layer_norm(x, (d,), x.new_ones(d), x.new_zeros(d), eps)


class PlainLayerNorm(nn.Module):
    """`nn.LayerNorm(dim, elementwise_affine=False)` through `plain_layer_norm` (no parameters either)."""

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return plain_layer_norm(x, self.eps)


class SubNet(nn.Module):
    """The utterance-level audio/vision sub-network of TFN and LMF: BatchNorm -> Dropout -> 3 x (Linear -> ReLU)."""

    def __init__(self, in_size: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(in_size)
        self.drop = Dropout(dropout)
        self.layers = nn.Sequential(
            nn.Linear(in_size, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:  # (B, D_in) -> (B, hidden)
        return self.layers(self.drop(self.norm(x)))


class TextSubNet(nn.Module):
    """The text sub-network of TFN and LMF: 1-layer LSTM -> final hidden state -> Dropout -> Linear.

    Padding-invariant: the LSTM runs over each sample's real steps only (`run_lstm`), so padded steps never enter it.
    A sample with no text step (missing modality) is run on a single zero step.
    """

    def __init__(self, in_size: int, hidden: int, out_size: int, dropout: float) -> None:
        super().__init__()
        self.rnn = nn.LSTM(in_size, hidden, batch_first=True)
        self.drop = Dropout(dropout)
        self.linear = nn.Linear(hidden, out_size)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # (B, T, D_in), (B, T) -> (B, out)
        return self.linear(self.drop(run_lstm(self.rnn, x, mask)[0]))


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


# ---------------------------------------------------------------------------------------------------------------------
# Attention blocks shared by the transformer methods (MulT, SFT, DMD, EMT-DLFR)
# ---------------------------------------------------------------------------------------------------------------------


def sinusoidal_positions(length: int, dim: int, *, start: int = 0, device: torch.device | None = None) -> Tensor:
    """Fixed sinusoidal position table (T, D) for positions start .. start + T - 1: sines in the first half of the
    channels, cosines in the second (the fairseq layout MulT, DMD and EMT-DLFR use; fairseq numbers from 1)."""
    half = dim // 2
    scale = math.log(10000.0) / max(half - 1, 1)
    freqs = torch.exp(torch.arange(half, device=device, dtype=torch.float32) * -scale)  # (D/2,)
    steps = torch.arange(start, start + length, device=device, dtype=torch.float32)
    angles = steps[:, None] * freqs[None, :]  # (T, D/2)
    table = torch.cat([angles.sin(), angles.cos()], dim=1)
    return nn.functional.pad(table, (0, dim - 2 * half))  # odd D: one zero channel


CHUNK_ELEMENTS = 1 << 18
"""Attention scores per block of the blocked kernel (1 MiB of float32: one 500 x 500 head stays in cache)."""

BLOCKED_MIN_SCORES = 1 << 14
"""Below this many scores per call SDPA's math path (one C++ call) is as fast as the blocked kernel (measured: 0.97x
at batch 1 x 5 heads x 50 x 50 = 12.5k scores, 1.17x at twice that)."""

KEEP_SCORES = 1 << 21
"""Up to this many scores per call (8 MiB of float32: MulT at aligned lengths, batch 32), the blocked kernel keeps
the probabilities for its backward pass instead of recomputing them."""


def use_chunked_dropout_attention(q: Tensor) -> bool:
    """The blocked kernel serves training with attention dropout on CPU (float32, or bf16 autocast), not compile.

    On CPU, `scaled_dot_product_attention` with dropout falls back to its unfused math path, which writes the
    (B, h, Tq, Tk) scores, probabilities, dropout noise and mask to memory in separate passes (and checks every
    score for -inf); at MOSEI lengths that was most of MulT's training step (benchmarks/RESULTS.md). The blocked
    kernel makes one pass per block of whole samples (or of heads, when one sample's scores overflow the cache),
    so a batch is a handful of batched matmuls, and draws the dropout noise with `uniform_`, twice as fast on CPU
    as `bernoulli_`. CUDA's fused kernels support dropout natively. Under CPU autocast the kernel runs in float32
    on float32 copies of q, k, v.
    """
    float32 = q.dtype == torch.float32 or torch.is_autocast_enabled("cpu")
    return q.device.type == "cpu" and float32 and not torch.compiler.is_compiling()


def chunked_dropout_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout: float) -> Tensor:
    """softmax(q k^T / sqrt(d) + mask) with dropout, times v: (B, h, Tq, d), (B, h, Tk, d) -> (B, h, Tq, d_v).

    `mask` is a boolean mask broadcastable to (B, h, Tq, Tk), True where a query may attend; every query must see at
    least one key. Same result as `scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)` in
    distribution (another random stream).
    """
    bias = None
    if mask is not None:
        bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~mask, float("-inf"))
    return _ChunkedDropoutAttention.apply(q, k, v, bias, dropout)


def _blocks(q: Tensor, tk: int, bias: Tensor | None) -> Iterator[tuple[slice, tuple[int, ...], Tensor | None]]:
    """(rows of the flattened (B*h) axis, the bias for them shaped to add onto their (rows, Tq, Tk) scores).

    A block holds whole samples when a sample's scores fit in CHUNK_ELEMENTS, else a group of one sample's heads;
    the bias (B|1, h|1, Tq|1, Tk) is broadcast, never materialised per head."""
    batch, heads, tq, _ = q.shape
    per_sample = heads * tq * tk
    if per_sample <= CHUNK_ELEMENTS:
        samples = CHUNK_ELEMENTS // per_sample
        for b in range(0, batch, samples):
            n = min(samples, batch - b)
            part = None if bias is None else bias[b : b + n] if bias.shape[0] > 1 else bias
            yield slice(b * heads, (b + n) * heads), (n, heads, tq, tk), part
    else:
        group = max(1, CHUNK_ELEMENTS // (tq * tk))
        for b in range(batch):
            for h in range(0, heads, group):
                n = min(group, heads - h)
                part = None
                if bias is not None:
                    part = bias[b if bias.shape[0] > 1 else 0]
                    part = part[h : h + n] if part.shape[0] > 1 else part
                yield slice(b * heads + h, b * heads + h + n), (n, tq, tk), part


def _probabilities(q: Tensor, k: Tensor, rows: slice, shape: tuple[int, ...], bias: Tensor | None,
                   out: Tensor | None = None) -> Tensor:
    """softmax(q k^T + bias) for one block of rows of the flattened (B*h) axis, q already scaled."""
    p = torch.bmm(q[rows], k[rows].transpose(1, 2), out=out)
    if bias is not None:
        p.view(shape).add_(bias)
    return torch.softmax(p, -1, out=p)


class _ChunkedDropoutAttention(torch.autograd.Function):
    """Attention with dropout computed a block of scores at a time, so scores never leave the cache, flash-style:
    the backward pass recomputes the probabilities and keeps only the dropout mask (1 byte per score). Calls with
    at most KEEP_SCORES scores keep the probabilities and a float mask instead (no recomputation, no conversions):
    they fit in memory anyway, and short sequences are where the recomputation cost the most."""

    # Under CPU autocast (bf16 projections) the kernel runs in float32, forward and backward: SDPA's math path in
    # bf16 made MulT's training step 2.4x slower than in float32 (benchmarks/RESULTS.md).
    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, dropout: float) -> Tensor:  # noqa: ANN001
        batch, heads, tq, dim = q.shape
        tk = k.shape[2]
        q = (q * dim**-0.5).reshape(batch * heads, tq, dim)  # scaled once here, not per score
        k, v = k.reshape(batch * heads, tk, dim), v.reshape(batch * heads, tk, v.shape[-1])
        out = q.new_empty(batch * heads, tq, v.shape[-1])
        kept_all = batch * heads * tq * tk <= KEEP_SCORES
        probs = q.new_empty(batch * heads, tq, tk) if kept_all else None
        keep = None
        if dropout > 0:
            # Recomputing: the kept-mask as uint8, 1 byte per score (uint8 <-> float conversions are an order of
            # magnitude cheaper on CPU than bool ones or masked_fill).
            keep = q.new_empty(probs.shape) if kept_all else q.new_empty(out.shape[:2] + (tk,), dtype=torch.uint8)
        for rows, shape, part in _blocks(q.view(batch, heads, tq, dim), tk, bias):
            p = _probabilities(q, k, rows, shape, part, out=probs[rows] if kept_all else None)
            if keep is not None:
                kept = keep[rows].copy_(keep_mask(tuple(p.shape), dropout))  # 1 where kept, 0 where dropped
                p = p * kept if kept_all else p.mul_(kept)
            torch.bmm(p, v[rows], out=out[rows])
        out = out.mul_(1.0 / (1.0 - dropout)).view(batch, heads, tq, -1)
        ctx.save_for_backward(q, k, v, bias, keep, probs, out)
        ctx.dropout, ctx.shape = dropout, (batch, heads)
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # noqa: ANN001
        q, k, v, bias, keep, probs, out = ctx.saved_tensors
        (batch, heads), tq, tk, dim = ctx.shape, q.shape[1], k.shape[1], q.shape[2]
        # The softmax backward's row sums sum_j P_ij dP_ij equal grad_i . out_i (FlashAttention's D): a pass over
        # (B*h, Tq, d) instead of over the (B*h, Tq, Tk) scores.
        rowsum = (grad * out).sum(-1, keepdim=True).reshape(batch * heads, tq, 1)
        grad = (grad * (1.0 / (1.0 - ctx.dropout))).reshape(batch * heads, tq, -1)
        dq, dk, dv = (torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))
        for rows, shape, part in _blocks(q.view(batch, heads, tq, dim), tk, bias):
            p = probs[rows] if probs is not None else _probabilities(q, k, rows, shape, part)
            dropped_p, dp = p, torch.bmm(grad[rows], v[rows].transpose(1, 2))  # dp: dL/dP after dropout
            if keep is not None:
                mask = keep[rows].to(p.dtype)
                dropped_p = p * mask
                dp.mul_(mask)  # dL/dP, dropout undone
            torch.bmm(dropped_p.transpose(1, 2), grad[rows], out=dv[rows])
            ds = dp.sub_(rowsum[rows]).mul_(p)  # softmax backward
            torch.bmm(ds, k[rows], out=dq[rows])
            torch.bmm(ds.transpose(1, 2), q[rows], out=dk[rows])
        dq.mul_(dim**-0.5)  # q was scaled before the scores
        return (dq.view(batch, heads, tq, dim), dk.view(batch, heads, tk, dim), dv.view(batch, heads, tk, -1),
                None, None)


INITS = ("pytorch", "xavier")


def check_init(init: str) -> None:
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")


def xavier_linear(linear: nn.Linear) -> None:
    """fairseq's `Linear`: xavier-uniform weight, zero bias."""
    nn.init.xavier_uniform_(linear.weight)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout: float) -> Tensor:
    """softmax(q k^T / sqrt(d) + mask) v with `dropout` on the probabilities: (B, h, Tq, d), (B, h, Tk, d) ->
    (B, h, Tq, d_v). The blocked kernel where CPU training with dropout has no fused kernel and the call is large
    enough to gain from it, SDPA otherwise."""
    scores = q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2]
    if dropout > 0 and scores >= BLOCKED_MIN_SCORES and use_chunked_dropout_attention(q):
        return chunked_dropout_attention(q, k, v, mask, dropout)
    if k.device.type == "cpu" and k.shape[2] % KEY_BLOCK >= KEY_BLOCK // 2 and not counting_or_tracing():
        k, v, mask = pad_keys(k, v, mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)


KEY_BLOCK = 16
"""PyTorch's CPU flash-attention kernel runs the last (Tk mod 16) keys of each row slowly: on 1 thread at DMD's
MOSI shape (32 x 10 heads x 46 steps, head width 5) a call takes 2.2 ms, 0.92 ms once the keys are padded to 48 with
masked-out zero keys. Padding pays from 8 left-over keys on (measured over Tk = 40..64 and 500)."""


def counting_or_tracing() -> bool:
    """A FLOP counter (or another dispatch mode) is watching, or a trace is recording: the padded keys would be
    counted as the model's work, or baked into the trace."""
    return torch.jit.is_tracing() or _get_current_dispatch_mode() is not None


def pad_keys(k: Tensor, v: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Keys and values padded with zeros to a multiple of `KEY_BLOCK` steps that the (bool) mask hides: the same
    attention, as a masked key's probability is exactly 0."""
    steps = k.shape[2]
    extra = -steps % KEY_BLOCK
    k, v = F.pad(k, (0, 0, 0, extra)), F.pad(v, (0, 0, 0, extra))
    if mask is None:
        return k, v, (torch.arange(steps + extra, device=k.device) < steps)[None, None, None, :]
    return k, v, torch.cat([mask, mask.new_zeros(*mask.shape[:-1], extra)], dim=-1)


class MultiHeadAttention(nn.Module):
    """Multi-head attention through `F.scaled_dot_product_attention` (fused kernels where available).

    Queries come from `x` (B, Tq, D); keys and values from `context` (B, Tk, Dc), or from `x` for self-attention.
    `key_mask` (B, Tk) is True on real steps; a query whose keys are all padding (a missing modality) returns zeros
    instead of NaN. `causal=True` hides keys later than the query, aligned at the end of both sequences (MulT's
    future mask for sequences of different lengths).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        context_dim: int | None = None,
        dropout: float = 0.0,
        qkv_bias: bool = True,
        out_bias: bool = True,
        init: str = "pytorch",
    ) -> None:
        """`init="xavier"` is fairseq's (MulT, MMSA, DMD): the query, key and value weights drawn as one (3 d, d)
        xavier-uniform matrix (bound sqrt(6 / 4d), not each its own), xavier-uniform output weights, zero biases.
        `init="pytorch"` keeps `nn.Linear`'s default."""
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        check_init(init)
        self.heads = heads
        self.dropout = dropout
        self.to_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.to_kv = nn.Linear(context_dim or dim, 2 * dim, bias=qkv_bias)
        self.out = nn.Linear(dim, dim, bias=out_bias)
        if init == "xavier":
            fan_in = context_dim or dim
            bound = math.sqrt(6.0 / (fan_in + 3 * dim))  # fairseq's joint in_proj_weight
            for linear in (self.to_q, self.to_kv, self.out):
                xavier_linear(linear)
            for linear in (self.to_q, self.to_kv):
                nn.init.uniform_(linear.weight, -bound, bound)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        value: Tensor | None = None,
        key_mask: Tensor | None = None,
        causal: bool = False,
    ) -> Tensor:
        """`value` (B, Tk, Dc), when given, feeds the values while `context` feeds the keys (MulT's key and value
        streams carry independent embedding-dropout masks); by default both come from `context`."""
        context = x if context is None else context
        b, tq, d = x.shape
        tk = context.shape[1]
        q = self.to_q(x).view(b, tq, self.heads, -1).transpose(1, 2)  # (B, h, Tq, d/h)
        if value is None:
            k, v = self.to_kv(context).view(b, tk, 2, self.heads, -1).permute(2, 0, 3, 1, 4)  # each (B, h, Tk, d/h)
        else:
            w_k, w_v = self.to_kv.weight.chunk(2)
            b_k, b_v = self.to_kv.bias.chunk(2) if self.to_kv.bias is not None else (None, None)
            k = nn.functional.linear(context, w_k, b_k).view(b, tk, self.heads, -1).transpose(1, 2)
            v = nn.functional.linear(value, w_v, b_v).view(b, tk, self.heads, -1).transpose(1, 2)
        mask = None
        if key_mask is not None and not bool(key_mask.all()):  # an all-real mask would only cost the fused kernels
            mask = key_mask[:, None, None, :]  # (B, 1, 1, Tk)
        if causal:
            future = torch.ones(tq, tk, dtype=torch.bool, device=x.device).tril(tk - tq)[None, None]  # (1, 1, Tq, Tk)
            mask = future if mask is None else mask & future
        blind = None
        if mask is not None:
            # A query that may see no key at all (a missing modality, or a causal window before a shorter source
            # begins) would get NaN from the softmax; it attends everywhere instead and its output is zeroed.
            blind = ~mask.any(-1, keepdim=True)  # (B or 1, 1, Tq, 1)
            mask = mask | blind
        y = attention(q, k, v, mask, self.dropout if self.training else 0.0)  # (B, h, Tq, d/h)
        y = self.out(y.transpose(1, 2).reshape(b, tq, d))  # (B, Tq, D)
        return y if blind is None else y.masked_fill(blind[:, 0], 0.0)


class FeedForward(nn.Module):
    """Position-wise MLP: Linear -> ReLU (or GEGLU) -> Dropout -> Linear."""

    def __init__(
        self, dim: int, hidden: int, *, dropout: float = 0.0, activation: str = "relu", init: str = "pytorch"
    ) -> None:
        """`init="xavier"`: xavier-uniform weights and zero biases (fairseq's `Linear`, MulT's fc1/fc2)."""
        super().__init__()
        if activation not in ("relu", "geglu"):
            raise ValueError(f"activation must be 'relu' or 'geglu', got {activation!r}")
        check_init(init)
        self.geglu = activation == "geglu"
        self.up = nn.Linear(dim, hidden * (2 if self.geglu else 1))
        self.drop = Dropout(dropout)
        self.down = nn.Linear(hidden, dim)
        if init == "xavier":
            xavier_linear(self.up)
            xavier_linear(self.down)

    def forward(self, x: Tensor) -> Tensor:
        h = self.up(x)
        if self.geglu:
            h, gate = h.chunk(2, dim=-1)
            h = h * nn.functional.gelu(gate)
        else:
            h = torch.relu_(h)  # in place on the fresh projection: no new allocation to fault in
        return self.down(self.drop(h))


class TransformerLayer(nn.Module):
    """Pre-LN transformer layer; with `cross=True` the attention reads a second sequence (cross-modal attention).

    x = x + Dropout(Attention(LN(x), LN_c(context)))        LN_c is LN itself when `shared_norm` (MulT)
    x = x + Dropout(FeedForward(LN(x)))
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        cross: bool = False,
        shared_norm: bool = True,
        ffn_mult: int = 4,
        attn_dropout: float = 0.0,
        relu_dropout: float = 0.0,
        res_dropout: float = 0.0,
        activation: str = "relu",
        qkv_bias: bool = True,
        init: str = "pytorch",
    ) -> None:
        super().__init__()
        self.cross = cross
        self.norm = nn.LayerNorm(dim)
        self.context_norm = nn.LayerNorm(dim) if cross and not shared_norm else None
        self.attn = MultiHeadAttention(dim, heads, dropout=attn_dropout, qkv_bias=qkv_bias, init=init)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_mult * dim, dropout=relu_dropout, activation=activation, init=init)
        self.drop = Dropout(res_dropout)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        *,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        causal: bool = False,
        value: Tensor | None = None,
        read_at: Tensor | None = None,
    ) -> Tensor:
        h = self.norm(x)
        if read_at is not None:
            return self.read_one_step(x, h, mask, causal, read_at)
        if self.cross:
            if context is None:
                raise ValueError("a cross-attention layer needs a context sequence")
            norm = self.context_norm or self.norm
            v = None if value is None else norm(value)
            x = x + self.drop(self.attn(h, norm(context), value=v, key_mask=context_mask, causal=causal))
        else:
            x = x + self.drop(self.attn(h, key_mask=mask, causal=causal))
        return x + self.drop(self.ffn(self.ffn_norm(x)))

    def read_one_step(self, x: Tensor, h: Tensor, mask: Tensor | None, causal: bool, read_at: Tensor) -> Tensor:
        """This (self-attention) layer's output at step `read_at[b]` of each sample only, (B, 1, D): one query per
        sample attends to every key (under `causal`, to the keys up to its step), and the feed-forward runs on B
        tokens instead of B x T. The same numbers as the full layer at those steps."""
        if self.cross:
            raise ValueError("read_at applies to self-attention layers only")
        index = read_at[:, None, None].expand(-1, 1, x.shape[-1])  # (B, 1, D)
        keys = mask
        if causal:
            upto = torch.arange(x.shape[1], device=x.device)[None, :] <= read_at[:, None]  # (B, T)
            keys = upto if mask is None else mask & upto
        x = x.gather(1, index) + self.drop(self.attn(h.gather(1, index), h, key_mask=keys))
        return x + self.drop(self.ffn(self.ffn_norm(x)))


class TransformerEncoder(nn.Module):
    """MulT's (cross-modal) transformer: scale by sqrt(d), add sinusoidal positions, dropout, N pre-LN layers, LN.

    With `cross=True` every layer attends from `x` (the target modality) to `context` (the source modality), which
    receives the same scaling and positions.

    Options, defaults as in MulT's official code:
    - `separate_kv_dropout`: the source's key and value streams each get their own embedding-dropout mask (the
      official encoder calls dropout on its key and value inputs apart). Only in training with `embed_dropout > 0`
      do the streams differ; otherwise one stream serves both (one projection). False: one mask shared by both.
    - `positions` / `position_start`: add the sinusoidal table numbered from `position_start` (fairseq: 1; this
      default stays 0 for callers that relied on it); `positions=False` adds none (MMSA's encoder default).
    - `init`: "xavier", fairseq's initialisation of the attention and feed-forward linears (see MultiHeadAttention),
      or "pytorch" (`nn.Linear` defaults).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        layers: int,
        *,
        cross: bool = False,
        embed_dropout: float = 0.0,
        attn_dropout: float = 0.0,
        relu_dropout: float = 0.0,
        res_dropout: float = 0.0,
        causal: bool = False,
        position_start: int = 0,
        positions: bool = True,
        separate_kv_dropout: bool = True,
        init: str = "xavier",
    ) -> None:
        super().__init__()
        self.dim = dim
        self.causal = causal
        self.position_start = position_start
        self.positions = positions
        self.separate_kv_dropout = separate_kv_dropout
        self.embed_drop = Dropout(embed_dropout)
        self.layers = nn.ModuleList(
            TransformerLayer(
                dim,
                heads,
                cross=cross,
                attn_dropout=attn_dropout,
                relu_dropout=relu_dropout,
                res_dropout=res_dropout,
                init=init,
            )
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)

    def positioned(self, x: Tensor) -> Tensor:
        x = x * math.sqrt(self.dim)
        if not self.positions:
            return x
        return x + sinusoidal_positions(x.shape[1], self.dim, start=self.position_start, device=x.device).to(x.dtype)

    def embed(self, x: Tensor) -> Tensor:
        return self.embed_drop(self.positioned(x))

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        *,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        read_at: Tensor | None = None,
    ) -> Tensor:  # (B, T, D) -> (B, T, D), or (B, D) with `read_at`
        """With `read_at` (B,) step indices, only each sample's output at that step, (B, D): the last layer then
        computes just those steps (MulT reads its self-attention transformers at one step; the other steps of the
        last layer were a third of their cost)."""
        # all-real masks are dropped once here rather than checked again by every layer's attention
        mask = None if mask is not None and bool(mask.all()) else mask
        context_mask = None if context_mask is not None and bool(context_mask.all()) else context_mask
        x = self.embed(x)
        value = None
        if self.causal and context is not None and context.shape[1] < x.shape[1]:
            # The official future mask lets query i see source steps j <= i + |T_S - T_T|; the attention block offsets
            # by T_S - T_T. Masked source steps appended to T_S' = 2 T_T - T_S make the two agree.
            extra = 2 * (x.shape[1] - context.shape[1])
            if context_mask is None:
                context_mask = torch.ones(context.shape[:2], dtype=torch.bool, device=context.device)
            context, context_mask = F.pad(context, (0, 0, 0, extra)), F.pad(context_mask, (0, extra))
        if context is not None:
            context = self.positioned(context)
            keys = self.embed_drop(context)
            if self.separate_kv_dropout and self.training and self.embed_drop.p > 0:
                value = self.embed_drop(context)  # its own mask: the official code drops keys and values apart
            context = keys
        last = len(self.layers) - 1 if read_at is not None else -1
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, context=context, context_mask=context_mask, causal=self.causal, value=value,
                      read_at=read_at if i == last else None)
        if read_at is not None:
            x = x if last >= 0 else x.gather(1, read_at[:, None, None].expand(-1, 1, x.shape[-1]))
            return self.norm(x)[:, 0]
        return self.norm(x)


# ---------------------------------------------------------------------------------------------------------------------
# Graph distillation (DMD's HomoGD and HeteroGD units; MulT + GD)
# ---------------------------------------------------------------------------------------------------------------------


def parse_edges(edges: tuple[str, ...], name: str) -> set[tuple[str, str]]:
    parsed = set()
    for edge in edges:
        teacher, arrow, student = edge.partition("->")
        if not arrow or teacher not in MODALITIES or student not in MODALITIES or teacher == student:
            raise ValueError(
                f"{name}: {edge!r} is not 'teacher->student' with two different modalities of {MODALITIES}"
            )
        parsed.add((teacher, student))
    return parsed


class DistillationTerms(NamedTuple):
    logit: Tensor
    """Σ_e mean_b w_e |logit_student - sg(logit_teacher)| (eq. 9)."""
    representation: Tensor
    """The unit's representation term (weighted L1 toward the detached teacher, or the min-cosine hinge)."""
    regulariser: Tensor
    """Σ_e (mean_b softmax_e - prior_e)²."""


class GraphDistillation(nn.Module):
    """A graph-distillation unit (DMD; also MulT + GD, DMD's Table 5): learned, per-sample weights on the M(M-1)
    directed edges teacher -> student, and the distillation loss along them (§6.2 item 8 of the spec; DMD eqs. 8, 9)."""

    def __init__(
        self,
        modalities: tuple[str, ...],
        *,
        logit_dim: int,
        repr_dim: int,
        size: int,
        prior_edges: set[tuple[str, str]],
        temperature: float,
        alpha: float,
        representation: Literal["l1", "min_cosine"],
    ) -> None:
        super().__init__()
        # (teacher, student) in the official loop order: for each student, every other modality as teacher.
        self.edges = [(t, s) for s in modalities for t in modalities if t != s]
        # No biases: one shared shift of every edge of a sample cancels in the softmax (module docstring).
        self.W_logit = nn.Linear(logit_dim, size, bias=False)
        self.W_repr = nn.Linear(repr_dim, size, bias=False)
        self.W_edge = nn.Linear(4 * size, 1, bias=False)
        self.alpha = alpha
        self.representation = representation
        v = torch.tensor([float(edge in prior_edges) for edge in self.edges])
        self.register_buffer("prior", torch.softmax(v / temperature, dim=0), persistent=False)  # (E,)

    def edge_weights(self, logits: dict[str, Tensor], reprs: dict[str, Tensor]) -> Tensor:
        """softmax(α e) over the edges of each sample, (B, E); e_{i→j} = W_edge [z_j; z_i], z_m = [W_l l_m; W_r r_m]."""
        z = {m: torch.cat([self.W_logit(logits[m]), self.W_repr(reprs[m])], dim=-1) for m in logits}
        e = torch.cat([self.W_edge(torch.cat([z[s], z[t]], dim=-1)) for t, s in self.edges], dim=-1)  # (B, E)
        return torch.softmax(self.alpha * e, dim=-1)

    def forward(self, logits: dict[str, Tensor], reprs: dict[str, Tensor]) -> DistillationTerms:
        soft = self.edge_weights(logits, reprs)  # (B, E)
        w = soft + self.prior  # per-sample weight of each edge in the loss
        logit = representation = soft.new_zeros(())
        for e, (t, s) in enumerate(self.edges):
            logit = logit + (w[:, e] * logit_distance(logits[s], logits[t])).mean()
            if self.representation == "l1":
                representation = representation + (w[:, e] * (reprs[s] - reprs[t].detach()).abs().sum(-1)).mean()
            else:
                cosine = F.cosine_similarity(reprs[s], reprs[t].detach(), dim=-1)
                representation = representation + F.relu(cosine).mean() * w[:, e].mean()
        regulariser = (soft.mean(0) - self.prior).pow(2).sum()
        return DistillationTerms(logit, representation, regulariser)


def logit_distance(student: Tensor, teacher: Tensor) -> Tensor:
    """|student - sg(teacher)| averaged over the outputs, (B, K) -> (B,): the teacher receives no gradient."""
    return (student - teacher.detach()).abs().mean(-1)
