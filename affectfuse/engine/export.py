"""A trained model as one TorchScript file for inference: `torch.jit.load(path)` runs it without affectfuse.
It holds the inference modules only (not the training-only `aux`).

The exported module takes two dicts keyed by modality (those of the model's input spec, e.g. "text", "audio",
"vision"): ``features`` (B, T_m, D_m) float32 and ``masks`` (B, T_m) bool, True on real steps, padded at the end as
`collate` pads them; it returns the prediction tensor, (B, K) scores or (B, K, C) logits. Features are raw: a model
trained on standardised features carries its statistics into the file and applies them. The input spec travels
inside the file (`affectfuse.json`, read with `exported_spec`).

Why TorchScript, not ONNX or `torch.export`: the models branch on their masks (skip the masking work when every step
is real, run LSTMs in length segments only when a batch is padded; a trace packs them instead, `layers.run_lstm`),
which `torch.export` cannot trace without rewriting every model,
and ONNX would add the `onnx`/`onnxruntime` packages to check the result. Tracing records one path of each branch,
so the example is built to take the general one (padded samples, and a sample lacking each modality where a modality
has one step), and every export is checked against the eager model on a second batch of other sizes.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..config import InputSpec, uses_bert_tokens
from ..data.batch import Batch
from ..io import atomic_write

SPEC_FILE = "affectfuse.json"


class _TensorInterface(nn.Module):
    """`model` behind a tensors-only signature: `Batch` is a Python dataclass, which a traced module cannot take."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(model)
        if isinstance(getattr(self.model, "aux", None), nn.ModuleDict):
            # training-only modules (base.FusionModel): never run by forward, so the file leaves them out
            self.model.aux = nn.ModuleDict()
        # a model trained on standardised features: the file takes raw ones, as `predict` does
        stats = model.spec.standardisation or {}
        self.moments = {m: (torch.tensor(s["mean"], dtype=torch.float32), torch.tensor(s["std"], dtype=torch.float32))
                        for m, s in stats.items()}

    def forward(self, features: dict[str, Tensor], masks: dict[str, Tensor]) -> Tensor:
        batch = Batch(features=standardised(features, masks, self.moments), masks=masks, label=torch.zeros(0), ids=[])
        return self.model(batch).prediction


def standardised(features: dict[str, Tensor], masks: dict[str, Tensor],
                 moments: dict[str, tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    """`features` z-scored with (mean, std) per modality, padding kept 0 (`data.standardisation`, in torch)."""
    return {m: (x - moments[m][0]) / moments[m][1] * masks[m][..., None] if m in moments else x
            for m, x in features.items()}


def example_batch(spec: InputSpec, batch_size: int = 3, *, seed: int = 0) -> Batch:
    """Random end-padded features of `spec`'s shape that take every model's general (masked) path: sample 0 is full
    length, the others shorter; a modality of one step is absent (all-False mask) in the last sample."""
    if uses_bert_tokens(spec):
        raise ValueError("this model reads BERT token ids as text; pass example= a batch of your own data to export it")
    generator = torch.Generator().manual_seed(seed)
    features, masks = {}, {}
    for m in spec.modalities:
        steps = max(1, min(spec.lengths[m], 6))
        lengths = torch.tensor([steps] + [max(1, steps - 1 - i % 2) for i in range(batch_size - 1)])
        mask = torch.arange(steps)[None, :] < lengths[:, None]
        if steps == 1:
            mask[-1] = False
        features[m] = torch.randn(batch_size, steps, spec.dims[m], generator=generator) * mask[..., None]
        masks[m] = mask
    label = torch.zeros(batch_size, spec.num_targets)
    return Batch(features=features, masks=masks, label=label, ids=[str(i) for i in range(batch_size)])


@torch.no_grad()
def export_torchscript(
    model: Any, path: Path | str, *, example: Batch | None = None, check: Batch | None = None, atol: float = 1e-5
) -> Path:
    """Trace `model` (in eval mode) into the TorchScript file `path`; returns the path.

    Args:
        example: the batch to trace with (default `example_batch(model.spec)`); it must contain padded samples.
        check: a batch the exported module must score like the eager model, within `atol` (default: another random
            batch with other batch size and lengths).

    Raises:
        ValueError: the traced module disagrees with the model on `check` (nothing is written then).
    """
    model = model.eval()
    example = example if example is not None else example_batch(model.spec, 3)
    check = check if check is not None else example_batch(model.spec, 5, seed=1)
    interface = _TensorInterface(model).eval()
    with warnings.catch_warnings():
        # tracing warns about every Python bool taken from a tensor (the mask branches this module is built around)
        # and about its own deprecation in favour of torch.export, which cannot take those branches (module docstring)
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(interface, (example.features, example.masks), check_trace=False, strict=False)
    moments = interface.moments
    expected = model(dataclasses.replace(check, features=standardised(check.features, check.masks, moments))).prediction
    got = traced(check.features, check.masks)
    if got.shape != expected.shape or not torch.allclose(got, expected, atol=atol, rtol=0):
        difference = (got - expected).abs().max().item() if got.shape == expected.shape else "shape"
        raise ValueError(f"the traced {model.model_name} does not reproduce the model (largest difference "
                         f"{difference}); it cannot be exported as TorchScript")
    extra = {SPEC_FILE: json.dumps({"model_name": model.model_name, "spec": model.spec.to_dict()})}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit.save` is deprecated", DeprecationWarning)  # as for tracing
        return atomic_write(path, lambda f: torch.jit.save(traced, f, _extra_files=extra))


def exported_spec(path: Path | str) -> dict[str, Any]:
    """{"model_name", "spec"} stored in a file written by `export_torchscript`."""
    extra = {SPEC_FILE: ""}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[SPEC_FILE])
