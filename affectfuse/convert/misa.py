"""MISA: the official `MISA` (declare-lab/MISA `src/models.py`; thuiar/MMSA's port has the same names) -> our `misa`.

Official names (modality letters t, v, a): `bertmodel.*` (BERT; MMSA: `bertmodel.model.*`), `{t,v,a}rnn{1,2}` and
`{t,v,a}layer_norm` (the sLSTMs), `project_{m}.project_{m}` / `.project_{m}_layer_norm`, `private_{m}.private_{m}_1`
(audio: `private_a_3`), `shared.shared_1`, `recon_{m}.recon_{m}_1`, `discriminator.discriminator_layer_{1,2}`,
`fusion.fusion_layer_{1,3}`, `transformer_encoder.layers.0.*` (`nn.TransformerEncoderLayer`). Ours: `text_encoder.bert`,
`encoders.{m}.{rnn1,norm,rnn2}`, `project.{m}.{0,2}`, `private.{m}.0`, `shared.0`, `aux.reconstruct.{m}`,
`aux.discriminator.{0,3}`, `head.{0,3}`, `fusion.{attn,ffn,norm1,norm2}` (the joint `in_proj` split into query and
key-value rows).

Dropped: `sp_discriminator.*` (its outputs enter no loss), BERT's pooler (unused), `tlayer_norm` when the text is
BERT's (unused there), and `embed.weight` of the GloVe path (the word-vector lookup: our text input is the vectors).
Both models order the fused vector l, v, a, so no permutation is needed.
"""

from __future__ import annotations

from torch import Tensor

from ..models.misa import MISAConfig
from . import StateDict, refuse_unknown, register_converter, take

SOURCE = "official MISA"
LETTER = {"text": "t", "vision": "v", "audio": "a"}
PRIVATE = {"text": "private_t_1", "vision": "private_v_1", "audio": "private_a_3"}
RNN = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
FUSION = "transformer_encoder.layers.0."
LINEAR = ("weight", "bias")


@register_converter("misa", "official")
def convert_official(official: StateDict, config: MISAConfig) -> dict[str, Tensor]:
    """The official MISA state dict -> ours for `config` (same tensors, our names)."""
    state = {k.removeprefix("Model.").replace("bertmodel.model.", "bertmodel."): v for k, v in official.items()}
    used: set[str] = set()
    ours: dict[str, Tensor] = {}

    def copy(official_name: str, our_name: str, parts: tuple[str, ...] = LINEAR) -> None:
        for p in parts:
            ours[f"{our_name}.{p}"] = take(state, f"{official_name}.{p}", SOURCE, used)

    bert = any(k.startswith("bertmodel.") for k in state)
    for m, x in LETTER.items():
        if m == "text" and bert:
            for k, v in state.items():
                if k.startswith("bertmodel."):
                    used.add(k)
                    if not k.startswith("bertmodel.pooler."):
                        ours[f"text_encoder.bert.{k.removeprefix('bertmodel.')}"] = v
            used |= {"tlayer_norm.weight", "tlayer_norm.bias"}
        else:
            directions = RNN + tuple(f"{p}_reverse" for p in RNN)
            copy(f"{x}rnn1", f"encoders.{m}.rnn1", directions)
            copy(f"{x}rnn2", f"encoders.{m}.rnn2", directions)
            copy(f"{x}layer_norm", f"encoders.{m}.norm")
        copy(f"project_{x}.project_{x}", f"project.{m}.0")
        copy(f"project_{x}.project_{x}_layer_norm", f"project.{m}.2")
        copy(f"private_{x}.{PRIVATE[m]}", f"private.{m}.0")
        copy(f"recon_{x}.recon_{x}_1", f"aux.reconstruct.{m}")
    copy("shared.shared_1", "shared.0")
    copy("fusion.fusion_layer_1", "head.0")
    copy("fusion.fusion_layer_3", "head.3")
    if config.similarity == "adversarial":
        copy("discriminator.discriminator_layer_1", "aux.discriminator.0")
        copy("discriminator.discriminator_layer_2", "aux.discriminator.3")
    d = config.hidden_size
    joint_w = take(state, f"{FUSION}self_attn.in_proj_weight", SOURCE, used)  # (3d, d): query, key, value rows
    joint_b = take(state, f"{FUSION}self_attn.in_proj_bias", SOURCE, used)
    ours |= {"fusion.attn.to_q.weight": joint_w[:d], "fusion.attn.to_kv.weight": joint_w[d:],
             "fusion.attn.to_q.bias": joint_b[:d], "fusion.attn.to_kv.bias": joint_b[d:]}
    copy(f"{FUSION}self_attn.out_proj", "fusion.attn.out")
    copy(f"{FUSION}linear1", "fusion.ffn.up")
    copy(f"{FUSION}linear2", "fusion.ffn.down")
    copy(f"{FUSION}norm1", "fusion.norm1")
    copy(f"{FUSION}norm2", "fusion.norm2")
    used |= {k for k in state if k.startswith("sp_discriminator.") or k == "embed.weight"}
    refuse_unknown(state, used, SOURCE, " (similarity='adversarial' needs the discriminator, 'cmd' none)")
    return ours
