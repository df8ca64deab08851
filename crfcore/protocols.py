"""Simulated annotators and measures of the benchmark protocols of :mod:`crfcore.evaluate`.

* Polygons (:func:`polygon_annotation`): the annotation a person draws with a polygon tool. Each connected region of
  each class (8-connected) is outlined at the half-pixel level, simplified by Douglas–Peucker (Douglas & Peucker
  1973) to ``tolerance`` pixels and filled, so holes are lost; regions are painted larger first, so small ones stay
  on top; pixels no polygon covers get the background class (or stay unknown, -1, without one).
* Perturbed masks (:func:`perturb_annotation`): every foreground region moved out (dilated) or in (eroded) by
  ``offset`` pixels, with a seeded, smoothly varying *jitter* of the outline: the rough mask of a hasty brush. A
  pixel's signed distance to the ground-truth outline is compared with a per-pixel offset ``o(x) = offset + jitter ·
  g(x)``, ``g`` white noise smoothed by a Gaussian of ``correlation`` pixels and scaled to unit standard deviation: a
  background pixel at distance ``d`` from the foreground joins it when ``d ≤ o(x)``, a foreground pixel at distance
  ``d`` from another label leaves it when ``d ≤ -o(x)`` (distances between pixel centres, Euclidean). Without jitter
  the result is exactly the Euclidean dilation or erosion by ``offset``.
* Strokes from nothing (:func:`next_stroke`): a simulated annotator paints, at each step, a disk of radius ``radius``
  pixels of the true class at the innermost pixel (largest distance to its outside, the image border counting as
  outside) of the largest wrong region (8-connected pixels of one true class that the current prediction gets
  wrong; before any prediction, every pixel is wrong). The disk is clipped to that class's ground truth, as an
  annotator keeps the brush inside the object. :func:`number_of_clicks` is NoC@t: the strokes until an image's
  mIoU reaches ``t``, ``budget + 1`` when it never does (after Xu et al. 2016, "Deep Interactive Object Selection",
  CVPR, §4).
* Thin classes (:func:`class_widths`, :func:`thin_classes`): a class is *thin* when the median width of its regions
  along their medial axis, ``2 d - 1`` for the distance ``d`` [px] from a medial-axis pixel to the nearest pixel of
  another label, is at most :data:`THIN_WIDTH` pixels (at the evaluated size): poles, wires, sign posts. Their
  recall (pixels of thin classes labelled right / all their pixels) shows whether a refiner swallows them.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from .labels import VOID
from .polygons import outlines, signed_area
from .unary import rasterize_polygons

__all__ = ["PolygonRecipe", "region_polygons", "polygon_annotation", "PerturbRecipe", "StrokeRecipe", "THIN_WIDTH",
           "perturb_annotation", "next_stroke", "number_of_clicks", "class_widths", "thin_classes", "fill_nearest"]

THIN_WIDTH = 8.0
"""Pixels: a class whose regions' median medial-axis width is at most this is *thin* (:func:`thin_classes`)."""


@dataclass(frozen=True)
class PolygonRecipe:
    """How the polygon protocol draws its annotation.

    Attributes:
        tolerance: Douglas–Peucker tolerance, pixels ≥ 0: the largest distance of the outline from the polygon.
        background: class of pixels no polygon covers (its own regions are not drawn); None draws every class and
            leaves uncovered pixels unknown, for label sets without a background class (CamVid).
    """

    tolerance: float = 4.0
    background: int | None = 0


