"""Parameters (inference vs training-only) and FLOPs/MACs, counted with torch.utils.flop_counter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from ..data.batch import Batch

# ---------------------------------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------------------------------

TRAINING_ONLY_ATTRIBUTE = "aux"
"""Where every model declares its training-only modules (see `models.base.FusionModel`)."""


def training_only_modules(model: nn.Module) -> nn.Module | None:
    """The module holding `model`'s training-only parts (its `aux`), or None when it has none."""
    aux = getattr(model, TRAINING_ONLY_ATTRIBUTE, None)
    return aux if isinstance(aux, nn.Module) else None


def count_parameters(model: nn.Module) -> dict[str, int]:
    """{"total", "inference", "training_only"}: a parameter shared by `aux` and the rest counts as inference."""
    aux = training_only_modules(model)
    aux_ids = {id(p) for p in aux.parameters()} if aux is not None else set()
    inference_ids = {id(p) for n, p in model.named_parameters() if not n.startswith(f"{TRAINING_ONLY_ATTRIBUTE}.")}
    total = {id(p): p.numel() for p in model.parameters()}
    training_only = sum(total[i] for i in aux_ids - inference_ids)
    return {
        "total": sum(total.values()),
        "inference": sum(total.values()) - training_only,
        "training_only": training_only,
    }


# ---------------------------------------------------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------------------------------------------------


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001
    """CPU fused attention: QK^T and AV, 2 * B * h * T_q * T_k * (d_k + d_v)."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kw) -> int:  # noqa: ANN001
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _mkldnn_lstm_flop(input_shape, w_ih_shape, w_hh_shape, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001
    """One unpacked oneDNN LSTM layer over (T, B, D): input and recurrent products of the 4 gates at every step."""
    steps, batch = input_shape[0], input_shape[1]
    gates, d_in = w_ih_shape
    return 2 * steps * batch * gates * (d_in + w_hh_shape[1])


aten = torch.ops.aten
EXTRA_FLOP_FORMULAS: dict[Any, Callable[..., int]] = {
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flop,
    aten.mkldnn_rnn_layer: _mkldnn_lstm_flop,
}
"""Kernels the stock `FlopCounterMode` does not count (PyTorch 2.13): without them attention on CPU counts zero."""


def flop_counter() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS)


def count_flops(model: nn.Module, batch: Batch) -> int:
    """FLOPs of one eval-mode forward pass over `batch`."""
    was_training = model.training
    model.eval()
    counter = flop_counter()
    try:
        with torch.no_grad(), counter:
            model(batch)
    finally:
        model.train(was_training)
    return counter.get_total_flops()


def count_training_flops(model: nn.Module, batch: Batch) -> int:
    """FLOPs of the model's full training loss (every view and auxiliary term) plus its backward pass."""
    was_training = model.training
    model.train()
    counter = flop_counter()
    try:
        with counter:
            model.loss(batch).total.backward()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return counter.get_total_flops()
