"""``crfcore eval --data DIR``: a benchmark protocol on a dataset, a table of mIoU, boundary F and thin recall per row.

Protocols (:mod:`crfcore.evaluate`): ``synthetic`` (noisy unaries), ``polygon`` (annotations simplified to
``--tolerance`` px), ``perturb`` (masks dilated or eroded by ``--offset`` px, ``--jitter``), ``strokes`` (a simulated
annotator paints ``--budget`` strokes from nothing). ``--max-side N`` first resizes every pair so the longer side is
N px; tolerances and offsets are pixels at that size.

Rows are given by ``--method``, comma-separated, each ``METHOD`` or ``METHOD:PRESET``, where ``PRESET`` is a shipped
preset kind (``crfcore.presets.names()``) or a preset file; ``--preset`` applies to the refiner rows without one,
e.g. ``--method convcrf,convcrf:rough_annotation,densecrf:rough_annotation``. Without a preset, the mask and strokes
protocols take the refiner's shipped preset of the input's kind (``crfcore.refine_mask``), the synthetic one its
defaults. Parameter flags apply to every row whose refiner has that parameter; the ``refine_mask`` settings
(``--roughness``, ``--confidence``, ...) to every refiner row of the mask and strokes protocols. Peers
(``crfcore.peers``, the ``bench`` extra) are rows too: ``grabcut`` (polygon, perturb) and ``random_walker``
(strokes); they are marked ``(peer)`` in the table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from ..labels import VOID
from .common import add_method_args, add_scale_arg

__all__ = ["add_parser", "run", "parse_rows"]


def _unary_specs() -> list[Any]:
    from .. import params as P

    return list(P.specs(P.UnaryParams))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="benchmark: rough inputs from ground truth (noise, polygons, perturbed masks, "
                                    "simulated strokes), refined, scored",
                       conflict_handler="resolve",
                       description="Make a rough input from each ground-truth mask of DIR (synthetic: seeded noise, "
                                   "like a weak network; polygon: the outlines an annotator would draw, simplified "
                                   "and filled; perturb: the mask dilated or eroded, its outline jittered; strokes: "
                                   "a simulated annotator's brush strokes from nothing), refine it, and print mIoU, "
                                   "boundary F-score and the recall of thin classes of the input and of each row.")
    p.add_argument("--data", type=Path, required=True, help="folder with images/ and masks/")
    p.add_argument("--protocol", default="synthetic", choices=("synthetic", "polygon", "perturb", "strokes"),
                   help="benchmark protocol")
    p.add_argument("--num-classes", type=int, help="C (default: largest label + 1)")
    p.add_argument("--void", type=int, default=VOID, help="void label, ignored in scoring (CamVid: 11)")
    p.add_argument("--limit", type=int, help="only the first N pairs")
    p.add_argument("--max-side", type=int, metavar="N",
                   help="resize images (anti-aliased) and masks (nearest) so the longer side is N px, larger or "
                        "smaller, before the protocol; tolerances are then in px at that size")
    p.add_argument("--thin-width", type=float, metavar="PX",
                   help="classes whose median width along their medial axis is at most this are thin (default 8)")
    p.add_argument("--device", help="cpu or cuda")
    p.add_argument("--json", type=Path, help="also write the table as JSON")
    add_scale_arg(p)
    poly = p.add_argument_group("polygon and perturb protocols")
    poly.add_argument("--tolerance", type=float, help="polygon: simplification tolerance [px] (default 4)")
    poly.add_argument("--background", metavar="CLASS|none",
                      help="class of pixels no polygon covers, not outlined itself, and the class perturbed regions "
                           "grow into (default 0); polygon only: 'none' outlines every class and leaves uncovered "
                           "pixels unknown")
    poly.add_argument("--offset", type=float, help="perturb: dilate (> 0) or erode (< 0) every region by this [px] "
                                                   "(default 4)")
    poly.add_argument("--jitter", type=float, help="perturb: std of the outline's random displacement [px] "
                                                   "(default 0)")
    poly.add_argument("--correlation", type=float, help="perturb: length over which the jitter varies [px] "
                                                        "(default 8)")
    poly.add_argument("--seed", type=int, help="perturb: seed of the jitter (mixed with each image's name)")
    stroke = p.add_argument_group("strokes protocol")
    stroke.add_argument("--budget", type=int, help="strokes per image (default 20)")
    stroke.add_argument("--radius", type=float, help="brush radius [px] (default 4)")
    unary = p.add_argument_group("refine_mask settings (mask and strokes protocols; override the presets)")
    unary.add_argument("--roughness", metavar="auto|PX",
                       help="how far the input's outline may be off [px], or auto (default); GrabCut: its trimap "
                            "band, auto taking the protocol's (the tolerance, |offset| + 2 jitter)")
    for spec in _unary_specs():
        kind = {"int": int, "float": float}.get(spec.kind, str)
        unary.add_argument(f"--{spec.name.replace('_', '-')}", dest=f"unary_{spec.name}", type=kind,
                           metavar=spec.name.upper(), help=f"{spec.help} (default {spec.default})")
    add_method_args(p)
    p.add_argument("--method", default="convcrf", metavar="M[:PRESET],...",
                   help="rows: refiners, comma-separated, each optionally with a preset kind or file after ':'; "
                        "peers: grabcut, random_walker")
    p.add_argument("--preset", metavar="KIND|P.json",
                   help="preset for refiner rows without their own: a shipped kind (network_output, "
                        "rough_annotation, scribbles) or a preset file")
    p.set_defaults(func=run)


def _preset(spec: str, method: str) -> Path:
    """The preset file of a kind name or a path, checked to be for ``method``."""
    from .. import presets

    file = presets.path(spec, method) if spec in presets.names() else Path(spec)
    found = presets.read(file)
    if found.method != method:
        raise ValueError(f"preset {spec} is for method {found.method!r}, not {method!r}; write "
                         f"{found.method}:{spec} or choose another preset.")
    return file


def parse_rows(methods: str, preset: str | None, overrides: dict[str, Any],
               settings: dict[str, Any] | None = None) -> dict[str, tuple[str, Path | None, dict[str, Any]]]:
    """Row name → ``(method, preset file or None, overrides)`` from ``--method``, ``--preset``, the parameter flags
    (``overrides``, applied to the rows whose refiner has them) and the ``refine_mask`` settings flags
    (``settings``, applied to every refiner row).

    Raises:
        ValueError: a method that is neither a refiner nor a peer, a repeated row, a preset for another method or
            for a peer, or a parameter flag that no row's refiner has.
    """
    from .. import params as P
    from .. import peers, refiners

    rows: dict[str, tuple[str, Path | None, dict[str, Any]]] = {}
    used: set[str] = set()
    for item in (s.strip() for s in methods.split(",")):
        method, _, own = item.partition(":")
        if method not in refiners.names() and method not in peers.PEERS:
            raise ValueError(f"--method: {method!r} is neither a registered refiner "
                             f"({', '.join(map(repr, refiners.names()))}) nor a peer "
                             f"({', '.join(map(repr, peers.PEERS))}).")
        if item in rows:
            raise ValueError(f"--method lists {item!r} twice; give each row once.")
        if method in peers.PEERS:
            if own:
                raise ValueError(f"--method: the peer {method!r} takes no preset; write {method} alone.")
            rows[item] = (method, None, {})
            continue
        spec = own or preset
        valid = {s.name for s in P.specs(P.params_for(method))}
        mine = {k: v for k, v in overrides.items() if k in valid}
        used |= set(mine)
        rows[item] = (method, _preset(spec, method) if spec else None, {**(settings or {}), **mine})
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


def _roughness(value: str | None) -> float | str:
    if value is None or value == "auto":
        return "auto"
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"--roughness must be 'auto' or a number of pixels, got {value!r}.") from None


def _recipes(args: argparse.Namespace) -> dict[str, Any]:
    """The protocol's recipe keyword for :func:`crfcore.evaluate.evaluate`, from its flags; flags of another
    protocol are an error."""
    from ..evaluate import PerturbRecipe, PolygonRecipe, StrokeRecipe

    groups = {"polygon": ("tolerance", "background"), "perturb": ("offset", "jitter", "correlation", "seed",
                                                                  "background"),
              "strokes": ("budget", "radius")}
    given = {k for names in groups.values() for k in names if getattr(args, k) is not None}
    foreign = sorted(given - set(groups.get(args.protocol, ())))
    if foreign:
        where = sorted(p for p, names in groups.items() if foreign[0] in names)
        raise ValueError(f"--{foreign[0]} applies to the {' and '.join(where)} protocol"
                         f"{'s' if len(where) > 1 else ''} only; add --protocol {where[0]} or drop it.")
    values = {k: getattr(args, k) for k in given}
    if "background" in values:
        values["background"] = _background(values["background"])
        if values["background"] is None and args.protocol == "perturb":
            raise ValueError("--background none: the perturb protocol grows regions into a background class and "
                             "leaves eroded pixels to it; give a class index.")
    if args.protocol == "polygon":
        return {"polygon": PolygonRecipe(**values)}
    if args.protocol == "perturb":
        return {"perturb": PerturbRecipe(**values)}
    if args.protocol == "strokes":
        return {"strokes": StrokeRecipe(**values)}
    return {}


def _cell(value: float, fmt: str) -> str:
    return f"{'—':>{len(format(0.0, fmt))}}" if isinstance(value, float) and math.isnan(value) else format(value, fmt)


def _print(table: dict[str, dict[str, Any]], protocol: str, rows: dict[str, tuple], data: Path) -> None:
    from .. import peers

    names = {name: f"{name} (peer)" if rows.get(name, ("",))[0] in peers.PEERS else name for name in table}
    width = max(10, *(len(n) for n in names.values()))
    if protocol == "strokes":
        counts = [k.removeprefix("miou@") for k in next(iter(table.values())) if k.startswith("miou@")]
        nocs = [k for k in next(iter(table.values())) if k.startswith("noc@")]
        head = [f"@{k}" for k in counts] + [n.replace("noc", "NoC") for n in nocs] + ["bF", "thin", "ms/stroke"]
        print(f"{'':{width}} " + " ".join(f"{h:>7}" for h in head) + f"   ({data}; mIoU after k strokes)")
        for name, row in table.items():
            cells = [_cell(row[f"miou@{k}"], "7.1f") for k in counts] + [_cell(row[n], "7.2f") for n in nocs]
            cells += [_cell(row["boundary_f"], "7.1f"), _cell(row["thin_recall"], "7.1f"),
                      _cell(row["ms_per_stroke"], "7.0f")]
            print(f"{names[name]:{width}} " + " ".join(cells))
    else:
        print(f"{'':{width}} {'mIoU':>6} {'mIoU-gt':>7} {'acc':>6} {'bF':>6} {'thin':>6} {'ms/img':>8}   ({data})")
        for name, row in table.items():
            print(f"{names[name]:{width}} {_cell(row['miou'], '6.1f')} {_cell(row['miou_gt'], '7.1f')} "
                  f"{_cell(row['accuracy'], '6.1f')} {_cell(row['boundary_f'], '6.1f')} "
                  f"{_cell(row['thin_recall'], '6.1f')} {row['ms_per_image']:8.0f}")
    thin = next(iter(table.values()))["thin_classes"]
    print(f"thin classes (recall in 'thin'): {', '.join(map(str, thin)) if thin else 'none'}")


def run(args: argparse.Namespace) -> int:
    from .. import peers
    from ..evaluate import MASK_PROTOCOLS, Entry, evaluate

    overrides = {k.removeprefix("param_"): v for k, v in vars(args).items()
                 if k.startswith("param_") and v is not None}
    settings = {k.removeprefix("unary_"): v for k, v in vars(args).items()
                if k.startswith("unary_") and v is not None}
    roughness = _roughness(args.roughness)
    refines_masks = args.protocol in (*MASK_PROTOCOLS, "strokes")
    if not refines_masks and (settings or roughness != "auto"):
        given = sorted(settings) + (["roughness"] if roughness != "auto" else [])
        raise ValueError(f"--{given[0].replace('_', '-')} is a refine_mask setting, which the synthetic protocol "
                         f"does not use; add --protocol polygon, perturb or strokes, or drop it.")
    rows = parse_rows(args.method, args.preset, overrides, settings)
    entries = {name: Entry(method, file, roughness if method != "random_walker" else "auto", extra)
               for name, (method, file, extra) in rows.items()}

    def progress(done: int, total: int, name: str) -> None:
        print(f"\r  {done}/{total} {name:<30}", end="" if done < total else "\n", file=sys.stderr, flush=True)

    extra = {"thin_width": args.thin_width} if args.thin_width is not None else {}
    table = evaluate(args.data, entries, protocol=args.protocol, num_classes=args.num_classes,
                     ignore_index=args.void, limit=args.limit, max_side=args.max_side, device=args.device,
                     scale=args.scale, progress=progress, **_recipes(args), **extra)
    _print(table, args.protocol, rows, args.data)
    if args.json:
        marked = {name: {**row, "peer": rows.get(name, ("",))[0] in peers.PEERS} for name, row in table.items()}
        args.json.write_text(json.dumps(marked, indent=2) + "\n")
    return 0