def region_polygons(labels: np.ndarray, *, tolerance: float = PolygonRecipe.tolerance,
                    skip: tuple[int | None, ...] = ()) -> list[tuple[int, np.ndarray]]:
    """The outline of every 8-connected region of every class, simplified to a polygon; larger regions first.

    Args:
        labels: ``(H, W)`` integer class map.
        tolerance: Douglas–Peucker tolerance in pixels (0 keeps the half-pixel outline).
        skip: classes whose regions are not outlined (background, void).

    Returns:
        ``[(class, (N, 2) float64 x, y vertices), ...]`` in pixel coordinates (pixel centres at integers), ready for
        :func:`crfcore.unary.rasterize_polygons`; sorted by region area, descending (ties: class, then raster
        order). Regions whose polygon collapses to fewer than 3 distinct vertices (specks) are left out. Holes are
        not represented.
    """
    from skimage.measure import approximate_polygon, label, regionprops

    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an (H, W) integer class map, got shape {labels.shape} of {labels.dtype}.")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}.")
    found: list[tuple[int, int, int, np.ndarray]] = []
    for cls in np.unique(labels).tolist():
        if cls in skip:
            continue
        for k, region in enumerate(regionprops(label(labels == cls, connectivity=2))):
            outer = max(outlines(region.image), key=lambda rc: abs(signed_area(rc)))  # 8-connected: one outer
            poly = approximate_polygon(outer, tolerance)
            if len(np.unique(poly, axis=0)) < 3:
                continue
            top, left = region.bbox[0], region.bbox[1]
            xy = np.stack([poly[:, 1] + left, poly[:, 0] + top], axis=1)
            found.append((-int(region.area), cls, k, xy))
    found.sort(key=lambda t: t[:3])
    return [(cls, xy) for _, cls, _, xy in found]


def polygon_annotation(gt: np.ndarray, *, tolerance: float = PolygonRecipe.tolerance,
                       background: int | None = PolygonRecipe.background, void: int | None = VOID) -> np.ndarray:
    """The polygon protocol's annotation of a ground-truth map: region outlines simplified, filled, larger first.

    Args:
        gt: ``(H, W)`` integer class map; ``void`` pixels belong to no region (they end under a polygon or in the
            background, as an annotator would leave them).
        tolerance: Douglas–Peucker tolerance, pixels.
        background: class of uncovered pixels, not outlined itself; None outlines every class and marks uncovered
            pixels -1 (unknown).

    Returns:
        ``(H, W)`` int64 class map, -1 where unknown (``background=None`` only).
    """
    polygons = region_polygons(gt, tolerance=tolerance, skip=(background, void))
    return rasterize_polygons(polygons, np.asarray(gt).shape, background=-1 if background is None else background)




@dataclass(frozen=True)
class PerturbRecipe:
    """How the perturb protocol spoils a ground-truth mask (:func:`perturb_annotation`).

    Attributes:
        offset: pixels; > 0 dilates every foreground region, < 0 erodes it.
        jitter: pixels ≥ 0; standard deviation of the outline's random displacement around ``offset``.
        correlation: pixels > 0; length over which the displacement varies (Gaussian smoothing of the noise).
        background: the class foreground regions grow into and leave behind; None: the perturbation needs one.
        seed: combined with the image id, so each image has its own jitter and every run the same.
    """

    offset: float = 4.0
    jitter: float = 0.0
    correlation: float = 8.0
    background: int = 0
    seed: int = 20240518

    def __post_init__(self) -> None:
        if not np.isfinite(self.offset):
            raise ValueError(f"offset must be a finite number of pixels, got {self.offset}.")
        if not self.jitter >= 0:
            raise ValueError(f"jitter must be >= 0 pixels, got {self.jitter}.")
        if not self.correlation > 0:
            raise ValueError(f"correlation must be > 0 pixels, got {self.correlation}.")

    @property
    def roughness(self) -> float:
        """Pixels: how far the perturbed outline typically lies from the truth, ``|offset| + 2 jitter`` (≥ 1)."""
        return max(1.0, abs(self.offset) + 2.0 * self.jitter)


