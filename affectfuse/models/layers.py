"""Paper-independent blocks shared by several methods."""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices  # real steps first, in time order
    x = torch.gather(x, 1, order.unsqueeze(-1).expand_as(x))
    return x, mask.sum(1)


def last_real_step(x: Tensor, mask: Tensor) -> Tensor:
    """The last real step of each front-aligned sequence, (B, T, D) -> (B, D); zeros where there is none."""
    lengths = mask.sum(1)  # (B,)
    index = (lengths - 1).clamp_min(0)[:, None, None].expand(-1, 1, x.shape[-1])
    return x.gather(1, index)[:, 0] * (lengths > 0)[:, None].to(x.dtype)


class SubNet(nn.Module):
    """The utterance-level audio/vision sub-network of TFN and LMF: BatchNorm -> Dropout -> 3 x (Linear -> ReLU)."""

    def __init__(self, in_size: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(in_size)
        self.drop = nn.Dropout(dropout)
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
        if bool((lengths == x.shape[1]).all()):  # full-length batch: no padding to skip, no packing to pay for
            _, (h, _) = self.rnn(x)
        else:
            packed = nn.utils.rnn.pack_padded_sequence(
                x, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False
            )
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


CHUNKED_MIN_SCORES = 128 * 128
"""Attention with dropout on CPU goes through the chunked kernel from this many scores per (sample, head) on; below
it the score matrices are small enough that one batched pass (SDPA's math path) is faster than the per-chunk loop."""

CHUNK_ELEMENTS = 1 << 18
"""Attention scores per chunk of the chunked kernel (1 MiB of float32: one 500 x 500 head stays in cache)."""


def use_chunked_dropout_attention(q: Tensor) -> bool:
    """The chunked kernel serves training with attention dropout on CPU (float32, or bf16 autocast), not compile.

    On CPU, `scaled_dot_product_attention` with dropout falls back to its unfused math path, which writes the
    (B, h, Tq, Tk) scores, probabilities, dropout noise and mask to memory; at MOSEI lengths that was most of MulT's
    training step (benchmarks/RESULTS.md). The chunks are a Python loop over (sample, head group) on purpose: each
    iteration's scores fit in cache. CUDA's fused kernels support dropout natively. Under CPU autocast the kernel
    runs in float32 on float32 copies of q, k, v.
    """
    float32 = q.dtype == torch.float32 or torch.is_autocast_enabled("cpu")
    return q.device.type == "cpu" and float32 and not torch.compiler.is_compiling()


def chunked_dropout_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout: float) -> Tensor:
    """softmax(q k^T / sqrt(d) + mask) with dropout, times v: (B, h, Tq, d), (B, h, Tk, d) -> (B, h, Tq, d_v).

    `mask` is a boolean mask broadcastable to (B, h, Tq, Tk), True where a query may attend; every query must see at
    least one key. Same result as `scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)` in
    distribution (another random stream).
    """
    shape = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    bias = torch.zeros((1, 1, 1, 1), dtype=q.dtype, device=q.device)
    if mask is not None:
        bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~mask, float("-inf"))
    return _ChunkedDropoutAttention.apply(q, k, v, bias.expand(shape), dropout)


