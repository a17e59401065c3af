"""MMIM: the official `MMIM` (declare-lab/Multimodal-Infomax, `src/model.py`) -> our `mmim` model.

Official names: `text_enc.bertmodel` (the BERT), `acoustic_enc` / `visual_enc` (`rnn`, `linear_1`),
`mi_{tv,ta,va}` (`mlp_mu`, `mlp_logvar`, `entropy_prj.0`), `cpc_z{t,v,a}.net`, `fusion_prj.linear_{1,2,3}`.
Ours: `text_encoder.bert`, `encoders.{audio,vision}` (`rnn`, `linear`), `aux.mmilb.{tv,ta,va}` (`mu`, `logvar`, and
the entropy projection's buffers `entropy_weight` / `entropy_bias`), `aux.cpc.{text,vision,audio}.net`,
`linear_{1,2,3}`. BERT's pooler (unused by the method) is dropped.
"""

from __future__ import annotations

from torch import Tensor

from ..config import InputSpec
from ..models.mmim import MMIM, MMIMConfig
from . import StateDict, refuse_unknown, register_converter, take
from .fit import check_fit

BERT, POOLER = "text_enc.bertmodel.", "pooler."
ENCODER = {"audio": "acoustic_enc", "vision": "visual_enc"}
CPC = {"text": "cpc_zt", "vision": "cpc_zv", "audio": "cpc_za"}
SOURCE = "official MMIM"


def _probe(state: StateDict, config: MMIMConfig) -> MMIM:
    """Our model for the official widths (text as precomputed features of BERT's width): our names and shapes."""
    widths = {"text": f"{BERT}embeddings.word_embeddings.weight", "audio": "acoustic_enc.rnn.weight_ih_l0",
              "vision": "visual_enc.rnn.weight_ih_l0"}
    dims = {m: int(take(state, k, SOURCE).shape[1]) for m, k in widths.items()}
    return MMIM(config, InputSpec(dims=dims, lengths=dict.fromkeys(dims, 1)))


@register_converter("mmim", "official")
def convert_official(official: StateDict, config: MMIMConfig) -> dict[str, Tensor]:
    """The official MMIM state dict -> ours for `config` (same tensors, our names)."""
    state = {k.removeprefix("Model."): v for k, v in official.items()}
    probe = _probe(state, config)
    expected = probe.state_dict()
    used = {k for k in state if k.startswith(BERT)}
    ours: dict[str, Tensor] = {}

    def move(prefix: str, mine: str) -> None:
        for key in [k for k in state if k.startswith(prefix + ".")]:
            ours[mine + key[len(prefix):]] = take(state, key, SOURCE, used)

    for m, name in ENCODER.items():
        move(f"{name}.rnn", f"encoders.{m}.rnn")
        move(f"{name}.linear_1", f"encoders.{m}.linear")
    for m, name in CPC.items():
        move(f"{name}.net", f"aux.cpc.{m}.net")
    for pair in probe.aux["mmilb"]:
        move(f"mi_{pair}.mlp_mu", f"aux.mmilb.{pair}.mu")
        move(f"mi_{pair}.mlp_logvar", f"aux.mmilb.{pair}.logvar")
        for p in ("weight", "bias"):
            ours[f"aux.mmilb.{pair}.entropy_{p}"] = take(state, f"mi_{pair}.entropy_prj.0.{p}", SOURCE, used)
    for i in (1, 2, 3):
        move(f"fusion_prj.linear_{i}", f"linear_{i}")
    refuse_unknown(state, used, SOURCE, " (a v-a pair needs add_va=True, more LSTM layers rnn_layers)")
    check_fit(ours, expected, SOURCE, f"bidirectional={config.bidirectional}, cpc_layers={config.cpc_layers}, "
              f"add_va={config.add_va}")
    ours |= {f"text_encoder.bert.{k.removeprefix(BERT)}": v for k, v in state.items()
             if k.startswith(BERT) and not k.removeprefix(BERT).startswith(POOLER)}
    return ours
