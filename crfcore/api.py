"""``crfcore.refine``: the one call scripts, the app and outside evaluations use (DESIGN.md §2)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import params as P
from .checks import as_image_tensor, as_prob_tensor
from .inference import ProgressCallback
from .refiners import REGISTRY

__all__ = ["Refinement", "refine", "best_device"]


@dataclass
class Refinement:
    """The result of :func:`refine`.

    Attributes:
        probs: marginals, same kind (NumPy/torch) and layout as the unary, float32, sum 1 over C.
        labels: ``(H, W)`` or ``(B, H, W)`` int64 argmax labels, same kind as the unary.
        timing: ``{"build_ms", "iterations_ms", "total_ms", "device"}``.
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resolve_params(method: str, params: Any = None, **overrides: Any) -> Any:
    """A params instance for ``method``: ``params`` as given (a dataclass or a preset path), then ``overrides``."""
    cls = P.params_for(method)
    if isinstance(params, (str, os.PathLike)):
        preset_method, params = P.load_preset(params)
        if preset_method != method:
            raise ValueError(f"preset {params!s} is for method {preset_method!r}, not {method!r}; pass "
                             f"method={preset_method!r} or another preset.")
    if params is None:
        params = cls()
    if not isinstance(params, cls):
        raise TypeError(f"params for {method!r} must be {cls.__name__} or a preset path, got "
                        f"{type(params).__name__}.")
    return P.with_overrides(params, **overrides)


@torch.no_grad()
def refine(image: np.ndarray | Tensor, unary: np.ndarray | Tensor, method: str = "convcrf", params: Any = None,
           device: str | torch.device | None = None, *, scale: str | float = "auto",
           callback: ProgressCallback | None = None, **overrides: Any) -> Refinement:
    """Refine class probabilities with a CRF.

    Args:
        image: ``(H, W, 3)`` uint8 NumPy array, or ``(3, H, W)`` / ``(B, 3, H, W)`` tensor in 0..255.
        unary: ``(C, H, W)`` or ``(B, C, H, W)`` class probabilities, sum 1 over C (use
            ``crfcore.unary.from_logits`` / ``from_labels`` / ``from_scribbles`` for other sources).
        method: ``"convcrf"``, ``"densecrf"`` or ``"gaussian"``.
        params: that refiner's params dataclass, or a preset JSON path; None for defaults.
        device: ``"cpu"``, ``"cuda"`` or None (CUDA when available).
        scale: ``"auto"``: spatial parameters (θα, θγ, the window's reach) are given at a 500-px long side and
            scaled to the image (:func:`crfcore.params.scale_factor`, :func:`crfcore.params.scaled`); a number > 0
            multiplies them by it, so ``1.0`` runs them in pixels exactly as given.
        callback: ``callback(done, total, q)`` per iteration; raise ``crfcore.Cancelled`` to stop.
        **overrides: any parameter by name, e.g. ``filter_size=7``.

    Returns:
        :class:`Refinement` with ``probs`` in the unary's kind and layout.

    Raises:
        ValueError: bad shapes, NaN, non-probabilities, unknown method or parameter; the message names the fix.
    """
    if method not in REGISTRY:
        valid = ", ".join(repr(m) for m in REGISTRY)
        raise ValueError(f"{method!r} is not a valid method. Valid methods are {valid}.")
    start = time.perf_counter()
    config = resolve_params(method, params, **overrides)
    dev = torch.device(device) if device is not None else best_device()
    as_numpy = isinstance(unary, np.ndarray)
    probs, batched = as_prob_tensor(unary)
    img = as_image_tensor(image)
    if img.shape[-2:] != probs.shape[-2:]:
        raise ValueError(f"image is {img.shape[-2]}×{img.shape[-1]} but unary is {probs.shape[-2]}×"
                         f"{probs.shape[-1]} (H×W); resize the unary to the image (crfcore.unary.resize).")
    if img.shape[0] != probs.shape[0]:
        if img.shape[0] != 1:
            raise ValueError(f"image batch is {img.shape[0]} but unary batch is {probs.shape[0]}.")
        img = img.expand(probs.shape[0], -1, -1, -1)
    # Issue 20's one hook: params hold reference-size (500 px) values; the image gets them scaled to its size.
    factor = P.scale_factor(img.shape[-2], img.shape[-1], scale)
    config = P.scaled(config, factor)
    num_classes = probs.shape[1]
    if getattr(config, "compat", "potts") != "potts" and len(config.compat) != num_classes:
        raise ValueError(f"unary has {num_classes} classes, compat is {len(config.compat)}×{len(config.compat)}.")
    model = REGISTRY[method](config).to(dev)
    img, probs = img.to(dev, torch.float32), probs.to(dev, torch.float32)
    _sync(dev)
    t0 = time.perf_counter()
    op = model.build(img)
    _sync(dev)
    t1 = time.perf_counter()
    q = model(img, probs, op=op, callback=callback)
    _sync(dev)
    t2 = time.perf_counter()
    labels = q.max(1).indices  # as argmax(1) (first maximum), ~10x faster on CPU for a strided class axis
    out_device = unary.device if isinstance(unary, Tensor) else torch.device("cpu")
    q, labels = q.to(out_device, torch.float32), labels.to(out_device)
    if not batched:
        q, labels = q[0], labels[0]
    timing = {"build_ms": (t1 - t0) * 1e3, "iterations_ms": (t2 - t1) * 1e3,
              "total_ms": (time.perf_counter() - start) * 1e3, "device": str(dev)}
    if as_numpy:
        return Refinement(q.numpy(), labels.numpy(), timing, factor)
    return Refinement(q, labels, timing, factor)
