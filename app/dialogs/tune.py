"""The Fine-tune dialog: learn the current refiner's parameters on the folder's labelled images, with live curves.

The user ticks the labelled images to use (those with a ground-truth mask, :func:`app.tuning.labelled`), sets the
steps, learning rate, crop and validation share, and starts; :func:`app.tuning.run_tuning` runs on a
:class:`~app.workers.TaskRunner` and every step updates two pyqtgraph plots (training loss; training and validation
mIoU). Cancel stops at the next step. Apply writes the best parameters into the document as the refiner's current
preset (the refiner panel shows them and the image is refined with them).

The *Training unaries* choice says what the refiner learns to clean up: the folder's own unaries (each image's
probability map or coarse mask, fixed), or rough annotations drawn from the ground truth as ``crfcore tune
--protocol`` draws them — polygons at a tolerance, or the simulated annotator's first strokes — turned into
:func:`crfcore.refine_mask`'s colour-model unary, whose confidence, colour weight, prior width and roughness scale are
learned with the refiner (:func:`crfcore.learn.tune_rough`). The result shows the validation mIoU of the unary
alone, of the refiner before tuning, and tuned; *Save preset…* writes the tuned refiner with its unary settings.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog,
                               QFormLayout, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QProgressBar,
                               QPushButton, QSpinBox, QVBoxLayout, QWidget)

import crfcore
from crfcore import learn
from crfcore.learn.rough import RoughRecipe
from crfcore.learn.settings import FINETUNE, VAL_FRAC
from crfcore.mask_refine import resolve_settings
from crfcore.params import ParamSpec

from ..document import ImageDocument
from ..folder import ImageEntry, ImageFolder
from ..tuning import TuneSettings, labelled, run_tuning
from ..workers import Report, TaskRunner

__all__ = ["TuneDialog", "PROTOCOLS", "run_noise_tuning", "run_rough_tuning"]

PROTOCOLS = {"folder": "The folder's unaries (masks, probability maps)",
             "noise": "Synthetic noise on the ground truth",
             "polygon": "Polygons drawn from the ground truth",
             "strokes": "Brush strokes drawn from the ground truth"}
"""The *Training unaries* choices: key → label."""

_CURVES = {"train_loss": ("training loss", "#e8710a"), "train_miou": ("training mIoU", "#4285f4"),
           "val_miou": ("validation mIoU", "#34a853")}


def _title(text: str, keys: tuple[str, ...]) -> str:
    """A plot title that names its curves in their colours: the legend, above the plot, never over the curves."""
    names = "  ".join(f'<span style="color:{_CURVES[k][1]}">{"●" if k == "val_miou" else "—"} '
                      f'{_CURVES[k][0]}</span>' for k in keys)
    return f"{text}   {names}"


@contextmanager
def _training_folder(entries: Sequence[ImageEntry]) -> Iterator[Path]:
    """A temporary ``images/`` + ``masks/`` (ground truth) folder of ``entries``, checked, for LearnData."""
    missing = [e.stem for e in entries if e.truth is None]
    if missing:
        raise ValueError(f"{', '.join(missing)}: no ground truth; the training unaries are drawn from <stem>_gt.png "
                         f"(or gt/<stem>.png).")
    if len(entries) < 2:
        raise ValueError(f"fine-tuning needs at least 2 labelled images (one to train on, one to validate on), got "
                         f"{len(entries)}; add <stem>_gt.png ground truths to the folder.")
    if len({e.void for e in entries}) > 1:
        raise ValueError(f"the chosen images disagree on the void label ({sorted({e.void for e in entries})}); "
                         f"choose images of one folder.")
    with tempfile.TemporaryDirectory(prefix="crf-studio-tune-") as tmp:
        root = Path(tmp)
        for sub in ("images", "masks"):
            (root / sub).mkdir()
        for entry in entries:
            shutil.copyfile(entry.image, root / "images" / f"{entry.stem}{entry.image.suffix}")
            shutil.copyfile(entry.truth, root / "masks" / f"{entry.stem}{entry.truth.suffix}")
        yield root


def run_noise_tuning(entries: Sequence[ImageEntry], settings: TuneSettings, *,
                     callback: learn.finetune.TuneCallback | None = None) -> learn.TuneResult:
    """Tune ``settings.method`` on ``entries`` with the synthetic-noise unaries of ``crfcore tune --protocol noise``
    (:class:`crfcore.learn.LearnData`'s default), images at their own size.

    Raises:
        ValueError: fewer than two images with ground truth, images of several void labels.
        crfcore.Cancelled: from the callback.
    """
    with _training_folder(entries) as root:
        data = learn.LearnData(root, num_classes=settings.num_classes, val_frac=settings.val_frac,
                               seed=settings.seed, void=entries[0].void)
        if crfcore.refiners.method(settings.method).training == "piecewise":
            model = crfcore.refiners.get(settings.method, settings.params, num_classes=settings.num_classes)
            config = learn.PiecewiseConfig(steps=settings.steps, lr=settings.lr, crop=settings.crop,
                                           seed=settings.seed)
            return learn.train_piecewise(model, data, config=config, callback=callback)
        extra = {"learn_compat": True} if settings.learn_compat else {}
        model = crfcore.refiners.get(settings.method, settings.params, num_classes=settings.num_classes, **extra)
        config = learn.FinetuneConfig(steps=settings.steps, lr=settings.lr, crop=settings.crop, seed=settings.seed)
        return learn.fine_tune(model, data, config=config, callback=callback)


def run_rough_tuning(entries: Sequence[ImageEntry], settings: TuneSettings, recipe: RoughRecipe, *,
                     callback: learn.finetune.TuneCallback | None = None) -> learn.TuneResult:
    """Tune ``settings.method`` and refine_mask's unary settings on rough annotations of ``entries``' ground truths
    (:func:`crfcore.learn.tune_rough`), starting from ``settings.params`` and the method's shipped unary settings of
    ``recipe.kind``; images at their own size, as :func:`app.tuning.run_tuning` trains them. The piecewise refiner
    trains its potentials piecewise first, then the unary's settings through inference with them; the steps,
    learning rate and crop apply to both stages.

    Raises:
        ValueError: fewer than two images with ground truth, images of several void labels.
        crfcore.Cancelled: from the callback.
    """
    params, unary = resolve_settings(settings.method, settings.params, recipe.kind)
    given = {"steps": settings.steps, "lr": settings.lr, "crop": settings.crop, "seed": settings.seed}
    config = learn.FinetuneConfig(**given)
    piecewise = None
    if crfcore.refiners.method(settings.method).training == "piecewise":  # its potentials first, piecewise
        piecewise = learn.PiecewiseConfig(**given)
    with _training_folder(entries) as root:
        data = learn.RoughData(root, recipe, unary, num_classes=settings.num_classes, val_frac=settings.val_frac,
                               seed=settings.seed, void=entries[0].void)
        extra = {"learn_compat": True} if settings.learn_compat else {}
        return learn.tune_rough(settings.method, params, data, config=config, callback=callback,
                                piecewise=piecewise, **extra)


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
        self.protocol = QComboBox()
        for key, label in PROTOCOLS.items():
            self.protocol.addItem(label, key)
        self.protocol.setToolTip("What the refiner learns to clean up: the folder's own unaries, or rough annotations "
                                 "drawn from the ground truth (refine_mask's colour-model unary, whose settings are "
                                 "learned too).")
        self.tolerance = QDoubleSpinBox()
        self.tolerance.setRange(0.0, 64.0)
        self.tolerance.setSingleStep(1.0)
        self.tolerance.setValue(RoughRecipe.tolerance)
        self.tolerance.setSuffix(" px")
        self.tolerance.setToolTip("Polygons: how far the simplified outline may lie from the ground truth.")
        self.strokes = QSpinBox()
        self.strokes.setRange(1, 50)
        self.strokes.setValue(RoughRecipe.strokes)
        self.strokes.setToolTip("Strokes: how many strokes the simulated annotator paints per image.")
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
        self.save_button = QPushButton("Save preset…")
        self.save_button.setToolTip("Write the tuned refiner, with its learned unary settings, as a preset file "
                                    "(crfcore refine --preset, crfcore.refine_mask(params=path)).")
        self.cancel_button.setEnabled(False)
        self.apply_button.setEnabled(False)
        self.save_button.setEnabled(False)
        self._layout()
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.runner.cancel)
        self.apply_button.clicked.connect(self.apply)
        self.save_button.clicked.connect(self.save_preset)
        self.protocol.currentIndexChanged.connect(lambda _index: self._on_busy(self.runner.busy))
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
        form.addRow("Training unaries", self.protocol)
        form.addRow("Polygon tolerance", self.tolerance)
        form.addRow("Strokes per image", self.strokes)
        form.addRow(self.learn_compat)
        top = QHBoxLayout()
        top.addWidget(self.images, 1)
        top.addLayout(form, 1)
        buttons = QDialogButtonBox()
        for button in (self.start_button, self.cancel_button, self.apply_button, self.save_button):
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
                            unary=doc.unary_settings, roughness=doc.roughness, steps=self.steps.value(),
                            lr=self.lr.value(), crop=self.crop.value(), val_frac=self.val_frac.value(),
                            learn_compat=self.learn_compat.isChecked() and self.learn_compat.isEnabled())

    def recipe(self) -> RoughRecipe | None:
        """The rough-annotation recipe of the *Training unaries* choice; None for the folder's unaries and noise."""
        key = self.protocol.currentData()
        if key in ("folder", "noise"):
            return None
        return RoughRecipe(key, tolerance=self.tolerance.value(), strokes=self.strokes.value())

    def start(self) -> None:
        """Start tuning on a worker thread (the curves are cleared)."""
        if self.runner.busy:
            return
        entries, settings, recipe = self.chosen(), self.settings(), self.recipe()
        noise = self.protocol.currentData() == "noise"
        self.result = None
        self.apply_button.setEnabled(False)
        self.save_button.setEnabled(False)
        for points in self.history.values():
            points.clear()
        self._redraw()
        self.progress.setRange(0, settings.steps)
        self.progress.setValue(0)
        self.status.setText(f"Tuning {self.method} on {len(entries)} images…")

        def work(report: Report) -> learn.TuneResult:
            def callback(step: int, total: int, values: dict[str, float]) -> None:
                report((step, total, values))

            if recipe is not None:
                return run_rough_tuning(entries, settings, recipe, callback=callback)
            result = (run_noise_tuning if noise else run_tuning)(entries, settings, callback=callback)
            return learn.prefer_unary(result)  # never a refiner that makes the unary worse on validation

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
        self.save_button.setEnabled(True)
        stop = ", stopped early" if result.stopped_early else ""
        if result.unary is None:
            which = result.choice or f"best at step {result.best_step} of {result.steps}{stop}"
            self._stopped(f"Validation mIoU: unary {result.val_unary_miou:.1f}, before {result.val_initial_miou:.1f}, "
                          f"tuned {result.val_miou:.1f} ({which}, {result.wall_s:.0f} s). Apply to use the tuned "
                          f"parameters.")
            return
        u = result.unary
        self._stopped(f"Validation mIoU: unary {result.val_unary_miou:.1f}, before {result.val_initial_miou:.1f}, "
                      f"tuned {result.val_miou:.1f} ({result.choice}, {result.wall_s:.0f} s). Unary: confidence "
                      f"{u.confidence:g}, colour weight {u.colour_weight:g}, prior width {u.prior_width:g}, roughness "
                      f"scale {u.roughness_scale:g}. Apply uses the tuned parameters and unary settings; Save preset… "
                      f"keeps both.")

    def _stopped(self, message: str) -> None:
        self.status.setText(message)

    def _on_busy(self, busy: bool) -> None:
        enough = len(self.chosen()) >= 2
        self.start_button.setEnabled(not busy and enough)
        self.start_button.setToolTip("" if enough else "Tick at least 2 labelled images (one to train on, one to "
                                     "validate on); labelled images have a <stem>_gt.png ground truth.")
        self.cancel_button.setEnabled(busy)
        for widget in (self.images, self.steps, self.lr, self.crop, self.val_frac, self.protocol):
            widget.setEnabled(not busy)
        self.tolerance.setEnabled(not busy and self.protocol.currentData() == "polygon")
        self.strokes.setEnabled(not busy and self.protocol.currentData() == "strokes")
        self.learn_compat.setEnabled(not busy and crfcore.refiners.method(self.method).learns_compat)

    def apply(self) -> None:
        """Write the tuned parameters (and the unary settings learned with them) into the document."""
        if self.result is None:
            return
        self.document.set_method(self.result.method)
        self.document.set_params(self.result.method, self.result.params)
        if self.result.unary is not None:
            self.document.set_unary_settings(self.result.unary)
        self.applied.emit(f"fine-tuned on {len(self.chosen())} images (validation mIoU {self.result.val_miou:.1f})")
        unary = " and unary settings" if self.result.unary is not None else ""
        self.status.setText(f"Applied: {self.result.method} now uses the tuned parameters{unary} (save them with "
                            f"Save preset… in the refiner panel).")
        self.apply_button.setEnabled(False)

    def save_preset(self, path: str | Path | None = None) -> None:
        """Write the result as a preset file (asks where when ``path`` is None), unary settings included."""
        if self.result is None:
            return
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save tuned preset", f"{self.result.method}-tuned.json",
                                                  "Presets (*.json)")
            if not path:
                return
        try:
            learn.save_result(self.result, path)
        except (OSError, ValueError) as exc:
            self.status.setText(f"Could not save the preset: {exc}")
            return
        self.status.setText(f"Saved the tuned preset to {path}.")

    def done(self, code: int) -> None:  # noqa: D401 (Qt override: closing cancels a running tuning)
        self.runner.cancel()
        self.runner.wait()
        super().done(code)
