"""SFT official weights (yding37/sft: `FullModelShell(rgb, spec, text tokenizers, SparseFusionTransformer)`).

Official names: `{rgb,spec,text}_tokenizer.{proj, cls_token (1, 1, d), pos_embedding (1, T + 1, d)}`;
`network.attns_{rgb,spec,text}.i` / `network.attns_fused.i` (torch nn.MultiheadAttention: packed in_proj, out_proj),
`network.mlps_*.i` (Sequential: 0 LayerNorm, 1 Linear, 4 Linear), `network.sparse_attn.{0,1,2}` (fairseq
attention, one per rgb/spec/text: q_proj, k_proj, v_proj, out_proj) and `network.classifier.{0,1}`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import ConversionError, StateDict, register_converter

MODALITY = {"rgb": "vision", "spec": "audio", "text": "text"}
SPARSE_ORDER = ("rgb", "spec", "text")  # official sparse_attn index -> modality
_MLP = {"0": "mlp_norm", "1": "mlp.up", "4": "mlp.down"}


def _attention(state: StateDict, official: str, ours: str, used: set[str]) -> dict[str, Tensor]:
    """torch nn.MultiheadAttention (packed) or fairseq attention (q/k/v_proj) -> our MultiHeadAttention."""
    out: dict[str, Tensor] = {}
    if f"{official}.in_proj_weight" in state:
        for kind in ("weight", "bias"):
            packed = state[f"{official}.in_proj_{kind}"]
            d = packed.shape[0] // 3
            out[f"{ours}.to_q.{kind}"], out[f"{ours}.to_kv.{kind}"] = packed[:d], packed[d:]
            used.add(f"{official}.in_proj_{kind}")
    elif f"{official}.q_proj.weight" in state:
        for kind in ("weight", "bias"):
            out[f"{ours}.to_q.{kind}"] = state[f"{official}.q_proj.{kind}"]
            out[f"{ours}.to_kv.{kind}"] = torch.cat([state[f"{official}.k_proj.{kind}"],
                                                      state[f"{official}.v_proj.{kind}"]])
            used |= {f"{official}.{p}_proj.{kind}" for p in "qkv"}
    else:
        raise ConversionError(f"official SFT state dict lacks the attention {official!r}")
    for kind in ("weight", "bias"):
        out[f"{ours}.out.{kind}"] = state[f"{official}.out_proj.{kind}"]
        used.add(f"{official}.out_proj.{kind}")
    return out


def _mlp(state: StateDict, official: str, ours: str, used: set[str]) -> dict[str, Tensor]:
    out = {}
    for index, name in _MLP.items():
        for kind in ("weight", "bias"):
            key = f"{official}.{index}.{kind}"
            if key not in state:
                raise ConversionError(f"official SFT state dict lacks {key!r}")
            out[f"{ours}.{name}.{kind}"] = state[key]
            used.add(key)
    return out


@register_converter("sft", "official")
def sft_from_official(state: StateDict, config: Any) -> dict[str, Tensor]:
    ours: dict[str, Tensor] = {}
    used: set[str] = set()
    for short, modality in MODALITY.items():
        prefix = f"{short}_tokenizer"
        if f"{prefix}.proj.weight" not in state:
            continue  # a corpus without this modality
        ours[f"tokenizers.{modality}.proj.weight"] = state[f"{prefix}.proj.weight"]
        ours[f"tokenizers.{modality}.proj.bias"] = state[f"{prefix}.proj.bias"]
        ours[f"tokenizers.{modality}.cls"] = state[f"{prefix}.cls_token"].reshape(-1)
        ours[f"tokenizers.{modality}.positions"] = state[f"{prefix}.pos_embedding"].reshape(
            -1, state[f"{prefix}.pos_embedding"].shape[-1])
        used |= {f"{prefix}.{p}" for p in ("proj.weight", "proj.bias", "cls_token", "pos_embedding")}
        for i in range(config.n_layers_pre_fusion):
            ours |= _attention(state, f"network.attns_{short}.{i}", f"unimodal.{modality}.{i}.attention.attn", used)
            ours |= _mlp(state, f"network.mlps_{short}.{i}", f"unimodal.{modality}.{i}", used)
        ours |= _attention(state, f"network.sparse_attn.{SPARSE_ORDER.index(short)}",
                           f"sparse_pooling.{modality}.attention.attn", used)
    for i in range(config.n_layers_post_fusion):
        ours |= _attention(state, f"network.attns_fused.{i}", f"joint.{i}.attention.attn", used)
        ours |= _mlp(state, f"network.mlps_fused.{i}", f"joint.{i}", used)
    for index in ("0", "1"):
        for kind in ("weight", "bias"):
            key = f"network.classifier.{index}.{kind}"
            if key not in state:
                raise ConversionError(f"official SFT state dict lacks {key!r}")
            ours[f"head.{index}.{kind}"] = state[key]
            used.add(key)
    left = sorted(set(state) - used)
    if left:
        raise ConversionError(f"official SFT state dict has keys this converter does not know (more layers than the "
                              f"config's, or fusion_layer_enabled): {left[:6]}")
    return ours
