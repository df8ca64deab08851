"""``crf-studio --selftest [FOLDER]``: prove that an installed app (frozen by PyInstaller, or not) works, in one run.

The run takes the app's real start-up path (:func:`app.main.main`): the main window is created and shown, the folder
given on the command line (default: the bundled samples) is opened, the compute engine is imported on its thread after
the first paint (:mod:`app.engine`) and the first image refined by the window's worker. The self test then checks
what a broken bundle gets wrong: the window reaches the screen (Qt's platform plugin loads), the engine loads (no
module is missing), the refinement finishes with labels of the image's size that keep at least :data:`MIN_KEPT` of the
coarse mask (the numeric libraries work), the mask round-trips through a PNG file (the image plugins work), the
package metadata is there, the settings file lies in the platform's config location, and, when frozen, nothing was
written into the application's folder. It prints one line with the start-up and refinement times and returns 0, or
prints ``crf-studio --selftest FAILED: <what and the fix>`` to stderr and returns 1.

Without a screen (Linux with neither ``DISPLAY`` nor ``WAYLAND_DISPLAY``) Qt's ``offscreen`` platform is selected
before the application object exists, so the self test runs on build machines and CI.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Callable, MutableMapping

import numpy as np

if TYPE_CHECKING:
    from .compute import RefineResult
    from .document import ImageDocument
    from .window import MainWindow

__all__ = ["MIN_KEPT", "TIMEOUT_S", "SelftestError", "Selftest", "use_offscreen_without_display",
           "seconds_since_process_start", "settings_file", "frozen_app_dir"]

_log = logging.getLogger(__name__)

DISTRIBUTION = "crf-studio"
MIN_KEPT = 0.5  # fraction of the coarse mask's labelled pixels the refinement must keep; a CRF moves boundaries
TIMEOUT_S = 300.0  # seconds for the window to appear and for the refinement to finish, each
_POLL_MS = 20


class SelftestError(RuntimeError):
    """A self-test check failed; the message says what and how to fix it."""


def use_offscreen_without_display(environ: MutableMapping[str, str] | None = None, *,
                                  platform: str = sys.platform) -> bool:
    """Select Qt's ``offscreen`` platform when there is no screen; True if it did.

    Only on Linux and only when neither ``DISPLAY`` nor ``WAYLAND_DISPLAY`` is set and ``QT_QPA_PLATFORM`` is unset
    (an explicit choice is kept). Must run before the ``QApplication`` exists. ``environ`` defaults to ``os.environ``.
    """
    env = os.environ if environ is None else environ
    if not platform.startswith("linux") or env.get("QT_QPA_PLATFORM"):
        return False
    if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return False
    env["QT_QPA_PLATFORM"] = "offscreen"
    return True


def seconds_since_process_start() -> float | None:
    """Seconds since this process was created (Linux ``/proc``, 10 ms resolution), or None where unknown."""
    try:
        stat = Path("/proc/self/stat").read_text()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces; fields restart after it
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of proc(5): start time after boot, in ticks
    return max(0.0, uptime - started)


def frozen_app_dir() -> Path | None:
    """The folder holding the frozen executable (PyInstaller), or None when running from source."""
    return Path(sys.executable).resolve().parent if getattr(sys, "frozen", False) else None


def settings_file() -> str:
    """Where ``QSettings()`` writes for this application: a file path, or a registry key on Windows.

    Raises:
        SelftestError: the organisation or application name is unset (QSettings would fall back to
            "Unknown Organization"), or the file is not in the platform's config location.
    """
    from PySide6.QtCore import QCoreApplication, QSettings, QStandardPaths

    if not QCoreApplication.organizationName() or not QCoreApplication.applicationName():
        raise SelftestError("the QApplication has no organisation or application name, so QSettings would write "
                            "under 'Unknown Organization'; set both in app.main before creating QSettings.")
    where = QSettings().fileName()
    if where.startswith("\\HKEY_"):  # Windows' native format: the user's registry hive, never beside the program
        return where
    config = Path(QStandardPaths.writableLocation(QStandardPaths.StandardLocation.GenericConfigLocation))
    if not Path(where).resolve().is_relative_to(config.resolve()):
        raise SelftestError(f"settings go to {where}, outside the platform's config location {config}; use the "
                            f"default QSettings() format and scope.")
    return where


def _files_under(root: Path) -> set[str]:
    return {str(Path(dirpath, name).relative_to(root)) for dirpath, _dirs, names in os.walk(root) for name in names}


class Selftest:
    """One self-test run, in two halves around the window's creation (see :func:`app.main.main`).

    ``Selftest()`` must be made before the ``QApplication``: it selects the offscreen platform if there is no
    screen and lists the files of ``watch`` (default: the frozen app's folder, None from source). :meth:`run` takes
    the shown window, which has opened its folder, and performs the checks.
    """

    def __init__(self, *, watch: Path | None = None) -> None:
        self.offscreen = use_offscreen_without_display()
        self.started = time.perf_counter()
        self.watch = watch if watch is not None else frozen_app_dir()
        self._before = _files_under(self.watch) if self.watch is not None else set()

    def run(self, window: "MainWindow", *, out: Path | None = None, timeout_s: float = TIMEOUT_S) -> int:
        """Check the window's start-up and first refinement; write the mask into ``out`` (default: a new temp dir).

        Prints one summary line to stdout and returns 0, or prints the failure to stderr and returns 1. The window
        is closed either way.
        """
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s}.")
        try:
            summary = self._checks(window, out, timeout_s)
        except SelftestError as exc:
            print(f"crf-studio --selftest FAILED: {exc}", file=sys.stderr)
            return 1
        except Exception as exc:  # a broken bundle fails in ways no check foresees; report them all the same way
            _log.exception("self test crashed")
            print(f"crf-studio --selftest FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        finally:
            window.close()
        print(summary, flush=True)
        return 0

    def _checks(self, window: "MainWindow", out: Path | None, timeout_s: float) -> str:
        from crfcore.labels import VOID

        shown_s = self._wait_shown(window, timeout_s)
        _wait_engine(window, timeout_s)
        version = _version()
        doc, result = _wait_refined(window, timeout_s)
        labels = doc.labels
        height, width = doc.image.shape[:2]
        if labels.shape != (height, width) or labels.min() < 0 or labels.max() >= doc.num_classes:
            raise SelftestError(f"the refinement gave labels of shape {labels.shape} in {labels.min()}..."
                                f"{labels.max()}, expected ({height}, {width}) in 0..{doc.num_classes - 1}.")
        labelled = doc.before_labels != VOID
        kept = float(np.mean(labels[labelled] == doc.before_labels[labelled])) if labelled.any() else 1.0
        if kept < MIN_KEPT:
            raise SelftestError(f"the refinement kept {kept:.0%} of the coarse mask's labels, expected at least "
                                f"{MIN_KEPT:.0%}; compare with `crfcore refine` on the same files: if it keeps more, "
                                f"the numeric libraries in this build compute wrong results.")
        mask_path = _write_mask(labels, doc.entry.stem, out)
        settings = settings_file()
        if self.watch is not None:
            added = sorted(_files_under(self.watch) - self._before)
            if added:
                raise SelftestError(f"the app wrote {len(added)} file(s) into its own folder {self.watch}: "
                                    f"{', '.join(added[:5])}; write to the user's config or temp location instead.")
        from crfcore.affinity.fused import fused_kernel

        t = result.timing
        screen = "offscreen" if self.offscreen else os.environ.get("QT_QPA_PLATFORM") or "native"
        return (f"crf-studio {version} selftest OK: window shown ({screen}) {shown_s:.2f} s after "
                f"{'process start' if seconds_since_process_start() is not None else '--selftest began'}; "
                f"refined {doc.entry.stem} ({width}×{height}, {doc.num_classes} classes) with {result.method} on "
                f"{t['device']} in {t['total_ms']:.0f} ms (build {t['build_ms']:.0f} ms, iterations "
                f"{t['iterations_ms']:.0f} ms; compiled window update: {fused_kernel()}), {kept:.1%} of the "
                f"coarse mask kept; mask {mask_path}; "
                f"settings {settings}")

    def _wait_shown(self, window: "MainWindow", timeout_s: float) -> float:
        """Seconds from process start (or from :class:`Selftest`'s creation) until the window is exposed."""
        def exposed() -> bool:
            handle = window.windowHandle()
            return handle is not None and handle.isExposed()

        if not window.isVisible():
            raise SelftestError("the main window was never shown.")
        if not _process_events_until(exposed, timeout_s):
            raise SelftestError(f"the main window was not exposed within {timeout_s:.0f} s; Qt's platform plugin "
                                f"({os.environ.get('QT_QPA_PLATFORM') or 'native'}) does not draw. Try "
                                f"QT_QPA_PLATFORM=offscreen, or check that the bundle has Qt's platforms/ plugins.")
        since_start = seconds_since_process_start()
        return since_start if since_start is not None else time.perf_counter() - self.started


def _process_events_until(done: Callable[[], bool], timeout_s: float) -> bool:
    """Run the GUI event loop until ``done()`` is true (True) or ``timeout_s`` passes (False)."""
    from PySide6.QtCore import QCoreApplication, QEventLoop

    deadline = time.perf_counter() + timeout_s
    while not done():
        if time.perf_counter() > deadline:
            return False
        QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, _POLL_MS)
        time.sleep(_POLL_MS / 1000)
    return True


def _wait_engine(window: "MainWindow", timeout_s: float) -> None:
    """Wait for the compute engine the window imports after its first paint (:mod:`app.engine`)."""
    if not _process_events_until(lambda: window.engine_ready or bool(window.engine_error), timeout_s):
        raise SelftestError(f"the compute engine (PyTorch, crfcore) did not load within {timeout_s:.0f} s.")
    if window.engine_error:
        raise SelftestError(window.engine_error)


def _wait_refined(window: "MainWindow", timeout_s: float) -> tuple["ImageDocument", "RefineResult"]:
    """The window's document and its first full refinement, once the worker is idle."""
    failures: list[str] = []
    window.scheduler.failed.connect(lambda _rid, message: failures.append(message))
    if window.document is None:
        raise SelftestError(f"no image was opened: {window.message.text()}")
    if window.document.job() is None:  # no unary, or starting from strokes with none painted
        raise SelftestError(f"nothing to refine: {window.message.text()}")

    def finished() -> bool:
        doc = window.document
        idle = not window.scheduler.busy and not window.scheduler.pending
        return bool(failures) or idle and doc.result is not None and not doc.result.preview

    if not _process_events_until(finished, timeout_s):
        raise SelftestError(f"the refinement did not finish within {timeout_s:.0f} s.")
    if failures:
        raise SelftestError(f"the refinement failed: {failures[-1]}")
    return window.document, window.document.result


def _version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise SelftestError(f"the {DISTRIBUTION} package metadata is missing, so the app cannot tell its version; "
                            f"install the package (pip install -e .) or, for a frozen build, keep "
                            f"copy_metadata({DISTRIBUTION!r}) in packaging/crf_studio.spec.") from None


def _write_mask(labels: np.ndarray, stem: str, out: Path | None) -> Path:
    """Save ``labels`` as ``<out>/<stem>_refined.png`` and read it back; the path written."""
    from crfcore.io import load_mask, save_mask

    folder = Path(tempfile.mkdtemp(prefix="crf-studio-selftest-")) if out is None else out
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}_refined.png"
    save_mask(path, labels)
    if not np.array_equal(load_mask(path), labels):
        raise SelftestError(f"the mask written to {path} reads back different; the PNG codec in this build is "
                            f"broken.")
    return path
