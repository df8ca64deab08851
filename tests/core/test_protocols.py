"""The simulated annotators of crfcore.protocols (perturbed masks, strokes), NoC, thin classes, and the strokes
protocol of evaluate() with stand-in segmenters; expected values are worked out by hand in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from crfcore import io
from crfcore.api import Refinement
from crfcore.protocols import (PerturbRecipe, StrokeRecipe, class_widths, fill_nearest, next_stroke, number_of_clicks,
                               perturb_annotation, thin_classes)


def _square(shape=(40, 40), top=10, size=20) -> np.ndarray:
    gt = np.zeros(shape, np.int64)
    gt[top : top + size, top : top + size] = 1
    return gt


@pytest.mark.parametrize("n", [1, 3, 5])
def test_perturb_by_n_px_is_exact_on_a_square(n: int) -> None:
    gt = _square()
    grown = perturb_annotation(gt, recipe=PerturbRecipe(offset=n))
    # independent reference: pixels whose Euclidean distance to the square [10, 29]² is at most n
    yy, xx = np.mgrid[:40, :40]
    dy, dx = np.maximum(0, np.maximum(10 - yy, yy - 29)), np.maximum(0, np.maximum(10 - xx, xx - 29))
    np.testing.assert_array_equal(grown, (dy**2 + dx**2 <= n**2).astype(np.int64))
    shrunk = perturb_annotation(gt, recipe=PerturbRecipe(offset=-n))
    np.testing.assert_array_equal(shrunk, _square(top=10 + n, size=20 - 2 * n))  # erosion of a square is a square
    np.testing.assert_array_equal(perturb_annotation(gt, recipe=PerturbRecipe(offset=0)), gt)


def test_perturb_jitter_is_seeded_per_image_and_centred_on_the_offset() -> None:
    gt = _square((120, 120), 20, 80)
    recipe = PerturbRecipe(offset=0, jitter=3, correlation=6)
    a = perturb_annotation(gt, recipe=recipe, image_id="a")
    np.testing.assert_array_equal(a, perturb_annotation(gt, recipe=recipe, image_id="a"))
    assert (a != perturb_annotation(gt, recipe=recipe, image_id="b")).any()
    assert (a != gt).sum() > 200  # the outline moved both ways ...
    # ... about as much out as in: the mean displacement (area change / 320 px of outline) is under 1 px of 3
    assert abs(int(a.sum()) - int(gt.sum())) / 320 < 1.0


def test_perturb_fills_void_then_dilation_takes_the_nearest_foreground_label() -> None:
    gt = np.zeros((20, 30), np.int64)
    gt[5:15, 3:10], gt[5:15, 20:27] = 1, 2
    gt[5:15, 10] = 255  # a void seam on class 1's right edge: it joins class 1 (nearest label)
    out = perturb_annotation(gt, recipe=PerturbRecipe(offset=2), void=255)
    assert (out[5:15, 1:13] == 1).all() and (out[5:15, 18:29] == 2).all() and (out[5:15, 14:17] == 0).all()
    with pytest.raises(ValueError, match="jitter must be >= 0 pixels"):
        PerturbRecipe(jitter=-1)


def test_fill_nearest_gives_unknown_pixels_the_nearest_label() -> None:
    labels = np.array([[1, -1, -1, 2]])
    np.testing.assert_array_equal(fill_nearest(labels, -1), [[1, 1, 2, 2]])
    with pytest.raises(ValueError, match="every pixel of the 1×2 map is -1"):
        fill_nearest(np.array([[-1, -1]]), -1)


def test_annotator_paints_the_true_class_at_the_innermost_pixel_of_the_largest_wrong_region() -> None:
    gt = np.zeros((30, 40), np.int64)
    gt[4:15, 5:16] = 1     # 11×11 square of class 1, predicted as 0: the largest wrong region
    gt[20:27, 30:37] = 2   # 7×7 square of class 2, also wrong, smaller
    gt[0, 0] = 255         # void is never wrong
    pred = np.zeros_like(gt)
    cls, disk = next_stroke(pred, gt, radius=4, void=255)
    assert cls == 1
    # innermost pixel of the square: its centre (row 9, col 10), the one pixel 6 px from every side's outside
    yy, xx = np.mgrid[:30, :40]
    np.testing.assert_array_equal(disk, (yy - 9) ** 2 + (xx - 10) ** 2 <= 16)
    pred[gt == 1] = 1
    cls, disk = next_stroke(pred, gt, radius=4, void=255)
    # the square's centre (23, 33); the disk of radius 4 (49 px) clipped to the 7×7 square: 45 px (4 corners out)
    assert cls == 2 and disk.sum() == 45
    np.testing.assert_array_equal(disk, ((yy - 23) ** 2 + (xx - 33) ** 2 <= 16) & (gt == 2))
    pred[gt == 2] = 2
    assert next_stroke(pred, gt, void=255) is None


def test_annotator_starts_from_nothing_in_the_largest_true_region_and_counts_the_border_as_outside() -> None:
    gt = np.zeros((20, 20), np.int64)
    gt[:, 12:] = 1  # class 0 holds 240 px, class 1 160 px
    cls, disk = next_stroke(None, gt, radius=0)
    r, c = np.argwhere(disk)[0]
    assert cls == 0 and disk.sum() == 1
    # 6 px from the padded border and from class 1 (col 12) at cols 5 and 6, rows 5..14: the first in raster order
    assert (r, c) == (5, 5)


def test_number_of_clicks_is_the_first_count_reaching_the_threshold_else_budget_plus_one() -> None:
    curve = [40.0, 86.0, 84.0, 90.0]
    assert number_of_clicks(curve, 85, budget=4) == 2
    assert number_of_clicks(curve, 90, budget=4) == 4
    assert number_of_clicks(curve, 95, budget=4) == 5
    assert number_of_clicks(curve[:2], 95, budget=20) == 21
    with pytest.raises(ValueError, match="curve has 4 scores but the budget is 3 strokes"):
        number_of_clicks(curve, 85, budget=3)


def test_a_pole_is_thin_and_a_wall_is_not() -> None:
    gt = np.zeros((60, 60), np.int64)
    gt[5:55, 10:13] = 1    # a 3 px wide pole: width 2·2 − 1 = 3 along its medial axis
    gt[10:50, 25:55] = 2   # a 30 px wide wall
    widths = class_widths(gt, 4)
    assert np.median(widths[1]) == pytest.approx(3.0)
    assert np.median(widths[2]) > 12 and widths[3].size == 0  # 17: the medial axis' corner branches are narrower
    assert thin_classes([widths, widths]) == [1]
    assert thin_classes([widths], thin_width=2.0) == []


def test_stroke_recipe_reports_the_checkpoints_within_the_budget() -> None:
    assert StrokeRecipe().reported == (1, 3, 5, 10, 20)
    assert StrokeRecipe(budget=4).reported == (1, 3, 4)
    with pytest.raises(ValueError, match="budget must be a whole number of strokes >= 1"):
        StrokeRecipe(budget=0)


@pytest.fixture
def horse_like(tmp_path):
    """One 30×40 scene: a class-1 block on class 0, void along the top row."""
    gt = np.zeros((30, 40), np.int64)
    gt[8:24, 10:34] = 1
    gt[0] = 255
    image = np.where(gt[..., None] == 1, 200, 40).astype(np.uint8).repeat(3, axis=2)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    io.save_image(tmp_path / "images" / "a.png", image)
    io.save_mask(tmp_path / "masks" / "a.png", gt)
    return tmp_path, gt


def test_strokes_protocol_counts_strokes_until_the_threshold_and_budget_plus_one_when_never(horse_like,
                                                                                            monkeypatch) -> None:
    import crfcore.evaluate as E

    folder, gt = horse_like
    calls = []

    def stand_in(image, mask, *, strokes, **kwargs):
        calls.append(int((strokes >= 0).sum()))
        # before class 1 is painted, everything is class 0; after, the ground truth
        painted = set(np.unique(strokes[strokes >= 0]).tolist())
        return Refinement(None, np.where(gt == 1, 1, 0) if 1 in painted else np.zeros_like(gt), {})

    monkeypatch.setattr(E, "refine_mask", stand_in)
    table = E.evaluate(folder, {"s": E.Entry("convcrf")}, protocol="strokes", strokes=StrokeRecipe(budget=5))
    row = table["s"]
    # stroke 1 paints class 0 (the largest region, 776 px vs 384) → mIoU (56.4 + 0) / 2; stroke 2 paints class 1 →
    # perfect; strokes 3..5 find nothing wrong, so the prediction stands and nothing is refined
    assert len(calls) == 2
    assert row["noc@85"] == row["noc@90"] == 2
    assert row["miou@1"] == pytest.approx(100 * (1 - 384 / (40 * 29)) / 2)
    assert row["miou@3"] == row["miou@5"] == row["miou"] == 100

    def never(image, mask, *, strokes, **kwargs):
        return Refinement(None, np.zeros_like(gt), {})

    monkeypatch.setattr(E, "refine_mask", never)
    row = E.evaluate(folder, {"s": E.Entry("convcrf")}, protocol="strokes", strokes=StrokeRecipe(budget=5))["s"]
    assert row["noc@85"] == row["noc@90"] == 6  # budget + 1