@dataclass(frozen=True)
class StrokeRecipe:
    """The simulated annotator of the strokes protocol.

    Attributes:
        budget: strokes per image, ≥ 1.
        radius: brush radius, pixels ≥ 0.
        checkpoints: stroke counts at which mIoU is reported (those above ``budget`` are dropped; ``budget`` is
            always reported).
        thresholds: mIoU levels, percent, of the NoC figures.
    """

    budget: int = 20
    radius: float = 4.0
    checkpoints: tuple[int, ...] = (1, 3, 5, 10, 20)
    thresholds: tuple[float, ...] = (85.0, 90.0)

    def __post_init__(self) -> None:
        if isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget < 1:
            raise ValueError(f"budget must be a whole number of strokes >= 1, got {self.budget!r}.")
        if not self.radius >= 0:
            raise ValueError(f"radius must be >= 0 pixels, got {self.radius}.")

    @property
    def reported(self) -> tuple[int, ...]:
        """The stroke counts whose mIoU is reported, ascending."""
        return tuple(sorted({k for k in self.checkpoints if 1 <= k <= self.budget} | {self.budget}))


def fill_nearest(labels: np.ndarray, value: int | None) -> np.ndarray:
    """``labels`` with every ``value`` pixel (void, unknown) given the label of the nearest other pixel (Euclidean;
    ties as SciPy's distance transform breaks them); ``labels`` itself when none is ``value``.

    Raises:
        ValueError: every pixel is ``value``.
    """
    labels = np.asarray(labels)
    if value is None or not (labels == value).any():
        return labels
    if (labels == value).all():
        raise ValueError(f"every pixel of the {labels.shape[0]}×{labels.shape[1]} map is {value}; there is no label "
                         f"to take.")
    _, (rows, cols) = ndimage.distance_transform_edt(labels == value, return_indices=True)
    return labels[rows, cols]


def perturb_annotation(gt: np.ndarray, *, recipe: PerturbRecipe = PerturbRecipe(), image_id: str = "",
                       void: int | None = VOID) -> np.ndarray:
    """The perturb protocol's rough mask of a ground-truth map (see the module docstring).

    Args:
        gt: ``(H, W)`` integer class map; ``void`` pixels first take the nearest non-void label.
        recipe: offset, jitter and the background class.
        image_id: mixed into the jitter's seed.

    Returns:
        ``(H, W)`` int64 class map without void. Dilation gives a background pixel the label of the nearest
        foreground pixel; eroded pixels become background.
    """
    labels = np.asarray(gt)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"gt must be an (H, W) integer class map, got shape {labels.shape} of {labels.dtype}.")
    labels = fill_nearest(labels.astype(np.int64), void)
    offset = np.full(labels.shape, float(recipe.offset))
    if recipe.jitter > 0:
        rng = np.random.default_rng([recipe.seed, zlib.crc32(image_id.encode("utf-8"))])
        noise = ndimage.gaussian_filter(rng.standard_normal(labels.shape), recipe.correlation, mode="wrap")
        offset += recipe.jitter * noise / max(float(noise.std()), 1e-12)
    background = labels == recipe.background
    out = labels.copy()
    if (~background).any() and background.any():
        dist_out, (rows, cols) = ndimage.distance_transform_edt(background, return_indices=True)
        grow = background & (dist_out <= offset)
        out[grow] = labels[rows[grow], cols[grow]]
    depth = _depth(labels)
    shrink = ~background & (depth <= -offset)
    out[shrink] = recipe.background
    return out


def _depth(labels: np.ndarray) -> np.ndarray:
    """``(H, W)`` float: each pixel's distance to the nearest pixel of another label (inf when there is none)."""
    depth = np.full(labels.shape, np.inf)
    for cls in np.unique(labels).tolist():
        inside = labels == cls
        if inside.all():
            continue
        depth[inside] = ndimage.distance_transform_edt(inside)[inside]
    return depth


