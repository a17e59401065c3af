"""MulT official weights (yaohungt/Multimodal-Transformer `MULTModel`).

Official names: `proj_{l,a,v}` (Conv1d, no bias), `trans_{t}_with_{s}` (crossmodal transformer of target t from
source s), `trans_{t}_mem` (self-attention), `proj1`, `proj2`, `out_layer`; inside a transformer, `layers.i.self_attn`
with a packed `in_proj_weight` (query, key, value rows) and `out_proj`, `fc1`/`fc2`, `layer_norms.0/1`, and a final
`layer_norm`. Buffers `version` and `embed_positions._float_tensor` carry no weights.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from . import ConversionError, StateDict, register_converter

LETTER = {"l": "text", "a": "audio", "v": "vision"}
_LAYER_PARTS = {"self_attn.out_proj": "attn.out", "fc1": "ffn.up", "fc2": "ffn.down",
                "layer_norms.0": "norm", "layer_norms.1": "ffn_norm"}
_IGNORED = ("version", "embed_positions._float_tensor")


def transformer(state: StateDict, official: str, ours: str) -> dict[str, Tensor]:
    """One fairseq-style MulT transformer `official.*` as our `ours.*` (layers.TransformerEncoder)."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if not key.startswith(official + "."):
            continue
        rest = key[len(official) + 1:]
        if rest in _IGNORED:
            continue
        if rest.startswith("layer_norm."):
            out[f"{ours}.norm.{rest.split('.', 1)[1]}"] = value
            continue
        _, index, part = rest.split(".", 2)  # layers.<i>.<part>
        prefix = f"{ours}.layers.{index}"
        if part in ("self_attn.in_proj_weight", "self_attn.in_proj_bias"):
            kind = "weight" if part.endswith("weight") else "bias"
            d = value.shape[0] // 3
            out[f"{prefix}.attn.to_q.{kind}"], out[f"{prefix}.attn.to_kv.{kind}"] = value[:d], value[d:]
            continue
        module, _, leaf = part.rpartition(".")
        if module not in _LAYER_PARTS:
            raise ConversionError(f"official MulT key {key!r} is not a transformer-layer part this converter knows")
        out[f"{prefix}.{_LAYER_PARTS[module]}.{leaf}"] = value
    return out


@register_converter("mult", "official")
def mult_from_official(state: StateDict, config: Any) -> dict[str, Tensor]:
    ours: dict[str, Tensor] = {}
    used: set[str] = set()
    for key, value in state.items():
        head = key.split(".", 1)[0]
        if head in ("proj_l", "proj_a", "proj_v"):
            ours[f"conv.{LETTER[head[-1]]}.conv.weight"] = value
            used.add(key)
        elif head in ("proj1", "proj2"):
            ours[key] = value
            used.add(key)
        elif head == "out_layer":
            ours[f"out.{key.split('.', 1)[1]}"] = value
            used.add(key)
    for t in "lav":
        for s in "lav":
            if s != t:
                name = f"trans_{t}_with_{s}"
                ours |= transformer(state, name, f"crossmodal.{LETTER[s]}_to_{LETTER[t]}")
                used |= {k for k in state if k.startswith(name + ".")}
        name = f"trans_{t}_mem"
        if not getattr(config, "only", ()) or LETTER[t] in config.only:
            # partial modes (--lonly ...) still build every self-attention transformer officially; the unused
            # ones hold no trained weights and are dropped
            ours |= transformer(state, name, f"self_attention.{LETTER[t]}")
        used |= {k for k in state if k.startswith(name + ".")}
    left = sorted(set(state) - used)
    if left:
        raise ConversionError(f"official MulT state dict has keys this converter does not know: {left[:6]}")
    return ours
