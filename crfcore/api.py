"""``crfcore.refine``: the one call scripts, the app and outside evaluations use (DESIGN.md §2)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .image_refiner import ImageRefiner, Refinement, best_device, resolve_params
from .inference import ProgressCallback

__all__ = ["Refinement", "refine", "best_device", "resolve_params"]

_TIMING_KEYS = ("build_ms", "iterations_ms", "total_ms", "device")


@torch.no_grad()
def refine(image: np.ndarray | Tensor, unary: np.ndarray | Tensor, method: str = "convcrf", params: Any = None,
           device: str | torch.device | None = None, *, scale: str | float = "auto",
           callback: ProgressCallback | None = None, **overrides: Any) -> Refinement:
    """Refine class probabilities with a CRF: a one-shot :class:`~crfcore.ImageRefiner`.

    Args:
        image: ``(H, W, 3)`` uint8 NumPy array, or ``(3, H, W)`` / ``(B, 3, H, W)`` tensor in 0..255.
        unary: ``(C, H, W)`` or ``(B, C, H, W)`` class probabilities, sum 1 over C (use
            ``crfcore.unary.from_logits`` / ``from_labels`` / ``from_scribbles`` for other sources).
        method: a registered refiner name: ``"convcrf"``, ``"densecrf"``, ``"gaussian"`` or ``"piecewise"``.
        params: that refiner's params dataclass, or a preset JSON path; None for defaults.
        device: ``"cpu"``, ``"cuda"`` or None (CUDA when available).
        scale: ``"auto"``: spatial parameters (θα, θγ, the window's reach) are given at a 500-px long side and
            scaled to the image (:func:`crfcore.params.scale_factor`, :func:`crfcore.params.scaled`); a number > 0
            multiplies them by it, so ``1.0`` runs them in pixels exactly as given.
        callback: ``callback(done, total, q)`` per iteration; raise ``crfcore.Cancelled`` to stop.
        **overrides: any parameter by name, e.g. ``filter_size=7``.

    Returns:
        :class:`Refinement` with ``probs`` in the unary's kind and layout; ``timing`` holds ``build_ms``,
        ``iterations_ms``, ``total_ms`` (milliseconds) and ``device``.

    Raises:
        ValueError: bad shapes, NaN, non-probabilities, unknown method or parameter; the message names the fix.
    """
    start = time.perf_counter()
    result = ImageRefiner(image, device=device, cache_size=1).refine(unary, method, params, scale=scale,
                                                                      callback=callback, **overrides)
    timing = {k: result.timing[k] for k in _TIMING_KEYS}
    timing["total_ms"] = (time.perf_counter() - start) * 1e3
    return Refinement(result.probs, result.labels, timing, result.scale)
