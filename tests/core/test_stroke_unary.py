"""The strokes-only unary (crfcore.stroke_unary): geodesic distances, the prior's hand formula, refine_mask
(issue 18)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import crfcore
from crfcore.appearance import fit_colour_models
from crfcore.mask_refine import resolve_settings, rough_mask
from crfcore.stroke_unary import DISTANCE_OFFSET, geodesic_distances, stroke_probs


def test_geodesic_distance_on_a_flat_image_is_the_8_connected_distance():
    image = np.full((20, 30, 3), 128, np.uint8)
    strokes = np.full((20, 30), -1, np.int64)
    strokes[2, 3] = 1
    d = geodesic_distances(image, strokes, 3, edge_weight=2.0)  # flat: no gradient, edges change nothing
    assert d.shape == (3, 20, 30) and d.dtype == np.float32
    assert np.isinf(d[0]).all() and np.isinf(d[2]).all()  # classes nobody painted
    yy, xx = np.mgrid[:20, :30]
    dy, dx = np.abs(yy - 2), np.abs(xx - 3)
    want = np.maximum(dy, dx) + (math.sqrt(2) - 1) * np.minimum(dy, dx)  # straight then diagonal steps
    np.testing.assert_allclose(d[1], want, atol=1e-4)


def test_geodesic_distance_grows_across_a_colour_edge_only():
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, 20:] = 200
    strokes = np.full((20, 40), -1, np.int64)
    strokes[10, 2] = 0
    plain = geodesic_distances(image, strokes, 1, edge_weight=0.0)[0]
    edged = geodesic_distances(image, strokes, 1, edge_weight=0.5)[0]
    np.testing.assert_allclose(edged[:, :12], plain[:, :12], atol=1e-4)  # far from the edge the image is flat
    # crossing the edge costs about e · Σ|∇I| ≈ 0.5 · 200 · √3 levels summed over the step (Gaussian σ 1 px)
    assert (edged[:, 30:] - plain[:, 30:]).min() > 0.5 * 200 * math.sqrt(3) * 0.9


def test_stroke_probs_without_colour_is_the_hand_computed_distance_prior():
    h, w, c = 4, 5, 3
    image = torch.zeros(3, h, w)
    strokes = np.full((h, w), -1, np.int64)
    strokes[0, 0], strokes[3, 4] = 0, 1  # class 2 unpainted
    rng = np.random.default_rng(0)
    distances = rng.uniform(0, 50, (c, h, w)).astype(np.float32)
    distances[2] = np.inf
    models = fit_colour_models(image, torch.zeros(c, h, w, dtype=torch.bool), c, components=1)  # no model
    gamma, conf = 2.0, 0.8
    got = stroke_probs(image, strokes, models, distances, confidence=conf, colour_weight=1.0,
                       prior_strength=gamma).numpy()
    weights = (distances[:2].astype(np.float64) + DISTANCE_OFFSET) ** -gamma  # n_c ∝ (D_c + δ)^-γ
    n = weights / weights.sum(0)
    rest = (1 - conf) / (c - 1)
    want = np.stack([rest + (conf - rest) * n[0], rest + (conf - rest) * n[1], np.full((h, w), rest)])
    want[:, 0, 0], want[:, 3, 4] = (1, 0, 0), (0, 1, 0)  # painted pixels are hard
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(got.sum(0), 1.0, atol=1e-6)


def _twin_regions() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """48×96: two regions of the same grey split by a dark 2 px line at column 48 (truth: left 0, right 1), and one
    stroke in each; only where the strokes lie can tell them apart."""
    image = np.full((48, 96, 3), 170, np.uint8)
    image[:, 47:49] = 20
    truth = np.zeros((48, 96), np.int64)
    truth[:, 48:] = 1
    strokes = np.full((48, 96), -1, np.int64)
    strokes[20:26, 10:16] = 0
    strokes[20:26, 80:86] = 1
    return image, truth, strokes


@pytest.mark.parametrize("method", ["convcrf", "densecrf", "gaussian"])
def test_refine_mask_strokes_hold_their_region_when_colours_cannot_tell(method):
    image, truth, strokes = _twin_regions()
    r = crfcore.refine_mask(image, None, strokes=strokes, method=method, device="cpu", scale=1.0)
    assert (r.labels == truth).mean() > 0.95
    assert (r.labels[strokes >= 0] == strokes[strokes >= 0]).all()


def test_stroke_unary_splits_same_colours_by_distance_and_colours_alone_cannot():
    """The unary itself, before any CRF: with the prior each region goes to its stroke; with stroke_prior 0 (the
    colour models alone) both regions sit at one half."""
    image, truth, strokes = _twin_regions()
    _, settings = resolve_settings("convcrf", None, "scribbles")
    probs = rough_mask(image, None, strokes=strokes, device="cpu", settings=settings).unary()
    assert (probs.argmax(0).numpy() == truth).mean() > 0.97
    flat = rough_mask(image, None, strokes=strokes, device="cpu",
                      settings=crfcore.params.with_overrides(settings, stroke_prior=0.0)).unary()
    unpainted = torch.from_numpy(strokes < 0)
    np.testing.assert_allclose(flat[:, unpainted].numpy(), 0.5, atol=1e-3)


def test_strokes_only_rough_mask_carries_distances_and_a_mask_does_not():
    image, truth, strokes = _twin_regions()
    _, settings = resolve_settings("convcrf", None, "scribbles")
    rough = rough_mask(image, None, strokes=strokes, device="cpu", settings=settings)
    assert rough.distances is not None and rough.distances.shape == (2, 48, 96)
    void_mask = np.full(truth.shape, 255, np.int64)  # a mask void everywhere is strokes alone too
    assert rough_mask(image, void_mask, strokes=strokes, device="cpu", settings=settings).distances is not None
    assert rough_mask(image, truth, strokes=strokes, device="cpu", settings=settings).distances is None


def test_strokes_only_refine_mask_refits_over_rounds_deterministically():
    image, truth, strokes = _twin_regions()
    a = crfcore.refine_mask(image, None, strokes=strokes, device="cpu", scale=1.0, rounds=2)
    b = crfcore.refine_mask(image, None, strokes=strokes, device="cpu", scale=1.0, rounds=2)
    assert a.timing["rounds"] == 2
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.probs, b.probs)


def test_learnable_stroke_head_writes_its_width_back_as_the_prior_strength():
    """RoughUnary on strokes alone: A/σ² with A = γσ₀²·(−log(D + δ)), so a learned σ is γ(σ₀/σ)² of the prior."""
    from crfcore.learn.rough import RoughUnary

    base = crfcore.params.UnaryParams(prior_width=0.5, stroke_prior=8.0)
    head = RoughUnary(base, 2, strokes=True)
    assert head.settings().stroke_prior == pytest.approx(8.0, rel=1e-3)
    assert head.settings().prior_width == 0.5  # unused by strokes alone: kept
    with torch.no_grad():
        head.width_logit.fill_(0.0)  # σ = 0.1 · 100^0.5 = 1
    assert head.settings().stroke_prior == pytest.approx(8.0 * 0.25, rel=1e-3)
