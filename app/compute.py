"""Refinement as the app runs it: build once and reuse, reduced-resolution previews, progress and cancellation.

No Qt here; :mod:`app.workers` runs :func:`compute` on a thread pool. The results equal ``crfcore.refine``'s for the
same inputs (``tests/app/test_compute.py`` checks it); what this adds is the operator cache of DESIGN.md §2: a slider
that changes only weights, compatibility or iteration counts reuses the built affinity operator, so only the
iterations are paid again. Refiners that solve to a tolerance and expose ``scores(..., x0=)`` (the Gaussian CRF)
are also warm-started from their previous solution for the same image, which a small slider move barely changes.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import numpy as np
import torch
import torch.nn.functional as F

import crfcore
from crfcore import params as P
from crfcore.checks import as_image_tensor

from .scribbles import UNPAINTED

__all__ = ["PREVIEW_PIXELS", "RefineJob", "RefineResult", "OperatorCache", "preview_scale", "preview_params",
           "compute"]

PREVIEW_PIXELS = 65_536  # a drag preview runs on at most this many pixels (256×256), then is upsampled
PREVIEW_MS = 40.0  # ... and on fewer when the image's last full run predicts more than this many milliseconds
PREVIEW_MIN_SIDE = 32  # pixels: the preview's shorter side never gets smaller than this
PREVIEW_TOL_FACTOR = 10.0  # a preview's solver tolerance (the Gaussian CRF's CG) is this much looser
CACHE_SIZE = 6  # operators (full and preview, current and previous θ's) and warm starts kept
TIMES_KEPT = 256  # full-run times kept (one per image, refiner and device)


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
        preview: run at reduced resolution (:func:`preview_scale`) for a quick look while a slider is dragged.
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


class OperatorCache:
    """Least-recently-used store of built affinity operators and warm starts, safe to share between threads; beside
    them, the time a full-size refinement of each image took (:meth:`full_ms`), which sizes that image's previews."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}.")
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._times: OrderedDict[Hashable, float] = OrderedDict()
        self._lock = threading.Lock()

    def full_ms(self, key: Hashable) -> float | None:
        """Milliseconds of the last full-size refinement recorded for ``key``, or None."""
        with self._lock:
            return self._times.get(key)

    def record_full_ms(self, key: Hashable, ms: float) -> None:
        with self._lock:
            self._times[key] = ms
            self._times.move_to_end(key)
            while len(self._times) > TIMES_KEPT:
                self._times.popitem(last=False)

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Hashable, op: Any) -> None:
        with self._lock:
            self._items[key] = op
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._times.clear()

    def __len__(self) -> int:
        return len(self._items)


