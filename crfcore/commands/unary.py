"""``crfcore unary IMAGE --weights FILE -o unary.npz``: class probabilities for an image from a network or a file.

The network is a torchvision-layout state_dict (``--weights``, architecture from ``--backbone`` or detected from its
keys), a TorchScript archive (``--torchscript``) or a torch.export program (``--exported``); ``--source`` converts any
file ``crfcore.unary_io.load_unary`` reads (masks, per-class PNGs, COCO/labelme polygons, arrays) instead. The output
is ``.npz`` with ``probs`` ((C, H, W) float32, sum 1 over C) and, when named, ``classes``; or ``.npy`` with the array.
It is written atomically (a temporary file, then ``os.replace``).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..backbones import MODES, names
    from ..unary_io import KINDS

    p = sub.add_parser("unary", help="class probabilities for an image, from a network or an annotation file",
                       description="Run a segmentation network on IMAGE (or convert an annotation file) and write "
                                   "its class probabilities for `crfcore refine`.")
    p.add_argument("image", type=Path)
    p.add_argument("-o", "--out", type=Path, required=True, help="output .npz (probs, classes) or .npy")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", type=Path, metavar="FILE", help="torchvision-layout state_dict (.pth)")
    src.add_argument("--torchscript", type=Path, metavar="FILE", help="TorchScript archive (torch.jit.save)")
    src.add_argument("--exported", type=Path, metavar="FILE", help="torch.export program (.pt2)")
    src.add_argument("--source", type=Path, metavar="FILE", help="mask, class-map folder, .npy/.npz/.tif, COCO or "
                                                                 "labelme .json (see crfcore.unary_io)")
    net = p.add_argument_group("network (--weights, --torchscript, --exported)")
    net.add_argument("--backbone", choices=names(), help="architecture of --weights (default: detected from keys)")
    net.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    net.add_argument("--mode", choices=MODES, default="auto", help="whole image, resized, or tiles (default auto)")
    net.add_argument("--size", type=int, default=520, help="--mode resize: shorter side in pixels (default 520)")
    net.add_argument("--tile", type=int, default=512, help="--mode tiles: tile side in pixels (default 512)")
    net.add_argument("--overlap", type=int, help="--mode tiles: overlap in pixels (default: a quarter of the tile)")
    net.add_argument("--batch-size", type=int, default=4, help="forward passes per batch (default 4)")
    net.add_argument("--no-amp", action="store_true", help="no float16 autocast on CUDA")
    conv = p.add_argument_group("conversion (--source)")
    conv.add_argument("--kind", choices=KINDS, help="how to read the data (default: detected)")
    conv.add_argument("--num-classes", type=int, help="C (default: from the file)")
    conv.add_argument("--confidence", type=float, help="probability given to a mask's or polygon's label")
    conv.add_argument("--coco-image", help="COCO image id or file name (needed when the file has several images)")
    conv.add_argument("--resize", action="store_true", help="scale a smaller unary to the image")
    p.add_argument("--classes", help="class names in index order, comma-separated, background first (stored in the "
                                     "output; required for labelme files)")
    p.set_defaults(func=run)


def _progress(start: float) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        log.info("  forward pass %d/%d (%.1f s)", done, total, time.perf_counter() - start)
    return report


def run(args: argparse.Namespace) -> int:
    from .. import backbones
    from ..checks import as_device
    from ..io import load_image
    from ..unary_io import load_unary

    image = load_image(args.image)
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    start = time.perf_counter()
    if args.source is not None:
        probs = load_unary(args.source, num_classes=args.num_classes, image_shape=image.shape[:2], kind=args.kind,
                           confidence=args.confidence, classes=classes,
                           coco_image=args.coco_image, resize=args.resize)
    else:
        device = str(as_device(args.device))
        if args.weights is not None:
            model = backbones.load(args.weights, name=args.backbone, device=device)
        elif args.torchscript is not None:
            model = backbones.load_torchscript(args.torchscript, device=device)
        else:
            model = backbones.load_exported(args.exported, device=device)
        log.info("%s: %d×%d on %s, mode %s", args.image.name, image.shape[0], image.shape[1], device, args.mode)
        probs = backbones.predict_probs(model, image, mode=args.mode, size=args.size, tile=args.tile,
                                        overlap=args.overlap, batch_size=args.batch_size, amp=not args.no_amp,
                                        progress=_progress(start))
    if classes is not None and len(classes) != probs.shape[0]:
        raise InputError(f"--classes names {len(classes)} classes but the unary has {probs.shape[0]}; list them all.")
    _save(args.out, probs, classes)
    log.info("%s: %d classes, %d×%d, %.1f s → %s", args.image.name, probs.shape[0], probs.shape[1], probs.shape[2],
             time.perf_counter() - start, args.out)
    return 0


def _save(path: Path, probs: np.ndarray, classes: list[str] | None) -> None:
    from ..io import atomic_write

    if path.suffix.lower() not in (".npz", ".npy"):
        raise InputError(f"-o {path}: use a .npz (probs and class names) or .npy (probs only) file name.")
    with atomic_write(path) as tmp, open(tmp, "wb") as handle:
        if path.suffix.lower() == ".npy":
            np.save(handle, probs)
        else:
            extra = {"classes": np.array(classes)} if classes else {}
            np.savez_compressed(handle, probs=probs, **extra)
