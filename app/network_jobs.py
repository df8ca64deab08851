"""The window's network unary source: which network a folder uses, and running it in the background.

:class:`NetworkJobs` holds the folder's :class:`~app.network.Network` and its class names, remembers them per folder
(``QSettings``, key ``network/<folder>``), and runs the network on a :class:`~app.workers.TaskRunner`: the image
shown first, then, when asked, every other image of the folder whose logits are not cached yet, with progress and
cancel between images. Each image's logits land in the project's cache (:func:`app.network.cache_file`) and are
announced by ``ready``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Sequence

from PySide6.QtCore import QObject, QSettings, Signal

from .folder import ImageEntry
from .network import Network, cache_file, cached, open_network, predict_image
from .workers import Report, TaskRunner

__all__ = ["NetworkJobs"]

_log = logging.getLogger(__name__)


class NetworkJobs(QObject):
    """The network of the open folder and its background runs.

    Signals:
        ready(str, object): ``(stem, cache path)``: that image's logits are cached.
        progress(int, int): ``(done, total)`` images of the running job.
        busy_changed(bool): a job started or ended.
        failed(str): loading or running the network failed; the message names the file and the fix.
        changed(): the network (or its classes) changed, or was dropped.
    """

    ready = Signal(str, object)
    progress = Signal(int, int)
    busy_changed = Signal(bool)
    failed = Signal(str)
    changed = Signal()

    def __init__(self, parent: QObject | None = None, *, device: str | None = None) -> None:
        super().__init__(parent)
        self.device = device
        self.network: Network | None = None
        self.classes: tuple[str, ...] = ()
        self.root: Path | None = None
        self.runner = TaskRunner(self)
        self.runner.progress.connect(self._on_report)
        self.runner.failed.connect(lambda message: self.failed.emit(f"The network failed: {message}"))
        self.runner.busy_changed.connect(self.busy_changed)
        self.runner.finished.connect(self._next)
        self.settings = QSettings()  # where the network of each folder is remembered (tests point it elsewhere)
        self._queue: list[ImageEntry] = []  # images to run after the current job

    @property
    def busy(self) -> bool:
        return self.runner.busy

    # --- which network ---------------------------------------------------------------------------------------------
    def set_folder(self, root: Path) -> None:
        """Follow the folder ``root``: cancel a running job; load the network remembered for it, if any."""
        self.cancel()
        self.root, self.network, self.classes = root, None, ()
        remembered = self.settings.value(self._settings_key(root))
        if isinstance(remembered, dict) and remembered.get("path"):
            path = Path(str(remembered["path"]))
            names = tuple(str(n) for n in (remembered.get("classes") or ()))
            try:
                self.use(open_network(path, device=self.device), names, remember=False)
            except (OSError, ValueError, RuntimeError) as exc:
                self.failed.emit(f"The network remembered for this folder cannot be loaded: {exc}")
        self.changed.emit()

    def use(self, network: Network | None, classes: Sequence[str] = (), *, remember: bool = True) -> None:
        """Make ``network`` (with ``classes`` names, C of them; empty: "class i") the folder's unary source, or
        drop it with None; remembered for the folder unless ``remember`` is False."""
        self.cancel()
        self.network, self.classes = network, tuple(classes)
        if remember and self.root is not None:
            key = self._settings_key(self.root)
            if network is None:
                self.settings.remove(key)
            else:
                self.settings.setValue(key, {"path": str(network.path.resolve()), "classes": list(self.classes)})
        self.changed.emit()

    @staticmethod
    def _settings_key(root: Path) -> str:
        return f"network/{str(Path(root).resolve()).replace('/', '|')}"

    # --- entries ---------------------------------------------------------------------------------------------------
    def cached_file(self, entry: ImageEntry) -> Path | None:
        """The cached logits of ``entry`` for the current network, or None (also without a network)."""
        if self.network is None or self.root is None:
            return None
        return cached(self.root, self.network.key, entry.stem)

    def entry_for(self, entry: ImageEntry) -> ImageEntry:
        """``entry`` with the network's cached probabilities as its probability map (and the network's class
        names), when they are cached; ``entry`` itself otherwise."""
        path = self.cached_file(entry)
        if path is None:
            return entry
        return dataclasses.replace(entry, probs=path, class_names=self.classes or None)

    # --- running ---------------------------------------------------------------------------------------------------
    def run(self, entries: Sequence[ImageEntry]) -> None:
        """Run the network on ``entries`` not cached yet, in order; after a running job when one runs."""
        if self.network is None or self.root is None:
            return
        todo = [e for e in entries if self.cached_file(e) is None]
        if not todo:
            return
        if self.runner.busy:
            queued = {e.stem for e in self._queue}
            self._queue += [e for e in todo if e.stem not in queued]
            return
        network, root = self.network, self.root
        total = len(todo)

        def work(report: Report) -> int:
            for done, entry in enumerate(todo):
                report(("start", done, total))
                path = predict_image(network, entry.image, cache_file(root, network.key, entry.stem))
                report(("ready", entry.stem, path))
            report(("start", total, total))
            return total

        self.runner.start(work)

    def _next(self, _result: object = None) -> None:
        queue, self._queue = self._queue, []
        if queue:
            self.run(queue)

    def cancel(self) -> None:
        """Stop the running job after the image in progress, and forget queued images."""
        self._queue = []
        self.runner.cancel()

    def _on_report(self, value: tuple) -> None:
        if value[0] == "ready":
            stem, path = value[1], value[2]
            current = self.network is not None and self.root is not None \
                and path == cache_file(self.root, self.network.key, stem)
            if current:  # not a late image of a folder or network left since
                self.ready.emit(stem, path)
        else:
            self.progress.emit(value[1], value[2])
