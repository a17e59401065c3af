"""Settings: typed config dataclasses (schema), the model registry, overrides and recipe files."""

from .schema import (
    BERT_TOKENS,
    MODALITIES,
    InputSpec,
    Modalities,
    Recipe,
    TrainConfig,
    replace_nested,
    uses_bert_tokens,
)

__all__ = [
    "BERT_TOKENS", "MODALITIES", "InputSpec", "Modalities", "Recipe", "TrainConfig", "replace_nested",
    "uses_bert_tokens",
]