class _ChunkedDropoutAttention(torch.autograd.Function):
    """Attention with dropout computed a few heads at a time, so scores never leave the cache, flash-style: the
    backward pass recomputes the probabilities and keeps only the dropout mask (1 byte per score)."""

    # Under CPU autocast (bf16 projections) the kernel runs in float32, forward and backward: SDPA's math path in
    # bf16 made MulT's training step 2.4x slower than in float32 (benchmarks/RESULTS.md).
    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, dropout: float) -> Tensor:  # noqa: ANN001
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()  # per-head slices then need no copy in bmm
        batch, heads, tq, dim = q.shape
        tk = k.shape[2]
        chunk = max(1, min(heads, CHUNK_ELEMENTS // (tq * tk)))
        out = q.new_empty(batch, heads, tq, v.shape[-1])
        # The kept-mask as uint8, 1 byte per score: uint8 <-> float conversions are an order of magnitude cheaper
        # on CPU than bool ones or masked_fill, and a float mask would take 4 bytes.
        keep = torch.empty(batch, heads, tq, tk, dtype=torch.uint8, device=q.device)
        noise = q.new_empty(chunk, tq, tk)
        for b in range(batch):
            for h in range(0, heads, chunk):
                part = (b, slice(h, h + chunk))
                p = torch.baddbmm(bias[part], q[part], k[part].transpose(1, 2), alpha=dim**-0.5)
                torch.softmax(p, -1, out=p)
                if dropout > 0:
                    kept = noise[: p.shape[0]].uniform_().ge_(dropout)  # 1.0 where kept, 0.0 where dropped
                    keep[part].copy_(kept)
                    p.mul_(kept)
                torch.bmm(p, v[part], out=out[part])
        ctx.save_for_backward(q, k, v, bias, keep)
        ctx.dropout = dropout
        return out.mul_(1.0 / (1.0 - dropout))

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # noqa: ANN001
        q, k, v, bias, keep = ctx.saved_tensors
        batch, heads, tq, dim = q.shape
        tk = k.shape[2]
        chunk = max(1, min(heads, CHUNK_ELEMENTS // (tq * tk)))
        grad = grad * (1.0 / (1.0 - ctx.dropout))
        dq, dk, dv = (torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))
        kept = q.new_empty(chunk, tq, tk)
        for b in range(batch):
            for h in range(0, heads, chunk):
                part = (b, slice(h, h + chunk))
                p = torch.baddbmm(bias[part], q[part], k[part].transpose(1, 2), alpha=dim**-0.5)
                torch.softmax(p, -1, out=p)
                dropped_p, dp = p, torch.bmm(grad[part], v[part].transpose(1, 2))  # dp: dL/dP after dropout
                if ctx.dropout > 0:
                    mask = kept[: p.shape[0]].copy_(keep[part])
                    dropped_p = p * mask
                    dp.mul_(mask)  # dL/dP, dropout undone
                torch.bmm(dropped_p.transpose(1, 2), grad[part], out=dv[part])
                ds = p.mul_(dp.sub_((dp * p).sum(-1, keepdim=True)))  # softmax backward
                torch.bmm(ds, k[part], out=dq[part])
                torch.bmm(ds.transpose(1, 2), q[part], out=dk[part])
        return dq.mul_(dim**-0.5), dk.mul_(dim**-0.5), dv, None, None


INITS = ("pytorch", "xavier")


def check_init(init: str) -> None:
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")


def xavier_linear(linear: nn.Linear) -> None:
    """fairseq's `Linear`: xavier-uniform weight, zero bias."""
    nn.init.xavier_uniform_(linear.weight)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


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
        dropout = self.dropout if self.training else 0.0
        if dropout > 0 and tq * tk >= CHUNKED_MIN_SCORES and use_chunked_dropout_attention(q):
            y = chunked_dropout_attention(q, k, v, mask, dropout)  # CPU has no fused kernel with dropout
        else:
            y = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        # y: (B, h, Tq, d/h)
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
        self.drop = nn.Dropout(dropout)
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
            h = torch.relu(h)
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
        self.drop = nn.Dropout(res_dropout)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        *,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        causal: bool = False,
        value: Tensor | None = None,
    ) -> Tensor:
        h = self.norm(x)
        if self.cross:
            if context is None:
                raise ValueError("a cross-attention layer needs a context sequence")
            norm = self.context_norm or self.norm
            v = None if value is None else norm(value)
            x = x + self.drop(self.attn(h, norm(context), value=v, key_mask=context_mask, causal=causal))
        else:
            x = x + self.drop(self.attn(h, key_mask=mask, causal=causal))
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
        self.embed_drop = nn.Dropout(embed_dropout)
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
    ) -> Tensor:  # (B, T, D) -> (B, T, D)
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
        for layer in self.layers:
            x = layer(x, mask, context=context, context_mask=context_mask, causal=self.causal, value=value)
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
