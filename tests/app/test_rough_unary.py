"""Issue 18 in the app: a mask's and strokes' unary is ``crfcore.refine_mask``'s, made on the worker and cached."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import crfcore
from app.compute import Refiners, RefineJob, RoughInput, compute
from app.document import available_methods
from app.window import MainWindow
from crfcore import params as P
from crfcore.io import load_image, load_mask
from tests.app.conftest import TIMEOUT, make_pair


def _idle(window, qtbot) -> None:
    qtbot.waitUntil(lambda: not window.scheduler.busy and not window.scheduler.pending, timeout=TIMEOUT)


@pytest.mark.parametrize("method", [m for m in ("convcrf", "densecrf", "piecewise") if m in available_methods()])
def test_the_windows_mask_refinement_is_refine_mask_bit_for_bit(qtbot, sample_folder, method):
    win = MainWindow(device="cpu")
    qtbot.addWidget(win)
    win.show()
    with qtbot.waitSignal(win.scheduler.finished, timeout=TIMEOUT):
        assert win.open_folder(sample_folder)
    _idle(win, qtbot)
    if win.document.method != method:
        with qtbot.waitSignal(win.scheduler.finished, timeout=TIMEOUT):
            win.document.set_method(method)
        _idle(win, qtbot)
    doc = win.document
    assert doc.result_is_current and doc.unary_kind == "mask" and doc.roughness is None
    image, mask = load_image(sample_folder / "img0.png"), load_mask(sample_folder / "img0_mask.png")
    # params=None: the shipped rough_annotation preset of `method` and its unary settings, as the window chose them
    expected = crfcore.refine_mask(image, mask.astype(np.int64), num_classes=2, method=method, device="cpu")
    assert expected.timing["rounds"] == 1
    np.testing.assert_array_equal(doc.result.labels, expected.labels)
    np.testing.assert_array_equal(doc.result.probs, expected.probs)
    assert doc.result.timing["roughness_px"] == expected.timing["roughness_px"]
    win.scheduler.shutdown()


def test_strokes_alone_in_the_window_are_refine_mask_with_no_mask(qtbot, tmp_path, folder_factory):
    folder = folder_factory(tmp_path / "bare", count=1)
    (folder / "img0_mask.png").unlink()
    win = MainWindow(device="cpu")
    qtbot.addWidget(win)
    win.show()
    assert win.open_folder(folder)
    doc = win.document
    assert doc.unary_kind == "strokes" and doc.result is None
    for label, (rows, cols) in ((1, np.mgrid[28:36, 36:44]), (0, np.mgrid[2:6, 2:78]), (0, np.mgrid[58:62, 2:78])):
        doc.begin_edit("brush")
        doc.paint(rows.ravel(), cols.ravel(), label)
        doc.end_edit()
    qtbot.waitUntil(lambda: doc.result_is_current, timeout=TIMEOUT)
    _idle(win, qtbot)
    strokes = doc.scribbles.astype(np.int64)
    expected = crfcore.refine_mask(doc.image, None, num_classes=2, method=doc.method, strokes=strokes, device="cpu")
    np.testing.assert_array_equal(doc.result.labels, expected.labels)  # the scribbles presets, as params=None
    np.testing.assert_array_equal(doc.result.probs, expected.probs)
    _, _, truth = make_pair(0)
    assert (doc.labels == truth).mean() > 0.9
    win.scheduler.shutdown()


def _job(image: np.ndarray, mask: np.ndarray, **changes) -> RefineJob:
    rough = RoughInput(mask, 2, changes.pop("roughness", "auto"), changes.pop("settings", P.UnaryParams()))
    return RefineJob(image=image, unary=None, method="convcrf", params=P.ConvCRFParams(iterations=2),
                     image_key="img", rough=rough, **changes)


def test_the_worker_caches_the_unary_until_its_inputs_change():
    image, mask, _ = make_pair(1)
    mask = mask.astype(np.int64)
    refiners = Refiners()
    first = compute(_job(image, mask), refiners=refiners, device="cpu")
    assert first.timing["unary_ms"] > 0 and first.timing["roughness_px"] > 0
    again = compute(_job(image, mask.copy(), preview=True), refiners=refiners, device="cpu")  # same contents
    assert again.timing["unary_ms"] == 0.0  # a slider drag's preview: no new colour models
    strokes = np.full(mask.shape, -1, np.int16)
    strokes[30:34, 38:42] = 0
    for changed in (_job(image, mask, scribbles=strokes), _job(image, mask, roughness=12.0),
                    _job(image, mask, settings=P.UnaryParams(colour_weight=2.0)), _job(image, 1 - mask)):
        assert compute(changed, refiners=refiners, device="cpu").timing["unary_ms"] > 0  # remade
    refiners.clear()
    assert compute(_job(image, mask), refiners=refiners, device="cpu").timing["unary_ms"] > 0


def test_a_job_takes_a_unary_or_a_rough_input_not_both():
    image, mask, _ = make_pair(0)
    with pytest.raises(ValueError, match="exactly one of unary"):
        RefineJob(image=image, unary=None, method="convcrf", params=P.ConvCRFParams(), image_key="x")
    with pytest.raises(ValueError, match="exactly one of unary"):
        RefineJob(image=image, unary=np.full((2, *mask.shape), 0.5, np.float32), method="convcrf",
                  params=P.ConvCRFParams(), image_key="x", rough=RoughInput(mask.astype(np.int64), 2))


def test_unary_settings_from_the_window_reach_the_refinement(window, qtbot):
    doc = window.document
    settings = dataclasses.replace(doc.unary_settings, colour_weight=3.0, confidence=0.8)
    with qtbot.waitSignal(window.scheduler.finished, timeout=TIMEOUT):
        doc.set_unary_settings(settings)
    _idle(window, qtbot)
    expected = crfcore.refine_mask(doc.image, doc.mask, num_classes=2, method=doc.method, params=doc.params(),
                                   device="cpu", **dataclasses.asdict(settings))
    np.testing.assert_array_equal(doc.result.labels, expected.labels)
    assert window.unary_picker.confidence.value() == pytest.approx(0.8)


def test_the_confidence_box_sets_the_unary_settings_confidence(window, qtbot):
    doc, box = window.document, window.unary_picker.confidence
    with qtbot.waitSignal(window.scheduler.finished, timeout=TIMEOUT):
        box.setValue(0.75)
    assert doc.mask_confidence == 0.75 and doc.job().rough.settings.confidence == 0.75
    _idle(window, qtbot)


def test_export_refines_an_unsaved_mask_as_refine_mask(sample_folder):
    from app.exporting import RefineSettings, refine_entry
    from app.folder import scan_folder

    entry = scan_folder(sample_folder).entries[0]
    settings = RefineSettings("convcrf", P.ConvCRFParams(iterations=3), P.UnaryParams(colour_weight=1.5), 4.0,
                              ("background", "disc"), "cpu")
    expected = crfcore.refine_mask(load_image(entry.image), load_mask(entry.mask).astype(np.int64), num_classes=2,
                                   method="convcrf", params=settings.params, roughness=4.0, device="cpu",
                                   **dataclasses.asdict(settings.unary))
    np.testing.assert_array_equal(refine_entry(entry, settings), expected.labels)
