"""Shared typed configuration: per-modality values, what the data provides, how to train.

This is a leaf module: models, data, the trainer and the CLI all import it; it imports nothing of theirs.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

MODALITIES: tuple[str, ...] = ("text", "audio", "vision")
"""The one modality order and spelling used everywhere (never `video`, `v` or `Feature_v`)."""

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class Modalities(Generic[T]):
    """One value per modality, named instead of positional (MMSA's `hidden_dims: [128, 16, 128]` is how bugs hide)."""

    text: T
    audio: T
    vision: T

    def __getitem__(self, modality: str) -> T:
        if modality not in MODALITIES:
            raise KeyError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
        return getattr(self, modality)

    def items(self) -> list[tuple[str, T]]:
        return [(m, getattr(self, m)) for m in MODALITIES]


TaskKind = Literal["regression", "classification"]
MetricFamily = Literal["mosi", "sims", "iemocap", "traits", "regression", "rating", "classification"]


@dataclass(frozen=True, kw_only=True)
class InputSpec:
    """What a corpus provides and a model is built for; saved in every checkpoint.

    `predict` and `evaluate` compare a checkpoint's spec with the data's spec, so a model is never fed features of
    another dimensionality or from another extractor.
    """

    dims: dict[str, int]
    """Feature dimension D_m of each modality present (a corpus may lack a modality, e.g. POM has no text)."""
    lengths: dict[str, int]
    """Padded sequence length T_m of each modality (1 for utterance-level features)."""
    task: TaskKind = "regression"
    targets: tuple[str, ...] = ("sentiment",)
    """Names of the K predicted targets: ("sentiment",), POM's 17 traits, IEMOCAP's emotions."""
    num_classes: int = 0
    """Classes per target for classification (IEMOCAP: 2 per emotion); 0 for regression."""
    metric_family: MetricFamily = "mosi"
    """Which paper metrics apply (spec §0.2-§0.4)."""
    aligned: bool = False
    """Word-aligned (equal T across modalities) or not."""
    label_centre: float | None = None
    """Rated scales (metric family "rating"): the neutral point; Acc-2/F1 compare label > centre with prediction >
    centre, leaving out labels exactly at it (as MOSI's non-0 Acc-2 around 0). None: not a rated scale."""
    label_scale: tuple[float, float] | None = None
    """Rated scales: the scale's ends (e.g. (1, 5)); Acc-N rounds predictions clipped to it. None: no rated scale."""
    extractors: dict[str, str] = field(default_factory=dict)
    """Identity of the feature extractor of each modality, e.g. {"audio": "COVAREP"}."""
    standardisation: dict[str, dict[str, list[float]]] | None = field(default=None, repr=False)
    """Features z-scored with these statistics before the model sees them (`data.standardisation`): modality ->
    {"mean": [...], "std": [...]}, one value per feature dimension, from the training data's train split. A model
    built for such a spec applies them to raw features itself (`evaluate`, `predict`); None: raw features."""

    def __post_init__(self) -> None:
        for m, stats in (self.standardisation or {}).items():
            problem = _statistics_problem(stats, self.dims.get(m))
            if problem:
                raise ValueError(f"the standardisation statistics of {m!r} {problem}")

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if m in self.dims)

    @property
    def num_targets(self) -> int:
        return len(self.targets)

    @property
    def output_size(self) -> int:
        """Width of the model's final layer: K scores, or K x C logits."""
        return self.num_targets * max(self.num_classes, 1)

    @property
    def label_range(self) -> tuple[float, float] | None:
        """The score range of sentiment corpora (MOSI/MOSEI [-3, 3], SIMS [-1, 1]) and of rated scales (their
        `label_scale`); None where there is none."""
        if self.metric_family == "rating":
            return self.label_scale
        return {"mosi": (-3.0, 3.0), "sims": (-1.0, 1.0)}.get(self.metric_family)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        d = dict(d)
        d["targets"] = tuple(d.get("targets", ("sentiment",)))
        if d.get("label_scale") is not None:
            d["label_scale"] = tuple(d["label_scale"])
        return cls(**d)

    def compatible_with(self, other: InputSpec) -> list[str]:
        """Reasons why data described by `other` cannot be fed to a model built for `self` (empty if none)."""
        problems = []
        for m in self.modalities:
            if m not in other.dims:
                problems.append(f"the model needs modality {m!r}, the data has only {list(other.dims)}")
            elif other.dims[m] != self.dims[m]:
                problems.append(f"{m} features are {other.dims[m]}-d in the data, the model expects {self.dims[m]}-d")
        for m, name in self.extractors.items():
            theirs = other.extractors.get(m)
            if theirs is not None and theirs != name:
                problems.append(f"{m} features come from extractor {theirs!r}, the model was trained on {name!r}")
        if (self.task, self.num_classes, self.targets) != (other.task, other.num_classes, other.targets):
            problems.append(
                f"the model predicts {self.task} targets {list(self.targets)} (classes={self.num_classes}), "
                f"the data has {other.task} targets {list(other.targets)} (classes={other.num_classes})"
            )
        return problems


