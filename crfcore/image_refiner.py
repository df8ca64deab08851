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
  by the previews' own times with hysteresis (:class:`PreviewSizer`, :func:`next_preview_scale`), with params
  keeping the full run's spatial reach (:func:`preview_params`), upsampled back to full size;
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
           "best_device", "resolve_params", "preview_bounds", "preview_scale", "next_preview_scale", "preview_params"]

PREVIEW_PIXELS = 65_536  # a preview runs on at most this many pixels (256×256), then is upsampled
PREVIEW_MS = 40.0  # ... and on fewer when its build and solve (what shrinks with it) would take more milliseconds
PREVIEW_MIN_SIDE = 32  # pixels: the preview's shorter side never gets smaller than this
PREVIEW_TOL_FACTOR = 10.0  # a preview's solver tolerance (the Gaussian CRF's CG) is this much looser
PREVIEW_FINER_SHARE = 0.5  # a preview gets finer only when predicted to take at most this share of PREVIEW_MS ...
PREVIEW_FINER_AFTER = 3  # ... judged by each of this many timed previews in a row (a coarser one: after one over)
PREVIEW_FINER_AFTER_MAX = 24  # doubled up to this many each time a finer size proved too slow (PreviewSizer)
CACHE_SIZE = 6  # operators (full and preview, current and previous θ's) and warm starts kept per image

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


def next_preview_scale(scale: int, recent_ms: Sequence[float], *, finest: int, coarsest: int,
                       budget_ms: float | None = None, finer_after: int = PREVIEW_FINER_AFTER) -> int:
    """The downsampling factor for the next preview, after previews at factor ``scale`` took ``recent_ms``.

    Times are a preview's build and solve at its size (not the full-size resampling and labelling around them,
    which no factor shrinks), taken to grow with its pixel count (``∝ 1 / scale²``). Hysteresis, since each change of
    factor costs a preview whose operators are built anew at that size:

    * coarser as soon as the latest preview is over ``budget_ms``: to the factor predicted to fit it, at least one
      step;
    * finer by one step only when each of the last ``finer_after`` previews, scaled to that finer
      size, is predicted within :data:`PREVIEW_FINER_SHARE` of ``budget_ms`` (fewer times: no change);
    * else unchanged; always within ``[finest, coarsest]`` (:func:`preview_bounds`).

    Args:
        scale: the factor the previews ran at, ≥ 1.
        recent_ms: their build and solve times in milliseconds, oldest first (only the last ``finer_after``
            matter); at least one.
        finest, coarsest: the allowed factors, 1 ≤ finest ≤ coarsest.
        budget_ms: milliseconds a preview may take; None for :data:`PREVIEW_MS`.
        finer_after: how many previews in a row must be well under budget to go finer, ≥ 1.

    Raises:
        ValueError: ``recent_ms`` empty or a bad factor, bound or budget.
    """
    budget = PREVIEW_MS if budget_ms is None else budget_ms
    if not 1 <= finest <= coarsest or scale < 1 or budget <= 0 or finer_after < 1:
        raise InputError(f"next_preview_scale needs 1 <= finest <= coarsest, scale >= 1, budget_ms > 0 and "
                         f"finer_after >= 1, got finest={finest}, coarsest={coarsest}, scale={scale}, "
                         f"budget_ms={budget}, finer_after={finer_after}.")
    if not recent_ms:
        raise InputError("next_preview_scale needs the time of at least one preview at this scale (recent_ms).")
    if recent_ms[-1] > budget:
        wanted = math.ceil(scale * math.sqrt(recent_ms[-1] / budget))
        return max(finest, min(coarsest, max(scale + 1, wanted)))
    last = recent_ms[-finer_after:]
    finer = scale - 1
    if finer >= finest and len(last) == finer_after and \
            all(t * (scale / finer) ** 2 <= PREVIEW_FINER_SHARE * budget for t in last):
        return min(finer, coarsest)
    return max(finest, min(coarsest, scale))


