"""Unaries from logits, labels and scribbles; the synthetic noise recipe."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crfcore import metrics
from crfcore.synthetic import NoiseRecipe, noisy_unary
from crfcore.unary import from_labels, from_logits, from_scribbles


def test_from_labels_gives_confidence_to_the_label_and_uniform_to_void() -> None:
    labels = np.array([[0, 2], [255, 1]])
    p = from_labels(labels, 3, confidence=0.8)
    assert p.shape == (3, 2, 2) and p.dtype == np.float32
    np.testing.assert_allclose(p[:, 0, 1], [0.1, 0.1, 0.8], rtol=1e-6)
    np.testing.assert_allclose(p[:, 1, 0], [1 / 3] * 3, rtol=1e-6)


def test_from_labels_rejects_labels_above_num_classes() -> None:
    with pytest.raises(ValueError, match=r"values \[5\] outside 0..2.*num_classes=6"):
        from_labels(np.array([[0, 5]]), 3)


def test_from_logits_is_softmax_and_keeps_kind() -> None:
    logits = torch.randn(2, 4, 3, 3)
    assert torch.allclose(from_logits(logits), torch.softmax(logits, 1))
    with pytest.raises(ValueError, match="NaN"):
        from_logits(np.full((2, 2, 2), np.nan))


def test_from_scribbles_is_hard_where_painted() -> None:
    scribbles = np.full((3, 3), -1)
    scribbles[1, 1] = 2
    p = from_scribbles(scribbles, 3)
    np.testing.assert_allclose(p[:, 1, 1], [0, 0, 1])
    np.testing.assert_allclose(p[:, 0, 0], [1 / 3] * 3, rtol=1e-6)


def test_noisy_unary_is_seeded_and_as_rough_as_the_oracle_recipe() -> None:
    rng = np.random.default_rng(0)
    labels = np.zeros((120, 160), np.int64)
    labels[30:90, 40:120] = 1
    labels[rng.random(labels.shape) < 0.001] = 255
    a = noisy_unary(labels, 3, image_id="a")
    np.testing.assert_array_equal(a, noisy_unary(labels, 3, image_id="a"))
    assert not np.array_equal(a, noisy_unary(labels, 3, image_id="b"))
    np.testing.assert_allclose(a.sum(0), 1, atol=1e-5)
    acc = metrics.accuracy(metrics.confusion(a.argmax(0), labels, 3))
    assert 0.6 < acc < 0.95  # noisy but informative, like ../shared/oracles/densecrf's unaries
    clean = noisy_unary(labels, 3, recipe=NoiseRecipe(flip_prob=0.0, noise_sigma=0.0))
    assert metrics.accuracy(metrics.confusion(clean.argmax(0), labels, 3)) > 0.97


def _banded_by_brute_force(labels: np.ndarray, num_classes: int, confidence: float, band: float,
                           void: int = 255) -> np.ndarray:
    """from_labels(band=...)'s formula with distances from all pixel pairs (no distance transform)."""
    rows, cols = np.indices(labels.shape)
    rest = (1 - confidence) / (num_classes - 1)
    g = np.zeros((num_classes, *labels.shape))
    for c in np.unique(labels[labels != void]):
        r, k = np.nonzero(labels == c)
        d2 = ((rows[..., None] - r) ** 2 + (cols[..., None] - k) ** 2).min(-1)
        g[c] = np.exp(-d2 / (2 * band**2))
    p = rest + (confidence - rest) * g / g.sum(0)
    p[:, labels == void] = 1 / num_classes
    return p


def _three_regions() -> np.ndarray:
    labels = np.zeros((24, 40), np.int64)
    labels[:, 20:] = 1
    labels[2:5, 2:5] = 2  # a small region far from class 1
    labels[10:14, 30:33] = 255  # void inside class 1
    return labels


def test_from_labels_band_matches_the_formula_with_brute_force_distances() -> None:
    labels = _three_regions()
    p = from_labels(labels, 4, confidence=0.9, band=3.0)
    assert p.dtype == np.float32 and p.shape == (4, 24, 40)
    np.testing.assert_allclose(p, _banded_by_brute_force(labels, 4, 0.9, 3.0), atol=1e-6)
    np.testing.assert_allclose(p.sum(0), 1, atol=1e-6)


def test_from_labels_band_own_label_inside_neighbour_near_half_on_the_outline_floor_far_away() -> None:
    labels = _three_regions()
    confidence, band, rest = 1.0, 4.0, 0.0
    p = from_labels(labels, 4, confidence=confidence, band=band)
    known = labels != 255
    np.testing.assert_array_equal(p.argmax(0)[known], labels[known])
    # deep inside class 1 (16+ px from class 0, 18+ from class 2): the label keeps (nearly) all of `confidence`
    assert p[1, 20, 38] > 0.999
    # on the outline: class 0 at x=19, class 1 at x=20, one pixel apart: weights 1 and exp(-1 / (2 band²))
    across = np.exp(-1 / (2 * band**2)) / (1 + np.exp(-1 / (2 * band**2)))
    assert p[0, 20, 20] == pytest.approx(across, abs=1e-6) and 0.45 < p[0, 20, 20] < 0.5
    assert p[1, 20, 19] == pytest.approx(across, abs=1e-6)
    # class 3 is in no mask: the floor everywhere; class 2 is far from the right half: the floor there
    np.testing.assert_allclose(p[3][known], rest, atol=1e-7)
    assert p[2, 20, 30] == pytest.approx(rest, abs=1e-7)
    floor = from_labels(labels, 4, confidence=0.8, band=band)
    np.testing.assert_allclose(floor[3][known], 0.2 / 3, rtol=1e-5)


def test_from_labels_band_void_pixels_are_uniform_and_nobodys_neighbour() -> None:
    labels = np.ones((10, 12), np.int64)
    labels[:, :3] = 255  # void only: the value 0 must not appear as a class near it
    p = from_labels(labels, 3, confidence=0.9, band=2.0)
    np.testing.assert_allclose(p[:, :, :3], 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(p[:, :, 3:], from_labels(labels, 3, confidence=0.9)[:, :, 3:], rtol=1e-6)
    q = from_labels(np.where(labels == 255, -1, labels), 3, confidence=0.9, band=2.0, ignore_index=-1)
    np.testing.assert_array_equal(p, q)


def test_from_labels_tiny_band_is_the_rule_without_band() -> None:
    labels = _three_regions()
    np.testing.assert_allclose(from_labels(labels, 4, confidence=0.8, band=0.1), from_labels(labels, 4, confidence=0.8),
                               atol=1e-6)


def test_from_labels_band_batch_and_torch_match_numpy_per_image() -> None:
    a = _three_regions()
    b = np.zeros_like(a)
    b[5:, :] = 3
    batch = from_labels(np.stack([a, b]), 4, confidence=0.9, band=2.5)
    assert batch.shape == (2, 4, 24, 40)
    for k, labels in enumerate((a, b)):
        np.testing.assert_array_equal(batch[k], from_labels(labels, 4, confidence=0.9, band=2.5))
    t = from_labels(torch.from_numpy(np.stack([a, b])), 4, confidence=0.9, band=2.5)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.device.type == "cpu"
    np.testing.assert_array_equal(t.numpy(), batch)


@pytest.mark.parametrize("band", [0, -1.0, float("nan"), float("inf"), "4", True])
def test_from_labels_rejects_a_band_that_is_not_a_positive_number(band) -> None:
    with pytest.raises(ValueError, match=r"band must be a finite number of pixels > 0 \(or None for no band\), got"):
        from_labels(np.zeros((3, 3), np.int64), 2, band=band)
