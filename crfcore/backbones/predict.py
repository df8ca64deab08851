"""Running a segmentation network on images: ImageNet normalisation, whole / resized / tiled inference, AMP on CUDA,
batches with a progress callback, and class probabilities for ``crfcore.refine``.

The model may be any callable module mapping a normalised ``(B, 3, H, W)`` float batch to ``(B, C, h, w)`` logits or
to a dict holding them under ``"out"`` (torchvision models, :func:`load`, TorchScript, torch.export); logits at a
lower resolution than their input are resized to it bilinearly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import as_image_tensor

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "MODES", "normalize", "predict_logits", "predict_probs", "predict_batch"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MODES = ("auto", "full", "resize", "tiles")
MAX_FULL_SIDE = 1024  # "auto" runs images with a longer side up to this whole, larger ones in tiles

Progress = Callable[[int, int], None]


def normalize(image: np.ndarray | Tensor) -> Tensor:
    """``(H, W, 3)`` uint8 (or ``(3, H, W)`` / ``(B, 3, H, W)`` tensor in 0..255) → ``(B, 3, H, W)`` float32
    ``(x/255 − mean) / std`` with ImageNet mean and std, as torchvision's ``ToTensor`` + ``Normalize``."""
    x = as_image_tensor(image).float()
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x / 255 - mean) / std


