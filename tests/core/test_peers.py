"""The evaluation peers (crfcore.peers): GrabCut from an annotation's trimap, two-class and one-vs-rest, and the
random walker from strokes, on flat-coloured synthetic scenes whose truth is known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from crfcore import peers


def _scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 60×80 scene: a disk (class 1) and a bar (class 2) on a background (class 0), flat colours plus noise."""
    yy, xx = np.mgrid[:60, :80]
    gt = np.zeros((60, 80), np.int64)
    gt[(yy - 28) ** 2 + (xx - 25) ** 2 <= 15**2] = 1
    gt[10:50, 52:66] = 2
    colours = np.array([[90, 140, 60], [220, 60, 50], [40, 60, 200]], np.float64)
    image = np.clip(colours[gt] + rng.normal(0, 8, (60, 80, 3)), 0, 255).astype(np.uint8)
    return image, gt


def _grown(gt: np.ndarray, n: int) -> np.ndarray:
    from crfcore.protocols import PerturbRecipe, perturb_annotation

    return perturb_annotation(gt, recipe=PerturbRecipe(offset=n))


def test_grabcut_two_class_pulls_a_dilated_outline_back() -> None:
    pytest.importorskip("cv2", reason="the grabcut peer needs opencv-python-headless (bench extra)")
    image, gt = _scene(np.random.default_rng(0))
    gt = np.where(gt == 2, 0, gt)
    image = np.where(gt[..., None] == 1, image, np.array([90, 140, 60], np.uint8))
    annotation = _grown(gt, 4)
    out = peers.grabcut(image, annotation, band=6)
    assert (annotation != gt).sum() > 150
    assert (out != gt).sum() < 0.1 * (annotation != gt).sum()
    assert set(np.unique(out).tolist()) == {0, 1}


def test_grabcut_one_vs_rest_keeps_each_class_and_fills_unknown_pixels() -> None:
    pytest.importorskip("cv2", reason="the grabcut peer needs opencv-python-headless (bench extra)")
    image, gt = _scene(np.random.default_rng(1))
    annotation = _grown(gt, 3)
    annotation[:, :3] = -1  # unknown strip: takes the nearest annotated label, then GrabCut decides
    out = peers.grabcut(image, annotation, band=5)
    assert (out != gt).sum() < 0.25 * (annotation != gt).sum()
    assert set(np.unique(out).tolist()) == {0, 1, 2}
    np.testing.assert_array_equal(peers.grabcut(image, annotation, band=5), out)  # seeded: the same twice


def test_grabcut_rejects_bad_input_with_clear_messages() -> None:
    pytest.importorskip("cv2", reason="the grabcut peer needs opencv-python-headless (bench extra)")
    image, gt = _scene(np.random.default_rng(2))
    with pytest.raises(ValueError, match="band must be > 0 pixels"):
        peers.grabcut(image, gt, band=0)
    with pytest.raises(ValueError, match=r"annotation must be \(H, W\) integer labels of the image's size"):
        peers.grabcut(image, gt[:10], band=4)
    with pytest.raises(ValueError, match="annotation has no known pixel"):
        peers.grabcut(image, np.full_like(gt, -1), band=4)
    one = np.ones_like(gt)
    np.testing.assert_array_equal(peers.grabcut(image, one, band=4), one)  # one class: nothing to decide


def test_random_walker_from_a_stroke_per_class_recovers_flat_regions() -> None:
    image, gt = _scene(np.random.default_rng(3))
    strokes = np.full_like(gt, -1)
    strokes[28, 20:30], strokes[20:40, 59], strokes[5, 5:70] = 1, 2, 0
    out = peers.random_walker(image, strokes)
    assert (out == gt).mean() > 0.97
    only = np.full_like(gt, -1)
    only[3, 3] = 2
    np.testing.assert_array_equal(peers.random_walker(image, only), np.full_like(gt, 2))
    with pytest.raises(ValueError, match="strokes have no painted pixel"):
        peers.random_walker(image, np.full_like(gt, -1))
    with pytest.raises(ValueError, match="strokes hold values below -1"):
        peers.random_walker(image, np.full_like(gt, -2))
