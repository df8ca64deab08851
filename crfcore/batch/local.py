"""The ``"local"`` batch engine: worker processes on this machine that never outlive the batch.

* ``jobs`` workers (spawn context, one torch thread each unless ``RefineSpec.threads`` says more), each holding one
  :class:`~crfcore.batch.tasks.Refiner`; a worker is given one image at a time over its own pipe. One job, or a CUDA
  device (the GPU is shared by no one), runs in the calling process instead.
* A worker ends when its parent dies, however it dies (SIGKILL, the OOM killer): on Linux the kernel sends it
  SIGKILL (``prctl(PR_SET_PDEATHSIG)``); everywhere a watchdog thread ends it within :data:`WATCHDOG_S` of its
  parent changing. The multiprocessing resource tracker then sees its last pipe close and ends too.
* A worker that dies fails only the image it held, named with the signal or exit code; a fresh worker takes its
  place and the run goes on.
* On an exception in the caller (Ctrl-C), workers finish the image they hold and stop; queued images are dropped.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from multiprocessing.connection import Connection, wait

from .tasks import Outcome, RefineSpec, Refiner, Task, refine_file

__all__ = ["WATCHDOG_S", "local_engine"]

log = logging.getLogger(__name__)

WATCHDOG_S = 0.5
"""How often a worker checks that its parent is alive (where the kernel cannot tell it)."""

_STOP_WAIT_S = 60.0  # how long the engine waits for workers to finish their image before killing them
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """In a worker: end this process when ``parent`` dies (kernel signal on Linux, and a watchdog thread)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(WATCHDOG_S)
        os._exit(1)

    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _worker(conn: Connection, spec: RefineSpec, parent: int) -> None:
    """A worker process: refine each task received until ``None`` or the pipe closes. Ctrl-C is the parent's to
    handle (it lets the image in hand finish), so the worker ignores SIGINT."""
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    refiner = Refiner(spec)
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        conn.send(refine_file(task, refiner))


class _Slot:
    """One worker process and the task it holds."""

    def __init__(self, ctx: mp.context.SpawnContext, spec: RefineSpec) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker, args=(child, spec, os.getpid()), daemon=True,
                                   name="crfcore-batch-worker")
        self.process.start()
        child.close()
        self.task: Task | None = None

    def give(self, task: Task) -> None:
        self.task = task
        self.conn.send(task)

    def death(self) -> str:
        """Why the worker ended (after it has), for the image it held."""
        self.process.join()
        code = self.process.exitcode
        if code is not None and code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exited with status {code}"
        hint = " (out of memory? the OOM killer sends SIGKILL)" if code == -signal.SIGKILL else ""
        return (f"the worker process refining it died ({how}{hint}); the other images went on. Run the batch again "
                f"to retry it, or refine it alone with `crfcore refine` to see the failure")

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass


def local_engine(tasks: Sequence[Task], spec: RefineSpec, jobs: int, emit: Callable[[Outcome], None]) -> None:
    """The ``"local"`` engine of :data:`crfcore.batch.ENGINES` (see the module docstring)."""
    if jobs == 1 or spec.device == "cuda":
        if jobs > 1:
            log.info("device cuda: images run one at a time in this process (the GPU is not shared)")
        refiner = Refiner(spec)
        for task in tasks:
            emit(refine_file(task, refiner))
        return
    Refiner(replace(spec, threads=None))  # fail fast, here, on a bad preset or device rather than in every worker
    ctx = mp.get_context("spawn")
    worker_spec = replace(spec, threads=spec.threads or 1)
    queue = deque(tasks)
    slots = [_Slot(ctx, worker_spec) for _ in range(min(jobs, len(queue)))]
    try:
        for slot in slots:
            slot.give(queue.popleft())
        while any(s.task is not None for s in slots):
            busy = [s for s in slots if s.task is not None]
            ready = set(wait([s.conn for s in busy] + [s.process.sentinel for s in busy]))
            for k, slot in enumerate(slots):
                if slot.task is None or (slot.conn not in ready and slot.process.sentinel not in ready):
                    continue
                outcome = _receive(slot)
                if outcome is None:  # the worker died holding the task: fail it alone, go on with a fresh one
                    emit(Outcome(slot.task, "failed", slot.death()))
                    slot.conn.close()
                    slots[k] = slot = _Slot(ctx, worker_spec)
                else:
                    emit(outcome)
                    slot.task = None
                    if not slot.process.is_alive():  # it sent its outcome, then died: replace it too
                        slot.process.join()
                        slot.conn.close()
                        slots[k] = slot = _Slot(ctx, worker_spec)
                if queue:
                    slot.give(queue.popleft())
    finally:
        _shut_down(slots)


def _receive(slot: _Slot) -> Outcome | None:
    """The outcome the slot's worker sent, or None when it died without sending one."""
    try:
        if slot.conn.poll():
            return slot.conn.recv()
    except (EOFError, OSError):
        return None
    return None


def _shut_down(slots: list[_Slot]) -> None:
    """Ask every worker to stop after its image, wait, then kill what is left (nothing outlives the engine)."""
    for slot in slots:
        slot.stop()
    deadline = time.monotonic() + _STOP_WAIT_S
    for slot in slots:
        slot.process.join(max(0.0, deadline - time.monotonic()))
        if slot.process.is_alive():
            slot.process.kill()
            slot.process.join()
        slot.conn.close()