def _statistics_problem(stats: Any, dim: int | None) -> str:
    """What is wrong with one modality's {"mean", "std"} (empty if nothing): a corrupted or mismatched entry."""
    if dim is None:
        return "are for a modality the input spec does not have"
    if not isinstance(stats, dict) or set(stats) != {"mean", "std"}:
        return f'are not {{"mean": [...], "std": [...]}} (got {type(stats).__name__} {str(stats)[:60]})'
    for key, values in stats.items():
        if not isinstance(values, (list, tuple)) or len(values) != dim:
            count = len(values) if isinstance(values, (list, tuple)) else type(values).__name__
            return f"have {count} {key} values for {dim}-d features"
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            return f"have a {key} value that is not a finite number"
    if min(stats["std"]) <= 0:
        return "have a std <= 0"
    return ""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to train, identical for every method; nothing method-specific lives here."""

    lr: float = 1e-3
    """Adam learning rate (a method may give some modules their own rate in `param_groups`)."""
    weight_decay: float = 0.0
    batch_size: int = 32
    max_epochs: int = 50
    patience: int = 8
    """Epochs without validation improvement before stopping (MMSA's early_stop)."""
    monitor: str = "auto"
    """Validation metric used for early stopping and model selection; `auto`: the metric family's default
    (`mae` for MOSI/SIMS/traits, `f1` for IEMOCAP). Direction comes from the metric itself."""
    optimizer: Literal["adam", "adamw"] = "adam"
    """Adam (coupled L2 weight decay, as MMSA-family code) or AdamW (decoupled, as SFT)."""
    grad_clip: float = 0.0
    """Clip the global gradient norm to this value; 0 disables clipping."""
    grad_clip_value: float = 0.0
    """Clip every gradient element to [-v, v] (DMD's clip_grad_value_ 0.6, MMSA MulT's 0.8); 0 disables it."""
    accumulate: int = 1
    """Optimiser step every N batches, gradients summed in between (EMT-DLFR 4, DMD 10; the loss is not divided)."""
    bucket: int = 0
    """Length-bucketed training batches: sort each pool of this many batches by sample length before batching
    (less padding on unaligned data, `data.corpus.BatchLoader`); 0 keeps plain random batches."""
    plateau_patience: int = 0
    """ReduceLROnPlateau on the monitored validation metric after this many bad epochs; 0 disables the scheduler."""
    plateau_factor: float = 0.1
    seed: int = 1111
    device: str = "auto"
    """`cpu`, `cuda`, `cuda:N` or `auto` (CUDA when available)."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Autocast of the training loss: bf16 or fp16 on CUDA (fp16 with a gradient scaler), bf16 on CPU; fp16 on CPU
    is refused. Weights and optimiser state stay float32, and validation/test are scored in float32 (exact metrics)."""
    compile: bool = False
    """Run the training loss through `torch.compile` (the first steps, and each new batch length, pay the compile)."""
    num_workers: int = 0

    def __post_init__(self) -> None:
        check_fields(self, "TrainConfig")
        positive = ("lr", "batch_size", "max_epochs", "accumulate", "plateau_factor")
        for name in positive:
            value = getattr(self, name)
            if not value > 0 or not math.isfinite(value):
                raise ValueError(f"TrainConfig.{name} must be a positive number, got {value!r}")
        for name in ("weight_decay", "grad_clip", "grad_clip_value", "patience", "bucket", "plateau_patience",
                     "num_workers"):
            value = getattr(self, name)
            if not value >= 0 or not math.isfinite(value):
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {value!r}")
        if self.plateau_factor >= 1:
            raise ValueError(f"TrainConfig.plateau_factor must be in (0, 1), got {self.plateau_factor!r}")
        if self.seed < 0:
            raise ValueError(f"TrainConfig.seed must be >= 0, got {self.seed!r}")


@dataclass(frozen=True, kw_only=True)
class Recipe(Generic[T]):
    """A paper's settings for one dataset, with where they come from."""

    model: T
    train: TrainConfig
    source: str


def replace_nested(obj: Any, overrides: dict[str, Any], *, what: str) -> Any:
    """`dataclasses.replace` with dotted keys (`hidden.audio`) and a clear error for unknown fields.

    String values (from the command line) are converted to the field's annotated type.
    """
    grouped: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    names = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head not in names:
            raise ValueError(f"{what} has no field {head!r}; valid fields: {sorted(names)}")
        if rest:
            grouped.setdefault(head, {})[rest] = value
        else:
            annotation = hints.get(head, Any)
            if isinstance(annotation, TypeVar) or annotation is Any:  # e.g. the T of Modalities[int]
                annotation = type(getattr(obj, head))
            direct[head] = _coerce(value, annotation, f"{what}.{head}")
    for head, sub in grouped.items():
        current = getattr(obj, head)
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"{what}.{head} is not a nested config; cannot set {list(sub)} inside it")
        direct[head] = replace_nested(current, sub, what=f"{what}.{head}")
    return dataclasses.replace(obj, **direct)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    if not isinstance(value, str):
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    try:
        if annotation is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if annotation in (int, float, str):
            return annotation(value)
        if origin is Literal:
            if value not in args:
                raise ValueError(value)
            return value
        if origin is tuple and args:
            return tuple(type(args[0])(v) if not isinstance(args[0], type) else args[0](v) for v in value.split(","))
    except ValueError:
        expected = f"one of {list(args)}" if origin is Literal else getattr(annotation, "__name__", annotation)
        raise ValueError(f"cannot set {where} to {value!r}: expected {expected}") from None
    return value


