"""affectfuse: efficient, robust multimodal sentiment analysis and emotion recognition.

Python API (mirrors the CLI)::

    from affectfuse import load_data, create_model, fit, evaluate, load_model, train_model

Names are imported on first use, so `import affectfuse.metrics` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "create_model": "registry",
    "get_recipe": "registry",
    "list_models": "registry",
    "fit": "train",
    "evaluate": "evaluate",
    "predict": "evaluate",
    "load_model": "checkpoint",
    "save_checkpoint": "checkpoint",
    "train_model": "api",
    "train_many": "api",
    "evaluate_checkpoint": "api",
    "load_data": "data.datasets",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'affectfuse' has no attribute {name!r}")
    importlib.import_module(".models", __name__)  # registers every method before any registry lookup
    return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
