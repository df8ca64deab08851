"""``crfcore export MASKS_DIR -o OUT --format F``: label masks (or a project's latest masks) to a training format."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def _label_or_none(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a label ≥ 0 or 'none', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a label ≥ 0 or 'none', got {value}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..export import FORMATS

    p = sub.add_parser("export", help="export masks as VOC / index PNG / COCO RLE / YOLO-seg / binary PNGs",
                       description="Export every mask of MASKS_DIR (a folder of mask images, or a project folder: "
                                   "its images' latest masks) to OUT. See crfcore.export for each format's layout "
                                   "and limits.")
    p.add_argument("masks", type=Path, metavar="MASKS_DIR")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--classes", type=Path, metavar="classes.json",
                   help="class names by label: a JSON list, or {\"classes\": [...], \"background\": 0, \"void\": "
                        "255} (default: the project's names, else class_<k>; background 0, void 255)")
    p.add_argument("--background", type=_label_or_none, metavar="LABEL|none", default=argparse.SUPPRESS,
                   help="label of unannotated pixels, not exported as a class (overrides classes.json)")
    p.add_argument("--void", type=_label_or_none, metavar="LABEL|none", default=argparse.SUPPRESS,
                   help="ignore label, never exported (overrides classes.json; CamVid: 11)")
    p.add_argument("--tolerance", type=float, default=0.0,
                   help="YOLO polygon simplification [px] (default 0: the exact pixel outline)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..export import ClassTable, export_masks, load_classes

    table = load_classes(args.classes) if args.classes else ClassTable()
    overrides = {k: getattr(args, k) for k in ("background", "void") if hasattr(args, k)}  # absent: not given
    table = dataclasses.replace(table, **overrides)
    written = export_masks(args.masks, args.out, args.format, classes=table, tolerance=args.tolerance)
    log.info("%s: %d file(s) written to %s (%s)", args.masks, len(written), args.out, args.format)
    return 0
