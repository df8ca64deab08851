"""Benchmarks on a folder of images + ground-truth masks: a rough input made from each mask, refined, scored.

Four protocols, each asking a different question of a refiner:

* ``"synthetic"`` (DESIGN.md §2, after Teichmann & Cipolla 2018, "Convolutional CRFs for Semantic Segmentation",
  §5.1): a seeded noisy unary (:func:`crfcore.synthetic.noisy_unary`), like a weak network's output, refined by
  :func:`crfcore.refine`. The CRF must recover the ground truth.
* ``"polygon"``: the annotation a person draws with a polygon tool, simplified to ``tolerance`` pixels
  (:func:`crfcore.protocols.polygon_annotation`).
* ``"perturb"``: a brushed mask, every region dilated or eroded by ``offset`` pixels with a seeded jitter of the
  outline (:func:`crfcore.protocols.perturb_annotation`).
* ``"strokes"``: from nothing, a simulated annotator paints a disk of the true class into the largest wrong region
  (:func:`crfcore.protocols.next_stroke`) and the method segments again, ``budget`` times per image.

The mask protocols (polygon, perturb) ask: does the refiner make a rough annotation better, or worse? Their refiner
rows, and those of the strokes protocol, go through :func:`crfcore.refine_mask` (each row's ``roughness`` and
settings); the first row scores the annotation itself, its unknown pixels read as the nearest annotated label. Peer
rows (:mod:`crfcore.peers`, the ``bench`` extra) run ``"grabcut"`` on the mask protocols (its trimap band is the row's
roughness, or the protocol's: the polygon tolerance, the perturbation's ``|offset| + 2 jitter``) and
``"random_walker"`` on strokes.

Scores: confusion matrices are summed over the folder, so mIoU is the dataset-level figure (void ignored); the
boundary F-score (2 px) is the mean over images; the thin recall is the share of the pixels of thin classes
(:func:`crfcore.protocols.thin_classes`, from the ground truth at the evaluated size) labelled right. The strokes
protocol reports them after the budget, mIoU and boundary F after each reported stroke count, and NoC@t
(:func:`crfcore.protocols.number_of_clicks`) averaged over images.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import io, metrics, peers, refiners
from .api import refine, resolve_params
from .labels import VOID
from .mask_refine import refine_mask
from .protocols import (THIN_WIDTH, PerturbRecipe, PolygonRecipe, StrokeRecipe, class_widths, fill_nearest,
                        next_stroke, number_of_clicks, perturb_annotation, polygon_annotation, region_polygons,
                        thin_classes)
from .synthetic import NoiseRecipe, noisy_unary

__all__ = ["PROTOCOLS", "MASK_PROTOCOLS", "Score", "Entry", "PolygonRecipe", "PerturbRecipe", "StrokeRecipe",
           "region_polygons", "polygon_annotation", "resize_pair", "evaluate"]

log = logging.getLogger(__name__)

PROTOCOLS = ("synthetic", "polygon", "perturb", "strokes")
"""The benchmark protocols :func:`evaluate` runs (see the module docstring)."""
MASK_PROTOCOLS = ("polygon", "perturb")
"""The protocols whose input is a rough annotation."""


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

    def add(self, pred: np.ndarray, gt: np.ndarray, ms: float = 0.0) -> np.ndarray:
        """Score one image that took ``ms`` milliseconds; returns its confusion matrix."""
        conf = metrics.confusion(pred, gt, self.num_classes, self.ignore_index)
        self.conf += conf
        self.boundary.append(metrics.boundary_fscore(pred, gt, ignore_index=self.ignore_index))
        self.ms.append(ms)
        return conf

    def summary(self, thin: Sequence[int] = ()) -> dict[str, Any]:
        """Percentages and ms: ``miou``, ``miou_gt``, ``accuracy``, ``boundary_f``, ``thin_recall`` (over the
        pixels of the ``thin`` classes; NaN without any), ``class_recall`` (per class, NaN where absent) and
        ``ms_per_image``."""
        truth = self.conf.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = np.where(truth > 0, np.diag(self.conf) / truth, np.nan)
        thin = list(thin)
        thin_total = truth[thin].sum() if thin else 0
        return {"miou": 100 * metrics.miou(self.conf), "miou_gt": 100 * metrics.miou(self.conf, classes="gt"),
                "accuracy": 100 * metrics.accuracy(self.conf),
                "boundary_f": 100 * float(np.mean(self.boundary)),
                "thin_recall": 100 * float(np.diag(self.conf)[thin].sum() / thin_total) if thin_total else np.nan,
                "class_recall": [100 * float(r) for r in recall],
                "ms_per_image": float(np.mean(self.ms)) if self.ms else 0.0}


@dataclass(frozen=True)
class Entry:
    """One row of the table.

    Attributes:
        method: a registered refiner (``crfcore.refiners.names()``) or a peer (:data:`crfcore.peers.PEERS`).
        params: a refiner's params dataclass, a preset path, or None: the shipped preset of the input's kind in
            :func:`crfcore.refine_mask` (mask and strokes protocols), the defaults in the synthetic one. Peers: None.
        roughness: mask and strokes protocols: ``refine_mask``'s roughness, ``"auto"`` or pixels > 0; GrabCut's
            trimap band, ``"auto"`` taking the protocol's. Synthetic protocol: ``"auto"``.
        overrides: refiner parameters and :class:`crfcore.params.UnaryParams` settings by name (the latter in the
            mask and strokes protocols only). Peers: none.
    """

    method: str
    params: Any = None
    roughness: float | str = "auto"
    overrides: Mapping[str, Any] = field(default_factory=dict)
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




def _check_entry(row: str, value: Entry | tuple, protocol: str) -> Entry:
    """A row as an :class:`Entry`, checked against the protocol."""
    entry = value if isinstance(value, Entry) else Entry(*value)
    if entry.method not in refiners.names() and entry.method not in peers.PEERS:
        raise ValueError(f"row {row!r}: {entry.method!r} is neither a registered refiner "
                         f"({', '.join(map(repr, refiners.names()))}) nor a peer "
                         f"({', '.join(map(repr, peers.PEERS))}).")
    rough = entry.roughness
    if not (rough == "auto" or (isinstance(rough, (int, float)) and not isinstance(rough, bool) and rough > 0)):
        raise ValueError(f"row {row!r}: roughness must be 'auto' or a number of pixels > 0, got {rough!r}.")
    if entry.method in peers.PEERS:
        serves = MASK_PROTOCOLS if entry.method in peers.MASK_PEERS else ("strokes",)
        if protocol not in serves:
            raise ValueError(f"row {row!r}: the peer {entry.method!r} runs on the {' and '.join(serves)} "
                             f"protocol{'s' if len(serves) > 1 else ''}, not {protocol}; drop the row or change "
                             f"the protocol.")
        if entry.params is not None or entry.overrides or (entry.method == "random_walker" and rough != "auto"):
            raise ValueError(f"row {row!r}: the peer {entry.method!r} takes no params, settings"
                             f"{'' if entry.method == 'grabcut' else ' or roughness'}; drop them.")
    elif protocol == "synthetic" and rough != "auto":
        raise ValueError(f"row {row!r} gives a roughness ({rough}), which the synthetic protocol does not use (it "
                         f"makes its own unary); drop it or choose a mask protocol.")
    return entry


def _annotate(protocol: str, gt: np.ndarray, image_id: str, polygon: PolygonRecipe, perturb: PerturbRecipe,
              void: int | None) -> tuple[np.ndarray, float]:
    """``(annotation with -1 where unknown, the protocol's roughness in pixels)`` of a mask protocol."""
    if protocol == "polygon":
        drawn = polygon_annotation(gt, tolerance=polygon.tolerance, background=polygon.background, void=void)
        return drawn, max(1.0, polygon.tolerance)
    return perturb_annotation(gt, recipe=perturb, image_id=image_id, void=void), perturb.roughness


def _refine_annotation(entry: Entry, image: np.ndarray, annotation: np.ndarray, num_classes: int, band: float,
                       device: str | None, scale: str | float) -> np.ndarray:
    """One mask-protocol row's labels: GrabCut on its trimap, or :func:`crfcore.refine_mask`."""
    if entry.method == "grabcut":
        return peers.grabcut(image, annotation, band=band if entry.roughness == "auto" else float(entry.roughness))
    return refine_mask(image, annotation, num_classes=num_classes, method=entry.method, params=entry.params,
                       roughness=entry.roughness, void=-1, device=device, scale=scale, **entry.overrides).labels


def _segment_strokes(entry: Entry, image: np.ndarray, painted: np.ndarray, num_classes: int,
                     device: str | None, scale: str | float) -> np.ndarray:
    """One strokes-protocol row's labels from the strokes so far."""
    if entry.method == "random_walker":
        return peers.random_walker(image, painted)
    return refine_mask(image, None, num_classes=num_classes, method=entry.method, params=entry.params,
                       roughness=entry.roughness, strokes=painted, device=device, scale=scale,
                       **entry.overrides).labels


@dataclass
class _StrokeScore:
    """A strokes-protocol row: a :class:`Score` per reported stroke count and each image's mIoU curve."""

    recipe: StrokeRecipe
    num_classes: int
    ignore_index: int | None
    at: dict[int, Score] = field(init=False)
    curves: list[list[float]] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.at = {k: Score(self.num_classes, self.ignore_index) for k in self.recipe.reported}

    def run(self, segment: Callable[[np.ndarray], np.ndarray], gt: np.ndarray) -> None:
        """Annotate one image stroke by stroke, segmenting after each, and score it."""
        painted = np.full(gt.shape, -1, np.int64)
        pred: np.ndarray | None = None
        curve: list[float] = []
        for k in range(1, self.recipe.budget + 1):
            stroke = next_stroke(pred, gt, radius=self.recipe.radius, void=self.ignore_index)
            if pred is None and stroke is None:
                log.warning("an image is void everywhere; the strokes protocol skips it.")
                return
            if stroke is not None:  # otherwise nothing is wrong and the prediction stands
                painted[stroke[1]] = stroke[0]
                start = time.perf_counter()
                pred = segment(painted)
                self.ms.append((time.perf_counter() - start) * 1e3)
            conf = (self.at[k].add(pred, gt) if k in self.at
                    else metrics.confusion(pred, gt, self.num_classes, self.ignore_index))
            curve.append(100 * metrics.miou(conf))
        self.curves.append(curve)

    def summary(self, thin: Sequence[int]) -> dict[str, Any]:
        final = self.at[self.recipe.budget].summary(thin)
        out = {key: final[key] for key in ("miou", "miou_gt", "accuracy", "boundary_f", "thin_recall",
                                           "class_recall")}
        for k, score in self.at.items():
            figures = score.summary(thin)
            out[f"miou@{k}"], out[f"boundary_f@{k}"] = figures["miou"], figures["boundary_f"]
        for t in self.recipe.thresholds:
            out[f"noc@{t:g}"] = float(np.mean([number_of_clicks(c, t, self.recipe.budget) for c in self.curves]))
        out["ms_per_stroke"] = float(np.mean(self.ms)) if self.ms else 0.0
        return out


def evaluate(folder: str | Path, methods: Mapping[str, Entry | tuple], *, protocol: str = "synthetic",
             num_classes: int | None = None, ignore_index: int | None = VOID, recipe: NoiseRecipe = NoiseRecipe(),
             polygon: PolygonRecipe = PolygonRecipe(), perturb: PerturbRecipe = PerturbRecipe(),
             strokes: StrokeRecipe = StrokeRecipe(), limit: int | None = None, max_side: int | None = None,
             thin_width: float = THIN_WIDTH, device: str | None = None, scale: str | float = "auto",
             progress: Callable[[int, int, str], None] | None = None) -> dict[str, dict[str, Any]]:
    """Run a benchmark protocol on a dataset folder.

    Args:
        folder: a dataset folder (see :func:`crfcore.io.find_pairs`).
        methods: row name → :class:`Entry`, or a ``(method, params[, roughness[, overrides]])`` tuple.
        protocol: one of :data:`PROTOCOLS` (see the module docstring).
        num_classes: C; default: the largest label in the masks + 1 (``ignore_index`` excluded).
        ignore_index: void label, skipped in scoring; in the synthetic unary it counts as background.
        recipe, polygon, perturb, strokes: the settings of the synthetic, polygon, perturb and strokes protocols.
        limit: evaluate only the first ``limit`` pairs.
        max_side: resize every image and mask so that the longer side is this many pixels
            (:func:`resize_pair`) before the protocol runs; tolerances and scores are then in pixels of that size.
        thin_width: pixels; classes whose median width is at most this are thin
            (:func:`crfcore.protocols.thin_classes`).
        scale: how spatial parameters follow each image's size, as in :func:`crfcore.refine` (``"auto"``: given
            at a 500-px long side; a number: that factor, 1.0 = pixels as given), after ``max_side``; refiner rows
            only (the protocols' noise, tolerance and offsets model the input and do not scale).

    Returns:
        Row name → figures (percentages, ms): ``miou`` (over classes in ground truth or prediction), ``miou_gt``
        (over ground-truth classes), ``accuracy``, ``boundary_f``, ``thin_recall``, ``class_recall`` (a list),
        ``thin_classes`` (a list) and ``ms_per_image``; the strokes protocol adds ``miou@k`` and ``boundary_f@k``
        per reported count k, ``noc@t`` per threshold, and times ``ms_per_stroke`` instead. The first row of the
        other protocols scores the refiners' input: ``"unary"`` (synthetic) or ``"annotation"``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"{protocol!r} is not a valid protocol. Valid protocols are "
                         f"{', '.join(map(repr, PROTOCOLS))}.")
    entries = {row: _check_entry(row, value, protocol) for row, value in methods.items()}
    pairs = io.find_pairs(folder)[:limit]
    if not pairs:
        raise ValueError(f"{folder} has no image/mask pairs (expected images/ and masks/ subfolders).")
    masks = [io.load_mask(m) for _, m in pairs]
    if num_classes is None:
        num_classes = 1 + max(int(np.max(np.where(m == ignore_index, 0, m))) for m in masks)
        num_classes = max(num_classes, 2)
    first = {"synthetic": ["unary"], "strokes": []}.get(protocol, ["annotation"])
    scores: dict[str, Any] = {name: Score(num_classes, ignore_index) for name in first}
    for name in entries:
        scores[name] = (_StrokeScore(strokes, num_classes, ignore_index) if protocol == "strokes"
                        else Score(num_classes, ignore_index))
    widths = []
    for i, ((image_path, mask_path), gt) in enumerate(zip(pairs, masks)):
        image = io.load_image(image_path)
        io.check_pair(image, gt, image_path, mask_path)
        if max_side is not None:
            image, gt = resize_pair(image, gt, max_side)
        widths.append(class_widths(gt, num_classes, void=ignore_index))
        if protocol == "synthetic":
            unary = noisy_unary(gt, num_classes, image_id=image_path.stem, recipe=recipe, void=ignore_index)
            scores["unary"].add(unary.argmax(0), gt)
            for name, entry in entries.items():
                start = time.perf_counter()
                params = resolve_params(entry.method, entry.params, **entry.overrides)
                result = refine(image, unary, method=entry.method, params=params, device=device, scale=scale)
                scores[name].add(result.labels, gt, (time.perf_counter() - start) * 1e3)
        elif protocol == "strokes":
            for name, entry in entries.items():
                scores[name].run(lambda painted, e=entry: _segment_strokes(e, image, painted, num_classes, device, scale),
                                 gt)
        else:
            annotation, band = _annotate(protocol, gt, image_path.stem, polygon, perturb, ignore_index)
            scores["annotation"].add(fill_nearest(annotation, -1), gt)
            for name, entry in entries.items():
                start = time.perf_counter()
                labels = _refine_annotation(entry, image, annotation, num_classes, band, device, scale)
                scores[name].add(labels, gt, (time.perf_counter() - start) * 1e3)
        if progress is not None:
            progress(i + 1, len(pairs), image_path.stem)
    thin = thin_classes(widths, thin_width=thin_width)
    return {name: {**s.summary(thin), "thin_classes": thin} for name, s in scores.items()}
