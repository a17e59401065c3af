"""DMD official weights (mdswyz/DMD `trains/singleTask/model/dmd.py` and its two graph-distillation units).

Official names (modality letters l, v, a; the official order is l, v, a, ours text, audio, vision):
`proj_{m}` (Conv1d), `encoder_s_{m}` / `encoder_c` / `decoder_{m}` (kernel-1 Conv1d, no bias), `self_attentions_c_{m}`,
`trans_{t}_with_{s}`, `trans_{m}_mem` (MulT transformers), `proj1_{m}_low` / `proj2_{m}_low` / `out_layer_{m}_low`
(homogeneous heads), `proj1_{m}_high` / `proj2_{m}_high` / `out_layer_{m}_high` (heterogeneous heads), `align_c_{m}`
(margin projection), `proj1_c` / `proj2_c` / `out_layer_c` (common head), `weight_{m}` / `weight_c`, `proj1` /
`proj2` / `out_layer` (fusion); with BERT `text_model.model.*`. `proj_cosine_{m}` feeds no loss and is dropped.

The official checkpoint (`pt/dmd.pth`) holds the DMD model only; the two graph-distillation units are separate modules
in the official trainer and are never saved. Their weights are read from `homo_gd.*` and `hetero_gd.*` when present
(`W_logit`, `W_repr`, `W_edge`); their biases are dropped: a bias shifts every edge score of a sample by the same
amount, which the edge softmax cancels, so the loss and every other gradient do not depend on it. When neither unit
is present, ours start at zero (all edges equal), as they are needed only to train further.

Layout: the fused vector [h_l, h_v, h_a, c_fusion] and c_fusion = [c̄_l, c̄_v, c̄_a] are permuted to our modality
order in `weight_c`, the common head and the fusion MLP (rows and columns), so the same function is computed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import ConversionError, StateDict, refuse_unknown, register_converter
from .mult import transformer

LETTER = {"l": "text", "a": "audio", "v": "vision"}
OFFICIAL_ORDER = "lva"
OURS_ORDER = "lav"  # affectfuse's modality order: text, audio, vision
_GD_UNITS = {"homo_gd": "aux.homo_gd", "hetero_gd": "aux.hetero_gd"}
_GD_PARTS = ("W_logit.weight", "W_repr.weight", "W_edge.weight")
_GD_DROPPED = ("W_logit.bias", "W_repr.bias", "W_edge.bias")


def _blocks(width: int) -> Tensor:
    """Indices taking a vector of three official-order blocks (l, v, a) of `width` to our order (l, a, v)."""
    return torch.cat([torch.arange(width) + OFFICIAL_ORDER.index(m) * width for m in OURS_ORDER])


def _square(state: StateDict, name: str, order: Tensor) -> dict[str, Tensor]:
    """A Linear whose input and output both live in the permuted space."""
    return {"weight": state[f"{name}.weight"][order][:, order], "bias": state[f"{name}.bias"][order]}


def _need(state: StateDict, keys: list[str]) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise ConversionError(f"official DMD state dict lacks keys {missing[:6]}{' ...' if len(missing) > 6 else ''}")


@register_converter("dmd", "official")
def dmd_from_official(state: StateDict, config: Any) -> dict[str, Tensor]:
    d = config.dim
    c_order = _blocks(d)
    h_order = _blocks(2 * d)
    fused_order = torch.cat([h_order, c_order + 6 * d])
    fixed = ["weight_c", "proj1_c", "proj2_c", "out_layer_c", "proj1", "proj2", "out_layer"]
    _need(state, [f"{n}.{leaf}" for n in fixed for leaf in ("weight", "bias")])
    ours: dict[str, Tensor] = {}
    used: set[str] = set()

    def take(official: str, mine: str, transform: Any = None) -> None:
        for key, value in state.items():
            if key == official or key.startswith(official + "."):
                rest = key[len(official):]
                ours[mine + rest] = transform(value) if transform else value
                used.add(key)

    kernel1 = lambda w: w.squeeze(-1)  # noqa: E731 — a kernel-1 Conv1d is a per-step Linear
    for m, name in LETTER.items():
        take(f"proj_{m}", f"project.{name}.conv")
        take(f"encoder_s_{m}", f"specific.{name}", kernel1)
        take(f"decoder_{m}", f"aux.decoder.{name}", kernel1)
        take(f"align_c_{m}", f"aux.align.{name}")
        take(f"proj1_{m}_low", f"aux.homo_head.{name}.proj1")
        take(f"proj2_{m}_low", f"aux.homo_head.{name}.proj2")
        take(f"out_layer_{m}_low", f"aux.homo_head.{name}.out")
        take(f"proj1_{m}_high", f"aux.hetero_head.{name}.proj1")
        take(f"proj2_{m}_high", f"aux.hetero_head.{name}.proj2")
        take(f"out_layer_{m}_high", f"aux.hetero_out.{name}")
        take(f"weight_{m}", f"modality_weight.{name}")
        used |= {k for k in state if k.startswith(f"proj_cosine_{m}.")}  # feeds no loss
        for official, mine in ((f"self_attentions_c_{m}", f"common_attention.{name}"),
                               (f"trans_{m}_mem", f"memory.{name}")):
            ours |= transformer(state, official, mine)
            used |= {k for k in state if k.startswith(official + ".")}
        for s, source in LETTER.items():
            if s != m:
                official = f"trans_{m}_with_{s}"
                ours |= transformer(state, official, f"crossmodal.{source}_to_{name}")
                used |= {k for k in state if k.startswith(official + ".")}
    take("encoder_c", "common", kernel1)
    take("text_model.model", "text_encoder.bert")

    for official, mine in (("weight_c", "common_weight"), ("proj1_c", "aux.common_head.0.proj1"),
                           ("proj2_c", "aux.common_head.0.proj2")):
        ours |= {f"{mine}.{k}": v for k, v in _square(state, official, c_order).items()}
    ours["aux.common_head.1.weight"] = state["out_layer_c.weight"][:, c_order]
    ours["aux.common_head.1.bias"] = state["out_layer_c.bias"]
    for official in ("proj1", "proj2"):
        ours |= {f"fusion.{official}.{k}": v for k, v in _square(state, official, fused_order).items()}
    ours["out.weight"] = state["out_layer.weight"][:, fused_order]
    ours["out.bias"] = state["out_layer.bias"]
    used |= {f"{n}.{leaf}" for n in fixed for leaf in ("weight", "bias")}

    units = {unit for unit in _GD_UNITS if any(k.startswith(unit + ".") for k in state)}
    for unit, mine in _GD_UNITS.items():
        if units:  # both units, each complete: a partial one is an error below (missing keys)
            for part in _GD_PARTS:
                if f"{unit}.{part}" in state:
                    ours[f"{mine}.{part}"] = state[f"{unit}.{part}"]
            used |= {f"{unit}.{part}" for part in _GD_PARTS + _GD_DROPPED}
        else:  # an official checkpoint: the units were never saved
            size = config.homo_gd_size if unit == "homo_gd" else config.hetero_gd_size
            repr_dim = d if unit == "homo_gd" else 2 * d
            ours[f"{mine}.W_logit.weight"] = torch.zeros(size, state["out_layer.weight"].shape[0])
            ours[f"{mine}.W_repr.weight"] = torch.zeros(size, repr_dim)
            ours[f"{mine}.W_edge.weight"] = torch.zeros(1, 4 * size)
    refuse_unknown(state, used, "official DMD")
    return ours
