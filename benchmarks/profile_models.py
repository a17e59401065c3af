"""`affectfuse profile --all` for the papers' corpus shapes, saved for RESULTS.md.

    python benchmarks/profile_models.py --shape mosei mosi --batch 8 --repeats 3

Writes `benchmarks/results/profile_<shape>_<device>.json` (the CLI's `--json` object) and prints the Markdown tables.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from affectfuse.config.registry import list_models
from affectfuse.efficiency.profile import format_profiles, machine_description, profile_model
from affectfuse.efficiency.shapes import parse_shape
from affectfuse.io import write_json

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", nargs="+", default=["mosei"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    for name in args.shape:
        shape = parse_shape(name)
        machine = machine_description(args.device)
        profiles = [
            profile_model(m, shape, batch_size=args.batch, device=args.device, repeats=args.repeats)
            for m in list_models()
        ]
        payload = {
            "machine": machine,
            "machine_after": machine_description(args.device),
            "shape": dataclasses.asdict(shape),
            "macs_definition": "MACs = FLOPs / 2",
            "profiles": [p.row() for p in profiles],
        }
        path = write_json(RESULTS / f"profile_{shape.name}_{args.device.split(':')[0]}.json", payload)
        print(f"{machine}\n\n{format_profiles(profiles)}\n\nwrote {path}\n", flush=True)


if __name__ == "__main__":
    main()
