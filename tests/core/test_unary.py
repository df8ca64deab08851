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
