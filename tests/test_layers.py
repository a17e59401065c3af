"""Shared blocks: SDPA attention against a plain reference computation; masks; positions; pooling."""

from __future__ import annotations

import math

import pytest
import torch

from affectfuse.models.layers import (
    MultiHeadAttention,
    TransformerEncoder,
    front_align,
    lstm_segments,
    masked_mean,
    plain_layer_norm,
    run_lstm,
    sinusoidal_positions,
)


def reference_attention(layer: MultiHeadAttention, x, context, key_mask=None, causal=False):
    b, tq, d = x.shape
    h = layer.heads
    q = layer.to_q(x).view(b, tq, h, -1).transpose(1, 2)
    k, v = layer.to_kv(context).view(b, context.shape[1], 2, h, -1).permute(2, 0, 3, 1, 4)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // h)  # (B, h, Tq, Tk)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], -math.inf)
    if causal:
        tk = context.shape[1]
        scores = scores.masked_fill(~torch.ones(tq, tk, dtype=torch.bool).tril(tk - tq), -math.inf)
    y = scores.softmax(-1) @ v
    return layer.out(y.transpose(1, 2).reshape(b, tq, d))


def test_attention_matches_reference_with_masks_and_causality():
    torch.manual_seed(0)
    layer = MultiHeadAttention(8, 2, context_dim=6).eval()
    x, c = torch.randn(3, 4, 8), torch.randn(3, 7, 6)
    key_mask = torch.tensor([[True] * 7, [True] * 3 + [False] * 4, [True] * 5 + [False] * 2])
    torch.testing.assert_close(layer(x, c, key_mask=key_mask), reference_attention(layer, x, c, key_mask))
    torch.testing.assert_close(layer(x, c, causal=True), reference_attention(layer, x, c, causal=True))


def test_attention_to_an_empty_modality_is_zero_not_nan():
    layer = MultiHeadAttention(8, 2).eval()
    x = torch.randn(2, 3, 8)
    out = layer(x, key_mask=torch.tensor([[True, True, False], [False, False, False]]))
    assert torch.isfinite(out).all() and (out[1] == 0).all() and (out[0] != 0).any()


def test_attention_width_must_divide_heads():
    with pytest.raises(ValueError, match="width 10 is not divisible by 3 heads"):
        MultiHeadAttention(10, 3)


def test_cross_modal_encoder_attends_target_to_source():
    torch.manual_seed(0)
    encoder = TransformerEncoder(8, 2, 2, cross=True).eval()
    target, source = torch.randn(2, 5, 8), torch.randn(2, 9, 8)
    out = encoder(target, context=source)
    assert out.shape == (2, 5, 8)  # one output per target step
    changed = source.clone()
    changed[:, 3] = torch.randn(2, 8)  # (a constant shift would vanish in the LayerNorm)
    assert not torch.allclose(encoder(target, context=changed), out)  # reads the source ...
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[:, 3] = False
    torch.testing.assert_close(
        encoder(target, context=changed, context_mask=mask), encoder(target, context=source, context_mask=mask)
    )  # ... but never masked steps


def test_sinusoidal_positions_layout():
    table = sinusoidal_positions(5, 6)
    assert table.shape == (5, 6)
    torch.testing.assert_close(table[0], torch.tensor([0.0, 0, 0, 1, 1, 1]))
    assert sinusoidal_positions(3, 7)[:, -1].abs().sum() == 0


