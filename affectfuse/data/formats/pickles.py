"""The one place a pickle file is opened: a restricted unpickler that rebuilds only what data pickles hold."""

from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np

from ..corpus import DataFormatError
from .common import PathLike, existing_path

TRUST_ENV = "AFFECTFUSE_TRUST_PICKLES"
"""Set to 1 to unpickle files you trust without restriction (legacy pickles holding other classes)."""

# What the papers' released pickles (MMSA, MulT, LMF, MMSA-FET) contain: numpy arrays, dtypes and scalars inside
# builtin containers. Everything else a pickle may name is a way to run code while loading.
_ALLOWED: frozenset[tuple[str, str]] = frozenset({
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),  # protocol-5 arrays
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "bytearray"),
    ("builtins", "complex"),
    ("builtins", "slice"),
})
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class ForbiddenPickleError(DataFormatError):
    """A pickle names a global outside the data types; nothing of it was executed."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals of `_ALLOWED`, with numpy 1's `numpy.core` read as numpy 2's `numpy._core`."""

    _numpy2 = int(np.__version__.split(".")[0]) >= 2

    def __init__(self, file: Any, *, path: str, trusted: bool) -> None:
        super().__init__(file, encoding="latin1")  # latin1 reads numpy arrays pickled by Python 2 (LMF's files)
        self.path, self.trusted = path, trusted

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        canonical = "numpy._core" + module[len("numpy.core") :] if module.startswith("numpy.core") else module
        if not self.trusted and (canonical, name) not in _ALLOWED:
            raise ForbiddenPickleError(
                f"{self.path}: refused to unpickle the forbidden global {module}.{name} (a pickle can run code while "
                "loading; data pickles need only numpy arrays and builtin containers). If you trust this file, set "
                f"{TRUST_ENV}=1"
            )
        if self._numpy2:
            module = canonical
        elif module.startswith("numpy._core"):
            module = "numpy.core" + module[len("numpy._core") :]
        return super().find_class(module, name)


def load_pickle(path: PathLike) -> Any:
    """Unpickle a data file (Python 2 and 3 pickles alike), rebuilding only numpy arrays, dtypes, scalars and builtin
    containers; any other global is refused before it is imported or called.

    Set the environment variable AFFECTFUSE_TRUST_PICKLES=1 to lift the restriction for files you trust.

    Raises:
        FileNotFoundError: the file does not exist.
        ForbiddenPickleError: the pickle names a global outside the allowed data types.
        DataFormatError: the file is not a pickle.
    """
    p = existing_path(path)
    if p.is_dir():
        raise DataFormatError(f"{p}: expected a pickle file, found a folder")
    trusted = os.environ.get(TRUST_ENV, "") == "1"
    with p.open("rb") as f:
        try:
            return _RestrictedUnpickler(f, path=str(p), trusted=trusted).load()
        except ForbiddenPickleError:
            raise
        except Exception as e:  # a damaged pickle can fail in any of the unpickler's steps (fuzzing found LookupError)
            raise DataFormatError(f"{p}: not a readable pickle ({type(e).__name__}: {str(e)[:200]})") from None
