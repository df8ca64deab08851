"""Refinements off the GUI thread: request ids, cancel tokens, debouncing and stale-result dropping (DESIGN.md §5).

Every request gets an increasing id. Submitting a new one cancels the running one (its token is checked before the
build, after it and between iterations) and only the latest id's result, error or cancellation reaches the GUI; the
others are dropped. :meth:`RefineScheduler.schedule` debounces (slider moves: the first request after a quiet
interval runs at once, later ones within the interval collapse into the latest, which runs when it ends), and
:meth:`RefineScheduler.submit` runs at once (a slider release, the Refine button). After the first full-resolution
result of an image with a refiner, while nothing else is asked for, the worker warms that refiner's previews of the
image (:func:`app.compute.warm`: their size settled and operators built; the scheduler stays busy meanwhile) so that
a drag's first steps find them ready; any request cancels that. One worker thread runs at a time, so builds never
compete for the CPU and the per-image refiners need no more than their own locks. Errors arrive as readable one-line messages, never
tracebacks (those go to the log).

:class:`TaskRunner` runs other long work the same way (export, fine-tuning): one task at a time on its own thread, a
``report`` callback that relays progress and raises ``crfcore.Cancelled`` once cancel was asked for, and readable
errors.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, QTimer, Signal, Slot

import crfcore

from .compute import RefineJob, RefineResult, Refiners, compute, needs_warm, warm

__all__ = ["DEBOUNCE_MS", "CancelToken", "describe_error", "RefineScheduler", "Report", "TaskRunner"]

_log = logging.getLogger(__name__)

DEBOUNCE_MS = 100  # scheduled requests run at most once per this interval (the first at once, the latest at its end)


def describe_error(exc: BaseException) -> str:
    """A one-line message for the status bar or a message box: what went wrong and, where known, the fix."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, MemoryError) or "out of memory" in text.lower():
        return ("Out of memory while refining; try a larger blur, a smaller filter size, fewer classes or a smaller "
                "image.")
    if isinstance(exc, OSError) and exc.strerror and exc.filename:  # the system's words, without "[Errno 17]"
        return f"{exc.strerror}: {exc.filename}"
    if isinstance(exc, (ValueError, TypeError, FileNotFoundError, KeyError)):
        return text.splitlines()[0]
    return f"{type(exc).__name__}: {text.splitlines()[0]}"


