"""Interop with the PyTorch habits: a split is a Dataset for a plain DataLoader; save_pretrained/from_pretrained
write and read safetensors + JSON; a TorchScript export predicts what the model predicts; unlabelled samples are
predicted, never scored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from affectfuse import (
    Split,
    create_model,
    evaluate,
    export_torchscript,
    from_pretrained,
    load_data,
    load_model,
    predict,
    save_checkpoint,
    save_pretrained,
)
from affectfuse.cli import main
from affectfuse.config import InputSpec
from affectfuse.data.corpus import BatchLoader
from affectfuse.engine.checkpoint import CheckpointError
from affectfuse.engine.export import exported_spec
from tests.conftest import SPECS, TINY, make_batch

# torch 2.13 deprecates TorchScript in favour of torch.export, which cannot take the models' mask branches (export.py)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def corpus():
    return load_data("synthetic:n_train=24,n_valid=8,n_test=10,aligned=false,lengths.text=6,lengths.audio=9,"
                     "lengths.vision=7,dims.text=5,dims.audio=4,dims.vision=3")


def test_a_split_is_a_dataset_whose_dataloader_batches_match_the_batch_loader(corpus) -> None:
    split = corpus.split("test")
    assert isinstance(split, torch.utils.data.Dataset) and len(split) == 10
    sample = split[3]
    for m, x in sample.features.items():
        assert sample.masks[m].all() and len(x) == split.masks[m][3].sum()  # end-padded: cut after the last real step
    plain = list(DataLoader(split, batch_size=4, collate_fn=split.collate))
    ours = list(BatchLoader(split, batch_size=4))
    assert [b.ids for b in plain] == [b.ids for b in ours]
    for a, b in zip(plain, ours, strict=True):
        for m in a.features:
            assert torch.equal(a.masks[m], b.masks[m]) and torch.equal(a.features[m], b.features[m])
        assert torch.equal(a.label, b.label)
    with pytest.raises(IndexError, match="out of range"):
        split[10]


def test_samples_keep_masks_with_gaps_through_collate() -> None:
    mask = np.array([[True, False, True, False]])
    split = Split(ids=["a"], features={"audio": np.ones((1, 4, 2), np.float32)}, masks={"audio": mask},
                  labels=np.zeros((1, 1), np.float32))
    batch = split.collate([split[0]])
    assert batch.masks["audio"].tolist() == [[True, False, True]]


def test_evaluate_and_predict_take_a_dataloader(corpus) -> None:
    model = create_model("lmf", corpus.spec, **TINY["lmf"])
    split = corpus.split("test")
    loader = DataLoader(split, batch_size=3, collate_fn=split.collate)
    # other batches round differently
    assert evaluate(model, loader) == pytest.approx(evaluate(model, split), rel=1e-5, abs=1e-6)


def test_save_pretrained_round_trip(corpus, tmp_path: Path) -> None:
    model = create_model("mult", corpus.spec, **TINY["mult"]).eval()
    folder = save_pretrained(model, tmp_path / "mult", metrics={"mae": 0.5})
    config = json.loads((folder / "config.json").read_text())
    assert config["model_name"] == "mult" and config["config"]["dim"] == TINY["mult"]["dim"]
    assert config["metrics"] == {"mae": 0.5}
    weights = load_file(folder / "model.safetensors")
    assert weights.keys() == model.state_dict().keys()
    split = corpus.split("test")
    expected = predict(model, split)[1]
    for loaded in (from_pretrained(folder), load_model(folder)):
        assert not loaded.training
        np.testing.assert_array_equal(predict(loaded, split)[1], expected)


def test_from_pretrained_refuses_broken_folders(corpus, tmp_path: Path) -> None:
    folder = save_pretrained(create_model("lmf", corpus.spec, **TINY["lmf"]), tmp_path / "lmf")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_name": "nope"}))
    with pytest.raises(CheckpointError, match="nope"):
        from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**config, "config": {**config["config"], "rank": 5}}))
    with pytest.raises(CheckpointError, match="weights do not fit model 'lmf'"):
        from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="corrupted or not a safetensors file"):
        from_pretrained(folder)
    with pytest.raises(CheckpointError, match="not a folder"):
        from_pretrained(tmp_path / "missing")


@pytest.mark.parametrize("name", sorted(TINY))
def test_torchscript_export_predicts_what_the_model_predicts(name: str, tmp_path: Path) -> None:
    spec = SPECS["sentiment"]
    model = create_model(name, spec, **TINY[name]).eval()
    path = export_torchscript(model, tmp_path / f"{name}.pt")
    exported = torch.jit.load(str(path))
    stored = exported_spec(path)
    assert stored["model_name"] == name and InputSpec.from_dict(stored["spec"]) == spec
    padded = make_batch(spec, 7, seed=3)  # other batch size and true lengths than the export's own example
    full = make_batch(spec, 2, seed=4)
    full.masks = {m: torch.ones_like(x) for m, x in full.masks.items()}
    with torch.no_grad():
        for batch in (padded, full):
            torch.testing.assert_close(exported(batch.features, batch.masks), model(batch).prediction, rtol=0,
                                       atol=1e-6)


def test_cli_export_writes_both_forms(corpus, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = create_model("lmf", corpus.spec, **TINY["lmf"]).eval()
    checkpoint = save_checkpoint(tmp_path / "best.pt", model)
    assert main(["export", str(checkpoint), "--out", str(tmp_path / "lmf")]) == 0
    assert main(["export", str(checkpoint), "--out", str(tmp_path / "lmf.ts"), "--format", "torchscript"]) == 0
    assert "exported lmf" in capsys.readouterr().out
    batch = next(iter(BatchLoader(corpus.split("test"), batch_size=10)))
    exported = torch.jit.load(str(tmp_path / "lmf.ts"))
    with torch.no_grad():
        expected = model(batch).prediction
        torch.testing.assert_close(exported(batch.features, batch.masks), expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(load_model(tmp_path / "lmf")(batch).prediction, expected, rtol=0, atol=0)
    assert main(["export", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x")]) == 1
    assert "missing.pt does not exist" in capsys.readouterr().err


def test_unlabelled_samples_are_predicted_never_scored(corpus) -> None:
    model = create_model("lmf", corpus.spec, **TINY["lmf"])
    split = corpus.split("test")
    labels = split.labels.copy()
    labels[[1, 4]] = np.nan
    unlabelled = Split(ids=split.ids, features=split.features, masks=split.masks, labels=labels)
    ids, predictions, _ = predict(model, unlabelled)
    assert ids == split.ids and np.isfinite(predictions).all()
    with pytest.raises(ValueError, match="2 of 10 samples are unlabelled"):
        evaluate(model, unlabelled)
