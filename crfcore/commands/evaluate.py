"""``crfcore eval --data DIR``: a benchmark protocol (synthetic or polygon) on a dataset, a mIoU table per refiner.

Rows are given by ``--method``, comma-separated, each ``METHOD`` or ``METHOD:PRESET``, where ``PRESET`` is a shipped
preset kind (``crfcore.presets.names()``) or a preset file; ``--preset`` applies to the rows without one, e.g.
``--method convcrf,convcrf:rough_annotation,densecrf:rough_annotation``. Parameter flags apply to every row whose
refiner has that parameter.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..labels import VOID
from .common import add_method_args, add_scale_arg

__all__ = ["add_parser", "run", "parse_rows"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="benchmark: rough unaries from ground truth (noisy or polygons), refined, scored",
                       conflict_handler="resolve",
                       description="Make a rough unary from each ground-truth mask of DIR (synthetic: seeded noise, "
                                   "like a weak network; polygon: the outlines an annotator would draw, simplified "
                                   "and filled), refine it, and print mIoU, pixel accuracy and boundary F-score of "
                                   "the input and of each refiner.")
    p.add_argument("--data", type=Path, required=True, help="folder with images/ and masks/")
    p.add_argument("--protocol", default="synthetic", choices=("synthetic", "polygon"), help="benchmark protocol")
    p.add_argument("--num-classes", type=int, help="C (default: largest label + 1)")
    p.add_argument("--void", type=int, default=VOID, help="void label, ignored in scoring (CamVid: 11)")
    p.add_argument("--limit", type=int, help="only the first N pairs")
    p.add_argument("--max-side", type=int, metavar="N",
                   help="resize images (anti-aliased) and masks (nearest) so the longer side is N px, larger or "
                        "smaller, before the protocol; tolerances are then in px at that size")
    p.add_argument("--device", help="cpu or cuda")
    p.add_argument("--json", type=Path, help="also write the table as JSON")
    add_scale_arg(p)
    poly = p.add_argument_group("polygon protocol")
    poly.add_argument("--tolerance", type=float, help="polygon simplification tolerance [px] (default 4)")
    poly.add_argument("--background", metavar="CLASS|none",
                      help="class of pixels no polygon covers, not outlined itself (default 0); 'none' outlines "
                           "every class and leaves uncovered pixels unknown")
    poly.add_argument("--confidence", type=float,
                      help="probability of the annotated label in the unary, for every row (default: the row's "
                           "preset's, else crfcore.unary.DEFAULT_CONFIDENCE)")
    poly.add_argument("--band", type=float,
                      help="uncertain band along the annotation's outlines in the unary [px], for every row (default: "
                           "the row's preset's, else none; see crfcore.unary.from_labels)")
    add_method_args(p)
    p.add_argument("--method", default="convcrf", metavar="M[:PRESET],...",
                   help="rows: refiners, comma-separated, each optionally with a preset kind or file after ':'")
    p.add_argument("--preset", metavar="KIND|P.json",
                   help="preset for rows without their own: a shipped kind (network_output, rough_annotation, "
                        "scribbles) or a preset file")
    p.set_defaults(func=run)


def _preset(spec: str, method: str) -> tuple[Any, dict[str, float]]:
    """``(params, unary settings)`` for a preset kind name or a preset file (:attr:`crfcore.presets.Preset.unary`)."""
    from .. import presets

    found = presets.get(spec, method) if spec in presets.names() else presets.read(spec)
    if found.method != method:
        raise ValueError(f"preset {spec} is for method {found.method!r}, not {method!r}; write "
                         f"{found.method}:{spec} or choose another preset.")
    return found.params, dict(found.unary)


def parse_rows(methods: str, preset: str | None,
               overrides: dict[str, Any]) -> dict[str, tuple[str, Any, dict[str, float]]]:
    """Row name → ``(method, params, the preset's unary settings)`` from ``--method``, ``--preset`` and parameter
    flags; the unary settings are ``from_labels`` keyword arguments (empty without a preset or when it has none).

    Raises:
        ValueError: an unregistered method, a repeated row, a preset for another method, or a parameter flag that
            no row's refiner has.
    """
    from .. import params as P
    from .. import refiners
    from ..api import resolve_params

    rows: dict[str, tuple[str, Any, dict[str, float]]] = {}
    used: set[str] = set()
    for item in (s.strip() for s in methods.split(",")):
        method, _, own = item.partition(":")
        if method not in refiners.names():
            raise ValueError(f"--method: {method!r} is not a registered refiner; registered are "
                             f"{', '.join(map(repr, refiners.names()))}.")
        if item in rows:
            raise ValueError(f"--method lists {item!r} twice; give each row once.")
        spec = own or preset
        params, unary = _preset(spec, method) if spec else (None, {})
        valid = {s.name for s in P.specs(P.params_for(method))}
        mine = {k: v for k, v in overrides.items() if k in valid}
        used |= set(mine)
        rows[item] = (method, resolve_params(method, params, **mine), unary)
    unused = sorted(set(overrides) - used)
    if unused:
        raise ValueError(f"--{unused[0].replace('_', '-')} is not a parameter of any listed refiner "
                         f"({', '.join(sorted({m for m, _, _ in rows.values()}))}).")
    return rows


def _background(value: str) -> int | None:
    if value.lower() == "none":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"--background must be a class index or 'none', got {value!r}.") from None


def run(args: argparse.Namespace) -> int:
    from ..evaluate import Entry, PolygonRecipe, evaluate

    overrides = {k.removeprefix("param_"): v for k, v in vars(args).items()
                 if k.startswith("param_") and v is not None}
    rows = parse_rows(args.method, args.preset, overrides)
    polygon = args.protocol == "polygon"
    given = {k: v for k, v in (("tolerance", args.tolerance), ("confidence", args.confidence), ("band", args.band))
             if v is not None}
    if args.background is not None:
        given["background"] = _background(args.background)
    if given and not polygon:
        raise ValueError(f"--{', --'.join(given)} appl{'y' if len(given) > 1 else 'ies'} to the polygon protocol "
                         f"only; add --protocol polygon or drop {'them' if len(given) > 1 else 'it'}.")
    recipe = PolygonRecipe(**given)
    # a unary flag sets the recipe's default for every row, so it replaces the rows' preset values
    entries = {name: Entry(method, params, **({k: v for k, v in unary.items() if k not in given} if polygon else {}))
               for name, (method, params, unary) in rows.items()}

    def progress(done: int, total: int, name: str) -> None:
        print(f"\r  {done}/{total} {name:<30}", end="" if done < total else "\n", file=sys.stderr, flush=True)

    table = evaluate(args.data, entries, protocol=args.protocol, num_classes=args.num_classes,
                     ignore_index=args.void, polygon=recipe, limit=args.limit, max_side=args.max_side,
                     device=args.device, scale=args.scale, progress=progress)
    width = max(10, *(len(name) for name in table))
    print(f"{'':{width}} {'mIoU':>6} {'mIoU-gt':>7} {'acc':>6} {'bF':>6} {'ms/img':>8}   ({args.data})")
    for name, row in table.items():
        print(f"{name:{width}} {row['miou']:6.1f} {row['miou_gt']:7.1f} {row['accuracy']:6.1f} "
              f"{row['boundary_f']:6.1f} {row['ms_per_image']:8.0f}")
    if args.json:
        args.json.write_text(json.dumps(table, indent=2) + "\n")
    return 0
