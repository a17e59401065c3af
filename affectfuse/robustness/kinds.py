"""The sweep's named choices, in a module light enough for `affectfuse sweep --help` (no numpy, no torch)."""

from typing import Literal

Protocol = Literal["train-and-test", "test-only"]
MissingKind = Literal["feature", "modality"]
MaskSeed = Literal["official", "per-seed"]
