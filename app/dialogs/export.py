"""The Export dialog: write the project's saved masks in a format training tools read (:mod:`crfcore.export`).

The source is the folder's project: each image's latest saved revision and the project's class names. The user
picks a format (:data:`crfcore.export.FORMATS`), an output folder, whether class 0 is the background (not exported
as objects by COCO, YOLO and binary), and the YOLO polygon tolerance; the export runs on a
:class:`~app.workers.TaskRunner` with a progress bar and can be cancelled between masks (files already written stay).
Errors arrive as one-line messages. Images without a saved mask would be skipped: the dialog says how many and
offers to refine them with the window's refiner and settings first (:mod:`app.exporting`), so they are included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout,
                               QHBoxLayout, QLabel, QLineEdit, QProgressBar, QPushButton, QToolButton, QVBoxLayout,
                               QWidget)

from crfcore import export
from crfcore.project import CATALOG_DIR

from ..exporting import RefineSettings, refine_and_save, unsaved
from ..folder import ImageEntry
from ..workers import Report, TaskRunner
from ..widgets import files

__all__ = ["FORMAT_TITLES", "ExportDialog"]

FORMAT_TITLES = {"voc": "VOC palette PNG", "index": "Index PNG (8-bit)", "index16": "Index PNG (16-bit)",
                 "coco": "COCO RLE (annotations.json)", "yolo": "YOLO-seg polygons (.txt)",
                 "binary": "Binary PNG per class"}
OBJECT_FORMATS = ("coco", "yolo", "binary")  # the formats that leave the background class out
DEFAULT_TOLERANCE = 1.0  # pixels: YOLO polygons within 1 px of the outline (0 keeps every outline pixel)


class ExportDialog(QDialog):
    """Exports ``root``'s project masks; ``classes`` are the folder's class names (the project's when it has any),
    ``void`` the mask label of unannotated pixels (``classes.json``'s ``"void"``), never exported as a class;
    ``entries`` the folder's images, ``settings`` how to refine those without a saved mask when the user includes
    them (None: they can only be skipped)."""

    def __init__(self, root: str | Path, classes: tuple[str, ...] = (), parent: QWidget | None = None, *,
                 void: int = export.ClassTable.void, entries: Sequence[ImageEntry] = (),
                 settings: RefineSettings | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export masks")
        self.root = Path(root)
        self.classes = classes
        self.void = void
        self.entries = tuple(entries)
        self.settings = settings
        self.skipped: list[ImageEntry] = []  # images without a saved mask that can be refined and included
        self.sourceless: list[ImageEntry] = []  # images without a saved mask, a mask or probabilities
        self.written: list[Path] = []
        self.runner = TaskRunner(self)
        self.format = QComboBox()
        for fmt in export.FORMATS:
            self.format.addItem(FORMAT_TITLES.get(fmt, fmt), fmt)
        self.output = QLineEdit(str(self.root / "export"))
        self.browse_button = QToolButton()
        self.browse_button.setText("…")
        self.background = QCheckBox("Class 0 is the background (COCO, YOLO and binary leave it out)")
        self.background.setChecked(True)
        self.tolerance = QDoubleSpinBox()
        self.tolerance.setRange(0.0, 20.0)
        self.tolerance.setSingleStep(0.5)
        self.tolerance.setSuffix(" px")
        self.tolerance.setValue(DEFAULT_TOLERANCE)
        self.tolerance.setToolTip("YOLO polygon simplification (Douglas–Peucker): the polygon stays within this "
                                  "many pixels of the outline; 0 keeps every outline pixel (long polygons).")
        self.include = QCheckBox()
        self.include.setToolTip("Refine each image without a saved mask with the window's refiner and settings, "
                                "save it into the project, and export it with the others.")
        self.progress = QProgressBar()
        self.status = QLabel("Exports each image's latest saved mask (edits are saved by themselves; A saves the "
                             "shown one).")
        self.status.setWordWrap(True)
        self.export_button = QPushButton("Export")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        row = QHBoxLayout()
        row.addWidget(self.output, 1)
        row.addWidget(self.browse_button)
        form = QFormLayout()
        form.addRow("Format", self.format)
        form.addRow("Output folder", row)
        form.addRow(self.background)
        form.addRow("YOLO tolerance", self.tolerance)
        form.addRow(self.include)
        buttons = QDialogButtonBox()
        buttons.addButton(self.export_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.cancel_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(QDialogButtonBox.StandardButton.Close).clicked.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(buttons)
        self.browse_button.clicked.connect(self.browse)
        self.format.currentIndexChanged.connect(self._on_format)
        self.export_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.runner.cancel)
        self.runner.progress.connect(self._on_item)
        self.runner.finished.connect(self._on_finished)
        self.runner.failed.connect(lambda message: self.status.setText(f"Export failed: {message}"))
        self.runner.cancelled.connect(lambda: self.status.setText("Export cancelled; files already written stay."))
        self.runner.busy_changed.connect(self._on_busy)
        self._on_format()
        self.count_skipped()
        self.resize(560, 0)

    def count_skipped(self) -> None:
        """Count the folder's images without a saved mask and offer to include those that can be refined."""
        try:
            self.skipped, self.sourceless = unsaved(self.root, self.entries)
        except (OSError, ValueError) as exc:
            self.skipped, self.sourceless = [], []
            self.status.setText(f"Cannot read the project in {self.root}: {exc}")
        count = len(self.skipped)
        self.include.setText(f"Also refine and include the {count} image(s) without a saved mask")
        self.include.setEnabled(count > 0 and self.settings is not None)
        self.include.setVisible(count > 0)
        saved = len(self.entries) - count - len(self.sourceless)
        if self.entries:
            none = (f"; {len(self.sourceless)} have no mask or probabilities and cannot be exported"
                    if self.sourceless else "")
            self.status.setText(f"{saved} of {len(self.entries)} image(s) have a saved mask and will be exported; "
                                f"{count} would be skipped{none}.")

    def set_format(self, fmt: str) -> None:
        """Choose ``fmt`` (one of :data:`crfcore.export.FORMATS`)."""
        if fmt not in export.FORMATS:
            raise ValueError(f"{fmt!r} is not a valid format. Valid formats are {', '.join(export.FORMATS)}.")
        self.format.setCurrentIndex(export.FORMATS.index(fmt))

    def browse(self) -> None:
        path = files.ask_output_folder(self, self.output.text())
        if path is not None:
            self.output.setText(str(path))

    def _on_format(self) -> None:
        fmt = self.format.currentData()
        self.tolerance.setEnabled(fmt == "yolo")
        self.background.setEnabled(fmt in OBJECT_FORMATS)

    def start(self) -> None:
        """Export on a worker thread."""
        if self.runner.busy:
            return
        include = self.include.isChecked() and self.include.isEnabled() and bool(self.skipped)
        if not (self.root / CATALOG_DIR).is_dir() and not include:
            self.status.setText(f"Nothing is saved in {self.root} yet: paint, or press A (Accept) on an image, to "
                                f"save its mask first" + (", or tick \"Also refine\"." if self.skipped else "."))
            return
        text = self.output.text().strip()
        if not text:
            self.status.setText("Choose an output folder first.")
            return
        out, fmt, tolerance = Path(text), self.format.currentData(), self.tolerance.value()
        if out.exists() and not out.is_dir():
            self.status.setText(f"{out} is a file; choose a folder to export into (it is created if missing).")
            return
        table = export.ClassTable(tuple(self.classes), background=0 if self.background.isChecked() else None,
                                  void=self.void)
        self.written = []
        self.progress.setValue(0)
        self.status.setText(f"Exporting {FORMAT_TITLES.get(fmt, fmt)} to {out}…")

        skipped, settings = list(self.skipped) if include else [], self.settings

        def work(report: Report) -> list[Path]:
            if skipped:
                refine_and_save(self.root, skipped, settings,
                                on_item=lambda done, total, stem: report(("Refined", done, total, stem)))
            return export.export_masks(self.root, out, fmt, classes=table, tolerance=tolerance,
                                       on_item=lambda done, total, stem: report(("Exported", done, total, stem)))

        self.runner.start(work)

    def _on_item(self, value: tuple[str, int, int, str]) -> None:
        what, done, total, stem = value
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.status.setText(f"{what} {stem} ({done} of {total})")

    def _on_finished(self, written: list[Path]) -> None:
        self.written = written
        self.progress.setValue(self.progress.maximum())
        self.count_skipped()
        skipped = f"; {len(self.skipped)} image(s) without a saved mask skipped" if self.skipped else ""
        self.status.setText(f"Wrote {len(written)} file(s) to {self.output.text()}{skipped}.")

    def _on_busy(self, busy: bool) -> None:
        self.export_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    def done(self, code: int) -> None:  # noqa: D401 (Qt override: closing cancels a running export)
        self.runner.cancel()
        self.runner.wait()
        super().done(code)
