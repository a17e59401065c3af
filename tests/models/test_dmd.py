"""DMD's paper properties: normalised edge weights and priors, the orthogonality hinge, distillation toward a detached
teacher, exact-label positives of the margin loss, and the objective assembled from its config weights."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from affectfuse.config import InputSpec, TrainConfig
from affectfuse.config.registry import create_model
from affectfuse.models.dmd import (
    RECIPES,
    GraphDistillation,
    Projection,
    batch_orthogonality_loss,
    flatten_steps,
    logit_distance,
    margin_loss,
    orthogonality_loss,
)

from ..conftest import SPECS, TINY, make_batch


def build(spec_name: str = "sentiment", **overrides):
    torch.manual_seed(0)
    return create_model("dmd", SPECS[spec_name], **(TINY["dmd"] | overrides))


def test_edge_softmax_sums_to_one_per_sample_over_the_six_edges():
    model = build().train()
    batch = make_batch(SPECS["sentiment"], 5)
    for name in ("homo_gd", "hetero_gd"):
        unit = model.aux[name]
        assert len(unit.edges) == 6 and len(set(unit.edges)) == 6
        logits = {m: torch.randn(5, 1) * 3 for m in model.modalities}
        width = unit.W_repr.in_features
        weights = unit.edge_weights(logits, {m: torch.randn(5, width) for m in model.modalities})
        assert weights.shape == (5, 6)
        torch.testing.assert_close(weights.sum(-1), torch.ones(5))
        assert not torch.allclose(weights[0], weights[1])  # per sample, not one set of weights for the batch
    assert model.loss(batch).terms["homo_reg"] >= 0


def test_priors_have_the_official_values_on_the_official_edges():
    model = build()
    homo, hetero = model.aux["homo_gd"], model.aux["hetero_gd"]
    homo_prior = dict(zip(homo.edges, homo.prior.tolist(), strict=True))
    hetero_prior = dict(zip(hetero.edges, hetero.prior.tolist(), strict=True))
    for (teacher, student), p in homo_prior.items():
        expected = 0.482 if teacher == "text" and student in ("vision", "audio") else 0.0088
        assert p == pytest.approx(expected, abs=5e-4)
    strong = {("text", "vision"), ("text", "audio"), ("vision", "audio")}
    for edge, p in hetero_prior.items():
        assert p == pytest.approx(0.327 if edge in strong else 0.006, abs=5e-4)
    assert sum(homo_prior.values()) == pytest.approx(1.0) and sum(hetero_prior.values()) == pytest.approx(1.0)


def test_two_modality_corpus_distils_along_the_two_edges_between_them():
    model = build("no-text-traits")
    homo, hetero = model.aux["homo_gd"], model.aux["hetero_gd"]
    assert sorted(homo.edges) == [("audio", "vision"), ("vision", "audio")]
    torch.testing.assert_close(homo.prior, torch.tensor([0.5, 0.5]))  # text->* edges are absent: uniform
    hetero_prior = dict(zip(hetero.edges, hetero.prior.tolist(), strict=True))
    assert hetero_prior[("vision", "audio")] == pytest.approx(torch.softmax(torch.tensor([4.0, 0.0]), 0)[0].item())


def test_one_modality_and_malformed_prior_edges_are_clear_errors():
    spec = InputSpec(dims={"audio": 5}, lengths={"audio": 4})
    with pytest.raises(ValueError, match="at least two"):
        create_model("dmd", spec, **TINY["dmd"])
    with pytest.raises(ValueError, match="homo_prior: 'text-vision' is not 'teacher->student'"):
        build(homo_prior=("text-vision",))


def test_orthogonality_is_zero_for_orthogonal_and_positive_for_aligned_features():
    s = torch.zeros(2, 3, 4)
    s[:, :, 0] = 1.0
    c = torch.zeros(2, 3, 4)
    c[:, :, 1] = 1.0
    assert orthogonality_loss(s, c).item() == 0.0
    assert orthogonality_loss(s, 2 * s).item() == pytest.approx(1.0)
    assert orthogonality_loss(s, -s).item() == 0.0  # hinged at 0: opposite features cost nothing
    # Per sample, over the flattened (T·d) features: one aligned sample and one orthogonal one average to 1/2.
    mixed = torch.stack([2 * s[0], c[1]])
    assert orthogonality_loss(s, mixed).item() == pytest.approx(0.5)


def test_official_batch_orthogonality_ignores_padded_steps_but_mixes_the_samples_of_a_batch():
    g = torch.Generator().manual_seed(0)
    s, c = torch.randn(3, 4, 5, generator=g), torch.randn(3, 4, 5, generator=g)
    mask = torch.ones(3, 4, dtype=torch.bool)
    value = batch_orthogonality_loss(s, c, mask)
    padded = batch_orthogonality_loss(F.pad(s, (0, 0, 0, 2)), F.pad(c, (0, 0, 0, 2)), F.pad(mask, (0, 2)))
    assert padded.item() == pytest.approx(value.item(), abs=1e-7)
    # one cosine per (step, channel) across the batch: the first two samples' value changes with the third
    assert batch_orthogonality_loss(s[:2], c[:2], mask[:2]).item() != pytest.approx(value.item(), abs=1e-3)
    assert batch_orthogonality_loss(s, s, mask).item() == pytest.approx(1.0)
    assert batch_orthogonality_loss(s, -s, mask).item() == 0.0


def test_logit_distillation_pulls_the_student_and_gives_the_teacher_no_gradient():
    student = torch.tensor([[2.0], [-1.0]], requires_grad=True)
    teacher = torch.tensor([[0.5], [0.0]], requires_grad=True)
    logit_distance(student, teacher).sum().backward()
    assert teacher.grad is None
    with torch.no_grad():
        stepped = student - 0.1 * student.grad
    assert ((stepped - teacher).abs() < (student - teacher).abs()).all()


def test_distillation_unit_detaches_each_edge_teacher():
    """With constant edge weights (vertex embeddings zeroed), a modality's logit gets gradient only as a student:
    d/d l_a = w_{v→a} sign(l_a - l_v) / B. Without the detach the teacher role would add w_{a→v} sign(l_a - l_v)."""
    unit = GraphDistillation(
        ("audio", "vision"),
        logit_dim=1,
        repr_dim=3,
        size=2,
        prior_edges={("vision", "audio")},
        temperature=0.25,
        alpha=0.125,
        representation="l1",
    )
    nn.init.zeros_(unit.W_logit.weight)
    nn.init.zeros_(unit.W_repr.weight)
    logits = {"audio": torch.tensor([[1.0], [2.0]], requires_grad=True), "vision": torch.tensor([[0.0], [3.0]])}
    reprs = {m: torch.zeros(2, 3) for m in logits}
    unit(logits, reprs).logit.backward()
    w = 0.5 + unit.prior[unit.edges.index(("vision", "audio"))]  # uniform softmax + prior
    expected = w * torch.sign(logits["audio"].detach() - logits["vision"]) / 2
    torch.testing.assert_close(logits["audio"].grad, expected)


def test_hetero_representation_term_repels_by_default_and_attracts_on_request():
    def step(representation: str) -> tuple[float, float]:
        unit = GraphDistillation(
            ("audio", "vision"),
            logit_dim=1,
            repr_dim=4,
            size=2,
            prior_edges=set(),
            temperature=0.25,
            alpha=0.125,
            representation=representation,
        )
        torch.manual_seed(1)
        student = (torch.randn(3, 4) + 2).requires_grad_()
        teacher = torch.randn(3, 4) + 2
        term = unit({"audio": torch.zeros(3, 1), "vision": torch.zeros(3, 1)}, {"audio": student, "vision": teacher})
        term.representation.backward()
        moved = student.detach() - 0.05 * student.grad
        before = nn.functional.cosine_similarity(student.detach(), teacher).mean().item()
        after = nn.functional.cosine_similarity(moved, teacher).mean().item()
        return before, after

    before, after = step("min_cosine")
    assert after < before  # the official term pushes the student away from the teacher
    before, after = step("l1")
    assert after > before
    model = build(hetero_repr="attract")
    assert model.aux["hetero_gd"].representation == "l1" and build().aux["hetero_gd"].representation == "min_cosine"


def reference_margin(features, labels, scale):
    """A direct reading of the official HingeLoss: loops over anchors, positives and negatives."""
    n = len(features)
    cos = nn.functional.cosine_similarity(features[:, None], features[None, :], dim=-1)
    losses = []
    for a in range(n):
        positives = [p for p in range(n) if p != a and labels[p] == labels[a]]
        negatives = [k for k in range(n) if labels[k] != labels[a]]
        if not positives or not negatives:
            continue
        hinges = [
            max(0.0, scale * abs(labels[a] - labels[k]) - cos[a, p].item() + cos[a, k].item())
            for p, k in itertools.product(positives, negatives)
        ]
        losses.append(sum(hinges) / len(hinges))
    return sum(losses) / max(len(losses), 1)


def test_margin_loss_matches_a_direct_reading_of_the_official_rule():
    torch.manual_seed(0)
    features = torch.randn(9, 5)
    labels = [0.4, 0.4, 0.4, -1.2, -1.2, -1.2, 2.0, 2.0, 0.4]  # three samples x three modalities, plus one tie
    got = margin_loss(features, torch.tensor(labels)[:, None], scale=0.15, categorical=False)
    assert got.item() == pytest.approx(reference_margin(features, labels, 0.15), rel=1e-5)


def test_margin_positives_need_exactly_equal_labels():
    features = torch.ones(3, 4)  # every cosine is 1: the hinge is the margin itself wherever a negative exists
    equal = torch.tensor([[1.0], [1.0], [1.0]])
    assert margin_loss(features, equal, scale=0.15, categorical=False).item() == 0.0  # no negatives at all
    nearly = torch.tensor([[1.0], [1.0], [1.001]])  # 1.001 is a negative, not a positive
    got = margin_loss(features, nearly, scale=0.15, categorical=False).item()
    # anchors 0 and 1 each have one positive and one negative at gap 0.001; anchor 2 has no positive
    assert got == pytest.approx(0.15 * 0.001, rel=1e-3)
    classes = torch.tensor([[1], [1], [0]])
    assert margin_loss(features, classes, scale=0.15, categorical=True).item() == pytest.approx(0.15)


def test_projection_keeps_valid_windows_inside_the_real_steps():
    torch.manual_seed(0)
    conv = Projection(3, 4, kernel=3)
    x = torch.randn(3, 6, 3)
    mask = torch.arange(6)[None] < torch.tensor([6, 4, 2])[:, None]
    y, out_mask = conv(x * mask[..., None], mask)
    assert y.shape == (3, 4, 4)
    assert out_mask.sum(1).tolist() == [4, 2, 1]  # max(L - k + 1, 1)
    assert (y[~out_mask] == 0).all()
    # Sample 1 (L = 4): the official convolution of that sample alone, padded to exactly its length.
    alone = conv.conv(x[1:2, :4].transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(y[1:2, :2], alone)


def test_flatten_pads_to_the_corpus_length_and_refuses_longer_data():
    x, mask = torch.ones(2, 3, 4), torch.ones(2, 3, dtype=torch.bool)
    assert flatten_steps(x, mask, 5).shape == (2, 20)
    assert flatten_steps(x, mask, 5)[:, 12:].abs().sum() == 0
    with pytest.raises(ValueError, match="more than 2 real steps"):
        flatten_steps(x, mask, 2)


def test_total_is_the_weighted_sum_of_the_named_terms():
    weights = {"lambda1": 0.3, "lambda2": 0.2, "gamma": 0.5, "gd_logit_weight": 2.0, "gd_repr_weight": 3.0}
    weights |= {"gd_reg_weight": 4.0, "homo_repr_in_total": True}
    model = build(**weights).eval()  # eval: no dropout, so the terms are deterministic
    losses = model.loss(make_batch(SPECS["sentiment"], 6))
    t, w = losses.terms, weights
    homo = w["gd_logit_weight"] * t["homo_logit"] + w["gd_repr_weight"] * t["homo_repr"]
    homo = homo + w["gd_reg_weight"] * t["homo_reg"]
    hetero = w["gd_logit_weight"] * t["hetero_logit"] + w["gd_repr_weight"] * t["hetero_repr"]
    hetero = hetero + w["gd_reg_weight"] * t["hetero_reg"]
    decoupling = t["reconstruction"] + t["cycle"] + w["gamma"] * (t["margin"] + t["orthogonality"])
    expected = t["task"] + w["lambda2"] * (homo + hetero) + w["lambda1"] * decoupling
    torch.testing.assert_close(losses.total.detach(), expected)


def test_homo_representation_term_is_logged_but_left_out_by_default():
    batch = make_batch(SPECS["sentiment"], 6)
    official = build().eval().loss(batch)
    with_repr = build(homo_repr_in_total=True).eval().loss(batch)
    assert official.terms["homo_repr"] > 0
    difference = (with_repr.total - official.total).item()
    assert difference == pytest.approx(0.05 * 10.0 * official.terms["homo_repr"].item(), rel=1e-4)


def test_task_loss_sums_eight_terms():
    model = build().eval()
    batch = make_batch(SPECS["sentiment"], 6)
    with torch.no_grad():
        nn.init.zeros_(model.out.weight)
        nn.init.zeros_(model.out.bias)
        for m in model.modalities:
            for head in (model.aux["homo_head"][m].out, model.aux["hetero_out"][m]):
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)
        nn.init.zeros_(model.aux["common_head"][1].weight)
        nn.init.zeros_(model.aux["common_head"][1].bias)
    # Every one of the 8 predictions is 0, so each L1 term is mean |y|.
    assert model.loss(batch).terms["task"].item() == pytest.approx(8 * batch.label.abs().mean().item(), rel=1e-5)


def test_mosi_recipe_runs_on_utterance_level_features_with_kernels_clamped():
    spec = InputSpec(dims={"text": 100, "audio": 73, "vision": 100}, lengths={"text": 1, "audio": 1, "vision": 1})
    config = dataclasses.replace(RECIPES["mosi"].model, dim=10, heads=2, layers=1)
    torch.manual_seed(0)
    model = create_model("dmd", spec, config)
    assert all(p.conv.kernel_size == (1,) for p in model.project.values()) and set(model.steps.values()) == {1}
    losses = model.loss(make_batch(spec, 4))
    assert torch.isfinite(losses.total)
    losses.total.backward()


def test_missing_modality_gives_finite_predictions_and_losses():
    model = build().train()
    batch = make_batch(SPECS["sentiment"], 5)
    batch.masks["audio"][1] = False
    batch.features["audio"][1] = 0.0
    losses = model.loss(batch)
    assert torch.isfinite(losses.total) and all(torch.isfinite(v) for v in losses.terms.values())
    assert torch.isfinite(model.eval()(batch).prediction).all()


def test_text_encoder_parameters_get_the_bert_learning_rate():
    model = build(bert_lr=2e-5)
    assert len(model.param_groups(TrainConfig(lr=1e-4))) == 1  # precomputed text: the encoder has no parameters
    model.text_encoder = nn.Linear(7, 7)  # a stand-in for BERT
    rest, text = model.param_groups(TrainConfig(lr=1e-4))
    assert rest["lr"] == 1e-4 and text["lr"] == 2e-5
    assert {id(p) for p in text["params"]} == {id(p) for p in model.text_encoder.parameters()}
