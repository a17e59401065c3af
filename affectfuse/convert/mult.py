"""MulT: the official `MULTModel` (yaohungt/Multimodal-Transformer) and MMSA's `MULT` -> our `mult` model.

Both use the same names: `trans_{t}_with_{s}` (target t reads source s; letters l/a/v) and `trans_{t}_mem`, whose
fairseq layers hold one joint (3 d, d) `in_proj_weight` for queries, keys and values; `proj_{l,a,v}` convolutions;
`proj1`, `proj2`, `out_layer`. Ours: `crossmodal.{source}_to_{target}`, `self_attention.{target}`, the joint
projection split into `to_q` (first d rows) and `to_kv` (keys then values), `conv.{m}.conv`, `proj1`, `proj2`, `out`.

Buffers that hold no learnt value (`version`, `embed_positions._float_tensor`) are dropped. The official model
builds all three self-attention transformers even with `--lonly/--aonly/--vonly`; those of targets our config does
not keep are dropped. A modality whose input width equals d is not projected by the official code: its unused
convolution weight is replaced by the identity (on the first tap), which is what the official model computes.
MMSA's BERT text encoder (`text_model.*`) is not converted.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from ..models.mult import MIN_SELF_LAYERS, MulTConfig
from . import ConversionError, StateDict, register_converter

LETTER = {"text": "l", "audio": "a", "vision": "v"}
MODALITIES = tuple(LETTER)
BUFFERS = ("version", "embed_positions._float_tensor")

LAYER = {  # official name inside a fairseq layer -> ours inside a TransformerLayer (the joint projection aside)
    "self_attn.out_proj.weight": "attn.out.weight",
    "self_attn.out_proj.bias": "attn.out.bias",
    "fc1.weight": "ffn.up.weight",
    "fc1.bias": "ffn.up.bias",
    "fc2.weight": "ffn.down.weight",
    "fc2.bias": "ffn.down.bias",
    "layer_norms.0.weight": "norm.weight",
    "layer_norms.0.bias": "norm.bias",
    "layer_norms.1.weight": "ffn_norm.weight",
    "layer_norms.1.bias": "ffn_norm.bias",
}


def _encoder(official: str, ours: str, width: int, layers: int) -> Iterator[tuple[str, str, tuple[int, ...]]]:
    """(official name, our name, shape) of one encoder; the joint projection maps to ours with a ':q'/':kv' tag."""
    for i in range(layers):
        o, u = f"{official}.layers.{i}", f"{ours}.layers.{i}"
        yield f"{o}.self_attn.in_proj_weight", f"{u}.attn:weight", (3 * width, width)
        yield f"{o}.self_attn.in_proj_bias", f"{u}.attn:bias", (3 * width,)
        shapes = {"out_proj.weight": (width, width), "fc1.weight": (4 * width, width), "fc1.bias": (4 * width,),
                  "fc2.weight": (width, 4 * width)}
        for name, mine in LAYER.items():
            yield f"{o}.{name}", f"{u}.{mine}", shapes.get(name.removeprefix("self_attn."), (width,))
    yield f"{official}.layer_norm.weight", f"{ours}.norm.weight", (width,)
    yield f"{official}.layer_norm.bias", f"{ours}.norm.bias", (width,)


def _layout(config: MulTConfig) -> tuple[list[tuple[str, str, tuple[int, ...]]], list[str]]:
    """The official tensors our model needs (name, our name, shape) and the prefixes of official ones it drops."""
    d, targets = config.dim, [m for m in MODALITIES if not config.only or m in config.only]
    entries, dropped = [], []
    for t in MODALITIES:
        if t not in targets:
            dropped.append(f"trans_{LETTER[t]}_mem.")
            continue
        for s in MODALITIES:
            if s != t:
                entries += _encoder(f"trans_{LETTER[t]}_with_{LETTER[s]}", f"crossmodal.{s}_to_{t}", d, config.layers)
        entries += _encoder(f"trans_{LETTER[t]}_mem", f"self_attention.{t}", 2 * d, max(config.layers,
                                                                                          MIN_SELF_LAYERS))
    combined = 2 * d * len(targets)
    entries += [
        ("proj1.weight", "proj1.weight", (combined, combined)),
        ("proj1.bias", "proj1.bias", (combined,)),
        ("proj2.weight", "proj2.weight", (combined, combined)),
        ("proj2.bias", "proj2.bias", (combined,)),
        ("out_layer.weight", "out.weight", (-1, combined)),  # -1: any number of outputs
        ("out_layer.bias", "out.bias", (-1,)),
    ]
    return entries, dropped


def transformer(state: StateDict, official: str, ours: str) -> dict[str, Tensor]:
    """Every tensor of one fairseq-style transformer `official.*` found in `state`, as our `ours.*`
    (layers.TransformerEncoder); buffers without weights are dropped. Also used by the DMD converter, whose
    transformers are MulT's. Refuses a key that is no part of such a transformer."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if not key.startswith(official + ".") or key.endswith(BUFFERS):
            continue
        rest = key[len(official) + 1 :]
        if rest in ("layer_norm.weight", "layer_norm.bias"):
            out[f"{ours}.norm.{rest.split('.')[1]}"] = value
            continue
        parts = rest.split(".", 2)  # layers.<i>.<part>
        if len(parts) != 3 or parts[0] != "layers" or not parts[1].isdigit():
            raise ConversionError(f"official key {key!r} is not a part of a MulT transformer layer")
        prefix, part = f"{ours}.layers.{parts[1]}", parts[2]
        if part in ("self_attn.in_proj_weight", "self_attn.in_proj_bias"):
            kind, width = part.rsplit("_", 1)[1], value.shape[0] // 3
            out[f"{prefix}.attn.to_q.{kind}"], out[f"{prefix}.attn.to_kv.{kind}"] = value[:width], value[width:]
        elif part in LAYER:
            out[f"{prefix}.{LAYER[part]}"] = value
        else:
            raise ConversionError(f"official key {key!r} is not a part of a MulT transformer layer")
    return out


