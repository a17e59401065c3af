"""`affectfuse profile`: parameters, FLOPs/MACs, latency and peak memory of registered models."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Literal

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------------
# Command line (wired into affectfuse.cli as `affectfuse profile`)
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class ProfileArgs:
    """Profile models on random full-length features of a corpus shape: parameters (inference vs training-only),
    FLOPs and MACs (= FLOPs / 2) of one forward, forward latency and training-step time (medians of warmed-up
    repeats), peak memory (CUDA: max_memory_allocated; CPU: peak anonymous resident memory of a child process,
    from /proc VmHWM, above its post-import baseline; tracemalloc cannot see torch's allocations) and samples/s.
    Each model uses its recipe for the shape's corpus."""

    model: tuple[str, ...] = ()
    """Registered model name(s) (see `affectfuse models`)."""
    all: bool = False
    """Profile every registered model."""
    shape: str = "mosei"
    """`mosi` (50/375/500), `mosei` (50/500/500), `sims` (39/400/55), `iemocap` (20/400/500), or T_l,T_a,T_v lengths
    with MOSEI's feature dims (768/74/35)."""
    batch: int = 8
    """Batch size (small by default so that CPU runs stay short)."""
    device: str = "cpu"
    """`cpu` or `cuda` (`cuda:N`)."""
    repeats: int = 5
    """Timed repeats; the median is reported."""
    warmup: int = 1
    """Untimed runs before timing."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Autocast precision: bf16/fp16 on CUDA, bf16 on CPU; fp16 on CPU is refused."""
    compile: bool = False
    """Run the forward pass and the training loss through `torch.compile` (compile time is not timed)."""
    memory: bool = True
    """Measure peak memory (on CPU this starts one child process per model)."""
    json: bool = False
    """Print one JSON object instead of a table."""


def cmd_profile(args: ProfileArgs) -> None:
    from ..config.registry import get_entry, list_models
    from ..efficiency.profile import format_profiles, machine_description, profile_model
    from ..efficiency.shapes import parse_shape

    if args.all == bool(args.model):
        raise ValueError("profile needs either --model NAME [NAME ...] or --all (not both)")
    names = list_models() if args.all else list(args.model)
    for name in names:
        get_entry(name)  # unknown names fail before any work
    shape = parse_shape(args.shape)
    profiles = []
    for name in names:
        profile = profile_model(
            name,
            shape,
            batch_size=args.batch,
            device=args.device,
            repeats=args.repeats,
            warmup=args.warmup,
            precision=args.precision,
            compile=args.compile,
            memory=args.memory,
        )
        profiles.append(profile)
        if not args.json:
            logger.info(f"profiled {name}")
    if args.json:
        payload = {
            "machine": machine_description(args.device),
            "shape": dataclasses.asdict(shape),
            "macs_definition": "MACs = FLOPs / 2 (torch.utils.flop_counter counts a multiply-add as 2 FLOPs)",
            "profiles": [p.row() for p in profiles],
        }
        print(json.dumps(payload))
        return
    print(f"{machine_description(args.device)}; shape {shape.name} {shape.lengths}; medians of {args.repeats}")
    print(format_profiles(profiles))
    print(f"memory: {profiles[0].memory_method}; MACs = FLOPs / 2")
