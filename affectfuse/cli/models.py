"""`affectfuse models`: the registered models and their recipes."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..config.registry import get_entry, list_models, list_variants


@dataclass
class ModelsArgs:
    """List the registered models with their recipes and their named variants (`method:variant`)."""

    json: bool = False
    """Print one JSON object instead of a table."""



def cmd_models(args: ModelsArgs) -> None:
    rows = {
        name: {"config": get_entry(name).config.__name__, "recipes": list(get_entry(name).recipes),
               "variants": {v: get_entry(v).about for v in list_variants(name)}}
        for name in list_models()
    }
    if args.json:
        print(json.dumps(rows))
        return
    for name, row in rows.items():
        print(f"{name:12s} {row['config']:14s} recipes: {', '.join(row['recipes'])}")
        for variant, about in row["variants"].items():
            print(f"  {variant:24s} {about}")
