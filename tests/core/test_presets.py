"""Shipped presets per unary kind: files, API, validation, and what the rough_annotation preset promises."""

from __future__ import annotations

import json

import numpy as np
import pytest

import crfcore
from crfcore import params as P
from crfcore import presets
from crfcore.unary import from_labels, from_scribbles


def _shipped() -> list[tuple[str, str]]:
    return [(kind, method) for kind in presets.names() for method in presets.methods(kind)]


def test_every_kind_has_a_convcrf_preset_and_only_registered_methods_have_presets() -> None:
    assert presets.names() == ["network_output", "rough_annotation", "scribbles"]
    for kind in presets.names():
        assert "convcrf" in presets.methods(kind)
        assert set(presets.methods(kind)) <= set(crfcore.refiners.names())


@pytest.mark.parametrize(("kind", "method"), _shipped())
def test_shipped_presets_load_everywhere_a_preset_is_accepted(kind: str, method: str) -> None:
    file = presets.path(kind, method)
    assert P.load_preset(file) == (method, presets.load(kind, method))
    found = presets.get(kind, method)
    assert (found.kind, found.method) == (kind, method) and found.description
    data = json.loads(file.read_text(encoding="utf-8"))
    assert data["tuning"]
    defaults = P.to_dict(P.params_for(method)())
    assert all(defaults[k] != v for k, v in data["params"].items()), "list only what differs from the defaults"


def test_network_output_is_the_classic_defaults() -> None:
    for method in presets.methods("network_output"):
        if method == "piecewise":  # untrained piecewise is ConvCRF: it takes ConvCRF's classic window
            classic = P.to_dict(P.ConvCRFParams())
            assert all(v == classic[k] for k, v in P.to_dict(presets.load("network_output", method)).items()
                       if k in classic)
        else:
            assert presets.load("network_output", method) == P.params_for(method)()
        assert presets.get("network_output", method).confidence is None


def test_rough_annotation_is_gentler_than_network_output_and_carries_its_unary_settings() -> None:
    for method in presets.methods("rough_annotation"):
        rough, classic = presets.load("rough_annotation", method), presets.load("network_output", method)
        assert rough.w_appearance < classic.w_appearance and rough.theta_alpha < classic.theta_alpha
        assert rough.w_smoothness <= classic.w_smoothness
        assert 0.5 < presets.get("rough_annotation", method).confidence <= 1.0
        appearance = presets.get("rough_annotation", method).appearance
        assert appearance.confidence == presets.get("rough_annotation", method).confidence
        assert appearance.calibrate
    assert presets.get("rough_annotation", "convcrf").band is None  # refine_mask's colour-model zone replaced it
    assert presets.get("scribbles", "convcrf").confidence is None


def test_rough_annotation_keeps_a_perfect_mask_and_moves_a_shifted_edge_towards_the_colour_edge() -> None:
    h, w = 40, 48
    gt = np.zeros((h, w), np.int64)
    gt[:, 20:] = 1
    image = np.where(gt[..., None] == 1, [200, 60, 40], [40, 90, 200]).astype(np.uint8)
    # scale=1.0: the preset's pixel values on this 48-px image, as on the 500-px images it was tuned for
    kept = crfcore.refine_mask(image, gt, method="convcrf", scale=1.0).labels
    np.testing.assert_array_equal(kept, gt)
    shifted = np.roll(gt, 3, axis=1)
    shifted[:, :3] = 0
    moved = crfcore.refine_mask(image, shifted, method="convcrf", scale=1.0).labels
    assert (moved == gt).mean() > (shifted == gt).mean()


def test_scribbles_preset_spreads_strokes_further_than_the_defaults() -> None:
    h, w = 48, 64
    gt = np.zeros((h, w), np.int64)
    gt[:, 32:] = 1
    image = np.where(gt[..., None] == 1, [200, 60, 40], [40, 90, 200]).astype(np.uint8)
    strokes = np.full((h, w), -1, np.int64)
    strokes[20:28, 2:4] = 0
    strokes[20:28, 60:62] = 1
    unary = from_scribbles(strokes, 2)
    spread = crfcore.refine(image, unary, params=presets.load("scribbles"), scale=1.0).labels  # pixels as tuned
    classic = crfcore.refine(image, unary, params=presets.load("network_output"), scale=1.0).labels
    assert (spread == gt).mean() >= (classic == gt).mean() and (spread == gt).mean() > 0.95


@pytest.mark.parametrize(("source", "kind"), [("probabilities", "network_output"), ("logits", "network_output"),
                                              ("backbone", "network_output"), ("mask", "rough_annotation"),
                                              ("polygons", "rough_annotation"), ("scribbles", "scribbles")])
