"""refine_mask against refine alone: what the colour-model unary costs on top of the CRF, in one run.

Input: a real photo and its ground truth (VOC 2007_000346 from ../shared, or ``$CRF_SHARED``, when present, else a
seeded synthetic scene) resized to ``--megapixels`` (aspect kept), the truth turned into a rough annotation by the
polygon protocol at ``--tolerance`` px (:func:`crfcore.protocols.polygon_annotation`). Per refiner, the same mask
runs through :func:`crfcore.refine_mask` (its shipped ``rough_annotation`` preset, ``roughness="auto"``: roughness
estimate, colour models, the preset's rounds of CRF) and through :func:`crfcore.refine` alone (the mask as a
:func:`crfcore.unary.from_labels` unary at the preset's confidence, the same CRF params, one run): the peer is the
path the app took before colour models. The table gives the median wall time of each, their ratio, and
refine_mask's unary time, rounds and estimated roughness. Timings on a shared machine are noisy; compare within a run.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import numpy as np
import torch

from ._util import median_ms

__all__ = ["add_arguments", "run", "sample_annotation"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--megapixels", type=float, default=0.5, help="image size in megapixels (default 0.5)")
    p.add_argument("--tolerance", type=float, default=8.0, help="polygon tolerance of the rough mask [px] (default 8)")
    p.add_argument("--methods", default="convcrf,densecrf,gaussian", help="refiners, comma-separated")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (median)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (at least one: it gives the mIoU)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")


def sample_annotation(megapixels: float, tolerance: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``(image (H, W, 3) uint8, ground truth (H, W) int64, rough annotation (H, W) int64, C)`` at ``megapixels``."""
    from .. import io
    from ..evaluate import resize_pair
    from ..protocols import polygon_annotation

    root = Path(os.environ.get("CRF_SHARED", Path(__file__).resolve().parents[2].parent / "shared")) / "data/voc"
    image_path, mask_path = root / "images/2007_000346.png", root / "masks/2007_000346.png"
    if image_path.exists() and mask_path.exists():
        image, gt = io.load_image(image_path), io.load_mask(mask_path)
        num_classes = 21
    else:
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[:375, :500]
        gt = np.zeros((375, 500), np.int64)
        gt[(yy - 180) ** 2 / 120**2 + (xx - 230) ** 2 / 160**2 <= 1] = 1
        gt[60:330, 380:420] = 2
        palette = np.array([[90, 140, 60], [200, 80, 60], [60, 70, 190]])
        image = np.clip(palette[gt] + rng.normal(0, 12, (375, 500, 3)), 0, 255).astype(np.uint8)
        num_classes = 3
    h, w = gt.shape
    side = round(max(h, w) * math.sqrt(megapixels * 1e6 / (h * w)))
    image, gt = resize_pair(image, gt, side)
    drawn = polygon_annotation(gt, tolerance=tolerance, void=255)
    return image, np.where(gt == 255, 0, gt), drawn, num_classes


def run(args: argparse.Namespace) -> int:
    from .. import metrics, presets
    from ..api import refine
    from ..mask_refine import refine_mask, resolve_settings
    from ..unary import from_labels

    if args.threads:
        torch.set_num_threads(args.threads)
    image, gt, drawn, num_classes = sample_annotation(args.megapixels, args.tolerance)
    h, w = gt.shape
    print(f"refine_mask bench: {w}×{h} ({h * w / 1e6:.2f} MP), {num_classes} classes, polygon mask at tolerance "
          f"{args.tolerance:g} px, device {args.device}, torch {torch.__version__}, "
          f"{args.threads or torch.get_num_threads()} threads; median of {args.repeat} after {args.warmup} warm-up")
    print(f"{'method':>9} | {'refine ms':>10} {'mIoU':>6} | {'refine_mask ms':>14} {'unary ms':>9} {'rounds':>6} "
          f"{'rough px':>8} {'mIoU':>6} | {'ratio':>6}")
    for method in (m.strip() for m in args.methods.split(",")):
        params, settings = resolve_settings(method, None, "rough_annotation")
        unary = from_labels(drawn, num_classes, confidence=settings.confidence)
        plain = refine(image, unary, method=method, params=params, device=args.device)
        ms_plain = median_ms(lambda: refine(image, unary, method=method, params=params, device=args.device),
                             repeat=args.repeat, warmup=max(0, args.warmup - 1), device=args.device)
        found = refine_mask(image, drawn, num_classes=num_classes, method=method, device=args.device)
        ms_mask = median_ms(lambda: refine_mask(image, drawn, num_classes=num_classes, method=method,
                                                device=args.device),
                            repeat=args.repeat, warmup=max(0, args.warmup - 1), device=args.device)
        score = [100 * metrics.miou(metrics.confusion(r.labels, gt, num_classes)) for r in (plain, found)]
        preset = "shipped" if method in presets.methods("rough_annotation") else "defaults"
        print(f"{method:>9} | {ms_plain:>10.0f} {score[0]:>6.1f} | {ms_mask:>14.0f} "
              f"{found.timing['unary_ms']:>9.0f} {found.timing['rounds']:>6} {found.timing['roughness_px']:>8.1f} "
              f"{score[1]:>6.1f} | {ms_mask / ms_plain:>5.2f}x   ({preset} rough_annotation settings)", flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
