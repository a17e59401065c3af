"""Corpus shapes as the papers feed them (named or given as lengths) and random full-length batches of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..config import InputSpec, Recipe
from ..data.batch import Batch

Precision = Literal["fp32", "bf16", "fp16"]


# ---------------------------------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """Feature dims and padded lengths of a corpus as the papers feed it, and which recipe applies."""

    name: str
    dims: dict[str, int]
    lengths: dict[str, int]
    recipe: str
    """Dataset key of the models' recipes (a model without one uses its defaults)."""
    task: Literal["regression", "classification"] = "regression"
    targets: tuple[str, ...] = ("sentiment",)
    num_classes: int = 0
    metric_family: str = "mosi"

    def spec(self) -> InputSpec:
        return InputSpec(
            dims=dict(self.dims),
            lengths=dict(self.lengths),
            task=self.task,
            targets=self.targets,
            num_classes=self.num_classes,
            metric_family=self.metric_family,  # type: ignore[arg-type]
            aligned=len(set(self.lengths.values())) == 1,
        )


MOSEI_DIMS = {"text": 768, "audio": 74, "vision": 35}
SHAPES: dict[str, Shape] = {
    # MMSA unaligned_50.pkl (spec §0.1): BERT 768 x 50, COVAREP 5 x 375, Facet 20 x 500.
    "mosi": Shape("mosi", {"text": 768, "audio": 5, "vision": 20}, {"text": 50, "audio": 375, "vision": 500}, "mosi"),
    # MMSA / DMD unaligned MOSEI: BERT 768 x 50, COVAREP 74 x 500, Facet 35 x 500.
    "mosei": Shape("mosei", MOSEI_DIMS, {"text": 50, "audio": 500, "vision": 500}, "mosei"),
    # MMSA unaligned_39.pkl: BERT-chinese 768 x 39, LibROSA 33 x 400, OpenFace2 709 x 55; labels in [-1, 1].
    "sims": Shape(
        "sims",
        {"text": 768, "audio": 33, "vision": 709},
        {"text": 39, "audio": 400, "vision": 55},
        "sims",
        metric_family="sims",
    ),
    # MulT iemocap_data_noalign.pkl: GloVe 300 x 20, COVAREP 74 x 400, Facet 35 x 500; 4 emotions x 2 classes.
    "iemocap": Shape(
        "iemocap",
        {"text": 300, "audio": 74, "vision": 35},
        {"text": 20, "audio": 400, "vision": 500},
        "iemocap",
        task="classification",
        targets=("neutral", "happy", "sad", "angry"),
        num_classes=2,
        metric_family="iemocap",
    ),
}


def parse_shape(text: str) -> Shape:
    """A named shape (`mosi`, `mosei`, `sims`, `iemocap`) or `T_l,T_a,T_v` lengths with MOSEI's feature dims."""
    if text in SHAPES:
        return SHAPES[text]
    parts = text.split(",")
    try:
        lengths = [int(p) for p in parts]
    except ValueError:
        lengths = []
    if len(lengths) != 3 or min(lengths) < 1:
        raise ValueError(
            f"--shape must be one of {', '.join(SHAPES)} or three positive lengths T_l,T_a,T_v (e.g. 50,500,500); "
            f"got {text!r}"
        )
    return Shape(text, MOSEI_DIMS, dict(zip(("text", "audio", "vision"), lengths, strict=True)), "mosei")


def random_batch(spec: InputSpec, batch_size: int, *, seed: int = 0, device: str | torch.device = "cpu") -> Batch:
    """Full-length random features (every step real) with labels of the spec's task."""
    if batch_size < 2:
        raise ValueError(f"batch size must be >= 2 (BatchNorm layers need two samples to train), got {batch_size}")
    g = torch.Generator().manual_seed(seed)
    features = {m: torch.randn(batch_size, spec.lengths[m], spec.dims[m], generator=g) for m in spec.modalities}
    masks = {m: torch.ones(batch_size, spec.lengths[m], dtype=torch.bool) for m in spec.modalities}
    if spec.task == "regression":
        low, high = spec.label_range or (-1.0, 1.0)
        label = torch.rand(batch_size, spec.num_targets, generator=g) * (high - low) + low
    else:
        label = torch.randint(0, spec.num_classes, (batch_size, spec.num_targets), generator=g)
    return Batch(features=features, masks=masks, label=label, ids=[f"s{i}" for i in range(batch_size)]).to(device)


def recipe_for(name: str, shape: Shape) -> Recipe[Any]:
    """The model's recipe for the shape's corpus; IEMOCAP-style per-emotion recipes use the first emotion's; a model
    with no recipe for the corpus uses its config defaults."""
    from ..config.registry import default_recipe, get_entry

    recipes = get_entry(name).recipes
    if shape.recipe in recipes:
        return recipes[shape.recipe]
    prefixed = [key for key in recipes if key.startswith(f"{shape.recipe}-")]
    return recipes[prefixed[0]] if prefixed else default_recipe(name)
