"""Held-out data for learning CRF parameters: (image, unary, ground truth) from a dataset folder.

The unaries are fixed, as in decoupled training (Teichmann & Cipolla 2018, "Convolutional CRFs for Semantic
Segmentation", §5.2): by default the synthetic-noise unary of :func:`crfcore.synthetic.noisy_unary` (the one
``crfcore eval`` scores), or whatever a caller's ``unary_fn`` returns (a network's output read from files).

The split is deterministic: every file stem is hashed with the seed (SHA-256 of ``"<seed>:<stem>"``), the stems are
ranked by hash, and the first ``round(val_frac · n)`` (at least one, at most n − 1) are validation images. The same
folder and seed always give the same split, whatever order the files are listed in.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .. import io
from ..checks import as_prob_tensor
from ..labels import VOID
from ..synthetic import NoiseRecipe, noisy_unary
from .settings import SEED, VAL_FRAC

__all__ = ["Sample", "Batch", "UnaryFn", "LearnData", "split_stems"]

log = logging.getLogger(__name__)

UnaryFn = Callable[[Path, np.ndarray, int], np.ndarray]
"""``unary_fn(image_path, image, num_classes)`` → ``(C, H, W)`` probabilities for the ``(H, W, 3)`` uint8 image."""


@dataclass(frozen=True)
class Sample:
    """One image with its fixed unary and its ground truth.

    Attributes:
        stem: the file stem (image id).
        image: ``(3, H, W)`` float32, RGB 0..255.
        unary: ``(C, H, W)`` float32 probabilities, sum 1 over C.
        labels: ``(H, W)`` int64 class indices; the void label marks pixels without ground truth.
    """

    stem: str
    image: Tensor
    unary: Tensor
    labels: Tensor


@dataclass(frozen=True)
class Batch:
    """Equal-sized crops: ``image (B, 3, S, S)`` 0..255, ``unary (B, C, S, S)``, ``labels (B, S, S)`` int64."""

    image: Tensor
    unary: Tensor
    labels: Tensor


def split_stems(stems: list[str], val_frac: float, *, seed: int = SEED.default) -> tuple[list[str], list[str]]:
    """Split stems into ``(train, val)`` by a seeded hash (see the module docstring); both sorted.

    Raises:
        ValueError: ``val_frac`` outside (0, 1), or fewer than 2 stems (both splits need one).
    """
    if not 0.0 < val_frac < 1.0:
        raise ValueError(f"val_frac must be in (0, 1) (the share of images held out for validation), got {val_frac}.")
    if len(stems) < 2:
        raise ValueError(f"learning needs at least 2 images (one to train on, one to validate on), got {len(stems)}.")
    ranked = sorted(stems, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode("utf-8")).hexdigest())
    n_val = min(len(stems) - 1, max(1, round(val_frac * len(stems))))
    return sorted(ranked[n_val:]), sorted(ranked[:n_val])


class LearnData:
    """A dataset folder split into training and validation images, loaded lazily and cached.

    Args:
        folder: a dataset folder (:func:`crfcore.io.find_pairs`: ``images/`` and ``masks/``).
        num_classes: C; default the largest label in the masks + 1 (void excluded).
        val_frac: share of images held out for validation, in (0, 1).
        seed: seeds the split (and nothing else).
        void: the label without ground truth, ignored by losses and scores (255 for VOC, 11 for CamVid).
        recipe: noise recipe of the synthetic unaries (its defaults are ``crfcore eval``'s).
        unary_fn: ``unary_fn(image_path, image, num_classes)`` → ``(C, H, W)`` probabilities at the image's size,
            instead of the synthetic noise.
        max_side: downscale images (area-averaged), masks (nearest) and unaries (bilinear) so the longer side is at
            most this many pixels; None keeps the full size. The unary is made at full size first.
        long_side: resample every image, mask and unary as ``max_side`` does, up or down, so the longer side is
            exactly this many pixels (``crfcore tune`` learns at the 500-px reference size this way, issue 20);
            None keeps the sizes. Not together with ``max_side``.
        limit: use only the first ``limit`` pairs (sorted by stem) before splitting.
        cache_size: samples kept in memory (a VOC-sized sample with 21 classes takes about 16 MB).

    Raises:
        FileNotFoundError, crfcore.io.ImageError: the folder or a file cannot be read.
        ValueError: bad ``val_frac``, fewer than 2 pairs, or a unary of the wrong shape.
    """

    def __init__(self, folder: str | os.PathLike, *, num_classes: int | None = None, val_frac: float = VAL_FRAC.default,
                 seed: int = SEED.default, void: int = VOID, recipe: NoiseRecipe = NoiseRecipe(), unary_fn: UnaryFn | None = None,
                 max_side: int | None = None, long_side: int | None = None, limit: int | None = None,
                 cache_size: int = 64) -> None:
        for name, side in (("max_side", max_side), ("long_side", long_side)):
            if side is not None and side < 16:
                raise ValueError(f"{name} must be at least 16 pixels (or None for full size), got {side}.")
        if max_side is not None and long_side is not None:
            raise ValueError(f"give max_side ({max_side}) or long_side ({long_side}), not both: long_side resamples "
                             f"every image to that long side, max_side only shrinks larger ones.")
        pairs = io.find_pairs(folder)[:limit]
        self.folder = Path(folder)
        self.pairs = {image.stem: (image, mask) for image, mask in pairs}
        self.void = void
        self.recipe = recipe
        self.unary_fn = unary_fn
        self.max_side = max_side
        self.long_side = long_side
        self.train_stems, self.val_stems = split_stems(list(self.pairs), val_frac, seed=seed)
        if num_classes is None:
            top = max(int(np.max(np.where(m == void, 0, m))) for m in (io.load_mask(p) for _, p in pairs))
            num_classes = max(2, top + 1)
        self.num_classes = num_classes
        self._cache: OrderedDict[str, Sample] = OrderedDict()
        self._cache_size = cache_size
        self._smallest_side: int | None = None
        log.debug("learning data %s: %d train, %d val, %d classes", folder, len(self.train_stems),
                  len(self.val_stems), num_classes)

    def sample(self, stem: str) -> Sample:
        """The :class:`Sample` of one stem (loaded once, then cached)."""
        if stem in self._cache:
            self._cache.move_to_end(stem)
            return self._cache[stem]
        if stem not in self.pairs:
            raise KeyError(f"{stem!r} is not an image of {self.folder}.")
        sample = self._load(stem)
        self._cache[stem] = sample
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return sample

    def train(self) -> list[Sample]:
        """All training samples, sorted by stem."""
        return [self.sample(s) for s in self.train_stems]

    def val(self) -> list[Sample]:
        """All validation samples, sorted by stem."""
        return [self.sample(s) for s in self.val_stems]

    def crop_size(self, size: int) -> int:
        """The square crop side used for ``size``: at most the smallest training image side."""
        if self._smallest_side is None:
            self._smallest_side = min(min(self.sample(s).labels.shape) for s in self.train_stems)
        return min(size, self._smallest_side)

    def crops(self, count: int, size: int, generator: torch.Generator) -> Batch:
        """``count`` random square crops of side :meth:`crop_size` from random training images.

        All randomness comes from ``generator``, so a saved generator state replays the same crops.
        """
        side = self.crop_size(size)
        picks = torch.randint(len(self.train_stems), (count,), generator=generator).tolist()
        images, unaries, labels = [], [], []
        for index in picks:
            sample = self.sample(self.train_stems[index])
            h, w = sample.labels.shape
            y = int(torch.randint(h - side + 1, (1,), generator=generator))
            x = int(torch.randint(w - side + 1, (1,), generator=generator))
            images.append(sample.image[:, y:y + side, x:x + side])
            unaries.append(sample.unary[:, y:y + side, x:x + side])
            labels.append(sample.labels[y:y + side, x:x + side])
        return Batch(torch.stack(images), torch.stack(unaries), torch.stack(labels))

    def _load(self, stem: str) -> Sample:
        image_path, mask_path = self.pairs[stem]
        image, labels = self._read(stem)
        if self.unary_fn is None:
            unary = noisy_unary(labels, self.num_classes, image_id=stem, recipe=self.recipe, void=self.void)
        else:
            unary = self.unary_fn(image_path, image, self.num_classes)
        probs, _ = as_prob_tensor(unary, name=f"unary of {stem}")
        if probs.shape[1:] != (self.num_classes, *labels.shape):
            raise ValueError(f"unary of {stem} has shape {tuple(probs.shape[1:])}, expected "
                             f"({self.num_classes}, {labels.shape[0]}, {labels.shape[1]}) (C, H, W); make unary_fn "
                             f"return one probability map per class at the image's size.")
        image_t, labels_t, probs = self._resample(image, labels, probs.float())
        return Sample(stem, image_t, probs[0].contiguous(), labels_t)

    def _read(self, stem: str) -> tuple[np.ndarray, np.ndarray]:
        """The full-size ``(H, W, 3)`` uint8 image and ``(H, W)`` int labels of ``stem``, checked as a pair."""
        image_path, mask_path = self.pairs[stem]
        image = io.load_image(image_path)
        labels = io.load_mask(mask_path)
        io.check_pair(image, labels, image_path, mask_path)
        return image, labels

    def _resample(self, image: np.ndarray, labels: np.ndarray,
                  probs: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(3, h, w)`` float32 image (0..255, whole numbers), ``(h, w)`` int64 labels and ``(1, C, h, w)``
        probabilities (or None) at the size ``max_side`` / ``long_side`` ask for: image area-averaged, labels
        nearest, probabilities bilinear and renormalised."""
        image_t = torch.from_numpy(image).permute(2, 0, 1).float().unsqueeze(0)
        labels_t = torch.from_numpy(labels)
        h, w = labels.shape
        target = self.max_side if self.max_side is not None and max(h, w) > self.max_side else self.long_side
        if target is not None and target != max(h, w):
            scale = target / max(h, w)
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            image_t = F.interpolate(image_t, size=size, mode="bilinear", antialias=True, align_corners=False)
            image_t = image_t.round().clamp(0, 255)
            if probs is not None:
                probs = F.interpolate(probs, size=size, mode="bilinear", antialias=True, align_corners=False)
                probs = probs / probs.sum(1, keepdim=True)
            rows = ((torch.arange(size[0]) + 0.5) * h / size[0]).long().clamp(max=h - 1)
            cols = ((torch.arange(size[1]) + 0.5) * w / size[1]).long().clamp(max=w - 1)
            labels_t = labels_t[rows][:, cols]
        return image_t[0].contiguous(), labels_t.contiguous(), probs