BERT_TOKENS = "bert-tokens"
"""The text extractor name of BERT token ids (encoded inside the model) rather than precomputed features."""


def uses_bert_tokens(spec: InputSpec) -> bool:
    """Whether the corpus's text is BERT token ids (to be encoded by `TextEncoder`) rather than features."""
    return spec.extractors.get("text") == BERT_TOKENS


def type_problem(value: Any, annotation: Any) -> str | None:
    """Why `value` does not fit `annotation` (None when it fits): the checks a JSON or TOML file can fail."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or isinstance(annotation, TypeVar):
        return None
    if origin in (typing.Union, types.UnionType):
        problems = [type_problem(value, a) for a in args]
        return None if any(p is None for p in problems) else f"expected {annotation}, got {value!r}"
    if origin is Literal:
        return None if value in args else f"expected one of {list(args)}, got {value!r}"
    if annotation is type(None):
        return None if value is None else f"expected None, got {value!r}"
    if annotation is bool:
        return None if isinstance(value, bool) else f"expected true/false, got {value!r}"
    if annotation is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else f"expected an integer, got {value!r}"
    if annotation is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else f"expected a number, got {value!r}"
    if annotation is str:
        return None if isinstance(value, str) else f"expected a string, got {value!r}"
    if origin is tuple:
        if not isinstance(value, tuple | list):
            return f"expected a list, got {value!r}"
        inner = args[0] if args and (len(args) == 1 or args[-1] is Ellipsis) else None
        for item in value if inner is not None else ():
            if (problem := type_problem(item, inner)) is not None:
                return f"in {list(value)!r}: {problem}"
        return None
    if origin is dict:
        return None if isinstance(value, dict) else f"expected a mapping, got {value!r}"
    cls = origin or annotation
    if dataclasses.is_dataclass(cls) and isinstance(cls, type):
        return None if isinstance(value, cls) else f"expected {cls.__name__} fields, got {value!r}"
    return None


def check_fields(obj: Any, what: str) -> None:
    """Every field of dataclass `obj` has a value of its annotated type; raises ValueError naming the first that
    does not (a recipe file, a checkpoint or a --set value of the wrong type)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        annotation = hints.get(f.name, Any)
        if isinstance(annotation, TypeVar) or (annotation is Any):
            continue
        if (problem := type_problem(value, annotation)) is not None:
            raise ValueError(f"{what}.{f.name}: {problem}")
