"""Random feature missing (spec §4.2): rate, reproducibility, padding, token-id text, the official static masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affectfuse.config import InputSpec, Modalities
from affectfuse.data.batch import Batch
from affectfuse.data.corpus import Split
from affectfuse.robustness.missing import UNK_ID, apply_masks, drop_features, split_missing_masks

FEATURES = InputSpec(dims={"text": 4, "audio": 3, "vision": 2}, lengths={"text": 6, "audio": 9, "vision": 7})
TOKENS = InputSpec(
    dims={"text": 3, "audio": 3, "vision": 2},
    lengths={"text": 6, "audio": 9, "vision": 7},
    extractors={"text": "bert-tokens"},
)


def make(spec: InputSpec, batch_size: int = 6, *, seed: int = 0, garbage: float = 0.0) -> Batch:
    """End-padded batch with lengths >= 2; padded steps hold `garbage`. Token text: [CLS] ids... [SEP]."""
    g = torch.Generator().manual_seed(seed)
    features, masks = {}, {}
    for m in spec.modalities:
        t, d = spec.lengths[m], spec.dims[m]
        lengths = torch.randint(2, t + 1, (batch_size,), generator=g)
        mask = torch.arange(t)[None, :] < lengths[:, None]
        if m == "text" and spec.extractors.get("text") == "bert-tokens":
            ids = torch.randint(1000, 2000, (batch_size, t), generator=g).float()
            ids[:, 0] = 101
            ids[torch.arange(batch_size), lengths - 1] = 102
            x = torch.stack([ids, torch.ones_like(ids), torch.zeros_like(ids)], dim=-1)
        else:
            x = torch.randn(batch_size, t, d, generator=g) + 3.0  # never 0 on real steps
        features[m] = torch.where(mask[..., None], x, torch.full_like(x, garbage))
        masks[m] = mask
    return Batch(
        features=features, masks=masks, label=torch.zeros(batch_size, 1), ids=[str(i) for i in range(batch_size)]
    )


def drop(batch: Batch, rate, spec: InputSpec = FEATURES, seed: int = 0):
    return drop_features(batch, rate, generator=torch.Generator().manual_seed(seed), spec=spec)


def test_rate_is_honoured_per_modality():
    batch = make(FEATURES, 400)
    _, kept = drop(batch, Modalities(text=0.1, audio=0.5, vision=0.9))
    for m, rate in (("text", 0.1), ("audio", 0.5), ("vision", 0.9)):
        real = batch.masks[m]
        dropped = (real & ~kept[m]).sum() / real.sum()
        assert abs(dropped.item() - rate) < 0.03, m


def test_dropped_frames_are_zero_and_kept_frames_untouched():
    batch = make(FEATURES)
    incomplete, kept = drop(batch, 0.5)
    for m in FEATURES.modalities:
        x, y, mask = batch.features[m], incomplete.features[m], batch.masks[m]
        assert (y[mask & ~kept[m]] == 0).all()
        torch.testing.assert_close(y[kept[m]], x[kept[m]], rtol=0, atol=0)
        assert not (kept[m] & ~mask).any()
        assert incomplete.masks[m] is batch.masks[m]
    assert (batch.features["audio"][batch.masks["audio"]] != 0).all()  # the input batch is not modified


def test_reproducible_with_a_seeded_generator():
    batch = make(FEATURES)
    a, kept_a = drop(batch, 0.4, seed=7)
    b, kept_b = drop(batch, 0.4, seed=7)
    _, kept_c = drop(batch, 0.4, seed=8)
    for m in FEATURES.modalities:
        assert torch.equal(kept_a[m], kept_b[m]) and torch.equal(a.features[m], b.features[m])
    assert any(not torch.equal(kept_a[m], kept_c[m]) for m in FEATURES.modalities)


def test_one_modalitys_rate_does_not_change_anothers_mask():
    batch = make(FEATURES)
    _, low = drop(batch, {"text": 0.3, "audio": 0.1})
    _, high = drop(batch, {"text": 0.3, "audio": 0.9})
    assert torch.equal(low["text"], high["text"]) and torch.equal(low["vision"], high["vision"])


def test_rate_zero_changes_nothing():
    for spec in (FEATURES, TOKENS):
        batch = make(spec, garbage=5.0)
        incomplete, kept = drop(batch, 0.0, spec)
        for m in spec.modalities:
            assert torch.equal(incomplete.features[m], batch.features[m])
            assert torch.equal(kept[m], batch.masks[m])


def test_rate_one_drops_every_real_step_and_leaves_padding():
    batch = make(FEATURES, garbage=5.0)
    incomplete, kept = drop(batch, 1.0)
    for m in FEATURES.modalities:
        mask = batch.masks[m]
        assert not kept[m].any()
        assert (incomplete.features[m][mask] == 0).all()
        assert (incomplete.features[m][~mask] == 5.0).all()  # padding untouched


def test_token_text_keeps_cls_and_sep_and_unks_the_rest():
    batch = make(TOKENS, garbage=0.0)
    incomplete, kept = drop(batch, 1.0, TOKENS)
    mask = batch.masks["text"]
    lengths = mask.sum(1)
    ends = torch.zeros_like(mask)
    ends[:, 0] = True
    ends[torch.arange(len(lengths)), lengths - 1] = True
    assert torch.equal(kept["text"], ends)
    ids, x = incomplete.features["text"][..., 0], batch.features["text"]
    assert (ids[mask & ~ends] == UNK_ID).all()
    assert torch.equal(ids[ends], x[..., 0][ends])
    assert (ids[~mask] == 0).all()  # padding ids untouched
    torch.testing.assert_close(incomplete.features["text"][..., 1:], x[..., 1:], rtol=0, atol=0)  # attention, segment
    assert (incomplete.features["audio"][batch.masks["audio"]] == 0).all()  # audio is zeroed as usual


def test_rates_are_validated():
    batch = make(FEATURES)
    with pytest.raises(ValueError, match="unknown modalities"):
        drop(batch, {"video": 0.2})
    with pytest.raises(ValueError, match=r"missing rate of audio must be in \[0, 1\]"):
        drop(batch, {"audio": 1.5})


def as_split(batch: Batch) -> Split:
    return Split(
        ids=batch.ids,
        features={m: x.numpy().copy() for m, x in batch.features.items()},
        masks={m: x.numpy().copy() for m, x in batch.masks.items()},
        labels=batch.label.numpy(),
    )


def test_static_split_masks_follow_the_official_rule():
    split = as_split(make(TOKENS, 50))
    kept = split_missing_masks(split, 0.3, spec=TOKENS)
    # The official loader: np.random.seed(seed); one uniform per padded position; kept where u > r on real steps;
    # token text also keeps index 0 and index length - 1.
    for m, seed in (("text", 111), ("audio", 1111), ("vision", 11111)):
        np.random.seed(seed)
        expected = (np.random.uniform(size=split.masks[m].shape) > 0.3) & split.masks[m]
        if m == "text":
            lengths = split.masks[m].sum(1)
            expected[:, 0] = True
            expected[np.arange(len(lengths)), lengths - 1] = True
        np.testing.assert_array_equal(kept[m], expected)
    again = split_missing_masks(split, 0.3, spec=TOKENS)
    assert all(np.array_equal(kept[m], again[m]) for m in kept)  # static: a function of the split and the seeds


def test_apply_masks_builds_a_corrupted_copy():
    split = as_split(make(TOKENS, 20))
    original = {m: x.copy() for m, x in split.features.items()}
    kept = split_missing_masks(split, 0.5, spec=TOKENS, seeds=Modalities(text=1, audio=2, vision=3))
    corrupted = apply_masks(split, kept, spec=TOKENS)
    dropped = {m: split.masks[m] & ~kept[m] for m in kept}
    assert (corrupted.features["text"][..., 0][dropped["text"]] == UNK_ID).all()
    assert (corrupted.features["vision"][dropped["vision"]] == 0).all()
    np.testing.assert_array_equal(corrupted.features["audio"][kept["audio"]], original["audio"][kept["audio"]])
    assert all(np.array_equal(split.features[m], original[m]) for m in original)  # the input split is unchanged
    assert corrupted.ids == split.ids and np.array_equal(corrupted.labels, split.labels)
