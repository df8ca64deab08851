"""crfcore.ImageRefiner: the operator cache, previews, warm starts and held pixels, against crfcore.refine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import crfcore
import crfcore.image_refiner
from crfcore import params as P
from crfcore.image_refiner import (PREVIEW_FINER_AFTER, PREVIEW_FINER_AFTER_MAX, ImageRefiner, PreviewSizer,
                                   next_preview_scale, preview_bounds, preview_overhead, preview_params,
                                   preview_scale)


def make_input(height: int = 24, width: int = 30, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return image, crfcore.unary.from_labels(rng.integers(0, classes, (height, width)), classes)


def test_weight_changes_reuse_the_operator_and_theta_changes_rebuild_it():
    image, unary = make_input()
    refiner = ImageRefiner(image, device="cpu")
    first = refiner.refine(unary, "convcrf")
    reused = refiner.refine(unary, "convcrf", w_appearance=40.0)
    assert not first.timing["cached"] and reused.timing["cached"] and refiner.cached() == 1
    expected = crfcore.refine(image, unary, w_appearance=40.0, device="cpu")
    np.testing.assert_array_equal(reused.probs, expected.probs)
    assert not refiner.refine(unary, "convcrf", theta_alpha=20.0).timing["cached"] and refiner.cached() == 2


def test_the_cache_keeps_the_most_recently_used_operators():
    image, unary = make_input()
    refiner = ImageRefiner(image, device="cpu", cache_size=2)
    for theta in (10.0, 20.0, 30.0):
        refiner.refine(unary, theta_alpha=theta)
    assert refiner.cached() == 2
    assert refiner.refine(unary, theta_alpha=30.0).timing["cached"]
    assert not refiner.refine(unary, theta_alpha=10.0).timing["cached"]
    with pytest.raises(ValueError, match="cache_size must be >= 1"):
        ImageRefiner(image, cache_size=0)


def test_preview_runs_at_reduced_size_and_returns_full_size():
    image, unary = make_input(300, 400)
    assert preview_scale(300, 400) == 2 and preview_scale(100, 100) == 1
    result = ImageRefiner(image, device="cpu").refine(unary, preview=True)
    assert result.timing["preview_scale"] == 2
    assert result.probs.shape == (3, 300, 400) and result.labels.shape == (300, 400)
    np.testing.assert_allclose(result.probs.sum(0), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="preview must be None, True, False or a downsampling factor"):
        ImageRefiner(image, device="cpu").refine(unary, preview=0)


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
    monkeypatch.setattr(crfcore.image_refiner, "PREVIEW_MS", 1e-3)  # any measured time asks for a coarser preview
    image, unary = make_input(96, 128)
    refiner = ImageRefiner(image, device="cpu")
    full = refiner.refine(unary)
    assert full.timing["preview_scale"] == 1 and refiner.full_ms["convcrf"] > 0
    preview = refiner.refine(unary, preview=True)
    assert preview.timing["preview_scale"] == 96 // 32  # as coarse as allowed, not the pixel budget's 1
    assert preview.probs.shape == full.probs.shape
    again = ImageRefiner(image, device="cpu", full_ms=refiner.full_ms)  # times carried to a new refiner
    assert again.refine(unary, preview=True).timing["preview_scale"] == 96 // 32


def test_preview_bounds_are_the_pixel_budget_and_the_shortest_side():
    assert preview_bounds(512, 1024) == (3, 16)  # √(524288 / 65536) = 2.83 → 3; 512 // 32 = 16
    assert preview_bounds(100, 100) == (1, 3)
    assert preview_bounds(40, 5000) == (1, 1)  # too thin to shrink: the shorter side wins over the pixel budget


def test_an_over_budget_preview_goes_coarser_at_once_to_the_predicted_size_17():
    bounds = {"finest": 3, "coarsest": 16, "budget_ms": 40.0}
    assert next_preview_scale(3, [120.0], **bounds) == 6  # 3·√(120 / 40) = 5.2 → 6: ~120·9/36 = 30 ms
    assert next_preview_scale(4, [10.0, 41.0, 41.0], **bounds) == 5  # two over in a row; at least one step
    assert next_preview_scale(4, [10.0, 10.0, 90.0], **bounds) == 4  # one over among quick ones: a burst
    assert next_preview_scale(4, [10.0, 90.0, 60.0], **bounds) == 5  # judged by the quicker: 4·√(60/40) = 4.9
    assert next_preview_scale(12, [1e5], **bounds) == 16  # never past the coarsest
    assert next_preview_scale(4, [40.0], **bounds) == 4  # at the budget: unchanged


def test_a_preview_goes_finer_only_after_several_well_under_budget_17():
    bounds = {"finest": 3, "coarsest": 16, "budget_ms": 40.0}
    quick = 12.0  # at 1/5: predicted 12·25/16 = 18.75 ms at 1/4, within half the budget
    assert next_preview_scale(5, [quick] * PREVIEW_FINER_AFTER, **bounds) == 4
    assert next_preview_scale(5, [quick] * (PREVIEW_FINER_AFTER - 1), **bounds) == 5  # too few timed previews
    assert next_preview_scale(5, [13.0] * PREVIEW_FINER_AFTER, **bounds) == 5  # 20.3 ms at 1/4: not well under
    assert next_preview_scale(5, [quick, 30.0, quick], **bounds) == 5  # one slower among them holds it ...
    assert next_preview_scale(5, [30.0, quick, quick, quick], **bounds) == 5  # ... however far back it is
    assert next_preview_scale(3, [1.0] * PREVIEW_FINER_AFTER, **bounds) == 3  # never finer than the finest


def test_the_per_call_overhead_is_fitted_through_two_sizes_17():
    assert preview_overhead([]) == 0.0 and preview_overhead([(4, 50.0), (4, 60.0)]) == 0.0  # one size: ∝ pixels
    # a + b/s²: 30 + 320/16 = 50 at 1/4, 30 + 320/64 = 35 at 1/8 (any order; the full run at 1/1 counts as a size)
    assert preview_overhead([(4, 50.0), (8, 35.0)]) == pytest.approx(30.0)
    assert preview_overhead([(8, 35.0), (4, 50.0)]) == pytest.approx(30.0)
    assert preview_overhead([(1, 350.0), (4, 50.0)]) == pytest.approx(30.0)
    assert preview_overhead([(1, 350.0), (8, 35.0), (4, 50.0)]) == pytest.approx(30.0)
    assert preview_overhead([(1, 350.0), (5, 42.0), (6, 45.0)]) == pytest.approx(45 - 305 / 35)  # latest, widest
    assert preview_overhead([(8, 35.0), (5, 42.0), (4, 50.0)]) == pytest.approx(30.0)  # 1/8, not the nearer 1/5
    assert preview_overhead([(4, 50.0), (8, 60.0)]) == 50.0  # the finer size was not slower: nothing shrank
    assert preview_overhead([(1, 800.0), (4, 20.0)]) == 0.0  # fell faster than pixels: no overhead, not < 0
    with pytest.raises(ValueError, match=r"got \(0, 5.0\)"):
        preview_overhead([(0, 5.0)])


def test_an_over_budget_preview_jumps_past_the_overhead_to_the_size_that_fits_17():
    bounds = {"finest": 3, "coarsest": 16, "budget_ms": 40.0}
    assert next_preview_scale(4, [50.0], **bounds) == 5  # ∝ pixels: 4·√(50/40) = 4.5 → 5 (43 ms with a = 30)
    assert next_preview_scale(4, [50.0], overhead_ms=30.0, **bounds) == 6  # 4·√(20/10) = 5.7 → 6: 30 + 20·16/36
    assert next_preview_scale(4, [50.0], overhead_ms=45.0, **bounds) == 16  # the overhead alone is over budget
    assert next_preview_scale(4, [50.0], overhead_ms=1e3, **bounds) == 16  # (capped at the time itself)
    assert next_preview_scale(4, [20.0] * 3, overhead_ms=15.0, **bounds) == 4  # finer: ∝ pixels, not well under
    assert next_preview_scale(8, [5.0] * 3, overhead_ms=4.0, **bounds) == 4  # 8·√(5/20) = 4: straight there
    with pytest.raises(ValueError, match="overhead_ms=-1"):
        next_preview_scale(4, [1.0], finest=1, coarsest=8, overhead_ms=-1.0)


def test_the_sizer_fits_the_overhead_from_the_full_run_and_jumps_once_17():
    # the full run's build and solve took 350 ms; time = 30 + 320/s² (ms), so 1/4 takes 50 ms and only 1/6 and
    # coarser (38.9 ms) fit 40: the overhead-aware jump goes there at once, where time ∝ pixels went 4 → 5 → 6
    sizer = PreviewSizer(4, finest=3, coarsest=16, full_ms=350.0)
    assert not sizer.settled and sizer.overhead_ms == 0.0
    assert sizer.record(4, 400.0, budget_ms=40.0) == 4 and sizer.seen and not sizer.settled  # the first: built
    assert sizer.record(4, 50.0, budget_ms=40.0) == 6 and sizer.overhead_ms == pytest.approx(30.0)
    assert not sizer.seen and not sizer.settled
    assert sizer.record(6, 90.0, budget_ms=40.0) == 6  # its first: not counted
    assert sizer.record(6, 30 + 320 / 36, budget_ms=40.0) == 6 and sizer.settled
    plain = PreviewSizer(4, finest=3, coarsest=16)  # no full run: time ∝ pixels until a second size is timed
    assert [plain.record(4, 50.0, budget_ms=40.0) for _ in range(2)] == [4, 5]


def test_a_burst_neither_moves_the_size_nor_makes_the_overhead_17():
    sizer = PreviewSizer(8, finest=3, coarsest=16, full_ms=970.0)
    assert [sizer.record(8, ms, budget_ms=40.0) for ms in (200.0, 25.0, 25.0, 25.0, 86.0)] == [8] * 5  # one over
    # two over: the overhead comes from the median at 1/8 (25 ms) and the full run, a = 25 − 945·64/63/64 = 10 ms,
    # not from the burst (86 ms would make it 72: the coarsest); 8·√((86 − 10)/(40 − 10)) = 12.7 → 13
    assert sizer.record(8, 86.0, budget_ms=40.0) == 13 and sizer.overhead_ms == pytest.approx(10.0)


def test_preview_scale_rule_refuses_bad_arguments():
    with pytest.raises(ValueError, match="at least one preview"):
        next_preview_scale(4, [], finest=1, coarsest=8)
    with pytest.raises(ValueError, match="finest=5, coarsest=2"):
        next_preview_scale(4, [1.0], finest=5, coarsest=2)
    with pytest.raises(ValueError, match="finest=0"):
        PreviewSizer(2, finest=0, coarsest=2)


def test_preview_sizer_skips_the_first_preview_at_each_size_and_does_not_flip_17():
    sizer = PreviewSizer(4, finest=3, coarsest=16)
    assert sizer.record(4, 500.0, budget_ms=40.0) == 4  # the first at 1/4: built and solved cold, not counted
    assert sizer.record(4, 50.0, budget_ms=40.0) == 5  # over: coarser at once (4·√(50/40) = 4.5 → 5)
    assert sizer.record(5, 80.0, budget_ms=40.0) == 5  # the first at 1/5 (cold) is not counted either
    steady = [sizer.record(5, 32.0, budget_ms=40.0) for _ in range(20)]  # 50·16/25: under budget, not well under
    assert steady == [5] * 20
    assert sizer.record(7, 1e4, budget_ms=40.0) == 5  # a preview at a factor asked for explicitly: ignored
    # 8·25/16 = 12.5 ≤ 20 at 1/4, but the 32-ms times since the last change hold the size until they are the
    # last PREVIEW_FINER_AFTER_MAX no longer
    times = [sizer.record(5, 8.0, budget_ms=40.0) for _ in range(PREVIEW_FINER_AFTER_MAX)]
    assert times == [5] * (PREVIEW_FINER_AFTER_MAX - 1) + [4] and sizer.scale == 4


def test_a_finer_size_undone_by_a_slow_preview_waits_twice_as_long_next_time_17():
    sizer = PreviewSizer(5, finest=3, coarsest=16)
    fast, slow = 8.0, 45.0  # at 1/5: 12.5 ms predicted at 1/4 (well under 40); at 1/4: over 40

    def run(scale: int, ms: float, times: int) -> list[int]:
        return [sizer.record(scale, ms, budget_ms=40.0) for _ in range(times)]

    assert run(5, fast, PREVIEW_FINER_AFTER + 1)[-1] == 4  # the first at 1/5 not counted, then 3 well under
    assert run(4, slow, 2) == [4, 5] and sizer.finer_after == 2 * PREVIEW_FINER_AFTER  # undone: wait longer
    assert run(5, fast, 2 * PREVIEW_FINER_AFTER) == [5] * (2 * PREVIEW_FINER_AFTER)  # the first is not counted ...
    assert run(5, fast, 1) == [4]  # ... then 6 in a row
    for _ in range(4):  # flip again and again: the wait is capped
        run(4, slow, 2)
        run(5, fast, sizer.finer_after + 1)
    assert sizer.finer_after == PREVIEW_FINER_AFTER_MAX
    coarse = PreviewSizer(4, finest=3, coarsest=16)
    assert [coarse.record(4, 45.0, budget_ms=40.0) for _ in range(2)] == [4, 5]
    assert coarse.finer_after == PREVIEW_FINER_AFTER  # a coarser step not after a finer one: no longer wait


def test_previews_follow_their_own_times_per_method_17(monkeypatch):
    image, unary = make_input(96, 128)  # factors 1 (the pixel budget) to 3 (a 32-px shorter side)
    monkeypatch.setattr(crfcore.image_refiner, "PREVIEW_MS", 1e9)  # every preview is well under budget
    refiner = ImageRefiner(image, device="cpu", preview_scales={"convcrf": 3})
    steps = [refiner.refine(unary, preview=True).timing["preview_scale"] for _ in range(PREVIEW_FINER_AFTER + 3)]
    # the first at 1/3 is not counted; after a streak well under, straight to the finest predicted (1/1), no 1/2
    assert steps == [3] * (PREVIEW_FINER_AFTER + 1) + [1, 1] and refiner.preview_scales == {"convcrf": 1}
    monkeypatch.setattr(crfcore.image_refiner, "PREVIEW_MS", 1e-3)  # every preview is over budget
    assert [refiner.refine(unary, preview=True).timing["preview_scale"] for _ in range(2)] == [1, 3]  # one over
    assert refiner.refine(unary, "densecrf", preview=True).timing["preview_scale"] == 1  # its own sizer (no full run)
    assert refiner.preview_scales == {"convcrf": 3, "densecrf": 1}
    assert refiner.refine(unary, preview=2).timing["preview_scale"] == 2 and refiner.preview_scales["convcrf"] == 3


def test_tolerance_solvers_are_warm_started_from_the_previous_solution():
    image, unary = make_input()
    refiner = ImageRefiner(image, device="cpu")
    refiner.refine(unary, "gaussian", tol=1e-6)
    cold_steps, warm_steps = [], []
    cold = ImageRefiner(image, device="cpu").refine(unary, "gaussian", tol=1e-6, w_smoothness=3.5,
                                                    callback=lambda d, t, q: cold_steps.append(d))
    warm = refiner.refine(unary, "gaussian", tol=1e-6, w_smoothness=3.5, callback=lambda d, t, q: warm_steps.append(d))
    assert len(warm_steps) < len(cold_steps)
    np.testing.assert_allclose(warm.probs, cold.probs, atol=1e-4)


def test_a_preview_of_a_new_size_starts_from_the_last_solution_resampled_17():
    image, unary = make_input(96, 128)
    refiner = ImageRefiner(image, device="cpu")
    refiner.refine(unary, "gaussian", tol=1e-6, preview=3)
    cold_steps, warm_steps = [], []
    cold = ImageRefiner(image, device="cpu").refine(unary, "gaussian", tol=1e-6, preview=2,
                                                    callback=lambda d, t, q: cold_steps.append(d))
    warm = refiner.refine(unary, "gaussian", tol=1e-6, preview=2, callback=lambda d, t, q: warm_steps.append(d))
    assert len(warm_steps) < len(cold_steps)
    np.testing.assert_allclose(warm.probs, cold.probs, atol=1e-4)


def test_compat_matrix_of_the_wrong_size_is_refused_with_the_fix():
    image, unary = make_input()
    with pytest.raises(ValueError, match="unary has 3 classes, compat is 2×2; reset the preset's compat"):
        ImageRefiner(image, device="cpu").refine(unary, compat=((0.0, 1.0), (1.0, 0.0)))


def test_a_unary_of_another_size_is_refused():
    image, unary = make_input()
    with pytest.raises(ValueError, match="image is 24×30 but unary is 12×30"):
        ImageRefiner(image, device="cpu").refine(unary[:, :12])


@pytest.mark.parametrize("method", ["convcrf", "densecrf", "piecewise"])
def test_a_given_fixed_mask_holds_those_pixels_at_their_unary(method):
    image, unary = make_input()
    soft = (0.6 * unary + 0.4 / 3).astype(np.float32)  # nothing one-hot: "auto" holds no pixel
    fixed = np.zeros(soft.shape[1:], bool)
    fixed[5:12, 4:20] = True
    refiner = ImageRefiner(image, device="cpu")
    held = refiner.refine(soft, method, iterations=5, fixed=fixed)
    free = refiner.refine(soft, method, iterations=5)
    np.testing.assert_allclose(held.probs[:, fixed], soft[:, fixed], atol=1e-6)
    assert np.abs(free.probs[:, fixed] - soft[:, fixed]).max() > 1e-3


def test_the_gaussian_crf_refuses_a_fixed_mask_with_the_fix():
    image, unary = make_input()
    with pytest.raises(ValueError, match="cannot hold pixels fixed"):
        ImageRefiner(image, device="cpu").refine(unary, "gaussian", fixed=np.ones(unary.shape[1:], bool))


def test_a_fixed_mask_of_the_wrong_shape_is_refused():
    image, unary = make_input()
    with pytest.raises(ValueError, match=r"fixed must be a bool mask of shape \(H, W\)"):
        ImageRefiner(image, device="cpu").refine(unary, fixed=np.ones((3, 3), bool))


def test_batched_tensor_unaries_come_back_as_tensors_on_their_device():
    image, unary = make_input()
    batch = torch.from_numpy(np.stack([unary, unary[::-1].copy()]))
    result = ImageRefiner(image, device="cpu").refine(batch)
    assert isinstance(result.probs, torch.Tensor) and result.probs.shape == (2, 3, 24, 30)
    single = crfcore.refine(image, unary[::-1].copy(), device="cpu")
    np.testing.assert_array_equal(result.labels[1].numpy(), single.labels)


def test_a_preset_for_another_method_is_refused_naming_the_file(tmp_path):
    image, unary = make_input()
    path = tmp_path / "dense.json"
    P.save_preset(path, "densecrf", P.DenseCRFParams())
    with pytest.raises(ValueError, match=f"preset {path} is for method 'densecrf', not 'convcrf'"):
        crfcore.refine(image, unary, method="convcrf", params=path, device="cpu")


def test_warm_previews_settle_the_size_and_build_its_operator_17(monkeypatch):
    monkeypatch.setattr(crfcore.image_refiner, "PREVIEW_MS", 1e-3)  # every timed preview is over budget
    image, unary = make_input(96, 128)  # factors 1 to 3
    refiner = ImageRefiner(image, device="cpu")
    refiner.refine(unary)
    assert not refiner.preview_settled("convcrf")
    runs: list[int] = []
    assert refiner.warm_previews(unary, callback=lambda d, t, q: runs.append(d) if d == 1 else None) == 3
    assert len(runs) == 2 and refiner.preview_settled("convcrf")  # built at 1/3, then timed there: as coarse as allowed
    preview = refiner.refine(unary, preview=True)
    assert preview.timing["preview_scale"] == 3 and preview.timing["cached"]  # the first drag step finds it built
    assert refiner.warm_previews(unary, callback=lambda d, t, q: runs.append(d)) == 3 and len(runs) == 2  # settled
    with pytest.raises(ValueError, match="max_runs >= 1"):
        refiner.warm_previews(unary, max_runs=0)


def test_warm_previews_stop_when_cancelled_and_keep_what_they_built_17():
    image, unary = make_input(96, 128)
    refiner = ImageRefiner(image, device="cpu")

    def stop(done: int, total: int, q: object) -> None:
        raise crfcore.Cancelled()

    with pytest.raises(crfcore.Cancelled):
        refiner.warm_previews(unary, callback=stop)
    assert refiner.cached() == 1 and not refiner.preview_settled("convcrf")  # the operator built before the stop


def test_a_warmed_solve_is_timed_from_another_sizes_solution_not_its_own_17():
    image, unary = make_input(96, 128)
    refiner = ImageRefiner(image, device="cpu")
    refiner.refine(unary, "gaussian", tol=1e-6)
    iterations: list[int] = []  # per run: the CG iterations it took

    def count(done: int, total: int, q: object) -> None:
        if done == 1:
            iterations.append(0)
        iterations[-1] = done

    refiner.warm_previews(unary, "gaussian", tol=1e-6, max_runs=2, callback=count)
    assert len(iterations) == 2 and iterations[1] == iterations[0] > 0  # both from the full run's solution
    again: list[int] = []
    refiner.refine(unary, "gaussian", tol=1e-6, preview=True, callback=lambda d, t, q: again.append(d))
    assert again == []  # a plain repeat starts from its own size's solution: nothing left to solve
