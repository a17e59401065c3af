"""`affectfuse models [NAME]`: the registered models and their recipes; one model's effective settings."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

import tyro


@dataclass
class ModelsArgs:
    """List the registered models with their recipes and named variants (`method:variant`); with a NAME, print the
    settings a `train` of that model on --data would use (recipe + --set), as a recipe file that `affectfuse train
    --recipe-file` accepts."""

    name: tyro.conf.Positional[str | None] = None
    """A model name: print its effective settings instead of the list."""
    data: Annotated[str | None, tyro.conf.arg(aliases=("-d",))] = None
    """The data spec whose recipe `--recipe auto` picks (as `train --data`); without it, the model's defaults."""
    recipe: str = "auto"
    """Dataset whose paper recipe to start from (as `train --recipe`)."""
    set: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """Overrides KEY=VALUE (as `train --set`)."""
    json: bool = False
    """Print one JSON object instead of a table (the list only; settings are always JSON)."""


def cmd_models(args: ModelsArgs) -> None:
    from ..config.registry import get_entry, list_models, list_variants

    if args.name is not None:
        print(json.dumps(effective_recipe(args), indent=2, default=float))
        return
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


def effective_recipe(args: ModelsArgs) -> dict[str, Any]:
    from ..config.overrides import parse_overrides
    from ..config.recipes import recipe_payload
    from ..config.registry import default_recipe

    assert args.name is not None
    if args.data is None and args.recipe == "auto":
        recipe_name, base = "default", default_recipe(args.name)
    else:  # the corpus only matters to "auto"
        from ..data.datasets import load_data
        from ..engine.runs import resolve_recipe

        corpus = load_data(args.data, nonfinite="zero") if args.data is not None else None
        recipe_name, base = resolve_recipe(args.name, corpus, args.recipe)  # type: ignore[arg-type]
    on = f" for --data {args.data}" if args.data is not None else ""
    return recipe_payload(args.name, base, parse_overrides(args.set),
                          source=f"affectfuse models {args.name}{on}: recipe {recipe_name!r} ({base.source})")