def next_stroke(pred: np.ndarray | None, gt: np.ndarray, *, radius: float = StrokeRecipe.radius,
                void: int | None = VOID) -> tuple[int, np.ndarray] | None:
    """The simulated annotator's next stroke (see the module docstring).

    Args:
        pred: ``(H, W)`` integer labels of the current prediction; None before any (every pixel is wrong).
        gt: ``(H, W)`` integer ground truth; ``void`` pixels are never wrong and never painted.
        radius: brush radius, pixels.

    Returns:
        ``(class, (H, W) bool disk)``, or None when no pixel is wrong. Ties go to the lower class, then to the
        region found first in raster order, then to the first innermost pixel in raster order.
    """
    from skimage.measure import label

    gt = np.asarray(gt)
    wrong = np.ones(gt.shape, bool) if pred is None else np.asarray(pred) != gt
    if pred is not None and np.shape(pred) != gt.shape:
        raise ValueError(f"pred has shape {np.shape(pred)} but gt has {gt.shape}.")
    if void is not None:
        wrong &= gt != void
    best: tuple[int, int, np.ndarray] | None = None
    for cls in np.unique(gt[wrong]).tolist():
        regions = label(wrong & (gt == cls), connectivity=2)
        sizes = np.bincount(regions.ravel())[1:]
        k = int(np.argmax(sizes))
        if best is None or sizes[k] > best[0]:
            best = (int(sizes[k]), cls, regions == k + 1)
    if best is None:
        return None
    _, cls, region = best
    inner = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(int(np.argmax(inner)), inner.shape)
    yy, xx = np.ogrid[: gt.shape[0], : gt.shape[1]]
    disk = ((yy - r) ** 2 + (xx - c) ** 2 <= radius**2) & (gt == cls)
    return cls, disk


def number_of_clicks(curve: Sequence[float], threshold: float, budget: int) -> int:
    """NoC@threshold: the first stroke count (1-based) whose score in ``curve`` reaches ``threshold``.

    Args:
        curve: an image's score (mIoU, percent) after 1, 2, ... strokes; ``len(curve) ≤ budget``.
        threshold: the score to reach (percent).
        budget: the strokes allowed.

    Returns:
        1..budget, or ``budget + 1`` when the score never reaches ``threshold`` within the budget.
    """
    if len(curve) > budget:
        raise ValueError(f"curve has {len(curve)} scores but the budget is {budget} strokes; give at most one per "
                         f"stroke.")
    for k, score in enumerate(curve, start=1):
        if score >= threshold:
            return k
    return budget + 1


def class_widths(gt: np.ndarray, num_classes: int, *, void: int | None = VOID) -> list[np.ndarray]:
    """Widths along each class's medial axis in one ground-truth map, for :func:`thin_classes`.

    Args:
        gt: ``(H, W)`` integer class map.
        num_classes: C.
        void: a label of its own here (a region ends at void), never measured.

    Returns:
        C float arrays: for class c, ``2 d - 1`` pixels at each medial-axis pixel of its regions, ``d`` the
        distance from that pixel to the nearest pixel of another label (the image border excluded).
    """
    from skimage.morphology import medial_axis

    gt = np.asarray(gt)
    widths = []
    for cls in range(num_classes):
        inside = gt == cls
        if cls == void or not inside.any() or inside.all():
            widths.append(np.zeros(0))
            continue
        skeleton = medial_axis(inside)
        widths.append(2 * ndimage.distance_transform_edt(inside)[skeleton] - 1)
    return widths


def thin_classes(widths: Sequence[Sequence[np.ndarray]], *, thin_width: float = THIN_WIDTH) -> list[int]:
    """The thin classes of a dataset: those whose median medial-axis width is at most ``thin_width`` pixels.

    Args:
        widths: per image, :func:`class_widths`' list.
        thin_width: pixels.

    Returns:
        Ascending class indices (classes absent from every image are not thin).
    """
    if not widths:
        return []
    pooled = [np.concatenate([w[c] for w in widths]) for c in range(len(widths[0]))]
    return [c for c, w in enumerate(pooled) if w.size and float(np.median(w)) <= thin_width]
