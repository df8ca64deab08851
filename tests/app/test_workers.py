"""RefineScheduler: debouncing, stale-result dropping, cancellation and readable errors."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch

import app.workers
import crfcore
from app.compute import RefineJob, compute
from app.workers import RefineScheduler, TaskRunner, describe_error
from crfcore import params as P
from tests.app.conftest import TIMEOUT


@pytest.fixture
def job() -> RefineJob:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)
    unary = crfcore.unary.from_labels(rng.integers(0, 2, (24, 30)), 2)
    return RefineJob(image=image, unary=unary, method="convcrf", params=P.ConvCRFParams(), image_key="k")


@pytest.fixture
def scheduler(qtbot):
    sched = RefineScheduler(device="cpu", debounce_ms=50)
    yield sched
    sched.shutdown()


def test_a_burst_of_scheduled_requests_runs_the_first_at_once_and_the_last_after_the_interval(scheduler, job,
                                                                                                qtbot):
    started, delivered = [], []
    scheduler.started.connect(lambda rid, preview: started.append(rid))
    scheduler.finished.connect(lambda rid, result: delivered.append(result))
    burst = [dataclasses.replace(job, version=v) for v in range(5)]
    scheduler.schedule(burst[0])
    assert started == [1] and not scheduler.pending  # the leading edge: no wait
    for j in burst[1:]:
        scheduler.schedule(j)
    assert started == [1] and scheduler.pending  # the rest wait for the interval and collapse into the latest
    qtbot.waitUntil(lambda: not scheduler.busy and not scheduler.pending, timeout=TIMEOUT)
    assert started == [1, 2]
    assert [r.version for r in delivered] in ([0, 4], [4])  # 1 may finish before 2 starts; 1..3 never run


def test_a_request_scheduled_after_a_quiet_interval_runs_at_once(scheduler, job, qtbot):
    with qtbot.waitSignal(scheduler.finished, timeout=TIMEOUT):
        scheduler.schedule(job)
    qtbot.wait(2 * scheduler._timer.interval())
    started = []
    scheduler.started.connect(lambda rid, preview: started.append(rid))
    scheduler.schedule(job)
    assert started == [2]
    qtbot.waitUntil(lambda: not scheduler.busy, timeout=TIMEOUT)


def test_only_the_latest_request_is_delivered(scheduler, job, qtbot, monkeypatch):
    gate = threading.Event()

    def gated(j, **kwargs):
        gate.wait(5)
        return compute(j, **kwargs)

    monkeypatch.setattr(app.workers, "compute", gated)
    delivered, cancelled = [], []
    scheduler.finished.connect(lambda rid, result: delivered.append(rid))
    scheduler.cancelled.connect(cancelled.append)
    first = scheduler.submit(job)
    second = scheduler.submit(job)
    gate.set()
    qtbot.waitUntil(lambda: not scheduler.busy, timeout=TIMEOUT)
    assert (first, second) == (1, 2)
    assert delivered == [2] and cancelled == []


def test_cancel_stops_the_running_request(scheduler, job, qtbot, monkeypatch):
    gate = threading.Event()

    def gated(j, **kwargs):
        gate.wait(5)
        return compute(j, **kwargs)

    monkeypatch.setattr(app.workers, "compute", gated)
    delivered = []
    scheduler.finished.connect(lambda rid, result: delivered.append(rid))
    with qtbot.waitSignal(scheduler.busy_changed, timeout=TIMEOUT):
        scheduler.submit(job)
    with qtbot.waitSignal(scheduler.cancelled, timeout=TIMEOUT) as stopped:
        scheduler.cancel()
        gate.set()
    assert stopped.args == [1] and delivered == []


def test_a_failure_arrives_as_a_one_line_message(scheduler, job, qtbot, monkeypatch):
    def broken(j, **kwargs):
        raise RuntimeError("lattice exploded\nmore detail")

    monkeypatch.setattr(app.workers, "compute", broken)
    with qtbot.waitSignal(scheduler.failed, timeout=TIMEOUT) as failed:
        scheduler.submit(job)
    assert failed.args == [1, "RuntimeError: lattice exploded"]
    assert not scheduler.busy


def make_warm_job() -> RefineJob:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)  # preview factors 1 to 3
    unary = crfcore.unary.from_labels(rng.integers(0, 2, (96, 128)), 2)
    return RefineJob(image=image, unary=unary, method="convcrf", params=P.ConvCRFParams(), image_key="warm")


def test_a_full_result_is_followed_by_a_preview_warm_up_17(scheduler, qtbot):
    job = make_warm_job()
    busy, refining = [], []
    scheduler.busy_changed.connect(busy.append)
    scheduler.refining_changed.connect(refining.append)
    with qtbot.waitSignal(scheduler.finished, timeout=TIMEOUT):
        scheduler.submit(job)
    assert scheduler.busy and busy == [True]  # the warm-up began before the result was emitted: busy throughout
    assert not scheduler.refining and refining == [True, False]  # ... but nothing for Cancel to stop
    qtbot.waitUntil(lambda: not scheduler.busy, timeout=TIMEOUT)
    refiner = scheduler._refiners.get(job, torch.device("cpu"))
    assert busy == [True, False] and refiner.preview_settled("convcrf")
    with qtbot.waitSignal(scheduler.finished, timeout=TIMEOUT) as preview:
        scheduler.submit(dataclasses.replace(job, preview=True))
    assert preview.args[1].timing["cached"]  # the first preview found its operator built
    qtbot.waitUntil(lambda: not scheduler.busy, timeout=TIMEOUT)
    with qtbot.waitSignal(scheduler.finished, timeout=TIMEOUT):
        scheduler.submit(dataclasses.replace(job, params=P.ConvCRFParams(w_appearance=30.0)))
    qtbot.waitUntil(lambda: not scheduler.busy, timeout=TIMEOUT)
    assert busy == [True, False] * 3  # once per image and refiner: not after a preview nor after a later full run


def test_a_request_cancels_the_warm_up_17(scheduler, qtbot, monkeypatch):
    gate, outcomes, real = threading.Event(), [], app.workers.warm

    def gated(j, **kwargs):
        gate.wait(5)
        try:
            return real(j, **kwargs)
        except crfcore.Cancelled:
            outcomes.append("cancelled")
            raise

    monkeypatch.setattr(app.workers, "warm", gated)
    job = make_warm_job()
    delivered = []
    scheduler.finished.connect(lambda rid, result: delivered.append(result.preview))
    scheduler.finished.connect(lambda rid, result: scheduler.submit(dataclasses.replace(job, preview=True))
                               if rid == 1 else None)  # a drag at once
    scheduler.submit(job)
    qtbot.waitUntil(lambda: len(delivered) == 1, timeout=TIMEOUT)
    gate.set()
    qtbot.waitUntil(lambda: not scheduler.busy, timeout=TIMEOUT)
    assert delivered == [False, True] and outcomes == ["cancelled"]


def test_no_warm_up_when_turned_off_17(qtbot):
    quiet = RefineScheduler(device="cpu", debounce_ms=50, warm=False)
    busy = []
    quiet.busy_changed.connect(busy.append)
    job = make_warm_job()
    with qtbot.waitSignal(quiet.finished, timeout=TIMEOUT):
        quiet.submit(job)
    assert busy == [True, False] and not quiet._refiners.get(job, torch.device("cpu")).preview_scales
    quiet.shutdown()


def test_describe_error_keeps_validation_messages_and_explains_memory():
    assert describe_error(ValueError("theta_alpha=0 is out of range\nsecond line")) == "theta_alpha=0 is out of range"
    assert describe_error(RuntimeError("CUDA out of memory. Tried to allocate")).startswith("Out of memory")
    assert describe_error(KeyError()) == "KeyError"


def test_negative_debounce_is_refused():
    with pytest.raises(ValueError, match="debounce_ms must be >= 0"):
        RefineScheduler(debounce_ms=-1)


def test_describe_error_gives_system_errors_without_their_number():
    error = FileExistsError(17, "File exists", "/tmp/out")
    assert describe_error(error) == "File exists: /tmp/out"


def test_task_runner_relays_progress_results_errors_and_cancellation(qtbot):
    runner = TaskRunner()
    seen = []
    runner.progress.connect(seen.append)
    with qtbot.waitSignal(runner.finished, timeout=TIMEOUT) as finished:
        runner.start(lambda report: [report(k) for k in range(3)] and "done")
    assert finished.args == ["done"] and seen == [0, 1, 2] and not runner.busy

    def broken(report):
        raise ValueError("the output folder is a file\nmore")

    with qtbot.waitSignal(runner.failed, timeout=TIMEOUT) as failed:
        runner.start(broken)
    assert failed.args == ["the output folder is a file"]
    gate = threading.Event()

    def long(report):
        for step in range(1000):
            gate.wait(5)
            report(step)

    with qtbot.waitSignal(runner.cancelled, timeout=TIMEOUT):
        runner.start(long)
        with pytest.raises(ValueError, match="a task is still running"):
            runner.start(long)
        runner.cancel()
        gate.set()
    assert not runner.busy
    runner.wait()
