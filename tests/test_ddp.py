"""Data-parallel training in the one trainer: 2 gloo processes on CPU reach the weights of one process trained with
the same global batch (dropout off, the same shuffled order), and not those of one process with the per-process
batch. The model is MulT: it has no BatchNorm, whose batch statistics are per process on CPU (SyncBatchNorm is
CUDA-only)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from affectfuse.config import Modalities, TrainConfig
from affectfuse.config.registry import create_model
from affectfuse.data.datasets import load_data
from affectfuse.engine.train import fit, seed_everything

from .conftest import TINY

DATA = "synthetic:n_train=97,n_valid=32,n_test=16,length=6"  # 97: the last batch (17) splits unevenly, 9 + 8
GLOBAL_BATCH = 16
NO_DROPOUT = {
    "text_dropout": 0.0, "embed_dropout": 0.0, "attn_dropout": Modalities(text=0.0, audio=0.0, vision=0.0),
    "self_attn_dropout": 0.0, "relu_dropout": 0.0, "res_dropout": 0.0, "out_dropout": 0.0,
}


def _train(batch_size: int, out_dir: Path | None = None) -> tuple[dict[str, torch.Tensor], list[float]]:
    corpus = load_data(DATA)
    seed_everything(7)
    model = create_model("mult", corpus.spec, **{**TINY["mult"], **NO_DROPOUT})
    train = TrainConfig(batch_size=batch_size, max_epochs=3, patience=10, lr=1e-2, device="cpu", seed=7)
    result = fit(model, corpus.split("train"), corpus.split("valid"), train, out_dir=out_dir, progress=False)
    return model.state_dict(), [h["train"]["total"] for h in result.history]


def _worker(rank: int, world_size: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        state, losses = _train(GLOBAL_BATCH, Path(out) / "run")
        torch.save({"state": state, "losses": losses}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_result(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(2, str(out / "init"), str(out)), nprocs=2, join=True)
    return out


def _comparable(name: str, value: torch.Tensor) -> torch.Tensor:
    """The entries whose gradient is not identically zero. The key half of an attention's `to_kv.bias` shifts every
    score of a query equally, which softmax ignores: its exact gradient is 0, so Adam turns float rounding noise
    (which differs between one process and two) into full learning-rate steps of random sign. Those are left out."""
    return value[value.shape[0] // 2:] if name.endswith("to_kv.bias") else value


def test_two_gloo_processes_match_one_process_with_the_global_batch(ddp_result: Path) -> None:
    rank0 = torch.load(ddp_result / "rank0.pt", weights_only=True)
    rank1 = torch.load(ddp_result / "rank1.pt", weights_only=True)
    single, single_losses = _train(GLOBAL_BATCH)
    local, _ = _train(GLOBAL_BATCH // 2)
    assert set(rank0["state"]) == set(single)
    far = 0
    for name, value in single.items():
        # every process holds the same weights, and they are those of single-process training with the global batch
        torch.testing.assert_close(rank0["state"][name], rank1["state"][name], rtol=0, atol=0)
        torch.testing.assert_close(_comparable(name, rank0["state"][name]), _comparable(name, value),
                                   rtol=1e-3, atol=1e-3, msg=name)
        far += not torch.allclose(_comparable(name, local[name]), _comparable(name, value), rtol=1e-3, atol=1e-3)
    # the logged training loss is the global one on every process
    assert rank0["losses"] == pytest.approx(single_losses, rel=1e-4)
    assert rank1["losses"] == rank0["losses"]
    # and the comparison can fail: the per-process batch (8) alone gives other weights almost everywhere
    assert far > len(single) // 2


def test_only_rank_zero_writes(ddp_result: Path) -> None:
    log = (ddp_result / "run" / "log.jsonl").read_text().splitlines()
    assert len(log) == 3  # one line per epoch: rank 1 neither appended nor truncated it
    assert (ddp_result / "run" / "best.pt").is_file()
