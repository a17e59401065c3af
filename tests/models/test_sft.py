"""SFT's paper properties: sparse pooling keeps ⌊T/k⌋ tokens per modality (⌈T/k⌉ as an option), the joint blocks'
FLOPs fall with the fused length, padding never reaches a pooled token, and latent mixup (training only) mixes and
weights as specified; the options restoring the official windows, padding and initialisation."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from affectfuse.config import InputSpec, Modalities
from affectfuse.config.registry import create_model
from affectfuse.data.batch import Batch
from affectfuse.models.base import task_loss
from affectfuse.models.sft import RECIPES, SFT, Block, LatentMixup, SFTConfig, per_sample_task_loss, pool_tokens

from ..conftest import SPECS, TINY, make_batch

# MOSEI unaligned lengths (spec §0.1) with tiny feature dims.
MOSEI_LIKE = InputSpec(dims={"text": 6, "audio": 5, "vision": 4}, lengths={"text": 50, "audio": 500, "vision": 500})


def build(spec: InputSpec, **overrides) -> SFT:
    torch.manual_seed(0)
    return create_model("sft", spec, **{**TINY["sft"], **overrides}).eval()


def full_batch(spec: InputSpec, batch_size: int, *, seed: int = 0) -> Batch:
    """Every step real (mixing then needs no union of masks)."""
    batch = make_batch(spec, batch_size, seed=seed)
    g = torch.Generator().manual_seed(seed)
    for m, x in batch.features.items():
        batch.features[m] = torch.randn(x.shape, generator=g)
        batch.masks[m] = torch.ones(x.shape[:2], dtype=torch.bool)
    return batch


def tokens_per_modality(model: SFT, batch: Batch) -> dict[str, int]:
    counts = {}
    for m, block in model.sparse_pooling.items():
        block.register_forward_hook(lambda _, __, out, m=m: counts.__setitem__(m, out[1].shape[1]))
    model.fuse(batch)
    return counts


def test_sparse_pooling_keeps_floor_t_over_k_tokens_per_modality():
    model = build(MOSEI_LIKE, pool_kernel=SFTConfig().pool_kernel)  # run.sh's 50/64/64
    batch = make_batch(MOSEI_LIKE, 2)
    assert tokens_per_modality(model, batch) == {"text": 1, "audio": 7, "vision": 7}  # ⌊50/50⌋, ⌊500/64⌋ (official)
    fused, mask = model.fuse(batch)
    assert fused.shape == (2, 1 + 1 + 7 + 7, TINY["sft"]["dim"]) and mask.shape == (2, 16)
    ceil = build(MOSEI_LIKE, pool_kernel=SFTConfig().pool_kernel, pool_windows="ceil")
    assert tokens_per_modality(ceil, batch) == {"text": 1, "audio": 8, "vision": 8}  # ⌈500/64⌉: the last one partial

    spec = InputSpec(dims={"text": 6, "audio": 5, "vision": 4}, lengths={"text": 50, "audio": 375, "vision": 500})
    mosi = build(spec, pool_kernel=RECIPES["mosi"].model.pool_kernel)  # MOSI unaligned keeps the 1/7/7 budget
    assert tokens_per_modality(mosi, make_batch(spec, 2)) == {"text": 1, "audio": 7, "vision": 7}

    utterance = InputSpec(dims={"text": 6, "audio": 5, "vision": 4}, lengths={"text": 1, "audio": 1, "vision": 1})
    clamped = build(utterance, pool_kernel=RECIPES["mosi"].model.pool_kernel)  # T = 1: every kernel clamped to 1
    assert clamped.kernels == {"text": 1, "audio": 1, "vision": 1}
    assert clamped.fuse(make_batch(utterance, 3))[0].shape[1] == 4
    assert torch.isfinite(clamped(make_batch(utterance, 3)).prediction).all()


def test_fused_sequence_is_the_summed_cls_then_each_modalitys_pooled_tokens():
    model = build(SPECS["sentiment"])
    batch = make_batch(SPECS["sentiment"], 4)
    outputs = {}
    for m, block in model.sparse_pooling.items():
        block.register_forward_hook(lambda _, __, out, m=m: outputs.__setitem__(m, out))
    fused, mask = model.fuse(batch)
    torch.testing.assert_close(fused[:, 0], sum(outputs[m][0] for m in ("text", "audio", "vision")))
    torch.testing.assert_close(fused[:, 1:], torch.cat([outputs[m][1] for m in ("text", "audio", "vision")], 1))
    assert mask[:, 0].all()
    torch.testing.assert_close(mask[:, 1:], torch.cat([outputs[m][2] for m in ("text", "audio", "vision")], 1))


def test_joint_block_flops_fall_with_the_fused_length():
    """FlopCounterMode does not count the CPU attention kernel, so on CPU this compares the linear layers, whose cost
    is linear in the fused length; attention (quadratic) would only widen the gap."""
    batch = make_batch(MOSEI_LIKE, 1)

    def joint_flops(kernel: Modalities[int]) -> tuple[int, int]:
        model = build(MOSEI_LIKE, pool_kernel=kernel, n_layers_post_fusion=2)
        with torch.no_grad():
            h, mask = model.fuse(batch)
            with FlopCounterMode(display=False) as counter:
                for block in model.joint:
                    h = block(h, mask)
        return h.shape[1], counter.get_total_flops()

    dense_tokens, dense = joint_flops(Modalities(text=1, audio=1, vision=1))
    sparse_tokens, sparse = joint_flops(SFTConfig().pool_kernel)
    assert (dense_tokens, sparse_tokens) == (1 + 50 + 500 + 500, 16)
    d = TINY["sft"]["dim"]
    assert sparse >= 2 * 12 * sparse_tokens * d * d  # per block: q, k, v, out and the two d x d MLP layers
    assert dense / sparse >= dense_tokens / sparse_tokens > 58


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_masked_steps_never_affect_pooled_tokens(pool):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 10, 4, generator=g)
    mask = torch.rand(3, 10, generator=g) > 0.4
    mask[1, 3:6] = False  # a window (k = 3) with no real step
    mask[2] = False  # a missing modality
    pooled, window_mask = pool_tokens(x, mask, 3, pool)
    assert pooled.shape == (3, 4, 4) and window_mask.shape == (3, 4)  # ⌈10/3⌉ windows, the last one partial

    garbage = torch.where(mask[..., None], x, torch.full_like(x, 1e6))  # would win every max and skew every mean
    torch.testing.assert_close(pool_tokens(garbage, mask, 3, pool), (pooled, window_mask))
    for b in range(3):
        for n in range(4):
            real = x[b, 3 * n : 3 * n + 3][mask[b, 3 * n : 3 * n + 3]]
            assert window_mask[b, n] == (len(real) > 0)
            expected = torch.zeros(4) if not len(real) else real.amax(0) if pool == "max" else real.mean(0)
            torch.testing.assert_close(pooled[b, n], expected)


def test_front_and_end_padding_give_the_same_prediction():
    model = build(SPECS["sentiment"], pool="avg")
    batch = make_batch(SPECS["sentiment"], 4)
    front = copy.deepcopy(batch)  # the SDK pads at the front: real steps last, garbage before them
    for m, mask in batch.masks.items():
        t, d = batch.features[m].shape[1:]
        for i in range(4):
            n = int(mask[i].sum())
            front.features[m][i] = torch.cat([torch.randn(t - n, d) * 10, batch.features[m][i, :n]])
            front.masks[m][i] = torch.arange(t) >= t - n
    torch.testing.assert_close(model(front).prediction, model(batch).prediction, rtol=1e-5, atol=1e-5)


def test_a_missing_modality_gives_finite_predictions_that_ignore_its_features():
    model = build(SPECS["sentiment"])
    batch = make_batch(SPECS["sentiment"], 3)
    batch.masks["audio"][1] = False
    batch.features["audio"][1] = 0.0
    fused, mask = model.fuse(batch)
    audio = slice(1 + 3, 1 + 3 + 3)  # after [CLS] and the 3 text tokens (⌈6/2⌉), the 3 audio tokens (⌈9/3⌉)
    assert not mask[1, audio].any() and mask[0, audio].any()
    garbage = copy.deepcopy(batch)
    garbage.features["audio"][1] = torch.randn_like(garbage.features["audio"][1]) * 10
    prediction = model(batch).prediction
    assert torch.isfinite(prediction).all()
    torch.testing.assert_close(model(garbage).prediction, prediction, rtol=0, atol=1e-6)


def test_more_real_steps_than_the_position_table_is_a_clear_error():
    model = build(SPECS["sentiment"])
    batch = make_batch(SPECS["sentiment"], 2)
    longer = torch.randn(2, 12, 5)
    batch.features["audio"], batch.masks["audio"] = longer, torch.ones(2, 12, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"audio input has 12 real steps.*T_audio = 9 steps \(spec.lengths\)"):
        model(batch)


def test_block_has_a_d_wide_mlp_and_an_attention_norm_without_parameters():
    d = 40
    block = Block(d, 5, 0.0)
    attention = 4 * d * d + 4 * d  # q, k, v, out with biases; its LayerNorm has no scale or shift
    mlp = 2 * d + 2 * (d * d + d)  # LayerNorm, Linear(d, d), Linear(d, d)
    assert sum(p.numel() for p in block.parameters()) == attention + mlp
    assert not list(block.attention.norm.parameters())


# ---------------------------------------------------------------------------------------------------------------------
# Latent mixup
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec_name", ["sentiment", "emotions"])
def test_per_sample_task_loss_averages_to_the_task_loss(spec_name):
    spec = SPECS[spec_name]
    model = build(spec)
    batch = make_batch(spec, 5)
    prediction = model(batch).prediction
    per_sample = per_sample_task_loss(prediction, batch.label, spec)
    assert per_sample.shape == (5,)
    torch.testing.assert_close(per_sample.mean(), task_loss(prediction, batch.label, spec))


@pytest.mark.parametrize("layer", [0, 1, 2])  # after the unimodal block, after each of the two joint blocks
def test_mixing_weights_of_one_and_zero_give_each_sample_and_its_partner(layer):
    model = build(SPECS["sentiment"], n_layers_post_fusion=2)
    batch = full_batch(SPECS["sentiment"], 4)
    index = torch.tensor([2, 0, 3, 1])
    plain = model.head(model.encode(batch))
    ones = LatentMixup(layer=layer, lam=torch.ones(3, 4), index=index)
    zeros = LatentMixup(layer=layer, lam=torch.zeros(3, 4), index=index)
    torch.testing.assert_close(model.head(model.encode(batch, ones)), plain)
    torch.testing.assert_close(model.head(model.encode(batch, zeros)), plain[index])
    half = LatentMixup(layer=layer, lam=torch.full((3, 4), 0.5), index=index)
    assert not torch.allclose(model.head(model.encode(batch, half)), plain, atol=1e-4)


def test_pre_fusion_mixing_uses_each_modalitys_own_weight():
    model = build(SPECS["sentiment"])
    batch = full_batch(SPECS["sentiment"], 4)
    index = torch.tensor([1, 0, 3, 2])
    lam = torch.stack([torch.zeros(4), torch.ones(4), torch.ones(4)])  # text from the partner, audio/vision own
    swapped = copy.deepcopy(batch)
    swapped.features["text"] = batch.features["text"][index]
    torch.testing.assert_close(
        model.encode(batch, LatentMixup(layer=0, lam=lam, index=index)), model.encode(swapped), rtol=1e-5, atol=1e-5
    )
    # After fusion there is one sequence: officially mixed with the vision λ (1 here), with `mean` with the
    # modalities' mean λ (2/3 here).
    official = LatentMixup(layer=1, lam=lam.flip(0), index=index)  # vision's λ 0: every sample becomes its partner
    torch.testing.assert_close(model.encode(batch, official), model.encode(batch)[index], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.encode(batch, LatentMixup(layer=1, lam=lam, index=index)), model.encode(batch))
    mean = build(SPECS["sentiment"], mixup_fused_lambda="mean")
    torch.testing.assert_close(
        mean.encode(batch, LatentMixup(layer=1, lam=lam, index=index)),
        mean.encode(batch, LatentMixup(layer=1, lam=torch.full((3, 4), 2 / 3), index=index)),
    )


def test_mixing_ignores_what_padded_steps_hold():
    model = build(SPECS["sentiment"])
    batch = make_batch(SPECS["sentiment"], 4)
    plan = LatentMixup(layer=0, lam=torch.rand(3, 4), index=torch.tensor([1, 2, 3, 0]))
    garbage = copy.deepcopy(batch)
    for m, mask in garbage.masks.items():
        garbage.features[m][~mask] = torch.randn(int((~mask).sum()), garbage.features[m].shape[2]) * 10
    torch.testing.assert_close(model.encode(garbage, plan), model.encode(batch, plan), rtol=1e-5, atol=1e-5)


def test_mixup_loss_weights_both_labels_with_the_mean_lambda(monkeypatch):
    model = build(SPECS["sentiment"], mixup=True).train()
    batch = make_batch(SPECS["sentiment"], 4)
    lam = torch.rand(3, 4, generator=torch.Generator().manual_seed(1))
    plan = LatentMixup(layer=1, lam=lam, index=torch.tensor([3, 2, 1, 0]))
    monkeypatch.setattr(model, "sample_mixup", lambda _: plan)
    losses = model.loss(batch)
    prediction = model.head(model.encode(batch, plan))
    lam = lam.mean(0)
    expected = (
        lam * (prediction - batch.label).abs()[:, 0] + (1 - lam) * (prediction - batch.label[plan.index]).abs()[:, 0]
    ).mean()
    torch.testing.assert_close(losses.total, expected)
    torch.testing.assert_close(losses.prediction, prediction.detach())


def test_mixup_only_in_training_loss_never_in_forward():
    plain = build(SPECS["sentiment"])
    mixing = build(SPECS["sentiment"], mixup=True)
    batch = make_batch(SPECS["sentiment"], 4)
    torch.testing.assert_close(mixing(batch).prediction, plain(batch).prediction)
    torch.testing.assert_close(mixing.loss(batch).total, plain.loss(batch).total)  # eval mode: no mixing
    plain.train(), mixing.train()
    torch.testing.assert_close(mixing(batch).prediction, plain(batch).prediction)  # dropout 0: deterministic
    torch.manual_seed(3)
    mixed = mixing.loss(batch)
    assert not torch.allclose(mixed.total, plain.loss(batch).total)
    mixed.total.backward()
    assert all(torch.isfinite(p.grad).all() for p in mixing.parameters() if p.grad is not None)


def test_sampled_mixup_draws_beta_weights_every_block_and_a_permutation():
    model = build(SPECS["sentiment"], mixup=True, n_layers_post_fusion=2)
    batch = make_batch(SPECS["sentiment"], 6)
    torch.manual_seed(0)
    draws = [model.sample_mixup(batch) for _ in range(400)]
    assert {d.layer for d in draws} == {0, 1, 2}  # L_pre + L_post = 3 places to mix
    assert all(sorted(d.index.tolist()) == list(range(6)) for d in draws)
    lam = torch.cat([d.lam for d in draws], 1)
    assert lam.shape == (3, 2400) and ((lam >= 0) & (lam <= 1)).all()
    alpha = model.config.mixup_alpha  # Beta(α, α): mean 1/2, variance 1 / (4 (2α + 1)) = 0.156 for α = 0.3
    assert abs(lam.mean().item() - 0.5) < 0.02
    assert math.isclose(lam.var().item(), 1 / (4 * (2 * alpha + 1)), rel_tol=0.06)


# ---------------------------------------------------------------------------------------------------------------------
# Official options: windows, padding, initialisation
# ---------------------------------------------------------------------------------------------------------------------


def test_floor_windows_never_see_the_left_over_steps_and_ceil_windows_do():
    spec = InputSpec(dims={"text": 3, "audio": 3, "vision": 3}, lengths={"text": 5, "audio": 7, "vision": 9})
    g = torch.Generator().manual_seed(0)
    z = {m: torch.randn(2, 1 + t, 8, generator=g) for m, t in spec.lengths.items()}  # [CLS] + T_m steps
    changed = {m: x.clone() for m, x in z.items()}
    for x in changed.values():  # the last T mod k step (kernels 2, 3, 4 leave one each)
        x[:, -1] = torch.randn(x[:, -1].shape, generator=g) * 10
    for windows, counts in (("floor", {"text": 2, "audio": 2, "vision": 2}), ("ceil", {"text": 3, "audio": 3,
                                                                                       "vision": 3})):
        model = build(spec, pool_windows=windows)
        for m, block in model.sparse_pooling.items():
            mask = torch.ones(z[m].shape[:2], dtype=torch.bool)
            block.attention.forward = lambda x, _: x  # the pooling alone (the attention before it mixes every step)
            tokens, changed_tokens = block(z[m], mask)[1], block(changed[m], mask)[1]
            assert tokens.shape[1] == counts[m]
            if windows == "floor":
                torch.testing.assert_close(tokens, changed_tokens)
            else:
                torch.testing.assert_close(tokens[:, :-1], changed_tokens[:, :-1])
                assert not torch.allclose(tokens[:, -1], changed_tokens[:, -1])


def test_unmasked_padding_is_the_official_zero_token_whatever_the_batch_length():
    spec = SPECS["sentiment"]
    model = build(spec, mask_padding=False)
    batch = make_batch(spec, 3)  # end padding with zeros on padded steps
    shorter = copy.deepcopy(batch)  # the same samples collated to fewer steps: the missing ones are zeros too
    for m in ("audio", "vision"):
        keep = int(batch.masks[m][1:].sum(1).max())
        shorter.features[m] = batch.features[m][1:, :keep]
        shorter.masks[m] = batch.masks[m][1:, :keep]
    shorter.features["text"], shorter.masks["text"] = batch.features["text"][1:], batch.masks["text"][1:]
    shorter.label, shorter.ids = batch.label[1:], batch.ids[1:]
    torch.testing.assert_close(model(shorter).prediction, model(batch).prediction[1:], rtol=1e-5, atol=1e-5)
    masked = build(spec)
    assert not torch.allclose(masked(batch).prediction[1:], model(batch).prediction[1:], atol=1e-4)
    too_long = copy.deepcopy(batch)
    too_long.features["audio"] = torch.zeros(3, 12, 5)
    too_long.masks["audio"] = torch.zeros(3, 12, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"audio input has 12 steps.*T_audio = 9.*mask_padding=False"):
        model(too_long)


def test_official_init_is_the_official_attention_init():
    d = 40
    spec = InputSpec(dims={"text": 3, "audio": 3, "vision": 3}, lengths={"text": 4, "audio": 4, "vision": 4})
    model = build(spec, dim=d, heads=5, n_layers_post_fusion=2, pool_kernel=Modalities(text=2, audio=2, vision=2))
    pytorch = build(spec, dim=d, heads=5, n_layers_post_fusion=2, pool_kernel=Modalities(text=2, audio=2, vision=2),
                    init="pytorch")
    blocks = [*model.unimodal["text"], *model.joint]
    torch_mha = torch.nn.MultiheadAttention(d, 5)  # the official unimodal/joint attention
    packed = torch.cat([b.attention.attn.to_q.weight for b in blocks] + [b.attention.attn.to_kv.weight for b in blocks])
    assert packed.abs().max() <= math.sqrt(6 / (4 * d)) < packed.abs().max() * 1.05  # Xavier over (3d, d)
    assert packed.std().item() == pytest.approx(torch_mha.in_proj_weight.std().item(), rel=0.1)
    for b in blocks:
        attn = b.attention.attn
        assert not (attn.to_q.bias.any() or attn.to_kv.bias.any() or attn.out.bias.any())
    for pooling in model.sparse_pooling.values():  # fairseq: gain 1/√2 per (d, d), biases but out's as nn.Linear
        attn = pooling.attention.attn
        assert torch.cat([attn.to_q.weight, attn.to_kv.weight]).abs().max() <= math.sqrt(6 / (2 * d)) / math.sqrt(2)
        assert attn.out.weight.abs().max() > 1 / math.sqrt(d)  # Xavier (√(3/d)) reaches past nn.Linear's 1/√d
        assert attn.to_q.bias.any() and not attn.out.bias.any()
    assert all(b.attention.attn.to_q.bias.any() for b in pytorch.joint)
    with pytest.raises(ValueError, match=r"SFTConfig.init.*\[.official., .pytorch.\]"):
        build(spec, init="xavier")
