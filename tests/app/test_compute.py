"""app.compute against crfcore.refine (the public API is the reference), the operator cache, previews, stopping."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import crfcore
import app.compute
from app.compute import OperatorCache, RefineJob, compute, preview_params, preview_scale
from app.document import available_methods
from crfcore import params as P


def make_job(method: str = "convcrf", *, height: int = 24, width: int = 30, preview: bool = False,
             **overrides) -> RefineJob:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    unary = crfcore.unary.from_labels(rng.integers(0, 3, (height, width)), 3)
    params = P.with_overrides(P.params_for(method)(), **overrides)
    return RefineJob(image=image, unary=unary, method=method, params=params, image_key="test", preview=preview)


@pytest.mark.parametrize("method", available_methods())
def test_compute_matches_crfcore_refine(method):
    job = make_job(method)
    expected = crfcore.refine(job.image, job.unary, method=method, params=job.params, device="cpu")
    result = compute(job, device="cpu")
    np.testing.assert_allclose(result.probs, expected.probs, atol=1e-5)
    np.testing.assert_array_equal(result.labels, expected.labels)
    assert set(result.timing) >= {"build_ms", "iterations_ms", "total_ms", "device"}
    assert result.timing["device"] == "cpu" and result.method == method


def test_weight_changes_reuse_the_operator_and_theta_changes_rebuild_it():
    cache = OperatorCache()
    job = make_job()
    first = compute(job, cache=cache, device="cpu")
    heavier = dataclasses.replace(job, params=P.with_overrides(job.params, w_appearance=40.0))
    reused = compute(heavier, cache=cache, device="cpu")
    assert not first.timing["cached"] and reused.timing["cached"] and len(cache) == 1
    expected = crfcore.refine(job.image, job.unary, params=heavier.params, device="cpu")
    np.testing.assert_allclose(reused.probs, expected.probs, atol=1e-5)
    wider = dataclasses.replace(job, params=P.with_overrides(job.params, theta_alpha=20.0))
    assert not compute(wider, cache=cache, device="cpu").timing["cached"] and len(cache) == 2


def test_cache_keeps_the_most_recently_used_operators():
    cache = OperatorCache(size=2)
    for key in "abc":
        cache.put(key, key.upper())
    assert cache.get("a") is None and cache.get("b") == "B" and cache.get("c") == "C"
    with pytest.raises(ValueError, match="size must be >= 1"):
        OperatorCache(size=0)


def test_preview_runs_at_reduced_size_and_returns_full_size():
    job = make_job(height=300, width=400, preview=True)
    assert preview_scale(300, 400) == 2 and preview_scale(100, 100) == 1
    result = compute(job, device="cpu")
    assert result.preview and result.timing["scale"] == 2
    assert result.probs.shape == (3, 300, 400) and result.labels.shape == (300, 400)
    np.testing.assert_allclose(result.probs.sum(0), 1.0, atol=1e-5)


def test_preview_params_shrink_pixel_ranges_within_their_specs():
    params = P.ConvCRFParams(theta_alpha=80.0, theta_gamma=0.8, blur=4)
    small = preview_params(params, 2)
    assert (small.theta_alpha, small.theta_gamma, small.blur) == (40.0, 0.5, 2)
    assert small.theta_beta == params.theta_beta and small.filter_size == params.filter_size
    assert preview_params(params, 1) is params


def test_preview_grid_is_never_finer_than_the_full_runs():
    for blur, scale, expected in ((4, 3, 2), (4, 8, 1), (3, 2, 2), (1, 5, 1)):
        assert preview_params(P.ConvCRFParams(blur=blur), scale).blur == expected
        assert scale * expected >= blur


def test_a_coarser_preview_grid_gets_a_smaller_window_of_the_same_reach():
    # full run: 11 cells of 4 px = 44 px; preview at 1/3: cells of 3·2 = 6 px, 44 / 6 ≈ 7.3 → 7 cells (42 px)
    assert preview_params(P.ConvCRFParams(filter_size=11, blur=4), 3).filter_size == 7
    assert preview_params(P.ConvCRFParams(filter_size=11, blur=4), 2).filter_size == 11  # same grid: unchanged
    assert preview_params(P.ConvCRFParams(filter_size=3, blur=1), 5).filter_size == 3  # never below the spec's low
    assert preview_params(P.GaussianCRFParams(filter_size=11, blur=4), 6).filter_size == 7


def test_a_preview_solves_to_a_looser_tolerance():
    assert preview_params(P.GaussianCRFParams(tol=1e-4), 2).tol == pytest.approx(1e-3)
    assert preview_params(P.GaussianCRFParams(tol=0.05), 2).tol == 0.1  # the spec's high
    assert preview_params(P.GaussianCRFParams(tol=1e-4), 1).tol == 1e-4  # a full run is untouched


def test_preview_scale_follows_the_last_full_run_time():
    assert preview_scale(512, 1024) == 3  # the pixel budget alone
    assert preview_scale(512, 1024, full_ms=100.0) == 3  # fast enough already
    assert preview_scale(512, 1024, full_ms=1000.0) == 5  # √(1000 / 40) = 5: ~40 ms of work
    assert preview_scale(512, 1024, full_ms=1e6) == 512 // 32  # the shorter side stays >= 32 px


def test_a_full_run_records_its_time_and_sizes_the_next_preview(monkeypatch):
    monkeypatch.setattr(app.compute, "PREVIEW_MS", 1e-3)  # any measured time asks for a coarser preview
    cache = OperatorCache()
    full = compute(make_job(height=96, width=128), cache=cache, device="cpu")
    assert full.timing["scale"] == 1
    preview = compute(make_job(height=96, width=128, preview=True), cache=cache, device="cpu")
    assert preview.timing["scale"] == 96 // 32  # as coarse as allowed, not the pixel budget's 1
    assert preview.probs.shape == full.probs.shape


def test_should_stop_raises_cancelled_between_iterations():
    calls = []

    def stop_after_two() -> bool:
        return len(calls) >= 2

    with pytest.raises(crfcore.Cancelled):
        compute(make_job(iterations=10), device="cpu", progress=lambda d, t: calls.append(d),
                should_stop=stop_after_two)
    assert calls == [1, 2]


def test_compat_matrix_of_the_wrong_size_is_refused_with_the_fix():
    job = make_job(compat=((0.0, 1.0), (1.0, 0.0)))
    with pytest.raises(ValueError, match="unary has 3 classes, compat is 2×2"):
        compute(job, device="cpu")


def test_tolerance_solvers_are_warm_started_from_the_previous_solution():
    if "gaussian" not in available_methods():
        pytest.skip("the Gaussian CRF is not registered")
    cache, job = OperatorCache(), make_job("gaussian", tol=1e-6)
    compute(job, cache=cache, device="cpu")
    nearby = dataclasses.replace(job, params=P.with_overrides(job.params, w_smoothness=3.5))
    cold_steps, warm_steps = [], []
    cold = compute(nearby, device="cpu", progress=lambda d, t: cold_steps.append(d))
    warm = compute(nearby, cache=cache, device="cpu", progress=lambda d, t: warm_steps.append(d))
    assert len(warm_steps) < len(cold_steps)
    np.testing.assert_allclose(warm.probs, cold.probs, atol=1e-4)


def test_scribbles_become_hard_unaries_on_the_worker():
    job = make_job(height=12, width=15)
    scribbles = np.full((12, 15), -1, np.int16)
    scribbles[2:5, 3:9] = 2
    painted = dataclasses.replace(job, scribbles=scribbles)
    # reference: crfcore.unary.from_scribbles with the loaded unary as the prior, through the public API
    hard = crfcore.unary.from_scribbles(scribbles.astype(np.int64), 3, prior=job.unary)
    assert (hard[2, 2:5, 3:9] == 1).all()
    expected = crfcore.refine(job.image, hard, params=job.params, device="cpu")
    np.testing.assert_allclose(compute(painted, device="cpu").probs, expected.probs, atol=1e-5)
