"""Autosave into the folder's project (crfcore.project): edits, Accept, leaving an image, a crash, reopening."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PySide6.QtCore import Qt

import app.workers
from app.compute import compute
from app.scribbles import UNPAINTED
from app.window import MainWindow
from crfcore import params as P
from crfcore.project import CATALOG_DIR, Project
from tests.app.conftest import TIMEOUT


def paint_patch(doc, label: int = 1) -> None:
    """One brush stroke over a 4×4 background patch, as the canvas would make it."""
    rows, cols = np.mgrid[4:8, 4:8]
    doc.begin_edit("brush")
    doc.paint(rows.ravel(), cols.ravel(), label)
    doc.end_edit()


def open_window(qtbot, folder, *, wait: bool = True) -> MainWindow:
    win = MainWindow(device="cpu")
    qtbot.addWidget(win)
    win.show()
    if wait:
        with qtbot.waitSignal(win.scheduler.finished, timeout=TIMEOUT):
            assert win.open_folder(folder)
    else:
        assert win.open_folder(folder)
    return win


def gate_first_refinement(monkeypatch) -> threading.Event:
    """Hold the next refinement until the returned event is set (the ones after it run normally)."""
    gate, calls = threading.Event(), []

    def gated(job, **kwargs):
        calls.append(job)
        if len(calls) == 1:
            gate.wait(10)
        return compute(job, **kwargs)

    monkeypatch.setattr(app.workers, "compute", gated)
    return gate


def test_browsing_writes_nothing_into_the_folder(window, sample_folder):
    window.next_image()
    assert not (sample_folder / CATALOG_DIR).exists()


def test_a_stroke_is_saved_with_its_refinement_and_restored_on_reopening(window, qtbot, sample_folder):
    doc = window.document
    doc.set_param("iterations", 3)
    with qtbot.waitSignal(window.project_sync.saved, timeout=TIMEOUT) as saved:
        paint_patch(doc)
    revision, note = saved.args
    assert note == "brush" and "saved r" in window.save_label.text()
    shown, scribbles = doc.labels.copy(), doc.scribbles.copy()
    window.close()  # closes the catalog
    with Project.open(sample_folder) as project:
        (rev,) = project.revisions(sample_folder / "img0.png")
        assert rev.id == revision and rev.method == doc.method and rev.note == "brush"
        assert rev.preset["method"] == doc.method and rev.preset["params"] == P.to_dict(doc.params())
        np.testing.assert_array_equal(project.load_revision(rev), shown)
        assert project.classes == ["background", "disc"]
    reopened = open_window(qtbot, sample_folder, wait=False)
    doc2 = reopened.document
    assert reopened.scheduler.latest_id == 0  # the saved mask is shown as it was; nothing is recomputed
    np.testing.assert_array_equal(doc2.labels, shown)
    np.testing.assert_array_equal(doc2.scribbles, scribbles)
    assert doc2.result_is_current and not doc2.can_undo and not reopened.qactions["undo"].isEnabled()
    assert f"restored revision {revision}" in reopened.message.text()
    with qtbot.waitSignal(reopened.scheduler.finished, timeout=TIMEOUT):
        reopened.next_image()  # an image without saved work is refined as usual
    reopened.scheduler.shutdown()


def test_accept_saves_the_mask_as_shown(window, qtbot, sample_folder):
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=TIMEOUT)
    with qtbot.waitSignal(window.project_sync.saved, timeout=TIMEOUT) as saved:
        qtbot.keyClick(window, Qt.Key.Key_A)
    assert saved.args[1] == "accepted"
    project = window.project_sync.project
    np.testing.assert_array_equal(project.latest_mask(sample_folder / "img0.png"), window.document.labels)


def test_leaving_an_image_before_its_refinement_saves_the_mask_as_shown(window, qtbot, sample_folder, monkeypatch):
    gate = gate_first_refinement(monkeypatch)
    doc = window.document
    paint_patch(doc)
    qtbot.waitUntil(lambda: window.scheduler.busy, timeout=TIMEOUT)
    shown = doc.labels.copy()
    with qtbot.waitSignal(window.project_sync.saved, timeout=TIMEOUT) as saved:
        window.next_image()
    gate.set()
    assert saved.args[1] == "brush, not refined"
    np.testing.assert_array_equal(window.project_sync.project.latest_mask(sample_folder / "img0.png"), shown)
    qtbot.waitUntil(lambda: not window.scheduler.busy, timeout=TIMEOUT)


def test_strokes_survive_a_crash_before_their_refinement(window, qtbot, sample_folder, monkeypatch):
    gate = gate_first_refinement(monkeypatch)
    paint_patch(window.document)
    qtbot.waitUntil(lambda: window.scheduler.busy, timeout=TIMEOUT)
    painted = window.document.scribbles.copy()
    # the first window never finishes nor closes (a crash); a second process opens the folder
    second = open_window(qtbot, sample_folder, wait=False)
    doc = second.document
    np.testing.assert_array_equal(doc.scribbles, painted)
    assert doc.result is None and second.scheduler.latest_id == 1  # restored without a mask: refined at once
    with qtbot.waitSignal(second.project_sync.saved, timeout=TIMEOUT) as saved:
        pass  # the restored strokes are refined and that mask saved
    assert saved.args[1] == "restored strokes" and (doc.labels[painted != UNPAINTED] == 1).all()
    gate.set()
    second.scheduler.shutdown()


def test_a_damaged_catalog_is_reported_and_editing_goes_on(qtbot, sample_folder):
    (sample_folder / CATALOG_DIR).mkdir()
    (sample_folder / CATALOG_DIR / "catalog.sqlite").write_bytes(b"not a database" * 100)
    win = open_window(qtbot, sample_folder)
    assert "Autosave cannot use the project" in win.error_box.text() and "damaged" in win.error_box.text()
    paint_patch(win.document)
    assert win.document.can_undo
    win.scheduler.shutdown()


def test_restore_refuses_a_mask_of_another_size(window):
    with pytest.raises(ValueError, match="saved for another image"):
        window.document.restore(np.zeros((3, 3), np.int64))
