"""EMT-DLFR: the official `EMT_DLFR` (sunlicai/EMT-DLFR, `models/missingTask/EMT_DLFR.py`) -> our `emt_dlfr` model.

Official names (optionally under `Model.`, the `AMIO` wrapper whose state dict the official trainer saves):
`text_model.model` (the BERT), `audio_model` / `video_model` (`rnn`, `linear_1`), `proj_{text,audio,video}`,
`fusion.mpus.{layer}.{modality}.{direction}.layers.0.{0,1,2}` (cross-attention, self-attention, feed-forward, each
`norm` [+ `norm_context`] and `fn`), `fusion.attn_pools.{layer}.attention`, `{gmc_tokens,text,audio,video}_projector`
and `_predictor`, `recon_{text,audio,video}`, `post_fusion_layer_{1,2,3}`. Ours: `text_encoder.bert`,
`encoders.{audio,vision}`, `project.{m}`, `fusion.blocks.{k}`, `fusion.pools.{i}`, `aux.{projector,predictor}.{x}`,
`aux.reconstruct.{m}`, `head.{1,3,5}`.

The official state dict repeats a shared module under every name it is reachable by (with the official sharing all
three MPU flags are True: one CST under 2 x 3 x depth names); each of our blocks takes the first of its names and
every other name must hold the same values, else the weights were trained with less sharing than our config says.
Dropped: BERT's pooler (unused by the method) and the fixed position table `fusion.pos_embed.pe`, which must equal
ours (`models.emt_dlfr.interleaved_positions`); learnt positions are refused.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from ..config import InputSpec
from ..models.emt_dlfr import EMTDLFR, EMTDLFRConfig, interleaved_positions
from . import ConversionError, StateDict, register_converter

OFFICIAL = {"text": "text", "audio": "audio", "vision": "video"}
"""Our modality -> the official name fragment."""
BERT, POOLER, POSITIONS = "text_model.model.", "text_model.model.pooler.", "fusion.pos_embed.pe"
ATTENTION = {"fn.to_q.weight": "to_q.weight", "fn.to_kv.weight": "to_kv.weight", "fn.to_out.weight": "out.weight",
             "fn.to_out.bias": "out.bias"}
CST = (  # official name inside one CST's `layers.0` -> ours inside a CrossSelfTransformer
    [(f"0.norm.{p}", f"cross_norm.{p}") for p in ("weight", "bias")]
    + [(f"0.norm_context.{p}", f"context_norm.{p}") for p in ("weight", "bias")]
    + [(f"0.{o}", f"cross_attn.{u}") for o, u in ATTENTION.items()]
    + [(f"1.norm.{p}", f"self_norm.{p}") for p in ("weight", "bias")]
    + [(f"1.{o}", f"self_attn.{u}") for o, u in ATTENTION.items()]
    + [(f"2.norm.{p}", f"ffn_norm.{p}") for p in ("weight", "bias")]
    + [(f"2.fn.net.0.{p}", f"ffn.up.{p}") for p in ("weight", "bias")]
    + [(f"2.fn.net.2.{p}", f"ffn.down.{p}") for p in ("weight", "bias")]
)
BATCHNORM = ("running_mean", "running_var", "num_batches_tracked")


def _linear(official: str, ours: str, bias: bool = True) -> Iterator[tuple[str, str]]:
    yield f"{official}.weight", f"{ours}.weight"
    if bias:
        yield f"{official}.bias", f"{ours}.bias"


def _names(config: EMTDLFRConfig, probe: EMTDLFR) -> Iterator[tuple[str, str]]:
    """(official name, our name) of every tensor of our model but BERT's; shared blocks appear under each name."""
    for m in ("audio", "vision"):
        o = f"{OFFICIAL[m]}_model"
        for p in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            yield f"{o}.rnn.{p}", f"encoders.{m}.rnn.{p}"
        if isinstance(probe.encoders[m].linear, torch.nn.Linear):  # the identity when the LSTM is already out wide
            yield from _linear(f"{o}.linear_1", f"encoders.{m}.linear")
    for m in ("text", "audio", "vision"):
        if isinstance(probe.project[m], torch.nn.Linear):  # the identity when the modality is already D wide
            yield f"proj_{OFFICIAL[m]}.weight", f"project.{m}.weight"
    blocks = {id(b): k for k, b in enumerate(probe.fusion.blocks)}
    for i in range(config.layers):
        for m in range(3):
            for d in range(2):
                block = blocks[id(probe.fusion.block(i, m, d))]
                for o, u in CST:
                    yield f"fusion.mpus.{i}.{m}.{d}.layers.0.{o}", f"fusion.blocks.{block}.{u}"
        pool = i % len(probe.fusion.pools)
        for j in (0, 2):
            yield from _linear(f"fusion.attn_pools.{i}.attention.{j}", f"fusion.pools.{pool}.score.{j}")
    for x, o in {"global": "gmc_tokens", "text": "text", "audio": "audio", "vision": "video"}.items():
        yield from _linear(f"{o}_projector.net.0", f"aux.projector.{x}.net.0")
        for b in BATCHNORM:
            yield f"{o}_projector.net.1.{b}", f"aux.projector.{x}.net.1.{b}"
        yield from _linear(f"{o}_predictor.net.0", f"aux.predictor.{x}.net.0", bias=False)
        for p in ("weight", "bias", *BATCHNORM):
            yield f"{o}_predictor.net.1.{p}", f"aux.predictor.{x}.net.1.{p}"
        yield from _linear(f"{o}_predictor.net.3", f"aux.predictor.{x}.net.3")
    for m in ("text", "audio", "vision"):
        yield from _linear(f"recon_{OFFICIAL[m]}", f"aux.reconstruct.{m}")
    for j, ours in ((1, 1), (2, 3), (3, 5)):
        yield from _linear(f"post_fusion_layer_{j}", f"head.{ours}")


