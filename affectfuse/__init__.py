"""affectfuse: efficient, robust multimodal sentiment analysis and emotion recognition.

The Python API (each name mirrors a command; see the README's tour and docs/api.md)::

    from affectfuse import load_data, create_model, fit, evaluate, predict, train_model, load_model

Data: `load_data(spec) -> Corpus`, whose `split(name)` is a `Split` (also a `torch.utils.data.Dataset` with its
`collate`); `Batch` is what every model consumes. Models: `list_models`, `get_recipe`, `create_model`. Training and
scoring: `fit`, `evaluate`, `predict`, `train_model`, `train_many`, `evaluate_checkpoint`, with `TrainConfig`.
Saving and sharing: `save_checkpoint` / `load_model` (.pt), `save_pretrained` / `from_pretrained` (a folder with
config.json + model.safetensors), `export_torchscript` (one file for inference without affectfuse).

Names are imported on first use, so `import affectfuse` (and `affectfuse --help`) stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module under affectfuse that defines it
_API: dict[str, str] = {
    "load_data": "data.datasets",
    "Corpus": "data.corpus",
    "Split": "data.corpus",
    "Batch": "data.batch",
    "collate": "data.batch",
    "InputSpec": "config.schema",
    "TrainConfig": "config.schema",
    "list_models": "config.registry",
    "get_recipe": "config.registry",
    "create_model": "config.registry",
    "fit": "engine.train",
    "evaluate": "engine.evaluate",
    "predict": "engine.evaluate",
    "train_model": "engine.runs",
    "train_many": "engine.runs",
    "evaluate_checkpoint": "engine.runs",
    "save_checkpoint": "engine.checkpoint",
    "load_model": "engine.checkpoint",
    "save_pretrained": "engine.checkpoint",
    "from_pretrained": "engine.checkpoint",
    "export_torchscript": "engine.export",
}
__all__ = [  # the same names as _API (tests/test_api.py), spelled out for linters and `from affectfuse import *`
    "__version__",
    "load_data", "Corpus", "Split", "Batch", "collate", "InputSpec", "TrainConfig",
    "list_models", "get_recipe", "create_model",
    "fit", "evaluate", "predict", "train_model", "train_many", "evaluate_checkpoint",
    "save_checkpoint", "load_model", "save_pretrained", "from_pretrained", "export_torchscript",
]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time each name is imported on first use (below)
    from .config.registry import create_model, get_recipe, list_models
    from .config.schema import InputSpec, TrainConfig
    from .data.batch import Batch, collate
    from .data.corpus import Corpus, Split
    from .data.datasets import load_data
    from .engine.checkpoint import from_pretrained, load_model, save_checkpoint, save_pretrained
    from .engine.evaluate import evaluate, predict
    from .engine.export import export_torchscript
    from .engine.runs import evaluate_checkpoint, train_many, train_model
    from .engine.train import fit


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'affectfuse' has no attribute {name!r}")
    importlib.import_module(".models", __name__)  # registers every method before any registry lookup
    value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    # Cached as a module attribute: a later import of a same-named submodule (affectfuse.engine.evaluate is a module
    # too) can then never shadow the function.
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
