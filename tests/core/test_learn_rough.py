"""crfcore.learn.rough and ``crfcore tune --protocol polygon|strokes``: learning the CRF and refine_mask's unary
settings on rough annotations, on tiny synthetic sets (coloured shapes, a few steps)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

import crfcore
from crfcore import io
from crfcore import params as P
from crfcore.cli import main
from crfcore.learn import FinetuneConfig, PiecewiseConfig, RoughData, RoughRecipe, tune_rough
from crfcore.learn.rough import RoughUnary, annotate, unary_parts
from crfcore.mask_refine import resolve_settings
from crfcore.protocols import polygon_annotation


def _shapes(seed: int, size: int = 56) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image of a disc and a bar of two colours on a third, and its 3-class ground truth."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.integers(size // 3, 2 * size // 3, 2).tolist()
    gt = (((yy - cy) ** 2 + (xx - cx) ** 2) < (size // 4) ** 2).astype(np.int64)
    gt[(yy > size - 12) & (xx < size // 2 + seed)] = 2
    colours = np.array([[50, 60, 70], [210, 160, 60], [70, 110, 220]])
    image = np.clip(colours[gt] + rng.normal(0, 10, (size, size, 3)), 0, 255).astype(np.uint8)
    return image, gt


@pytest.fixture
def shapes_folder(tmp_path):
    root = tmp_path / "shapes"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for k in range(4):
        image, gt = _shapes(k, size=48 + 4 * k)
        io.save_image(root / "images" / f"s{k}.png", image)
        io.save_mask(root / "masks" / f"s{k}.png", gt)
    return root


def _reference(image, mask, strokes, settings, confidence, weight, width):
    """refine_mask's first-round unary (crfcore.mask_refine.rough_mask), at the head's settings."""
    import dataclasses

    from crfcore.mask_refine import rough_mask

    at = dataclasses.replace(settings, confidence=confidence, colour_weight=weight, prior_width=width)
    return rough_mask(image, mask, num_classes=3, strokes=strokes, void=-1, device="cpu", settings=at).unary()


@pytest.mark.parametrize("protocol", ["polygon", "strokes"])
def test_the_learnable_unary_equals_appearance_probs_at_its_settings(protocol):
    image, gt = _shapes(1)
    mask, strokes = annotate(gt, RoughRecipe(protocol, tolerance=5, strokes=5))
    for settings in (P.UnaryParams(), P.UnaryParams(confidence=0.7, colour_weight=3.0, prior_width=0.6,
                                                    roughness_scale=2.0, colour_smoothing=1.0)):
        head = RoughUnary(settings, 3)
        got = head(unary_parts(image, mask, strokes, 3, settings)[None])[0].detach()
        confidence, weight, width = (float(v.detach()) for v in head.values())
        assert confidence == pytest.approx(settings.confidence, abs=1e-5)
        assert weight == pytest.approx(settings.colour_weight, abs=1e-5)
        assert width == pytest.approx(settings.prior_width, rel=1e-5)
        expected = _reference(image, mask, strokes, settings, confidence, weight, width)
        torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)


def test_the_learnable_unary_has_gradients_for_its_three_settings():
    image, gt = _shapes(2)
    mask, _ = annotate(gt, RoughRecipe("polygon", tolerance=6))
    head = RoughUnary(P.UnaryParams(), 3)
    probs = head(unary_parts(image, mask, None, 3, P.UnaryParams())[None])
    torch.nn.functional.nll_loss(torch.log(probs), torch.from_numpy(gt)[None]).backward()
    for p in (head.conf_logit, head.weight_logit, head.width_logit):
        assert p.grad is not None and torch.isfinite(p.grad) and p.grad != 0


def test_annotators_draw_polygons_and_strokes_of_every_class():
    _, gt = _shapes(0)
    mask, none = annotate(gt, RoughRecipe("polygon", tolerance=3))
    assert none is None
    np.testing.assert_array_equal(mask, polygon_annotation(gt, tolerance=3, background=0))
    none, strokes = annotate(gt, RoughRecipe("strokes", strokes=5, radius=3))
    assert none is None and set(np.unique(strokes).tolist()) == {-1, 0, 1, 2}
    assert (strokes[strokes >= 0] == gt[strokes >= 0]).all()  # the brush stays inside the true class
    with pytest.raises(ValueError, match="'noise' trains on the synthetic unaries"):
        RoughRecipe("noise")


@pytest.mark.parametrize("protocol", ["polygon", "strokes"])
def test_tune_rough_is_never_below_the_unary_or_the_starting_preset(shapes_folder, protocol):
    recipe = RoughRecipe(protocol, tolerance=6)
    params, settings = resolve_settings("convcrf", None, recipe.kind)
    data = RoughData(shapes_folder, recipe, settings, val_frac=0.5, long_side=48)
    result = tune_rough("convcrf", P.scaled(params, 48 / 500, floor=False), data,
                        config=FinetuneConfig(steps=2, val_every=1, crop=40), grid=(1.0, 2.0))
    assert result.val_miou >= max(result.val_unary_miou, result.val_initial_miou)
    assert result.kind == recipe.kind and result.choice
    assert isinstance(result.unary, P.UnaryParams) and 0.51 <= result.unary.confidence <= 1.0
    assert result.steps >= 1 and {row["roughness_scale"] for row in result.history} <= {
        settings.roughness_scale, 2 * settings.roughness_scale}


def test_cli_tune_polygon_writes_unary_settings_that_refine_mask_reads(shapes_folder, tmp_path, capsys):
    out = tmp_path / "tuned.json"
    assert main(["tune", "--data", str(shapes_folder), "-o", str(out), "--protocol", "polygon", "--tolerance", "6",
                 "--max-side", "48", "--steps", "2", "--val-every", "1", "--crop", "40", "--val-frac", "0.5",
                 "--roughness-scales", "1,2"]) == 0
    text = capsys.readouterr().out
    figures = re.search(r"validation mIoU\s+unary ([\d.]+)\s+shipped ([\d.]+)\s+tuned ([\d.]+)", text)
    assert figures, text
    unary, shipped, tuned = map(float, figures.groups())
    assert tuned >= unary and tuned >= shipped
    written = json.loads(out.read_text())
    assert written["kind"] == "rough_annotation"
    assert set(written["unary"]) == {s.name for s in P.specs(P.UnaryParams)}
    _, settings = resolve_settings("convcrf", out, "rough_annotation")
    assert P.to_dict(settings) == P.to_dict(P.UnaryParams(**written["unary"]))
    assert re.search(rf"confidence {settings.confidence:g}, colour_weight {settings.colour_weight:g}", text)
    # refine_mask(params=path) uses the written settings: the same as passing them by name with no unary entry
    image, gt = _shapes(3)
    mask = polygon_annotation(gt, tolerance=6)
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({k: v for k, v in written.items() if k not in ("unary", "kind")}))
    via_preset = crfcore.refine_mask(image, mask, params=str(out), device="cpu").labels
    by_name = crfcore.refine_mask(image, mask, params=str(bare), device="cpu", **P.to_dict(settings)).labels
    np.testing.assert_array_equal(via_preset, by_name)


def test_cli_tune_strokes_runs_and_rough_protocols_refuse_what_they_cannot_do(shapes_folder, tmp_path, capsys):
    out = tmp_path / "strokes.json"
    assert main(["tune", "--data", str(shapes_folder), "-o", str(out), "--protocol", "strokes", "--strokes", "4",
                 "--max-side", "48", "--steps", "1", "--crop", "40", "--val-frac", "0.5"]) == 0
    assert json.loads(out.read_text())["kind"] == "scribbles"
    capsys.readouterr()
    assert main(["tune", "--data", str(shapes_folder), "-o", str(out), "--protocol", "polygon", "--checkpoint",
                 str(tmp_path / "c.pt")]) == 2
    assert "--checkpoint applies to --protocol noise" in capsys.readouterr().err
    assert main(["tune", "--data", str(shapes_folder), "-o", str(out), "--protocol", "polygon", "--edges",
                 "256"]) == 2
    assert "--edges is a piecewise-training setting; fine-tuning convcrf" in capsys.readouterr().err
    assert main(["tune", "--data", str(shapes_folder), "-o", str(out), "--protocol", "polygon", "--method",
                 "piecewise", "--learn-compat"]) == 2
    assert "learns its potentials (its compatibilities) by itself" in capsys.readouterr().err


def _piecewise_rough(folder, protocol: str):
    recipe = RoughRecipe(protocol, tolerance=6, strokes=4)
    params, settings = resolve_settings("piecewise", None, recipe.kind)
    data = RoughData(folder, recipe, settings, val_frac=0.5, long_side=48)
    steps = []
    result = tune_rough("piecewise", P.scaled(params, 48 / 500, floor=False), data,
                        config=FinetuneConfig(steps=2, val_every=1, crop=40), grid=(1.0, 2.0),
                        piecewise=PiecewiseConfig(steps=4, edges=512, crop=32, calibration_crops=1),
                        callback=lambda step, total, _values: steps.append((step, total)))
    return result, settings, steps


@pytest.mark.parametrize("protocol", ["polygon", "strokes"])
def test_tune_rough_piecewise_trains_the_potentials_then_the_unary_and_never_falls_below_it_18(shapes_folder,
                                                                                              protocol):
    result, settings, steps = _piecewise_rough(shapes_folder, protocol)
    assert result.method == "piecewise" and result.kind == RoughRecipe(protocol).kind and result.choice
    assert result.val_miou >= max(result.val_unary_miou, result.val_initial_miou)
    assert isinstance(result.unary, P.UnaryParams) and 0.51 <= result.unary.confidence <= 1.0
    # piecewise training first (its per-potential losses), then the unary's settings at each grid point
    assert sum("loss_surrounding" in row for row in result.history) == 4
    points = 1 if protocol == "strokes" else 2
    total = 4 + 2 * points
    assert {t for _, t in steps} == {total} and result.steps == total  # one count across both stages
    assert [k for k, _ in steps] == sorted(k for k, _ in steps) and {k for k, _ in steps} == set(range(1, total + 1))
    assert {row["roughness_scale"] for row in result.history} == {settings.roughness_scale * f
                                                                  for f in (1.0, 2.0)[:points]}
    if result.choice.startswith("piecewise potentials"):
        assert isinstance(result.params.potentials, tuple) and len(result.params.potentials) == 6
    if protocol == "polygon":  # seeded on CPU: the trained potentials with the tuned unary gain on these shapes
        assert result.choice.startswith("piecewise potentials") and result.val_miou > result.val_unary_miou


def test_tune_rough_refuses_piecewise_settings_for_a_method_tuned_through_inference(shapes_folder):
    recipe = RoughRecipe("polygon", tolerance=6)
    params, settings = resolve_settings("convcrf", None, recipe.kind)
    data = RoughData(shapes_folder, recipe, settings, val_frac=0.5, long_side=48)
    with pytest.raises(ValueError, match="piecewise settings were given for method 'convcrf'"):
        tune_rough("convcrf", params, data, piecewise=PiecewiseConfig(steps=1))


def test_cli_tune_piecewise_on_polygons_writes_a_preset_refine_mask_uses_18(shapes_folder, tmp_path, capsys):
    out = tmp_path / "piecewise.json"
    assert main(["tune", "--method", "piecewise", "--data", str(shapes_folder), "-o", str(out), "--protocol",
                 "polygon", "--tolerance", "6", "--max-side", "48", "--limit", "4", "--steps", "3", "--edges", "512",
                 "--val-every", "1", "--crop", "24", "--val-frac", "0.5", "--roughness-scales", "1,2"]) == 0
    text = capsys.readouterr().out
    figures = re.search(r"validation mIoU\s+unary ([\d.]+)\s+shipped ([\d.]+)\s+tuned ([\d.]+) \(([^;]+);", text)
    assert figures, text
    unary, shipped, tuned = map(float, figures.groups()[:3])
    assert tuned >= unary and tuned >= shipped
    written = json.loads(out.read_text())
    assert (written["method"], written["kind"]) == ("piecewise", "rough_annotation")
    assert set(written["unary"]) == {s.name for s in P.specs(P.UnaryParams)}
    params, settings = resolve_settings("piecewise", out, "rough_annotation")
    assert figures.group(4).startswith("piecewise potentials")  # seeded: the trained potentials are kept
    assert np.asarray(params.potentials).shape == (6, 3, 3)
    # refine_mask(method="piecewise", params=path) runs the written potentials with the written unary settings
    image, gt = _shapes(3)
    mask = polygon_annotation(gt, tolerance=6)
    via_preset = crfcore.refine_mask(image, mask, method="piecewise", params=str(out), device="cpu").labels
    by_hand = crfcore.refine_mask(image, mask, method="piecewise", params=params, device="cpu",
                                  **P.to_dict(settings)).labels
    np.testing.assert_array_equal(via_preset, by_hand)


def test_zero_pairwise_of_trained_piecewise_potentials_returns_the_unary_18():
    model = crfcore.refiners.get("piecewise", num_classes=3)
    with torch.no_grad():  # box-kernel energies carry no w_* weight: zeroing the weights alone would keep them
        model.surrounding[2].copy_(3.0 * torch.randn(3, 3, generator=torch.Generator().manual_seed(0)))
    zero = crfcore.learn.finetune.zero_pairwise(model.current_params())
    assert zero.potentials == "potts"
    image, gt = _shapes(0)
    probs = np.random.default_rng(1).dirichlet([1, 1, 1], gt.shape).transpose(2, 0, 1).astype(np.float32)
    labels = crfcore.refine(image, probs, "piecewise", params=zero, device="cpu").labels
    np.testing.assert_array_equal(labels, probs.argmax(0))


def test_prefer_unary_hands_back_the_unary_alone_when_tuning_made_it_worse():
    from crfcore.learn import TuneResult, prefer_unary

    worse = TuneResult("convcrf", P.ConvCRFParams(), 80.0, 60.0, 65.0, 3, 5, False)
    kept = prefer_unary(worse)
    assert (kept.params.w_appearance, kept.params.w_smoothness, kept.val_miou) == (0.0, 0.0, 80.0)
    assert "unary alone" in kept.choice
    better = TuneResult("convcrf", P.ConvCRFParams(), 60.0, 60.0, 65.0, 3, 5, False)
    assert prefer_unary(better) is better
    # the claim it rests on: with no pairwise weight every refiner returns the unary's argmax
    image, gt = _shapes(0)
    probs = np.random.default_rng(1).dirichlet([1, 1, 1], gt.shape).transpose(2, 0, 1).astype(np.float32)
    for method in ("convcrf", "densecrf", "gaussian"):
        zero = crfcore.learn.finetune.zero_pairwise(P.params_for(method)())
        labels = crfcore.refine(image, probs, method, params=zero, device="cpu").labels
        np.testing.assert_array_equal(labels, probs.argmax(0))