def _probe(state: StateDict, config: EMTDLFRConfig) -> EMTDLFR:
    """Our model with BERT replaced by precomputed features of BERT's width: every tensor but BERT's, our shapes."""
    widths = {"text": f"{BERT}embeddings.word_embeddings.weight", "audio": "audio_model.rnn.weight_ih_l0",
              "vision": "video_model.rnn.weight_ih_l0"}
    absent = [k for k in widths.values() if k not in state]
    if absent:
        raise ConversionError(f"official EMT-DLFR weights lack {absent}: not an EMT_DLFR state dict (missing keys)")
    dims = {m: int(state[k].shape[1]) for m, k in widths.items()}
    return EMTDLFR(config, InputSpec(dims=dims, lengths=dict.fromkeys(dims, 1)))


@register_converter("emt_dlfr", "official")
def convert_official(official: StateDict, config: EMTDLFRConfig) -> dict[str, Tensor]:
    """The official EMT_DLFR (or AMIO-wrapped) state dict -> ours for `config` (same tensors, our names)."""
    state = {k.removeprefix("Model."): v for k, v in official.items()}
    probe = _probe(state, config)
    expected = probe.state_dict()
    names = list(_names(config, probe))
    missing = sorted({o for o, _ in names} - set(state))
    bert = {k for k in state if k.startswith(BERT)}
    unexpected = sorted(set(state) - {o for o, _ in names} - bert - {POSITIONS})
    if missing or unexpected:
        raise ConversionError(
            f"official EMT-DLFR weights do not fit our config: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    ours: dict[str, Tensor] = {}
    source: dict[str, str] = {}
    for o, u in names:
        if u in source and not torch.equal(ours[u], state[o]):
            raise ConversionError(
                f"official {o} differs from {source[u]}, which our config shares with it (mpu_share/modality_share/"
                "layer_share must match the official run's)"
            )
        ours.setdefault(u, state[o])
        source.setdefault(u, o)
    wrong = [f"{source[k]} {tuple(v.shape)} (ours {tuple(expected[k].shape)})" for k, v in ours.items()
             if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        raise ConversionError(f"official EMT-DLFR weights have other shapes than our config: {', '.join(wrong[:3])}")
    if POSITIONS in state:
        table = state[POSITIONS].reshape(-1, state[POSITIONS].shape[-1]).float()
        fixed = interleaved_positions(table.shape[0], table.shape[1])
        if table.shape[1] != config.d_model or not torch.allclose(table, fixed, rtol=0, atol=1e-6):
            raise ConversionError(
                f"official {POSITIONS} {tuple(state[POSITIONS].shape)} is not the fixed table of width d_model="
                f"{config.d_model} (learnable_pos_emb=True is not supported)"
            )
    ours |= {f"text_encoder.bert.{k.removeprefix(BERT)}": v for k, v in state.items()
             if k in bert and not k.startswith(POOLER)}
    return ours
