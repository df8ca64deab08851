"""ImageDocument: unaries from masks and probability maps, validated setters, signals."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import crfcore
import crfcore.presets
from app.compute import RefineResult
from app.document import ImageDocument, available_methods
from app.folder import scan_folder
from crfcore import params as P
from crfcore.io import load_mask, save_mask


@pytest.fixture
def folder(sample_folder):
    return scan_folder(sample_folder)


def test_a_mask_becomes_probabilities_with_the_mask_confidence(folder):
    doc = ImageDocument.open(folder.entries[0])
    mask = load_mask(folder.entries[0].mask)
    expected = crfcore.unary.from_labels(mask, 2, confidence=crfcore.unary.DEFAULT_CONFIDENCE)
    assert doc.unary_kind == "mask" and doc.num_classes == 2
    np.testing.assert_allclose(doc.unary, expected)
    np.testing.assert_array_equal(doc.before_labels, mask)
    assert doc.labels is doc.before_labels  # no result yet


def test_a_probability_map_is_preferred_and_its_argmax_is_the_before_mask(folder):
    doc = ImageDocument.open(folder.entries[1])
    probs = np.load(folder.entries[1].probs)
    assert doc.unary_kind == "probs"
    np.testing.assert_allclose(doc.unary, probs, atol=1e-6)
    np.testing.assert_array_equal(doc.before_labels, probs.argmax(0))


def test_mask_labels_beyond_the_named_classes_are_refused(folder, tmp_path):
    doc = ImageDocument.open(folder.entries[0])
    three = tmp_path / "three.png"
    save_mask(three, np.full((64, 80), 2, dtype=np.uint8))
    with pytest.raises(ValueError, match="holds class 2 but classes.json names 2 classes"):
        doc.set_unary_source("mask", three)
    assert doc.unary_path == folder.entries[0].mask  # unchanged


def test_void_pixels_get_a_uniform_unary(folder, tmp_path):
    doc = ImageDocument.open(folder.entries[0])
    void = tmp_path / "void.png"
    save_mask(void, np.full((64, 80), 255, dtype=np.uint8))
    doc.set_unary_source("mask", void)
    np.testing.assert_allclose(doc.unary, 0.5)


def test_set_param_validates_and_emits_once(folder, qtbot):
    doc = ImageDocument.open(folder.entries[0], method="convcrf")
    seen = []
    doc.param_changed.connect(lambda method, name: seen.append((method, name)))
    doc.set_param("iterations", 9)
    doc.set_param("iterations", 9)
    assert seen == [("convcrf", "iterations")] and doc.params().iterations == 9
    with pytest.raises(ValueError, match="out of range"):
        doc.set_param("iterations", 1000)
    with pytest.raises(ValueError, match="has no parameter 'nonsense'"):
        doc.set_param("nonsense", 1)
    with pytest.raises(ValueError, match="is not an available method"):
        doc.set_method("nope")


def test_mask_confidence_rederives_the_unary_and_clears_the_result(folder, qtbot):
    doc = ImageDocument.open(folder.entries[0])
    doc.set_result(RefineResult(doc.unary.copy(), doc.before_labels.copy()))
    with qtbot.waitSignals([doc.result_changed, doc.unary_changed]):
        doc.set_mask_confidence(0.9)
    assert doc.result is None and doc.unary.max() == pytest.approx(0.9)
    with pytest.raises(ValueError, match=r"mask_confidence must be in \(0.5, 1\]"):
        doc.set_mask_confidence(0.4)


def test_results_for_another_input_are_refused(folder):
    doc = ImageDocument.open(folder.entries[0])
    with pytest.raises(ValueError, match="the result is for another input"):
        doc.set_result(RefineResult(np.zeros((3, 64, 80), np.float32), np.zeros((64, 80), np.int64)))


def test_presets_replace_a_whole_parameter_set(folder, qtbot):
    doc = ImageDocument.open(folder.entries[0])
    method = available_methods()[0]
    custom = P.with_overrides(P.params_for(method)(), w_smoothness=7.5)
    with qtbot.waitSignal(doc.params_replaced):
        doc.set_params(method, custom)
    assert doc.params(method) == custom
    doc.reset_params(method)
    assert doc.params(method) == P.params_for(method)()
    with pytest.raises(ValueError, match="must be"):
        doc.set_params(method, object())


def test_job_is_none_until_a_unary_is_loaded_or_a_stroke_painted(sample_folder, tmp_path):
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "x.png").write_bytes((sample_folder / "img0.png").read_bytes())
    doc = ImageDocument.open(scan_folder(lonely).entries[0])
    assert doc.unary_kind == "strokes" and doc.preset_kind == "scribbles" and doc.job() is None  # 19
    assert np.allclose(doc.unary, 0.5) and (doc.before_labels == 255).all()
    doc.begin_edit("brush")
    doc.paint(np.array([3]), np.array([4]), 1)
    doc.end_edit()
    assert doc.job().scribbles[3, 4] == 1
    doc.set_unary_source("mask", sample_folder / "img0_mask.png")
    job = doc.job(preview=True)
    assert job.preview and job.unary.shape == (2, 64, 80) and job.method == doc.method


def test_edits_bump_the_version_and_make_the_result_stale(folder, qtbot):
    doc = ImageDocument.open(folder.entries[0])
    job = doc.job()
    doc.set_result(RefineResult(doc.unary.copy(), doc.before_labels.copy(), version=job.version))
    assert doc.result_is_current and job.scribbles is None
    with qtbot.waitSignals([doc.scribbles_changed, doc.edited]):
        doc.begin_edit("brush")
        doc.paint(np.array([0, 0]), np.array([0, 1]), 1)
        assert doc.labels[0, 0] == 1  # shown at once, before the edit ends
        assert doc.end_edit()
    assert doc.version == job.version + 1 and not doc.result_is_current
    assert doc.job().scribbles[0, :3].tolist() == [1, 1, -1]
    with qtbot.waitSignal(doc.edited) as edited:
        assert doc.undo()
    assert edited.args == ["undo"] and doc.labels is doc.result.labels and not doc.undo()


def test_a_unary_with_fewer_classes_than_the_strokes_is_refused(folder, tmp_path):
    three = tmp_path / "three.npy"
    np.save(three, np.full((3, 64, 80), 1 / 3, dtype=np.float32))
    entry = dataclasses.replace(folder.entries[0], class_names=None)
    doc = ImageDocument.open(entry)
    doc.set_unary_source("probs", three)
    doc.begin_edit("brush")
    doc.paint(np.array([3]), np.array([3]), 2)
    doc.end_edit()
    with pytest.raises(ValueError, match="the scribbles use class 2 but the unary has 2 classes"):
        doc.set_unary_source("mask", folder.entries[0].mask)
    assert doc.unary_path == three


def test_a_mask_band_rederives_the_unary_with_uncertain_outlines(folder, qtbot):
    doc = ImageDocument.open(folder.entries[0])
    mask = load_mask(folder.entries[0].mask)
    with qtbot.waitSignal(doc.unary_changed):
        doc.set_mask_unary(0.9, 2.0)
    assert (doc.mask_confidence, doc.mask_band) == (0.9, 2.0)
    factor = crfcore.params.scale_factor(*mask.shape, "auto")  # the band is set at a 500-px long side (issue 20)
    band = crfcore.params.scaled_length(2.0, factor)
    np.testing.assert_allclose(doc.unary, crfcore.unary.from_labels(mask, 2, confidence=0.9, band=band))
    with pytest.raises(ValueError, match="mask band must be a finite number of pixels > 0"):
        doc.set_mask_unary(0.9, -1.0)
    assert doc.mask_band == 2.0  # unchanged by the refused value


def test_the_preset_kind_follows_the_unary_source_and_applies_every_refiners_preset(folder):
    mask_doc, probs_doc = ImageDocument.open(folder.entries[0]), ImageDocument.open(folder.entries[1])
    assert (mask_doc.preset_kind, probs_doc.preset_kind) == ("rough_annotation", "network_output")
    changed = mask_doc.apply_preset("rough_annotation")
    assert changed and set(changed) <= set(crfcore.presets.methods("rough_annotation"))
    for method in crfcore.presets.methods("rough_annotation"):
        assert mask_doc.params(method) == crfcore.presets.load("rough_annotation", method)
    preset = crfcore.presets.get("rough_annotation", mask_doc.method)
    assert (mask_doc.mask_confidence, mask_doc.mask_band) == (preset.confidence, preset.band)
    assert mask_doc.apply_preset("rough_annotation") == []  # already there
    with pytest.raises(ValueError, match="is not a preset kind"):
        mask_doc.apply_preset("neural")
