"""Text input for the transformer methods: precomputed features pass through; BERT token ids need a local model.

Corpora read with `text="bert_tokens"` carry text as (B, T, 3) float steps of (token id, attention mask, segment id)
and declare `extractors["text"] == "bert-tokens"`. Such text is encoded by a BERT-style model loaded from a local
directory (Hugging Face `transformers`, the optional extra ``affectfuse[text]``), as EMT-DLFR and DMD fine-tune
`bert-base-uncased` (spec shared/spec/methods.md §4.3, §6.1). Nothing is ever downloaded: the path must be an existing
directory holding a saved model, and it is loaded with ``local_files_only=True``.

To get one, on a machine with network::

    from transformers import AutoModel, AutoTokenizer
    AutoModel.from_pretrained("bert-base-uncased").save_pretrained("pretrained_berts/bert_en")
    AutoTokenizer.from_pretrained("bert-base-uncased").save_pretrained("pretrained_berts/bert_en")  # optional

then copy the directory and pass it as ``bert_path``.
"""

from __future__ import annotations

import contextlib
import inspect
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import InputSpec, uses_bert_tokens
from .layers import length_groups

BERT_CALL_COST = 64
"""The fixed cost of one BERT call in tokens, for choosing the length groups (`TextEncoder.by_length`)."""

CONFIG_FILE = "config.json"
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
"""A saved model directory holds `CONFIG_FILE` and at least one of these (what `save_pretrained` writes)."""

NO_DECAY = ("bias", "LayerNorm.weight", "LayerNorm.bias")
"""Parameter-name fragments that get no weight decay (the official EMT-DLFR/MMSA `bert_no_decay`)."""


class TextEncoder(nn.Module):
    """(B, T, D_in) text steps -> (B, T, out_dim) features.

    * Precomputed features (any extractor but "bert-tokens"): the identity; ``out_dim = D_in``, no parameters, and
      `bert_path` / `finetune` are ignored.
    * BERT token ids ((B, T, 3) steps of id, attention mask, segment id): a BERT-style model loaded from the local
      directory `bert_path`; the output is its ``last_hidden_state`` and ``out_dim`` its hidden size. Positions are
      attended where the token's attention mask is set and `mask` is True. Outputs at padded positions are returned
      as the model computes them, not zeroed (the official code feeds them on, e.g. to DMD's convolutions).

    Args:
        spec: the corpus's input spec; it must have text.
        bert_path: directory of a saved BERT-style model (``config.json`` + weights); needed for token-id text.
        finetune: train BERT (True, as EMT-DLFR and DMD do). False freezes it: its parameters do not require
            grad and it runs under ``torch.no_grad()``. Its dropout still follows ``train()``/``eval()``, as in the
            official `BertTextEncoder`.
    """

    def __init__(self, spec: InputSpec, *, bert_path: str = "", finetune: bool = True) -> None:
        super().__init__()
        if "text" not in spec.dims:
            raise ValueError("this corpus has no text modality; build no text encoder for it")
        self.tokens = uses_bert_tokens(spec)
        self.finetune = finetune
        self.bert: nn.Module | None = None
        if not self.tokens:
            self.out_dim = spec.dims["text"]
            return
        self.bert = load_bert(bert_path)
        self.out_dim = int(self.bert.config.hidden_size)
        if not finetune:
            self.bert.requires_grad_(False)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """(B, T, D_in) text and its (B, T) bool mask -> (B, T, out_dim)."""
        if self.bert is None:
            return x
        if x.shape[-1] != 3:
            raise ValueError(
                f"BERT token text must be (B, T, 3) steps of (id, attention, segment), got {tuple(x.shape)}"
            )
        ids = x[..., 0].round().long()
        attention = ((x[..., 1] > 0.5) & mask.to(torch.bool)).long()
        segments = x[..., 2].round().long()
        with contextlib.nullcontext() if self.finetune else torch.no_grad():
            if torch.jit.is_tracing() or not bool((attention[:, 1:] <= attention[:, :-1]).all()):
                # padding not all at the end (or a trace, which records one path): the whole batch in one call
                return self.bert(input_ids=ids, attention_mask=attention, token_type_ids=segments).last_hidden_state
            return self.by_length(ids, attention, segments)

    def by_length(self, ids: Tensor, attention: Tensor, segments: Tensor) -> Tensor:
        """BERT over end-padded tokens, each group of samples of similar lengths trimmed to its longest: a sample's
        real tokens attend only to each other, so their states are the same as in the padded batch (to rounding),
        for less work (`length_groups` picks the groups). Padded positions get zeros, not the states BERT computes
        there, which no method reads."""
        b, t = ids.shape
        lengths = attention.sum(1).clamp_min(1)
        sorted_lengths, order = torch.sort(lengths, descending=True, stable=True)
        as_list = sorted_lengths.tolist()
        stops = length_groups(as_list, BERT_CALL_COST)
        if len(stops) == 1:  # one group: the batch in its own order, trimmed; nothing to sort back
            out = self.bert(input_ids=ids[:, :stops[0]], attention_mask=attention[:, :stops[0]],
                            token_type_ids=segments[:, :stops[0]]).last_hidden_state
            states = F.pad(out, (0, 0, 0, t - stops[0]))
            return states if bool(attention.all()) else states * attention.unsqueeze(-1).to(states.dtype)
        pieces, start = [], 0
        for stop in stops:  # samples whose length is in (start, stop]: a slice of the sorted batch, trimmed to stop
            first, last = sum(1 for n in as_list if n > stop), sum(1 for n in as_list if n > start)
            rows = order[first:last]
            out = self.bert(input_ids=ids[rows, :stop], attention_mask=attention[rows, :stop],
                            token_type_ids=segments[rows, :stop]).last_hidden_state  # (n, stop, H)
            pieces.append(F.pad(out, (0, 0, 0, t - stop)))
            start = stop
        states = torch.cat(pieces[::-1])[torch.argsort(order)]  # (B, T, H), the input's order
        return states * attention.unsqueeze(-1).to(states.dtype)


