"""The compute engine: torch, crfcore's refiners and the app modules built on them, imported after the first paint.

``import torch`` alone takes 1.7 s warm; the first screen (the window with the folder's first image) needs none of
it, so :class:`~app.window.MainWindow` shows first and :class:`EngineLoader` imports the engine on a worker thread
(:func:`load`). What needs the engine (the refiner's sliders, Refine, the unary source, the network, export,
fine-tune) waits for :attr:`EngineLoader.ready`. This module itself imports neither torch nor crfcore.
"""

from __future__ import annotations

import logging
import threading
import time

from PySide6.QtCore import QObject, Signal

__all__ = ["ENGINE_MODULES", "EngineLoader", "load"]

_log = logging.getLogger(__name__)

ENGINE_MODULES = ("torch", "crfcore.refiners", "app.workers", "app.document")
"""Modules whose presence in ``sys.modules`` means the engine was imported (tests check that the first screen has
none of them)."""


def load() -> None:
    """Import the engine; cheap once done. Plain ``import`` statements, so that PyInstaller's analysis collects them.

    Raises:
        ImportError, OSError: a broken install (a missing or unloadable torch library).
    """
    import torch  # noqa: F401

    import crfcore.refiners  # noqa: F401

    from . import autosave, compute, document, network, network_jobs, preset_policy, workers  # noqa: F401
    from .widgets import refiner_panel, unary_picker  # noqa: F401


class EngineLoader(QObject):
    """Runs :func:`load` once on a daemon thread. Create it on the GUI thread and connect its signals with
    ``Qt.ConnectionType.QueuedConnection``: they are emitted on the import thread.

    Signals:
        ready(float): the engine is imported; the seconds the import took.
        failed(str): it could not be imported; the reason, with the fix where there is one.
    """

    ready = Signal(float)
    failed = Signal(str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Start importing (a second call does nothing)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="crf-studio-engine", daemon=True)
            self._thread.start()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the import thread has ended (True) or ``timeout_s`` passed (False); True if never started."""
        if self._thread is not None:
            self._thread.join(timeout_s)
            return not self._thread.is_alive()
        return True

    def _run(self) -> None:
        began = time.perf_counter()
        try:
            load()
        except Exception as exc:  # ImportError, OSError from a library, anything a broken install raises
            _log.exception("the compute engine could not be imported")
            self.failed.emit(f"the compute engine (PyTorch and crfcore) could not be loaded: {type(exc).__name__}: "
                             f"{exc}. Reinstall the app (`make run` or `pip install -e .`) or check that PyTorch "
                             f"imports: python -c 'import torch'.")
            return
        self.ready.emit(time.perf_counter() - began)
