"""Benchmarks on a folder of images + ground-truth masks: a rough unary made from each mask, refined, scored.

Two protocols, each asking a different question of a refiner:

* ``"synthetic"`` (DESIGN.md §2, after Teichmann & Cipolla 2018, "Convolutional CRFs for Semantic Segmentation",
  §5.1): a seeded noisy unary (:func:`crfcore.synthetic.noisy_unary`), like a weak network's output. The CRF must
  recover the ground truth.
* ``"polygon"``: the annotation a person draws with a polygon tool. Each connected region of each class (8-connected)
  is outlined at the half-pixel level, simplified by Douglas–Peucker (Douglas & Peucker 1973) to ``tolerance``
  pixels and filled, so holes are lost; regions are painted larger first, so small ones stay on top; pixels no
  polygon covers get the background class. The annotation becomes a unary by :func:`crfcore.unary.from_labels`
  with each row's ``confidence`` and ``band``. The question here: does the CRF make a good annotation better, or worse?

Confusion matrices are summed over the folder, so mIoU is the dataset-level figure (void ignored); the boundary
F-score is the mean over images.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import io, metrics
from . import params as P
from .api import refine
from .labels import VOID
from .polygons import outlines, signed_area
from .synthetic import NoiseRecipe, noisy_unary
from .unary import DEFAULT_CONFIDENCE, from_labels, rasterize_polygons

__all__ = ["PROTOCOLS", "Score", "Entry", "PolygonRecipe", "region_polygons", "polygon_annotation", "resize_pair",
           "evaluate"]

log = logging.getLogger(__name__)

PROTOCOLS = ("synthetic", "polygon")
"""The benchmark protocols :func:`evaluate` runs (see the module docstring)."""


@dataclass
class Score:
    """Accumulated figures of one method over a dataset."""

    num_classes: int
    ignore_index: int | None
    conf: np.ndarray = field(init=False)
    boundary: list[float] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.conf = np.zeros((self.num_classes, self.num_classes), np.int64)

    def add(self, pred: np.ndarray, gt: np.ndarray, ms: float = 0.0) -> None:
        self.conf += metrics.confusion(pred, gt, self.num_classes, self.ignore_index)
        self.boundary.append(metrics.boundary_fscore(pred, gt, ignore_index=self.ignore_index))
        self.ms.append(ms)

    def summary(self) -> dict[str, float]:
        return {"miou": 100 * metrics.miou(self.conf), "miou_gt": 100 * metrics.miou(self.conf, classes="gt"),
                "accuracy": 100 * metrics.accuracy(self.conf),
                "boundary_f": 100 * float(np.mean(self.boundary)), "ms_per_image": float(np.mean(self.ms))}


@dataclass(frozen=True)
class Entry:
    """One refined row of the table.

    Attributes:
        method: a registered refiner name (``crfcore.refiners.names()``).
        params: its params dataclass, a preset path, or None for the defaults.
        confidence: polygon protocol: the probability :func:`crfcore.unary.from_labels` gives the annotated label,
            in (1/C, 1]; None takes :attr:`PolygonRecipe.confidence`. Must be None for the synthetic protocol.
        band: polygon protocol: ``from_labels``' uncertain band along the outlines, pixels > 0; None takes
            :attr:`PolygonRecipe.band`. Must be None for the synthetic protocol.

    ``Entry(method, params, **preset.unary)`` takes a preset's unary settings (:attr:`crfcore.presets.Preset.unary`).
    """

    method: str
    params: Any = None
    confidence: float | None = None
    band: float | None = None


@dataclass(frozen=True)
class PolygonRecipe:
    """How the polygon protocol draws its annotation.

    Attributes:
        tolerance: Douglas–Peucker tolerance, pixels ≥ 0: the largest distance of the outline from the polygon.
        background: class of pixels no polygon covers (its own regions are not drawn); None draws every class and
            leaves uncovered pixels unknown (uniform unary), for label sets without a background class (CamVid).
        confidence: default ``from_labels`` confidence of rows that give none.
        band: default ``from_labels`` band (pixels > 0) of rows that give none; None for no band.
    """

    tolerance: float = 4.0
    background: int | None = 0
    confidence: float = DEFAULT_CONFIDENCE
    band: float | None = None


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


def resize_pair(image: np.ndarray, mask: np.ndarray, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """An image and its mask resized so that the longer side is ``max_side`` pixels (smaller images are enlarged).

    Args:
        image: ``(H, W, 3)`` uint8 RGB; resized by :func:`skimage.transform.resize` (bilinear, Gaussian
            anti-aliasing when shrinking), rounded back to uint8.
        mask: ``(H, W)`` integer labels; resized by nearest neighbour (each output pixel centre takes the label of
            the input pixel it falls in), so no label is invented and void stays void.
        max_side: the longer output side, pixels ≥ 1; the shorter is scaled by the same factor and rounded (≥ 1).

    Returns:
        ``(image, mask)`` of shape ``(H', W', 3)`` uint8 and ``(H', W')`` with the mask's dtype; the inputs
        themselves when the longer side is already ``max_side``.
    """
    from skimage.transform import resize

    if isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer)) or max_side < 1:
        raise ValueError(f"max_side must be a whole number of pixels >= 1, got {max_side!r}.")
    h, w = mask.shape
    if image.shape[:2] != (h, w):
        raise ValueError(f"image is {image.shape[0]}×{image.shape[1]} but mask is {h}×{w} (H×W); give a mask of the "
                         f"image's size.")
    if max(h, w) == max_side:
        return image, mask
    scale = max_side / max(h, w)
    out_h, out_w = max(1, round(h * scale)), max(1, round(w * scale))
    resized = resize(image.astype(np.float64), (out_h, out_w, image.shape[2]), order=1, mode="edge",
                     anti_aliasing=scale < 1, preserve_range=True)
    rows = np.minimum(((np.arange(out_h) + 0.5) * h / out_h).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(out_w) + 0.5) * w / out_w).astype(np.int64), w - 1)
    return np.clip(np.rint(resized), 0, 255).astype(np.uint8), mask[rows[:, None], cols[None, :]]


def _entry(row: str, value: Entry | tuple, protocol: str) -> Entry:
    entry = value if isinstance(value, Entry) else Entry(*value)
    for name in ("confidence", "band"):
        if getattr(entry, name) is not None and protocol != "polygon":
            raise ValueError(f"row {row!r} gives a {name} ({getattr(entry, name)}), which only the polygon protocol "
                             f"uses (the {protocol} protocol makes its own unary); drop it or pass protocol='polygon'.")
    return entry


def _unary_options(entry: Entry, polygon: PolygonRecipe) -> tuple[float, float | None]:
    """``(confidence, band)`` of a row's ``from_labels`` unary: the row's own, else the recipe's."""
    return (polygon.confidence if entry.confidence is None else entry.confidence,
            polygon.band if entry.band is None else entry.band)


