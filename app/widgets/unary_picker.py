"""The unary-source picker: the mask or the probability map found beside the image, or any file chosen with
the … button, and how a mask becomes probabilities (``crfcore.refine_mask``'s unary): the confidence it gives its
own label where it is sure, and its roughness, how far its outline may be off (Auto: estimated from the image and
the mask, shown in pixels once a refinement has measured it)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSignalBlocker, Signal
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel, QToolButton, QWidget

from crfcore import params as P

from . import files
from ..document import ImageDocument, UnaryKind
from ..folder import PROBS_SUFFIXES

__all__ = ["UnaryPicker", "kind_of", "ROUGHNESS_MAX"]

KIND_TITLES = {"mask": "Mask", "probs": "Probabilities"}
ROUGHNESS_MAX = 100.0  # px at the reference size: the largest roughness the box takes (a 20 % offset at 500 px)


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
        self.roughness = QDoubleSpinBox()  # 0 shows as "Auto": the document's roughness None
        self.roughness.setRange(0.0, ROUGHNESS_MAX)
        self.roughness.setSingleStep(0.5)
        self.roughness.setDecimals(1)
        self.roughness.setSuffix(" px")
        self.roughness.setSpecialValueText("Auto")
        self.roughness.setKeyboardTracking(False)
        self.roughness.setMinimumWidth(120)
        self.roughness.setToolTip(f"How far the mask's outline may be off the true boundary: within this distance the "
                                  f"mask is doubted and colour models learned from its sure part (and your strokes) "
                                  f"decide with the CRF; farther inside, the mask stays. Auto estimates it from how "
                                  f"far the outline lies from strong image edges. Set at a {P.REFERENCE_SIZE}-px "
                                  f"long side, as the refiner's spatial parameters; the value on this image is shown "
                                  f"beside it.")
        self.roughness_here = QLabel()  # the roughness on this image, in its own pixels
        self.roughness_here.setToolTip(f"The roughness on this image: set at a {P.REFERENCE_SIZE}-px long side, "
                                       f"scaled by the image's long side / {P.REFERENCE_SIZE}.")
        row = QHBoxLayout()
        row.addWidget(self.combo, 1)
        row.addWidget(self.browse_button)
        rough_row = QHBoxLayout()
        rough_row.addWidget(self.roughness, 1)
        rough_row.addWidget(self.roughness_here)
        layout = QFormLayout(self)
        layout.addRow("Source", row)
        layout.addRow("Mask confidence", self.confidence)
        layout.addRow("Roughness", rough_row)
        self.combo.activated.connect(self._on_activated)
        self.browse_button.clicked.connect(self.browse)
        self.confidence.valueChanged.connect(self._on_confidence)
        self.roughness.valueChanged.connect(self._on_roughness)
        self.setEnabled(False)

    def set_document(self, document: ImageDocument | None) -> None:
        if self.document is not None:
            self.document.unary_changed.disconnect(self._refresh)
            self.document.result_changed.disconnect(self._show_roughness)
        self.document = document
        self.setEnabled(document is not None)
        if document is not None:
            document.unary_changed.connect(self._refresh)
            document.result_changed.connect(self._show_roughness)
        self._refresh()

    def _sources(self) -> list[tuple[UnaryKind, Path]]:
        doc = self.document
        found = [("probs", doc.entry.probs), ("mask", doc.entry.mask)]
        sources = [(kind, path) for kind, path in found if path is not None]
        if doc.unary_path is not None and (doc.unary_kind, doc.unary_path) not in sources:
            sources.append((doc.unary_kind, doc.unary_path))
        return sources

    def _refresh(self) -> None:
        with QSignalBlocker(self.combo), QSignalBlocker(self.confidence), QSignalBlocker(self.roughness):
            self.combo.clear()
            if self.document is None:
                self._show_roughness()
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
            self.roughness.setValue(self.document.roughness or 0.0)
            self.roughness.setEnabled(self.document.unary_kind in ("mask", "strokes"))
        self._show_roughness()

    def _show_roughness(self) -> None:
        """"Auto (r px)" with the roughness the last refinement estimated (at the reference size, as a set value),
        and beside the box the roughness on this image in its own pixels."""
        doc = self.document
        used = doc.roughness_px if doc is not None and doc.unary_kind in ("mask", "strokes") else None
        factor = P.scale_factor(*doc.image.shape[:2], "auto") if doc is not None else 1.0
        self.roughness.setSpecialValueText("Auto" if used is None else f"Auto ({used / factor:.1f} px)")
        here = used if doc is None or doc.roughness is None else P.scaled_length(doc.roughness, factor)
        self.roughness_here.setText("" if here is None or doc.unary_kind not in ("mask", "strokes")
                                    else f"→ {here:.1f} px here")
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

    def _on_roughness(self, value: float) -> None:
        if self.document is not None:
            try:
                self.document.set_roughness(value or None)
            except ValueError as exc:
                self.error.emit(str(exc))
