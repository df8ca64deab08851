"""``crfcore eval --data DIR``: the synthetic benchmark, a mIoU table per method."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import add_method_args, params_from_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="synthetic benchmark: noisy unaries from ground truth, refined and scored",
                       description="Make a seeded noisy unary from each ground-truth mask of DIR, refine it, and "
                                   "print mIoU, pixel accuracy and boundary F-score of the unary and the refiner.")
    p.add_argument("--data", type=Path, required=True, help="folder with images/ and masks/")
    p.add_argument("--num-classes", type=int, help="C (default: largest label + 1)")
    p.add_argument("--void", type=int, default=255, help="void label, ignored in scoring (CamVid: 11)")
    p.add_argument("--limit", type=int, help="only the first N pairs")
    p.add_argument("--device", help="cpu or cuda")
    p.add_argument("--json", type=Path, help="also write the table as JSON")
    add_method_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluate import evaluate

    method, params = params_from_args(args)

    def progress(done: int, total: int, name: str) -> None:
        print(f"\r  {done}/{total} {name:<30}", end="" if done < total else "\n", file=sys.stderr, flush=True)

    table = evaluate(args.data, {method: (method, params)}, num_classes=args.num_classes, ignore_index=args.void,
                     limit=args.limit, device=args.device, progress=progress)
    print(f"{'':10} {'mIoU':>6} {'mIoU-gt':>7} {'acc':>6} {'bF':>6} {'ms/img':>8}   ({args.data})")
    for name, row in table.items():
        print(f"{name:10} {row['miou']:6.1f} {row['miou_gt']:7.1f} {row['accuracy']:6.1f} {row['boundary_f']:6.1f} "
              f"{row['ms_per_image']:8.0f}")
    if args.json:
        args.json.write_text(json.dumps(table, indent=2) + "\n")
    return 0
