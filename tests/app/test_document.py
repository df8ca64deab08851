"""ImageDocument: unaries from masks and probability maps, validated setters, signals."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import crfcore
import crfcore.presets
from app.compute import RefineResult, rough_unary
from app.document import ImageDocument, available_methods
from app.folder import scan_folder
from crfcore import params as P
from crfcore.io import load_mask, save_mask
from crfcore.mask_refine import rough_mask


@pytest.fixture
def folder(sample_folder):
    return scan_folder(sample_folder)


def _one_hot(labels: np.ndarray, count: int) -> np.ndarray:
    return crfcore.unary.from_labels(labels, count, confidence=1.0).astype(np.float32)


def test_a_mask_becomes_refine_masks_unary_made_on_the_worker(folder):
    doc = ImageDocument.open(folder.entries[0])
    mask = load_mask(folder.entries[0].mask)
    assert doc.unary_kind == "mask" and doc.num_classes == 2 and doc.has_unary
    assert doc.unary is None  # a mask's unary is crfcore.refine_mask's, made on the worker from the job
    np.testing.assert_array_equal(doc.before_labels, mask)
    np.testing.assert_array_equal(doc.mask, mask)
    job = doc.job()
    assert job.unary is None and job.rough.mask is doc.mask and job.rough.num_classes == 2
    assert job.rough.roughness == "auto" and job.rough.settings == doc.unary_settings and job.rough.void == 255
    unary, roughness = rough_unary(job, "cpu")
    made = rough_mask(doc.image, mask, num_classes=2, device="cpu", settings=doc.unary_settings)
    np.testing.assert_array_equal(unary.numpy(), made.unary().numpy())
    assert roughness == made.roughness > 0
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


def test_void_pixels_stay_unannotated_in_the_rough_input(folder, tmp_path):
    doc = ImageDocument.open(folder.entries[0])
    void = tmp_path / "void.png"
    half = np.full((64, 80), 255, dtype=np.uint8)
    half[:, :40] = 0
    save_mask(void, half)
    doc.set_unary_source("mask", void)
    rough = doc.job().rough
    assert rough.void == 255 and (rough.mask[:, 40:] == 255).all()
    unary, _ = rough_unary(doc.job(), "cpu")
    made = rough_mask(doc.image, half.astype(np.int64), num_classes=2, device="cpu", settings=doc.unary_settings)
    # void: doubted everywhere (the zone) and never a colour model's training pixel, not a class of its own
    assert made.geometry.zone[:, 40:].all() and not made.geometry.confident[:, :, 40:].any()
    np.testing.assert_array_equal(unary.numpy(), made.unary().numpy())


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


def test_mask_confidence_changes_the_unary_settings_and_clears_the_result(folder, qtbot):
    doc = ImageDocument.open(folder.entries[0])
    doc.set_result(RefineResult(_one_hot(doc.before_labels, 2), doc.before_labels.copy()))
    version = doc.version
    with qtbot.waitSignals([doc.result_changed, doc.unary_changed]):
        doc.set_mask_confidence(0.8)
    assert doc.result is None and doc.version == version + 1
    assert doc.mask_confidence == 0.8 and doc.job().rough.settings.confidence == 0.8
    with pytest.raises(ValueError, match="out of range"):
        doc.set_mask_confidence(0.4)
    with pytest.raises(ValueError, match=r"mask confidence must be in \(0.5, 1\]"):
        doc.set_unary_settings(P.UnaryParams(confidence=0.3))
    assert doc.mask_confidence == 0.8


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
    assert doc.unary is None and doc.num_classes == 2 and (doc.before_labels == 255).all()
    doc.begin_edit("brush")
    doc.paint(np.array([3]), np.array([4]), 1)
    doc.end_edit()
    job = doc.job()
    assert job.scribbles[3, 4] == 1 and job.rough.mask is None and job.rough.num_classes == 2  # strokes alone
    doc.set_unary_source("mask", sample_folder / "img0_mask.png")
    job = doc.job(preview=True)
    assert job.preview and job.rough.mask.shape == (64, 80) and job.method == doc.method


def test_edits_bump_the_version_and_make_the_result_stale(folder, qtbot):
    doc = ImageDocument.open(folder.entries[0])
    job = doc.job()
    doc.set_result(RefineResult(_one_hot(doc.before_labels, 2), doc.before_labels.copy(), version=job.version))
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


def test_a_roughness_in_pixels_remakes_the_unary_with_that_zone(folder, qtbot):
    doc = ImageDocument.open(folder.entries[0])
    mask = load_mask(folder.entries[0].mask)
    assert doc.roughness is None and doc.job().rough.roughness == "auto"  # Auto by default
    auto, estimated = rough_unary(doc.job(), "cpu")
    version = doc.version
    with qtbot.waitSignal(doc.unary_changed):
        doc.set_roughness(6.0)
    assert doc.roughness == 6.0 and doc.version == version + 1
    job = doc.job()
    assert job.rough.roughness == 6.0
    unary, used = rough_unary(job, "cpu")
    factor = crfcore.params.scale_factor(*mask.shape, "auto")  # set at a 500-px long side, as θα (issue 20)
    assert used == pytest.approx(crfcore.params.scaled_length(6.0, factor))
    made = rough_mask(doc.image, mask, num_classes=2, roughness=6.0, device="cpu", settings=doc.unary_settings)
    np.testing.assert_array_equal(unary.numpy(), made.unary().numpy())
    assert not np.array_equal(unary.numpy(), auto.numpy())
    for bad in (-1.0, 0.0, float("nan"), "wide"):
        with pytest.raises(ValueError, match="roughness must be a number of pixels > 0"):
            doc.set_roughness(bad)
    assert doc.roughness == 6.0  # unchanged by the refused values
    doc.set_roughness(None)
    assert doc.roughness is None and doc.job().rough.roughness == "auto"


def test_the_preset_kind_follows_the_unary_source_and_applies_every_refiners_preset(folder):
    mask_doc, probs_doc = ImageDocument.open(folder.entries[0]), ImageDocument.open(folder.entries[1])
    assert (mask_doc.preset_kind, probs_doc.preset_kind) == ("rough_annotation", "network_output")
    changed = mask_doc.apply_preset("rough_annotation")
    assert changed and set(changed) <= set(crfcore.presets.methods("rough_annotation"))
    for method in crfcore.presets.methods("rough_annotation"):
        assert mask_doc.params(method) == crfcore.presets.load("rough_annotation", method)
    preset = crfcore.presets.get("rough_annotation", mask_doc.method)
    assert mask_doc.unary_settings == preset.appearance  # the active refiner's preset brings the unary settings
    assert mask_doc.apply_preset("rough_annotation") == []  # already there
    with pytest.raises(ValueError, match="is not a preset kind"):
        mask_doc.apply_preset("neural")
