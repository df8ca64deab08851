"""Refinement as the app runs it: jobs handed to a per-image :class:`crfcore.ImageRefiner`, progress, cancellation.

No Qt here; :mod:`app.workers` runs :func:`compute` on a thread pool. Everything numeric (the operator cache, preview
sizing, warm starts, timing, labels) is the refiner's, so the results equal ``crfcore.refine``'s for the same inputs;
what this adds is the job (a snapshot of the document), the unary of a mask or of strokes made on the worker as
``crfcore.refine_mask`` makes it (:class:`RoughInput`, ``crfcore.mask_refine.rough_mask(...).unary()``, so a full
run equals ``crfcore.refine_mask``'s with one GrabCut round), brush strokes on a probability map made into hard
unaries, a cancel check between steps, and :class:`Refiners`, which keeps the refiners of the images refined lately
and the rough-mask unaries they were given.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import numpy as np
import torch

import crfcore
from crfcore import params as P

from .scribbles import UNPAINTED

__all__ = ["IMAGES_KEPT", "UNARIES_KEPT", "RoughInput", "RefineJob", "RefineResult", "Refiners", "compute",
           "needs_warm", "warm"]

IMAGES_KEPT = 2  # per-image refiners kept (the current image and the one before), each with its operators
TIMES_KEPT = 256  # full-run times and preview factors kept (per image and device) for images whose refiner was dropped
UNARIES_KEPT = 4  # rough-mask unaries kept (the current inputs and a few before, e.g. the state an undo returns to)


@dataclass(frozen=True, eq=False)
class RoughInput:
    """A mask and/or brush strokes to make the unary from, as ``crfcore.refine_mask`` does
    (``crfcore.mask_refine.rough_mask(image, mask, ...).unary()``, the first GrabCut round's colour-model unary).

    Attributes:
        mask: ``(H, W)`` int64 labels 0..C-1 or ``void``, or None (strokes alone).
        num_classes: C ≥ 2.
        roughness: ``"auto"`` (estimated from the image and the mask) or pixels > 0 at the reference 500-px long side.
        settings: the unary settings (:class:`crfcore.params.UnaryParams`).
        void: the mask's unannotated label.
    """

    mask: np.ndarray | None
    num_classes: int
    roughness: float | str = "auto"
    settings: P.UnaryParams = field(default_factory=P.UnaryParams)
    void: int = 255


@dataclass(frozen=True, eq=False)
class RefineJob:
    """A snapshot of what to refine.

    Attributes:
        image: ``(H, W, 3)`` uint8, 0..255.
        unary: ``(C, H, W)`` float32 probabilities, sum 1 over C (a probability map), or None when ``rough`` makes
            the unary.
        scribbles: ``(H, W)`` int16 brush strokes (class index, ``UNPAINTED`` = -1 elsewhere) or None. With
            ``unary``, painted pixels get a hard (one-hot) unary, ``crfcore.unary.from_scribbles`` with ``unary`` as
            the prior; with ``rough``, they are ``refine_mask``'s ``strokes`` (hard, and they train the colour
            models). Made on the worker.
        method: a registered refiner name.
        params: that refiner's params dataclass.
        image_key: identifies the image for the operator cache (its path); equal keys must mean equal images.
        preview: run at reduced resolution for a quick look while a slider is dragged, at the factor the image's
            refiner keeps per method (``crfcore.image_refiner.PreviewSizer``: from the full run's time, then from
            the previews' own).
        version: the document's input version the unary was taken at (see ``ImageDocument.version``); the result
            carries it back so a result made before the latest edit is recognised.
        rough: the mask and unary settings the worker makes the unary from (cached per image in
            :class:`Refiners`), or None when ``unary`` is given.
    """

    image: np.ndarray
    unary: np.ndarray | None
    method: str
    params: Any
    image_key: str
    preview: bool = False
    version: int = 0
    scribbles: np.ndarray | None = None
    rough: RoughInput | None = None

    def __post_init__(self) -> None:
        if (self.unary is None) == (self.rough is None):
            raise ValueError("a RefineJob needs exactly one of unary (probabilities) and rough (a mask or strokes to "
                             "make the unary from).")


@dataclass(frozen=True, eq=False)
class RefineResult:
    """A finished refinement.

    Attributes:
        probs: ``(C, H, W)`` float32 marginals at the image's full size, sum 1 over C.
        labels: ``(H, W)`` int64 argmax labels.
        timing: ``build_ms``, ``iterations_ms``, ``total_ms`` (milliseconds), ``device``, ``cached`` (the operator
            was reused, build_ms ≈ 0) and ``preview_scale`` (1, or the preview's downsampling factor); with a
            rough-mask unary also ``unary_ms`` (0 when cached) and ``roughness_px`` (the uncertain zone's width at
            the image's size, estimated under Auto).
        method: the refiner that made it.
        preview: True for a reduced-resolution preview.
        version: the job's ``version``.
        params: the params dataclass it ran with (None for a mask restored from a project).
    """

    probs: np.ndarray
    labels: np.ndarray
    timing: dict[str, Any] = field(default_factory=dict)
    method: str = ""
    preview: bool = False
    version: int = 0
    params: Any = None


class Refiners:
    """The :class:`crfcore.ImageRefiner` of each image refined lately, least recently used dropped first; safe to
    share between threads. A dropped refiner's full-run times and preview factors are kept, so a revisited image's
    previews start at the size they had (a change of size costs operators built at the new size). It also keeps the
    last :data:`UNARIES_KEPT` rough-mask unaries (:meth:`rough_unary`), keyed by the image and the contents of the
    mask, strokes and settings, so a slider drag does not remake them."""

    def __init__(self, size: int = IMAGES_KEPT) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}.")
        self.size = size
        self._refiners: OrderedDict[Hashable, crfcore.ImageRefiner] = OrderedDict()
        self._times: OrderedDict[Hashable, tuple[dict[str, float], dict[str, int]]] = OrderedDict()
        self._unaries: OrderedDict[Hashable, tuple[torch.Tensor, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, job: RefineJob, device: torch.device) -> crfcore.ImageRefiner:
        """The refiner of ``job``'s image on ``device``, made on first use (``job.image_key`` names the image)."""
        key = (job.image_key, job.image.shape, str(device))
        with self._lock:
            refiner = self._refiners.get(key)
            if refiner is not None:
                self._refiners.move_to_end(key)
                return refiner
        full_ms, preview_scales = self._times.get(key, (None, None))
        refiner = crfcore.ImageRefiner(job.image, device=device, full_ms=full_ms, preview_scales=preview_scales)
        with self._lock:
            self._refiners[key] = refiner
            while len(self._refiners) > self.size:
                old_key, old = self._refiners.popitem(last=False)
                self._times[old_key] = (old.full_ms, old.preview_scales)
                self._times.move_to_end(old_key)
            while len(self._times) > TIMES_KEPT:
                self._times.popitem(last=False)
        return refiner

    def peek(self, job: RefineJob, device: torch.device) -> crfcore.ImageRefiner | None:
        """The refiner of ``job``'s image on ``device`` if one is kept, else None (nothing is made)."""
        with self._lock:
            return self._refiners.get((job.image_key, job.image.shape, str(device)))

    def rough_unary(self, job: RefineJob, device: torch.device) -> tuple[torch.Tensor, float, bool]:
        """``(unary, roughness_px, cached)`` of ``job.rough``: ``(C, H, W)`` float32 on ``device``, made by
        :func:`rough_unary` unless the same inputs were made lately."""
        key = _rough_key(job, device)
        with self._lock:
            hit = self._unaries.get(key)
            if hit is not None:
                self._unaries.move_to_end(key)
                return (*hit, True)
        unary, roughness = rough_unary(job, device)
        with self._lock:
            self._unaries[key] = (unary, roughness)
            while len(self._unaries) > UNARIES_KEPT:
                self._unaries.popitem(last=False)
        return unary, roughness, False

    def clear(self) -> None:
        with self._lock:
            self._refiners.clear()
            self._times.clear()
            self._unaries.clear()

    def __len__(self) -> int:
        return len(self._refiners)


def _digest(array: np.ndarray | None) -> tuple | None:
    if array is None:
        return None
    array = np.ascontiguousarray(array)
    return array.shape, str(array.dtype), hashlib.blake2b(array.data, digest_size=16).digest()


def _rough_key(job: RefineJob, device: torch.device) -> Hashable:
    rough = job.rough
    return (job.image_key, job.image.shape, str(device), _digest(rough.mask), _digest(job.scribbles),
            rough.num_classes, rough.roughness, rough.settings, rough.void)


def rough_unary(job: RefineJob, device: str | torch.device | None = None) -> tuple[torch.Tensor, float]:
    """``(unary, roughness_px)`` of a job with ``rough``: ``crfcore.mask_refine.rough_mask(...).unary()`` of its
    image, mask and strokes, ``(C, H, W)`` float32 on ``device``, and the uncertain zone's width in pixels at the
    image's size. Takes 0.1–2 s (colour models fitted on the image); :meth:`Refiners.rough_unary` caches it."""
    from crfcore.mask_refine import rough_mask  # the colour models: not needed until a mask is refined

    rough = job.rough
    if rough is None:
        raise ValueError("rough_unary needs a job with rough (a mask or strokes); this job carries a unary.")
    strokes = None if job.scribbles is None else job.scribbles.astype(np.int64)
    made = rough_mask(job.image, rough.mask, num_classes=rough.num_classes, roughness=rough.roughness,
                      strokes=strokes, void=rough.void, device=device, settings=rough.settings)
    return made.unary(), made.roughness


def compute(job: RefineJob, *, refiners: Refiners | None = None, device: str | torch.device | None = None,
            progress: Callable[[int, int], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> RefineResult:
    """Run one refinement.

    Args:
        job: what to refine.
        refiners: reuse (and keep) per-image refiners, their operators and warm starts; None refines from scratch.
        device: ``"cpu"``, ``"cuda"``, or None for ``crfcore.best_device()``.
        progress: ``progress(done, total)`` after each iteration.
        should_stop: polled before the refinement and after every iteration; True raises ``crfcore.Cancelled``.

    Raises:
        crfcore.Cancelled: ``should_stop`` returned True.
        ValueError: a compatibility matrix whose size is not the unary's class count.
    """

    def check() -> None:
        if should_stop is not None and should_stop():
            raise crfcore.Cancelled()

    check()
    dev = torch.device(device) if device is not None else crfcore.best_device()
    refiner = refiners.get(job, dev) if refiners is not None else crfcore.ImageRefiner(job.image, device=dev)
    unary, extra = _unary(job, refiners, dev)
    check()

    def callback(done: int, total: int, _q: torch.Tensor) -> None:
        check()
        if progress is not None:
            progress(done, total)

    result = refiner.refine(unary, job.method, job.params, preview=job.preview, callback=callback)
    probs, labels = result.probs, result.labels
    if isinstance(probs, torch.Tensor):  # a rough-mask unary is a tensor on the device: so are the marginals
        probs, labels = probs.cpu().numpy(), labels.cpu().numpy()
    timing = {**result.timing, **extra}
    if extra:
        timing["total_ms"] = result.timing["total_ms"] + extra["unary_ms"]
    return RefineResult(probs, labels, timing, job.method, job.preview, job.version, job.params)


def _unary(job: RefineJob, refiners: Refiners | None, device: torch.device) -> tuple[Any, dict[str, Any]]:
    """The job's unary (made from its rough mask or strokes where it has them) and the timing entries that adds."""
    if job.rough is not None:
        start = time.perf_counter()
        unary, roughness, cached = (refiners.rough_unary(job, device) if refiners is not None
                                    else (*rough_unary(job, device), False))
        return unary, {"unary_ms": 0.0 if cached else (time.perf_counter() - start) * 1e3, "roughness_px": roughness}
    if job.scribbles is not None:
        return crfcore.unary.from_scribbles(job.scribbles.astype(np.int64), job.unary.shape[0], prior=job.unary,
                                            unpainted=UNPAINTED), {}
    return job.unary, {}


def needs_warm(job: RefineJob, refiners: Refiners, device: str | torch.device | None = None) -> bool:
    """True when ``job``'s image has a kept refiner that has not yet run (or been given) a preview size for
    ``job.method`` and whose previews are not full-size: :func:`warm` has work to do. Cheap (no refiner is made),
    so the GUI thread may ask."""
    dev = torch.device(device) if device is not None else crfcore.best_device()
    refiner = refiners.peek(job, dev)
    return refiner is not None and job.method not in refiner.preview_scales and \
        not refiner.preview_settled(job.method)


def warm(job: RefineJob, *, refiners: Refiners, device: str | torch.device | None = None,
         should_stop: Callable[[], bool] | None = None) -> int:
    """Settle the preview size of ``job``'s image and method and build its operators for ``job.params``
    (``crfcore.ImageRefiner.warm_previews``), so that the first preview of a slider drag starts there: run on the
    worker after a full run, while the window waits for the user. Returns the preview's downsampling factor.

    Raises:
        crfcore.Cancelled: ``should_stop`` returned True (polled before and between iterations; what was built
            stays cached).
    """
    def check() -> None:
        if should_stop is not None and should_stop():
            raise crfcore.Cancelled()

    check()
    dev = torch.device(device) if device is not None else crfcore.best_device()
    refiner = refiners.get(job, dev)
    unary, _ = _unary(job, refiners, dev)
    check()
    return refiner.warm_previews(unary, job.method, job.params, callback=lambda done, total, q: check())
