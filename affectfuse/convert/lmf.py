"""LMF weights from the official code (Justin1904/Low-rank-Multimodal-Fusion) and from MMSA's re-implementation.

Both use TFN's sub-network names (mapped by affectfuse/convert/tfn.py) plus `{audio,video,text}_factor`
(r, d_m + 1, d_y), `fusion_weights` (1, r) and `fusion_bias` (1, d_y): the same layout as ours, so the tensors are
only renamed. MMSA's copy has the same names (and no `use_softmax`).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from . import StateDict, refuse_unknown, register_converter, take
from .tfn import subnetworks

_FACTORS = {"audio_factor": "audio", "video_factor": "vision", "text_factor": "text"}


def _convert(state: StateDict, source: str) -> dict[str, Tensor]:
    ours, used = subnetworks(state)
    for official, modality in _FACTORS.items():
        ours[f"factors.{modality}"] = take(state, official, source)
    for name in ("fusion_weights", "fusion_bias"):
        ours[name] = take(state, name, source)
    used |= {*_FACTORS, "fusion_weights", "fusion_bias"}
    refuse_unknown(state, used, source)
    return ours


@register_converter("lmf", "official")
def from_official(state: StateDict, config: Any) -> dict[str, Tensor]:
    """Justin1904/Low-rank-Multimodal-Fusion `LMF.state_dict()` -> ours."""
    return _convert(state, "official LMF")


@register_converter("lmf", "mmsa")
def from_mmsa(state: StateDict, config: Any) -> dict[str, Tensor]:
    """MMSA's `LMF.state_dict()` -> ours."""
    return _convert(state, "MMSA LMF")
