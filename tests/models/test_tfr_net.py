"""TFR-Net's properties: the complete input is only a target, fresh incomplete views, the padding option."""

from __future__ import annotations

import copy

import torch

from affectfuse.config.registry import create_model
from affectfuse.robustness.missing import drop_features

from ..conftest import SPECS, TINY, make_batch


def build(**overrides):
    torch.manual_seed(0)
    return create_model("tfr_net", SPECS["sentiment"], **(TINY["tfr_net"] | overrides)).eval()


def test_complete_features_at_dropped_positions_are_only_reconstruction_targets():
    model = build()
    spec = model.spec
    batch = make_batch(spec, 6)
    _, kept = drop_features(batch, 0.5, generator=torch.Generator().manual_seed(1), spec=spec)
    dropped = batch.masks["audio"] & ~kept["audio"]
    assert dropped.any()
    changed = copy.deepcopy(batch)
    changed.features["audio"] = changed.features["audio"].masked_fill(dropped.unsqueeze(-1), 5.0)
    with torch.no_grad():
        a, b = model.loss_given_missing(batch, kept), model.loss_given_missing(changed, kept)
    torch.testing.assert_close(a.prediction, b.prediction, rtol=0, atol=0)  # the network never sees them
    assert a.terms["reconstruction_text"] == b.terms["reconstruction_text"]
    assert abs(a.terms["reconstruction_audio"] - b.terms["reconstruction_audio"]) > 1e-3


def test_loss_draws_a_fresh_incomplete_view_per_call_from_its_seed():
    batch = make_batch(SPECS["sentiment"], 6)
    with torch.no_grad():
        first, second = build(), build()
        one, two = first.loss(batch).total, first.loss(batch).total
        assert one != two
        assert second.loss(batch).total == one


def test_official_padding_option_attends_over_padded_steps():
    batch = make_batch(SPECS["sentiment"], 4)
    garbage = copy.deepcopy(batch)
    for m, x in garbage.features.items():  # new values on the padded steps only
        garbage.features[m] = torch.where(garbage.masks[m].unsqueeze(-1), x, torch.randn_like(x) * 10)
    with torch.no_grad():
        ours, official = build(), build(mask_padding=False)
        torch.testing.assert_close(ours(garbage).prediction, ours(batch).prediction, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(official(garbage).prediction, official(batch).prediction, atol=1e-4)
