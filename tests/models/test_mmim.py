"""MMIM's properties: the entropy memory (H from the third batch of a pass), its guard, the two stages."""

from __future__ import annotations

import torch

from affectfuse.config.registry import create_model
from affectfuse.data.batch import Batch

from ..conftest import SPECS, TINY, make_batch


def build(**overrides):
    torch.manual_seed(0)
    return create_model("mmim", SPECS["sentiment"], **(TINY["mmim"] | overrides)).eval()


def signed(batch: Batch, signs: list[float]) -> Batch:
    label = torch.tensor(signs)[:, None] * (0.5 + torch.rand(len(signs), 1))
    return Batch(features=batch.features, masks=batch.masks, label=label, ids=batch.ids)


def test_entropy_uses_the_previous_batch_and_enters_the_loss_from_the_third():
    model = build(vision_out=4, audio_out=4)  # projections 1 wide: a few samples per class suffice
    batch = signed(make_batch(SPECS["sentiment"], 8), [1, -1] * 4)
    c = model.config
    with torch.no_grad():
        losses = [model.loss(batch) for _ in range(3)]
    assert losses[0].terms["entropy"] == 0 and losses[1].terms["entropy"] != 0
    for i, loss in enumerate(losses):
        t = loss.terms
        without_h = t["task"] + c.alpha * t["nce"] - c.beta * t["lld"]
        expected = without_h - (c.beta * t["entropy"] if i == 2 else 0)
        torch.testing.assert_close(loss.total, expected, rtol=1e-6, atol=1e-6)
    model.reset_memory()
    with torch.no_grad():
        assert model.loss(batch).terms["entropy"] == 0


def test_a_class_too_small_for_its_covariance_gives_no_entropy_instead_of_nan():
    model = build()  # projections 2 wide: one negative sample per batch (2 with memory) is not enough
    batch = signed(make_batch(SPECS["sentiment"], 6), [1, 1, 1, 1, 1, -1])
    with torch.no_grad():
        losses = [model.loss(batch) for _ in range(3)]
    assert all(torch.isfinite(x.total) for x in losses) and losses[2].terms["entropy"] == 0


def test_the_mmilb_stage_maximises_the_likelihood_of_its_estimators_only():
    model = build().train()
    mmilb, main = model.stages()
    losses = mmilb.loss(make_batch(SPECS["sentiment"], 5))
    torch.testing.assert_close(losses.total, -losses.terms["lld"])
    losses.total.backward()
    estimators = {n for n, _ in model.named_parameters() if mmilb.params(n)}
    assert estimators and all(n.startswith("aux.mmilb.") and not main.params(n) for n in estimators)
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith(("linear_", "aux.cpc")))


def test_a_sample_without_a_modality_keeps_the_loss_and_gradients_finite():
    """The missing-feature protocol can drop every step of a sample's text: its h_text is then 0, which the official
    CPC normalises to NaN (x / |x|) and so poisons the whole batch."""
    model = build().train()
    batch = make_batch(SPECS["sentiment"], 6)
    batch.features["text"][0] = 0.0
    losses = model.loss(batch)
    losses.total.backward()
    assert torch.isfinite(losses.total) and all(torch.isfinite(v) for v in losses.terms.values())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
