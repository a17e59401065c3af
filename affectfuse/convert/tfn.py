"""TFN weights from the official code (Justin1904/TensorFusionNetworks) and from MMSA's re-implementation.

Both name the sub-networks `{audio,video}_subnet.{norm, linear_1..3}` and `text_subnet.{rnn, linear_1}` (LMF shares
them: `subnetworks` is used by affectfuse/convert/lmf.py too), the inference network `post_fusion_layer_{1,2,3}` and
the output constants `output_range`/`output_shift` (frozen Parameters: sigmoid * range + shift).

The official TFN flattens the outer product audio ⊗ video ⊗ text; ours follows the corpus's modality order (text ⊗
audio ⊗ vision), so the first inference layer's columns are permuted, which leaves every output unchanged. MMSA's
TFN applies the sigmoid only with one output (regression); with several (classification) its constants are unused
and dropped here.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from . import ConversionError, StateDict, refuse_unknown, register_converter, take

_SUBNETS = {"audio_subnet": "audio", "video_subnet": "vision"}
_LINEARS = {"linear_1": "0", "linear_2": "2", "linear_3": "4"}
_TEXT = {"rnn": "rnn", "linear_1": "linear"}
_INFERENCE = {"post_fusion_layer_1": "1", "post_fusion_layer_2": "3", "post_fusion_layer_3": "5"}


def subnetworks(state: StateDict) -> tuple[dict[str, Tensor], set[str]]:
    """Our `encoders.encoders.*` entries from the official sub-networks, and the official keys they used."""
    ours: dict[str, Tensor] = {}
    used: set[str] = set()
    for key, value in state.items():
        head, _, rest = key.partition(".")
        part, _, leaf = rest.partition(".")
        if head == "text_subnet" and part in _TEXT:
            ours[f"encoders.encoders.text.{_TEXT[part]}.{leaf}"] = value
        elif head in _SUBNETS and part == "norm":
            ours[f"encoders.encoders.{_SUBNETS[head]}.norm.{leaf}"] = value
        elif head in _SUBNETS and part in _LINEARS:
            ours[f"encoders.encoders.{_SUBNETS[head]}.layers.{_LINEARS[part]}.{leaf}"] = value
        else:
            continue
        used.add(key)
    return ours, used


def _convert(state: StateDict, source: str) -> dict[str, Tensor]:
    ours, used = subnetworks(state)
    first = take(state, "post_fusion_layer_1.weight", source)
    a = take(state, "audio_subnet.linear_3.weight", source).shape[0] + 1
    v = take(state, "video_subnet.linear_3.weight", source).shape[0] + 1
    t = take(state, "text_subnet.linear_1.weight", source).shape[0] + 1
    if first.ndim != 2 or first.shape[1] != a * v * t:
        raise ConversionError(f"{source} post_fusion_layer_1.weight has shape {tuple(first.shape)}, expected "
                              f"(width, (audio+1)(video+1)(text+1) = {a * v * t})")
    for layer, index in _INFERENCE.items():
        for leaf in ("weight", "bias"):
            ours[f"inference.{index}.{leaf}"] = take(state, f"{layer}.{leaf}", source)
            used.add(f"{layer}.{leaf}")
    # official columns: audio-major, then video, then text; ours: text-major, then audio, then vision
    ours["inference.1.weight"] = first.reshape(-1, a, v, t).permute(0, 3, 1, 2).reshape(first.shape[0], -1)
    # the constants (absent from gradients: they are frozen) are carried as they are, so the converted model
    # bounds its output as the checkpoint did (MMSA applies [-3, 3] to SIMS as well)
    constants = {"output_range": "output.scale", "output_shift": "output.shift"}
    if ours["inference.5.weight"].shape[0] == 1:
        ours |= {mine: state[k].reshape(()) for k, mine in constants.items() if k in state}
    used |= constants.keys() & state.keys()
    refuse_unknown(state, used, source)
    return ours


@register_converter("tfn", "official")
def from_official(state: StateDict, config: Any) -> dict[str, Tensor]:
    """Justin1904/TensorFusionNetworks `TFN.state_dict()` -> ours (one sigmoid output in [-3, 3])."""
    return _convert(state, "official TFN")


@register_converter("tfn", "mmsa")
def from_mmsa(state: StateDict, config: Any) -> dict[str, Tensor]:
    """MMSA's `TFN.state_dict()` (same names; classification checkpoints have C outputs and no sigmoid) -> ours."""
    return _convert(state, "MMSA TFN")
