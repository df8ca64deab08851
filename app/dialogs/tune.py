"""The Fine-tune dialog: learn the current refiner's parameters on the folder's labelled images, with live curves.

The user ticks the labelled images to use (those with a ground-truth mask, :func:`app.tuning.labelled`), sets the
steps, learning rate, crop and validation share, and starts; :func:`app.tuning.run_tuning` runs on a
:class:`~app.workers.TaskRunner` and every step updates two pyqtgraph plots (training loss; training and validation
mIoU). Cancel stops at the next step. Apply writes the best parameters into the document as the refiner's current
preset (the refiner panel shows them and the image is refined with them).
"""

from __future__ import annotations

import math
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel,
                               QListWidget, QListWidgetItem, QProgressBar, QPushButton, QSpinBox, QVBoxLayout, QWidget)

import crfcore
from crfcore import learn
from crfcore.learn.settings import FINETUNE, VAL_FRAC
from crfcore.params import ParamSpec

from ..document import ImageDocument
from ..folder import ImageEntry, ImageFolder
from ..tuning import TuneSettings, labelled, run_tuning
from ..workers import Report, TaskRunner

__all__ = ["TuneDialog"]

_CURVES = {"train_loss": ("training loss", "#e8710a"), "train_miou": ("training mIoU", "#4285f4"),
           "val_miou": ("validation mIoU", "#34a853")}


def _title(text: str, keys: tuple[str, ...]) -> str:
    """A plot title that names its curves in their colours: the legend, above the plot, never over the curves."""
    names = "  ".join(f'<span style="color:{_CURVES[k][1]}">{"●" if k == "val_miou" else "—"} '
                      f'{_CURVES[k][0]}</span>' for k in keys)
    return f"{text}   {names}"


