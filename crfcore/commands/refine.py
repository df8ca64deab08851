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

from .common import add_method_args, params_from_args, unary_options

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
    p.add_argument("--void", type=int, default=255, help="mask value of unannotated pixels (default 255)")
    p.add_argument("--probs", type=Path, help="also write the refined probabilities (.npy, (C, H, W) float32)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
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
                                     device=args.device, **settings, **overrides)
        method, probs = args.method, result.probs
        log.info("%s: roughness %.1f px, unary %.0f ms over %d round(s)", args.image.name,
                 result.timing["roughness_px"], result.timing["unary_ms"], result.timing["rounds"])
    else:
        if args.strokes is not None:
            raise ValueError("--strokes needs a label-mask image as UNARY (and no --band); the probability and "
                             "annotation unaries take no strokes.")
        method, params = params_from_args(args)
        probs = load_unary(args.unary, num_classes=args.num_classes, image_shape=image.shape[:2], **options)
        result = crfcore.refine(image, probs, method=method, params=params, device=args.device)
    io.save_mask(args.out, result.labels.astype(np.int64))
    if args.probs:
        with io.atomic_write(args.probs) as tmp:
            np.save(tmp, result.probs)
    t = result.timing
    log.info("%s: %s %d×%d, %d classes: build %.0f ms, iterations %.0f ms, total %.0f ms on %s → %s",
             args.image.name, method, image.shape[0], image.shape[1], probs.shape[0], t["build_ms"],
             t["iterations_ms"], t["total_ms"], t["device"], args.out)
    return 0
