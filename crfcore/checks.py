"""Input guards shared by every public entry point: messages name the argument, what was expected, what was given
and the fix."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["as_image_tensor", "as_prob_tensor", "check_finite"]

SUM_TOLERANCE = 1e-3


def as_image_tensor(image: np.ndarray | Tensor, *, name: str = "image") -> Tensor:
    """``(H, W, 3)`` uint8 array, or ``(3, H, W)`` / ``(B, 3, H, W)`` tensor in 0..255 → ``(B, 3, H, W)`` float32.

    Raises:
        ValueError: wrong layout, channel count or dtype, with the fix.
    """
    if isinstance(image, np.ndarray):
        if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 4)):
            raise ValueError(f"{name} has shape {image.shape}; expected (H, W, 3) RGB. Load files with "
                             f"crfcore.io.load_image, which converts grey and RGBA to RGB.")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{name} has shape {image.shape}; expected an (H, W, 3) RGB array.")
        if image.dtype != np.uint8:
            raise ValueError(f"{name} has dtype {image.dtype}; expected uint8 0..255 (crfcore.io.load_image "
                             f"converts 16-bit images).")
        return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).unsqueeze(0).float()
    if not isinstance(image, Tensor):
        raise TypeError(f"{name} must be a NumPy array or a torch tensor, got {type(image).__name__}.")
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"{name} has shape {tuple(image.shape)}; expected (3, H, W) or (B, 3, H, W).")
    image = image.float() if not image.is_floating_point() else image
    check_finite(image, name)
    return image


def as_prob_tensor(probs: np.ndarray | Tensor, *, name: str = "unary") -> tuple[Tensor, bool]:
    """``(C, H, W)`` or ``(B, C, H, W)`` class probabilities → ``((B, C, H, W) float tensor, was_batched)``.

    Raises:
        ValueError: NaN/inf, negative values, or values not summing to 1 over C.
    """
    tensor = torch.from_numpy(np.array(probs, copy=True)) if isinstance(probs, np.ndarray) else probs
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a NumPy array or a torch tensor, got {type(probs).__name__}.")
    batched = tensor.ndim == 4
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 4:
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}; expected (C, H, W) or (B, C, H, W) "
                         f"probabilities.")
    if tensor.shape[1] < 2:
        raise ValueError(f"{name} has {tensor.shape[1]} class; a CRF needs at least 2 (for a binary mask use "
                         f"crfcore.unary.from_labels(mask, num_classes=2)).")
    tensor = tensor.float() if tensor.dtype != torch.float64 else tensor
    # One cheap pass for the common case: NaN fails both tests (amin and amax propagate it), +inf the sum, -inf the
    # minimum. Only a failure pays for the checks below, which find the problem and name it.
    if tensor.numel() and bool(tensor.amin() >= 0) and bool((tensor.sum(1) - 1).abs().amax() <= SUM_TOLERANCE):
        return tensor, batched
    check_finite(tensor, name)
    if (tensor < 0).any():
        raise ValueError(f"{name} has negative values; expected probabilities. If these are logits or scores, "
                         f"pass crfcore.unary.from_logits({name}).")
    sums = tensor.sum(1)
    worst = (sums - 1).abs().max().item()
    if worst > SUM_TOLERANCE:
        raise ValueError(f"{name} does not sum to 1 over classes (off by up to {worst:.3g}); expected "
                         f"probabilities. If these are logits or scores, pass crfcore.unary.from_logits({name}); "
                         f"if they are unnormalised, divide by their sum over axis C.")
    return tensor, batched


def check_finite(tensor: Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``tensor`` holds NaN or inf, saying how many."""
    bad = ~torch.isfinite(tensor)
    if bad.any():
        raise ValueError(f"{name} has {int(bad.sum())} NaN or infinite values; fix the source (a failed network "
                         f"output or a division by zero) before refining.")
