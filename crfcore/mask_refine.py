"""``crfcore.refine_mask``: an image and a rough mask (or none) plus brush strokes → a boundary-accurate mask.

The mask becomes a unary through colour models learned from its confident part (:mod:`crfcore.appearance`), the CRF
refines it (:func:`crfcore.refine`), the models are refitted on the refined labels and the CRF runs again, GrabCut's
loop (Rother et al. 2004, §3) with a dense CRF in place of the graph cut.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import params as P
from . import presets
from .api import Refinement, best_device, resolve_params
from .appearance import (ColourModels, MaskGeometry, appearance_probs, estimate_roughness, fill_unknown,
                         fit_colour_models, mask_geometry)
from .image_refiner import ImageRefiner
from .stroke_unary import geodesic_distances, stroke_probs

__all__ = ["RoughMask", "rough_mask", "refine_mask", "resolve_settings"]


def _as_labels(x: np.ndarray | Tensor | None, name: str) -> np.ndarray | None:
    if x is None:
        return None
    arr = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} has shape {arr.shape}; expected (H, W) integer labels.")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise ValueError(f"{name} has dtype {arr.dtype}; expected integer class indices (a float mask cannot be "
                         f"read as labels: round it or use crfcore.refine with probabilities).")
    return arr.astype(np.int64)


def _as_image(image: np.ndarray | Tensor) -> np.ndarray:
    if isinstance(image, Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image has shape {tuple(image.shape)}; expected (3, H, W) in 0..255 (one image: "
                             f"refine_mask takes no batch).")
        image = image.detach().cpu().permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image has shape {getattr(image, 'shape', None)}; expected (H, W, 3) RGB uint8 (load files "
                         f"with crfcore.io.load_image).")
    if image.dtype != np.uint8:
        raise ValueError(f"image has dtype {image.dtype}; expected uint8 0..255.")
    return image


def resolve_settings(method: str, params: Any, kind: str, **overrides: Any) -> tuple[Any, P.UnaryParams]:
    """``(refiner params, unary settings)`` for :func:`refine_mask`: ``params`` None takes the method's shipped preset
    of ``kind`` (``"rough_annotation"`` or ``"scribbles"``; the refiner's defaults and :class:`UnaryParams` defaults
    when the method has none), a path reads that preset, a params dataclass keeps the shipped preset's unary
    settings; then ``overrides`` by name, each to the refiner params or the unary settings that declare it."""
    unary_names = {s.name for s in P.specs(P.UnaryParams)}
    refiner_names = {s.name for s in P.specs(P.params_for(method))}
    unknown = sorted(set(overrides) - unary_names - refiner_names)
    if unknown:
        raise ValueError(f"refine_mask got unknown setting(s) {', '.join(map(repr, unknown))}; valid names are the "
                         f"{method} parameters ({', '.join(sorted(refiner_names))}) and the unary settings "
                         f"({', '.join(sorted(unary_names))}).")
    shipped = presets.get(kind, method) if method in presets.methods(kind) else None
    if isinstance(params, (str, os.PathLike)):
        preset = presets.read(params)
        config, appearance = resolve_params(method, params), preset.appearance
    else:
        appearance = shipped.appearance if shipped is not None else P.UnaryParams()
        config = resolve_params(method, shipped.params if params is None and shipped is not None else params)
    config = P.with_overrides(config, **{k: v for k, v in overrides.items() if k in refiner_names})
    appearance = P.with_overrides(appearance, **{k: v for k, v in overrides.items()
                                                 if k in unary_names and k not in refiner_names})
    return config, appearance


def _eroded(labels: Tensor, num_classes: int) -> Tensor:
    """``(C, H, W)`` bool: pixels whose 3×3 neighbourhood holds one label (refit samples away from new outlines)."""
    onehot = torch.nn.functional.one_hot(labels, num_classes).permute(2, 0, 1).float().unsqueeze(0)
    return (-torch.nn.functional.max_pool2d(-onehot, 3, stride=1, padding=1))[0] > 0.5


@dataclass
class RoughMask:
    """An image with its rough mask and strokes, validated and measured: the unary of each GrabCut round.

    Built by :func:`rough_mask`; :func:`refine_mask` refines :meth:`unary` round by round, and the app refines the
    first round's unary live (with ``rounds`` = 1, the default, that is exactly :func:`refine_mask`).

    Attributes:
        image: ``(3, H, W)`` float32 0..255 on the compute device.
        labels: ``(H, W)`` int64 NumPy, the mask with strokes painted in; with a mask, its void pixels take the
            nearest label (and are doubted: in the zone, never training pixels); strokes alone: -1 unpainted.
        strokes: ``(H, W)`` int64 NumPy or None, -1 unpainted.
        num_classes: C ≥ 2.
        roughness: ρ [px] at this image's size, the uncertain zone's width.
        factor: the spatial scale factor (:func:`crfcore.params.scale_factor`) the refiner should run at.
        settings: the unary settings.
        geometry: the zone, reaches and training pixels (:func:`crfcore.appearance.mask_geometry`).
        distances: strokes without a mask (or one void everywhere): ``(C, H, W)`` float32 geodesic distances [px]
            to each class's strokes (:func:`crfcore.stroke_unary.geodesic_distances`), and :meth:`unary` is
            :func:`crfcore.stroke_unary.stroke_probs`; None with a mask.
    """

    image: Tensor
    labels: np.ndarray
    strokes: np.ndarray | None
    num_classes: int
    roughness: float
    factor: float
    settings: P.UnaryParams
    geometry: MaskGeometry
    distances: np.ndarray | None = None

    def unary(self, refined: Tensor | np.ndarray | None = None) -> Tensor:
        """``(C, H, W)`` float32 probabilities on the image's device: colour models fitted on the confident pixels
        (first round, ``refined`` None) or also on the zone pixels inside the regions of a previous round's
        ``(H, W)`` labels (GrabCut's refit), combined with the mask prior in the zone; strokes alone (``distances``
        set): :func:`crfcore.stroke_unary.stroke_probs`."""
        if self.distances is not None:
            return self._stroke_unary(refined)
        dev = self.image.device
        samples = torch.from_numpy(self.geometry.confident).to(dev)
        if refined is not None:
            refined = torch.as_tensor(refined, device=dev).long()
            samples = samples | (torch.from_numpy(self.geometry.zone).to(dev) & _eroded(refined, self.num_classes))
        s = self.settings
        models = fit_colour_models(self.image, samples, self.num_classes, components=s.components,
                                   position_weight=s.position_weight)
        return appearance_probs(self.image, self.geometry, models, confidence=s.confidence,
                                colour_weight=s.colour_weight, prior_width=s.prior_width,
                                smoothing=s.colour_smoothing, labels=self.labels, strokes=self.strokes,
                                calibrate=s.calibrate)

    def stroke_models(self, refined: Tensor | np.ndarray | None = None) -> ColourModels:
        """Strokes alone: the colour models fitted on the painted pixels (and on a previous round's ``(H, W)``
        labels away from their outlines)."""
        dev = self.image.device
        painted = torch.from_numpy(self.strokes).to(dev)
        samples = (torch.nn.functional.one_hot(painted.clamp_min(0), self.num_classes).permute(2, 0, 1).bool()
                   & (painted >= 0))
        if refined is not None:
            refined = torch.as_tensor(refined, device=dev).long()
            samples = samples | (_eroded(refined, self.num_classes) & (painted < 0))
        return fit_colour_models(self.image, samples, self.num_classes, components=self.settings.components,
                                 position_weight=self.settings.position_weight)

    def _stroke_unary(self, refined: Tensor | np.ndarray | None) -> Tensor:
        """Strokes alone: :meth:`stroke_models` with the geodesic prior of :mod:`crfcore.stroke_unary`."""
        s = self.settings
        return stroke_probs(self.image, self.strokes, self.stroke_models(refined), self.distances,
                            confidence=s.confidence, colour_weight=s.colour_weight, prior_strength=s.stroke_prior)


def rough_mask(image: np.ndarray | Tensor, mask: np.ndarray | Tensor | None, *, num_classes: int | None = None,
               roughness: float | str = "auto", strokes: np.ndarray | Tensor | None = None, void: int | None = 255,
               device: str | torch.device | None = None, scale: str | float = "auto",
               settings: P.UnaryParams | None = None) -> RoughMask:
    """Validate an image, a rough mask and strokes, estimate the roughness and measure the mask's geometry.

    The arguments are :func:`refine_mask`'s (``settings``: the unary settings, default :class:`UnaryParams`).

    Raises:
        ValueError: see :func:`refine_mask`.
    """
    settings = settings if settings is not None else P.UnaryParams()
    img = _as_image(image)
    h, w = img.shape[:2]
    labels = _as_labels(mask, "mask")
    painted = _as_labels(strokes, "strokes")
    for name, arr in (("mask", labels), ("strokes", painted)):
        if arr is not None and arr.shape != (h, w):
            raise ValueError(f"{name} is {arr.shape[0]}×{arr.shape[1]} but image is {h}×{w} (H×W); resize the "
                             f"{name} to the image with nearest-neighbour sampling.")
    if labels is None and (painted is None or not (painted >= 0).any()):
        raise ValueError("refine_mask needs a mask or at least one painted stroke pixel (strokes >= 0); got neither.")
    known = labels[labels != void] if labels is not None and void is not None else labels
    highest = max(int(known.max()) if known is not None and known.size else 0,
                  int(painted.max()) if painted is not None else 0)
    if num_classes is None:
        num_classes = max(2, highest + 1)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
    if known is not None and known.size and (known.min() < 0 or known.max() >= num_classes):
        bad = sorted(set(np.unique(known[(known < 0) | (known >= num_classes)]).tolist()))[:10]
        raise ValueError(f"mask holds values {bad} outside 0..{num_classes - 1} (void={void}); pass num_classes="
                         f"{max(bad) + 1} or map them to void.")
    if painted is not None and ((painted < -1) | (painted >= num_classes)).any():
        bad = sorted(set(np.unique(painted[(painted < -1) | (painted >= num_classes)]).tolist()))[:10]
        raise ValueError(f"strokes hold values {bad}; expected -1 (unpainted) or a class 0..{num_classes - 1}.")
    if not 1.0 / num_classes < settings.confidence <= 1.0:
        raise ValueError(f"confidence must be in (1/{num_classes}, 1], got {settings.confidence}.")
    factor = P.scale_factor(h, w, scale)

    work = np.full((h, w), -1, np.int64) if labels is None else labels.copy()
    if labels is not None and void is not None:
        work[labels == void] = -1
    if painted is not None:
        work = np.where(painted >= 0, painted, work)
    if isinstance(roughness, str):
        if roughness != "auto":
            raise ValueError(f"roughness must be 'auto' or a number of pixels > 0, got {roughness!r}.")
        rho = (estimate_roughness(img, work) * settings.roughness_scale if labels is not None
               else max(h, w) / 8.0)
    else:
        if isinstance(roughness, bool) or not np.isfinite(roughness) or roughness <= 0:
            raise ValueError(f"roughness must be 'auto' or a number of pixels > 0, got {roughness!r}.")
        rho = P.scaled_length(float(roughness), factor)
    dev = torch.device(device) if device is not None else best_device()
    image_t = torch.from_numpy(img).to(dev).permute(2, 0, 1).float()
    unknown = work < 0
    if labels is not None and unknown.any() and not unknown.all():
        work = fill_unknown(work)  # the nearest label is an unannotated pixel's prior; the zone doubts it
    geometry = mask_geometry(work, num_classes, rho, thin_fraction=settings.thin_fraction, unknown=unknown,
                             void_reach=settings.void_reach)
    distances = None
    if painted is not None and (labels is None or known.size == 0):  # strokes alone: the geodesic prior
        distances = geodesic_distances(img, painted, num_classes, edge_weight=settings.stroke_edges)
    return RoughMask(image_t, work, painted, num_classes, rho, factor, settings, geometry, distances)


@torch.no_grad()
def refine_mask(image: np.ndarray | Tensor, mask: np.ndarray | Tensor | None, *, num_classes: int | None = None,
                method: str = "convcrf", params: Any = None, roughness: float | str = "auto",
                strokes: np.ndarray | Tensor | None = None, void: int | None = 255,
                device: str | torch.device | None = None, scale: str | float = "auto", **overrides: Any) -> Refinement:
    """Refine a rough label mask, or brush strokes alone, with colour models and a CRF.

    Args:
        image: ``(H, W, 3)`` uint8 RGB, or a ``(3, H, W)`` tensor in 0..255.
        mask: ``(H, W)`` int labels 0..C-1, ``void`` = unannotated (doubted everywhere: the colours and the CRF
            decide); None = strokes only (colour models from the strokes and a geodesic distance prior,
            :mod:`crfcore.stroke_unary`).
        num_classes: C ≥ 2; default the largest label in the mask and strokes + 1 (at least 2).
        method: a registered refiner (``"convcrf"``, ``"densecrf"``, ``"gaussian"``, ``"piecewise"``).
        params: None for the method's shipped preset of the input's kind (``rough_annotation`` with a mask,
            ``scribbles`` without); a preset path; or the refiner's params dataclass.
        roughness: ``"auto"`` (:func:`crfcore.appearance.estimate_roughness` × the ``roughness_scale`` setting) or
            pixels > 0: how far the mask's outline may be off, the width of the zone where it is doubted (at the
            reference size under ``scale="auto"``, as the refiner's spatial parameters).
        strokes: ``(H, W)`` int, the class index where painted (hard labels that also train the colour models), -1
            elsewhere.
        void: the mask's unannotated value, or None.
        device: ``"cpu"``, ``"cuda"`` or None (CUDA when available).
        scale: as in :func:`crfcore.refine`: ``"auto"`` scales spatial parameters and a numeric ``roughness`` from
            a 500-px long side to the image; a number multiplies them by it (1.0: pixels as given). An estimated
            roughness is measured on the image itself and not scaled.
        **overrides: any refiner parameter or :class:`crfcore.params.UnaryParams` setting by name.

    Returns:
        :class:`Refinement`: ``probs`` ``(C, H, W)`` float32 and ``labels`` ``(H, W)`` int64, NumPy unless the mask
        (or, without one, the strokes) is a tensor; ``timing`` adds ``"unary_ms"``, ``"roughness_px"`` and
        ``"rounds"`` to :func:`crfcore.refine`'s keys (build and iteration times summed over rounds).

    Raises:
        ValueError: image and mask or strokes of different sizes, labels or strokes outside 0..C-1, no mask and no
            stroke, a bad roughness or setting; each message names the fix.

    Notes:
        A class whose mask regions are all thinner than its uncertain zone still trains on its ridge pixels (see
        :mod:`crfcore.appearance`); a class with fewer than 8 training pixels gets no colour model and its doubted
        pixels keep the mask prior alone (documented fallback, no error).
    """
    start = time.perf_counter()
    kind = "rough_annotation" if mask is not None else "scribbles"
    config, settings = resolve_settings(method, params, kind, **overrides)
    rough = rough_mask(image, mask, num_classes=num_classes, roughness=roughness, strokes=strokes, void=void,
                       device=device, scale=scale, settings=settings)
    refiner = ImageRefiner(rough.image, device=rough.image.device, cache_size=2)
    timing = {"build_ms": 0.0, "iterations_ms": 0.0, "unary_ms": 0.0}
    labels = None
    for _ in range(settings.rounds):
        t0 = time.perf_counter()
        probs = rough.unary(labels)
        timing["unary_ms"] += (time.perf_counter() - t0) * 1e3
        result = refiner.refine(probs, method, config, scale=rough.factor)
        timing["build_ms"] += result.timing["build_ms"]
        timing["iterations_ms"] += result.timing["iterations_ms"]
        labels = result.labels
    like = mask if mask is not None else strokes
    probs_out, labels_out = result.probs, result.labels
    if not isinstance(like, Tensor):
        probs_out, labels_out = probs_out.cpu().numpy(), labels_out.cpu().numpy()
    else:
        probs_out, labels_out = probs_out.to(like.device), labels_out.to(like.device)
    timing.update({"total_ms": (time.perf_counter() - start) * 1e3, "device": str(refiner.device),
                   "roughness_px": rough.roughness, "rounds": settings.rounds})
    return Refinement(probs_out, labels_out, timing, rough.factor)
