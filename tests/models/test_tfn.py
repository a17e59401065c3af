"""TFN: the appended 1 keeps unimodal and bimodal terms in the fused tensor; the output stays in the label range."""

from __future__ import annotations

import torch

from affectfuse.config.registry import create_model
from affectfuse.models.tfn import tensor_fusion

from ..conftest import SPECS, TINY, make_batch


def test_fused_tensor_holds_constant_unimodal_bimodal_and_trimodal_terms():
    zt, za, zv = torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 2)
    fused = tensor_fusion([zt, za, zv]).reshape(2, 4, 5, 3)  # (B, d_t+1, d_a+1, d_v+1)
    assert fused.shape[1:] == (4, 5, 3)  # ∏ (d_m + 1)
    torch.testing.assert_close(fused[:, 0, 0, 0], torch.ones(2))
    torch.testing.assert_close(fused[:, 1:, 0, 0], zt)  # unimodal text
    torch.testing.assert_close(fused[:, 0, 1:, 0], za)  # unimodal audio
    torch.testing.assert_close(fused[:, 0, 0, 1:], zv)  # unimodal vision
    torch.testing.assert_close(fused[:, 1:, 1:, 0], zt[:, :, None] * za[:, None, :])  # bimodal text-audio
    torch.testing.assert_close(fused[:, 1:, 1:, 1:], torch.einsum("bi,bj,bk->bijk", zt, za, zv))  # trimodal


def test_sentiment_output_bounded_to_label_range_and_traits_unbounded():
    torch.manual_seed(0)
    model = create_model("tfn", SPECS["sentiment"], **TINY["tfn"]).eval()
    with torch.no_grad():
        model.inference[-1].bias.fill_(100.0)  # saturate the sigmoid
    assert (model(make_batch(SPECS["sentiment"], 3)).prediction <= 3.0).all()
    traits = create_model("tfn", SPECS["no-text-traits"], **TINY["tfn"]).eval()
    with torch.no_grad():
        traits.inference[-1].bias.fill_(100.0)
    assert (traits(make_batch(SPECS["no-text-traits"], 3)).prediction > 50).all()


def test_tfn_without_text_fuses_the_two_modalities_it_has():
    model = create_model("tfn", SPECS["no-text-traits"], **TINY["tfn"])
    hidden = TINY["tfn"]["hidden"]
    assert "text" not in model.encoders.encoders
    assert model.inference[1].in_features == (hidden.audio + 1) * (hidden.vision + 1)
