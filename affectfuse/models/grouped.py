"""Several cross-modal `TransformerEncoder`s of equal shapes run as one stacked computation.

MulT's six cross-modal transformers at aligned lengths all see (B, T, d) queries and (B, T, d) sources. Run one by
one, each of their ~25 operations per layer is a small call (d = 30); stacked along a group axis G, every linear
layer is one batched matmul over (G, B*T, d), every LayerNorm, dropout and residual one call, and attention one call
over G*B samples. The parameters stay in their own modules (checkpoints and converters are unchanged); they are
stacked at each call, which autograd differentiates like any other op. The result equals running each encoder
(`tests/test_layers.py` compares them, outputs and gradients).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from .layers import TransformerEncoder, attention, plain_layer_norm


def can_group(encoders: Sequence[TransformerEncoder], xs: Sequence[Tensor], contexts: Sequence[Tensor]) -> bool:
    """Whether `run_grouped` applies: cross-modal, equal widths, depths, causality, dropouts (attention dropout may
    differ), ReLU feed-forwards with the shared norm, and equal input shapes (no masks: the caller checked that every
    step is real); causal ones only with sources at least as long as the queries (a shorter source takes the official
    future mask's offset, `TransformerEncoder.forward`)."""
    first = encoders[0]

    def same(e: TransformerEncoder) -> bool:
        a, b = e.layers[0], first.layers[0]
        return (
            e.dim == first.dim and len(e.layers) == len(first.layers) and e.causal == first.causal
            and a.attn.heads == b.attn.heads and a.context_norm is None and not a.ffn.geglu
            and e.embed_drop.p == first.embed_drop.p and a.drop.p == b.drop.p and a.ffn.drop.p == b.ffn.drop.p
            and e.positions == first.positions and e.position_start == first.position_start
            and e.separate_kv_dropout == first.separate_kv_dropout
        )

    return (
        len(encoders) > 1 and all(layer.cross for e in encoders for layer in e.layers)
        and all(same(e) for e in encoders) and len({x.shape for x in xs}) == 1 and len({c.shape for c in contexts}) == 1
        and (not first.causal or xs[0].shape[1] <= contexts[0].shape[1])
    )


def _stack(modules: Sequence[torch.nn.Module], name: str) -> Tensor:
    return torch.stack([getattr(m, name) for m in modules])


def _norm(x: Tensor, norms: Sequence[torch.nn.LayerNorm]) -> Tensor:
    """Each group's LayerNorm on (G, N, D): the normalisation once, each group's affine broadcast."""
    h = plain_layer_norm(x, norms[0].eps)
    return torch.addcmul(_stack(norms, "bias")[:, None], h, _stack(norms, "weight")[:, None])


def _linear(x: Tensor, linears: Sequence[torch.nn.Linear]) -> Tensor:
    """Each group's Linear on (G, N, D_in) -> (G, N, D_out): one batched matmul."""
    weight = _stack(linears, "weight").transpose(1, 2)  # (G, D_in, D_out)
    if linears[0].bias is None:
        return torch.bmm(x, weight)
    return torch.baddbmm(_stack(linears, "bias")[:, None], x, weight)


def run_grouped(encoders: Sequence[TransformerEncoder], xs: Sequence[Tensor], contexts: Sequence[Tensor]
                ) -> list[Tensor]:
    """`[e(x, context=c) for e, x, c in zip(encoders, xs, contexts)]` as one stacked computation (see `can_group`)."""
    first = encoders[0]
    g, (b, tq, d), tk = len(encoders), xs[0].shape, contexts[0].shape[1]
    heads = first.layers[0].attn.heads

    x = first.embed(torch.cat(list(xs))).reshape(g, b * tq, d)  # (G*B, Tq, D) as one batch -> (G, B*Tq, D)
    context = first.positioned(torch.cat(list(contexts)))
    keys = first.embed_drop(context).reshape(g, b * tk, d)
    separate = first.separate_kv_dropout and first.training and first.embed_drop.p > 0
    values = first.embed_drop(context).reshape(g, b * tk, d) if separate else None
    mask = None
    if first.causal:  # keys later than the query hidden, aligned at the end of both sequences (as MultiHeadAttention)
        mask = torch.ones(tq, tk, dtype=torch.bool, device=x.device).tril(tk - tq)[None, None]  # (1, 1, Tq, Tk)
    for depth in range(len(first.layers)):
        layers = [e.layers[depth] for e in encoders]
        attn, norms = [layer.attn for layer in layers], [layer.norm for layer in layers]
        h = _norm(x, norms)
        hk = _norm(keys, norms)  # MulT's shared norm: LN(context) with LN's parameters
        q = _linear(h, [a.to_q for a in attn])
        w_kv = _stack([a.to_kv for a in attn], "weight")  # (G, 2D, D)
        b_kv = _stack([a.to_kv for a in attn], "bias")
        hv = hk if values is None else _norm(values, norms)
        k = torch.baddbmm(b_kv[:, None, :d], hk, w_kv[:, :d].transpose(1, 2))
        v = torch.baddbmm(b_kv[:, None, d:], hv, w_kv[:, d:].transpose(1, 2))
        split = (g * b, -1, heads, d // heads)
        q, k, v = (t.reshape(split).transpose(1, 2) for t in (q, k, v))  # (G*B, h, T, d/h)
        y = _attention(q, k, v, mask, [a.dropout if a.training else 0.0 for a in attn], b)
        y = _linear(y.transpose(1, 2).reshape(g, b * tq, d), [a.out for a in attn])
        x = x + layers[0].drop(y)
        f = _norm(x, [layer.ffn_norm for layer in layers])
        f = torch.relu_(_linear(f, [layer.ffn.up for layer in layers]))  # in place: a fresh tensor (no page faults)
        f = _linear(layers[0].ffn.drop(f), [layer.ffn.down for layer in layers])
        x = x + layers[0].drop(f)
    x = _norm(x, [e.norm for e in encoders]).reshape(g, b, tq, d)
    return list(x.unbind(0))


def _attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropouts: list[float], batch: int) -> Tensor:
    """Attention over (G*B, h, T, d/h), each group's B samples with its own attention dropout."""
    if len(set(dropouts)) == 1:
        return attention(q, k, v, mask, dropouts[0])
    return torch.cat([attention(q[i:i + batch], k[i:i + batch], v[i:i + batch], mask, p)
                      for i, p in zip(range(0, q.shape[0], batch), dropouts, strict=True)])


def run_crossmodal(crossmodal: Mapping[str, TransformerEncoder], pairs: Sequence[tuple[str, str]],
                   x: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> dict[tuple[str, str], Tensor]:
    """Z_{S→T} = `crossmodal["S_to_T"](x[T], masks[T], context=x[S], context_mask=masks[S])` for every (S, T) in
    `pairs`: (B, T_T, d) queries attending to (B, T_S, d) keys and values. When no step is padded, the pairs of
    equal shapes (all six of three aligned modalities) run as one stacked computation. (MulT's; DMD's, wider, gain
    nothing from it and run one by one.)"""
    unpadded = all(bool(m.all()) for m in masks.values())
    shapes: dict[tuple, list[tuple[str, str]]] = {}
    for s, t in pairs:
        shapes.setdefault((x[t].shape, x[s].shape), []).append((s, t))
    streams = {}
    for group in shapes.values():
        encoders = [crossmodal[f"{s}_to_{t}"] for s, t in group]
        queries, sources = [x[t] for _, t in group], [x[s] for s, _ in group]
        if unpadded and can_group(encoders, queries, sources):
            streams |= dict(zip(group, run_grouped(encoders, queries, sources), strict=True))
        else:
            streams |= {(s, t): crossmodal[f"{s}_to_{t}"](x[t], masks[t], context=x[s], context_mask=masks[s])
                        for s, t in group}
    return streams