class TuneDialog(QDialog):
    """Fine-tunes ``document``'s current refiner on ``folder``'s labelled images; Apply writes the result back.

    Signals:
        applied(str): the tuned parameters were written into the document; the text says where they came from.
    """

    applied = Signal(str)

    def __init__(self, folder: ImageFolder, document: ImageDocument, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.folder, self.document = folder, document
        self.method = document.method
        self.result: learn.TuneResult | None = None
        self.history: dict[str, list[tuple[int, float]]] = {key: [] for key in _CURVES}
        self.setWindowTitle(f"Fine-tune {crfcore.refiners.method(self.method).title}")
        self.runner = TaskRunner(self)
        self.images = QListWidget()
        for entry in labelled(folder.entries):
            item = QListWidgetItem(entry.stem)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked)
            item.setData(Qt.ItemDataRole.UserRole, entry)
            self.images.addItem(item)
        self.steps = self._spin(QSpinBox(), FINETUNE["steps"])
        self.lr = self._spin(QDoubleSpinBox(), FINETUNE["lr"])
        self.lr.setDecimals(4)
        self.crop = self._spin(QSpinBox(), FINETUNE["crop"])
        self.val_frac = self._spin(QDoubleSpinBox(), VAL_FRAC)
        self.learn_compat = QCheckBox("Learn a class compatibility matrix (+C)")
        self.learn_compat.setEnabled(crfcore.refiners.method(self.method).learns_compat)
        self.loss_plot = pg.PlotWidget(title=_title("training loss", ("train_loss",)))
        self.miou_plot = pg.PlotWidget(title=_title("mIoU (%)", ("train_miou", "val_miou")))
        self.curves = {}
        for key, (name, colour) in _CURVES.items():
            plot = self.loss_plot if key == "train_loss" else self.miou_plot
            symbol = "o" if key == "val_miou" else None
            self.curves[key] = plot.plot([], [], name=name, pen=pg.mkPen(colour, width=2), symbol=symbol,
                                         symbolBrush=colour, symbolSize=6)
        for plot in (self.loss_plot, self.miou_plot):
            plot.setLabel("bottom", "step")
            plot.setMinimumHeight(160)
        self.progress = QProgressBar()
        self.status = QLabel(self._intro())
        self.status.setWordWrap(True)
        self.start_button = QPushButton("Start")
        self.cancel_button = QPushButton("Cancel")
        self.apply_button = QPushButton("Apply")
        self.apply_button.setToolTip("Make the tuned parameters the refiner's current preset.")
        self.cancel_button.setEnabled(False)
        self.apply_button.setEnabled(False)
        self._layout()
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.runner.cancel)
        self.apply_button.clicked.connect(self.apply)
        self.images.itemChanged.connect(lambda _item: self._on_busy(self.runner.busy))
        self.runner.progress.connect(self._on_step)
        self.runner.finished.connect(self._on_finished)
        self.runner.failed.connect(lambda message: self._stopped(f"Fine-tuning failed: {message}"))
        self.runner.cancelled.connect(lambda: self._stopped("Cancelled; nothing was applied."))
        self.runner.busy_changed.connect(self._on_busy)
        self._on_busy(False)
        self.resize(720, 640)

    @staticmethod
    def _spin(box: QSpinBox | QDoubleSpinBox, spec: ParamSpec) -> Any:
        """``box`` set up from a training setting: its range, step, default and help (``crfcore.learn.settings``)."""
        box.setRange(spec.low, spec.high)
        box.setSingleStep(spec.step)
        box.setValue(spec.default)
        box.setToolTip(spec.help)
        return box

    def _intro(self) -> str:
        count = self.images.count()
        if count < 2:
            return (f"{count} labelled image(s) found; fine-tuning needs at least 2. Put ground-truth masks beside "
                    f"the images as <stem>_gt.png (or in gt/<stem>.png).")
        return f"{count} labelled images (with a ground-truth mask). The unaries stay fixed; the refiner learns."

    def _layout(self) -> None:
        form = QFormLayout()
        form.addRow("Steps", self.steps)
        form.addRow("Learning rate", self.lr)
        form.addRow("Crop", self.crop)
        form.addRow("Validation share", self.val_frac)
        form.addRow(self.learn_compat)
        top = QHBoxLayout()
        top.addWidget(self.images, 1)
        top.addLayout(form, 1)
        buttons = QDialogButtonBox()
        for button in (self.start_button, self.cancel_button, self.apply_button):
            buttons.addButton(button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(QDialogButtonBox.StandardButton.Close).clicked.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.loss_plot, 1)
        layout.addWidget(self.miou_plot, 1)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(buttons)

    def chosen(self) -> list[ImageEntry]:
        """The ticked :class:`~app.folder.ImageEntry` s."""
        items = (self.images.item(i) for i in range(self.images.count()))
        return [item.data(Qt.ItemDataRole.UserRole) for item in items if item.checkState() == Qt.CheckState.Checked]

    def settings(self) -> TuneSettings:
        doc = self.document
        return TuneSettings(method=self.method, params=doc.params(self.method), num_classes=doc.num_classes,
                            confidence=doc.mask_confidence, band=doc.mask_band, steps=self.steps.value(),
                            lr=self.lr.value(), crop=self.crop.value(), val_frac=self.val_frac.value(),
                            learn_compat=self.learn_compat.isChecked() and self.learn_compat.isEnabled())

    def start(self) -> None:
        """Start tuning on a worker thread (the curves are cleared)."""
        if self.runner.busy:
            return
        entries, settings = self.chosen(), self.settings()
        self.result = None
        self.apply_button.setEnabled(False)
        for points in self.history.values():
            points.clear()
        self._redraw()
        self.progress.setRange(0, settings.steps)
        self.progress.setValue(0)
        self.status.setText(f"Tuning {self.method} on {len(entries)} images…")

        def work(report: Report) -> learn.TuneResult:
            return run_tuning(entries, settings, callback=lambda step, total, values: report((step, total, values)))

        self.runner.start(work)

    def _on_step(self, value: tuple[int, int, dict[str, float]]) -> None:
        step, total, values = value
        validated = step % FINETUNE["val_every"].default == 0 or step == total  # when val_miou is new
        for key, points in self.history.items():
            number = values.get(key, math.nan)
            if key == "val_miou" and step == 1 and not math.isnan(number):
                points.append((0, number))  # the latest validation at step 1 is the one before training
            if not math.isnan(number) and (key != "val_miou" or validated):
                points.append((step, number))
        self.progress.setRange(0, total)
        self.progress.setValue(step)
        self._redraw()

    def _redraw(self) -> None:
        for key, points in self.history.items():
            self.curves[key].setData([p[0] for p in points], [p[1] for p in points])

    def _on_finished(self, result: learn.TuneResult) -> None:
        self.result = result
        self.apply_button.setEnabled(True)
        self.progress.setValue(self.progress.maximum())
        stop = ", stopped early" if result.stopped_early else ""
        self._stopped(f"Validation mIoU: unary {result.val_unary_miou:.1f}, before {result.val_initial_miou:.1f}, "
                      f"tuned {result.val_miou:.1f} (best at step {result.best_step} of {result.steps}{stop}, "
                      f"{result.wall_s:.0f} s). Apply to use the tuned parameters.")

    def _stopped(self, message: str) -> None:
        self.status.setText(message)

    def _on_busy(self, busy: bool) -> None:
        enough = len(self.chosen()) >= 2
        self.start_button.setEnabled(not busy and enough)
        self.start_button.setToolTip("" if enough else "Tick at least 2 labelled images (one to train on, one to "
                                     "validate on); labelled images have a <stem>_gt.png ground truth.")
        self.cancel_button.setEnabled(busy)
        for widget in (self.images, self.steps, self.lr, self.crop, self.val_frac):
            widget.setEnabled(not busy)
        self.learn_compat.setEnabled(not busy and crfcore.refiners.method(self.method).learns_compat)

    def apply(self) -> None:
        """Write the tuned parameters into the document as the current preset of its refiner."""
        if self.result is None:
            return
        self.document.set_method(self.result.method)
        self.document.set_params(self.result.method, self.result.params)
        self.applied.emit(f"fine-tuned on {len(self.chosen())} images (validation mIoU {self.result.val_miou:.1f})")
        self.status.setText(f"Applied: {self.result.method} now uses the tuned parameters (save them with Save "
                            f"preset… in the refiner panel).")
        self.apply_button.setEnabled(False)

    def done(self, code: int) -> None:  # noqa: D401 (Qt override: closing cancels a running tuning)
        self.runner.cancel()
        self.runner.wait()
        super().done(code)
