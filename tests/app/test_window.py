"""The real main window, driven headless: open, switch refiner, drag a slider, cancel, next image, errors, presets."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
from PySide6.QtCore import QElapsedTimer, Qt, QTimer

import app.workers
from app.compute import compute
from app.widgets import files
from app.document import available_methods
from app.folder import scan_folder
from app.tuning import _unary_fn
from app.widgets.canvas import BOUNDARY_OPACITY, HALO, label_boundaries
from app.window import MainWindow
import crfcore
import crfcore.presets
from crfcore import params as P
from crfcore.io import load_image, load_mask, save_mask
from crfcore.mask_refine import rough_mask
from crfcore.project import CATALOG_DIR, Project
from tests.app.conftest import TIMEOUT


def drag(control, value_position: int) -> None:
    """Press a slider, move it to ``value_position`` and keep it held."""
    control.slider.setSliderDown(True)
    control.slider.setValue(value_position)


def test_open_folder_lists_images_and_refines_the_first(window):
    assert [window.image_list.item(i).text() for i in range(window.image_list.count())] == ["img0", "img1", "img2"]
    doc = window.document
    assert doc.entry.stem == "img0" and doc.class_names == ("background", "disc")
    assert doc.result is not None and doc.result.labels.shape == (64, 80)
    assert doc.result.method == available_methods()[0]
    assert "build" in window.timing.text() and window.device_label.text() == "device: cpu"
    assert window.canvas.overlay_item.image.shape == (64, 80)
    assert window.legend.shares()[0].endswith("%")


def test_switching_the_refiner_tab_runs_that_refiner(window, qtbot):
    methods = available_methods()
    if len(methods) < 2:
        pytest.skip(f"only {methods} registered; switching needs two refiners")
    with qtbot.waitSignal(window.scheduler.finished, timeout=TIMEOUT) as finished:
        window.panel.tabs.setCurrentIndex(1)
    assert window.document.method == methods[1]
    assert finished.args[1].method == methods[1]
    assert window.document.result.method == methods[1]


def test_releasing_a_dragged_slider_gives_a_new_full_mask(window, qtbot):
    before = window.document.result
    control = window.panel.forms[window.document.method].controls["w_smoothness"]
    drag(control, control.scale.to_position(60.0))
    assert window.document.params().w_smoothness == pytest.approx(60.0)
    with qtbot.waitSignal(window.scheduler.finished, timeout=TIMEOUT) as finished:
        control.slider.setSliderDown(False)  # emits sliderReleased: the full run starts at once
    result = finished.args[1]
    assert not result.preview and window.document.result is result
    assert not np.allclose(result.probs, before.probs)


def test_dragging_previews_the_first_step_at_once_and_the_latest_after_the_debounce(window, qtbot):
    control = window.panel.forms[window.document.method].controls["w_appearance"]
    with qtbot.waitSignal(window.scheduler.started, timeout=TIMEOUT) as started:
        drag(control, control.scale.to_position(30.0))
    assert started.args[1] is True  # a preview, started without waiting
    drag(control, control.scale.to_position(40.0))
    assert window.scheduler.pending  # the next step waits out the debounce interval
    qtbot.waitUntil(lambda: not window.scheduler.busy and not window.scheduler.pending, timeout=TIMEOUT)
    result = window.document.result
    assert result.preview and result.params.w_appearance == pytest.approx(40.0, rel=0.05)
    control.slider.setSliderDown(False)


def test_cancel_stops_a_long_run_and_keeps_the_previous_mask(window, qtbot, monkeypatch):
    reached = []

    def slow(job, **kwargs):
        progress = kwargs.pop("progress")

        def crawl(done, total):
            time.sleep(0.05)
            reached.append(done)
            progress(done, total)

        return compute(job, progress=crawl, **kwargs)

    monkeypatch.setattr(app.workers, "compute", slow)
    window.document.set_method("convcrf")
    qtbot.waitUntil(lambda: not window.scheduler.busy, timeout=TIMEOUT)
    kept = window.document.result
    window.document.set_param("iterations", 50)
    with qtbot.waitSignal(window.scheduler.progress, timeout=TIMEOUT):
        window.refine_now()
    assert window.cancel_button.isEnabled()
    with qtbot.waitSignal(window.scheduler.cancelled, timeout=TIMEOUT):
        window.qactions["cancel"].trigger()
    qtbot.waitUntil(lambda: not window.scheduler.busy, timeout=TIMEOUT)
    assert max(reached) < 50  # stopped between iterations, counted in iterations rather than wall-clock time
    assert window.document.result is kept
    assert "cancelled" in window.message.text()
    assert not window.cancel_button.isEnabled()


def test_next_and_previous_image_keep_the_refiner_settings(window, qtbot):
    window.choose_preset_kind("rough_annotation")  # a chosen kind stays whatever the unary source
    window.document.set_param("iterations", 3)
    with qtbot.waitSignal(window.scheduler.finished, timeout=TIMEOUT):
        window.qactions["next"].trigger()
    assert window.document.entry.stem == "img1" and window.image_list.currentRow() == 1
    assert window.document.params().iterations == 3
    assert window.document.unary_kind == "probs"  # img1 has a probability map beside it
    assert window.document.result is not None
    with qtbot.waitSignal(window.scheduler.finished, timeout=TIMEOUT):
        window.qactions["previous"].trigger()
    assert window.document.entry.stem == "img0"


def test_presets_follow_the_unary_source_in_auto_mode(window, qtbot):
    doc = window.document
    assert doc.unary_kind == "mask" and window.auto_presets and window.preset_kind == "rough_annotation"
    for method in crfcore.presets.methods("rough_annotation"):
        assert doc.params(method) == crfcore.presets.load("rough_annotation", method)
    preset = crfcore.presets.get("rough_annotation", doc.method)
    assert doc.unary_settings == preset.appearance  # the unary settings the active refiner's preset was tuned with
    assert window.panel.kind_combo.currentIndex() == 0 and "rough annotation" in window.panel.kind_combo.currentText()
    doc.set_param("iterations", 3)  # the user's change is kept for the next mask ...
    with qtbot.waitSignal(window.scheduler.finished, timeout=TIMEOUT):
        window.qactions["next"].trigger()
    doc = window.document
    assert doc.unary_kind == "probs" and window.preset_kind == "network_output"  # ... but a probability map
    assert doc.params("convcrf") == crfcore.presets.load("network_output", "convcrf")  # gets its own kind
    assert "network output" in window.panel.kind_combo.currentText()
    window.choose_preset_kind("scribbles")
    assert not window.auto_presets and doc.params("convcrf") == crfcore.presets.load("scribbles", "convcrf")
    assert window.panel.kind_combo.currentData() == "scribbles"


def test_shortcut_keys_reach_the_actions(window, qtbot):
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=TIMEOUT)
    qtbot.keyClick(window, Qt.Key.Key_O)
    assert not window.canvas.overlay_item.isVisible()
    with qtbot.waitSignal(window.scheduler.finished, timeout=TIMEOUT):
        qtbot.keyClick(window, Qt.Key.Key_PageDown)
    assert window.document.entry.stem == "img1"
    with qtbot.waitSignal(window.scheduler.started, timeout=TIMEOUT):
        qtbot.keyClick(window, Qt.Key.Key_R)


def test_view_options_change_the_overlay(window):
    canvas = window.canvas
    window.qactions["boundary"].setChecked(True)
    shown = canvas.overlay_item.image
    labels = window.document.labels
    edge = label_boundaries(labels)
    assert np.isin(shown[~edge], [255, HALO]).all() and (shown[~edge] == HALO).any()  # a dark ring outside
    assert (shown[edge] == 1).all()  # 2 px: both sides of the disc's outline in its colour, background hidden
    assert canvas.overlay_item.opacity() >= BOUNDARY_OPACITY
    window.qactions["boundary"].setChecked(False)
    window.qactions["before"].setChecked(True)
    assert np.array_equal(canvas.shown_labels(), window.document.before_labels)
    window.opacity.setValue(20)
    assert canvas.overlay_item.opacity() == pytest.approx(0.2)


def test_event_loop_keeps_ticking_during_a_refinement(qtbot, tmp_path, record_property, folder_factory):
    folder = folder_factory(tmp_path / "big", count=1, height=192, width=240)
    win = MainWindow(device="cpu")
    qtbot.addWidget(win)
    with qtbot.waitSignal(win.scheduler.finished, timeout=TIMEOUT):
        win.open_folder(folder)
    win.document.set_param("iterations", 30)
    gaps, clock, ticker = [], QElapsedTimer(), QTimer()
    ticker.setInterval(10)
    ticker.timeout.connect(lambda: (gaps.append(clock.restart())))
    clock.start()
    ticker.start()
    with qtbot.waitSignal(win.scheduler.finished, timeout=TIMEOUT):
        win.refine_now()
    ticker.stop()
    win.scheduler.shutdown()
    record_property("max_event_loop_gap_ms", max(gaps))
    assert len(gaps) >= 3, "the refinement was too short to measure the event loop"
    assert max(gaps) < 250, f"the GUI froze for {max(gaps)} ms during a refinement"


def test_a_failing_refinement_shows_a_message_not_a_traceback(window, qtbot, monkeypatch):
    def broken(job, **kwargs):
        raise RuntimeError("the backend gave up\nTraceback (most recent call last): ...")

    monkeypatch.setattr(app.workers, "compute", broken)
    with qtbot.waitSignal(window.scheduler.failed, timeout=TIMEOUT):
        window.refine_now()
    text = window.message.text()
    assert text == "Refinement failed: RuntimeError: the backend gave up"
    assert "Traceback" not in text


def test_presets_save_reset_and_load(window, qtbot, tmp_path, monkeypatch):
    path = tmp_path / "mine.json"
    monkeypatch.setattr(files, "ask_preset_to_save", lambda *a: path)
    monkeypatch.setattr(files, "ask_preset_to_load", lambda *a: path)
    method = window.document.method
    window.document.set_param("iterations", 7)
    window.panel.save_button.click()
    assert P.load_preset(path) == (method, window.document.params())
    window.panel.reset_button.click()
    assert window.document.params().iterations == P.params_for(method)().iterations
    control = window.panel.forms[method].controls["iterations"]
    assert control.value() == P.params_for(method)().iterations
    window.panel.load_button.click()
    assert window.document.params().iterations == 7 and control.spin.value() == 7
    with qtbot.waitSignal(window.scheduler.finished, timeout=TIMEOUT):
        pass  # the loaded preset is refined after the debounce


def test_a_bad_preset_and_a_missing_folder_are_reported(window, tmp_path, monkeypatch):
    bad = tmp_path / "bad.json"
    bad.write_text('{"method": "convcrf", "params": {"iterations": 999}}')
    monkeypatch.setattr(files, "ask_preset_to_load", lambda *a: bad)
    window.panel.load_button.click()
    assert "iterations=999 is out of range" in window.error_box.text()
    assert not window.open_folder(tmp_path / "nowhere")
    assert "is not a folder" in window.message.text()


def test_choosing_a_unary_of_the_wrong_size_is_refused(window, tmp_path, monkeypatch, folder_factory):
    wrong = folder_factory(tmp_path / "wrong", count=1, height=32, width=40) / "img0_mask.png"
    monkeypatch.setattr(files, "ask_unary_file", lambda *a: wrong)
    kept = window.document.mask
    window.unary_picker.browse_button.click()
    assert "32×40" in window.error_box.text()
    assert window.document.mask is kept


def test_the_roughness_box_shows_the_auto_estimate_and_a_value_remakes_the_unary(window, qtbot):
    picker, doc = window.unary_picker, window.document
    assert picker.roughness.isEnabled() and picker.roughness.value() == 0.0 and doc.roughness is None  # Auto
    estimated = doc.result.timing["roughness_px"]
    factor = P.scale_factor(*doc.image.shape[:2], "auto")
    assert estimated == doc.roughness_px > 0
    assert picker.roughness.text() == f"Auto ({estimated / factor:.1f} px)"  # at the reference size, as θα
    assert picker.roughness_here.text() == f"→ {estimated:.1f} px here"
    auto_labels = doc.result.labels
    with qtbot.waitSignal(window.scheduler.finished, timeout=TIMEOUT):
        picker.roughness.setValue(30.0)
    assert doc.roughness == 30.0 and window.document.result.version == doc.version
    used = P.scaled_length(30.0, factor)
    assert doc.result.timing["roughness_px"] == pytest.approx(used)
    assert picker.roughness_here.text() == f"→ {used:.1f} px here"
    assert not np.array_equal(doc.result.labels, auto_labels)  # a wider doubted zone: another mask
    with qtbot.waitSignal(window.scheduler.finished, timeout=TIMEOUT):
        picker.roughness.setValue(0.0)  # back to Auto
    assert doc.roughness is None and picker.roughness.text().startswith("Auto (")
    np.testing.assert_array_equal(doc.result.labels, auto_labels)
    qtbot.waitUntil(lambda: not window.scheduler.busy and not window.scheduler.pending, timeout=TIMEOUT)


def test_a_failed_open_shows_no_stale_image_and_the_next_stroke_lands_in_the_new_folder_19(window, qtbot, tmp_path,
                                                                                            folder_factory):
    old = window.document
    other = folder_factory(tmp_path / "other", count=2)
    (other / "img0.png").write_bytes(b"not an image")
    with qtbot.waitSignal(window.scheduler.finished, timeout=TIMEOUT):
        assert window.open_folder(other)
    doc = window.document
    assert doc is not old and doc.entry.image == other / "img1.png"
    assert window.image_list.currentRow() == 1 and window.index == 1
    assert np.array_equal(window.canvas.image_item.image, doc.image)
    bad = window.image_list.item(0)
    assert "✕" in bad.text() and "img0" in bad.toolTip() and "image format" in bad.toolTip()
    assert "1 image(s)" in window.error_box.text() and "showing img1" in window.error_box.text()
    rows, cols = np.mgrid[4:8, 4:8]
    doc.begin_edit("brush")
    doc.paint(rows.ravel(), cols.ravel(), 1)
    doc.end_edit()
    assert window.project_sync.root == other
    assert (other / CATALOG_DIR).is_dir()
    with Project.open(other) as project:
        assert [r.path for r in project.images()] == [(other / "img1.png").resolve()]
    assert not any(p.name == CATALOG_DIR for p in (tmp_path / "samples").iterdir())


def test_a_folder_whose_images_all_fail_shows_an_empty_canvas_19(window, tmp_path, folder_factory):
    other = folder_factory(tmp_path / "broken", count=1)
    (other / "img0.png").write_bytes(b"not an image")
    assert window.open_folder(other)
    assert window.document is None and window.canvas.document is None
    assert window.canvas.image_item.image is None
    assert window.legend.names == () and not window.panel.isEnabled()
    assert "no image of this folder could be opened" in window.error_box.text()
    assert window.windowTitle().endswith(str(other))
    window.qactions["refine"].trigger()  # nothing to refine, nothing raised
    window.next_image()
    assert window.document is None


def test_void_from_classes_json_is_unannotated_in_the_unary_the_refinement_and_the_export_19(qtbot, tmp_path,
                                                                                              folder_factory):
    folder = folder_factory(tmp_path / "camvid_like", count=1)
    (folder / "classes.json").write_text(json.dumps({"names": ["background", "disc"], "void": 11}))
    mask = load_mask(folder / "img0_mask.png").astype(np.uint8)
    mask[:, :16] = 11  # a strip nobody annotated
    save_mask(folder / "img0_mask.png", mask)
    win = MainWindow(device="cpu")
    qtbot.addWidget(win)
    win.show()
    with qtbot.waitSignal(win.scheduler.finished, timeout=TIMEOUT):
        assert win.open_folder(folder)
    doc = win.document
    assert doc.void == 11 and doc.num_classes == 2 and doc.class_names == ("background", "disc")
    assert (doc.job().rough.mask[:, :16] == 11).all() and doc.job().rough.void == 11
    expected = crfcore.refine_mask(doc.image, doc.mask, num_classes=2, method=doc.method, params=doc.params(),
                                   void=11, device="cpu", **dataclasses.asdict(doc.unary_settings))
    np.testing.assert_array_equal(doc.result.labels, expected.labels)  # 11 unannotated, as refine_mask(void=11)
    assert set(np.unique(doc.result.labels)) <= {0, 1}  # every pixel refined into a real class
    assert len(win.legend.shares()) == 2
    win.qactions["accept"].trigger()
    win.export_masks()
    dialog = win.export_dialog
    assert dialog.void == 11
    dialog.set_format("coco")
    dialog.output.setText(str(tmp_path / "coco"))
    with qtbot.waitSignal(dialog.runner.finished, timeout=TIMEOUT):
        dialog.start()
    coco = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["disc"]
    win.scheduler.shutdown()


def test_fine_tuning_reads_masks_with_the_folders_void_19(tmp_path, folder_factory):
    folder = folder_factory(tmp_path / "v", count=1)
    (folder / "classes.json").write_text(json.dumps({"names": ["background", "disc"], "void": 11}))
    mask = load_mask(folder / "img0_mask.png").astype(np.uint8)
    mask[:4] = 11
    save_mask(folder / "img0_mask.png", mask)
    entry = scan_folder(folder).entries[0]
    image = load_image(entry.image)
    unary = _unary_fn({"img0": entry}, P.UnaryParams(), None)(entry.image, image, 2)
    assert entry.void == 11  # 11 is unannotated, not a class: refine_mask's unary with void=11
    want = rough_mask(image, mask.astype(np.int64), num_classes=2, void=11, device="cpu").unary().numpy()
    np.testing.assert_array_equal(unary, want)


def test_single_key_shortcuts_work_after_a_spin_box_edit_19(window, qtbot):
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=TIMEOUT)
    first = window.document
    spin = window.panel.forms[first.method].controls["iterations"].spin
    spin.setFocus()
    qtbot.waitUntil(spin.hasFocus, timeout=TIMEOUT)
    spin.selectAll()
    qtbot.keyClicks(spin, "3")
    with qtbot.waitSignal(window.scheduler.finished, timeout=TIMEOUT):
        qtbot.keyClick(spin, Qt.Key.Key_N)  # still in the box: N is no digit, so it goes to "next image"
    assert window.document.entry.stem == "img1" and first.params().iterations == 3  # the typed value counted
    spin.setFocus()
    qtbot.keyClick(spin, Qt.Key.Key_O)
    assert not window.canvas.overlay_item.isVisible()
    qtbot.keyClick(spin, Qt.Key.Key_Return)  # Enter commits and hands the focus back to the canvas
    qtbot.waitUntil(window.canvas.hasFocus, timeout=TIMEOUT)
    spin.setFocus()
    qtbot.keyClick(spin, Qt.Key.Key_Escape)
    assert window.canvas.hasFocus()


def test_the_menu_bar_has_file_edit_view_refine_help_with_shortcuts_shown_19(window, qtbot):
    menus = {a.text().replace("&", ""): [b.text() for b in a.menu().actions() if not b.isSeparator()]
             for a in window.menuBar().actions()}
    assert list(menus) == ["File", "Edit", "View", "Refine", "Help"]
    assert menus["File"] == ["Open folder…", "Export…", "Quit"] and "Undo" in menus["Edit"]
    assert window.qactions["quit"].shortcut().toString() == "Ctrl+Q"
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=TIMEOUT)
    qtbot.keyClick(window, Qt.Key.Key_F1)
    sheet = window.shortcuts_dialog
    assert sheet is not None and sheet.isVisible()
    assert sheet.keys_of("Next") == "PgDown, N" and sheet.keys_of("Quit") == "Ctrl+Q"
    assert sheet.keys_of("Brush") == "D"
    assert sheet.table.item(2, 2).text() == "Next image"  # what each action does
    window.qactions["about"].trigger()
    text = window.about_box.text()
    assert "CRF Studio" in text and "device: cpu" in text and "PyTorch" in text and "Qt " in text
    window.about_box.close()
    sheet.close()


def test_save_preset_starts_in_the_presets_folder_and_keeps_the_unary_settings_19(window, tmp_path, monkeypatch):
    from PySide6.QtCore import QStandardPaths

    QStandardPaths.setTestModeEnabled(True)  # the presets folder under ~/.qttest, not the user's
    try:
        _save_and_load_a_preset(window, tmp_path, monkeypatch)
    finally:
        QStandardPaths.setTestModeEnabled(False)


def _save_and_load_a_preset(window, tmp_path, monkeypatch) -> None:
    asked = []
    path = tmp_path / "mine.json"
    monkeypatch.setattr(files, "ask_preset_to_save", lambda parent, suggested: asked.append(suggested) or path)
    mine = P.UnaryParams(confidence=0.8, colour_weight=2.0, components=3)
    window.document.set_unary_settings(mine)
    window.panel.save_button.click()
    assert asked[0].parent == files.presets_folder() and asked[0].parent.name == "presets"
    preset = crfcore.presets.read(path)
    assert preset.appearance == mine and preset.params == window.document.params()  # the unary settings written
    assert json.loads(path.read_text())["unary"]["colour_weight"] == 2.0
    assert window.panel.source.text() == "Values: saved as mine.json"
    window.document.set_unary_settings(P.UnaryParams(confidence=0.95))
    monkeypatch.setattr(files, "ask_preset_to_load", lambda *a: path)
    window.panel.load_button.click()
    assert window.document.unary_settings == mine
    assert window.panel.source.text() == "Values: loaded from mine.json"
    control = window.panel.forms[window.document.method].controls["iterations"]
    control.spin.setValue(2)
    assert window.panel.source.text() == "Values: loaded from mine.json, edited"
    window.panel.reset_button.click()
    assert window.panel.source.text().startswith("Values: defaults of")
    window.choose_preset_kind("scribbles")
    assert window.panel.source.text() == "Values: the shipped scribbles presets"


def test_the_palette_is_distinct_and_a_datasets_own_when_the_names_match_19():
    from app.palette import CAMVID_NAMES, CAMVID_RGB, class_colors, dataset_of
    from skimage.color import rgb2lab

    from crfcore.io import voc_palette

    lab = rgb2lab(class_colors(12)[None] / 255.0)[0]
    distances = np.linalg.norm(lab[:, None] - lab[None], axis=-1) + np.eye(12) * 1e9
    assert distances.min() > 20  # no two of 12 classes nearly alike (CIELAB ΔE; the old hues had two greens at 8)
    voc = ["background", "aeroplane", "bicycle", "bird"]
    assert dataset_of(voc) == "voc" and np.array_equal(class_colors(4, voc), voc_palette(4))
    camvid = [n.capitalize() for n in CAMVID_NAMES]
    assert np.array_equal(class_colors(11, camvid), np.array(CAMVID_RGB, dtype=np.uint8))
    assert dataset_of(["background", "disc"]) is None


def test_the_slider_panel_keeps_room_for_sliders_at_1280x800_with_12_classes_19(qtbot, tmp_path, folder_factory):
    folder = folder_factory(tmp_path / "twelve", count=1)
    (folder / "classes.json").write_text(json.dumps({"names": [f"class {k}" for k in range(12)]}))
    mask = np.repeat(np.arange(12, dtype=np.uint8), 7)[:80][None].repeat(64, 0)
    save_mask(folder / "img0_mask.png", mask)
    win = MainWindow(device="cpu")
    qtbot.addWidget(win)
    win.resize(1280, 800)
    win.show()
    with qtbot.waitSignal(win.scheduler.finished, timeout=TIMEOUT):
        assert win.open_folder(folder)
    qtbot.wait(50)
    assert len(win.legend.shares()) == 12
    sliders = win.panel.tabs.currentWidget().viewport().height()
    row = win.panel.forms[win.document.method].controls["iterations"].sizeHint().height()
    assert sliders >= 6 * row, (sliders, row)  # at least six slider rows in view
    assert win.legend_scroll.verticalScrollBar().maximum() > 0  # the legend scrolls instead of squeezing them
    win.scheduler.shutdown()


@pytest.mark.parametrize("kind", ["network_output", "rough_annotation"])
def test_piecewise_paints_no_strip_from_the_hair_to_the_top_edge_on_the_astronaut_19(qtbot, kind):
    """Piecewise had no preset of any kind, so the window ran it on its 7×7 default window with the classic weights;
    at the top border that one-sided window let the rough mask's label near the edge take over a strip of sky."""
    from app.main import SAMPLES

    if not (SAMPLES / "astronaut.png").is_file():
        pytest.skip(f"the bundled samples are not in {SAMPLES}")
    win = MainWindow(device="cpu")
    qtbot.addWidget(win)
    win.show()
    with qtbot.waitSignal(win.scheduler.finished, timeout=TIMEOUT):
        assert win.open_folder(SAMPLES)
    qtbot.waitUntil(lambda: not win.scheduler.busy and not win.scheduler.pending, timeout=TIMEOUT)
    assert win.document.entry.stem == "astronaut"
    win.choose_preset_kind(kind)
    with qtbot.waitSignal(win.scheduler.finished, timeout=60_000,
                          check_params_cb=lambda rid, result: result.method == "piecewise" and not result.preview):
        win.document.set_method("piecewise")
    assert win.document.params("piecewise") == crfcore.presets.load(kind, "piecewise")
    sky = win.document.labels[:4, 220:250]  # above the hair: the mask's polygon reaches row 4 here
    assert (sky != 1).all(), int((sky == 1).sum())
    win.scheduler.shutdown()


def test_status_messages_and_timing_are_cleared_on_image_change_19(window, qtbot):
    window.show_status("Refinement failed: something old", error=True)
    assert window.timing.text()
    window.next_image()
    assert "something old" not in window.message.text() and window.message.styleSheet() == ""
    assert window.timing.text() == ""  # until this image's own refinement arrives
    qtbot.waitUntil(lambda: bool(window.timing.text()), timeout=TIMEOUT)
