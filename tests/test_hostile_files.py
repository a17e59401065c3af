"""Files from others, tried as a hostile user would: crafted pickles must run nothing, damaged files must end in one
clear error. Each attack plants a pickle whose loading would create a marker file."""

from __future__ import annotations

import os
import pickle
import pickletools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from affectfuse.cli import main
from affectfuse.data.corpus import DataFormatError
from affectfuse.data.formats import detect, load_corpus, load_pickle, write_mmsa_pickle
from affectfuse.data.formats.pickles import TRUST_ENV, ForbiddenPickleError
from affectfuse.data.synthetic import SyntheticConfig, make_synthetic


class _Payload:
    """Unpickling this calls `os.system`, which creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _mmsa_like(marker: Path) -> dict[str, Any]:
    split = {"text": np.zeros((2, 3, 4), np.float32), "audio": np.zeros((2, 3, 2), np.float32),
             "vision": np.zeros((2, 3, 2), np.float32), "regression_labels": np.zeros(2, np.float32),
             "id": _Payload(marker)}
    return {"train": split, "valid": split, "test": split}


def _dump(obj: Any, path: Path, protocol: int = pickle.HIGHEST_PROTOCOL) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "PWNED"


@pytest.mark.parametrize("protocol", [2, 5])
def test_crafted_dataset_pickle_runs_nothing_anywhere(tmp_path: Path, marker: Path, protocol: int, capsys) -> None:
    evil = _dump(_mmsa_like(marker), tmp_path / "unaligned_50.pkl", protocol)
    with pytest.raises(ForbiddenPickleError, match=r"forbidden global (posix|os)\.system"):
        detect(evil)
    with pytest.raises(ForbiddenPickleError):
        load_corpus(evil)
    assert main(["data", "inspect", str(evil)]) == 1
    assert main(["train", "--model", "lmf", "--data", str(evil), "--out", str(tmp_path / "run"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert all("forbidden global" in line for line in err) and len(err) == 2
    assert not marker.exists()


@pytest.mark.parametrize("shape", ["mult", "lmf", "fet-clip", "fet-folder"])
def test_crafted_pickles_of_every_format_run_nothing(tmp_path: Path, marker: Path, shape: str) -> None:
    bad = _Payload(marker)
    if shape == "mult":
        obj: Any = {s: {"text": np.zeros((1, 2, 3)), "audio": bad, "vision": np.zeros((1, 2, 3)),
                        "labels": np.zeros((1, 1, 1))} for s in ("train", "valid", "test")}
    elif shape == "lmf":
        obj = {s: {"glove": bad, "covarep": np.zeros(1), "facet": np.zeros(1), "label": np.zeros(1)}
               for s in ("train", "valid", "test")}
    else:
        obj = {"audio": np.zeros((3, 2)), "vision": np.zeros((3, 2)), "config": {"audio": bad}}
    path = tmp_path / "data.pkl"
    if shape == "fet-folder":
        (tmp_path / "clips").mkdir()
        path = tmp_path / "clips" / "clip1.pkl"
    _dump(obj, path)
    with pytest.raises(ForbiddenPickleError):
        load_corpus(path.parent if shape == "fet-folder" else path)
    assert not marker.exists()


def test_trusted_opt_in_lifts_the_restriction_only_when_asked(tmp_path: Path, monkeypatch) -> None:
    from fractions import Fraction

    path = _dump({"x": Fraction(1, 3)}, tmp_path / "legacy.pkl")
    with pytest.raises(ForbiddenPickleError, match=rf"fractions\.Fraction.*{TRUST_ENV}=1"):
        load_pickle(path)
    monkeypatch.setenv(TRUST_ENV, "1")
    assert load_pickle(path) == {"x": Fraction(1, 3)}


def test_numpy1_and_python2_style_pickles_still_load(tmp_path: Path) -> None:
    """The papers' files were written by numpy 1 (`numpy.core`) and, for LMF, Python 2 (`__builtin__`)."""
    data = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.float64(2.5), "set": {1, 2}}
    raw = pickle.dumps(data, protocol=2)
    assert b"numpy._core.multiarray" in raw and b"c__builtin__\nset" in raw  # protocol 2 names builtins as Python 2
    legacy = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    pickletools.dis(legacy, out=open(os.devnull, "w"))  # still a well-formed pickle
    loaded = load_pickle(_dump_bytes(legacy, tmp_path / "py2.pkl"))
    np.testing.assert_array_equal(loaded["a"], data["a"])
    assert loaded["s"] == 2.5 and loaded["set"] == {1, 2}


def _dump_bytes(raw: bytes, path: Path) -> Path:
    path.write_bytes(raw)
    return path


def test_real_shared_pickles_load_under_the_restriction() -> None:
    root = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ch-sims" / "raw_samples"
    files = sorted(root.glob("*.pkl")) if root.is_dir() else []
    if not files:
        pytest.skip("../shared/data is absent (real data is not part of the project)")
    for path in files:
        assert detect(path) == "mmsa-fet"


def test_planted_extract_cache_file_runs_nothing(tmp_path: Path, marker: Path) -> None:
    from affectfuse.extract.cache import load_cached

    cache = tmp_path / "cache"
    cache.mkdir()
    _dump(_Payload(marker), cache / "clip1.pkl")  # the old cache name: never read any more
    np.save(cache / "clip1.npz", np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    (cache / "clip1.npz.npy").rename(cache / "clip1.npz")
    assert load_cached(cache, "clip1", None) is None
    assert not marker.exists()


def test_renamed_mmsa_key_is_not_read_as_another_format(tmp_path: Path) -> None:
    """An MMSA pickle whose `regression_labels` was renamed `labels` used to be read as MulT, losing its lengths."""
    corpus = make_synthetic(SyntheticConfig(n_train=8, n_valid=4, n_test=4))
    path = write_mmsa_pickle(corpus, tmp_path / "unaligned_50.pkl")
    data = load_pickle(path)
    for split in data.values():
        split["labels"] = split.pop("regression_labels")
    _dump(data, path)
    with pytest.raises(DataFormatError, match="unrecognised data format"):
        detect(path)


def test_truncated_hdf5_is_one_clear_error(tmp_path: Path) -> None:
    import h5py

    path = tmp_path / "seq.csd"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros((1000, 100)))
    path.write_bytes(path.read_bytes()[:4096])
    with pytest.raises(DataFormatError, match=r"seq\.csd"):
        load_corpus(path)


_VALID = pickle.dumps({s: {"text": np.zeros((2, 3, 4), np.float32), "audio": np.zeros((2, 3, 2), np.float32),
                           "vision": np.zeros((2, 3, 2), np.float32), "regression_labels": np.zeros(2, np.float32)}
                       for s in ("train", "valid", "test")}, protocol=2)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, len(_VALID)), flips=st.lists(st.tuples(st.integers(0, len(_VALID) - 1),
                                                                  st.integers(1, 255)), max_size=4))
def test_damaged_pickles_fail_cleanly(tmp_path_factory, cut: int, flips: list[tuple[int, int]]) -> None:
    """Truncated or bit-flipped dataset pickles end in a DataFormatError/ValueError naming the file, or load."""
    raw = bytearray(_VALID[:cut] if cut < len(_VALID) else _VALID)
    for at, xor in flips:
        if at < len(raw):
            raw[at] ^= xor
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.pkl"
    path.write_bytes(bytes(raw))
    error: Exception | None = None
    try:
        load_corpus(path)
    except (DataFormatError, ValueError) as caught:
        error = caught
    assert error is None or "fuzz.pkl" in str(error)