class CancelToken:
    """A flag shared by the GUI thread (sets it) and a worker (polls it); thread-safe."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


class _Relay(QObject):
    """Signals emitted from the worker thread, delivered queued to the scheduler in the GUI thread."""

    progress = Signal(int, int, int)
    done = Signal(int, object)
    failed = Signal(int, str)
    stopped = Signal(int)
    warmed = Signal(int)


class _RefineTask(QRunnable):
    def __init__(self, request_id: int, job: RefineJob, token: CancelToken, refiners: Refiners, relay: _Relay,
                 device: str | None) -> None:
        super().__init__()
        self.request_id, self.job, self.token, self.refiners, self.relay, self.device = (
            request_id, job, token, refiners, relay, device)

    def run(self) -> None:
        rid = self.request_id
        try:
            result = compute(self.job, refiners=self.refiners, device=self.device,
                             progress=lambda done, total: self.relay.progress.emit(rid, done, total),
                             should_stop=lambda: self.token.cancelled)
        except crfcore.Cancelled:
            self.relay.stopped.emit(rid)
        except Exception as exc:  # every failure must reach the GUI as a message, whatever its type
            _log.exception("refinement %d failed", rid)
            self.relay.failed.emit(rid, describe_error(exc))
        else:
            self.relay.done.emit(rid, result)


class _WarmTask(QRunnable):
    """:func:`app.compute.warm` of a job; its outcome is only logged (the previews it prepares report their own)."""

    def __init__(self, warm_id: int, job: RefineJob, token: CancelToken, refiners: Refiners, relay: _Relay,
                 device: str | None) -> None:
        super().__init__()
        self.warm_id, self.job, self.token, self.refiners, self.relay, self.device = (
            warm_id, job, token, refiners, relay, device)

    def run(self) -> None:
        try:
            factor = warm(self.job, refiners=self.refiners, device=self.device,
                          should_stop=lambda: self.token.cancelled)
            _log.debug("previews of %s warmed at 1/%d", self.job.method, factor)
        except crfcore.Cancelled:
            _log.debug("preview warm-up %d cancelled", self.warm_id)
        except Exception:  # a failure here is the next preview's to report; never the user's concern now
            _log.exception("preview warm-up %d failed", self.warm_id)
        finally:
            self.relay.warmed.emit(self.warm_id)


class RefineScheduler(QObject):
    """Runs :class:`~app.compute.RefineJob` s on a worker thread; only the latest request's outcome is emitted.

    Signals (all in the GUI thread):
        started(int, bool): ``(request id, preview)`` when a request is submitted.
        progress(int, int, int): ``(request id, done, total)`` iterations.
        finished(int, object): ``(request id, RefineResult)``.
        failed(int, str): ``(request id, readable message)``.
        cancelled(int): the latest request stopped because of :meth:`cancel`.
        busy_changed(bool): whether any request is still running (a superseded one may still be finishing) or the
            previews are being warmed after a full result (``warm``; cancelled by any request).
        refining_changed(bool): whether any request is still running, warm-ups aside (what Cancel can stop).
    """

    started = Signal(int, bool)
    progress = Signal(int, int, int)
    finished = Signal(int, object)
    failed = Signal(int, str)
    cancelled = Signal(int)
    busy_changed = Signal(bool)
    refining_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None, *, debounce_ms: int = DEBOUNCE_MS,
                 device: str | None = None, warm: bool = True) -> None:
        super().__init__(parent)
        if debounce_ms < 0:
            raise ValueError(f"debounce_ms must be >= 0, got {debounce_ms}.")
        self.device = device
        self.warm = warm
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._refiners = Refiners()
        self._relay = _Relay(self)
        self._relay.progress.connect(self._on_progress, Qt.ConnectionType.QueuedConnection)
        self._relay.done.connect(self._on_done, Qt.ConnectionType.QueuedConnection)
        self._relay.failed.connect(self._on_failed, Qt.ConnectionType.QueuedConnection)
        self._relay.stopped.connect(self._on_stopped, Qt.ConnectionType.QueuedConnection)
        self._relay.warmed.connect(self._on_warmed, Qt.ConnectionType.QueuedConnection)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(debounce_ms)
        self._timer.timeout.connect(self._submit_pending)
        self._pending: RefineJob | None = None
        self._latest = 0
        self._token: CancelToken | None = None
        self._running: set[int] = set()  # request ids, and warm-up ids (negative) while they run
        self._jobs: dict[int, RefineJob] = {}  # running requests' jobs: a full one's is warmed after it
        self._warm_id = 0

    @property
    def latest_id(self) -> int:
        """Id of the most recent request (0 before the first)."""
        return self._latest

    @property
    def busy(self) -> bool:
        """A request or a warm-up runs on the worker."""
        return bool(self._running)

    @property
    def refining(self) -> bool:
        """A request runs on the worker (warm-ups aside)."""
        return any(rid > 0 for rid in self._running)

    @property
    def pending(self) -> bool:
        """True while a scheduled request waits for the debounce interval to end."""
        return self._pending is not None

    def schedule(self, job: RefineJob) -> None:
        """Run ``job`` at once if nothing was scheduled within the debounce interval, else when the interval ends,
        unless a later request replaces it first. A slider drag thus refines at its first step, then at most once
        per interval, and always ends on its latest position."""
        if self._timer.isActive():
            self._pending = job
            return
        self._timer.start()
        self._start(job)

    def submit(self, job: RefineJob) -> int:
        """Run ``job`` now, cancelling the running request and any scheduled one; returns its id."""
        self._timer.stop()
        self._pending = None
        return self._start(job)

    def _start(self, job: RefineJob) -> int:
        if self._token is not None:
            self._token.cancel()
        self._latest += 1
        self._token = CancelToken()
        was_busy, was_refining = self.busy, self.refining
        self._running.add(self._latest)
        self._jobs[self._latest] = job
        self._pool.start(_RefineTask(self._latest, job, self._token, self._refiners, self._relay, self.device))
        self.started.emit(self._latest, job.preview)
        if not was_busy:
            self.busy_changed.emit(True)
        if not was_refining:
            self.refining_changed.emit(True)
        return self._latest

    def cancel(self) -> None:
        """Drop a scheduled request and stop the running one at its next check; the last result stays."""
        self._timer.stop()
        self._pending = None
        if self._token is not None:
            self._token.cancel()

    def clear_cache(self) -> None:
        """Forget built operators (e.g. when the images change on disk)."""
        self._refiners.clear()

    def wait(self, msecs: int = -1) -> bool:
        """Block until no worker runs (tests, shutdown); True if that happened within ``msecs`` (-1: forever)."""
        return self._pool.waitForDone(msecs)

    def shutdown(self) -> None:
        """Cancel everything and wait for the worker to stop."""
        self.cancel()
        self.wait()

    @Slot()
    def _submit_pending(self) -> None:
        if self._pending is not None:
            job, self._pending = self._pending, None
            self._timer.start()  # a drag that goes on keeps the once-per-interval pace
            self._start(job)

    def _finish(self, request_id: int) -> bool:
        """Mark ``request_id`` done; True if it is the latest (its outcome should be emitted)."""
        self._running.discard(request_id)
        self._jobs.pop(request_id, None)
        if not self.refining:
            self.refining_changed.emit(False)
        if not self._running:
            self.busy_changed.emit(False)
        if request_id != self._latest:
            _log.debug("dropped the outcome of stale request %d (latest is %d)", request_id, self._latest)
            return False
        return True

    @Slot(int, int, int)
    def _on_progress(self, request_id: int, done: int, total: int) -> None:
        if request_id == self._latest:
            self.progress.emit(request_id, done, total)

    @Slot(int, object)
    def _on_done(self, request_id: int, result: RefineResult) -> None:
        job = self._jobs.get(request_id)
        if job is not None and not job.preview and request_id == self._latest:
            self._start_warm(job)  # before the result is emitted: busy throughout, never off and on again
        if self._finish(request_id):
            self.finished.emit(request_id, result)

    def _start_warm(self, job: RefineJob) -> None:
        """Warm the previews of ``job``'s image and method on the worker (:func:`app.compute.warm`), the first time
        that image is refined with that method (:func:`app.compute.needs_warm`), unless warming is off or another
        request waits. Any later request, or :meth:`cancel`, cancels it."""
        if not self.warm or self._pending is not None or not needs_warm(job, self._refiners, self.device):
            return
        self._token = CancelToken()
        self._warm_id -= 1
        self._running.add(self._warm_id)
        self._pool.start(_WarmTask(self._warm_id, job, self._token, self._refiners, self._relay, self.device))

    @Slot(int)
    def _on_warmed(self, warm_id: int) -> None:
        self._running.discard(warm_id)
        if not self._running:
            self.busy_changed.emit(False)

    @Slot(int, str)
    def _on_failed(self, request_id: int, message: str) -> None:
        if self._finish(request_id):
            self.failed.emit(request_id, message)

    @Slot(int)
    def _on_stopped(self, request_id: int) -> None:
        if self._finish(request_id):
            self.cancelled.emit(request_id)


Report = Callable[[Any], None]
"""``report(value)`` from a task: sends ``value`` to :attr:`TaskRunner.progress`; raises ``crfcore.Cancelled``
when the task was cancelled (call it between steps)."""


class _TaskRelay(QObject):
    progress = Signal(object)
    done = Signal(object)
    failed = Signal(str)
    stopped = Signal()


class _Task(QRunnable):
    def __init__(self, work: Callable[[Report], Any], token: CancelToken, relay: _TaskRelay) -> None:
        super().__init__()
        self.work, self.token, self.relay = work, token, relay

    def report(self, value: Any) -> None:
        if self.token.cancelled:
            raise crfcore.Cancelled()
        self.relay.progress.emit(value)

    def run(self) -> None:
        try:
            result = self.work(self.report)
        except crfcore.Cancelled:
            self.relay.stopped.emit()
        except Exception as exc:  # every failure must reach the GUI as a message, whatever its type
            _log.exception("task failed")
            self.relay.failed.emit(describe_error(exc))
        else:
            self.relay.done.emit(result)


class TaskRunner(QObject):
    """Runs one long task at a time on a worker thread (dialogs: export, fine-tuning).

    Signals (all in the GUI thread):
        progress(object): a value the task reported.
        finished(object): the task's return value.
        failed(str): a readable one-line message.
        cancelled(): the task stopped at a ``report`` call after :meth:`cancel`.
        busy_changed(bool): a task started (True) or ended, whatever the outcome (False).
    """

    progress = Signal(object)
    finished = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    busy_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._relay = _TaskRelay(self)
        self._relay.progress.connect(self.progress, Qt.ConnectionType.QueuedConnection)
        for signal, slot in ((self._relay.done, self._on_done), (self._relay.failed, self._on_failed),
                             (self._relay.stopped, self._on_stopped)):
            signal.connect(slot, Qt.ConnectionType.QueuedConnection)
        self._token: CancelToken | None = None

    @property
    def busy(self) -> bool:
        return self._token is not None

    def start(self, work: Callable[[Report], Any]) -> None:
        """Run ``work(report)`` on the worker thread; raises ``ValueError`` if a task is still running."""
        if self._token is not None:
            raise ValueError("a task is still running; cancel it or wait for it to finish first.")
        self._token = CancelToken()
        self._pool.start(_Task(work, self._token, self._relay))
        self.busy_changed.emit(True)

    def cancel(self) -> None:
        """Ask the running task to stop at its next ``report`` call."""
        if self._token is not None:
            self._token.cancel()

    def wait(self, msecs: int = -1) -> bool:
        """Block until no task runs; True if that happened within ``msecs`` (-1: forever)."""
        return self._pool.waitForDone(msecs)

    def _end(self) -> None:
        self._token = None
        self.busy_changed.emit(False)

    @Slot(object)
    def _on_done(self, result: Any) -> None:
        self._end()
        self.finished.emit(result)

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self._end()
        self.failed.emit(message)

    @Slot()
    def _on_stopped(self) -> None:
        self._end()
        self.cancelled.emit()
