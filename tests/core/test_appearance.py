"""Colour-model unaries (crfcore.appearance), roughness estimation and crfcore.refine_mask (issue 18)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt
from skimage.draw import polygon as draw_polygon
from skimage.measure import approximate_polygon, find_contours
from skimage.morphology import disk, dilation, erosion

import crfcore
from crfcore import params as P
from crfcore.appearance import (LOG_RATIO_CLIP, POLYGON_SAGITTA, SAGITTA_SCALE, SAGITTA_TRUST, appearance_probs,
                                colour_log_likelihood, edge_roughness, estimate_roughness, fit_colour_models,
                                mask_geometry, outline_sagitta)

COV_REG = 4.0  # crfcore.appearance's covariance floor (colour levels²): a flat colour's fitted covariance


def _two_mixtures() -> tuple[np.ndarray, np.ndarray, dict]:
    """40×40 image: columns < 20 alternate colours a1 / a2 by row (weights 1/2, 1/2), columns ≥ 20 hold b1 on three
    rows of four and b2 on the fourth (weights 3/4, 1/4); the mask is that split."""
    a1, a2, b1, b2 = (200, 40, 40), (220, 200, 30), (30, 60, 200), (20, 160, 90)
    image = np.zeros((40, 40, 3), np.uint8)
    rows = np.arange(40)
    image[:, :20] = np.where((rows % 2 == 0)[:, None, None], a1, a2)[:, :20]
    image[:, 20:] = np.where((rows % 4 != 3)[:, None, None], b1, b2)[:, :20]
    labels = np.zeros((40, 40), np.int64)
    labels[:, 20:] = 1
    truth = {0: ((0.5, a1), (0.5, a2)), 1: ((0.75, b1), (0.25, b2))}
    return image, labels, truth


def _log_mixture(x: np.ndarray, mixture: tuple) -> float:
    """Hand formula: log Σ_k π_k N(x; μ_k, 4 I) in 3-D."""
    norm = 1.5 * math.log(2 * math.pi * COV_REG)
    terms = [math.log(w) - np.sum((x - np.array(mu, float)) ** 2) / (2 * COV_REG) - norm for w, mu in mixture]
    return float(np.logaddexp.reduce(terms))


def test_colour_models_recover_two_flat_colour_mixtures():
    image, labels, truth = _two_mixtures()
    img = torch.from_numpy(image).permute(2, 0, 1).float()
    samples = torch.from_numpy(np.stack([labels == 0, labels == 1]))
    models = fit_colour_models(img, samples, 2, components=2)
    for c in (0, 1):
        got = sorted(zip(models.log_weights[c].exp().tolist(), models.means[c].tolist()), key=lambda t: t[1])
        want = sorted(((w, list(mu)) for w, mu in truth[c]), key=lambda t: t[1])
        for (w_got, mu_got), (w_want, mu_want) in zip(got, want):
            assert w_got == pytest.approx(w_want, abs=1e-4)
            np.testing.assert_allclose(mu_got, mu_want, atol=1e-3)
        cov = models.chol[c] @ models.chol[c].transpose(-1, -2)
        np.testing.assert_allclose(cov.numpy(), np.broadcast_to(np.eye(3) * COV_REG, (2, 3, 3)), atol=1e-3)
    # log-likelihoods at two pixels against the hand formula with the known mixtures
    loglik = colour_log_likelihood(models, img, torch.tensor([0, 3 * 40 + 30]))
    for n, x in enumerate((image[0, 0], image[3, 30])):
        for c in (0, 1):
            want = _log_mixture(x.astype(float), truth[c])
            assert float(loglik[c, n]) == pytest.approx(want, rel=1e-4, abs=1e-2)


def test_appearance_unary_matches_hand_computed_zone_rule():
    """Mask shifted 3 px into the right region: the zone's pixels of right-hand colour lean to class 1 exactly as
    the module docstring's formula says."""
    image, truth_labels, truth = _two_mixtures()
    labels = truth_labels.copy()
    labels[:, 20:23] = 0  # the mask is 3 px off
    roughness, confidence, w, sigma = 4.0, 0.9, 1.0, 1.0
    geometry = mask_geometry(labels, 2, roughness, thin_fraction=0.5)
    img = torch.from_numpy(image).permute(2, 0, 1).float()
    samples = torch.from_numpy(geometry.confident)
    models = fit_colour_models(img, samples, 2, components=2)
    probs = appearance_probs(img, geometry, models, confidence=confidence, colour_weight=w, prior_width=sigma,
                             labels=labels)
    rest = 1 - confidence
    # pixel (0, 21): labelled 0, colour b1; class 1 is d = 2 px away, reach min(0.5 · 17, 4) = 4
    x = image[0, 21].astype(float)
    ll = np.array([_log_mixture(x, truth[0]), _log_mixture(x, truth[1])])
    ratio = np.maximum(ll - np.logaddexp(ll[0], ll[1]), -LOG_RATIO_CLIP)
    score = np.array([0.0, -(2.0 ** 2) / (2 * (sigma * 4.0) ** 2)]) + w * ratio
    n = np.exp(score - score.max())
    n /= n.sum()
    np.testing.assert_allclose(probs[:, 0, 21].numpy(), rest + (confidence - rest) * n, atol=1e-5)
    assert probs[1, 0, 21] > 0.85  # the colours pull it across
    # far inside (column 5: depth 6 > reach 4) the mask label keeps `confidence`
    np.testing.assert_allclose(probs[:, 0, 5].numpy(), [confidence, rest], atol=1e-6)