def test_for_unary_source_maps_each_source_to_a_kind(source: str, kind: str) -> None:
    assert presets.for_unary_source(source) == kind


def test_unknown_names_raise_listing_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="'brush' is not a unary source. Valid sources are 'probabilities'"):
        presets.for_unary_source("brush")
    with pytest.raises(ValueError, match="'noisy' is not a preset kind. Valid kinds are 'network_output'"):
        presets.load("noisy")
    with pytest.raises(ValueError, match="no 'scribbles' preset for method 'gaussian'; presets of that kind "
                                         "exist for 'convcrf'"):
        presets.load("scribbles", "gaussian")


def _write(tmp_path, **extra) -> str:
    file = tmp_path / "p.json"
    file.write_text(json.dumps({"method": "convcrf", "params": {"iterations": 2}, **extra}))
    return str(file)


def test_read_accepts_a_plain_preset_and_validates_the_extra_entries(tmp_path) -> None:
    plain = presets.read(_write(tmp_path))
    assert plain == presets.Preset("convcrf", P.with_overrides(P.ConvCRFParams(), iterations=2))
    assert presets.read(_write(tmp_path, unary={"confidence": 0.8}, kind="scribbles")).confidence == 0.8
    with pytest.raises(ValueError, match=r"unary confidence must be a number in \(0.5, 1\].*got 1.5"):
        presets.read(_write(tmp_path, unary={"confidence": 1.5}))
    banded = presets.read(_write(tmp_path, unary={"confidence": 0.8, "band": 3}))
    assert (banded.unary, banded.confidence, banded.band) == ({"confidence": 0.8, "band": 3.0}, 0.8, 3.0)
    for bad in (0, -2, "4", True, float("inf")):
        with pytest.raises(ValueError, match=r"p.json: unary band must be a finite number of pixels > 0"):
            presets.read(_write(tmp_path, unary={"band": bad}))
    with pytest.raises(ValueError, match="unknown unary setting\\(s\\) 'temperature'"):
        presets.read(_write(tmp_path, unary={"temperature": 2}))
    with pytest.raises(ValueError, match="kind 'noisy' is not one of"):
        presets.read(_write(tmp_path, kind="noisy"))
    with pytest.raises(ValueError, match="iterations=-1 is out of range"):
        presets.read(_write(tmp_path, params={"iterations": -1}))


def test_refine_cli_makes_a_mask_unary_with_the_presets_unary_settings_unless_flags_override(tmp_path,
                                                                                           monkeypatch) -> None:
    import crfcore.unary_io as U
    from crfcore import io
    from crfcore.cli import main

    made = []

    def spy(path, **kwargs):
        made.append(real(path, **kwargs))
        return made[-1]

    real = U.load_unary
    monkeypatch.setattr(U, "load_unary", spy)
    mask = np.zeros((16, 20), np.int64)
    mask[:, 9:] = 1
    io.save_image(tmp_path / "img.png", np.full((16, 20, 3), 128, np.uint8))
    io.save_mask(tmp_path / "mask.png", mask)
    preset = _write(tmp_path, unary={"confidence": 0.8, "band": 3})
    args = ["refine", str(tmp_path / "img.png"), str(tmp_path / "mask.png"), "-o", str(tmp_path / "out.png"),
            "--num-classes", "2", "--preset", preset]
    assert main([*args, "--scale", "1.0"]) == 0
    assert main([*args, "--scale", "1.0", "--band", "1.5", "--confidence", "0.9"]) == 0
    assert main(args) == 0  # scale auto: the band is given at a 500-px long side, this image's is 20 px
    np.testing.assert_array_equal(made[0], from_labels(mask, 2, confidence=0.8, band=3.0))
    np.testing.assert_array_equal(made[1], from_labels(mask, 2, confidence=0.9, band=1.5))
    np.testing.assert_array_equal(made[2], from_labels(mask, 2, confidence=0.8, band=1.0))  # 3·20/500, ≥ 1 px


def test_the_registry_says_which_methods_ship_presets():
    shipped = {m for kind in presets.names() for m in presets.methods(kind)}
    assert {m for m, entry in crfcore.refiners.REGISTRY.items() if entry.has_presets} == shipped
    for without in (m for m, entry in crfcore.refiners.REGISTRY.items() if not entry.has_presets):
        with pytest.raises(ValueError, match=f"'{without}' ships no presets at all: tune one"):
            presets.path("rough_annotation", without)
    with pytest.raises(ValueError, match="'crfasrnn' is not a valid method"):
        presets.path("rough_annotation", "crfasrnn")
