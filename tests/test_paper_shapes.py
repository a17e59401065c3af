"""Every registered model takes one training step at the papers' unaligned MOSEI shapes with its `mosei` recipe.

MOSEI (text 50 x 768, audio 500 x 74, vision 500 x 35) is the largest of the papers' unaligned inputs; a batch of 2
keeps the step to about a second on CPU. `benchmarks/paper_shapes.py` reports the parameter counts and step times.
"""

from __future__ import annotations

import pytest
import torch

from affectfuse.config import InputSpec
from affectfuse.config.registry import create_model, get_recipe, list_models
from affectfuse.engine.train import build_optimizer

from .conftest import make_batch

MOSEI_UNALIGNED = InputSpec(
    dims={"text": 768, "audio": 74, "vision": 35}, lengths={"text": 50, "audio": 500, "vision": 500}, aligned=False
)


@pytest.mark.parametrize("name", list_models())
def test_one_training_step_at_mosei_unaligned_shapes(name: str) -> None:
    recipe = get_recipe(name, "mosei")
    torch.manual_seed(0)
    model = create_model(name, MOSEI_UNALIGNED, recipe.model)
    optimizer = build_optimizer(model, recipe.train)
    batch = make_batch(MOSEI_UNALIGNED, batch_size=2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    loss = model.loss(batch).total
    assert torch.isfinite(loss), f"{name}: non-finite loss {loss.item()}"
    loss.backward()
    optimizer.step()
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert changed, f"{name}: one optimiser step changed no parameter"
    model.eval()
    with torch.no_grad():
        prediction = model(batch).prediction
    assert prediction.shape == (2, 1) and torch.isfinite(prediction).all()
