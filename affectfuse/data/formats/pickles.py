"""The one place a pickle file is opened."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np

from ..corpus import DataFormatError
from .common import PathLike, existing_path


class _NumpyCompatUnpickler(pickle.Unpickler):
    """Maps numpy's private module path between numpy 1 (`numpy.core`) and 2 (`numpy._core`).

    Pickles written by either version then load under the other without the numpy 2 DeprecationWarning.
    """

    _numpy2 = int(np.__version__.split(".")[0]) >= 2

    def find_class(self, module: str, name: str) -> Any:
        if self._numpy2 and (module == "numpy.core" or module.startswith("numpy.core.")):
            module = "numpy._core" + module[len("numpy.core") :]
        elif not self._numpy2 and (module == "numpy._core" or module.startswith("numpy._core.")):
            module = "numpy.core" + module[len("numpy._core") :]
        return super().find_class(module, name)


def load_pickle(path: PathLike) -> Any:
    """Unpickle a file (Python 2 and 3 pickles alike).

    Security: unpickling runs code chosen by whoever wrote the file; only load files you trust.

    Raises:
        FileNotFoundError: the file does not exist.
        DataFormatError: the file is not a pickle.
    """
    p = existing_path(path)
    if p.is_dir():
        raise DataFormatError(f"{p}: expected a pickle file, found a folder")
    with p.open("rb") as f:
        try:
            # latin1 is the documented way to read numpy arrays pickled by Python 2 (LMF's files); it leaves
            # Python 3 pickles untouched.
            return _NumpyCompatUnpickler(f, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as e:
            raise DataFormatError(f"{p}: not a readable pickle ({type(e).__name__}: {e})") from None
