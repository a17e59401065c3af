"""EMT-DLFR's properties: masked reconstruction, symmetric stop-gradient attraction, linear global-local attention,
coinciding views at rate 0, mutual promotion from the pre-update locals, token-id text, sharing, parameter groups."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from affectfuse.config import InputSpec, TrainConfig
from affectfuse.config.registry import create_model
from affectfuse.models import emt_dlfr
from affectfuse.models.emt_dlfr import EMT, EMTDLFRConfig, attraction_loss, reconstruction_loss
from affectfuse.robustness.missing import drop_features

from ..conftest import SPECS, TINY, make_batch


def build(spec: str | InputSpec = "sentiment", **overrides) -> emt_dlfr.EMTDLFR:
    torch.manual_seed(0)
    spec = SPECS[spec] if isinstance(spec, str) else spec
    return create_model("emt_dlfr", spec, **(TINY["emt_dlfr"] | overrides))


def test_reconstruction_loss_ignores_kept_positions_and_padding():
    spec = SPECS["sentiment"]
    batch = make_batch(spec, 6)
    _, kept = drop_features(batch, 0.5, generator=torch.Generator().manual_seed(0), spec=spec)
    mask = batch.masks["audio"]
    dropped = mask & ~kept["audio"]
    assert dropped.any() and (mask & kept["audio"]).any()
    target = batch.features["audio"]
    reconstruction = torch.randn_like(target)
    loss = reconstruction_loss(reconstruction, target, dropped)
    elsewhere = reconstruction.masked_fill(~dropped.unsqueeze(-1), 1e3)  # kept and padded positions changed
    torch.testing.assert_close(reconstruction_loss(elsewhere, target, dropped), loss, rtol=0, atol=0)
    at_dropped = reconstruction.masked_fill(dropped.unsqueeze(-1), 1e3)
    assert reconstruction_loss(at_dropped, target, dropped) > loss + 1.0
    # Normalised by the number of dropped elements: the mean SmoothL1 over them.
    expected = nn.functional.smooth_l1_loss(reconstruction[dropped], target[dropped])
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_attraction_is_symmetric_with_no_gradient_through_the_target():
    g = torch.Generator().manual_seed(0)
    p_m, z_m, p, z = (torch.randn(5, 8, generator=g, requires_grad=True) for _ in range(4))
    loss = attraction_loss(p_m, z_m, p, z)
    torch.testing.assert_close(loss, attraction_loss(p, z, p_m, z_m))  # swapping the views
    loss.backward()
    assert z_m.grad is None and z.grad is None
    assert p_m.grad.abs().sum() > 0 and p.grad.abs().sum() > 0
    assert attraction_loss(z, z, z, z).item() == pytest.approx(-1.0)  # its minimum: p parallel to z


def test_at_rate_zero_the_two_views_coincide():
    model = build(missing_rate=0.0).eval()
    batch = make_batch(SPECS["sentiment"], 6)
    losses = model.loss(batch)
    torch.testing.assert_close(losses.terms["task_incomplete"], losses.terms["task_complete"])
    assert losses.terms["reconstruction"] == 0
    # With identical views, z̃_x = z_x; with identity predictors every ℓ_x reaches its minimum -1.
    for x in model.aux["predictor"]:
        model.aux["predictor"][x] = nn.Identity()
    terms = model.loss(batch).terms
    assert terms["attraction"].item() == pytest.approx(-len(model.aux["projector"]), abs=1e-5)  # g, l, a, v: -4


def test_loss_is_the_papers_weighted_sum():
    model = build(attraction_weight=0.3, reconstruction_weight=0.7).eval()
    losses = model.loss(make_batch(SPECS["sentiment"], 6))
    t = losses.terms
    expected = t["task_incomplete"] + 0.3 * (t["attraction"] + t["task_complete"]) + 0.7 * t["reconstruction"]
    torch.testing.assert_close(losses.total.detach(), expected)
    assert t["reconstruction"] > 0 and t["task_incomplete"] != t["task_complete"]


def count_flops(module: nn.Module, *args) -> dict[str, int]:
    """Per-module FLOPs; CPU attention is counted too (FlopCounterMode only knows the GPU attention kernels)."""

    def cpu_sdpa(query, key, value, *_, **__):
        return sdpa_flop_count(query, key, value)

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        module(*args)
    return {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}


def test_global_local_attention_cost_is_linear_in_sequence_length():
    config = EMTDLFRConfig(d_model=16, heads=2, layers=2)
    fusion = EMT(config, 3).eval()

    def flops(t: int) -> tuple[int, int]:
        G = torch.randn(2, 3, 16)
        H = [torch.randn(2, t, 16) for _ in range(3)]
        counts = count_flops(fusion, G, H, [torch.ones(2, t, dtype=torch.bool)] * 3)
        return counts["EMT.blocks.0.cross_attn"], counts["EMT"]

    (cross_t, all_t), (cross_2t, all_2t), (cross_3t, all_3t) = flops(32), flops(64), flops(96)
    assert cross_2t - cross_t == cross_3t - cross_2t > 0  # global <-> local: affine in T (O(T·M))
    assert all_3t - all_2t > all_2t - all_t  # the local self-attention inside each CST is what is quadratic


def test_global_context_is_promoted_from_the_pre_update_locals():
    config = EMTDLFRConfig(d_model=8, heads=2, layers=1)
    fusion = EMT(config, 3).eval()
    torch.manual_seed(1)
    G = torch.randn(2, 3, 8)
    H = [torch.randn(2, t, 8) for t in (4, 5, 6)]
    masks = [torch.arange(x.shape[1]) < torch.tensor([[x.shape[1]], [2]]) for x in H]
    G1, H1 = fusion(G, list(H), masks)
    cst = fusion.block(0, 0, 0)
    contexts = torch.stack([cst(G, x, mask=None, context_mask=k) for x, k in zip(H, masks, strict=True)], dim=1)
    torch.testing.assert_close(G1, fusion.pools[0](contexts))
    torch.testing.assert_close(H1[1], cst(H[1], G, mask=masks[1], context_mask=None))


def test_sharing_flags_select_how_many_blocks_exist():
    assert len(build().fusion.blocks) == 1 and len(build().fusion.pools) == 1  # official: everything shared
    model = build(mpu_share=False, modality_share=False, layer_share=False)
    layers = TINY["emt_dlfr"]["layers"]
    assert len(model.fusion.blocks) == layers * 3 * 2 and len(model.fusion.pools) == layers
    blocks = {id(model.fusion.block(i, m, d)) for i in range(layers) for m in range(3) for d in range(2)}
    assert len(blocks) == layers * 3 * 2
    assert torch.isfinite(model.loss(make_batch(SPECS["sentiment"], 5)).total)


def test_two_modality_corpus_has_two_global_slots_and_missing_modalities_stay_finite():
    model = build("no-text-traits").eval()
    batch = make_batch(SPECS["no-text-traits"], 4)
    state = model.encode(batch)
    assert state.G.shape == (4, 2, TINY["emt_dlfr"]["d_model"]) and set(state.h) == {"audio", "vision"}
    batch.masks["audio"][1] = False  # sample 1 has no audio at all
    batch.features["audio"][1] = 0.0
    assert torch.isfinite(model(batch).prediction).all()
    model.train()
    assert torch.isfinite(model.loss(make_batch(SPECS["no-text-traits"], 4)).total)


def test_utterance_level_corpus_with_one_step_per_modality():
    spec = InputSpec(dims={"text": 5, "audio": 4, "vision": 3}, lengths={"text": 1, "audio": 1, "vision": 1})
    model = build(spec).train()
    losses = model.loss(make_batch(spec, 6))
    losses.total.backward()
    assert torch.isfinite(losses.total) and model(make_batch(spec, 6)).prediction.shape == (6, 1)


class FakeBert(nn.Module):
    """Stands in for BERT on (id, attention, segment) steps: an embedding of the id, a Linear and a LayerNorm."""

    def __init__(self, spec: InputSpec, *, bert_path: str = "") -> None:
        super().__init__()
        self.out_dim = 6
        self.embed = nn.Embedding(3000, 6)
        self.linear = nn.Linear(6, 6)
        self.LayerNorm = nn.LayerNorm(6)  # BERT's name, which selects no weight decay

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.linear(self.embed(x[..., 0].long())))


TOKEN_SPEC = dataclasses.replace(
    SPECS["sentiment"], dims=SPECS["sentiment"].dims | {"text": 3}, extractors={"text": "bert-tokens"}
)


def token_batch(batch_size: int = 5):
    batch = make_batch(TOKEN_SPEC, batch_size)
    mask = batch.masks["text"]
    lengths = mask.sum(1).clamp_min(2)
    mask = torch.arange(mask.shape[1])[None] < lengths[:, None]
    ids = torch.randint(1000, 2000, mask.shape).float()
    ids[:, 0], ids[torch.arange(batch_size), lengths - 1] = 101, 102
    batch.features["text"] = torch.stack([ids, torch.ones_like(ids), torch.zeros_like(ids)], -1) * mask[..., None]
    batch.masks["text"] = mask
    return batch


def test_token_text_uses_cls_as_utterance_and_the_words_between_cls_and_sep_as_locals(monkeypatch):
    monkeypatch.setattr(emt_dlfr, "TextEncoder", FakeBert)
    model = build(TOKEN_SPEC, missing_rate=1.0).eval()
    batch = token_batch()
    state = model.encode(batch)
    x = model.text_encoder(batch.features["text"], batch.masks["text"])
    torch.testing.assert_close(state.h["text"], x[:, 0])
    real = batch.masks["text"][:, 1:, None]  # end-padded already, so front alignment moves nothing
    torch.testing.assert_close(state.text_local * real, x[:, 1:] * real)
    assert torch.equal(state.masks["text"].sum(1), batch.masks["text"].sum(1) - 2)
    incomplete, _ = drop_features(batch, 1.0, generator=torch.Generator(), spec=TOKEN_SPEC)
    torch.testing.assert_close(model.encode(incomplete).h["text"], state.h["text"])  # [CLS] is never dropped
    losses = model.loss(batch)
    assert losses.terms["reconstruction"] > 0 and torch.isfinite(losses.total)


def test_param_groups_give_encoders_their_own_rates_and_no_decay_on_bert_norms_and_biases(monkeypatch):
    monkeypatch.setattr(emt_dlfr, "TextEncoder", FakeBert)
    model = build(TOKEN_SPEC)
    groups = model.param_groups(TrainConfig(lr=7e-4, weight_decay=3e-3))
    c = model.config
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [
        (c.encoder_lr.text, c.encoder_weight_decay.text),
        (c.encoder_lr.text, 0.0),
        (c.encoder_lr.audio, c.encoder_weight_decay.audio),
        (c.encoder_lr.vision, c.encoder_weight_decay.vision),
        (7e-4, 3e-3),
    ]
    bert = model.text_encoder
    no_decay = [bert.linear.bias, bert.LayerNorm.weight, bert.LayerNorm.bias]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in no_decay}
    assert {id(p) for p in groups[0]["params"]} == {id(bert.embed.weight), id(bert.linear.weight)}
    assert {id(p) for p in groups[2]["params"]} == {id(p) for p in model.encoders["audio"].parameters()}


def test_precomputed_text_has_no_text_groups():
    groups = build().param_groups(TrainConfig())  # audio, vision, other: the identity text encoder has no parameters
    assert [g["lr"] for g in groups] == [EMTDLFRConfig().encoder_lr.audio, EMTDLFRConfig().encoder_lr.vision, 1e-3]
