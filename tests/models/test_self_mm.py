"""Self-MM's unimodal label generation: keyed by sample id, first-visit labels, the update of eqs. 4-11 on a case
worked by hand, zero-labelled samples outside the centres, training-only updates, classification, the state dict."""

from __future__ import annotations

import pytest
import torch

from affectfuse.config.registry import create_model
from affectfuse.data.batch import Batch
from affectfuse.models import self_mm
from affectfuse.models.self_mm import LabelGenerator

from ..conftest import SPECS, TINY, make_batch


def build(spec: str = "sentiment", **overrides) -> self_mm.SelfMM:
    torch.manual_seed(0)
    return create_model("self_mm", SPECS[spec], **(TINY["self_mm"] | overrides))


def generator() -> LabelGenerator:
    return LabelGenerator(("fusion", "text"), {"fusion": 1, "text": 1}, bound=3.0, exclude_zero=True)


def test_the_label_update_on_a_case_worked_by_hand():
    g = generator()
    rows, labels = g.lookup(["a", "b", "z"], torch.tensor([[1.0], [-1.0], [0.0]]))
    torch.testing.assert_close(labels, torch.tensor([[[1.0], [1.0]], [[-1.0], [-1.0]], [[0.0], [0.0]]]))
    # First visit: features stored, no label moves.
    g.update(rows, {"fusion": torch.tensor([[1.0], [-1.0], [9.0]]), "text": torch.tensor([[2.0], [0.0], [9.0]])})
    assert g.labels[rows].flatten().tolist() == [1.0, 1.0, -1.0, -1.0, 0.0, 0.0]
    centres = g.centres()  # "z" (label 0) belongs to neither side
    assert [c.item() for c in centres["fusion"]] == [1.0, -1.0] and [c.item() for c in centres["text"]] == [2.0, 0.0]
    # Second visit of "a" with F*_m = 0.5, F*_t = 1: D_m^p = 0.5, D_m^n = 1.5, α_m = 2; D_t^p = D_t^n = 1, α_t = 0;
    # ŷ_t = 1 · 0 / (2 · 2) + (1 + 0 - 2) / 2 = -0.5; epoch 2: y_t = 1/3 · 1 + 2/3 · (-0.5) = 0.
    rows, _ = g.lookup(["a"], torch.tensor([[1.0]]))
    g.update(rows, {"fusion": torch.tensor([[0.5]]), "text": torch.tensor([[1.0]])})
    assert g.labels[rows, 1].item() == pytest.approx(0.0, abs=1e-6)
    assert g.labels[rows, 0].item() == 1.0  # the human label never moves
    assert g.features["text"][rows].item() == 1.0 and g.visits[:3].tolist() == [2, 1, 1]


def test_generated_labels_are_clamped_to_the_bound():
    g = LabelGenerator(("fusion", "text"), {"fusion": 1, "text": 1}, bound=1.0, exclude_zero=True)
    rows, _ = g.lookup(["a", "b"], torch.tensor([[1.0], [-1.0]]))
    g.update(rows, {"fusion": torch.tensor([[1.0], [-1.0]]), "text": torch.tensor([[1.0], [-1.0]])})
    rows, _ = g.lookup(["a"], torch.tensor([[1.0]]))
    g.update(rows, {"fusion": torch.tensor([[0.9]]), "text": torch.tensor([[1.1]])})  # α_t huge: ŷ_t clamped to 1
    assert g.labels[rows, 1].item() == pytest.approx(1 / 3 + 2 / 3 * 1.0)


def test_labels_follow_the_ids_whatever_the_batch_order():
    model = build().train()
    batch = make_batch(SPECS["sentiment"], 6)
    for _ in range(3):
        model.loss(batch)
    before = model.generated_labels(batch.ids)
    assert not torch.equal(before[:, 1:], before[:, :1].expand(-1, 3, -1))
    order = [5, 3, 1, 0, 2, 4]
    shuffled = Batch(features={m: x[order] for m, x in batch.features.items()},
                     masks={m: x[order] for m, x in batch.masks.items()}, label=batch.label[order],
                     ids=[batch.ids[i] for i in order])
    with torch.no_grad():
        model.eval().loss(shuffled)  # evaluation never moves the labels
    torch.testing.assert_close(model.generated_labels(shuffled.ids), before[order], rtol=0, atol=0)
    assert len(model.aux["labels"]) == 6


def test_state_dict_carries_the_labels_and_a_fresh_model_starts_empty():
    model = build().train()
    batch = make_batch(SPECS["sentiment"], 5)
    for _ in range(3):
        model.loss(batch)
    state = model.state_dict()
    assert state["aux.labels._extra_state"].dtype == torch.uint8
    fresh = build()
    assert len(fresh.aux["labels"]) == 0 and fresh.state_dict()["aux.labels._extra_state"].numel() == 0
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.generated_labels(batch.ids), model.generated_labels(batch.ids), rtol=0, atol=0)
    # training goes on from the restored visits (epoch 4: weights 3/5 and 2/5)
    fresh.train().loss(batch)
    assert fresh.aux["labels"].visits[:5].tolist() == [4] * 5


def test_classification_trains_every_head_on_the_human_labels_without_generation():
    model = build("emotions").train()
    losses = model.loss(make_batch(SPECS["emotions"], 5))
    assert set(losses.terms) == {"fusion", "text", "audio", "vision"} and all(v > 0 for v in losses.terms.values())
    assert len(model.aux["labels"]) == 0


def test_the_generic_trainer_visits_every_training_sample_once_per_epoch(tmp_path):
    """No trainer hook: the label state counts epochs by visits, and the selected checkpoint carries its state."""
    from affectfuse.config import TrainConfig
    from affectfuse.data.datasets import load_data
    from affectfuse.engine.checkpoint import load_model
    from affectfuse.engine.train import fit

    corpus = load_data("synthetic:n_train=24,n_valid=8,n_test=8,length=3")
    torch.manual_seed(0)
    model = create_model("self_mm", corpus.spec, **TINY["self_mm"])
    result = fit(model, corpus.split("train"), corpus.split("valid"),
                 TrainConfig(max_epochs=3, batch_size=8, patience=3, device="cpu"), out_dir=tmp_path, progress=False)
    labels = model.aux["labels"]
    n = len(corpus.split("train").ids)
    assert len(labels) == n
    assert labels.visits[:n].tolist() == [result.best_epoch + 1] * n  # the best epoch's state is restored
    restored = load_model(result.checkpoint)
    ids = list(corpus.split("train").ids)
    torch.testing.assert_close(restored.generated_labels(ids), model.generated_labels(ids), rtol=0, atol=0)
