"""LMF (Justin1904/Low-rank-Multimodal-Fusion) and TFN (Justin1904/TensorFusionNetworks) official weights.

Both repositories share the sub-networks: `{audio,video}_subnet.{norm, linear_1..3}` and
`text_subnet.{rnn, linear_1}`. LMF adds `{audio,video,text}_factor`, `fusion_weights`, `fusion_bias`; TFN adds
`post_fusion_layer_{1,2,3}` and its constant output range/shift. The official TFN flattens the outer product in the
order audio ⊗ video ⊗ text; ours follows the corpus's modality order (text ⊗ audio ⊗ vision), so the first
post-fusion layer's columns are permuted, which leaves every output unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import ConversionError, StateDict, register_converter

_SUBNETS = {"audio": "audio", "video": "vision"}
_LINEARS = {"linear_1": "0", "linear_2": "2", "linear_3": "4"}


def _encoders(state: StateDict) -> tuple[dict[str, Tensor], set[str]]:
    """Our `encoders.encoders.*` entries from the official sub-networks, and the official keys used."""
    ours: dict[str, Tensor] = {}
    used: set[str] = set()
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head == "text_subnet":
            part, _, leaf = rest.partition(".")
            name = {"rnn": "rnn", "linear_1": "linear"}.get(part)
            if name is None:
                continue
            ours[f"encoders.encoders.text.{name}.{leaf}"] = value
            used.add(key)
        elif head.removesuffix("_subnet") in _SUBNETS and head.endswith("_subnet"):
            modality = _SUBNETS[head.removesuffix("_subnet")]
            part, _, leaf = rest.partition(".")
            if part == "norm":
                ours[f"encoders.encoders.{modality}.norm.{leaf}"] = value
            elif part in _LINEARS:
                ours[f"encoders.encoders.{modality}.layers.{_LINEARS[part]}.{leaf}"] = value
            else:
                continue
            used.add(key)
    return ours, used


def _unexpected(state: StateDict, used: set[str], model: str) -> None:
    left = sorted(set(state) - used)
    if left:
        raise ConversionError(f"official {model} state dict has keys this converter does not know: {left[:6]}")


def _take(state: StateDict, key: str, model: str) -> Tensor:
    if key not in state:
        raise ConversionError(f"official {model} state dict lacks {key!r}")
    return state[key]


@register_converter("lmf", "official")
def lmf_from_official(state: StateDict, config: Any) -> dict[str, Tensor]:
    ours, used = _encoders(state)
    for official, modality in (("audio_factor", "audio"), ("video_factor", "vision"), ("text_factor", "text")):
        ours[f"factors.{modality}"] = _take(state, official, "LMF")
        used.add(official)
    for name in ("fusion_weights", "fusion_bias"):
        ours[name] = _take(state, name, "LMF")
        used.add(name)
    _unexpected(state, used, "LMF")
    return ours


@register_converter("tfn", "official")
def tfn_from_official(state: StateDict, config: Any) -> dict[str, Tensor]:
    ours, used = _encoders(state)
    first = _take(state, "post_fusion_layer_1.weight", "TFN")
    a = _take(state, "audio_subnet.linear_3.weight", "TFN").shape[0] + 1
    v = _take(state, "video_subnet.linear_3.weight", "TFN").shape[0] + 1
    t = _take(state, "text_subnet.linear_1.weight", "TFN").shape[0] + 1
    if first.shape[1] != a * v * t:
        raise ConversionError(f"official TFN post_fusion_layer_1 has {first.shape[1]} inputs, expected "
                              f"(audio+1)(video+1)(text+1) = {a * v * t}")
    # official columns: audio-major, then video, then text; ours: text-major, then audio, then vision
    ours["inference.1.weight"] = first.reshape(-1, a, v, t).permute(0, 3, 1, 2).reshape(first.shape[0], -1)
    for official, mine in (("post_fusion_layer_1.bias", "inference.1.bias"),
                           ("post_fusion_layer_2.weight", "inference.3.weight"),
                           ("post_fusion_layer_2.bias", "inference.3.bias"),
                           ("post_fusion_layer_3.weight", "inference.5.weight"),
                           ("post_fusion_layer_3.bias", "inference.5.bias")):
        ours[mine] = _take(state, official, "TFN")
    used |= {k for k in state if k.startswith("post_fusion_layer_")}
    # the official output is sigmoid * range + shift, fixed at [-3, 3]: ours bounds to the corpus's label range
    if "output_range" in state:
        low, width = float(state["output_shift"]), float(state["output_range"])
        if not torch.isclose(torch.tensor([low, low + width]), torch.tensor([-3.0, 3.0])).all():
            raise ConversionError(f"official TFN output range [{low}, {low + width}] is not the [-3, 3] ours uses")
        ours["output.scale"], ours["output.shift"] = torch.tensor(width), torch.tensor(low)
        used |= {"output_range", "output_shift"}
    _unexpected(state, used, "TFN")
    return ours


# MMSA's LMF and TFN (thuiar/MMSA, src/MMSA/models/singleTask) keep the official repositories' parameter names and
# layouts (tested against MMSA's code: tests/parity/test_lmf_tfn.py).
register_converter("lmf", "mmsa")(lmf_from_official)
register_converter("tfn", "mmsa")(tfn_from_official)
