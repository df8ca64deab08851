"""Peer methods that ``crfcore eval`` scores beside the refiners; for evaluation and benchmarks only.

They need the ``bench`` extra (``pip install crf-studio[bench]``), never the app's dependencies:

* ``"grabcut"``: OpenCV's GrabCut (Rother, Kolmogorov & Blake 2004, "GrabCut: interactive foreground extraction using
  iterated graph cuts", SIGGRAPH), started from the trimap of an annotation: pixels farther than ``band`` pixels
  from its outline are sure (inside: foreground, outside: background), those within are probable. A set whose
  annotation holds two classes runs once (the higher class as foreground); more classes run one-vs-rest, once per
  class, and are combined: a pixel keeps its annotated class unless that class's run rejects it and another class's
  run claims it, and among several claimants the class whose annotated region is nearest wins. Unknown pixels
  (label < 0) first take the nearest annotated label and are probable in every run. A class with fewer than
  :data:`GRABCUT_MIN_PIXELS` pixels, or whose rest has fewer, keeps its annotation (GrabCut's mixtures need samples).
* ``"random_walker"``: scikit-image's random walker (Grady 2006, "Random walks for image segmentation", TPAMI 28(11))
  from brush strokes alone; with one class painted, every pixel gets it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .protocols import fill_nearest

__all__ = ["PEERS", "MASK_PEERS", "STROKE_PEERS", "GRABCUT_ITERATIONS", "GRABCUT_MIN_PIXELS", "RANDOM_WALKER_BETA",
           "grabcut", "random_walker"]

MASK_PEERS = ("grabcut",)
"""Peers that refine an annotation (polygon and perturb protocols)."""
STROKE_PEERS = ("random_walker",)
"""Peers that segment from brush strokes (strokes protocol)."""
PEERS = MASK_PEERS + STROKE_PEERS
"""Every peer name ``crfcore eval --method`` accepts."""

GRABCUT_ITERATIONS = 5
"""GrabCut rounds (OpenCV's ``iterCount``)."""
GRABCUT_MIN_PIXELS = 32
"""Fewest pixels on either side of a GrabCut run; a smaller class keeps its annotation."""
RANDOM_WALKER_BETA = 130.0
"""scikit-image's default edge penalty β, for colours scaled to 0..1."""


def _cv2():
    try:
        import cv2
    except ImportError:
        raise ImportError("the 'grabcut' peer needs OpenCV: pip install opencv-python-headless (the bench extra: "
                          "pip install crf-studio[bench]).") from None
    return cv2


def _check(image: np.ndarray, labels: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    image, labels = np.asarray(image), np.asarray(labels)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got shape {image.shape} of {image.dtype}.")
    if labels.shape != image.shape[:2] or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must be (H, W) integer labels of the image's size {image.shape[:2]}, got shape "
                         f"{labels.shape} of {labels.dtype}.")
    return image, labels.astype(np.int64)


def _grabcut_one(cv2, image: np.ndarray, inside: np.ndarray, unknown: np.ndarray, band: float) -> np.ndarray | None:
    """One GrabCut run, ``inside`` as the annotated foreground; ``(H, W)`` bool result, None when it cannot run."""
    if inside.sum() < GRABCUT_MIN_PIXELS or (~inside).sum() < GRABCUT_MIN_PIXELS:
        return None
    depth_in = ndimage.distance_transform_edt(inside)
    depth_out = ndimage.distance_transform_edt(~inside)
    trimap = np.where(inside, np.where(depth_in > band, cv2.GC_FGD, cv2.GC_PR_FGD),
                      np.where(depth_out > band, cv2.GC_BGD, cv2.GC_PR_BGD)).astype(np.uint8)
    trimap[unknown] = np.where(inside[unknown], cv2.GC_PR_FGD, cv2.GC_PR_BGD)
    if not np.isin(trimap, (cv2.GC_PR_FGD, cv2.GC_PR_BGD)).any():
        return inside
    cv2.setRNGSeed(0)
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(np.ascontiguousarray(image), trimap, None, background, foreground, GRABCUT_ITERATIONS,
                cv2.GC_INIT_WITH_MASK)
    return (trimap == cv2.GC_FGD) | (trimap == cv2.GC_PR_FGD)


def grabcut(image: np.ndarray, annotation: np.ndarray, *, band: float) -> np.ndarray:
    """GrabCut from an annotation's trimap, two-class or one-vs-rest (see the module docstring).

    Args:
        image: ``(H, W, 3)`` uint8 RGB (GrabCut's colour mixtures do not depend on the channel order).
        annotation: ``(H, W)`` integer labels ≥ 0, or < 0 where unknown.
        band: pixels > 0: the probable zone's half width about the outline.

    Returns:
        ``(H, W)`` int64 labels, each an annotated class.

    Raises:
        ImportError: OpenCV is not installed (the ``bench`` extra).
        ValueError: shapes or dtypes that do not fit, a band ≤ 0, or an annotation with no known pixel.
    """
    cv2 = _cv2()
    image, labels = _check(image, annotation, "annotation")
    if not band > 0:
        raise ValueError(f"band must be > 0 pixels, got {band}.")
    unknown = labels < 0
    if unknown.all():
        raise ValueError("annotation has no known pixel (all < 0); GrabCut needs an annotation to start from.")
    labels = fill_nearest(np.maximum(labels, -1), -1)
    classes = np.unique(labels).tolist()
    if len(classes) == 1:
        return labels
    if len(classes) == 2:
        fg = _grabcut_one(cv2, image, labels == classes[1], unknown, band)
        return labels if fg is None else np.where(fg, classes[1], classes[0])
    claims, distances = [], []
    for cls in classes:
        inside = labels == cls
        fg = _grabcut_one(cv2, image, inside, unknown, band)
        claims.append(inside if fg is None else fg)
        distances.append(ndimage.distance_transform_edt(~inside))
    claim, distance = np.stack(claims), np.stack(distances)
    index = np.searchsorted(classes, labels)
    kept = np.take_along_axis(claim, index[None], 0)[0] | ~claim.any(0)
    nearest = np.argmin(np.where(claim, distance, np.inf), axis=0)
    return np.where(kept, labels, np.asarray(classes)[nearest])


def random_walker(image: np.ndarray, strokes: np.ndarray, *, beta: float = RANDOM_WALKER_BETA) -> np.ndarray:
    """scikit-image's random walker from brush strokes.

    Args:
        image: ``(H, W, 3)`` uint8 RGB (scaled to 0..1).
        strokes: ``(H, W)`` int: the painted class, -1 where unpainted.
        beta: edge penalty (scikit-image's ``beta``).

    Returns:
        ``(H, W)`` int64 labels, each a painted class.

    Raises:
        ValueError: shapes or dtypes that do not fit, values below -1, or no painted pixel.
    """
    from skimage.segmentation import random_walker as walk

    image, painted = _check(image, strokes, "strokes")
    if (painted < -1).any():
        raise ValueError(f"strokes hold values below -1 (min {painted.min()}); expected -1 (unpainted) or a class.")
    classes = np.unique(painted[painted >= 0])
    if classes.size == 0:
        raise ValueError("strokes have no painted pixel (all -1); paint at least one stroke.")
    if classes.size == 1:
        return np.full(painted.shape, int(classes[0]), np.int64)
    walked = walk(image.astype(np.float64) / 255.0, painted + 1, beta=beta, mode="cg_mg", channel_axis=-1)
    return walked.astype(np.int64) - 1
