"""app.compute hands jobs to per-image crfcore.ImageRefiners: equal to crfcore.refine, refiners kept per image,
scribbles made into hard unaries, stopping. The refiner's own behaviour (cache, previews) is tests/core's."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import crfcore
import crfcore.image_refiner
from app.compute import RefineJob, Refiners, compute, needs_warm, warm
from crfcore import params as P


def make_job(method: str = "convcrf", *, height: int = 24, width: int = 30, preview: bool = False,
             image_key: str = "test", **overrides) -> RefineJob:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    unary = crfcore.unary.from_labels(rng.integers(0, 3, (height, width)), 3)
    params = P.with_overrides(P.params_for(method)(), **overrides)
    return RefineJob(image=image, unary=unary, method=method, params=params, image_key=image_key, preview=preview)


def test_an_images_refiner_is_kept_and_reuses_its_operator():
    refiners = Refiners()
    job = make_job()
    first = compute(job, refiners=refiners, device="cpu")
    heavier = dataclasses.replace(job, params=P.with_overrides(job.params, w_appearance=40.0))
    reused = compute(heavier, refiners=refiners, device="cpu")
    assert not first.timing["cached"] and reused.timing["cached"] and len(refiners) == 1
    expected = crfcore.refine(job.image, job.unary, params=heavier.params, device="cpu")
    np.testing.assert_array_equal(reused.probs, expected.probs)


def test_refiners_keep_the_latest_images_and_the_times_of_dropped_ones(monkeypatch):
    monkeypatch.setattr(crfcore.image_refiner, "PREVIEW_MS", 1e-3)  # any measured time asks for a coarser preview
    refiners = Refiners(size=1)
    compute(make_job(height=96, width=128, image_key="a"), refiners=refiners, device="cpu")
    compute(make_job(height=96, width=128, image_key="b"), refiners=refiners, device="cpu")
    assert len(refiners) == 1  # "a" was dropped ...
    preview = compute(make_job(height=96, width=128, image_key="a", preview=True), refiners=refiners, device="cpu")
    assert preview.preview and preview.timing["preview_scale"] == 96 // 32  # ... but its full-run time still sizes previews
    assert refiners.get(make_job(height=96, width=128, image_key="a"), "cpu").preview_scales == {"convcrf": 3}
    with pytest.raises(ValueError, match="size must be >= 1"):
        Refiners(size=0)


def test_a_revisited_image_previews_at_the_size_its_previews_chose_17(monkeypatch):
    monkeypatch.setattr(crfcore.image_refiner, "PREVIEW_MS", 1e-3)  # every timed preview is over budget
    refiners = Refiners(size=1)
    job = make_job(height=96, width=128, image_key="a", preview=True)
    ran = [compute(job, refiners=refiners, device="cpu").timing["preview_scale"] for _ in range(2)]
    assert ran == [1, 1]  # no full run yet: the pixel budget's factor; the second, timed, asks for coarser
    assert refiners.get(job, "cpu").preview_scales == {"convcrf": 3}
    compute(make_job(height=96, width=128, image_key="b"), refiners=refiners, device="cpu")  # "a" is dropped ...
    assert compute(job, refiners=refiners, device="cpu").timing["preview_scale"] == 3  # ... its choice is not


def test_warm_settles_the_previews_of_an_image_and_method_once_17():
    refiners = Refiners()
    job = make_job(height=96, width=128, image_key="a")  # preview factors 1 to 3
    assert not needs_warm(job, refiners, "cpu")  # no refiner kept for the image yet: nothing is made to ask
    compute(job, refiners=refiners, device="cpu")
    assert needs_warm(job, refiners, "cpu")
    scale = warm(job, refiners=refiners, device="cpu")
    assert not needs_warm(job, refiners, "cpu") and refiners.get(job, "cpu").preview_scales == {"convcrf": scale}
    preview = compute(dataclasses.replace(job, preview=True), refiners=refiners, device="cpu")
    assert preview.timing["preview_scale"] == scale and preview.timing["cached"]
    small = make_job(image_key="small")  # 24×30: previews run at full size, nothing to warm
    compute(small, refiners=refiners, device="cpu")
    assert not needs_warm(small, refiners, "cpu")
    with pytest.raises(crfcore.Cancelled):
        warm(make_job(height=96, width=128, image_key="b"), refiners=refiners, device="cpu", should_stop=lambda: True)


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


def test_scribbles_become_hard_unaries_on_the_worker():
    job = make_job(height=12, width=15)
    scribbles = np.full((12, 15), -1, np.int16)
    scribbles[2:5, 3:9] = 2
    painted = dataclasses.replace(job, scribbles=scribbles)
    # reference: crfcore.unary.from_scribbles with the loaded unary as the prior, through the public API
    hard = crfcore.unary.from_scribbles(scribbles.astype(np.int64), 3, prior=job.unary)
    assert (hard[2, 2:5, 3:9] == 1).all()
    expected = crfcore.refine(job.image, hard, params=job.params, device="cpu")
    np.testing.assert_array_equal(compute(painted, device="cpu").probs, expected.probs)


def test_the_status_line_names_a_previews_size_17():
    from app.window import format_timing  # the window's status text of a result's timing

    preview = compute(make_job(height=300, width=400, preview=True), device="cpu")  # 2× under PREVIEW_PIXELS
    full = compute(make_job(height=24, width=30), device="cpu")
    assert preview.timing["preview_scale"] == 2 and format_timing(preview).endswith(" · preview at 1/2 size")
    assert "preview" not in format_timing(full)
