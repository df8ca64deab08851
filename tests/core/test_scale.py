"""Issue 20: spatial parameters defined at a 500-px long side and scaled to each image (crfcore.params.scaled)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import crfcore
from crfcore import params as P
from crfcore import presets

METHODS = ("convcrf", "densecrf", "gaussian", "piecewise")


def _case(h: int, w: int, c: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A blocky image with matching noisy probabilities (so the CRF has edges to follow)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, c, (h // 8 + 1, w // 8 + 1))
    labels = np.kron(blocks, np.ones((8, 8), np.int64))[:h, :w]
    colours = rng.integers(0, 256, (c, 3))
    image = np.clip(colours[labels] + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    logits = 2.0 * np.eye(c)[labels].transpose(2, 0, 1) + rng.normal(0, 1.5, (c, h, w))
    probs = np.exp(logits) / np.exp(logits).sum(0)
    return image, probs.astype(np.float32)


def _reach(params) -> int:
    return params.filter_size * params.blur


def test_scale_factor_auto_is_long_side_over_500_and_numbers_pass_through() -> None:
    assert P.scale_factor(375, 500, "auto") == 1.0
    assert P.scale_factor(500, 333, "auto") == 1.0
    assert P.scale_factor(750, 1000, "auto") == 2.0
    assert P.scale_factor(9, 9, 1.0) == 1.0 and P.scale_factor(9, 9, 0.25) == 0.25


@pytest.mark.parametrize("bad", ["big", 0, -1.0, math.nan, math.inf, True])
def test_scale_factor_rejects_bad_scale_naming_the_choices(bad) -> None:
    with pytest.raises(ValueError, match="scale must be 'auto' or a"):
        P.scale_factor(100, 100, bad)


@pytest.mark.parametrize("method", METHODS)
def test_scaled_is_the_identity_at_the_reference_size(method: str) -> None:
    params = P.params_for(method)()
    factor = P.scale_factor(333, P.REFERENCE_SIZE, "auto")
    assert P.scaled(params, factor) is params
    odd = dataclasses.replace(params, theta_alpha=37.3, theta_gamma=1.7)
    assert P.scaled(odd, 1.0) == odd


@pytest.mark.parametrize("method", METHODS)
def test_doubling_the_image_doubles_effective_thetas_and_reach(method: str) -> None:
    params = P.params_for(method)()
    at_500 = P.scaled(params, P.scale_factor(375, 500, "auto"))
    at_1000 = P.scaled(params, P.scale_factor(750, 1000, "auto"))
    assert at_1000.theta_alpha == 2 * at_500.theta_alpha
    assert at_1000.theta_gamma == 2 * at_500.theta_gamma
    assert at_1000.theta_beta == at_500.theta_beta and at_1000.w_appearance == at_500.w_appearance
    if hasattr(params, "filter_size"):
        assert _reach(at_1000) == 2 * _reach(at_500)
        assert at_1000.blur == 2 * at_500.blur  # b is scaled first, k keeps its value
        assert at_1000.filter_size == at_500.filter_size


def test_spatial_flags_mark_exactly_the_spatial_parameters() -> None:
    spatial = {(m, s.name): s.spatial for m in P.PARAMS_BY_METHOD for s in P.specs(P.params_for(m)) if s.spatial}
    for method in P.PARAMS_BY_METHOD:
        assert spatial[(method, "theta_alpha")] == spatial[(method, "theta_gamma")] == "length"
        assert (method, "theta_beta") not in spatial and (method, "w_appearance") not in spatial
    for method in ("convcrf", "gaussian", "piecewise"):
        assert (spatial[(method, "blur")], spatial[(method, "filter_size")]) == ("blur", "window")
    assert ("gaussian", "scales") not in spatial


@settings(max_examples=60, deadline=None)
@given(k=st.sampled_from([3, 5, 7, 9, 11, 15, 31]), b=st.integers(1, 8), factor=st.floats(0.05, 16.0))
def test_window_rounding_keeps_k_odd_and_the_reach_within_one_cell(k: int, b: int, factor: float) -> None:
    out = P.scaled(P.ConvCRFParams(filter_size=k, blur=b), factor)
    assert out.blur == max(1, math.floor(b * factor + 0.5))
    assert out.filter_size % 2 == 1 and out.filter_size >= 3
    if out.filter_size > 3:  # not clamped at the smallest window
        assert abs(_reach(out) - k * b * factor) <= out.blur
    assert out.theta_alpha == pytest.approx(80.0 * factor)


def test_scaled_unary_scales_lengths_only() -> None:
    settings_ = {"confidence": 0.9, "band": 4.0, "roughness": "auto"}
    assert P.scaled_unary(settings_, 0.5) == {"confidence": 0.9, "band": 2.0, "roughness": "auto"}
    assert P.scaled_unary({"band": None, "roughness": 4}, 2.0) == {"band": None, "roughness": 8}


def test_lengths_scale_down_to_one_pixel_and_no_further() -> None:
    # the pixel grid cannot resolve less; a value set below 1 px stays as set
    tiny = P.scaled(P.ConvCRFParams(), 0.1)  # a 50-px image
    assert (tiny.theta_alpha, tiny.theta_gamma) == (8.0, 1.0)
    assert P.scaled(P.DenseCRFParams(theta_gamma=0.6), 0.5).theta_gamma == 0.6
    assert P.scaled_unary({"band": 2.0}, 0.25) == {"band": 1.0}
    assert P.scaled_length(0.8, 0.5) == 0.8 and P.scaled_length(3.0, 2.0) == 6.0


def test_refine_at_500px_auto_equals_scale_one_and_reports_it() -> None:
    image, probs = _case(375, 500)
    auto = crfcore.refine(image, probs, method="convcrf", iterations=2)
    ones = crfcore.refine(image, probs, method="convcrf", iterations=2, scale=1.0)
    assert auto.scale == ones.scale == 1.0
    assert np.array_equal(auto.probs, ones.probs)


@pytest.mark.filterwarnings("ignore:G-CRF forward conjugate gradient stopped")
@pytest.mark.parametrize("method", ["convcrf", "densecrf", "gaussian"])
def test_refine_auto_runs_the_scaled_parameters(method: str) -> None:
    # A 1000-px image under "auto" runs exactly as the doubled pixel values under scale=1.0.
    image, probs = _case(40, 1000)
    params = P.params_for(method)(**({"iterations": 1} if method != "gaussian" else {"max_iter": 5}))
    auto = crfcore.refine(image, probs, method=method, params=params)
    assert auto.scale == 2.0
    manual = crfcore.refine(image, probs, method=method, params=P.scaled(params, 2.0), scale=1.0)
    assert np.array_equal(auto.probs, manual.probs)
    half = crfcore.refine(image, probs, method=method, params=params, scale=1.0)
    assert half.scale == 1.0 and not np.array_equal(auto.probs, half.probs)


@pytest.mark.parametrize("method", ["convcrf", "densecrf", "gaussian", "piecewise"])
def test_scale_one_reproduces_the_unscaled_refiner_bit_for_bit(method: str) -> None:
    # Before issue 20 crfcore.refine built the refiner from params and ran it on the image as given: same here.
    image, probs = _case(90, 130, seed=3)
    params = P.params_for(method)(**({"max_iter": 20} if method == "gaussian" else {"iterations": 3}))
    got = crfcore.refine(image, probs, method=method, params=params, scale=1.0, device="cpu")
    model = crfcore.refiners.get(method, params)
    img = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        q = model(img, torch.from_numpy(probs)[None], op=model.build(img))
    assert got.scale == 1.0
    assert np.array_equal(got.probs, q[0].numpy())


def test_preset_round_trips_with_its_reference_size(tmp_path) -> None:
    params = P.ConvCRFParams(theta_alpha=40.0, theta_gamma=1.5, filter_size=7, blur=2)
    path = tmp_path / "p.json"
    P.save_preset(path, "convcrf", params)
    assert json.loads(path.read_text())["reference_size"] == P.REFERENCE_SIZE
    assert P.load_preset(path) == ("convcrf", params)
    # A file written at a 1000-px reference holds doubled spatial values and reads back at 500 px.
    data = json.loads(path.read_text())
    data.update(reference_size=1000, unary={"confidence": 0.9, "band": 4.0})
    data["params"].update(theta_alpha=80.0, theta_gamma=3.0, blur=4, filter_size=7)
    path.write_text(json.dumps(data))
    assert P.load_preset(path) == ("convcrf", params)
    assert presets.read(path).unary == {"confidence": 0.9, "band": 2.0}


def test_preset_without_reference_size_is_at_500px_and_bad_sizes_are_named(tmp_path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"method": "densecrf", "params": {"theta_alpha": 50.0}}))
    assert P.load_preset(path)[1].theta_alpha == 50.0
    path.write_text(json.dumps({"method": "densecrf", "params": {}, "reference_size": -3}))
    with pytest.raises(ValueError, match="reference_size must be a long side in pixels"):
        P.load_preset(path)


def _dataset(tmp_path, sizes: list[tuple[int, int]]):
    from crfcore import io

    for k, (h, w) in enumerate(sizes):
        image, probs = _case(h, w, 2, seed=k)
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        io.save_image(tmp_path / "images" / f"s{k}.png", image)
        io.save_mask(tmp_path / "masks" / f"s{k}.png", probs.argmax(0).astype(np.int64))
    return tmp_path


def test_learn_data_long_side_resamples_every_image_up_or_down(tmp_path) -> None:
    from crfcore.learn import LearnData

    data = LearnData(_dataset(tmp_path, [(30, 40), (200, 100), (64, 64)]), long_side=50, val_frac=0.4)
    assert sorted(tuple(data.sample(s).labels.shape) for s in data.pairs) == [(38, 50), (50, 25), (50, 50)]
    with pytest.raises(ValueError, match="give max_side .* or long_side"):
        LearnData(tmp_path, long_side=50, max_side=40)


def test_tune_result_goes_back_to_the_reference_size_keeping_the_window() -> None:
    from crfcore.commands.tune import _to_reference

    reference = P.ConvCRFParams(filter_size=7, blur=3)
    learned = dataclasses.replace(P.scaled(reference, 0.5), theta_alpha=30.0, theta_gamma=2.0, w_appearance=7.0)
    back = _to_reference(learned, reference, 0.5)
    assert (back.theta_alpha, back.theta_gamma, back.w_appearance) == (60.0, 4.0, 7.0)
    assert (back.filter_size, back.blur) == (7, 3)
    tiny = P.scaled(reference, 0.1, floor=False)  # a 50-px training size: θγ 0.3 px, no 1-px floor, so exact back
    assert _to_reference(tiny, reference, 0.1).theta_gamma == pytest.approx(3.0)


def test_eval_polygon_rows_pass_the_scale_to_refine_mask(tmp_path, monkeypatch) -> None:
    # refine_mask scales a numeric roughness itself (test below); the protocol hands it the rows' scale unchanged
    import crfcore.evaluate as E

    seen = []
    real = E.refine_mask

    def spy(image, mask, **kwargs):
        seen.append((kwargs["roughness"], kwargs["scale"]))
        return real(image, mask, **kwargs)

    monkeypatch.setattr(E, "refine_mask", spy)
    folder = _dataset(tmp_path, [(50, 100)])
    entry = E.Entry("convcrf", P.ConvCRFParams(iterations=1), 5.0, {"rounds": 1})
    E.evaluate(folder, {"a": entry}, protocol="polygon")
    E.evaluate(folder, {"a": entry}, protocol="polygon", max_side=1000, scale=1.0)
    assert seen == [(5.0, "auto"), (5.0, 1.0)]


def test_batch_spec_applies_the_scale_and_rejects_a_bad_one(tmp_path) -> None:
    from crfcore.batch import RefineSpec, Refiner

    image, probs = _case(40, 100)
    params = P.ConvCRFParams(iterations=1)
    labels = Refiner(RefineSpec("convcrf", params))(image, probs)
    assert np.array_equal(labels, crfcore.refine(image, probs, params=params, scale="auto").labels)
    pixels = Refiner(RefineSpec("convcrf", params, scale=1.0))(image, probs)
    assert np.array_equal(pixels, crfcore.refine(image, probs, params=params, scale=1.0).labels)
    with pytest.raises(ValueError, match="scale must be 'auto' or a"):
        Refiner(RefineSpec("convcrf", params, scale="big"))


def test_refine_mask_scales_a_numeric_roughness_and_reports_the_scale() -> None:
    from crfcore.mask_refine import refine_mask

    image, probs = _case(50, 100)
    mask = probs.argmax(0).astype(np.int64)
    auto = refine_mask(image, mask, roughness=10.0, rounds=1, iterations=1)
    assert auto.scale == 0.2 and auto.timing["roughness_px"] == pytest.approx(2.0)  # 10 px at 500 → 2 px at 100
    pixels = refine_mask(image, mask, roughness=10.0, rounds=1, iterations=1, scale=1.0)
    assert pixels.scale == 1.0 and pixels.timing["roughness_px"] == 10.0


def test_cli_scale_flag_parses_auto_and_numbers_and_names_itself_on_error() -> None:
    import argparse

    from crfcore.commands.common import parse_scale

    assert parse_scale("auto") == "auto" and parse_scale("0.5") == 0.5
    with pytest.raises(argparse.ArgumentTypeError, match="--scale must be 'auto' or a number > 0"):
        parse_scale("-2")
