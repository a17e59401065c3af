"""MISA's properties: CMD, the soft orthogonality, gradient reversal, frozen BERT layers, token-id text, missing
modalities."""

from __future__ import annotations

import pytest
import torch

from affectfuse.config import BERT_TOKENS, InputSpec, TrainConfig
from affectfuse.config.registry import create_model
from affectfuse.models import misa
from affectfuse.models.misa import _ReverseGradient, cmd, difference_loss

from ..conftest import SPECS, TINY, make_batch


def build(spec: str | InputSpec = "sentiment", **overrides) -> misa.MISA:
    torch.manual_seed(0)
    spec = SPECS[spec] if isinstance(spec, str) else spec
    return create_model("misa", spec, **(TINY["misa"] | overrides))


def test_cmd_is_zero_for_equal_samples_and_the_mean_gap_for_a_shift():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 5, generator=g)
    assert cmd(x, x, 5).item() == 0.0
    shift = torch.tensor([0.5, -1.0, 0.0, 2.0, 0.3])
    # central moments do not see a translation: only the first term, |E x - E (x + c)| = |c|, remains
    assert cmd(x, x + shift, 5).item() == pytest.approx(shift.norm().item(), abs=1e-5)
    assert cmd(x, 2 * x, 5).item() > cmd(x, 2 * x, 1).item() > 0  # a scale shows in the higher moments
    y = x.clone().requires_grad_(True)
    cmd(y, x.clone(), 5).backward()
    assert torch.isfinite(y.grad).all()  # identical moments: a zero subgradient, not NaN


def test_difference_loss_is_the_mean_squared_correlation_of_centred_unit_rows():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(12, 4, generator=g), torch.randn(12, 3, generator=g)
    unit = [(x - x.mean(0)) / ((x - x.mean(0)).norm(dim=1, keepdim=True) + 1e-6) for x in (a, b)]
    expected = sum((unit[0][:, i] @ unit[1][:, j]) ** 2 for i in range(4) for j in range(3)) / 12
    assert difference_loss(a, b).item() == pytest.approx(expected.item(), rel=1e-5)
    assert difference_loss(a, a).item() > 2 * difference_loss(a, b).item() > 0  # alike subspaces cost more
    assert difference_loss(a, torch.ones(12, 3)).item() == 0.0  # a constant representation has nothing in common


def test_gradient_reversal_negates_and_scales_the_gradient():
    x = torch.randn(3, 4, requires_grad=True)
    _ReverseGradient.apply(x, 0.8).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((3, 4), -0.8))


def test_adversarial_similarity_trains_the_discriminator_and_reverses_into_the_shared_encoder():
    model = build(similarity="adversarial", diff_weight=0.0, recon_weight=0.0, dropout=0.0, fusion_dropout=0.0)
    batch = make_batch(SPECS["sentiment"], 6)
    losses = model.train().loss(batch)
    assert losses.terms["similarity"] > 0 and "discriminator" in model.aux
    # The similarity term alone: the shared encoder gets the reversed gradient of the discriminator's CE.
    weight = model.shared[0].weight
    s = model.encode(batch)
    logits = torch.cat([model.aux["discriminator"](s.invariant[m]) for m in model.modalities])
    domains = torch.arange(3).repeat_interleave(6)
    plain = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, domains), weight)[0]
    task = torch.nn.functional.mse_loss(model.encode(batch).prediction, batch.label)
    similarity = torch.autograd.grad(losses.total, weight)[0] - torch.autograd.grad(task, weight)[0]
    torch.testing.assert_close(similarity, -model.config.reverse_grad_weight * plain, rtol=1e-4, atol=1e-6)
    assert "discriminator" not in build().aux  # CMD (the default): no discriminator is built


def test_a_missing_modality_and_a_single_step_give_finite_predictions():
    model = build().eval()
    batch = make_batch(SPECS["sentiment"], 4)
    batch.masks["audio"][1] = False
    batch.features["audio"][1] = 0.0
    batch.masks["vision"][2, 1:] = False
    assert torch.isfinite(model(batch).prediction).all()
    assert torch.isfinite(model.train().loss(batch).total)


def test_token_text_is_the_masked_bert_mean_and_frozen_layers_are_not_optimised(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=16, max_position_embeddings=16)
    transformers.BertModel(config).save_pretrained(tmp_path)
    spec = InputSpec(dims={"text": 3, "audio": 5, "vision": 6}, lengths={"text": 6, "audio": 9, "vision": 8},
                     extractors={"text": BERT_TOKENS})
    model = build(spec, bert_path=str(tmp_path), n_frozen_bert_layers=1)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("text_encoder.bert.encoder.layer.0.") for n in frozen)
    optimised = {id(p) for g in model.param_groups(TrainConfig()) for p in g["params"]}
    assert not any(id(p) in optimised for n, p in model.named_parameters() if n in frozen)
    assert "text" not in model.encoders  # BERT replaces the text sLSTM
    batch = make_batch(InputSpec(dims={"text": 3, "audio": 5, "vision": 6}, lengths=spec.lengths), 3)
    ids = torch.randint(1, 30, (3, 6)).float()
    batch.features["text"] = torch.stack([ids, batch.masks["text"].float(), torch.zeros(3, 6)], -1)
    prediction = model.eval()(batch).prediction
    batch.features["text"][..., 0][~batch.masks["text"]] = 7.0  # other ids on padding: masked out of BERT and the mean
    torch.testing.assert_close(model(batch).prediction, prediction)
