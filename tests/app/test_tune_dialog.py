"""The Fine-tune dialog: labelled images, live curves, cancel, and applying the result to the refiner panel."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PySide6.QtCore import Qt

from app.tuning import TuneSettings, labelled, run_tuning
from app.window import MainWindow
from crfcore import params as P
from tests.app.conftest import TUNE_TIMEOUT as TIMEOUT


@pytest.fixture
def labelled_window(qtbot, tmp_path, folder_factory):
    """The window on 3 images with ground truth (img0..img2_gt.png), its first refinement done."""
    win = MainWindow(device="cpu")
    qtbot.addWidget(win)
    win.show()
    with qtbot.waitSignal(win.scheduler.finished, timeout=TIMEOUT):
        assert win.open_folder(folder_factory(tmp_path / "labelled", truth_for=(0, 1, 2)))
    win.document.set_method("convcrf")
    qtbot.waitUntil(lambda: not win.scheduler.busy and not win.scheduler.pending, timeout=TIMEOUT)
    yield win
    win.scheduler.shutdown()


def open_dialog(window, qtbot, *, steps: int):
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=TIMEOUT)
    qtbot.keyClick(window, Qt.Key.Key_T, Qt.KeyboardModifier.ControlModifier)
    dialog = window.tune_dialog
    dialog.steps.setValue(steps)
    dialog.crop.setValue(32)
    return dialog


def test_tuning_draws_live_curves_and_applies_the_result(labelled_window, qtbot):
    window = labelled_window
    dialog = open_dialog(window, qtbot, steps=3)
    assert dialog.images.count() == 3 and len(dialog.chosen()) == 3
    for row in (0, 1):
        dialog.images.item(row).setCheckState(Qt.CheckState.Unchecked)
    assert not dialog.start_button.isEnabled()  # one ticked image cannot be split into training and validation
    for row in (0, 1):
        dialog.images.item(row).setCheckState(Qt.CheckState.Checked)
    assert dialog.start_button.isEnabled()
    dialog.learn_compat.setChecked(True)
    steps = []
    dialog.runner.progress.connect(lambda value: steps.append(value[0]))
    with qtbot.waitSignal(dialog.runner.finished, timeout=TIMEOUT) as finished:
        dialog.start_button.click()
        assert not dialog.start_button.isEnabled() and dialog.cancel_button.isEnabled()
    result = finished.args[0]
    assert steps == [1, 2, 3] and result.steps == 3
    xs, ys = dialog.curves["train_loss"].getData()
    assert list(xs) == [1, 2, 3] and all(math.isfinite(y) for y in ys)
    val_steps, _ = dialog.curves["val_miou"].getData()
    assert list(val_steps) == [0, 3]  # before training, and the validation after the last step
    assert "Validation mIoU" in dialog.status.text() and dialog.apply_button.isEnabled()
    with qtbot.waitSignal(window.scheduler.finished, timeout=TIMEOUT):
        dialog.apply_button.click()  # the panel's preset changes and the image is refined with it
    assert window.document.params("convcrf") == result.params
    assert window.panel.source.text().startswith("Values: fine-tuned on 3 images")
    assert len(result.params.compat) == 2  # the learned 2×2 compatibility came along
    control = window.panel.forms["convcrf"].controls["compat"]
    assert control.combo.currentText() == "2×2 matrix (from preset)"
    dialog.close()


def test_cancel_stops_tuning_and_applies_nothing(labelled_window, qtbot):
    window = labelled_window
    before = window.document.params("convcrf")
    dialog = open_dialog(window, qtbot, steps=5000)
    with qtbot.waitSignal(dialog.runner.progress, timeout=TIMEOUT):
        dialog.start_button.click()
    with qtbot.waitSignal(dialog.runner.cancelled, timeout=TIMEOUT):
        dialog.cancel_button.click()
    assert "Cancelled" in dialog.status.text() and not dialog.apply_button.isEnabled()
    assert dialog.start_button.isEnabled() and window.document.params("convcrf") == before
    assert dialog.progress.value() < 50
    dialog.close()


def test_too_few_labelled_images_are_explained(window, qtbot):
    dialog = open_dialog(window, qtbot, steps=1)
    assert dialog.images.count() == 0 and "needs at least 2" in dialog.status.text()
    assert not dialog.start_button.isEnabled() and "at least 2" in dialog.start_button.toolTip()
    with qtbot.waitSignal(dialog.runner.failed, timeout=TIMEOUT):
        dialog.start()  # the worker refuses too
    assert dialog.status.text().startswith("Fine-tuning failed: fine-tuning needs at least 2 labelled images")
    dialog.close()


def test_run_tuning_refuses_compat_learning_for_the_gaussian_crf(tmp_path, folder_factory):
    from app.folder import scan_folder

    entries = labelled(scan_folder(folder_factory(tmp_path / "f", truth_for=(0, 1))).entries)
    assert [e.stem for e in entries] == ["img0", "img1"]
    settings = TuneSettings("gaussian", P.GaussianCRFParams(), 2, steps=1, learn_compat=True)
    with pytest.raises(ValueError, match="'gaussian' has no compatibility to learn"):
        run_tuning(entries, settings)


def test_a_coarse_mask_trains_on_refine_masks_unary(folder_factory, tmp_path):
    import crfcore
    from app.folder import scan_folder
    from app.tuning import _unary_fn
    from crfcore.mask_refine import rough_mask

    entry = labelled(scan_folder(folder_factory(tmp_path / "f", truth_for=(0, 1))).entries)[0]
    assert entry.probs is None and entry.mask is not None
    settings = P.UnaryParams(confidence=0.8)
    image = crfcore.io.load_image(entry.image)
    got = _unary_fn({entry.stem: entry}, settings, 3.0)(entry.image, image, 2)
    want = rough_mask(image, crfcore.io.load_mask(entry.mask), num_classes=2, void=entry.void, device="cpu",
                      roughness=3.0, settings=settings).unary().numpy()
    np.testing.assert_array_equal(got, want)


def test_tuning_makes_mask_unaries_as_the_window_does(labelled_window, qtbot):
    window = labelled_window
    window.document.set_mask_confidence(0.8)
    window.document.set_roughness(3.0)
    dialog = open_dialog(window, qtbot, steps=1)
    settings = dialog.settings()
    assert (settings.unary.confidence, settings.roughness) == (0.8, 3.0)
    dialog.close()
    qtbot.waitUntil(lambda: not window.scheduler.busy and not window.scheduler.pending, timeout=TIMEOUT)


def test_tuning_on_polygons_shows_unary_before_and_tuned_and_saves_the_unary_settings(labelled_window, qtbot,
                                                                                     tmp_path):
    import json
    import re

    import crfcore

    window = labelled_window
    dialog = open_dialog(window, qtbot, steps=2)
    assert not dialog.tolerance.isEnabled() and not dialog.strokes.isEnabled()  # the folder's unaries by default
    dialog.protocol.setCurrentIndex(dialog.protocol.findData("polygon"))
    assert dialog.tolerance.isEnabled() and not dialog.strokes.isEnabled()
    dialog.tolerance.setValue(6.0)
    recipe = dialog.recipe()
    assert (recipe.protocol, recipe.tolerance) == ("polygon", 6.0)
    with qtbot.waitSignal(dialog.runner.finished, timeout=3 * TIMEOUT) as finished:
        dialog.start_button.click()
    result = finished.args[0]
    assert result.kind == "rough_annotation" and result.unary is not None
    text = dialog.status.text()
    figures = re.search(r"unary ([\d.]+), before ([\d.]+), tuned ([\d.]+)", text)
    assert figures, text
    unary, before, tuned = map(float, figures.groups())
    assert tuned >= unary and tuned >= before
    assert (unary, before, tuned) == tuple(round(v, 1) for v in (result.val_unary_miou, result.val_initial_miou,
                                                                 result.val_miou))
    assert dialog.save_button.isEnabled()
    dialog.save_preset(tmp_path / "tuned.json")
    written = json.loads((tmp_path / "tuned.json").read_text())
    assert written["kind"] == "rough_annotation"
    assert written["unary"]["confidence"] == result.unary.confidence
    _, settings = crfcore.mask_refine.resolve_settings("convcrf", tmp_path / "tuned.json", "rough_annotation")
    assert settings == result.unary
    dialog.apply_button.click()  # the learned unary settings shape the window's mask unaries from now on
    assert window.document.unary_settings == result.unary
    assert "unary settings" in dialog.status.text()
    dialog.close()
    qtbot.waitUntil(lambda: not window.scheduler.busy and not window.scheduler.pending, timeout=TIMEOUT)


def test_piecewise_tunes_on_polygons_in_the_dialog_and_applies_potentials_and_unary_18(labelled_window, qtbot):
    import re

    window = labelled_window
    window.document.set_method("piecewise")
    qtbot.waitUntil(lambda: not window.scheduler.busy and not window.scheduler.pending, timeout=TIMEOUT)
    dialog = open_dialog(window, qtbot, steps=2)
    assert dialog.method == "piecewise"
    dialog.protocol.setCurrentIndex(dialog.protocol.findData("polygon"))
    dialog.tolerance.setValue(6.0)
    totals = []
    dialog.runner.progress.connect(lambda value: totals.append(value[1]))
    with qtbot.waitSignal(dialog.runner.finished, timeout=3 * TIMEOUT) as finished:
        dialog.start_button.click()
        assert not dialog.start_button.isEnabled() and dialog.cancel_button.isEnabled()  # runs on the worker
    result = finished.args[0]
    assert (result.method, result.kind) == ("piecewise", "rough_annotation") and result.unary is not None
    assert set(totals) == {2 + 2 * 3}  # 2 piecewise steps, then 2 unary steps at each of the 3 roughness scales
    figures = re.search(r"unary ([\d.]+), before ([\d.]+), tuned ([\d.]+)", dialog.status.text())
    assert figures, dialog.status.text()
    unary, before, tuned = map(float, figures.groups())
    assert tuned >= unary and tuned >= before
    dialog.apply_button.click()
    assert window.document.params("piecewise") == result.params
    assert window.document.unary_settings == result.unary
    dialog.close()
    qtbot.waitUntil(lambda: not window.scheduler.busy and not window.scheduler.pending, timeout=TIMEOUT)
