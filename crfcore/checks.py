"""Input guards shared by every public entry point: messages name the argument, what was expected, what was given
and the fix.

The numeric policy lives here, once: every float parameter and matrix is finite (:func:`check_number`,
:func:`check_matrix`); ``True``/``False`` are never numbers; tensors hold no NaN or inf (:func:`check_finite`); images
are uint8 or real-valued in 0..255, and a float image in 0..1 is refused with the fix (:func:`as_image_tensor`);
devices are checked against what this machine has (:func:`as_device`). Every failure is an
:class:`~crfcore.errors.InputError`.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import InputError

__all__ = ["as_image_tensor", "as_prob_tensor", "check_finite", "check_number", "check_matrix", "check_probs",
           "as_device"]

SUM_TOLERANCE = 1e-3


def as_image_tensor(image: np.ndarray | Tensor, *, name: str = "image") -> Tensor:
    """``(H, W, 3)`` uint8 array, or ``(3, H, W)`` / ``(B, 3, H, W)`` tensor in 0..255 → ``(B, 3, H, W)`` float32.

    Raises:
        InputError: wrong layout, channel count, dtype or range, an empty image, with the fix.
    """
    if isinstance(image, np.ndarray):
        if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 4)):
            raise InputError(f"{name} has shape {image.shape}; expected (H, W, 3) RGB. Load files with "
                             f"crfcore.io.load_image, which converts grey and RGBA to RGB.")
        if image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"{name} has shape {image.shape}; expected an (H, W, 3) RGB array.")
        if image.dtype != np.uint8:
            raise InputError(f"{name} has dtype {image.dtype}; expected uint8 0..255 (crfcore.io.load_image "
                             f"converts 16-bit images).")
        _check_size(image.shape[0], image.shape[1], name)
        return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).unsqueeze(0).float()
    if not isinstance(image, Tensor):
        raise InputError(f"{name} must be a NumPy array or a torch tensor, got {type(image).__name__}.")
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[1] != 3:
        raise InputError(f"{name} has shape {tuple(image.shape)}; expected (3, H, W) or (B, 3, H, W).")
    _check_size(image.shape[2], image.shape[3], name)
    if image.dtype == torch.bool or image.is_complex():
        raise InputError(f"{name} has dtype {image.dtype}; expected uint8 or a real dtype with values 0..255.")
    if image.is_floating_point():
        check_finite(image, name)
    image = image.float()
    low, high = float(image.min()), float(image.max())
    if low < 0 or high > 255:
        raise InputError(f"{name} has values in {low:g}..{high:g}; expected 0..255 (RGB levels). Clip or rescale "
                         f"it, e.g. image.clamp(0, 255).")
    if 0 < high <= 1 and bool((image.frac() != 0).any()):  # fractions below 1: 0..1 colours, not 0..255 levels
        raise InputError(f"{name} has values in {low:g}..{high:g}, which look like 0..1 colours; crfcore images are "
                         f"0..255 (theta_beta is in those units). Pass image * 255.")
    return image


def _check_size(height: int, width: int, name: str) -> None:
    if height < 1 or width < 1:
        raise InputError(f"{name} is {height}×{width} (H×W); an image needs at least one pixel.")


def as_prob_tensor(probs: np.ndarray | Tensor, *, name: str = "unary") -> tuple[Tensor, bool]:
    """``(C, H, W)`` or ``(B, C, H, W)`` class probabilities → ``((B, C, H, W) float tensor, was_batched)``.

    Raises:
        ValueError: NaN/inf, negative values, or values not summing to 1 over C.
    """
    if isinstance(probs, np.ndarray) and probs.dtype.kind not in "fiu":
        raise InputError(f"{name} has dtype {probs.dtype}; expected float probabilities.")
    tensor = torch.from_numpy(np.array(probs, copy=True)) if isinstance(probs, np.ndarray) else probs
    if not isinstance(tensor, Tensor):
        raise InputError(f"{name} must be a NumPy array or a torch tensor, got {type(probs).__name__}.")
    batched = tensor.ndim == 4
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 4:
        raise InputError(f"{name} has shape {tuple(tensor.shape)}; expected (C, H, W) or (B, C, H, W) "
                         f"probabilities.")
    if tensor.shape[1] < 2:
        raise InputError(f"{name} has {tensor.shape[1]} class; a CRF needs at least 2 (for a binary mask use "
                         f"crfcore.unary.from_labels(mask, num_classes=2)).")
    if tensor.shape[-2] < 1 or tensor.shape[-1] < 1:
        raise InputError(f"{name} has shape {tuple(tensor.shape)}: no pixels; expected (C, H, W) with H, W ≥ 1.")
    tensor = tensor.float() if tensor.dtype != torch.float64 else tensor
    # One cheap pass for the common case: NaN fails both tests (amin and amax propagate it), +inf the sum, -inf the
    # minimum. Only a failure pays for the checks below, which find the problem and name it.
    if tensor.numel() and bool(tensor.amin() >= 0) and bool((tensor.sum(1) - 1).abs().amax() <= SUM_TOLERANCE):
        return tensor, batched
    check_finite(tensor, name)
    if (tensor < 0).any():
        raise InputError(f"{name} has negative values; expected probabilities. If these are logits or scores, "
                         f"pass crfcore.unary.from_logits({name}).")
    sums = tensor.sum(1)
    worst = (sums - 1).abs().max().item()
    if worst > SUM_TOLERANCE and tensor.shape[-1] < min(tensor.shape[1], tensor.shape[2]) \
            and float((tensor.sum(-1) - 1).abs().max()) <= SUM_TOLERANCE:
        raise InputError(f"{name} has shape {tuple(tensor.shape[1:] if not batched else tensor.shape)} and sums to 1 "
                         f"over its last axis: it is (H, W, C) probabilities; expected (C, H, W). Pass "
                         f"np.moveaxis({name}, -1, 0) (torch: {name}.permute(2, 0, 1)).")
    if worst > SUM_TOLERANCE:
        raise InputError(f"{name} does not sum to 1 over classes (off by up to {worst:.3g}); expected "
                         f"probabilities. If these are logits or scores, pass crfcore.unary.from_logits({name}); "
                         f"if they are unnormalised, divide by their sum over axis C.")
    return tensor, batched


def check_finite(tensor: Tensor, name: str) -> None:
    """Raise :class:`InputError` if ``tensor`` holds NaN or inf, saying how many."""
    bad = ~torch.isfinite(tensor)
    if bad.any():
        raise InputError(f"{name} has {int(bad.sum())} NaN or infinite values; fix the source (a failed network "
                         f"output or a division by zero) before refining.")


def check_number(value: Any, name: str, *, integer: bool = False, low: float | None = None,
                 high: float | None = None, low_open: bool = False) -> Any:
    """``value`` as a finite ``float`` (or ``int`` with ``integer``), within ``[low, high]`` (``(low, high]`` with
    ``low_open``).

    NumPy scalars are accepted; ``True``/``False`` are refused (``iterations=True`` is a slip, not 1), and so are
    NaN and ±inf. An integral float (``5.0``) is accepted where an integer is asked for.

    Raises:
        InputError: not a number, a bool, not finite, not an integer when one is asked for, or out of range.
    """
    kind = "an integer" if integer else "a number"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
        raise InputError(f"{name} must be {kind}, got {value!r} ({type(value).__name__}).")
    number = float(value)
    if not math.isfinite(number):
        raise InputError(f"{name} must be a finite number, got {number}.")
    if integer:
        if not isinstance(value, Integral) and not number.is_integer():
            raise InputError(f"{name} must be an integer, got {value!r}.")
        number = int(number)
    too_low = low is not None and (number <= low if low_open else number < low)
    if too_low or (high is not None and number > high):
        left = "(" if low_open else "["
        bounds = f"{left}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}]"
        raise InputError(f"{name}={value!r} is out of range; valid range is {bounds}.")
    return number


def check_matrix(value: Any, name: str, *, size: int | None = None) -> tuple[tuple[float, ...], ...]:
    """A square matrix of finite numbers (nested sequences, NumPy or torch) as a tuple of float tuples.

    Args:
        value: the matrix.
        name: argument name for messages.
        size: required C of a C×C matrix, or None for any.

    Raises:
        InputError: not a non-empty square matrix of real numbers, an entry NaN or ±inf, or the wrong size.
    """
    if isinstance(value, (Tensor, np.ndarray)):
        value = value.tolist()
    try:
        rows = [list(row) for row in value]
    except TypeError:
        raise InputError(f"{name} must be a square C×C matrix of numbers, got {value!r:.80}.") from None
    if not rows or any(len(r) != len(rows) for r in rows):
        raise InputError(f"{name} must be a square C×C matrix, got a {len(rows)}-row value with row lengths "
                         f"{sorted({len(r) for r in rows})}.")
    out = []
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, Real):
                raise InputError(f"{name}[{i}][{j}] is {v!r}; a matrix entry must be a number.")
            if not math.isfinite(float(v)):
                raise InputError(f"{name}[{i}][{j}] is {float(v)}; every entry must be finite (NaN or inf would make "
                                 f"every marginal NaN). Fix the matrix or the preset it came from.")
        out.append(tuple(float(v) for v in row))
    if size is not None and len(out) != size:
        raise InputError(f"{name} is {len(out)}×{len(out)} but there are {size} classes; pass a {size}×{size} "
                         f"matrix.")
    return tuple(out)


def check_probs(probs: Tensor, name: str) -> None:
    """Raise :class:`InputError` unless ``probs`` (``(…, C, H, W)``) are finite, ≥ 0 and sum to more than 0 at
    every pixel (so that they can be normalised)."""
    check_finite(probs, name)
    if bool((probs < 0).any()):
        raise InputError(f"{name} has negative values; expected probabilities ≥ 0.")
    empty = probs.sum(-3) <= 0
    if bool(empty.any()):
        raise InputError(f"{name} sums to 0 over classes at {int(empty.sum())} pixel(s); expected probabilities. "
                         f"Give those pixels a distribution (uniform 1/C if unknown).")


def as_device(device: str | torch.device | None) -> torch.device:
    """A device this machine has: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (or a ``torch.device``); None = CUDA when
    available, else CPU.

    Raises:
        InputError: an unknown device name, CUDA on a machine (or torch build) without it, or a GPU index that
            does not exist.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device {device!r} is not supported; use 'cpu', 'cuda' or 'cuda:N'.") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise InputError(f"device {device!r} is not supported; use 'cpu', 'cuda' or 'cuda:N'.")
    if not torch.cuda.is_available():
        build = "this torch build has no CUDA" if torch.version.cuda is None else "torch sees no CUDA GPU"
        raise InputError(f"device {device!r} was asked for but {build}; use device 'cpu', or install the CUDA "
                         f"build of CRF Studio on a machine with an NVIDIA GPU.")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                         f"numbered from 0.")
    return dev
