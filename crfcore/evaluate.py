"""The synthetic benchmark (DESIGN.md §2): rough unaries made from ground truth, refined by each method, scored.

Every image of a folder of images + masks gets a seeded noisy unary (:func:`crfcore.synthetic.noisy_unary`); each
method refines it; confusion matrices are summed over the folder, so mIoU is the dataset-level figure (void ignored).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import io, metrics
from .api import refine
from .synthetic import NoiseRecipe, noisy_unary

__all__ = ["Score", "evaluate"]

log = logging.getLogger(__name__)


@dataclass
class Score:
    """Accumulated figures of one method over a dataset."""

    num_classes: int
    ignore_index: int | None
    conf: np.ndarray = field(init=False)
    boundary: list[float] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.conf = np.zeros((self.num_classes, self.num_classes), np.int64)

    def add(self, pred: np.ndarray, gt: np.ndarray, ms: float = 0.0) -> None:
        self.conf += metrics.confusion(pred, gt, self.num_classes, self.ignore_index)
        self.boundary.append(metrics.boundary_fscore(pred, gt, ignore_index=self.ignore_index))
        self.ms.append(ms)

    def summary(self) -> dict[str, float]:
        return {"miou": 100 * metrics.miou(self.conf), "miou_gt": 100 * metrics.miou(self.conf, classes="gt"),
                "accuracy": 100 * metrics.accuracy(self.conf),
                "boundary_f": 100 * float(np.mean(self.boundary)), "ms_per_image": float(np.mean(self.ms))}


def evaluate(folder: str | Path, methods: dict[str, tuple[str, Any]], *, num_classes: int | None = None,
             ignore_index: int | None = 255, recipe: NoiseRecipe = NoiseRecipe(), limit: int | None = None,
             device: str | None = None, progress: Callable[[int, int, str], None] | None = None
             ) -> dict[str, dict[str, float]]:
    """Run the synthetic benchmark.

    Args:
        folder: a dataset folder (see :func:`crfcore.io.find_pairs`).
        methods: row name → ``(method, params)`` for :func:`crfcore.refine`.
        num_classes: C; default: the largest label in the masks + 1 (``ignore_index`` excluded).
        ignore_index: void label, skipped in scoring and counted as background in the unary.
        limit: evaluate only the first ``limit`` pairs.

    Returns:
        Row name → ``{"miou", "miou_gt", "accuracy", "boundary_f", "ms_per_image"}`` (percentages, ms; ``miou``
        averages over classes in ground truth or prediction, ``miou_gt`` over ground-truth classes); the row
        ``"unary"`` scores the noisy unary's argmax.
    """
    pairs = io.find_pairs(folder)[:limit]
    if not pairs:
        raise ValueError(f"{folder} has no image/mask pairs (expected images/ and masks/ subfolders).")
    masks = [io.load_mask(m) for _, m in pairs]
    if num_classes is None:
        num_classes = 1 + max(int(np.max(np.where(m == ignore_index, 0, m))) for m in masks)
        num_classes = max(num_classes, 2)
    scores = {name: Score(num_classes, ignore_index) for name in ["unary", *methods]}
    for i, ((image_path, mask_path), gt) in enumerate(zip(pairs, masks)):
        image = io.load_image(image_path)
        io.check_pair(image, gt, image_path, mask_path)
        unary = noisy_unary(gt, num_classes, image_id=image_path.stem, recipe=recipe, void=ignore_index)
        scores["unary"].add(unary.argmax(0), gt)
        for name, (method, params) in methods.items():
            start = time.perf_counter()
            result = refine(image, unary, method=method, params=params, device=device)
            scores[name].add(result.labels, gt, (time.perf_counter() - start) * 1e3)
        if progress is not None:
            progress(i + 1, len(pairs), image_path.stem)
    return {name: s.summary() for name, s in scores.items()}