@dataclass
class _Crop:
    """One forward pass's input: ``image`` index, window ``(y, x, h, w)`` of the working image, padded tensor."""

    image: int
    window: tuple[int, int, int, int]
    tensor: Tensor


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(not isinstance(v, int) or v < 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or an (H, W) pair of them, got {value!r}.")
    return pair  # type: ignore[return-value]


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    return list(range(0, length - tile, stride)) + [length - tile]


def _tiles(x: Tensor, index: int, tile: tuple[int, int], overlap: int, pad: bool) -> Iterator[_Crop]:
    h, w = x.shape[-2:]
    for y0 in _starts(h, tile[0], tile[0] - overlap):
        for x0 in _starts(w, tile[1], tile[1] - overlap):
            crop = x[..., y0:y0 + tile[0], x0:x0 + tile[1]]
            ch, cw = crop.shape[-2:]
            if pad and (ch, cw) != tile:
                crop = F.pad(crop, (0, tile[1] - cw, 0, tile[0] - ch))  # 0 = the mean colour after normalisation
            yield _Crop(index, (y0, x0, ch, cw), crop)


def _resolve(mode: str, shape: tuple[int, int], static: tuple[int, int] | None) -> str:
    if mode == "auto":
        return "tiles" if static is not None or max(shape) > MAX_FULL_SIDE else "full"
    return mode


def _logits(model: nn.Module, x: Tensor) -> Tensor:
    out = model(x)
    if isinstance(out, Mapping):
        if "out" not in out:
            raise ValueError(f"the model returned a dict with keys {sorted(out)}; expected logits under 'out'.")
        out = out["out"]
    if not isinstance(out, Tensor) or out.ndim != 4 or out.shape[0] != x.shape[0]:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"the model returned {got} for a {tuple(x.shape)} batch; expected (B, C, H, W) logits.")
    if out.shape[-2:] != x.shape[-2:]:
        out = F.interpolate(out.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
    return out.float()


def _device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def predict_batch(model: nn.Module, images: Sequence[np.ndarray | Tensor], *, mode: str = "auto", size: int = 520,
                  tile: int | Sequence[int] = 512, overlap: int | None = None, batch_size: int = 4, amp: bool = True,
                  progress: Progress | None = None) -> list[Tensor]:
    """Logits of several images, crops of equal shape (from any of them) run ``batch_size`` at a time on the model's
    device.

    Args:
        model: see the module docstring; put in eval mode for the call (its mode is restored after).
        images: each ``(H, W, 3)`` uint8 0..255 (or a ``(3, H, W)`` tensor in 0..255).
        mode: ``"full"`` the whole image at its size; ``"resize"`` scale the shorter side to ``size`` pixels
            (torchvision's evaluation recipe), logits scaled back; ``"tiles"`` ``tile``-pixel windows overlapping by
            ``overlap`` pixels (default a quarter of the tile), logits averaged where windows overlap; ``"auto"``
            full up to a longer side of 1024 px, else tiles, and always tiles of the traced size for a torch.export
            program with a static input size.
        amp: float16 autocast when the model is on CUDA (ignored on the CPU).
        progress: called as ``progress(done, total)`` forward passes after each batch; raise from it to cancel.

    Returns:
        One ``(C, H, W)`` float32 CPU tensor of logits per image.
    """
    if mode not in MODES:
        raise ValueError(f"{mode!r} is not a valid mode. Valid modes are {', '.join(map(repr, MODES))}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size!r}.")
    static = getattr(model, "input_size", None)
    tile_hw = tuple(static) if static is not None else _pair(tile, "tile")
    overlap = min(tile_hw) // 4 if overlap is None else overlap
    if not 0 <= overlap < min(tile_hw):
        raise ValueError(f"overlap must be in [0, {min(tile_hw)}) pixels for {tile_hw[0]}×{tile_hw[1]} tiles, "
                         f"got {overlap}.")
    device = _device(model)
    crops: list[_Crop] = []
    shapes, work = [], []
    for i, image in enumerate(images):
        x = normalize(image).cpu()  # crops move to the device one batch at a time
        if x.shape[0] != 1:
            raise ValueError(f"images[{i}] has shape {tuple(x.shape)}; pass one image per entry.")
        shapes.append(tuple(x.shape[-2:]))
        how = _resolve(mode, shapes[-1], static)
        if how == "resize":
            scale = size / min(shapes[-1])
            x = F.interpolate(x, size=(round(shapes[-1][0] * scale), round(shapes[-1][1] * scale)), mode="bilinear",
                              align_corners=False, antialias=scale < 1)
        work.append(tuple(x.shape[-2:]))
        crops += (_tiles(x, i, tile_hw, overlap, pad=static is not None) if how == "tiles"
                  else [_Crop(i, (0, 0, *work[-1]), x)])
    sums: list[Tensor | None] = [None] * len(work)
    counts = [torch.zeros(1, *hw) for hw in work]
    autocast = (torch.autocast("cuda", dtype=torch.float16) if amp and device.type == "cuda"
                else contextlib.nullcontext())
    was_training = model.training
    model.eval()
    try:
        done = 0
        while done < len(crops):
            group = [crops[done]]
            while (len(group) < batch_size and done + len(group) < len(crops)
                   and crops[done + len(group)].tensor.shape == group[0].tensor.shape):
                group.append(crops[done + len(group)])
            with autocast:
                out = _logits(model, torch.cat([c.tensor for c in group]).to(device)).cpu()
            for crop, logits in zip(group, out):
                y0, x0, h, w = crop.window
                if sums[crop.image] is None:
                    sums[crop.image] = torch.zeros(logits.shape[0], *work[crop.image])
                sums[crop.image][:, y0:y0 + h, x0:x0 + w] += logits[:, :h, :w]
                counts[crop.image][:, y0:y0 + h, x0:x0 + w] += 1
            done += len(group)
            if progress is not None:
                progress(done, len(crops))
    finally:
        model.train(was_training)
    results = []
    for total, count, shape in zip(sums, counts, shapes):
        logits = total / count
        if tuple(logits.shape[-2:]) != shape:
            logits = F.interpolate(logits[None], size=shape, mode="bilinear", align_corners=False)[0]
        results.append(logits)
    return results


def predict_logits(model: nn.Module, image: np.ndarray | Tensor, **kwargs: Any) -> Tensor:
    """``(C, H, W)`` float32 CPU logits of one ``(H, W, 3)`` uint8 image; keywords as :func:`predict_batch`."""
    return predict_batch(model, [image], **kwargs)[0]


def predict_probs(model: nn.Module, image: np.ndarray | Tensor, *, mode: str = "auto", size: int = 520,
                  tile: int | Sequence[int] = 512, overlap: int | None = None, batch_size: int = 4, amp: bool = True,
                  progress: Progress | None = None) -> np.ndarray:
    """Class probabilities of one image, ready for ``crfcore.refine``.

    Args:
        model: a network from :func:`crfcore.backbones.load`, :func:`load_torchscript`, :func:`load_exported`, or any
            module with the same contract.
        image: ``(H, W, 3)`` uint8 RGB, 0..255.
        mode, size, tile, overlap, batch_size, amp, progress: as :func:`predict_batch`.

    Returns:
        ``(C, H, W)`` float32 probabilities (softmax of the logits), summing to 1 over C.

    Example:
        >>> model = crfcore.backbones.load("deeplabv3_resnet50.pth")    # doctest: +SKIP
        >>> r = crfcore.refine(image, predict_probs(model, image))         # doctest: +SKIP
    """
    logits = predict_logits(model, image, mode=mode, size=size, tile=tile, overlap=overlap, batch_size=batch_size,
                            amp=amp, progress=progress)
    return torch.softmax(logits, dim=0).numpy()
