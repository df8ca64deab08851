"""The per-image refiner: the costly step once per image, the cheap step per slider move (DESIGN.md §2).

As segment-anything's ``SamPredictor`` splits ``set_image`` from ``predict``, an :class:`ImageRefiner` takes the
image once (converted and moved to its device) and then refines any number of unaries with any method and params.
It holds what makes a slider live:

* an operator cache: a change of weights, compatibility or iteration count reuses the built affinity operator
  (only the params whose spec ``rebuilds`` key it), so only the iterations are paid again;
* warm starts: refiners that solve to a tolerance and expose ``scores(..., x0=)`` (the Gaussian CRF) start from
  their previous solution on this image, which a small slider move barely changes (at another size, resampled:
  a preview that changed size does not start cold);
* previews: a reduced-resolution run, first sized by the image's last full-run time (:func:`preview_scale`), then
  by the previews' own times with hysteresis (:class:`PreviewSizer`, :func:`next_preview_scale`), a per-call
  overhead that no size shrinks fitted from two sizes (:func:`preview_overhead`), with params keeping the full
  run's spatial reach (:func:`preview_params`), upsampled back to full size; :meth:`ImageRefiner.warm_previews`
  settles the size and builds its operator before the first preview is asked for;
* timing and labelling: every result is a :class:`~crfcore.api.Refinement` with its timing breakdown.

``crfcore.refine`` is a one-shot ``ImageRefiner``; the app keeps one per open image.

    >>> refiner = ImageRefiner(image, device="cpu")                          # doctest: +SKIP
    >>> r = refiner.refine(unary, "convcrf", w_appearance=20.0)             # doctest: +SKIP
    >>> r = refiner.refine(unary, "convcrf", w_appearance=25.0)             # doctest: +SKIP  (operator reused)
    >>> r.timing["cached"]                                                   # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import params as P
from .affinity.grid import upsample_planes
from .checks import as_device, as_image_tensor, as_prob_tensor
from .errors import InputError
from .inference import ProgressCallback
from .refiners import method as method_entry

__all__ = ["PREVIEW_PIXELS", "PREVIEW_MS", "PREVIEW_MIN_SIDE", "PREVIEW_TOL_FACTOR", "PREVIEW_FINER_SHARE",
           "PREVIEW_FINER_AFTER", "PREVIEW_FINER_AFTER_MAX", "CACHE_SIZE", "Refinement", "ImageRefiner", "PreviewSizer",
           "WARM_RUNS", "best_device", "resolve_params", "preview_bounds", "preview_scale", "preview_overhead",
           "next_preview_scale", "preview_params"]

PREVIEW_PIXELS = 65_536  # a preview runs on at most this many pixels (256×256), then is upsampled
PREVIEW_MS = 40.0  # ... and on fewer when its build and solve (what shrinks with it) would take more milliseconds
PREVIEW_MIN_SIDE = 32  # pixels: the preview's shorter side never gets smaller than this
PREVIEW_TOL_FACTOR = 10.0  # a preview's solver tolerance (the Gaussian CRF's CG) is this much looser
PREVIEW_FINER_SHARE = 0.5  # a preview gets finer only when predicted to take at most this share of PREVIEW_MS ...
PREVIEW_FINER_AFTER = 3  # ... judged by at least this many timed previews (a coarser one: after two over in a row)
PREVIEW_FINER_AFTER_MAX = 24  # doubled up to this many each time a finer size proved too slow (PreviewSizer)
CACHE_SIZE = 6  # operators (full and preview, current and previous θ's) and warm starts kept per image
WARM_RUNS = 4  # previews ImageRefiner.warm_previews runs at most: two sizes, so that with their operators and warm
# starts the full run's stay among the CACHE_SIZE kept (a release after the drag finds them)
LATEST_SIZES = 3  # sizes whose last solution is kept per method for warm starts at another size

Fixed = Literal["auto"] | np.ndarray | Tensor | None


@dataclass
class Refinement:
    """The result of a refinement (:func:`crfcore.refine`, :meth:`ImageRefiner.refine`).

    Attributes:
        probs: marginals, same kind (NumPy/torch) and layout as the unary, float32, sum 1 over C.
        labels: ``(H, W)`` or ``(B, H, W)`` int64 argmax labels, same kind as the unary.
        timing: ``{"build_ms", "iterations_ms", "total_ms", "device"}`` (milliseconds), and from an
            :class:`ImageRefiner` also ``cached`` and ``preview_scale``.
        scale: the factor the spatial parameters were multiplied by (:func:`crfcore.params.scale_factor`: the
            image's long side / 500 under ``scale="auto"``); 1.0 when they ran as given.
    """

    probs: np.ndarray | Tensor
    labels: np.ndarray | Tensor
    timing: dict[str, Any]
    scale: float = 1.0


def best_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_params(method: str, params: Any = None, **overrides: Any) -> Any:
    """A params instance for ``method``: ``params`` as given (a dataclass or a preset path), then ``overrides``."""
    cls = P.params_for(method)
    if isinstance(params, (str, os.PathLike)):
        path = params
        preset_method, params = P.load_preset(path)
        if preset_method != method:
            raise InputError(f"preset {os.fspath(path)} is for method {preset_method!r}, not {method!r}; pass "
                             f"method={preset_method!r} (CLI: --method {preset_method}) or another preset.")
    if params is None:
        params = cls()
    if not isinstance(params, cls):
        raise InputError(f"params for {method!r} must be {cls.__name__} or a preset path, got "
                         f"{type(params).__name__}.")
    return P.with_overrides(params, **overrides)


def preview_bounds(height: int, width: int) -> tuple[int, int]:
    """``(finest, coarsest)`` preview downsampling factors of a ``height × width`` image: the finest keeps a preview
    within :data:`PREVIEW_PIXELS` pixels, the coarsest keeps its shorter side ≥ :data:`PREVIEW_MIN_SIDE` pixels
    (the coarsest wins where they cross); both ≥ 1."""
    coarsest = max(1, min(height, width) // PREVIEW_MIN_SIDE)
    return min(coarsest, max(1, math.ceil(math.sqrt(height * width / PREVIEW_PIXELS)))), coarsest


def preview_scale(height: int, width: int, *, full_ms: float | None = None) -> int:
    """Integer downsampling factor of a preview of a ``height × width`` image, before any preview was timed.

    The preview has at most :data:`PREVIEW_PIXELS` pixels and, given ``full_ms`` (milliseconds a full-size
    refinement of this image took), about ``full_ms / scale²`` ≤ :data:`PREVIEW_MS` of work, since a refinement's
    time grows with its pixel count; its shorter side stays ≥ :data:`PREVIEW_MIN_SIDE` pixels. 1 for small images.
    """
    finest, coarsest = preview_bounds(height, width)
    scale = finest
    if full_ms is not None and full_ms > 0:
        scale = max(scale, math.ceil(math.sqrt(full_ms / PREVIEW_MS)))
    return min(scale, coarsest)


def preview_overhead(points: Sequence[tuple[int, float]]) -> float:
    """Milliseconds of a preview's build and solve that no size shrinks (per-call costs), from timed sizes.

    Fits ``t = a + b / scale²`` (a part per call plus a part per pixel) through the latest point and, of the points
    at other factors, the one whose pixel count differs most from it (the full run where there is one: the widest
    lever, least thrown by noise in either time); ``a`` is returned, within ``[0, t]`` of the latest point: 0 (time
    ∝ pixels) with no other factor or where time fell faster than pixels, the smaller time where the finer size was
    not the slower (nothing shrank with the size).

    Args:
        points: ``(scale, ms)`` pairs, oldest first: a downsampling factor ≥ 1 (1: a full-size run) and the build
            and solve time at it in milliseconds ≥ 0.

    Raises:
        ValueError: a factor < 1 or a negative or non-finite time.
    """
    for scale, ms in points:
        if scale < 1 or not math.isfinite(ms) or ms < 0:
            raise InputError(f"preview_overhead needs (scale >= 1, ms >= 0) pairs, got ({scale}, {ms}).")
    if not points:
        return 0.0
    last_scale, last_ms = points[-1]
    others = [(s, t) for s, t in reversed(points) if s != last_scale]  # the latest first: it wins a tie
    if not others:
        return 0.0
    other = max(others, key=lambda p: abs(p[0] ** -2 - last_scale ** -2))
    (fine, fine_ms), (coarse, coarse_ms) = sorted([other, (last_scale, last_ms)])
    if fine_ms <= coarse_ms:
        return float(min(fine_ms, coarse_ms, last_ms))
    per_pixel = (fine_ms - coarse_ms) / (fine ** -2 - coarse ** -2)  # ms at full size, per-call part excluded
    return float(min(last_ms, max(0.0, coarse_ms - per_pixel * coarse ** -2)))


def next_preview_scale(scale: int, recent_ms: Sequence[float], *, finest: int, coarsest: int,
                       budget_ms: float | None = None, finer_after: int = PREVIEW_FINER_AFTER,
                       overhead_ms: float = 0.0) -> int:
    """The downsampling factor for the next preview, after previews at factor ``scale`` took ``recent_ms``.

    Times are a preview's build and solve at its size (not the full-size resampling and labelling around them,
    which no factor shrinks). A time ``t`` at ``scale`` predicts ``a + (t − a)·(scale / s)²`` at factor ``s``, where
    ``a`` = ``overhead_ms`` (at most ``t``) is the part no size shrinks (:func:`preview_overhead`). Each change of
    factor costs a preview whose operators are built anew at that size, so the rule jumps straight to the factor
    predicted, on the safe side in each direction, with hysteresis:

    * coarser when the latest preview is over ``budget_ms``, and the one before too if there is one (a single slow
      one among quick ones is a burst of load, not too large a size): to the finest factor where the quicker of the
      two is predicted within it with the overhead (which makes a coarser size gain less than its pixels), at least
      one step;
    * finer only when there are at least ``finer_after`` times and each is well under: to the finest factor where
      each is predicted within :data:`PREVIEW_FINER_SHARE` of ``budget_ms`` as if time ∝ pixels (which a per-call
      part only makes cheaper); with fewer times, no change;
    * else unchanged; always within ``[finest, coarsest]`` (:func:`preview_bounds`).

    Args:
        scale: the factor the previews ran at, ≥ 1.
        recent_ms: their build and solve times in milliseconds, oldest first; at least one. All of them judge a
            finer size (the caller chooses how far back: :class:`PreviewSizer` passes those since the last change
            of size), the latest two a coarser one.
        finest, coarsest: the allowed factors, 1 ≤ finest ≤ coarsest.
        budget_ms: milliseconds a preview may take; None for :data:`PREVIEW_MS`.
        finer_after: how many previews in a row must be well under budget to go finer, ≥ 1.
        overhead_ms: milliseconds of each preview that no size shrinks, ≥ 0.

    Raises:
        ValueError: ``recent_ms`` empty or a bad factor, bound, budget or overhead.
    """
    budget = PREVIEW_MS if budget_ms is None else budget_ms
    if not 1 <= finest <= coarsest or scale < 1 or budget <= 0 or finer_after < 1 or not overhead_ms >= 0:
        raise InputError(f"next_preview_scale needs 1 <= finest <= coarsest, scale >= 1, budget_ms > 0, "
                         f"finer_after >= 1 and overhead_ms >= 0, got finest={finest}, coarsest={coarsest}, "
                         f"scale={scale}, budget_ms={budget}, finer_after={finer_after}, overhead_ms={overhead_ms}.")
    if not recent_ms:
        raise InputError("next_preview_scale needs the time of at least one preview at this scale (recent_ms).")
    slow = min(recent_ms[-2:])
    if slow > budget:
        fixed = min(overhead_ms, slow)
        wanted = coarsest
        if fixed < budget:  # a + (t − a)·(scale / s)² ≤ budget
            wanted = math.ceil(scale * math.sqrt((slow - fixed) / (budget - fixed)))
        return max(finest, min(coarsest, max(scale + 1, wanted)))
    if len(recent_ms) >= finer_after and scale > finest:
        wanted = max(finest, math.ceil(scale * math.sqrt(max(recent_ms) / (PREVIEW_FINER_SHARE * budget))))
        if wanted < scale:
            return min(wanted, coarsest)
    return max(finest, min(coarsest, scale))


class PreviewSizer:
    """The preview factor of one image and method: it starts where :func:`preview_scale` put it (from the full
    run's time) and then follows the previews' own times (:func:`next_preview_scale`), with the per-call overhead
    fitted from the times at two factors (:func:`preview_overhead`; the median of the counted times at each factor
    since it was last chosen, so that one burst does not make it; the full run's own build and solve time,
    ``full_ms``, is the first of them).

    The first preview at each factor is not counted: it paid for the change (operators built at that size) and says
    little about the next ones. A finer size is judged by every counted time since the last change (up to
    :data:`PREVIEW_FINER_AFTER_MAX`), so one slow step among quick ones (times on a shared machine come in bursts,
    and a slider step that finds its operator cached is much quicker than one that builds it) holds the size.
    Each time a step finer is undone (the next change of size is a coarser one), the
    streak of well-under previews asked for the next finer step doubles (from :data:`PREVIEW_FINER_AFTER` up to
    :data:`PREVIEW_FINER_AFTER_MAX`), so a time that hovers near the budget (a loaded machine) does not make the
    size flip back and forth. Not thread-safe (:class:`ImageRefiner` guards it).

    Args:
        scale: the starting factor.
        finest, coarsest: the allowed factors (:func:`preview_bounds`).
        full_ms: milliseconds the full-size run's build and solve took (factor 1), or None.
    """

    def __init__(self, scale: int, *, finest: int, coarsest: int, full_ms: float | None = None) -> None:
        if not 1 <= finest <= coarsest:
            raise InputError(f"PreviewSizer needs 1 <= finest <= coarsest, got finest={finest}, coarsest={coarsest}.")
        self.finest, self.coarsest = finest, coarsest
        self.scale = max(finest, min(coarsest, int(scale)))
        self._times: list[float] = []
        self._points: list[tuple[int, float]] = [] if full_ms is None else [(1, float(full_ms))]
        self._seen = False  # a preview ran at self.scale (the first one there is not counted)
        self.finer_after = PREVIEW_FINER_AFTER  # well-under previews in a row asked for the next finer step
        self._went_finer = False  # the last change of size was a step finer

    @property
    def settled(self) -> bool:
        """True once a preview at :attr:`scale` was timed there and kept it (not only the first, uncounted one)."""
        return bool(self._times)

    @property
    def seen(self) -> bool:
        """True once a preview ran at :attr:`scale` (its operators are built there)."""
        return self._seen

    @property
    def overhead_ms(self) -> float:
        """The per-call milliseconds fitted so far (:func:`preview_overhead`); 0 before two factors were timed."""
        return preview_overhead(self._points)

    def record(self, scale: int, preview_ms: float, *, budget_ms: float | None = None) -> int:
        """Note that a preview at factor ``scale`` took ``preview_ms`` milliseconds (build and solve); returns the
        next factor. Previews at another factor than :attr:`scale` (asked for explicitly) change nothing."""
        if scale != self.scale:
            return self.scale
        if not self._seen:
            self._seen = True
            return self.scale
        self._times = [*self._times, preview_ms][-PREVIEW_FINER_AFTER_MAX:]
        self._points = [*(p for p in self._points if p[0] != scale), (scale, float(np.median(self._times)))]
        scale = next_preview_scale(self.scale, self._times, finest=self.finest, coarsest=self.coarsest,
                                   budget_ms=budget_ms, finer_after=self.finer_after, overhead_ms=self.overhead_ms)
        if scale > self.scale and self._went_finer:  # the step finer was too slow after all: wait longer next time
            self.finer_after = min(PREVIEW_FINER_AFTER_MAX, 2 * self.finer_after)
        if scale != self.scale:
            self._went_finer = scale < self.scale
            self.scale, self._times, self._seen = scale, [], False
        return self.scale


def preview_params(params: Any, scale: int) -> Any:
    """``params`` for an image downsampled ``scale`` times: spatial ranges in pixels shrink with it.

    Float parameters in pixels (θα, θγ) are divided by ``scale``, each clamped to its spec's range, so a preview
    covers about the same image area as the full run. ``blur`` (a resolution factor) becomes ``⌈blur / scale⌉``:
    the preview's message-passing grid is never finer than the full run's. Where that grid is coarser, the window
    ``filter_size`` (in grid cells) shrinks to the odd size nearest to the full run's reach ``k·blur`` pixels, so a
    preview costs fewer window taps, never more. A solver tolerance ``tol`` loosens :data:`PREVIEW_TOL_FACTOR`
    times (within its range): its error stays far below the preview's loss of resolution.
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


class _LRU:
    """Least-recently-used store, safe to share between threads."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class ImageRefiner:
    """Refines unaries of one image on one device, reusing what a previous refinement of it built.

    Args:
        image: ``(H, W, 3)`` uint8 NumPy array, or ``(3, H, W)`` / ``(B, 3, H, W)`` tensor in 0..255.
        device: ``"cpu"``, ``"cuda"`` or None (CUDA when available).
        cache_size: built operators and warm starts kept (least recently used dropped first), ≥ 1.
        full_ms: known full-size build and solve times of this image per method, in milliseconds (e.g. from
            :attr:`full_ms` of an earlier refiner of the same image); they size the first previews.
        preview_scales: preview factors per method chosen by an earlier refiner of the same image
            (:attr:`preview_scales`); previews start there instead of at the full run's estimate.

    Raises:
        ValueError: a bad image (see :func:`crfcore.refine`) or ``cache_size`` < 1.
    """

    def __init__(self, image: np.ndarray | Tensor, *, device: str | torch.device | None = None,
                 cache_size: int = CACHE_SIZE, full_ms: Mapping[str, float] | None = None,
                 preview_scales: Mapping[str, int] | None = None) -> None:
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}.")
        self.device = as_device(device)
        self._image = as_image_tensor(image).to(self.device, torch.float32)
        self._previews: dict[int, Tensor] = {1: self._image}
        self._cache = _LRU(cache_size)
        self._full_ms: dict[str, float] = dict(full_ms or {})
        finest, coarsest = preview_bounds(*self.size)
        self._sizers = {method: PreviewSizer(scale, finest=finest, coarsest=coarsest)
                        for method, scale in (preview_scales or {}).items()}
        self._sizers_lock = threading.Lock()
        # (method, B, C) → {factor: the last solution at that size}, the most recently solved size last
        self._latest: dict[tuple[str, int, int], dict[int, Tensor]] = {}

    @property
    def size(self) -> tuple[int, int]:
        """The image's ``(H, W)`` in pixels."""
        return int(self._image.shape[-2]), int(self._image.shape[-1])

    @property
    def full_ms(self) -> dict[str, float]:
        """The last full-size run's build and solve time per method (milliseconds, without the labelling around
        them); a copy."""
        return dict(self._full_ms)

    @property
    def preview_scales(self) -> dict[str, int]:
        """The factor the next ``preview=True`` runs at, per method previewed so far; a copy."""
        with self._sizers_lock:
            return {method: sizer.scale for method, sizer in self._sizers.items()}

    def cached(self) -> int:
        """How many built operators and warm starts are held."""
        return len(self._cache)

    def preview_settled(self, method: str) -> bool:
        """True when ``preview=True`` runs of ``method`` were timed at the factor they run at now (a preview then
        finds its size chosen and its operators built; :meth:`warm_previews` has nothing to do), or when this
        image's previews run at full size (:func:`preview_bounds` ``(1, 1)``: nothing to choose or build)."""
        if preview_bounds(*self.size) == (1, 1):
            return True
        with self._sizers_lock:
            sizer = self._sizers.get(method)
            return sizer is not None and sizer.settled

    @torch.no_grad()
    def warm_previews(self, unary: np.ndarray | Tensor, method: str = "convcrf", params: Any = None, *,
                      scale: str | float = "auto", callback: ProgressCallback | None = None, fixed: Fixed = "auto",
                      max_runs: int = WARM_RUNS, **overrides: Any) -> int:
        """Settle the preview size of ``method`` before a slider asks for one (e.g. on a worker while the window
        is idle after a full run), so that the first previews of a drag neither pay for operators built at a new
        size nor change size step by step.

        Runs ``preview=True`` refinements with these arguments (as :meth:`refine`) until the factor is settled
        (:meth:`preview_settled`), at most ``max_runs``: the first at each factor builds its operators (not
        counted), the second is timed and moves the factor (:class:`PreviewSizer`) or keeps it. A solver that
        warm-starts (the Gaussian CRF) starts that second run not from the first's solution (nothing left to solve)
        but from the last one at another size, as a slider step after a change of size does. Each run leaves its
        operator and solution in the cache, so the next preview with these params starts from them.
        ``callback`` may raise ``crfcore.Cancelled`` to stop (what was built stays cached).

        Returns:
            the factor the next ``preview=True`` run of ``method`` runs at.

        Raises:
            ValueError: as :meth:`refine`, or ``max_runs`` < 1.
        """
        if max_runs < 1:
            raise InputError(f"warm_previews needs max_runs >= 1, got {max_runs}.")
        for _ in range(max_runs):
            with self._sizers_lock:
                sizer = self._sizer(method)
                if sizer.settled:
                    break
                restart = sizer.seen
            self._refine(unary, method, params, scale=scale, preview=True, callback=callback, fixed=fixed,
                         restart=restart, overrides=overrides)
        return self.preview_scales[method]

    @torch.no_grad()
    def refine(self, unary: np.ndarray | Tensor, method: str = "convcrf", params: Any = None, *,
               scale: str | float = "auto", preview: bool | int | None = None,
               callback: ProgressCallback | None = None, fixed: Fixed = "auto", **overrides: Any) -> Refinement:
        """Refine class probabilities of this image.

        Args:
            unary: ``(C, H, W)`` or ``(B, C, H, W)`` class probabilities, sum 1 over C, at the image's size.
            method: a registered refiner name (``crfcore.refiners.names()``).
            params: that refiner's params dataclass, or a preset JSON path; None for defaults.
            scale: ``"auto"``: spatial parameters (θα, θγ, the window's reach) are given at a 500-px long side and
                scaled to the image (:func:`crfcore.params.scale_factor`, :func:`crfcore.params.scaled`); a number
                > 0 multiplies them by it, so ``1.0`` runs them in pixels exactly as given.
            preview: None or False for a full-size run; True for a preview sized to :data:`PREVIEW_MS`: first by
                :func:`preview_scale` (and this image's last full-run time with ``method``), then by the previews'
                own times (:class:`PreviewSizer`); an int ≥ 1 for that downsampling factor. A preview runs on the
                downsampled image with :func:`preview_params` and returns full-size results.
            callback: ``callback(done, total, q)`` per iteration; raise ``crfcore.Cancelled`` to stop.
            fixed: pixels mean field holds at their unary: ``"auto"`` (those whose unary is one-hot, e.g. brush
                strokes), None (none), or an ``(H, W)`` / ``(B, H, W)`` bool mask. A preview holds a downsampled
                pixel when all the full-size pixels it covers are held. Refiners without mean field (the
                Gaussian CRF) accept only ``"auto"`` and None.
            **overrides: any parameter by name, e.g. ``filter_size=7``.

        Returns:
            :class:`~crfcore.api.Refinement`: ``probs`` in the unary's kind and layout, full size; ``labels``;
            ``timing`` with ``build_ms``, ``iterations_ms``, ``total_ms`` (milliseconds), ``device``, ``cached``
            (the operator was reused, build ≈ 0) and ``preview_scale`` (1, or the preview's downsampling factor);
            ``scale``: the spatial factor used.

        Raises:
            ValueError: unknown method or parameter, bad unary, a size or batch other than the image's, a compat
                matrix of another class count, a bad ``preview`` or ``fixed``; the message names the fix.
        """
        return self._refine(unary, method, params, scale=scale, preview=preview, callback=callback, fixed=fixed,
                            restart=False, overrides=overrides)

    def _refine(self, unary: np.ndarray | Tensor, method: str, params: Any, *, scale: str | float,
                preview: bool | int | None, callback: ProgressCallback | None, fixed: Fixed, restart: bool,
                overrides: Mapping[str, Any]) -> Refinement:
        """:meth:`refine`; ``restart``: a warm-starting solver starts from the last solution at another size."""
        start = time.perf_counter()
        entry = method_entry(method)
        config = resolve_params(method, params, **overrides)
        as_numpy = isinstance(unary, np.ndarray)
        probs, batched = as_prob_tensor(unary)
        probs, image = self._match(probs)
        num_classes, (height, width) = probs.shape[1], probs.shape[-2:]
        factor = P.scale_factor(height, width, scale)  # issue 20: reference-size (500 px) values to this image's
        config = P.scaled(config, factor)
        compat = getattr(config, "compat", "potts")
        if compat != "potts" and len(compat) != num_classes:
            raise InputError(f"unary has {num_classes} classes, compat is {len(compat)}×{len(compat)}; reset the "
                             f"preset's compat to 'potts' or use a matching one.")
        scale = self._scale(preview, method)  # from here on: the preview's downsampling factor
        config = preview_params(config, scale)
        held = self._fixed(fixed, probs)
        probs = probs.to(self.device, torch.float32)
        if scale > 1:
            size = (math.ceil(height / scale), math.ceil(width / scale))
            image = self._preview_image(image, scale, size)
            probs = F.interpolate(probs, size=size, mode="area")
            if isinstance(held, Tensor):
                held = F.interpolate(held.float(), size=size, mode="area") >= 1.0
        model = entry.refiner(config).to(self.device)
        rebuild = tuple((s.name, repr(getattr(config, s.name))) for s in P.specs(config) if s.rebuilds)
        key = ("op", method, scale, image.shape[0], rebuild)
        op = self._cache.get(key)
        cached = op is not None
        self._sync()
        t0 = time.perf_counter()
        if op is None:
            op = model.build(image)
            self._cache.put(key, op)
        self._sync()
        t1 = time.perf_counter()
        held_kw = {} if isinstance(held, str) else {"fixed": held}
        if hasattr(model, "scores"):
            warm_key = ("x0", method, scale, image.shape[0], num_classes)
            x0 = None if restart else self._cache.get(warm_key)
            if x0 is None:
                x0 = self._resampled_start(warm_key, probs.shape[-2:], other_than=scale if restart else None)
            x = model.scores(image, probs, op=op, callback=callback, x0=x0, **held_kw)
            self._cache.put(warm_key, x)
            solved = self._latest.setdefault((method, *warm_key[3:]), {})
            solved.pop(scale, None)
            solved[scale] = x
            while len(solved) > LATEST_SIZES:
                del solved[next(iter(solved))]
            q = torch.softmax(x, dim=1)
        else:
            q = model(image, probs, op=op, callback=callback, **held_kw)
        self._sync()
        work_ms = (time.perf_counter() - t0) * 1e3  # build and solve at the preview's size: what sizing can shrink
        if scale > 1:  # bilinear weights sum to 1, so q stays normalised (to float rounding) without a division
            q = upsample_planes(q, (height, width))
        self._sync()
        t2 = time.perf_counter()
        labels = q.max(1).indices  # as argmax(1) (first maximum), ~10x faster on CPU for a strided class axis
        out_device = unary.device if isinstance(unary, Tensor) else torch.device("cpu")
        q, labels = q.to(out_device, torch.float32), labels.to(out_device)
        if not batched:
            q, labels = q[0], labels[0]
        timing = {"build_ms": (t1 - t0) * 1e3, "iterations_ms": (t2 - t1) * 1e3,
                  "total_ms": (time.perf_counter() - start) * 1e3, "device": str(self.device), "cached": cached,
                  "preview_scale": scale}
        if scale == 1 and (not cached or method not in self._full_ms):
            self._full_ms[method] = work_ms  # refining this image from scratch: sizes its previews
        if preview is True:
            with self._sizers_lock:
                self._sizers[method].record(scale, work_ms, budget_ms=PREVIEW_MS)
        if as_numpy:
            return Refinement(q.numpy(), labels.numpy(), timing, factor)
        return Refinement(q, labels, timing, factor)

    def _match(self, probs: Tensor) -> tuple[Tensor, Tensor]:
        """The unary and the image with equal batch sizes; raises when sizes or batches differ."""
        image = self._image
        if image.shape[-2:] != probs.shape[-2:]:
            raise InputError(f"image is {image.shape[-2]}×{image.shape[-1]} but unary is {probs.shape[-2]}×"
                             f"{probs.shape[-1]} (H×W); resize the unary to the image (crfcore.unary.resize).")
        if image.shape[0] != probs.shape[0]:
            if image.shape[0] != 1:
                raise InputError(f"image batch is {image.shape[0]} but unary batch is {probs.shape[0]}.")
            image = image.expand(probs.shape[0], -1, -1, -1)
        return probs, image

    def _sizer(self, method: str) -> PreviewSizer:
        """The preview sizer of ``method``, made on first use (seeded by its full run's time); hold the lock."""
        sizer = self._sizers.get(method)
        if sizer is None:
            finest, coarsest = preview_bounds(*self.size)
            full_ms = self._full_ms.get(method)
            sizer = PreviewSizer(preview_scale(*self.size, full_ms=full_ms), finest=finest, coarsest=coarsest,
                                 full_ms=full_ms)
            self._sizers[method] = sizer
        return sizer

    def _scale(self, preview: bool | int | None, method: str) -> int:
        if preview is None or preview is False:
            return 1
        if preview is True:
            with self._sizers_lock:
                return self._sizer(method).scale
        if isinstance(preview, (int, np.integer)) and preview >= 1:
            return int(preview)
        raise InputError(f"preview must be None, True, False or a downsampling factor >= 1, got {preview!r}.")

    def _resampled_start(self, warm_key: tuple, size: torch.Size, *, other_than: int | None = None) -> Tensor | None:
        """The method's last solution (``warm_key`` = ``("x0", method, scale, B, C)``), at a factor other than
        ``other_than`` if given, resized bilinearly to ``size``: a start for a solve whose own size has none; None
        when there is none."""
        solved = self._latest.get((warm_key[1], *warm_key[3:]), {})
        latest = next((x for factor, x in reversed(solved.items()) if factor != other_than), None)
        if latest is None:
            return None
        return F.interpolate(latest, size=tuple(size), mode="bilinear", align_corners=False)

    def _fixed(self, fixed: Fixed, probs: Tensor) -> Tensor | str | None:
        """``"auto"``, None, or the mask as a ``(B, 1, H, W)`` bool tensor on the device."""
        if fixed is None or (isinstance(fixed, str) and fixed == "auto"):
            return fixed
        if isinstance(fixed, str):
            raise InputError(f"fixed must be 'auto', None or a bool mask, got {fixed!r}.")
        mask = torch.as_tensor(fixed, device=self.device)
        if mask.ndim == 2:
            mask = mask.unsqueeze(0)
        if mask.dtype != torch.bool or mask.ndim != 3 or mask.shape[-2:] != probs.shape[-2:] or \
                mask.shape[0] not in (1, probs.shape[0]):
            raise InputError(f"fixed must be a bool mask of shape (H, W) or (B, H, W) = {tuple(probs.shape[-2:])} "
                             f"or {(probs.shape[0], *probs.shape[-2:])}, got {mask.dtype} {tuple(mask.shape)}.")
        return mask.expand(probs.shape[0], -1, -1).unsqueeze(1)

    def _preview_image(self, image: Tensor, scale: int, size: tuple[int, int]) -> Tensor:
        small = self._previews.get(scale)
        if small is None:
            small = F.interpolate(self._image, size=size, mode="area")
            self._previews[scale] = small
        return small.expand(image.shape[0], -1, -1, -1)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
