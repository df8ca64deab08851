"""``python -m crfcore.demo --out DIR``: refine every bundled sample's coarse mask and save before/after pictures.

For each ``<name>.png`` / ``<name>_mask.png`` pair in ``resources/samples`` (or ``--samples DIR``, any folder
:func:`crfcore.io.find_pairs` reads), the coarse mask becomes a unary (:func:`crfcore.unary.from_labels`), is refined
with :func:`crfcore.refine`, and ``DIR/<name>_before_after.png`` shows the image with the coarse mask (left) and with
the refined mask (right), class colours blended in and region boundaries drawn, captioned with the timing.
Class counts come from the folder's ``classes.json`` (``{"<name>": ["background", ...]}``) when it lists the sample.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from . import io, unary
from .api import Refinement, refine
from .labels import VOID
from .refiners import REGISTRY

__all__ = ["SAMPLES_DIR", "overlay", "before_after", "refine_pair", "main"]

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "resources" / "samples"
"""The bundled samples (in a source checkout or editable install)."""

_CAPTION_HEIGHT = 22
_GAP = 8
_BOUNDARY = np.array([255, 255, 0], np.uint8)


def _edges(labels: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: pixels with a 4-neighbour of another label (both sides of every boundary)."""
    edge = np.zeros(labels.shape, bool)
    vertical = labels[:, 1:] != labels[:, :-1]
    horizontal = labels[1:, :] != labels[:-1, :]
    edge[:, 1:] |= vertical
    edge[:, :-1] |= vertical
    edge[1:, :] |= horizontal
    edge[:-1, :] |= horizontal
    return edge


def overlay(image: np.ndarray, labels: np.ndarray, *, opacity: float = 0.45) -> np.ndarray:
    """The image with each non-background class tinted in its VOC colour and the boundaries drawn in yellow.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        labels: ``(H, W)`` integer labels; 0 (background) is left untinted.
        opacity: tint strength in 0..1.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    if image.shape[:2] != labels.shape:
        raise ValueError(f"image is {image.shape[:2]} (H×W) but labels are {labels.shape}; they must match.")
    colours = io.voc_palette()[np.clip(labels, 0, 255)].astype(np.float64)
    tinted = np.where((labels > 0)[..., None], (1 - opacity) * image + opacity * colours, image)
    out = np.rint(tinted).astype(np.uint8)
    out[_edges(labels)] = _BOUNDARY
    return out


def _captioned(panel: np.ndarray, text: str) -> Image.Image:
    canvas = Image.new("RGB", (panel.shape[1], panel.shape[0] + _CAPTION_HEIGHT), "white")
    canvas.paste(Image.fromarray(panel), (0, _CAPTION_HEIGHT))
    ImageDraw.Draw(canvas).text((4, 5), text, fill="black")
    return canvas


def before_after(image: np.ndarray, coarse: np.ndarray, refined: np.ndarray, caption: str) -> np.ndarray:
    """Side-by-side ``[coarse overlay | refined overlay]`` with captions; ``(H + 22, 2W + 8, 3)`` uint8."""
    left = _captioned(overlay(image, coarse), "coarse mask (input)")
    right = _captioned(overlay(image, refined), caption)
    canvas = Image.new("RGB", (left.width + _GAP + right.width, left.height), "white")
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + _GAP, 0))
    return np.asarray(canvas)


def refine_pair(image_path: Path, mask_path: Path, *, num_classes: int | None = None, method: str = "convcrf",
                device: str | None = None) -> tuple[np.ndarray, np.ndarray, Refinement]:
    """Load one sample and refine its mask.

    Args:
        image_path, mask_path: the files; the mask holds labels 0..C-1 (VOID = 255: unknown).
        num_classes: C; None means the mask's largest label + 1 (at least 2).
        method: a registered refiner name; device: as in :func:`crfcore.refine`.

    Returns:
        ``(image (H, W, 3) uint8, coarse labels (H, W) int64, refinement)``.
    """
    image = io.load_image(image_path)
    coarse = io.load_mask(mask_path, num_classes=num_classes)
    io.check_pair(image, coarse, image_path, mask_path)
    if num_classes is None:
        known = coarse[coarse != VOID]
        num_classes = max(2, int(known.max()) + 1 if known.size else 2)
    probs = unary.from_labels(coarse, num_classes)
    return image, coarse, refine(image, probs, method=method, device=device)


def _class_counts(folder: Path) -> dict[str, int]:
    path = folder / "classes.json"
    if not path.exists():
        return {}
    try:
        listed = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); expected {{\"<name>\": [\"background\", ...]}}.") from exc
    return {name: len(names) for name, names in listed.items()}


def _caption(method: str, r: Refinement) -> str:
    t = r.timing
    return (f"{method}: {t['total_ms']:.0f} ms (build {t['build_ms']:.0f}, iterations {t['iterations_ms']:.0f}) "
            f"on {t['device']}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m crfcore.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for <name>_before_after.png (created)")
    parser.add_argument("--samples", type=Path, default=SAMPLES_DIR, help="folder of image/mask pairs")
    parser.add_argument("--method", default="convcrf", choices=list(REGISTRY), help="refiner")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: best available)")
    args = parser.parse_args(argv)
    try:
        pairs = io.find_pairs(args.samples)
        counts = _class_counts(args.samples)
        args.out.mkdir(parents=True, exist_ok=True)
        for image_path, mask_path in pairs:
            name = image_path.stem
            image, coarse, r = refine_pair(image_path, mask_path, num_classes=counts.get(name), method=args.method,
                                           device=args.device)
            out_path = args.out / f"{name}_before_after.png"
            io.save_image(out_path, before_after(image, coarse, r.labels, _caption(args.method, r)))
            changed = float((r.labels != coarse).mean())
            print(f"{name}: {image.shape[0]}×{image.shape[1]} (H×W), {r.probs.shape[0]} classes, "
                  f"{changed:.1%} of pixels relabelled, {r.timing['total_ms']:.0f} ms on {r.timing['device']} "
                  f"→ {out_path}")
    except (ValueError, OSError) as exc:
        print(f"crfcore.demo: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