def evaluate(folder: str | Path, methods: Mapping[str, Entry | tuple], *, protocol: str = "synthetic",
             num_classes: int | None = None, ignore_index: int | None = VOID, recipe: NoiseRecipe = NoiseRecipe(),
             polygon: PolygonRecipe = PolygonRecipe(), limit: int | None = None, max_side: int | None = None,
             device: str | None = None, scale: str | float = "auto",
             progress: Callable[[int, int, str], None] | None = None) -> dict[str, dict[str, float]]:
    """Run a benchmark protocol on a dataset folder.

    Args:
        folder: a dataset folder (see :func:`crfcore.io.find_pairs`).
        methods: row name → :class:`Entry`, or a ``(method, params[, confidence[, band]])`` tuple.
        protocol: ``"synthetic"`` or ``"polygon"`` (see the module docstring).
        num_classes: C; default: the largest label in the masks + 1 (``ignore_index`` excluded).
        ignore_index: void label, skipped in scoring; in the synthetic unary it counts as background.
        recipe: the synthetic protocol's noise; polygon: the polygon protocol's drawing and default unary settings.
        limit: evaluate only the first ``limit`` pairs.
        max_side: resize every image and mask so that the longer side is this many pixels
            (:func:`resize_pair`) before the protocol runs; tolerances and scores are then in pixels of that size.
        scale: how spatial parameters follow each image's size, as in :func:`crfcore.refine` (``"auto"``: given
            at a 500-px long side; a number: that factor, 1.0 = pixels as given), after ``max_side``. The rows' and
            the recipe's unary ``band`` scale with them; the noise recipe and the polygon tolerance do not (they
            model the input).

    Returns:
        Row name → ``{"miou", "miou_gt", "accuracy", "boundary_f", "ms_per_image"}`` (percentages, ms; ``miou``
        averages over classes in ground truth or prediction, ``miou_gt`` over ground-truth classes). The first row
        scores the refiners' input: ``"unary"`` (the noisy unary's argmax) or ``"annotation"`` (the polygons).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"{protocol!r} is not a valid protocol. Valid protocols are "
                         f"{', '.join(map(repr, PROTOCOLS))}.")
    entries = {row: _entry(row, value, protocol) for row, value in methods.items()}
    pairs = io.find_pairs(folder)[:limit]
    if not pairs:
        raise ValueError(f"{folder} has no image/mask pairs (expected images/ and masks/ subfolders).")
    masks = [io.load_mask(m) for _, m in pairs]
    if num_classes is None:
        num_classes = 1 + max(int(np.max(np.where(m == ignore_index, 0, m))) for m in masks)
        num_classes = max(num_classes, 2)
    first = "unary" if protocol == "synthetic" else "annotation"
    scores = {name: Score(num_classes, ignore_index) for name in [first, *entries]}
    for i, ((image_path, mask_path), gt) in enumerate(zip(pairs, masks)):
        image = io.load_image(image_path)
        io.check_pair(image, gt, image_path, mask_path)
        if max_side is not None:
            image, gt = resize_pair(image, gt, max_side)
        if protocol == "synthetic":
            unary = noisy_unary(gt, num_classes, image_id=image_path.stem, recipe=recipe, void=ignore_index)
            unaries = {None: unary}
        else:
            drawn = polygon_annotation(gt, tolerance=polygon.tolerance, background=polygon.background,
                                       void=ignore_index)
            options = {_unary_options(e, polygon) for e in entries.values()}
            factor = P.scale_factor(*gt.shape, scale)
            unaries = {(c, b): from_labels(drawn, num_classes, confidence=c, ignore_index=-1,
                                           band=None if b is None else P.scaled_length(b, factor))
                       for c, b in options}
            unary = from_labels(drawn, num_classes, confidence=polygon.confidence, ignore_index=-1)
        scores[first].add(unary.argmax(0), gt)
        for name, entry in entries.items():
            start = time.perf_counter()
            row_unary = unary if protocol == "synthetic" else unaries[_unary_options(entry, polygon)]
            result = refine(image, row_unary, method=entry.method, params=entry.params, device=device, scale=scale)
            scores[name].add(result.labels, gt, (time.perf_counter() - start) * 1e3)
        if progress is not None:
            progress(i + 1, len(pairs), image_path.stem)
    return {name: s.summary() for name, s in scores.items()}
