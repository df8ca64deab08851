"""``crfcore refine IMAGE UNARY -o OUT.png``: refine one image and write its label mask."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from .common import add_method_args, add_scale_arg, params_from_args, unary_options

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("refine", help="refine one image's unary and write the mask",
                       description="Refine IMAGE's unary (a mask PNG, probability .npy/.npz/.tif, ...) with a CRF.")
    p.add_argument("image", type=Path)
    p.add_argument("unary", type=Path, help="label mask PNG, or probabilities/logits file (see crfcore unary)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output index PNG")
    p.add_argument("--num-classes", type=int, help="number of classes (default: from the unary)")
    p.add_argument("--confidence", type=float,
                   help="probability given to a mask's label (masks only; default: the preset's, else 0.7)")
    p.add_argument("--band", type=float,
                   help="uncertain band along a mask's outlines [px] (masks only; default: the preset's, else none)")
    p.add_argument("--classes", help="class names in index order, comma-separated, background first (needed for "
                                     "labelme files; maps COCO categories)")
    p.add_argument("--coco-image", help="COCO image id or file name (needed when the file has several images)")
    p.add_argument("--probs", type=Path, help="also write the refined probabilities (.npy, or .npz with key "
                                              "'probs'; (C, H, W) float32)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    add_scale_arg(p)
    add_method_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import crfcore
    from crfcore import io
    from crfcore.unary_io import load_unary

    from crfcore.checks import as_device
    from crfcore.errors import InputError

    if args.probs is not None and args.probs.suffix.lower() not in (".npy", ".npz"):
        raise InputError(f"--probs {args.probs}: use a .npy or .npz file name.")
    method, params = params_from_args(args)
    device = as_device(args.device)  # before any work: a device this machine lacks is a usage error
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    image = io.load_image(args.image)
    factor = crfcore.params.scale_factor(*image.shape[:2], args.scale)
    options = crfcore.params.scaled_unary(unary_options(args), factor)  # --band and a preset's: reference pixels
    probs = load_unary(args.unary, num_classes=args.num_classes, image_shape=image.shape[:2], classes=classes,
                       coco_image=args.coco_image, **options)
    result = crfcore.refine(image, probs, method=method, params=params, device=device, scale=args.scale)
    io.save_mask(args.out, result.labels.astype(np.int64))
    if args.probs:
        with io.atomic_write(args.probs) as tmp, open(tmp, "wb") as handle:  # a handle: np.save adds no suffix
            if args.probs.suffix.lower() == ".npz":
                np.savez_compressed(handle, probs=result.probs)
            else:
                np.save(handle, result.probs)
    t = result.timing
    log.info("%s: %s %d×%d, %d classes, spatial scale %.3g: build %.0f ms, iterations %.0f ms, total %.0f ms on "
             "%s → %s", args.image.name, method, image.shape[0], image.shape[1], probs.shape[0], result.scale,
             t["build_ms"], t["iterations_ms"], t["total_ms"], t["device"], args.out)
    return 0
