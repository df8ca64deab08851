"""Brush, eraser, undo and redo in the real window, driven headless with mouse events on the canvas."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication

import crfcore
from app.scribbles import UNPAINTED
from tests.app.conftest import TIMEOUT

PATCH = (6, 6)  # (row, col) of a background pixel far from the disc (tests/app/conftest.py make_pair)


def _send(qtbot, canvas, kind, image_xy, buttons, button=Qt.MouseButton.NoButton) -> None:
    scene = canvas.view.mapViewToScene(QPointF(*image_xy))
    pos = QPointF(canvas.mapFromScene(scene))
    event = QMouseEvent(kind, pos, QPointF(canvas.viewport().mapToGlobal(pos.toPoint())), button, buttons,
                        Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(canvas.viewport(), event)
    qtbot.wait(15)  # pyqtgraph drops mouse moves closer than 10 ms apart


def drag(qtbot, canvas, points: list[tuple[float, float]]) -> None:
    """Hover to the first image point (x, y), press the left button, move through the rest, release."""
    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    _send(qtbot, canvas, QEvent.Type.MouseMove, points[0], none)
    _send(qtbot, canvas, QEvent.Type.MouseButtonPress, points[0], left, left)
    for point in points[1:]:
        _send(qtbot, canvas, QEvent.Type.MouseMove, point, left)
    _send(qtbot, canvas, QEvent.Type.MouseButtonRelease, points[-1], none, left)


def test_a_brush_drag_paints_shows_at_once_and_refines_with_a_hard_unary(window, qtbot):
    doc = window.document
    assert doc.result.labels[PATCH] == 0
    window.qactions["brush"].trigger()
    window.tools.set_label(1)
    window.tools.set_size(4)
    started = []
    window.scheduler.started.connect(lambda rid, preview: started.append(rid))
    with qtbot.waitSignal(window.scheduler.finished, timeout=TIMEOUT) as finished:
        drag(qtbot, window.canvas, [(4.5, 6.5), (7.5, 6.5), (10.5, 6.5)])
        assert (doc.scribbles == 1).sum() >= 12 and doc.scribbles[PATCH] == 1
        assert window.canvas.overlay_item.image[PATCH] == 1  # the overlay shows the stroke before any refinement
        assert window.scheduler.pending or started  # the refinement waits out the debounce after the stroke
    result = finished.args[1]
    assert result.version == doc.version and doc.result_is_current
    painted = doc.scribbles == 1
    job = doc.job()  # what that refinement got: the mask and the strokes (refine_mask's unary, made on the worker)
    assert job.rough.mask is doc.mask and np.array_equal(job.scribbles, doc.scribbles)
    expected = crfcore.refine_mask(doc.image, doc.mask, num_classes=2, method=doc.method, params=doc.params(),
                                   strokes=doc.scribbles.astype(np.int64), device="cpu",
                                   **dataclasses.asdict(doc.unary_settings))
    np.testing.assert_array_equal(result.labels, expected.labels)  # strokes on a mask: as crfcore.refine_mask
    assert (doc.labels[painted] == 1).all()  # the shown (and saved) mask clamps the painted pixels
    assert (doc.labels[~painted] == result.labels[~painted]).all()
    assert doc.can_undo and doc.undo_name == "brush"
    assert window.qactions["undo"].isEnabled() and "Undo brush" in window.qactions["undo"].toolTip()


def test_one_drag_is_one_undo_item_and_undo_redo_refine_again(window, qtbot):
    doc = window.document
    original = doc.labels.copy()
    window.tools.set_tool("brush")
    window.tools.set_size(3)
    with qtbot.waitSignal(window.scheduler.finished, timeout=TIMEOUT):
        drag(qtbot, window.canvas, [(3.5, 5.5), (9.5, 5.5), (9.5, 12.5), (3.5, 12.5)])
    painted = doc.scribbles.copy()
    assert (painted != UNPAINTED).sum() > 20
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=TIMEOUT)
    with qtbot.waitSignal(window.scheduler.finished, timeout=TIMEOUT):
        qtbot.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert (doc.scribbles == UNPAINTED).all() and not doc.can_undo  # the whole drag went at once
    assert np.array_equal(doc.labels, original)
    with qtbot.waitSignal(window.scheduler.finished, timeout=TIMEOUT):
        qtbot.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert np.array_equal(doc.scribbles, painted) and (doc.labels[painted != UNPAINTED] == 1).all()
    doc.undo()
    with qtbot.waitSignal(window.scheduler.finished, timeout=TIMEOUT):
        qtbot.keyClick(window, Qt.Key.Key_Y, Qt.KeyboardModifier.ControlModifier)
    assert np.array_equal(doc.scribbles, painted)


def test_the_eraser_removes_strokes_as_its_own_undo_item(window, qtbot):
    doc = window.document
    window.tools.set_tool("brush")
    window.tools.set_size(6)
    drag(qtbot, window.canvas, [(6.5, 6.5), (12.5, 6.5)])
    assert doc.scribbles[PATCH] == 1
    window.qactions["eraser"].trigger()
    assert window.tools.tool == "eraser" and window.qactions["eraser"].isChecked()
    drag(qtbot, window.canvas, [(2.5, 6.5), (16.5, 6.5)])
    assert (doc.scribbles == UNPAINTED).all() and doc.undo_name == "eraser"
    assert window.canvas.overlay_item.image[PATCH] == doc.result.labels[PATCH]  # the refined label shows again
    doc.undo()
    assert doc.scribbles[PATCH] == 1
    qtbot.waitUntil(lambda: not window.scheduler.busy and not window.scheduler.pending, timeout=TIMEOUT)


def test_navigate_drags_pan_and_paint_nothing(window, qtbot):
    window.tools.set_tool("navigate")
    before = window.canvas.view.viewRange()
    drag(qtbot, window.canvas, [(20.5, 20.5), (30.5, 30.5), (40.5, 40.5)])
    assert (window.document.scribbles == UNPAINTED).all()
    assert window.canvas.view.viewRange() != before


def test_the_legend_and_the_shortcuts_drive_the_brush(window, qtbot):
    legend = window.legend
    qtbot.mouseClick(legend.row_of(0), Qt.MouseButton.LeftButton)
    assert window.tools.label == 0 and window.tools.tool == "brush"  # picking a class arms the brush
    assert window.brush_controls.label_combo.currentIndex() == 0 and legend.row_of(0).font().bold()
    window.brush_controls.label_combo.setCurrentIndex(1)
    window.brush_controls.label_combo.activated.emit(1)
    assert window.tools.label == 1 and not legend.row_of(0).font().bold()
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=TIMEOUT)
    size = window.tools.size
    qtbot.keyClick(window, Qt.Key.Key_BracketRight)
    assert window.tools.size > size and window.brush_controls.size_spin.value() == window.tools.size
    qtbot.keyClick(window, Qt.Key.Key_BracketLeft)
    assert window.tools.size == size
    for key, tool in ((Qt.Key.Key_X, "eraser"), (Qt.Key.Key_V, "navigate"), (Qt.Key.Key_D, "brush")):
        qtbot.keyClick(window, key)
        assert window.tools.tool == tool and window.qactions[tool].isChecked()


def test_a_brush_class_the_image_lacks_is_refused_with_the_fix(window, qtbot):
    window.tools.set_tool("brush")
    window.tools.set_label(5)
    drag(qtbot, window.canvas, [(6.5, 6.5), (14.5, 6.5)])
    assert (window.document.scribbles == UNPAINTED).all()
    assert "paints class 5 but img0 has 2 classes" in window.message.text()
    assert window.brush_controls.label_combo.currentIndex() == -1


def test_document_paint_validates_its_label(window):
    doc = window.document
    doc.begin_edit("brush")
    with pytest.raises(ValueError, match=r"label must be a class index 0..1"):
        doc.paint(np.array([0]), np.array([0]), 7)
    assert not doc.end_edit()


def test_undo_history_is_kept_after_next_then_previous_19(window, qtbot):
    doc = window.document
    rows, cols = np.mgrid[4:8, 4:8]
    for label in (1, 0):
        with qtbot.waitSignal(window.scheduler.finished, timeout=TIMEOUT):
            doc.begin_edit("brush")
            doc.paint(rows.ravel(), cols.ravel(), label)
            doc.end_edit()
    with qtbot.waitSignal(window.scheduler.finished, timeout=TIMEOUT):
        window.qactions["undo"].trigger()
    assert doc.scribbles[4, 4] == 1 and doc.can_redo
    with qtbot.waitSignal(window.scheduler.finished, timeout=TIMEOUT):
        window.qactions["next"].trigger()
    assert window.document.entry.stem == "img1" and not window.document.can_undo
    window.qactions["previous"].trigger()
    back = window.document
    assert back is not doc and back.entry.stem == "img0"
    assert back.scribbles[4, 4] == 1 and back.can_undo and back.can_redo
    assert window.qactions["undo"].isEnabled() and window.qactions["redo"].isEnabled()
    with qtbot.waitSignal(window.scheduler.finished, timeout=TIMEOUT):
        window.qactions["undo"].trigger()
    assert back.scribbles[4, 4] == UNPAINTED
    with qtbot.waitSignal(window.scheduler.finished, timeout=TIMEOUT):
        window.qactions["redo"].trigger()
    assert back.scribbles[4, 4] == 1


def test_an_image_with_no_mask_and_no_probabilities_starts_from_strokes_19(window, qtbot, sample_folder):
    from tests.app.conftest import make_pair

    (sample_folder / "img2_mask.png").unlink()
    window.open_folder(sample_folder)
    qtbot.waitUntil(lambda: not window.scheduler.busy and not window.scheduler.pending, timeout=TIMEOUT)
    started = []
    window.scheduler.started.connect(lambda rid, preview: started.append(rid))
    window.open_index(2)
    doc = window.document
    assert doc.entry.stem == "img2" and doc.unary_kind == "strokes" and doc.num_classes == 2
    assert window.tools.tool == "brush" and window.preset_kind == "scribbles"
    assert doc.result is None and not started and not window.scheduler.pending  # nothing to refine yet
    assert "paint each class with the brush" in window.message.text()
    assert window.unary_picker.combo.currentText().startswith("Strokes only")
    window.qactions["refine"].trigger()
    assert "Nothing to refine yet" in window.message.text() and not started
    _, _, truth = make_pair(2)
    for label, (rows, cols) in ((1, np.mgrid[28:36, 36:44]), (0, np.mgrid[2:6, 2:78]), (0, np.mgrid[58:62, 2:78])):
        doc.begin_edit("brush")
        doc.paint(rows.ravel(), cols.ravel(), label)
        doc.end_edit()
    qtbot.waitUntil(lambda: doc.result_is_current, timeout=TIMEOUT)
    agreement = (doc.labels == truth).mean()
    assert agreement > 0.9, agreement  # strokes alone gave the disc's mask