def _fits(shape: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    return len(shape) == len(expected) and all(e in (-1, s) for s, e in zip(shape, expected, strict=True))


def convert(state: StateDict, config: MulTConfig, *, source: str) -> dict[str, Tensor]:
    """Map an official or MMSA MulT state dict onto our names; refuses (one line) on missing, unexpected or
    misshapen tensors."""
    entries, dropped = _layout(config)
    d = config.dim
    required = {name for name, _, _ in entries} | {f"proj_{LETTER[m]}.weight" for m in MODALITIES}
    optional = {k for k in state if k.endswith(BUFFERS) or k.startswith(tuple(dropped))}
    missing = sorted(required - set(state))
    unexpected = sorted(set(state) - required - optional)
    if missing or unexpected:
        raise ConversionError(
            f"{source} MulT state dict does not fit dim={d}, layers={config.layers}, only={config.only}: "
            f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    wrong = [f"{name} {tuple(state[name].shape)} (expected {shape})" for name, _, shape in entries
             if not _fits(tuple(state[name].shape), shape)]
    for m in MODALITIES:
        name, kernel = f"proj_{LETTER[m]}.weight", config.kernel[m]
        if not _fits(tuple(state[name].shape), (d, -1, kernel)):
            wrong.append(f"{name} {tuple(state[name].shape)} (expected ({d}, input width, {kernel}))")
    if wrong:
        raise ConversionError(f"{source} MulT tensors have other shapes than dim={d}, kernel={config.kernel}: "
                              + ", ".join(wrong[:3]))

    ours: dict[str, Tensor] = {}
    for name, mine, _ in entries:
        tensor = state[name]
        if ":" in mine:  # the joint projection: queries, then keys and values
            prefix, kind = mine.split(":")
            width = tensor.shape[0] // 3
            ours[f"{prefix}.to_q.{kind}"] = tensor[:width].clone()
            ours[f"{prefix}.to_kv.{kind}"] = tensor[width:].clone()
        else:
            ours[mine] = tensor.clone()
    for m in MODALITIES:
        weight = state[f"proj_{LETTER[m]}.weight"]  # (d, D_in, k)
        if weight.shape[1] == d:  # the official code skips the projection: the identity on the current step
            weight = torch.zeros_like(weight)
            weight[:, :, 0] = torch.eye(d, dtype=weight.dtype)
        ours[f"conv.{m}.conv.weight"] = weight.clone()
    return ours


@register_converter("mult", "official")
def from_official(state: StateDict, config: MulTConfig) -> dict[str, Tensor]:
    """yaohungt/Multimodal-Transformer `MULTModel` (d is hard-coded 30 there: convert into `dim=30`)."""
    if not config.positions:
        raise ConversionError("the official MulT adds sinusoidal positions: convert into a config with positions=True")
    return convert(state, config, source="official")


@register_converter("mult", "mmsa")
def from_mmsa(state: StateDict, config: MulTConfig) -> dict[str, Tensor]:
    """thuiar/MMSA `MULT` (its encoders add no positions: convert into a config with positions=False)."""
    if config.positions:
        raise ConversionError("MMSA's MULT adds no positions: convert into a config with positions=False")
    return convert(state, config, source="mmsa")