@pytest.mark.parametrize("shape", ["disc", "square", "two_blobs"])
@pytest.mark.parametrize("k", [2, 4, 6, 9])
def test_estimate_roughness_recovers_known_dilation_and_erosion(shape, k):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:128, :128]
    obj = {"disc": (yy - 64) ** 2 + (xx - 60) ** 2 < 30 ** 2,
           "square": (abs(yy - 64) < 25) & (abs(xx - 70) < 35),
           "two_blobs": ((yy - 50) ** 2 / 30 ** 2 + (xx - 64) ** 2 / 45 ** 2 < 1) | ((yy - 80) ** 2 + (xx - 40) ** 2
                                                                                   < 20 ** 2)}[shape]
    image = np.where(obj[..., None], [200, 80, 60], [40, 120, 50]) + rng.normal(0, 6, (128, 128, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    for mask in (dilation(obj, disk(k)), erosion(obj, disk(k))):
        mask = mask.astype(np.int64)
        assert edge_roughness(image, mask) == pytest.approx(k, abs=1.0)
        if shape != "square":  # smooth outlines: the auto estimate is the edges' (a box's corners read as a polygon)
            assert outline_sagitta(mask) < POLYGON_SAGITTA[0]
            assert estimate_roughness(image, mask) == edge_roughness(image, mask)


def _polygon_disc(size: int, radius: float, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """A disc and its outline simplified to a polygon at ``tolerance`` px, filled: (truth, mask) (H, W) int64."""
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < radius ** 2).astype(np.int64)
    poly = approximate_polygon(find_contours(disc.astype(float), 0.5)[0], tolerance)
    mask = np.zeros_like(disc)
    rr, cc = draw_polygon(poly[:, 0], poly[:, 1], disc.shape)
    mask[rr, cc] = 1
    return disc, mask


@pytest.mark.parametrize("tolerance", [4, 8, 16])
def test_outline_sagitta_reads_a_polygon_tolerance(tolerance):
    disc, mask = _polygon_disc(256, 90.0, tolerance)
    deviation = np.abs(distance_transform_edt(mask) - distance_transform_edt(1 - mask))[disc != mask].max()
    assert outline_sagitta(disc) < POLYGON_SAGITTA[0]  # the smooth disc itself
    # the chords' largest distance from the disc, within a third
    assert outline_sagitta(mask) == pytest.approx(deviation, rel=0.35)


def test_estimate_roughness_of_a_polygon_follows_its_sagitta_within_the_edges_trust():
    disc, mask = _polygon_disc(256, 90.0, 8)
    rng = np.random.default_rng(3)
    image = np.where(disc[..., None] > 0, [200, 80, 60], [40, 120, 50]) + rng.normal(0, 6, (256, 256, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    edges, sagitta = edge_roughness(image, mask), outline_sagitta(mask)
    assert sagitta > POLYGON_SAGITTA[1]
    expected = np.clip(SAGITTA_SCALE * sagitta, edges / SAGITTA_TRUST, edges * SAGITTA_TRUST)
    assert estimate_roughness(image, mask) == pytest.approx(expected)
    # unknown pixels (-1) away from the outline add no outline of their own
    holed = mask.copy()
    holed[:20] = -1
    assert estimate_roughness(image, holed) == pytest.approx(estimate_roughness(image, mask))


def _halves(h: int = 48, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    image = np.zeros((h, w, 3), float)
    image[:, : w // 2] = (190, 60, 50)
    image[:, w // 2:] = (40, 90, 180)
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    truth = np.zeros((h, w), np.int64)
    truth[:, w // 2:] = 1
    return image, truth


@pytest.mark.parametrize("method", ["convcrf", "densecrf", "piecewise"])
def test_refine_mask_from_strokes_only(method):
    image, truth = _halves()
    strokes = np.full(truth.shape, -1, np.int64)
    strokes[20:24, 5:12] = 0
    strokes[30:34, 45:55] = 1
    r = crfcore.refine_mask(image, None, strokes=strokes, method=method, device="cpu", scale=1.0)
    assert isinstance(r.labels, np.ndarray) and r.labels.shape == truth.shape and r.probs.shape == (2, 48, 64)
    assert (r.labels == truth).mean() > 0.97
    assert (r.labels[strokes >= 0] == strokes[strokes >= 0]).all()  # strokes are hard


def test_refine_mask_moves_an_offset_mask_to_the_colour_edge():
    """Regions 80 px wide (half-width 40: thin_fraction · 40 ≥ 6 px of reach); the outline 6 px off."""
    image, truth = _halves(48, 160)
    mask = np.zeros_like(truth)
    mask[:, 86:] = 1
    r = crfcore.refine_mask(image, mask, roughness=8, device="cpu", scale=1.0)
    assert (r.labels == truth).mean() > 0.98
    auto = crfcore.refine_mask(image, mask, device="cpu", scale=1.0)
    scale = crfcore.presets.get("rough_annotation", "convcrf").appearance.roughness_scale
    assert auto.timing["roughness_px"] == pytest.approx(6 * scale, abs=scale)
    assert (auto.labels == truth).mean() > 0.98


def test_refine_mask_keeps_a_thin_structure_inside_a_wide_zone():
    """A 3 px vertical pole of its own colour, well inside a class-0 region: not swallowed at roughness 10."""
    image, truth = _halves()
    image[:, 14:17] = (250, 250, 250)
    mask = truth.copy()
    mask[:, 14:17] = 2
    r = crfcore.refine_mask(image, mask, num_classes=3, roughness=10, device="cpu", scale=1.0)
    assert (r.labels[:, 14:17] == 2).mean() > 0.95


def test_refine_mask_is_deterministic_and_takes_tensors():
    image, truth = _halves()
    mask = np.where(np.arange(64)[None, :] >= 36, 1, 0).repeat(48, 0)
    a = crfcore.refine_mask(image, mask, device="cpu", scale=1.0)
    b = crfcore.refine_mask(torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(mask), device="cpu", scale=1.0)
    assert isinstance(b.labels, torch.Tensor)
    np.testing.assert_array_equal(a.labels, b.labels.numpy())
    np.testing.assert_allclose(a.probs, b.probs.numpy(), atol=1e-6)


def test_refine_mask_small_class_without_confident_pixels_falls_back():
    """A class of 4 pixels has too few to fit a colour model: documented fallback, no error."""
    image, truth = _halves()
    mask = truth.copy()
    mask[10:12, 10:12] = 2
    r = crfcore.refine_mask(image, mask, num_classes=3, device="cpu", scale=1.0)
    assert r.labels.shape == mask.shape


def test_refine_mask_void_pixels_are_filled():
    image, truth = _halves()
    mask = truth.copy()
    mask[:, 28:36] = 255
    r = crfcore.refine_mask(image, mask, roughness=4, device="cpu", scale=1.0)
    assert (r.labels == truth).mean() > 0.97


@pytest.mark.parametrize("kwargs, match", [
    (dict(mask=np.zeros((10, 10), np.int64)), r"mask is 10×10 but image is 48×64"),
    (dict(mask=None, strokes=np.full((48, 64), -1)), "needs a mask or at least one painted stroke"),
    (dict(mask=None), "needs a mask or at least one painted stroke"),
    (dict(mask=np.zeros((48, 64), np.int64), strokes=np.full((48, 64), 5), num_classes=2),
     r"strokes hold values \[5\]; expected -1 \(unpainted\) or a class 0..1"),
    (dict(mask=np.full((48, 64), 3), num_classes=2), r"mask holds values \[3\] outside 0..1"),
    (dict(mask=np.zeros((48, 64))), "dtype float64; expected integer class indices"),
    (dict(mask=np.zeros((48, 64), np.int64), roughness="wide"), "roughness must be 'auto' or a number"),
    (dict(mask=np.zeros((48, 64), np.int64), roughness=-2), "roughness must be 'auto' or a number"),
    (dict(mask=np.zeros((48, 64), np.int64), colour_wieght=2), "unknown setting.*'colour_wieght'"),
    (dict(mask=np.zeros((48, 64), np.int64), colour_weight=-1), r"colour_weight=-1 is out of range"),
])
def test_refine_mask_rejects_bad_input_with_clear_message(kwargs, match):
    image, _ = _halves()
    mask = kwargs.pop("mask")
    with pytest.raises(ValueError, match=match):
        crfcore.refine_mask(image, mask, device="cpu", scale=1.0, **kwargs)


def test_refine_mask_takes_the_kind_preset_and_overrides():
    image, truth = _halves()
    mask = np.where(np.arange(64)[None, :] >= 36, 1, 0).repeat(48, 0)
    r = crfcore.refine_mask(image, mask, device="cpu", scale=1.0, rounds=1, iterations=1)
    assert r.timing["rounds"] == 1
    shipped = crfcore.presets.get("rough_annotation", "convcrf")
    assert isinstance(shipped.appearance, P.UnaryParams)


@pytest.mark.parametrize("method", ["convcrf", "gaussian"])
def test_rough_mask_unary_on_an_image_refiner_is_refine_mask(method):
    """The app's path (the first round's unary refined on the image's ImageRefiner) equals refine_mask at rounds 1."""
    from crfcore.mask_refine import resolve_settings, rough_mask

    image, truth = _halves(48, 96)
    mask = np.zeros_like(truth)
    mask[:, 52:] = 1
    config, settings = resolve_settings(method, None, "rough_annotation", rounds=1)
    rough = rough_mask(image, mask, device="cpu", settings=settings)
    got = crfcore.ImageRefiner(image, device="cpu").refine(rough.unary(), method, config, scale=rough.factor)
    want = crfcore.refine_mask(image, mask, method=method, device="cpu", rounds=1)
    np.testing.assert_array_equal(got.labels.numpy(), want.labels)
    np.testing.assert_allclose(got.probs.numpy(), want.probs, atol=1e-6)


def _calibration(image: np.ndarray, labels: np.ndarray) -> float:
    from crfcore.appearance import colour_calibration

    geometry = mask_geometry(labels, 2, 4.0, thin_fraction=0.5)
    img = torch.from_numpy(image).permute(2, 0, 1).float()
    models = fit_colour_models(img, torch.from_numpy(geometry.confident), 2, components=2)
    loglik = colour_log_likelihood(models, img)
    return colour_calibration(loglik, geometry, torch.from_numpy(labels).reshape(-1), models.fitted)


def test_colour_calibration_trusts_distinct_colours_and_ignores_shared_ones():
    from crfcore.appearance import CALIBRATION_GRID

    image, truth = _halves()
    assert _calibration(image, truth) == CALIBRATION_GRID[-1]  # two clearly different colours: full weight
    rng = np.random.default_rng(3)
    shared = rng.integers(0, 256, (48, 64, 3)).astype(np.uint8)  # both classes draw from one colour distribution
    assert _calibration(shared, truth) <= 0.1  # (not 0: the mixtures are scored on the pixels they were fitted on)


def test_refine_mask_unknown_sliver_takes_the_nearest_label_when_colours_cannot_tell():
    """Unannotated (void) pixels between two regions of one colour distribution, at void reach 1 (void pixels
    doubted as annotated ones next to an outline): the nearest label, as an annotator would fill them, not whichever
    class the colours slightly prefer. (A wide void reach trades this for recovering lost classes: next test.)"""
    rng = np.random.default_rng(5)
    image = rng.integers(60, 200, (40, 60, 3)).astype(np.uint8)
    mask = np.zeros((40, 60), np.int64)
    mask[:, 30:] = 1
    drawn = mask.copy()
    drawn[:, 27:33] = 255
    r = crfcore.refine_mask(image, drawn, roughness=3, device="cpu", scale=1.0, w_appearance=0.0, void_reach=1)
    np.testing.assert_array_equal(r.labels, mask)


def test_mask_geometry_unknown_pixels_are_doubted_and_reached_from_afar():
    labels = np.zeros((20, 30), np.int64)
    labels[:, 15:] = 1
    labels[:4, 2:5] = 2
    unknown = np.zeros_like(labels, bool)
    unknown[:, 8:12] = True  # already filled with the nearest label, as rough_mask does
    near = mask_geometry(labels, 3, 2.0, thin_fraction=0.2, unknown=unknown, void_reach=1.0)
    far = mask_geometry(labels, 3, 2.0, thin_fraction=0.2, unknown=unknown, void_reach=10.0)
    for geometry in (near, far):
        assert geometry.zone[unknown].all() and not geometry.confident[:, unknown].any()
    assert (far.reach[:, unknown] >= 20.0).all()
    np.testing.assert_array_equal(far.reach[:, ~unknown], near.reach[:, ~unknown])
    assert (near.dist[2][unknown] > near.reach[2][unknown]).all()  # class 2 out of reach unless void reaches it
    assert (far.dist[2][unknown] <= far.reach[2][unknown]).all()


def test_refine_mask_void_gap_recovers_a_class_the_polygons_lost_there():
    """A white pole crosses the image; the mask has it only in the top rows and leaves a void gap where it was lost
    below. A wide void reach lets its colour model claim the gap; at void reach 1 only the neighbours compete."""
    image, truth = _halves()
    image[:, 30:36] = (250, 250, 250)
    truth[:, 30:36] = 2
    mask = truth.copy()
    mask[12:, 28:38] = 255
    mask[12:, 28:30], mask[12:, 36:38] = 0, 1
    mask[12:, 30:36] = 255
    wide = crfcore.refine_mask(image, mask, num_classes=3, roughness=2, device="cpu", scale=1.0, void_reach=30)
    narrow = crfcore.refine_mask(image, mask, num_classes=3, roughness=2, device="cpu", scale=1.0, void_reach=1)
    pole = truth == 2
    assert (wide.labels[pole] == 2).mean() > 0.9
    assert (narrow.labels[40:, 30:36] == 2).mean() < 0.1
