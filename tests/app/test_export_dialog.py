"""The Export dialog: the project's saved masks in crfcore.export's formats, on a worker, errors as messages."""

from __future__ import annotations

import json

import numpy as np
from PySide6.QtCore import Qt

from crfcore import export
from crfcore.io import load_mask
from tests.app.conftest import TIMEOUT


def accept_two_images(window, qtbot) -> dict[str, np.ndarray]:
    """Accept img0 and img1 (refined) into the project; returns their saved masks by stem."""
    saved = {}
    for index in (0, 1):
        if window.index != index:
            with qtbot.waitSignal(window.scheduler.finished, timeout=TIMEOUT):
                window.open_index(index)
        window.qactions["accept"].trigger()
        saved[window.document.entry.stem] = window.document.labels.copy()
    return saved


def open_dialog(window, qtbot):
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=TIMEOUT)
    qtbot.keyClick(window, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)
    dialog = window.export_dialog
    assert dialog is not None and dialog.isVisible()
    return dialog


def test_index_export_writes_every_saved_mask(window, qtbot, tmp_path):
    saved = accept_two_images(window, qtbot)
    dialog = open_dialog(window, qtbot)
    assert [dialog.format.itemData(i) for i in range(dialog.format.count())] == list(export.FORMATS)
    dialog.set_format("index")
    dialog.output.setText(str(tmp_path / "out"))
    with qtbot.waitSignal(dialog.runner.finished, timeout=TIMEOUT):
        dialog.export_button.click()
    assert sorted(p.name for p in dialog.written) == ["img0.png", "img1.png"]
    for stem, labels in saved.items():
        np.testing.assert_array_equal(load_mask(tmp_path / "out" / f"{stem}.png"), labels)
    assert dialog.progress.value() == dialog.progress.maximum() == 2
    assert "Wrote 2 file(s)" in dialog.status.text()
    dialog.close()


def test_coco_export_leaves_the_background_out(window, qtbot, tmp_path):
    accept_two_images(window, qtbot)
    dialog = open_dialog(window, qtbot)
    dialog.set_format("coco")
    assert dialog.background.isEnabled() and not dialog.tolerance.isEnabled()
    dialog.output.setText(str(tmp_path / "coco"))
    with qtbot.waitSignal(dialog.runner.finished, timeout=TIMEOUT):
        dialog.export_button.click()
    data = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    assert [c["name"] for c in data["categories"]] == ["disc"]
    assert {im["file_name"] for im in data["images"]} == {"img0.png", "img1.png"}
    assert all(a["category_id"] == 1 for a in data["annotations"]) and data["annotations"]
    dialog.close()


def test_export_errors_arrive_as_readable_messages(window, qtbot, tmp_path):
    dialog = open_dialog(window, qtbot)
    dialog.export_button.click()
    assert "Nothing is saved" in dialog.status.text() and not dialog.runner.busy
    dialog.close()
    accept_two_images(window, qtbot)
    dialog = open_dialog(window, qtbot)
    blocker = tmp_path / "a file"
    blocker.write_text("in the way")
    dialog.output.setText(str(blocker))
    dialog.export_button.click()
    assert "is a file; choose a folder" in dialog.status.text() and not dialog.runner.busy
    dialog.output.setText(str(blocker / "inside"))  # passes the dialog's check, fails in the worker
    with qtbot.waitSignal(dialog.runner.failed, timeout=TIMEOUT):
        dialog.export_button.click()
    text = dialog.status.text()
    assert text.startswith("Export failed: ") and "a file" in text and "Errno" not in text, text
    assert dialog.export_button.isEnabled() and not dialog.cancel_button.isEnabled()
    dialog.close()


def test_cancelling_stops_between_masks(window, qtbot, tmp_path, monkeypatch):
    accept_two_images(window, qtbot)
    dialog = open_dialog(window, qtbot)
    original = export.export_masks

    def cancel_after_first(*args, on_item, **kwargs):
        def item(done, total, stem):
            dialog.runner.cancel()  # as if the user pressed Cancel while the first mask was written
            on_item(done, total, stem)

        return original(*args, on_item=item, **kwargs)

    monkeypatch.setattr(export, "export_masks", cancel_after_first)
    dialog.output.setText(str(tmp_path / "out"))
    with qtbot.waitSignal(dialog.runner.cancelled, timeout=TIMEOUT):
        dialog.export_button.click()
    assert "cancelled" in dialog.status.text() and len(list((tmp_path / "out").iterdir())) == 1
    dialog.close()


def test_export_counts_the_images_it_would_skip_and_can_refine_them_in_19(window, qtbot, tmp_path):
    window.qactions["accept"].trigger()  # img0 saved; img1 and img2 never edited
    dialog = open_dialog(window, qtbot)
    assert [e.stem for e in dialog.skipped] == ["img1", "img2"] and not dialog.sourceless
    assert "1 of 3 image(s) have a saved mask" in dialog.status.text() and "2 would be skipped" in dialog.status.text()
    assert dialog.include.isEnabled() and "2 image(s)" in dialog.include.text()
    assert dialog.tolerance.value() == 1.0
    dialog.set_format("index")
    dialog.output.setText(str(tmp_path / "without"))
    with qtbot.waitSignal(dialog.runner.finished, timeout=TIMEOUT):
        dialog.export_button.click()
    assert [p.name for p in dialog.written] == ["img0.png"] and "2 image(s) without a saved mask skipped" in \
        dialog.status.text()
    dialog.include.setChecked(True)
    dialog.output.setText(str(tmp_path / "with"))
    with qtbot.waitSignal(dialog.runner.finished, timeout=TIMEOUT):
        dialog.export_button.click()
    assert sorted(p.name for p in dialog.written) == ["img0.png", "img1.png", "img2.png"]
    assert not dialog.skipped and "skipped" not in dialog.status.text()
    refined = load_mask(tmp_path / "with" / "img2.png")
    assert refined.shape == (64, 80) and set(np.unique(refined)) <= {0, 1}
    dialog.close()
