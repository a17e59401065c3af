"""Shared fixtures: tiny input specs and batches with real structure, and the tiny config of every model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from affectfuse.config import InputSpec, Modalities
from affectfuse.data.batch import Batch

# Tiny models are slower with several threads on 2 shared cores (thread hand-off dominates the arithmetic).
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# One entry per registered model (a guard test fails until a new model has one): overrides giving tiny dimensions.
TINY: dict[str, dict] = {
    "tfn": {"hidden": Modalities(text=6, audio=4, vision=5), "text_out": 3, "post_fusion_dim": 8},
    "lmf": {"hidden": Modalities(text=6, audio=4, vision=5), "text_out": 3, "rank": 3},
    "mult": {"dim": 8, "heads": 2, "layers": 1},
    "sft": {"dim": 8, "heads": 2, "n_layers_post_fusion": 1, "pool_kernel": Modalities(text=2, audio=3, vision=4)},
    "emt_dlfr": {"d_model": 8, "heads": 2, "layers": 2, "audio_hidden": 6, "vision_hidden": 6, "post_fusion_dim": 8},
    "dmd": {"dim": 8, "heads": 2, "layers": 1, "kernel": Modalities(text=3, audio=3, vision=3), "homo_gd_size": 4},
    "tfr_net": {"dim": 4, "heads": 2, "layers": 1, "fusion_hidden": Modalities(text=3, audio=4, vision=5),
                "fusion_gru_layers": 1, "cls_hidden": 6},
    "mmim": {"audio_hidden": 4, "vision_hidden": 4, "audio_out": 8, "vision_out": 8, "fusion_hidden": 6},
    "ef_lstm": {"hidden": 6, "layers": 2},
    "lf_lstm": {"hidden": Modalities(text=6, audio=4, vision=5), "text_out": 3, "post_fusion_dim": 8},
    "misa": {"hidden_size": 8, "fusion_ffn": 16},
    "self_mm": {"audio_hidden": 4, "vision_hidden": 5, "audio_out": 4, "vision_out": 5, "post_fusion_dim": 8,
                "post_dim": Modalities(text=6, audio=4, vision=5)},
}

DIMS = {"text": 7, "audio": 5, "vision": 6}
LENGTHS = {"text": 6, "audio": 9, "vision": 8}

SPECS = {
    "sentiment": InputSpec(dims=DIMS, lengths=LENGTHS),
    "no-text-traits": InputSpec(
        dims={"audio": 5, "vision": 6},
        lengths={"audio": 4, "vision": 4},
        targets=("a", "b", "c"),
        metric_family="traits",
    ),
    "emotions": InputSpec(
        dims=DIMS,
        lengths=LENGTHS,
        task="classification",
        targets=("neutral", "happy"),
        num_classes=2,
        metric_family="iemocap",
    ),
}


def make_batch(spec: InputSpec, batch_size: int = 4, *, seed: int = 0) -> Batch:
    """Variable true lengths (end padding, zeros on padding), labels that depend on the features."""
    g = torch.Generator().manual_seed(seed)
    features, masks = {}, {}
    for m in spec.modalities:
        t, d = spec.lengths[m], spec.dims[m]
        lengths = torch.randint(1, t + 1, (batch_size,), generator=g)
        lengths[0] = t
        mask = torch.arange(t)[None, :] < lengths[:, None]
        features[m] = torch.randn(batch_size, t, d, generator=g) * mask[..., None]
        masks[m] = mask
    signal = sum(f.sum((1, 2)) / m.sum(1) for f, m in zip(features.values(), masks.values(), strict=True))
    if spec.task == "regression":
        label = torch.tanh(signal)[:, None].repeat(1, spec.num_targets) * 2
    else:
        label = (signal > 0).long()[:, None].repeat(1, spec.num_targets)
    return Batch(features=features, masks=masks, label=label, ids=[f"s{i}" for i in range(batch_size)])


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present (as on a user's machine)")
    return SHARED_DATA
