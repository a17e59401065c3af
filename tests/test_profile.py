"""The efficiency profiler: FLOPs against hand counts, the inference / training-only split, memory, the CLI, and the
speed-ups kept in the models (same results as the straightforward versions)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from affectfuse.cli import main
from affectfuse.config import InputSpec, Modalities
from affectfuse.config.registry import create_model, list_models
from affectfuse.efficiency import counting, memory, profile, shapes, timing
from affectfuse.models.layers import (
    Dropout,
    MultiHeadAttention,
    chunked_dropout_attention,
    use_chunked_dropout_attention,
)
from tests.conftest import SPECS, TINY, make_batch


def full_batch(spec: InputSpec, batch_size: int):
    batch = make_batch(spec, batch_size)
    for m in batch.masks:
        batch.masks[m][:] = True
    return batch


def test_lmf_flops_match_a_hand_count():
    spec = InputSpec(dims={"text": 7, "audio": 5, "vision": 6}, lengths={"text": 9, "audio": 1, "vision": 1})
    hidden, text_out, rank, b = Modalities(text=6, audio=4, vision=5), 3, 3, 4
    model = create_model("lmf", spec, hidden=hidden, text_out=text_out, rank=rank)
    batch = full_batch(spec, b)
    steps = b * spec.lengths["text"]  # every step real: the packed LSTM runs B * T steps
    lstm = 2 * steps * spec.dims["text"] * 4 * hidden.text + 2 * steps * hidden.text * 4 * hidden.text
    text_linear = 2 * b * hidden.text * text_out
    subnets = sum(2 * b * (spec.dims[m] * hidden[m] + 2 * hidden[m] * hidden[m]) for m in ("audio", "vision"))
    d_y = spec.output_size
    factors = sum(2 * b * (d + 1) * rank * d_y for d in (text_out, hidden.audio, hidden.vision))
    rank_sum = 2 * b * rank * d_y
    assert counting.count_flops(model, batch) == lstm + text_linear + subnets + factors + rank_sum


@pytest.mark.parametrize("masked", [False, True])
def test_attention_layer_flops_match_a_hand_count_and_count_the_cpu_fused_kernel(masked):
    b, tq, tk, d, dc, heads = 3, 7, 11, 8, 5, 2
    layer = MultiHeadAttention(d, heads, context_dim=dc).eval()
    x, context = torch.randn(b, tq, d), torch.randn(b, tk, dc)
    key_mask = torch.ones(b, tk, dtype=torch.bool) if masked else None
    projections = 2 * b * tq * d * d + 2 * b * tk * dc * 2 * d + 2 * b * tq * d * d  # q, (k, v), out
    scores_and_values = 2 * b * tq * tk * d * 2  # Q K^T and A V over all heads
    with torch.no_grad(), counting.flop_counter() as counter:
        layer(x, context, key_mask=key_mask)
    assert counter.get_total_flops() == projections + scores_and_values
    with torch.no_grad(), FlopCounterMode(display=False) as stock:
        layer(x, context, key_mask=key_mask)
    assert stock.get_total_flops() == projections  # the stock counter misses CPU attention: why the mapping exists


def test_macs_are_half_the_flops_and_throughput_is_batch_over_latency():
    p = profile.profile_model("lmf", "4,3,2", batch_size=3, repeats=1, warmup=0, memory=False, overrides=TINY["lmf"])
    assert p.macs == p.flops // 2 and p.flops > 0 and p.train_flops > p.flops
    assert p.forward_samples_per_s == pytest.approx(3 / (p.forward_ms / 1e3))
    assert p.train_samples_per_s == pytest.approx(3 / (p.train_step_ms / 1e3))
    assert p.params_total == p.params_inference and p.params_training_only == 0


@pytest.mark.parametrize("name", list_models())
def test_forward_never_runs_training_only_modules_and_the_split_adds_up(name):
    spec = SPECS["sentiment"]
    model = create_model(name, spec, **TINY[name]).eval()
    counts = counting.count_parameters(model)
    assert (
        counts["inference"] + counts["training_only"] == counts["total"] == sum(p.numel() for p in model.parameters())
    )
    aux = counting.training_only_modules(model)
    if name in ("dmd", "emt_dlfr", "tfr_net", "mmim"):  # distillers, decoders, heads only the training loss reads
        assert aux is not None and counts["training_only"] > 0
    calls = []
    for module in aux.modules() if aux is not None else []:
        module.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        model(make_batch(spec, 4))
    assert calls == []
    if aux is not None:  # ... while the training loss does use them
        model.train().loss(make_batch(spec, 4))
        assert calls


def test_shapes_and_precision_are_checked_with_clear_errors():
    assert shapes.parse_shape("mosei").lengths == {"text": 50, "audio": 500, "vision": 500}
    assert shapes.parse_shape("mosi").dims == {"text": 768, "audio": 5, "vision": 20}
    assert shapes.parse_shape("50,100,200").lengths == {"text": 50, "audio": 100, "vision": 200}
    for bad in ("mosx", "50,100", "0,1,2", "a,b,c"):
        with pytest.raises(ValueError, match="--shape must be one of"):
            shapes.parse_shape(bad)
    with pytest.raises(ValueError, match="'fp16' needs CUDA"):
        timing.autocast(torch.device("cpu"), "fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        timing.autocast(torch.device("cpu"), "int8")  # type: ignore[arg-type]


def test_iemocap_shape_builds_a_classification_model_with_its_recipe():
    runner = timing.build_runner("lmf", shapes.SHAPES["iemocap"], 2)
    assert runner.recipe.source and runner.batch.label.shape == (2, 4) and runner.batch.label.dtype == torch.long
    assert runner.model(runner.batch).prediction.shape == (2, 4, 2)


@pytest.mark.skipif(not memory.cpu_memory_supported(), reason="CPU peak memory needs Linux /proc")
def test_cpu_peak_memory_sees_weights_and_training_state():
    shape = shapes.Shape("tiny", {"text": 7, "audio": 5, "vision": 6}, {"text": 3, "audio": 1, "vision": 1}, "mosi")
    hidden = Modalities(text=256, audio=32, vision=32)  # about 5 M parameters: 20 MB of weights
    overrides = {"hidden": hidden, "text_out": 32, "post_fusion_dim": 128}
    peaks = memory.cpu_peak_memory("tfn", shape, 2, overrides=overrides)
    model = create_model("tfn", shape.spec(), **overrides)
    weights = 4 * sum(p.numel() for p in model.parameters())
    assert weights <= peaks["forward"] < 2 * weights + 30e6
    assert peaks["train"] >= 3 * weights  # weights, gradients and Adam's two moments


def test_cli_profile_json_and_errors(capsys):
    args = ["profile", "--model", "lmf", "--shape", "4,3,2", "--batch", "2", "--repeats", "1", "--no-memory", "--json"]
    assert main(args) == 0
    payload = json.loads(capsys.readouterr().out)
    (row,) = payload["profiles"]
    assert row["model"] == "lmf" and row["macs"] == row["flops"] // 2 and row["train_peak_mb"] is None
    assert main(["profile", "--model", "lmf", "--precision", "fp16", "--no-memory"]) == 1
    assert "needs CUDA" in capsys.readouterr().err
    assert main(["profile", "--no-memory"]) == 1
    assert "--all" in capsys.readouterr().err
    assert main(["profile", "--model", "nope"]) == 1
    assert "unknown model 'nope'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# Speed-ups: each must give what the straightforward version gives
# ---------------------------------------------------------------------------------------------------------------------


def attention_inputs(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 4, generator=g, dtype=dtype, requires_grad=True) for n in (5, 9, 9))
    mask = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    mask[1, ..., 6:] = False  # padded keys
    return q, k, v, mask


def test_chunked_dropout_attention_equals_sdpa_without_dropout_and_has_exact_gradients():
    q, k, v, mask = attention_inputs()
    causal = mask & torch.ones(5, 9, dtype=torch.bool).tril(4)
    for m in (mask, causal, None):
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
        torch.testing.assert_close(chunked_dropout_attention(q, k, v, m, 1e-12), expected)

    def seeded(q, k, v):  # the same dropout draw at every call, so finite differences see one function
        torch.manual_seed(3)
        return chunked_dropout_attention(q, k, v, mask, 0.3)

    assert torch.autograd.gradcheck(seeded, (q, k, v))


@pytest.mark.parametrize("kept", [True, False], ids=["probabilities-kept", "recomputed"])
@pytest.mark.parametrize("budget", [1 << 18, 2 * 3 * 5 * 9, 5 * 9, 1])
def test_chunked_dropout_attention_blocks_of_samples_or_heads_give_the_same_result(budget, kept, monkeypatch):
    """Blocks of several samples, of one sample, of a few heads or of one head, the probabilities kept for the
    backward pass or recomputed: same outputs and gradients, and with dropout, exact gradients."""
    monkeypatch.setattr("affectfuse.models.layers.CHUNK_ELEMENTS", budget)
    monkeypatch.setattr("affectfuse.models.layers.KEEP_SCORES", 1 << 21 if kept else 0)
    q, k, v, mask = attention_inputs()
    per_query = mask & torch.ones(5, 9, dtype=torch.bool).tril(4)  # (B, 1, Tq, Tk) bias
    for m in (mask, per_query, None):
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
        grads = torch.autograd.grad(expected.square().sum(), (q, k, v))
        out = chunked_dropout_attention(q, k, v, m, 1e-12)
        torch.testing.assert_close(out, expected)
        for ours, theirs in zip(torch.autograd.grad(out.square().sum(), (q, k, v)), grads, strict=True):
            torch.testing.assert_close(ours, theirs)

    def seeded(q, k, v):
        torch.manual_seed(3)
        return chunked_dropout_attention(q, k, v, per_query, 0.3)

    assert torch.autograd.gradcheck(seeded, (q, k, v))


def test_fast_dropout_keeps_at_the_rate_unbiased_with_the_masked_gradient():
    torch.manual_seed(0)
    drop = Dropout(0.3)
    x = torch.ones(200, 500, requires_grad=True)
    y = drop(x)
    kept = y != 0
    assert kept.float().mean().item() == pytest.approx(0.7, abs=0.01)
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)
    assert torch.equal(y[kept], torch.full_like(y[kept], 1 / 0.7))
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.7)
    assert drop.eval()(x) is x and Dropout(0.0).train()(x) is x
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.5)


def test_chunked_dropout_attention_drops_at_the_requested_rate_and_is_unbiased():
    torch.manual_seed(0)
    q, k, v = torch.zeros(1, 2, 64, 4), torch.zeros(1, 2, 300, 4), torch.ones(1, 2, 300, 4)
    out = chunked_dropout_attention(q, k, v, None, 0.25)  # uniform attention over ones: mean of kept / (1 - p)
    kept = out[..., 0] * 0.75  # fraction of the 300 keys kept, per query
    assert kept.mean().item() == pytest.approx(0.75, abs=0.01)
    assert out.mean().item() == pytest.approx(1.0, abs=0.01)


def test_attention_layer_uses_the_chunked_kernel_when_training_with_dropout_on_cpu(monkeypatch):
    layer = MultiHeadAttention(8, 2, dropout=0.5)
    x = torch.randn(2, 130, 8)  # 2 x 2 heads x 130 x 130 scores >= BLOCKED_MIN_SCORES
    assert use_chunked_dropout_attention(torch.zeros(1))
    calls = []
    real = chunked_dropout_attention

    def spy(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr("affectfuse.models.layers.chunked_dropout_attention", spy)
    layer.eval()(x)
    assert calls == []  # inference: the fused SDPA kernel, unchanged outputs
    y = layer.train()(x)
    assert calls == [1] and torch.isfinite(y).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 projections, the kernel itself in float32
        y = layer(x)
        y.sum().backward()
    assert calls == [1, 1] and y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    layer(torch.randn(1, 6, 8))  # 72 scores: SDPA's one C++ call is faster than the kernel's Python
    assert calls == [1, 1]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())
    assert not use_chunked_dropout_attention(torch.zeros(1, dtype=torch.float64))


@pytest.mark.parametrize("spec_name", ["sentiment", "no-text-traits", "emotions"])
def test_emt_dlfr_skipping_the_unread_last_local_update_changes_nothing(spec_name, monkeypatch):
    spec = SPECS[spec_name]
    torch.manual_seed(0)
    no_dropout = {"attn_dropout": 0.0, "ff_dropout": 0.0, "post_fusion_dropout": 0.0}
    model = create_model("emt_dlfr", spec, **TINY["emt_dlfr"], **no_dropout).train()
    batch = make_batch(spec, 5)

    def loss_and_grads():
        state = model.generator.get_state()
        model.zero_grad()
        losses = model.loss(batch)
        losses.total.backward()
        model.generator.set_state(state)
        return losses, [p.grad.clone() if p.grad is not None else None for p in model.parameters()]

    fast, fast_grads = loss_and_grads()
    encode = type(model).encode
    monkeypatch.setattr(type(model), "encode", lambda self, b, local_output=True: encode(self, b, local_output=True))
    full, full_grads = loss_and_grads()  # every local update, as the straightforward version
    torch.testing.assert_close(fast.total, full.total)
    for a, b in zip(fast_grads, full_grads, strict=True):
        assert (a is None) == (b is None) and (a is None or torch.allclose(a, b, atol=1e-6))
    monkeypatch.undo()
    model.eval()
    with torch.no_grad():
        everything = model.encode(batch)
        torch.testing.assert_close(model(batch).prediction, model.predict(everything))
    assert everything.H and not model.encode(batch, local_output=False).H


def test_length_bucketing_keeps_every_sample_once_and_cuts_padding():
    import numpy as np

    from affectfuse.data.corpus import BatchLoader, Split

    rng = np.random.default_rng(0)
    n, t = 203, 40
    lengths = rng.integers(1, t + 1, size=n)
    mask = np.arange(t)[None, :] < lengths[:, None]
    split = Split(
        ids=[f"u{i}" for i in range(n)],
        features={"audio": rng.normal(size=(n, t, 3)).astype(np.float32) * mask[..., None]},
        masks={"audio": mask},
        labels=rng.normal(size=(n, 1)).astype(np.float32),
    )

    def epoch(loader):
        batches = list(loader)
        return [i for b in batches for i in b.ids], sum(b.features["audio"].shape[:2].numel() for b in batches)

    plain_ids, plain_steps = epoch(BatchLoader(split, batch_size=8, shuffle=True, seed=1))
    bucketed = BatchLoader(split, batch_size=8, shuffle=True, seed=1, bucket=10)
    ids, steps = epoch(bucketed)
    assert sorted(ids) == sorted(plain_ids) == sorted(split.ids)  # each sample once per epoch
    assert steps < 0.75 * plain_steps  # padded steps computed per epoch: real ones are n * mean length either way
    assert ids != epoch(bucketed)[0]  # a new order every epoch
    assert epoch(BatchLoader(split, batch_size=8, shuffle=True, seed=1, bucket=10))[0] == ids  # seeded
    with pytest.raises(ValueError, match="bucket must be >= 0"):
        BatchLoader(split, batch_size=8, bucket=-1)
