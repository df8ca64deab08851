"""The synthetic benchmark's noisy unaries (ConvCRF §5.1, in our words; DESIGN.md §2).

A ground-truth label map becomes a rough unary: one-hot (void counted as background), averaged over ``scale×scale``
cells, each cell replaced by a random one-hot class with probability ``flip_prob``, Gaussian noise of std
``noise_sigma`` added to every class score, upsampled bilinearly (pixel-centred) to full size, and softmaxed at
``temperature``. The recipe matches the one that made ``../shared/oracles/densecrf`` (recipe v1); the random stream
is seeded from ``seed`` and the image id, so every run and every refiner sees the same unaries.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .labels import VOID

__all__ = ["NoiseRecipe", "noisy_unary"]


@dataclass(frozen=True)
class NoiseRecipe:
    """Noise parameters with their fixed defaults; ``seed`` is combined with the image id."""

    scale: int = 8
    flip_prob: float = 0.25
    noise_sigma: float = 0.35
    temperature: float = 0.25
    seed: int = 20180512


def noisy_unary(labels: np.ndarray, num_classes: int, *, image_id: str = "", recipe: NoiseRecipe = NoiseRecipe(),
                void: int | None = VOID) -> np.ndarray:
    """A rough unary from ground truth.

    Args:
        labels: ``(H, W)`` integer class indices; ``void`` pixels count as class 0.
        num_classes: C.
        image_id: mixed into the seed so images get independent noise.

    Returns:
        ``(C, H, W)`` float32 probabilities, sum 1 over C.
    """
    labels = np.asarray(labels).astype(np.int64)
    if void is not None:
        labels = np.where(labels == void, 0, labels)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels hold values outside 0..{num_classes - 1} (min {labels.min()}, max "
                         f"{labels.max()}); pass the right num_classes or void index.")
    h, w = labels.shape
    rng = np.random.default_rng([recipe.seed, zlib.crc32(image_id.encode("utf-8"))])
    one_hot = F.one_hot(torch.from_numpy(labels), num_classes).permute(2, 0, 1).float().unsqueeze(0)
    s = recipe.scale
    pad = (0, (-w) % s, 0, (-h) % s)
    cells = F.avg_pool2d(F.pad(one_hot, pad, mode="replicate"), s)[0].numpy()  # (C, h/s, w/s)
    ch, cw = cells.shape[1:]
    flip = rng.random((ch, cw)) < recipe.flip_prob
    random_class = rng.integers(0, num_classes, size=(ch, cw))
    flipped = np.eye(num_classes, dtype=np.float32)[random_class].transpose(2, 0, 1)
    cells = np.where(flip[None], flipped, cells)
    cells = cells + rng.normal(0.0, recipe.noise_sigma, size=cells.shape)
    scores = torch.from_numpy(cells.astype(np.float32)).unsqueeze(0)
    full = F.interpolate(scores, size=(ch * s, cw * s), mode="bilinear", align_corners=False)[0, :, :h, :w]
    return torch.softmax(full / recipe.temperature, dim=0).numpy()
