"""affectfuse: efficient, robust multimodal sentiment analysis and emotion recognition.

Python API (mirrors the CLI)::

    from affectfuse import load_data, create_model, fit, evaluate, load_model, train_model

Names are imported on first use, so `import affectfuse.engine.metrics` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "create_model": "config.registry",
    "get_recipe": "config.registry",
    "list_models": "config.registry",
    "fit": "engine.train",
    "evaluate": "engine.evaluate",
    "predict": "engine.evaluate",
    "load_model": "engine.checkpoint",
    "save_checkpoint": "engine.checkpoint",
    "train_model": "engine.runs",
    "train_many": "engine.runs",
    "evaluate_checkpoint": "engine.runs",
    "load_data": "data.datasets",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'affectfuse' has no attribute {name!r}")
    importlib.import_module(".models", __name__)  # registers every method before any registry lookup
    return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
