"""LMF's central identity: low-rank fusion equals TFN's tensor fusion with the weight rebuilt from the factors."""

from __future__ import annotations

import torch

from affectfuse.config import TrainConfig
from affectfuse.config.registry import create_model
from affectfuse.models.lmf import LMF
from affectfuse.models.tfn import tensor_fusion

from ..conftest import SPECS, TINY, make_batch


def rebuilt_weight(model: LMF) -> torch.Tensor:
    """W = Σ_i λ_i (w_text^(i) ⊗ w_audio^(i) ⊗ w_vision^(i)), flattened to (∏ (d_m+1), d_y) in tensor_fusion's order."""
    f = [model.factors[m] for m in model.spec.modalities]  # each (r, d_m+1, d_y)
    weight = f[0]
    for factor in f[1:]:
        weight = torch.einsum("riy,rjy->rijy", weight, factor).flatten(1, 2)
    return torch.einsum("r,rny->ny", model.fusion_weights[0], weight)


def test_lmf_equals_tensor_fusion_with_rebuilt_weight():
    torch.manual_seed(0)
    for spec_name in ("sentiment", "no-text-traits"):
        model = create_model("lmf", SPECS[spec_name], **TINY["lmf"]).eval()
        batch = make_batch(SPECS[spec_name], 5)
        z = model.encoders(batch)
        fused = tensor_fusion([z[m] for m in model.spec.modalities])  # (B, ∏ (d_m+1))
        expected = fused @ rebuilt_weight(model) + model.fusion_bias
        torch.testing.assert_close(model(batch).prediction, expected.reshape(5, -1), rtol=1e-4, atol=1e-5)


def test_low_rank_has_far_fewer_fusion_parameters_than_the_full_tensor():
    model = create_model("lmf", SPECS["sentiment"], **TINY["lmf"])
    low_rank = sum(p.numel() for p in model.factors.parameters())
    full = rebuilt_weight(model).numel()
    dims = model.encoders.out_dims
    assert low_rank == TINY["lmf"]["rank"] * sum(d + 1 for d in dims.values())  # r Σ (d_m+1) d_y with d_y = 1
    assert full == (dims["text"] + 1) * (dims["audio"] + 1) * (dims["vision"] + 1)


def test_factors_get_their_own_learning_rate_selected_by_name():
    model = create_model("lmf", SPECS["sentiment"], **TINY["lmf"], factor_lr=3e-3)
    factor_group, rest = model.param_groups(TrainConfig(lr=5e-4))
    assert factor_group["lr"] == 3e-3 and rest["lr"] == 5e-4
    assert {id(p) for p in factor_group["params"]} == {id(p) for p in model.factors.parameters()}
    # MMSA's positional slice skipped these two; here they are trained with the rest.
    rest_ids = {id(p) for p in rest["params"]}
    assert id(model.fusion_weights) in rest_ids and id(model.fusion_bias) in rest_ids
