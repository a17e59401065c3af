"""Kept so that `_MODULES` still finds the LMF and TFN converters, which now live in lmf.py and tfn.py (one module
per method); importing this registers both. Drop it when `_MODULES` names "lmf" and "tfn"."""

from . import lmf, tfn  # noqa: F401
