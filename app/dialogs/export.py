"""The Export dialog: write the project's saved masks in a format training tools read (:mod:`crfcore.export`).

The source is the folder's project: each image's latest saved revision and the project's class names. The user
picks a format (:data:`crfcore.export.FORMATS`), an output folder, whether class 0 is the background (not exported
as objects by COCO, YOLO and binary), and the YOLO polygon tolerance; the export runs on a
:class:`~app.workers.TaskRunner` with a progress bar and can be cancelled between masks (files already written stay).
Errors arrive as one-line messages.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout,
                               QHBoxLayout, QLabel, QLineEdit, QProgressBar, QPushButton, QToolButton, QVBoxLayout,
                               QWidget)

from crfcore import export
from crfcore.project import CATALOG_DIR

from ..workers import Report, TaskRunner
from . import files

__all__ = ["FORMAT_TITLES", "ExportDialog"]

FORMAT_TITLES = {"voc": "VOC palette PNG", "index": "Index PNG (8-bit)", "index16": "Index PNG (16-bit)",
                 "coco": "COCO RLE (annotations.json)", "yolo": "YOLO-seg polygons (.txt)",
                 "binary": "Binary PNG per class"}
OBJECT_FORMATS = ("coco", "yolo", "binary")  # the formats that leave the background class out


class ExportDialog(QDialog):
    """Exports ``root``'s project masks; ``classes`` are the folder's class names (the project's when it has any),
    ``void`` the mask label of unannotated pixels (``classes.json``'s ``"void"``), never exported as a class."""

    def __init__(self, root: str | Path, classes: tuple[str, ...] = (), parent: QWidget | None = None, *,
                 void: int = export.ClassTable.void) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export masks")
        self.root = Path(root)
        self.classes = classes
        self.void = void
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
        self.tolerance.setToolTip("YOLO polygon simplification (Douglas–Peucker); 0 keeps the exact pixel outline.")
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
        self.resize(560, 0)

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
        if not (self.root / CATALOG_DIR).is_dir():
            self.status.setText(f"Nothing is saved in {self.root} yet: paint, or press A (Accept) on an image, to "
                                f"save its mask first.")
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

        def work(report: Report) -> list[Path]:
            return export.export_masks(self.root, out, fmt, classes=table, tolerance=tolerance,
                                       on_item=lambda done, total, stem: report((done, total, stem)))

        self.runner.start(work)

    def _on_item(self, value: tuple[int, int, str]) -> None:
        done, total, stem = value
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.status.setText(f"Exported {stem} ({done} of {total})")

    def _on_finished(self, written: list[Path]) -> None:
        self.written = written
        self.progress.setValue(self.progress.maximum())
        self.status.setText(f"Wrote {len(written)} file(s) to {self.output.text()}.")

    def _on_busy(self, busy: bool) -> None:
        self.export_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    def done(self, code: int) -> None:  # noqa: D401 (Qt override: closing cancels a running export)
        self.runner.cancel()
        self.runner.wait()
        super().done(code)