def preview_scale(height: int, width: int, *, full_ms: float | None = None) -> int:
    """Integer downsampling factor of a drag preview of a ``height × width`` image.

    The preview has at most :data:`PREVIEW_PIXELS` pixels and, given ``full_ms`` (milliseconds a full-size
    refinement of this image took), about ``full_ms / scale²`` ≤ :data:`PREVIEW_MS` of work, since a refinement's
    time grows with its pixel count; its shorter side stays ≥ :data:`PREVIEW_MIN_SIDE` pixels. 1 for small images.
    """
    scale = math.ceil(math.sqrt(height * width / PREVIEW_PIXELS))
    if full_ms is not None and full_ms > 0:
        scale = max(scale, math.ceil(math.sqrt(full_ms / PREVIEW_MS)))
    return max(1, min(scale, min(height, width) // PREVIEW_MIN_SIDE))


def preview_params(params: Any, scale: int) -> Any:
    """``params`` for an image downsampled ``scale`` times: spatial ranges in pixels shrink with it.

    Float parameters in pixels (θα, θγ) are divided by ``scale``, each clamped to its spec's range, so a preview
    covers about the same image area as the full run. ``blur`` (a resolution factor) becomes ``⌈blur / scale⌉``:
    the preview's message-passing grid is never finer than the full run's. Where that grid is coarser, the window
    ``filter_size`` (in grid cells) shrinks to the odd size nearest to the full run's reach ``k·blur`` pixels, so a
    preview costs fewer window taps, never more. A solver tolerance ``tol`` loosens ``PREVIEW_TOL_FACTOR`` times
    (within its range): its error stays far below the preview's loss of resolution.
    """
    if scale == 1:
        return params
    changes: dict[str, Any] = {}
    for spec in P.specs(params):
        value = getattr(params, spec.name)
        if spec.kind == "float" and spec.unit == "px":
            changes[spec.name] = max(spec.low, value / scale)
        elif spec.name == "blur":
            changes[spec.name] = max(int(spec.low), math.ceil(value / scale))
        elif spec.name == "tol":
            changes[spec.name] = min(spec.high, value * PREVIEW_TOL_FACTOR)
    if "blur" in changes and hasattr(params, "filter_size"):
        spec = next(s for s in P.specs(params) if s.name == "filter_size")
        cells = params.filter_size * params.blur / (scale * changes["blur"])  # the full run's reach, in preview cells
        changes["filter_size"] = min(params.filter_size, max(int(spec.low), 2 * round((cells - 1) / 2) + 1))
    return dataclasses.replace(params, **changes)  # not range-checked: effective values (issue 20) may leave them


def _operator_key(job: RefineJob, params: Any, scale: int, device: torch.device) -> Hashable:
    rebuild = tuple((s.name, repr(getattr(params, s.name))) for s in P.specs(params) if s.rebuilds)
    return job.image_key, job.image.shape, job.method, scale, str(device), rebuild


@torch.no_grad()
def compute(job: RefineJob, *, cache: OperatorCache | None = None, device: str | torch.device | None = None,
            progress: Callable[[int, int], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> RefineResult:
    """Run one refinement.

    Args:
        job: what to refine.
        cache: reuse (and store) built operators and warm starts; None builds and solves from scratch every time.
        device: ``"cpu"``, ``"cuda"``, or None for ``crfcore.best_device()``.
        progress: ``progress(done, total)`` after each iteration.
        should_stop: polled before the build, after it and after every iteration; True raises ``crfcore.Cancelled``.

    Raises:
        crfcore.Cancelled: ``should_stop`` returned True.
        ValueError: a compatibility matrix whose size is not the unary's class count.
    """
    start = time.perf_counter()

    def check() -> None:
        if should_stop is not None and should_stop():
            raise crfcore.Cancelled()

    check()
    dev = torch.device(device) if device is not None else crfcore.best_device()
    num_classes, height, width = job.unary.shape
    compat = getattr(job.params, "compat", "potts")
    if compat != "potts" and len(compat) != num_classes:
        raise ValueError(f"unary has {num_classes} classes, compat is {len(compat)}×{len(compat)}; reset the "
                         f"preset's compat to 'potts' or use a matching one.")
    cost_key = ("full_ms", job.image_key, job.image.shape, job.method, str(dev))
    full_ms = cache.full_ms(cost_key) if cache is not None and job.preview else None
    scale = preview_scale(height, width, full_ms=full_ms) if job.preview else 1
    # Issue 20: job.params hold reference-size (500 px) values, as crfcore.refine(scale="auto") takes them.
    params = preview_params(P.scaled(job.params, P.scale_factor(height, width, "auto")), scale)
    image = as_image_tensor(job.image).to(dev)
    unary = job.unary if job.scribbles is None else crfcore.unary.from_scribbles(
        job.scribbles.astype(np.int64), num_classes, prior=job.unary, unpainted=UNPAINTED)
    probs = torch.from_numpy(unary).unsqueeze(0).to(dev, torch.float32)
    if scale > 1:
        size = (math.ceil(height / scale), math.ceil(width / scale))
        image = F.interpolate(image, size=size, mode="area")
        probs = F.interpolate(probs, size=size, mode="area")
    model = crfcore.refiners.get(job.method, params).to(dev)
    key = _operator_key(job, params, scale, dev)
    op = cache.get(key) if cache is not None else None
    cached = op is not None
    t0 = time.perf_counter()
    if op is None:
        op = model.build(image)
        if cache is not None:
            cache.put(key, op)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    check()
    t1 = time.perf_counter()

    def callback(done: int, total: int, _q: torch.Tensor) -> None:
        check()
        if progress is not None:
            progress(done, total)

    if hasattr(model, "scores"):
        warm_key = ("x0", job.image_key, job.image.shape, job.method, scale, str(dev), num_classes)
        x = model.scores(image, probs, op=op, callback=callback,
                         x0=cache.get(warm_key) if cache is not None else None)
        if cache is not None:
            cache.put(warm_key, x)
        q = torch.softmax(x, dim=1)
    else:
        q = model(image, probs, op=op, callback=callback)
    if scale > 1:
        q = crfcore.unary.resize(q, (height, width))
    q = q[0].float().cpu()
    t2 = time.perf_counter()
    labels = q.max(0).indices  # as argmax(0), ~10x faster on CPU over a strided class axis
    timing = {"build_ms": (t1 - t0) * 1e3, "iterations_ms": (t2 - t1) * 1e3,
              "total_ms": (time.perf_counter() - start) * 1e3, "device": str(dev), "cached": cached,
              "scale": scale}
    if cache is not None and scale == 1 and (not cached or cache.full_ms(cost_key) is None):
        cache.record_full_ms(cost_key, timing["total_ms"])  # refining this image from scratch: sizes its previews
    return RefineResult(q.numpy(), labels.numpy(), timing, job.method, job.preview, job.version, job.params)
