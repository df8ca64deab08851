"""Refinement as the app runs it: jobs handed to a per-image :class:`crfcore.ImageRefiner`, progress, cancellation.

No Qt here; :mod:`app.workers` runs :func:`compute` on a thread pool. Everything numeric (the operator cache, preview
sizing, warm starts, timing, labels) is the refiner's, so the results equal ``crfcore.refine``'s for the same inputs;
what this adds is the job (a snapshot of the document), brush strokes made into hard unaries, a cancel check
between steps, and :class:`Refiners`, which keeps the refiners of the images refined lately.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import numpy as np
import torch

import crfcore

from .scribbles import UNPAINTED

__all__ = ["IMAGES_KEPT", "RefineJob", "RefineResult", "Refiners", "compute"]

IMAGES_KEPT = 2  # per-image refiners kept (the current image and the one before), each with its operators
TIMES_KEPT = 256  # full-run times kept (one set per image and device) for images whose refiner was dropped


@dataclass(frozen=True, eq=False)
class RefineJob:
    """A snapshot of what to refine.

    Attributes:
        image: ``(H, W, 3)`` uint8, 0..255.
        unary: ``(C, H, W)`` float32 probabilities, sum 1 over C.
        scribbles: ``(H, W)`` int16 brush strokes (class index, ``UNPAINTED`` = -1 elsewhere) or None; painted
            pixels get a hard (one-hot) unary, ``crfcore.unary.from_scribbles`` with ``unary`` as the prior, made on
            the worker.
        method: a registered refiner name.
        params: that refiner's params dataclass.
        image_key: identifies the image for the operator cache (its path); equal keys must mean equal images.
        preview: run at reduced resolution (``crfcore.image_refiner.preview_scale``) for a quick look while a slider
            is dragged.
        version: the document's input version the unary was taken at (see ``ImageDocument.version``); the result
            carries it back so a result made before the latest edit is recognised.
    """

    image: np.ndarray
    unary: np.ndarray
    method: str
    params: Any
    image_key: str
    preview: bool = False
    version: int = 0
    scribbles: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class RefineResult:
    """A finished refinement.

    Attributes:
        probs: ``(C, H, W)`` float32 marginals at the image's full size, sum 1 over C.
        labels: ``(H, W)`` int64 argmax labels.
        timing: ``build_ms``, ``iterations_ms``, ``total_ms`` (milliseconds), ``device``, ``cached`` (the operator
            was reused, build_ms ≈ 0) and ``scale`` (1, or the preview's downsampling factor).
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
    share between threads. A dropped refiner's full-run times are kept, so a revisited image's previews are sized
    as before."""

    def __init__(self, size: int = IMAGES_KEPT) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}.")
        self.size = size
        self._refiners: OrderedDict[Hashable, crfcore.ImageRefiner] = OrderedDict()
        self._times: OrderedDict[Hashable, dict[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, job: RefineJob, device: torch.device) -> crfcore.ImageRefiner:
        """The refiner of ``job``'s image on ``device``, made on first use (``job.image_key`` names the image)."""
        key = (job.image_key, job.image.shape, str(device))
        with self._lock:
            refiner = self._refiners.get(key)
            if refiner is not None:
                self._refiners.move_to_end(key)
                return refiner
        refiner = crfcore.ImageRefiner(job.image, device=device, full_ms=self._times.get(key))
        with self._lock:
            self._refiners[key] = refiner
            while len(self._refiners) > self.size:
                old_key, old = self._refiners.popitem(last=False)
                self._times[old_key] = old.full_ms
                self._times.move_to_end(old_key)
            while len(self._times) > TIMES_KEPT:
                self._times.popitem(last=False)
        return refiner

    def clear(self) -> None:
        with self._lock:
            self._refiners.clear()
            self._times.clear()

    def __len__(self) -> int:
        return len(self._refiners)


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
    unary = job.unary if job.scribbles is None else crfcore.unary.from_scribbles(
        job.scribbles.astype(np.int64), job.unary.shape[0], prior=job.unary, unpainted=UNPAINTED)

    def callback(done: int, total: int, _q: torch.Tensor) -> None:
        check()
        if progress is not None:
            progress(done, total)

    result = refiner.refine(unary, job.method, job.params, preview=job.preview, callback=callback)
    return RefineResult(result.probs, result.labels, result.timing, job.method, job.preview, job.version, job.params)