def test_masked_mean_and_front_align():
    x = torch.tensor([[[1.0], [3.0], [100.0]], [[0.0], [5.0], [7.0]]])
    mask = torch.tensor([[True, True, False], [False, True, True]])
    torch.testing.assert_close(masked_mean(x, mask), torch.tensor([[2.0], [6.0]]))
    assert masked_mean(x, torch.zeros_like(mask)).abs().sum() == 0  # a missing modality pools to zeros
    aligned, lengths = front_align(x, mask)
    torch.testing.assert_close(aligned[1, :2], torch.tensor([[5.0], [7.0]]))
    assert lengths.tolist() == [2, 2]


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("padding", ["end", "front", "scattered"])
def test_run_lstm_equals_packing_by_length(layers, padding):
    """The segmented unpacked LSTM gives packing's final states, outputs and parameter gradients, whatever the
    padding, with samples of no real step among them."""
    torch.manual_seed(layers)
    rnn = torch.nn.LSTM(7, 5, num_layers=layers, batch_first=True)
    b, t = 37, 23
    lengths = torch.randint(0, t + 1, (b,))
    lengths[:3] = torch.tensor([0, t, 1])
    steps = torch.arange(t)[None, :]
    mask = {"end": steps < lengths[:, None], "front": steps >= (t - lengths)[:, None],
            "scattered": torch.rand(b, t) < 0.4}[padding]
    x = torch.randn(b, t, 7) * mask[..., None]
    h, out = run_lstm(rnn, x, mask, steps=True)
    aligned, lengths = front_align(x, mask)
    packed = torch.nn.utils.rnn.pack_padded_sequence(aligned, lengths.clamp_min(1), batch_first=True,
                                                     enforce_sorted=False)
    packed_out, (packed_h, _) = rnn(packed)
    packed_out = torch.nn.utils.rnn.pad_packed_sequence(packed_out, batch_first=True, total_length=t)[0]
    torch.testing.assert_close(h, packed_h[-1], atol=1e-6, rtol=0)
    torch.testing.assert_close(out, packed_out, atol=1e-6, rtol=0)
    weights = torch.randn(t, 5)
    ours = torch.autograd.grad(h.square().sum() + (out * weights).sum(), list(rnn.parameters()))
    theirs = torch.autograd.grad(packed_h[-1].square().sum() + (packed_out * weights).sum(), list(rnn.parameters()))
    for a, b_ in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b_, atol=1e-5, rtol=1e-4)  # float rounding of sums over 37 x 23 steps
    assert run_lstm(rnn, x, mask)[1] is None


def test_plain_layer_norm_is_layer_norm_without_affine():
    x = torch.randn(3, 7, 30, requires_grad=True)
    ours = plain_layer_norm(x)
    reference = torch.nn.functional.layer_norm(x, (30,))
    torch.testing.assert_close(ours, reference)
    w = torch.randn_like(ours)
    torch.testing.assert_close(torch.autograd.grad((ours * w).sum(), x)[0],
                               torch.autograd.grad((reference * w).sum(), x)[0])


def test_lstm_segments_cover_the_longest_sample_and_skip_padding():
    mosi_like = [45, 30, 20, 12, 12, 10, 9, 8, 5, 5, 3] * 3
    stops = lstm_segments(mosi_like)
    assert stops == sorted(stops) and stops[-1] == 45 and set(stops) <= set(mosi_like)
    steps, start = 0, 0
    for stop in stops:  # sample-steps the segments run: those still going, over each segment
        steps += sum(1 for n in mosi_like if n > start) * (stop - start)
        start = stop
    assert steps < 0.6 * len(mosi_like) * 45  # well under the padded batch
    assert lstm_segments([7] * 5) == [7]


def test_causal_attention_to_a_shorter_source_has_no_nan():
    layer = MultiHeadAttention(8, 2).eval()
    x, c = torch.randn(2, 6, 8), torch.randn(2, 3, 8)
    out = layer(x, c, causal=True)  # the first 3 queries see no key under the end-aligned future mask
    assert torch.isfinite(out).all() and (out[:, :3] == 0).all() and (out[:, 3:] != 0).any()
    torch.testing.assert_close(out[:, 3:], reference_attention(layer, x, c, causal=True)[:, 3:])


def capture_values(encoder: TransformerEncoder) -> list:
    """The embedded (keys, values) streams every layer of `encoder` receives."""
    seen = []
    for layer in encoder.layers:
        forward = layer.forward

        def spy(x, mask=None, *, context=None, value=None, _forward=forward, **kw):
            seen.append((context, value))
            return _forward(x, mask, context=context, value=value, **kw)

        layer.forward = spy
    return seen


def test_cross_modal_keys_and_values_get_separate_embedding_dropout_masks():
    torch.manual_seed(0)
    target, source = torch.randn(2, 5, 8), torch.randn(2, 6, 8)
    encoder = TransformerEncoder(8, 2, 2, cross=True, embed_dropout=0.5).train()
    seen = capture_values(encoder)
    encoder(target, context=source)
    keys, values = seen[0]
    assert values is not None and not torch.equal(keys, values)  # two dropout calls (official)
    assert all(v is values for _, v in seen)  # the same embedded streams feed every layer
    dropped_k, dropped_v = keys == 0, values == 0
    assert dropped_k.any() and dropped_v.any() and not torch.equal(dropped_k, dropped_v)

    seen.clear()
    encoder.eval()(target, context=source)  # no dropout: one stream serves both (one projection)
    assert seen[0][1] is None
    shared = TransformerEncoder(8, 2, 1, cross=True, embed_dropout=0.5, separate_kv_dropout=False).train()
    seen = capture_values(shared)
    shared(target, context=source)
    assert seen[0][1] is None


