"""TFR-Net: the official `TFR_NET` (the copy in sunlicai/EMT-DLFR, `models/missingTask/TFR_NET`) -> our `tfr_net`.

Official names (optionally under `Model.`, the `AMIO` wrapper whose state dict the official trainer saves):
`text_model.model` (the BERT), `align_subnet.Model.proj_{l,a,v}` (convolutions), `align_subnet.Model.trans_{t}_with_
{s}`, `trans_{t}_mem` and `trans_{t}_final` (fairseq-style transformers, letters l/a/v), `generator_{t,a,v}.Model.
linear`, `fusion_subnet.Model.{text,audio,vision}_encoder` (`gru.gru`, `cnn`, `fc`) and `fusion_subnet.Model.
classifier.linear_trans_{norm,hidden,final}`. Ours: `text_encoder.bert`, `conv.{m}.conv`, `crossmodal.{s}_to_{t}`,
`self_attention.{t}`, `aux.final.{t}`, `aux.generator.{m}`, `fusion.{m}` (`gru`, `gate`, `project`) and
`classifier.{0,1,4}`; each transformer's joint query/key/value projection is split as for MulT (`convert.mult`).

Dropped: BERT's pooler (unused), the transformers' `version` and position buffers, and the convolution of a
modality already d wide (the official model builds it but never applies it; ours is the identity).
"""

from __future__ import annotations

from torch import Tensor

from ..config import InputSpec
from ..models.tfr_net import TFRNet, TFRNetConfig
from . import ConversionError, StateDict, refuse_unknown, register_converter, take
from .fit import check_fit
from .mult import BUFFERS, transformer

LETTER = {"text": "l", "audio": "a", "vision": "v"}
GENERATOR = {"text": "t", "audio": "a", "vision": "v"}
ALIGN, FUSION, BERT, POOLER = "align_subnet.Model.", "fusion_subnet.Model.", "text_model.model.", "pooler."
CLASSIFIER = {"linear_trans_norm": 0, "linear_trans_hidden": 1, "linear_trans_final": 4}
SOURCE = "official TFR-Net"


def _probe(state: StateDict, config: TFRNetConfig) -> TFRNet:
    """Our model for the official widths, text as precomputed features of BERT's width: our names and shapes."""
    bert = f"{BERT}embeddings.word_embeddings.weight"
    dims, lengths = {}, {}
    for m, letter in LETTER.items():
        conv = take(state, f"{ALIGN}proj_{letter}.weight", SOURCE)  # (d, D_in, k)
        dims[m] = int(state[bert].shape[1]) if m == "text" and bert in state else int(conv.shape[1])
        lengths[m] = int(take(state, f"{ALIGN}trans_{letter}_final.layer_norm.weight", SOURCE).shape[0])
    return TFRNet(config, InputSpec(dims=dims, lengths=lengths))


@register_converter("tfr_net", "official")
def convert_official(official: StateDict, config: TFRNetConfig) -> dict[str, Tensor]:
    """The official TFR_NET (or AMIO-wrapped) state dict -> ours for `config` (same tensors, our names)."""
    state = {k.removeprefix("Model."): v for k, v in official.items()}
    probe = _probe(state, config)
    used = {k for k in state if k.endswith(BUFFERS) or k.startswith(BERT)}
    ours: dict[str, Tensor] = {}
    for t, lt in LETTER.items():
        groups = {f"trans_{lt}_mem": f"self_attention.{t}", f"trans_{lt}_final": f"aux.final.{t}"}
        groups |= {f"trans_{lt}_with_{ls}": f"crossmodal.{s}_to_{t}" for s, ls in LETTER.items() if s != t}
        for official_name, name in groups.items():
            part = transformer(state, f"{ALIGN}{official_name}", name)
            if not part:
                raise ConversionError(f"{SOURCE} state dict lacks the transformer {ALIGN}{official_name}")
            ours |= part
            used |= {k for k in state if k.startswith(f"{ALIGN}{official_name}.")}
        conv = take(state, f"{ALIGN}proj_{lt}.weight", SOURCE, used)
        if f"conv.{t}.conv.weight" in probe.state_dict():  # else the identity: the official conv is never applied
            ours[f"conv.{t}.conv.weight"] = conv
        for p in ("weight", "bias"):
            ours[f"aux.generator.{t}.{p}"] = take(state, f"generator_{GENERATOR[t]}.Model.linear.{p}", SOURCE, used)
        encoder = f"{FUSION}{t}_encoder."
        for key in [k for k in state if k.startswith(f"{encoder}gru.gru.")]:
            ours[f"fusion.{t}.gru.{key.removeprefix(encoder + 'gru.gru.')}"] = take(state, key, SOURCE, used)
        for official_name, name in (("cnn", "gate"), ("fc", "project")):
            for p in ("weight", "bias"):
                ours[f"fusion.{t}.{name}.{p}"] = take(state, f"{encoder}{official_name}.{p}", SOURCE, used)
    for official_name, index in CLASSIFIER.items():
        names = ("weight", "bias") + (("running_mean", "running_var", "num_batches_tracked") if index == 0 else ())
        for p in names:
            ours[f"classifier.{index}.{p}"] = take(state, f"{FUSION}classifier.{official_name}.{p}", SOURCE, used)
    refuse_unknown(state, used, SOURCE)

    check_fit(ours, probe.state_dict(), SOURCE, f"layers={config.layers}, fusion_gru_layers={config.fusion_gru_layers}")
    ours |= {f"text_encoder.bert.{k.removeprefix(BERT)}": v for k, v in state.items()
             if k.startswith(BERT) and not k.removeprefix(BERT).startswith(POOLER)}
    return ours
