"""``crfcore refine IMAGE UNARY -o OUT.png``: refine one image and write its label mask.

A label-mask image (PNG, BMP, ...) goes through :func:`crfcore.refine_mask` (colour models learned from the mask,
roughness-aware, optional ``--strokes``); probabilities, logits and annotation files through :func:`crfcore.refine`.
A band (``--band``, or the ``"unary"`` entry of the ``--preset`` file) asks for the plain outline-band mask unary
(:func:`crfcore.unary.from_labels`) instead of colour models.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from ..labels import VOID
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
                   help="plain outline-band unary without colour models: uncertain band along a mask's outlines [px] "
                        "(masks only; default: the --preset file's band, else colour models via crfcore.refine_mask)")
    p.add_argument("--roughness", default="auto", type=_roughness,
                   help="masks: how far the outline may be off [px], or 'auto' to estimate it (default auto)")
    p.add_argument("--strokes", type=Path,
                   help="masks: brush strokes PNG, class index where painted, --void elsewhere (hard labels)")
    p.add_argument("--void", type=int, default=VOID, help=f"mask value of unannotated pixels (default {VOID})")
    p.add_argument("--classes", help="class names in index order, comma-separated, background first (needed for "
                                     "labelme files; maps COCO categories)")
    p.add_argument("--coco-image", help="COCO image id or file name (needed when the file has several images)")
    p.add_argument("--probs", type=Path, help="also write the refined probabilities (.npy, or .npz with key "
                                              "'probs'; (C, H, W) float32)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    add_scale_arg(p)
    add_method_args(p)
    p.set_defaults(func=run)


def _roughness(value: str) -> float | str:
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of pixels, got {value!r}") from None


_ARRAY_SUFFIXES = (".npy", ".npz", ".tif", ".tiff", ".json")


def _is_mask_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() not in _ARRAY_SUFFIXES


def run(args: argparse.Namespace) -> int:
    import crfcore
    from crfcore import io
    from crfcore.unary_io import load_unary

    from crfcore.checks import as_device
    from crfcore.errors import InputError

    if args.probs is not None and args.probs.suffix.lower() not in (".npy", ".npz"):
        raise InputError(f"--probs {args.probs}: use a .npy or .npz file name.")
    device = as_device(args.device)  # before any work: a device this machine lacks is a usage error
    image = io.load_image(args.image)
    options = unary_options(args)
    if _is_mask_image(args.unary) and "band" not in options:
        mask = io.load_mask(args.unary)
        strokes = None
        if args.strokes is not None:
            painted = io.load_mask(args.strokes)
            strokes = np.where(painted == args.void, -1, painted).astype(np.int64)
        settings = {"confidence": args.confidence} if args.confidence is not None else {}
        overrides = {k.removeprefix("param_"): v for k, v in vars(args).items()
                     if k.startswith("param_") and v is not None}
        result = crfcore.refine_mask(image, mask, num_classes=args.num_classes, method=args.method,
                                     params=args.preset, roughness=args.roughness, strokes=strokes, void=args.void,
                                     device=device, scale=args.scale, **settings, **overrides)
        method, probs = args.method, result.probs
        log.info("%s: roughness %.1f px, unary %.0f ms over %d round(s)", args.image.name,
                 result.timing["roughness_px"], result.timing["unary_ms"], result.timing["rounds"])
    else:
        if args.strokes is not None:
            raise InputError("--strokes needs a label-mask image as UNARY (and no --band); the probability and "
                             "annotation unaries take no strokes.")
        method, params = params_from_args(args)
        classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
        factor = crfcore.params.scale_factor(*image.shape[:2], args.scale)
        options = crfcore.params.scaled_unary(options, factor)  # --band and a preset's: reference pixels
        probs = load_unary(args.unary, num_classes=args.num_classes, image_shape=image.shape[:2], classes=classes,
                           coco_image=args.coco_image, ignore_index=args.void, **options)
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
