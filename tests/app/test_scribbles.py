"""Scribble layer and undo atoms (no Qt), brush rasterisation, and the tool state's validated setters."""

from __future__ import annotations

import numpy as np
import pytest

from app.scribbles import UNPAINTED, ScribbleLayer, stroke_pixels
from app.tools import SIZE_RANGE, ToolState


def test_a_brush_dab_covers_the_pixel_centres_within_half_its_size():
    rows, cols = stroke_pixels((10.5, 20.5), (10.5, 20.5), 5, (40, 40))
    covered = set(zip(rows.tolist(), cols.tolist()))
    # expected: pixel centres (c + 0.5, r + 0.5) with (c - 10)^2 + (r - 20)^2 <= 2.5^2, enumerated by hand
    expected = {(20 + dr, 10 + dc) for dr in range(-2, 3) for dc in range(-2, 3) if dr * dr + dc * dc <= 6.25}
    assert covered == expected and len(covered) == 21


def test_a_fast_drag_leaves_no_gap_and_is_clipped_to_the_image():
    rows, cols = stroke_pixels((-5.0, 3.5), (30.0, 3.5), 1, (8, 20))
    assert set(rows.tolist()) == {3}
    assert sorted(cols.tolist()) == list(range(20))  # every column between the two mouse positions, none outside
    empty = stroke_pixels((50.0, 50.0), (60.0, 60.0), 3, (8, 20))
    assert empty[0].size == 0 and empty[1].size == 0
    with pytest.raises(ValueError, match="size must be > 0 pixels"):
        stroke_pixels((0, 0), (1, 1), 0, (8, 8))


def test_a_whole_drag_is_one_undo_item_with_first_and_last_values():
    layer = ScribbleLayer((6, 6))
    layer.begin("brush")
    layer.paint(np.array([1, 1, 2]), np.array([1, 2, 2]), 3)
    layer.paint(np.array([1, 3]), np.array([2, 3]), 4)  # (1, 2) painted twice: 3 then 4
    edit = layer.end()
    assert edit.name == "brush" and edit.indices.tolist() == [7, 8, 14, 21]
    assert edit.before.tolist() == [UNPAINTED] * 4 and edit.after.tolist() == [3, 4, 3, 4]
    painted = layer.values.copy()
    assert layer.undo() is edit and (layer.values == UNPAINTED).all() and not layer.painted
    assert layer.redo() is edit and np.array_equal(layer.values, painted) and layer.painted
    assert not layer.can_redo and layer.undo_name == "brush"


def test_erasing_is_undone_and_a_new_edit_clears_the_redo_stack():
    layer = ScribbleLayer((4, 4))
    layer.begin("brush")
    layer.paint(np.array([0, 0]), np.array([0, 1]), 1)
    layer.end()
    layer.begin("eraser")
    layer.paint(np.array([0]), np.array([0]), UNPAINTED)
    layer.end()
    assert layer.values[0, :2].tolist() == [UNPAINTED, 1]
    layer.undo()
    assert layer.values[0, :2].tolist() == [1, 1] and layer.can_redo
    layer.begin("brush")
    layer.paint(np.array([3]), np.array([3]), 2)
    layer.end()
    assert not layer.can_redo and layer.redo() is None


def test_an_edit_that_changes_nothing_makes_no_undo_item():
    layer = ScribbleLayer((4, 4))
    layer.begin("eraser")
    assert not layer.paint(np.array([1]), np.array([1]), UNPAINTED)
    assert layer.end() is None and not layer.can_undo


def test_editing_rules_are_enforced_with_the_fix():
    layer = ScribbleLayer((4, 4), undo_limit=2)
    with pytest.raises(ValueError, match="call begin"):
        layer.paint(np.array([0]), np.array([0]), 1)
    with pytest.raises(ValueError, match="end"):
        layer.end()
    layer.begin("brush")
    with pytest.raises(ValueError, match="already open"):
        layer.begin("eraser")
    with pytest.raises(ValueError, match=r"inside 4×4"):
        layer.paint(np.array([4]), np.array([0]), 1)
    assert not layer.can_undo  # nothing to undo while a drag is open
    layer.end()
    for label in (1, 2, 3):
        layer.begin("brush")
        layer.paint(np.array([0]), np.array([0]), label)
        layer.end()
    assert layer.undo() and layer.undo() and layer.undo() is None  # only the 2 newest items are kept
    assert layer.values[0, 0] == 1


def test_painted_pixels_override_labels():
    layer = ScribbleLayer((3, 4))
    layer.begin("brush")
    layer.paint(np.array([1]), np.array([2]), 2)
    layer.end()
    over = layer.over(np.zeros((3, 4), np.int64))
    assert over[1, 2] == 2 and over.sum() == 2 and over.dtype == np.int64


def test_replace_loads_saved_scribbles_and_forgets_the_history():
    layer = ScribbleLayer((2, 3))
    layer.begin("brush")
    layer.paint(np.array([0]), np.array([0]), 1)
    layer.end()
    saved = np.array([[UNPAINTED, 0, 1], [1, UNPAINTED, UNPAINTED]])
    layer.replace(saved)
    assert np.array_equal(layer.values, saved) and not layer.can_undo and layer.max_label() == 1
    with pytest.raises(ValueError, match=r"must be \(2, 3\) integers"):
        layer.replace(np.zeros((3, 2), np.int64))


def test_tool_state_validates_and_steps_the_brush_size(qtbot):
    tools = ToolState()
    sizes = []
    tools.size_changed.connect(sizes.append)
    tools.set_size(10)
    tools.grow()
    tools.shrink()
    tools.shrink()
    assert sizes == [10, 12, 10, 8]
    tools.set_size(SIZE_RANGE[0])
    tools.shrink()
    assert tools.size == SIZE_RANGE[0]
    with pytest.raises(ValueError, match="brush size must be an integer in 1..256"):
        tools.set_size(0)
    with pytest.raises(ValueError, match="'lasso' is not a valid tool"):
        tools.set_tool("lasso")
    with pytest.raises(ValueError, match="label must be a class index >= 0"):
        tools.set_label(-1)
