"""SFT official weights (yding37/sft: `FullModelShell(rgb, spec, text tokenizers, SparseFusionTransformer)`).

Official names: `{rgb,spec,text}_tokenizer.{proj, cls_token (1, 1, d), pos_embedding (1, T + 1, d)}`;
`network.attns_{rgb,spec,text}.i` / `network.attns_fused.i` (torch nn.MultiheadAttention: packed in_proj, out_proj),
`network.mlps_*.i` (Sequential: 0 LayerNorm, 1 Linear, 4 Linear), `network.sparse_attn.{0,1,2}` (fairseq
attention, one per rgb/spec/text: q_proj, k_proj, v_proj, out_proj) and `network.classifier.{0,1}`. rgb is our
vision, spec our audio. The attention sub-layers' LayerNorm has no parameters on either side.

Shapes are checked against our model by `affectfuse.convert.load_converted`; here a missing or unknown key is refused.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import StateDict, refuse_unknown, register_converter, take

SOURCE = "official SFT"
MODALITY = {"rgb": "vision", "spec": "audio", "text": "text"}
SPARSE_ORDER = ("rgb", "spec", "text")  # official sparse_attn index -> modality
_MLP = {"0": "mlp_norm", "1": "mlp.up", "4": "mlp.down"}


def _attention(state: StateDict, official: str, ours: str, used: set[str]) -> dict[str, Tensor]:
    """torch nn.MultiheadAttention (packed) or fairseq attention (q/k/v_proj) -> our MultiHeadAttention."""
    out: dict[str, Tensor] = {}
    for kind in ("weight", "bias"):
        if f"{official}.in_proj_weight" in state:
            packed = take(state, f"{official}.in_proj_{kind}", SOURCE, used)
            d = packed.shape[0] // 3
            out[f"{ours}.to_q.{kind}"], out[f"{ours}.to_kv.{kind}"] = packed[:d], packed[d:]
        else:
            q, k, v = (take(state, f"{official}.{p}_proj.{kind}", SOURCE, used) for p in "qkv")
            out[f"{ours}.to_q.{kind}"], out[f"{ours}.to_kv.{kind}"] = q, torch.cat([k, v])
        out[f"{ours}.out.{kind}"] = take(state, f"{official}.out_proj.{kind}", SOURCE, used)
    return out


def _mlp(state: StateDict, official: str, ours: str, used: set[str]) -> dict[str, Tensor]:
    return {f"{ours}.{name}.{kind}": take(state, f"{official}.{index}.{kind}", SOURCE, used)
            for index, name in _MLP.items() for kind in ("weight", "bias")}


@register_converter("sft", "official")
def sft_from_official(state: StateDict, config: Any) -> dict[str, Tensor]:
    """The official SFT state dict (or anything keyed like it, e.g. its gradients) under our SFT's names."""
    ours: dict[str, Tensor] = {}
    used: set[str] = set()
    for short, modality in MODALITY.items():
        prefix = f"{short}_tokenizer"
        if f"{prefix}.proj.weight" not in state:
            continue  # a corpus without this modality (load_converted names what our model then misses)
        ours[f"tokenizers.{modality}.proj.weight"] = take(state, f"{prefix}.proj.weight", SOURCE, used)
        ours[f"tokenizers.{modality}.proj.bias"] = take(state, f"{prefix}.proj.bias", SOURCE, used)
        ours[f"tokenizers.{modality}.cls"] = take(state, f"{prefix}.cls_token", SOURCE, used).reshape(-1)
        positions = take(state, f"{prefix}.pos_embedding", SOURCE, used)
        ours[f"tokenizers.{modality}.positions"] = positions.reshape(-1, positions.shape[-1])
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
            ours[f"head.{index}.{kind}"] = take(state, f"network.classifier.{index}.{kind}", SOURCE, used)
    refuse_unknown(state, used, SOURCE, " (more layers than the config's, or fusion_layer_enabled)")
    return ours