def load_bert(bert_path: str | Path) -> nn.Module:
    """Load a BERT-style model (``transformers.AutoModel``) from a local directory, never from the network.

    The pooler, unused by the methods (they take ``last_hidden_state``), is removed so every parameter gets a
    gradient. The model is returned in float32.

    Raises:
        ValueError: `bert_path` is empty, or not a saved model directory.
        FileNotFoundError: `bert_path` does not exist.
        ImportError: `transformers` is not installed.
    """
    if not str(bert_path).strip():
        raise ValueError(
            "this corpus's text is BERT token ids (extractor 'bert-tokens'), which need a local BERT model "
            "directory: set the model option `bert_path` (CLI: --set bert_path=DIR) to it. Nothing is downloaded at "
            "run time; to get one, run `AutoModel.from_pretrained('bert-base-uncased').save_pretrained(DIR)` "
            "(bert-base-chinese for SIMS) on a machine with network and copy DIR here. Alternatively read the corpus "
            "with precomputed text features (read_mmsa_pickle(..., text='features'))."
        )
    path = Path(bert_path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"BERT model directory {str(path)!r} (bert_path) does not exist")
    if not path.is_dir() or not (path / CONFIG_FILE).is_file() or not any((path / f).is_file() for f in WEIGHT_FILES):
        found = sorted(p.name for p in path.iterdir())[:10] if path.is_dir() else "not a directory"
        raise ValueError(
            f"bert_path {str(path)!r} is not a saved model directory: expected {CONFIG_FILE} and weights "
            f"({' or '.join(WEIGHT_FILES)}), as written by `save_pretrained`; found {found}"
        )
    try:
        from transformers import AutoModel
    except ImportError as err:
        raise ImportError(
            "BERT token text needs Hugging Face transformers: pip install 'affectfuse[text]' "
            "(or use precomputed text features)"
        ) from err
    model = AutoModel.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    if "add_pooling_layer" in inspect.signature(type(model).__init__).parameters:  # its forward accepts no pooler
        model.pooler = None
    return model.float()


def bert_parameter_names(module: nn.Module) -> tuple[list[str], list[str]]:
    """Split the trainable parameters of `module` (a `TextEncoder` or a BERT) into (decay, no_decay) names.

    No decay: biases and LayerNorm parameters (EMT-DLFR §4.5: "BERT bias and LayerNorm parameters get weight
    decay 0"), matched by the official name fragments `NO_DECAY` and by module type (``nn.LayerNorm``).
    """
    norms = {
        f"{prefix}.{n}" if prefix else n
        for prefix, mod in module.named_modules()
        if isinstance(mod, nn.LayerNorm)
        for n, _ in mod.named_parameters(recurse=False)
    }
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if p.requires_grad:
            (no_decay if name in norms or any(f in name for f in NO_DECAY) else decay).append(name)
    return decay, no_decay


def bert_param_groups(module: nn.Module, *, lr: float, weight_decay: float) -> list[dict]:
    """Two optimiser groups for `module`'s trainable parameters: with `weight_decay`, and without (biases and
    LayerNorms), both at `lr`. Empty groups are left out, so an identity or frozen encoder gives []."""
    params = dict(module.named_parameters())
    decay, no_decay = bert_parameter_names(module)
    groups = [
        {"params": [params[n] for n in decay], "lr": lr, "weight_decay": weight_decay},
        {"params": [params[n] for n in no_decay], "lr": lr, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