def test_a_separate_value_stream_feeds_only_the_values():
    torch.manual_seed(0)
    layer = MultiHeadAttention(8, 2).eval()
    x, c = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    torch.testing.assert_close(layer(x, c, value=c), layer(x, c))
    # Values that are all one vector make the output independent of the keys' stream.
    v = torch.randn(1, 1, 8).expand(2, 5, 8)
    torch.testing.assert_close(layer(x, c, value=v), layer(x, torch.randn(2, 5, 8), value=v))


def test_xavier_init_is_fairseqs():
    torch.manual_seed(0)
    encoder = TransformerEncoder(16, 2, 1)  # the default
    attn, ffn = encoder.layers[0].attn, encoder.layers[0].ffn
    joint = torch.cat([attn.to_q.weight, attn.to_kv.weight])  # fairseq's one (3 d, d) in_proj_weight
    bound = math.sqrt(6 / (16 + 48))
    assert joint.abs().max() <= bound and joint.std() > 0.9 * bound / math.sqrt(3)
    for linear in (attn.to_q, attn.to_kv, attn.out, ffn.up, ffn.down):
        assert (linear.bias == 0).all()
    assert ffn.up.weight.abs().max() <= math.sqrt(6 / (16 + 64))
    plain = TransformerEncoder(16, 2, 1, init="pytorch").layers[0].attn
    assert (plain.to_q.bias != 0).any()
    with pytest.raises(ValueError, match="init must be one of"):
        TransformerEncoder(16, 2, 1, init="normal")


def test_encoder_positions_can_be_left_out():
    torch.manual_seed(0)
    encoder = TransformerEncoder(8, 2, 1, positions=False).eval()
    x = torch.randn(1, 4, 8)
    out = encoder(x)
    torch.testing.assert_close(encoder(x.flip(1)), out.flip(1))  # without positions order does not matter
    encoder.positions = True
    assert not torch.allclose(encoder(x.flip(1)), out.flip(1))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("layers", [0, 1, 3])
def test_transformer_read_at_one_step_equals_the_full_output_there(causal, layers):
    """MulT reads its self-attention transformers at one step; computing only that step in the last layer must give
    the full output's numbers there, with padding and the causal mask, gradients included."""
    torch.manual_seed(0)
    encoder = TransformerEncoder(8, 2, layers, causal=causal).eval()
    x = torch.randn(3, 7, 8, requires_grad=True)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 5:] = False
    mask[2, 2:] = False
    read_at = mask.sum(1) - 1
    full = encoder(x, mask)[torch.arange(3), read_at]
    one = encoder(x, mask, read_at=read_at)
    torch.testing.assert_close(one, full)
    g_full, = torch.autograd.grad(full.square().sum(), x)
    g_one, = torch.autograd.grad(one.square().sum(), x)
    torch.testing.assert_close(g_one, g_full)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize(("causal", "source_steps"), [(False, 6), (True, 6), (True, 3)])
def test_grouped_crossmodal_transformers_equal_running_each(train, causal, source_steps):
    """MulT's and DMD's cross-modal transformers of equal shapes run as one stacked computation: the same outputs and
    parameter gradients as running each (dropout off in train mode, so both are deterministic; separate key and
    value streams in train mode), also under the causal mask, with queries before a shorter source begins."""
    from affectfuse.models.grouped import can_group, run_grouped

    torch.manual_seed(0)
    encoders = [TransformerEncoder(8, 2, 2, cross=True, embed_dropout=0.0, attn_dropout=0.0, causal=causal)
                for _ in range(3)]
    for e in encoders:
        e.train(train)
        for p in e.parameters():  # not the initial ones/zeros: each affine and bias must reach its own group
            torch.nn.init.normal_(p, std=0.3)
    xs = [torch.randn(4, 5, 8, requires_grad=True) for _ in encoders]
    contexts = [torch.randn(4, source_steps, 8, requires_grad=True) for _ in encoders]
    if source_steps < xs[0].shape[1] and causal:  # the official offset future mask: each runs on its own
        assert not can_group(encoders, xs, contexts)
        return
    assert can_group(encoders, xs, contexts)
    assert not can_group(encoders, [*xs[:2], torch.randn(4, 7, 8)], contexts)  # unequal shapes run one by one
    expected = [e(x, context=c) for e, x, c in zip(encoders, xs, contexts, strict=True)]
    grouped = run_grouped(encoders, xs, contexts)
    params = [p for e in encoders for p in e.parameters()] + xs + contexts
    want = torch.autograd.grad(sum(o.square().sum() for o in expected), params)
    got = torch.autograd.grad(sum(o.square().sum() for o in grouped), params)
    for a, b in zip(grouped, expected, strict=True):
        torch.testing.assert_close(a, b)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
