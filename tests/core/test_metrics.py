"""crfcore.metrics against matrices and scores worked out by hand (in the comments) or by a plain Python loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crfcore import metrics

# gt row / pred row, one pixel per column; 255 is void.
GT = np.array([0, 0, 1, 1, 2, 2, 255])
PRED = np.array([0, 1, 1, 1, 2, 0, 2])
# Kept pixels (the last is void): gt 0 → pred 0, 1; gt 1 → pred 1, 1; gt 2 → pred 2, 0.
HAND_CONFUSION = np.array([[1, 1, 0],
                           [0, 2, 0],
                           [1, 0, 1]])


def test_confusion_matches_hand_computed_matrix():
    conf = metrics.confusion(PRED, GT, 3)
    assert conf.dtype == np.int64 and conf.shape == (3, 3)
    np.testing.assert_array_equal(conf, HAND_CONFUSION)


def test_confusion_accepts_torch_and_2d_maps():
    conf = metrics.confusion(torch.from_numpy(PRED[:6].reshape(2, 3)), torch.from_numpy(GT[:6].reshape(2, 3)), 3)
    np.testing.assert_array_equal(conf, HAND_CONFUSION)


def test_confusion_matches_loop_on_random_maps():
    rng = np.random.default_rng(0)
    gt, pred = rng.integers(0, 5, (30, 40)), rng.integers(0, 5, (30, 40))
    gt[rng.random((30, 40)) < 0.1] = 255
    expected = np.zeros((5, 5), np.int64)
    for g, p in zip(gt.ravel().tolist(), pred.ravel().tolist()):
        if g != 255:
            expected[g, p] += 1
    np.testing.assert_array_equal(metrics.confusion(pred, gt, 5), expected)


def test_confusion_custom_and_disabled_ignore_index():
    np.testing.assert_array_equal(metrics.confusion(np.array([0, 1]), np.array([0, 3]), 2, ignore_index=3),
                                  [[1, 0], [0, 0]])
    with pytest.raises(ValueError, match=r"gt has labels outside 0\.\.2 \(min 0, max 255\)"):
        metrics.confusion(PRED, GT, 3, ignore_index=None)


def test_confusion_rejects_bad_input():
    with pytest.raises(ValueError, match=r"pred has shape \(2,\) but gt has \(3,\)"):
        metrics.confusion(np.zeros(2, int), np.zeros(3, int), 2)
    with pytest.raises(ValueError, match=r"pred has labels outside 0\.\.1"):
        metrics.confusion(np.array([0, 2]), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="gt has labels outside"):
        metrics.confusion(np.array([0, 1]), np.array([-1, 1]), 2)


def test_miou_and_accuracy_from_hand_matrix():
    # IoU = diag / (row + column − diag):
    # class 0: 1/(2+2−1) = 1/3, class 1: 2/(2+3−2) = 2/3, class 2: 1/(2+1−1) = 1/2
    np.testing.assert_allclose(metrics.iou_per_class(HAND_CONFUSION), [1 / 3, 2 / 3, 1 / 2])
    assert metrics.miou(HAND_CONFUSION) == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert metrics.accuracy(HAND_CONFUSION) == pytest.approx(4 / 6)


def test_miou_skips_classes_absent_from_both_maps():
    conf = metrics.confusion(PRED, GT, 4)  # class 3 appears nowhere
    assert np.isnan(metrics.iou_per_class(conf)[3])
    assert metrics.miou(conf) == pytest.approx(0.5)


def test_perfect_and_empty_scores():
    labels = np.array([[0, 1], [2, 2]])
    conf = metrics.confusion(labels, labels, 3)
    assert metrics.miou(conf) == 1.0 and metrics.accuracy(conf) == 1.0
    empty = np.zeros((3, 3), np.int64)
    assert np.isnan(metrics.miou(empty)) and np.isnan(metrics.accuracy(empty))


def _square(shift: tuple[int, int] = (0, 0), size: int = 48) -> np.ndarray:
    labels = np.zeros((size, size), np.int64)
    y, x = 14 + shift[0], 14 + shift[1]
    labels[y:y + 20, x:x + 20] = 1
    return labels


def test_boundary_fscore_identical_maps_is_one():
    assert metrics.boundary_fscore(_square(), _square()) == 1.0
    assert metrics.boundary_fscore(_square(), _square(), tolerance=0) == 1.0


@pytest.mark.parametrize("shift", [(2, 0), (0, -2)])
def test_boundary_fscore_within_tolerance_is_one(shift):
    # Along one axis, every edge pixel lies at most 2 px from the other outline (a diagonal shift would put the
    # corners √8 px apart).
    assert metrics.boundary_fscore(_square(shift), _square(), tolerance=2) == 1.0


def test_boundary_fscore_shift_beyond_tolerance_is_low():
    # Every edge moves 6 px; only the pixels near the two points where the outlines cross stay within 2 px.
    assert metrics.boundary_fscore(_square((6, 6)), _square(), tolerance=2) < 0.3


def test_boundary_fscore_hand_computed_partial_match():
    # gt stripes 0 | 1 | 2 split after columns 3 and 6; pred has only the split after column 3.
    # Tolerance 1: precision = 1 (pred's edge is on gt's), recall = 1/2 (column 6 is 3 px away) → F = 2/3.
    gt = np.repeat(np.array([[0, 0, 0, 0, 1, 1, 1, 2, 2, 2]]), 10, axis=0)
    pred = np.repeat(np.array([[0, 0, 0, 0, 1, 1, 1, 1, 1, 1]]), 10, axis=0)
    assert metrics.boundary_fscore(pred, gt, tolerance=1) == pytest.approx(2 / 3)


def test_boundary_fscore_without_boundaries():
    flat = np.zeros((8, 8), np.int64)
    assert metrics.boundary_fscore(flat, flat) == 1.0
    halves = np.zeros((8, 8), np.int64)
    halves[:, 4:] = 1
    assert metrics.boundary_fscore(flat, halves) == 0.0
    assert metrics.boundary_fscore(halves, flat) == 0.0


@pytest.mark.parametrize("tolerance", [0, 0.5, 2])
def test_boundary_fscore_ignores_edges_at_void(tolerance):
    # gt has a void band where pred (a copy with the band filled in) has an edge; the edges of the band itself and
    # pred's edge inside it must not count, so pred scores 1 at any tolerance.
    gt = _square()
    gt[:, 30:34] = 255
    pred = np.where(gt == 255, 1, gt)
    assert metrics.boundary_fscore(pred, gt, tolerance=tolerance) == 1.0


def test_boundary_fscore_rejects_bad_input():
    with pytest.raises(ValueError, match=r"must be \(H, W\) of one shape"):
        metrics.boundary_fscore(np.zeros((4, 4), int), np.zeros((4, 5), int))
    with pytest.raises(ValueError, match="tolerance must be >= 0 pixels, got -1"):
        metrics.boundary_fscore(_square(), _square(), tolerance=-1)