class PreviewSizer:
    """The preview factor of one image and method: it starts where :func:`preview_scale` put it (from the full
    run's time) and then follows the previews' own times (:func:`next_preview_scale`).

    The first preview at each factor is not counted: it paid for the change (operators built at that size) and says
    little about the next ones. Each time a step finer is undone (the next change of size is a coarser one), the
    streak of well-under previews asked for the next finer step doubles (from :data:`PREVIEW_FINER_AFTER` up to
    :data:`PREVIEW_FINER_AFTER_MAX`), so a time that hovers near the budget (a loaded machine) does not make the
    size flip back and forth. Not thread-safe (:class:`ImageRefiner` guards it).

    Args:
        scale: the starting factor.
        finest, coarsest: the allowed factors (:func:`preview_bounds`).
    """

    def __init__(self, scale: int, *, finest: int, coarsest: int) -> None:
        if not 1 <= finest <= coarsest:
            raise InputError(f"PreviewSizer needs 1 <= finest <= coarsest, got finest={finest}, coarsest={coarsest}.")
        self.finest, self.coarsest = finest, coarsest
        self.scale = max(finest, min(coarsest, int(scale)))
        self._times: list[float] = []
        self._seen = False  # a preview ran at self.scale (the first one there is not counted)
        self.finer_after = PREVIEW_FINER_AFTER  # well-under previews in a row asked for the next finer step
        self._went_finer = False  # the last change of size was a step finer

    def record(self, scale: int, preview_ms: float, *, budget_ms: float | None = None) -> int:
        """Note that a preview at factor ``scale`` took ``preview_ms`` milliseconds (build and solve); returns the
        next factor. Previews at another factor than :attr:`scale` (asked for explicitly) change nothing."""
        if scale != self.scale:
            return self.scale
        if not self._seen:
            self._seen = True
            return self.scale
        self._times = [*self._times, preview_ms][-self.finer_after:]
        scale = next_preview_scale(self.scale, self._times, finest=self.finest, coarsest=self.coarsest,
                                   budget_ms=budget_ms, finer_after=self.finer_after)
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
        full_ms: known full-size refinement times of this image per method, in milliseconds (e.g. from
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
        self._latest: dict[tuple[str, int, int], Tensor] = {}  # (method, B, C): the last solution at any size

    @property
    def size(self) -> tuple[int, int]:
        """The image's ``(H, W)`` in pixels."""
        return int(self._image.shape[-2]), int(self._image.shape[-1])

    @property
    def full_ms(self) -> dict[str, float]:
        """The last full-size refinement time per method (milliseconds); a copy."""
        return dict(self._full_ms)

    @property
    def preview_scales(self) -> dict[str, int]:
        """The factor the next ``preview=True`` runs at, per method previewed so far; a copy."""
        with self._sizers_lock:
            return {method: sizer.scale for method, sizer in self._sizers.items()}

    def cached(self) -> int:
        """How many built operators and warm starts are held."""
        return len(self._cache)

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
            x0 = self._cache.get(warm_key)
            if x0 is None:
                x0 = self._resampled_start(warm_key, probs.shape[-2:])
            x = model.scores(image, probs, op=op, callback=callback, x0=x0, **held_kw)
            self._cache.put(warm_key, x)
            self._latest[(method, *warm_key[3:])] = x
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
            self._full_ms[method] = timing["total_ms"]  # refining this image from scratch: sizes its previews
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

    def _scale(self, preview: bool | int | None, method: str) -> int:
        if preview is None or preview is False:
            return 1
        if preview is True:
            with self._sizers_lock:
                sizer = self._sizers.get(method)
                if sizer is None:
                    finest, coarsest = preview_bounds(*self.size)
                    sizer = PreviewSizer(preview_scale(*self.size, full_ms=self._full_ms.get(method)),
                                         finest=finest, coarsest=coarsest)
                    self._sizers[method] = sizer
                return sizer.scale
        if isinstance(preview, (int, np.integer)) and preview >= 1:
            return int(preview)
        raise InputError(f"preview must be None, True, False or a downsampling factor >= 1, got {preview!r}.")

    def _resampled_start(self, warm_key: tuple, size: torch.Size) -> Tensor | None:
        """The method's last solution at another size (``warm_key`` = ``("x0", method, scale, B, C)``), resized
        bilinearly to ``size``: a start for a solve whose own size has none; None when there is none."""
        latest = self._latest.get((warm_key[1], *warm_key[3:]))
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
