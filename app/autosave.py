"""Autosave: keeps a folder's project catalog (:mod:`crfcore.project`) in step with the documents the user edits.

What is saved, and when ("accepted", README "Editing"):

* every edit (a brush or eraser stroke, undo, redo) writes the image's scribbles at once, so a crash never loses a
  stroke;
* the first full-resolution refinement made from the inputs of an edit is saved as a mask revision, with the
  refiner's name and its parameters as the preset, and the edit as the note (``"brush"``, ``"undo"``, …);
* Accept (A) saves the mask as shown as a revision now (note ``"accepted"``): the way to keep a result reached by
  moving sliders alone, which is otherwise not saved;
* leaving an image (or closing the window) while an edit's refinement has not arrived saves the mask as shown,
  strokes clamped, with the note ``"<edit>, not refined"``.

Reopening the folder restores each image's latest revision and its scribbles (the undo history starts empty). The
project API stores mask revisions only, so the scribbles live beside the catalog as index PNGs,
``.crfstudio/scribbles/i<image id>.png`` (value = class + 1, 0 = unpainted), written atomically.

The catalog is created on the first save, not when a folder is merely browsed, so looking at a folder (the bundled
samples, a read-only share) writes nothing into it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal

from crfcore import io
from crfcore.project import CATALOG_DIR, Project, ProjectError

from .document import ImageDocument
from .scribbles import UNPAINTED

__all__ = ["SCRIBBLES_DIR", "ProjectSync"]

_log = logging.getLogger(__name__)

SCRIBBLES_DIR = "scribbles"  # inside the project's CATALOG_DIR


class ProjectSync(QObject):
    """The open folder's project, and the bookkeeping of which edit still waits for its refined mask.

    Signals:
        saved(int, str): ``(revision id, note)`` after a mask revision was written.
        error(str): a save or the catalog failed; the message says what and how to fix it. Autosave stays on and
            retries on the next edit.
    """

    saved = Signal(int, str)
    error = Signal(str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.root: Path | None = None
        self._project: Project | None = None
        self._document: ImageDocument | None = None
        self._pending: tuple[int, str] | None = None  # (document version, edit name) awaiting its refined mask

    @property
    def project(self) -> Project | None:
        """The open catalog, None until the folder has one (created by the first save)."""
        return self._project

    # --- folder ----------------------------------------------------------------------------------------------------
    def open_folder(self, root: str | Path) -> None:
        """Follow ``root``; its catalog is opened now if it exists (errors reach ``error``), else on the first save."""
        self.close()
        self.root = Path(root)
        if (self.root / CATALOG_DIR).is_dir():
            self._open()

    def close(self) -> None:
        """Save a pending edit and close the catalog."""
        self.flush()
        if self._project is not None:
            self._project.close()
            self._project = None
        self.root = None

    def _open(self) -> Project | None:
        if self._project is None and self.root is not None:
            try:
                self._project = Project.open(self.root)
            except (OSError, ProjectError) as exc:
                self.error.emit(f"Autosave cannot use the project in {self.root}: {exc}")
        return self._project

    # --- documents ---------------------------------------------------------------------------------------------
    def restore(self, document: ImageDocument) -> str:
        """Show ``document``'s latest saved mask and its scribbles; returns a status line, "" when nothing is saved.

        Scribbles saved without a mask (the process ended before their refinement arrived) are restored without a
        result, so the window refines them.
        """
        project = self._project
        if project is None or not document.has_unary:
            return ""
        try:
            ids = {record.path: record.id for record in project.images()}
            image_id = ids.get(document.entry.image.resolve())
            if image_id is None:
                return ""
            revision = project.latest_revision(image_id)
            labels = None if revision is None else project.load_revision(revision)
            scribbles = self._read_scribbles(image_id, document.image.shape[:2])
            if labels is None and scribbles is None:
                return ""
            document.restore(labels, scribbles, method="" if revision is None else revision.method or "")
        except (OSError, ValueError) as exc:
            self.error.emit(f"Cannot restore {document.entry.stem} from the project: {exc}")
            return ""
        if revision is None:
            if document is self._document:
                self._pending = (document.version, "restored strokes")  # their refined mask is saved on arrival
            return "restored the strokes (their refinement was not saved yet)"
        note = f", {revision.note}" if revision.note else ""
        return f"restored revision {revision.id} ({revision.method or 'no refiner'}{note})"

    def watch(self, document: ImageDocument | None) -> None:
        """Follow ``document``'s edits; a pending edit of the previous document is saved first."""
        self.flush()
        if self._document is not None:
            self._document.edited.disconnect(self._on_edited)
        self._document = document
        if document is not None:
            document.edited.connect(self._on_edited)

    def _on_edited(self, action: str) -> None:
        doc = self._document
        name = doc.undo_name if action == "edit" else action
        self._pending = (doc.version, name)
        self._save_scribbles(doc)

    def result_arrived(self) -> None:
        """Save the mask if this result is the refinement of the pending edit's inputs."""
        doc = self._document
        if self._pending is not None and doc is not None and doc.result_is_current \
                and doc.result.version == self._pending[0]:
            self._save_mask(doc, self._pending[1])
            self._pending = None

    def accept(self) -> int | None:
        """Save the current document's mask as shown (note ``"accepted"``); returns the revision id."""
        doc = self._document
        if doc is None or doc.labels is None:
            return None
        self._pending = None
        return self._save_mask(doc, "accepted")

    def flush(self) -> None:
        """Save a pending edit's mask as shown (its refinement has not arrived)."""
        if self._pending is not None and self._document is not None:
            self._save_mask(self._document, f"{self._pending[1]}, not refined")
        self._pending = None

    @property
    def pending(self) -> bool:
        """True while an edit waits for its refined mask."""
        return self._pending is not None

    # --- writing -----------------------------------------------------------------------------------------------
    def _image_id(self, doc: ImageDocument) -> int | None:
        project = self._open()
        if project is None:
            return None
        if not project.classes:
            project.classes = list(doc.class_names)
        return project.add_images([doc.entry.image])[0]

    def _save_mask(self, doc: ImageDocument, note: str) -> int | None:
        result = doc.result
        method = result.method if result is not None and result.method else None
        preset = result.params if result is not None and result.params is not None else None
        try:
            image_id = self._image_id(doc)
            if image_id is None:
                return None
            revision = self._project.save_mask(image_id, doc.labels, preset=preset, method=method, note=note)
        except (OSError, ValueError, TypeError) as exc:
            self.error.emit(f"Autosave could not save the mask of {doc.entry.stem}: {exc}")
            return None
        _log.info("saved %s as revision %d (%s)", doc.entry.stem, revision, note)
        self.saved.emit(revision, note)
        return revision

    def _scribbles_path(self, image_id: int) -> Path:
        return self.root / CATALOG_DIR / SCRIBBLES_DIR / f"i{image_id:06d}.png"

    def _save_scribbles(self, doc: ImageDocument) -> None:
        try:
            image_id = self._image_id(doc)
            if image_id is None:
                return
            path = self._scribbles_path(image_id)
            path.parent.mkdir(exist_ok=True)
            io.save_mask(path, doc.scribbles.astype(np.int32) - UNPAINTED)
        except (OSError, ValueError) as exc:
            self.error.emit(f"Autosave could not save the strokes of {doc.entry.stem}: {exc}")

    def _read_scribbles(self, image_id: int, shape: tuple[int, int]) -> np.ndarray | None:
        path = self._scribbles_path(image_id)
        if not path.is_file():
            return None
        stored = io.load_mask(path)
        if stored.shape != shape:
            raise ValueError(f"{path.name} is {stored.shape[0]}×{stored.shape[1]} but the image is {shape[0]}×"
                             f"{shape[1]}; delete {path} to drop the strokes.")
        return stored.astype(np.int16) + UNPAINTED
