"""The unary-source picker: the mask or the probability map found beside the image, or any file chosen with
the … button, and how a mask becomes probabilities: the confidence it gives its own label and the width of the
uncertain band along its outlines."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSignalBlocker, Signal
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QToolButton, QWidget

from . import files
from ..document import ImageDocument, UnaryKind
from ..folder import PROBS_SUFFIXES

__all__ = ["UnaryPicker", "kind_of"]

KIND_TITLES = {"mask": "Mask", "probs": "Probabilities"}


def kind_of(path: str | Path) -> UnaryKind:
    """``"probs"`` for ``.npy`` / ``.npz`` files, ``"mask"`` for images."""
    return "probs" if Path(path).suffix.lower() in PROBS_SUFFIXES else "mask"


class UnaryPicker(QWidget):
    """Writes the chosen source to the document; ``error(str)`` carries a readable message when a file is refused."""

    error = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.document: ImageDocument | None = None
        self.combo = QComboBox()
        self.combo.setToolTip("Where the unary (the class probabilities the CRF refines) comes from.")
        self.browse_button = QToolButton()
        self.browse_button.setText("…")
        self.browse_button.setToolTip("Choose a mask (an index image) or a probability map (.npy / .npz).")
        self.confidence = QDoubleSpinBox()
        self.confidence.setRange(0.51, 1.0)
        self.confidence.setSingleStep(0.05)
        self.confidence.setDecimals(2)
        self.confidence.setKeyboardTracking(False)
        self.confidence.setToolTip("Probability a mask gives its own label at each pixel; the rest is shared by "
                                   "the other classes. 1 makes the mask hard.")
        self.band = QDoubleSpinBox()
        self.band.setRange(0.0, 50.0)
        self.band.setSingleStep(0.5)
        self.band.setDecimals(1)
        self.band.setSuffix(" px")
        self.band.setSpecialValueText("off")
        self.band.setKeyboardTracking(False)
        self.band.setToolTip("Width of the uncertain band along a mask's outlines: near an outline the classes on "
                             "both sides share the probability, so the CRF can move the edge to the image's; "
                             "inside a region the mask stays as drawn. Off: every pixel gets the confidence.")
        row = QHBoxLayout()
        row.addWidget(self.combo, 1)
        row.addWidget(self.browse_button)
        layout = QFormLayout(self)
        layout.addRow("Source", row)
        layout.addRow("Mask confidence", self.confidence)
        layout.addRow("Outline band", self.band)
        self.combo.activated.connect(self._on_activated)
        self.browse_button.clicked.connect(self.browse)
        self.confidence.valueChanged.connect(self._on_confidence)
        self.band.valueChanged.connect(self._on_band)
        self.setEnabled(False)

    def set_document(self, document: ImageDocument | None) -> None:
        if self.document is not None:
            self.document.unary_changed.disconnect(self._refresh)
        self.document = document
        self.setEnabled(document is not None)
        if document is not None:
            document.unary_changed.connect(self._refresh)
        self._refresh()

    def _sources(self) -> list[tuple[UnaryKind, Path]]:
        doc = self.document
        found = [("probs", doc.entry.probs), ("mask", doc.entry.mask)]
        sources = [(kind, path) for kind, path in found if path is not None]
        if doc.unary_path is not None and (doc.unary_kind, doc.unary_path) not in sources:
            sources.append((doc.unary_kind, doc.unary_path))
        return sources

    def _refresh(self) -> None:
        with QSignalBlocker(self.combo), QSignalBlocker(self.confidence), QSignalBlocker(self.band):
            self.combo.clear()
            if self.document is None:
                return
            for kind, path in self._sources():
                self.combo.addItem(f"{KIND_TITLES[kind]}: {path.name}", (kind, str(path)))
                if (kind, path) == (self.document.unary_kind, self.document.unary_path):
                    self.combo.setCurrentIndex(self.combo.count() - 1)
            if self.combo.count() == 0:
                self.combo.addItem("Strokes only: paint with the brush, or choose a file with …"
                                   if self.document.unary_kind == "strokes" else "none found: choose one with …", None)
            self.confidence.setValue(self.document.mask_confidence)
            self.confidence.setEnabled(self.document.unary_kind == "mask")
            self.band.setValue(self.document.mask_band or 0.0)
            self.band.setEnabled(self.document.unary_kind == "mask")

    def choose(self, kind: UnaryKind, path: str | Path) -> bool:
        """Load ``path`` as the unary; False (and ``error`` emitted) if it is refused."""
        try:
            self.document.set_unary_source(kind, path)
        except (OSError, ValueError) as exc:
            self.error.emit(f"Cannot use {Path(path).name} as the unary: {exc}")
            self._refresh()
            return False
        return True

    def browse(self) -> None:
        """Ask for a mask or probability file and load it."""
        if self.document is None:
            return
        path = files.ask_unary_file(self, self.document.entry.image.parent)
        if path is not None:
            self.choose(kind_of(path), path)

    def _on_activated(self, index: int) -> None:
        data = self.combo.itemData(index)
        if data is not None and self.document is not None:
            kind, path = data
            if (kind, Path(path)) != (self.document.unary_kind, self.document.unary_path):
                self.choose(kind, path)

    def _on_confidence(self, value: float) -> None:
        if self.document is not None:
            try:
                self.document.set_mask_confidence(value)
            except ValueError as exc:
                self.error.emit(str(exc))

    def _on_band(self, value: float) -> None:
        if self.document is not None:
            try:
                self.document.set_mask_unary(self.document.mask_confidence, value or None)
            except ValueError as exc:
                self.error.emit(str(exc))
