"""Segmentation metrics: confusion matrix, mIoU, pixel accuracy, boundary F-score."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from torch import Tensor

from .labels import VOID

__all__ = ["confusion", "iou_per_class", "miou", "accuracy", "boundary_fscore"]


def _np(x: np.ndarray | Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def confusion(pred: np.ndarray | Tensor, gt: np.ndarray | Tensor, n_classes: int,
              ignore_index: int | None = VOID) -> np.ndarray:
    """Confusion matrix ``(C, C)`` int64, rows = ground truth, columns = prediction.

    Args:
        pred, gt: integer label maps of the same shape (any number of dims).
        n_classes: C; ground-truth values equal to ``ignore_index`` are skipped.

    Raises:
        ValueError: shapes differ, or a label (other than ``ignore_index``) is outside 0..C-1.
    """
    p, g = _np(pred).astype(np.int64).ravel(), _np(gt).astype(np.int64).ravel()
    if _np(pred).shape != _np(gt).shape:
        raise ValueError(f"pred has shape {_np(pred).shape} but gt has {_np(gt).shape}.")
    keep = g != ignore_index if ignore_index is not None else np.ones_like(g, dtype=bool)
    p, g = p[keep], g[keep]
    for name, v in (("gt", g), ("pred", p)):
        if v.size and (v.min() < 0 or v.max() >= n_classes):
            raise ValueError(f"{name} has labels outside 0..{n_classes - 1} (min {v.min()}, max {v.max()}); "
                             f"pass the right n_classes or ignore_index.")
    return np.bincount(g * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """IoU of each class ``(C,)``; NaN for classes absent from both ground truth and prediction."""
    conf = np.asarray(conf, dtype=np.float64)
    inter = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def miou(conf: np.ndarray, *, classes: str = "any") -> float:
    """Mean IoU in 0..1.

    Args:
        classes: ``"any"`` averages over classes present in ground truth or prediction (the PASCAL VOC rule: a
            class predicted but absent from ground truth scores 0); ``"gt"`` over classes present in ground truth
            only, which suits small sets where most classes never occur.
    """
    ious = iou_per_class(conf)
    if classes == "gt":
        ious = np.where(np.asarray(conf).sum(1) > 0, ious, np.nan)
    elif classes != "any":
        raise ValueError(f"{classes!r} is not a valid classes rule. Valid values are 'any', 'gt'.")
    return float(np.nanmean(ious)) if np.isfinite(ious).any() else float("nan")


def accuracy(conf: np.ndarray) -> float:
    """Pixel accuracy, in 0..1."""
    conf = np.asarray(conf)
    total = conf.sum()
    return float(np.trace(conf) / total) if total else float("nan")


def _boundary(labels: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour has another label, ``(H, W)`` bool."""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edge


def boundary_fscore(pred: np.ndarray | Tensor, gt: np.ndarray | Tensor, *, tolerance: float = 2.0,
                    ignore_index: int | None = VOID) -> float:
    """Boundary F-score: precision and recall of label boundaries matched within ``tolerance`` pixels.

    Args:
        pred, gt: ``(H, W)`` integer label maps.
        tolerance: match distance in pixels (Euclidean).
        ignore_index: boundaries within the tolerance of void pixels are not counted.

    Returns:
        F in 0..1; 1.0 when neither map has a boundary.
    """
    p, g = _np(pred).astype(np.int64), _np(gt).astype(np.int64)
    if p.shape != g.shape or p.ndim != 2:
        raise ValueError(f"pred and gt must be (H, W) of one shape, got {p.shape} and {g.shape}.")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}.")
    care = np.ones_like(g, dtype=bool)
    if ignore_index is not None and (g == ignore_index).any():
        # at least 1 px: a pixel beside void has an edge to it, which is not a boundary at any tolerance
        care = ndimage.distance_transform_edt(g != ignore_index) > max(tolerance, 1.0)
        g = np.where(g == ignore_index, -1, g)
    bp, bg = _boundary(p) & care, _boundary(g) & care
    if not bp.any() and not bg.any():
        return 1.0
    if not bp.any() or not bg.any():
        return 0.0
    dist_to_g = ndimage.distance_transform_edt(~bg)
    dist_to_p = ndimage.distance_transform_edt(~bp)
    precision = float((dist_to_g[bp] <= tolerance).mean())
    recall = float((dist_to_p[bg] <= tolerance).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
