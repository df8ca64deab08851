"""The refiner panel: one tab per registered refiner, its controls generated from ``crfcore.params`` specs, and
the shipped preset kind (or "auto": the kind that matches the unary source), preset load / save / reset.

The panel writes to the :class:`~app.document.ImageDocument` and follows it: a control's edit calls
``document.set_param``; a document change (preset, reset, another image) updates the controls without re-emitting.
After writing, it emits ``param_edited(dragging)`` / ``param_released()`` so the window can schedule a refinement
(a preview while dragging, a full run on release). Spatial parameters show their value on the document's image
beside the reference value (``crfcore.params.scaled`` by the image's long side / 500, as refinement applies it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSignalBlocker, Signal
from PySide6.QtWidgets import (QComboBox, QFormLayout, QHBoxLayout, QLabel, QPushButton, QScrollArea, QTabWidget,
                               QVBoxLayout, QWidget)

import crfcore.presets
from crfcore import params as P

from . import files
from ..document import ROUGH_KINDS, ImageDocument
from .controls import NumberControl, ParamControl, make_control

__all__ = ["ParamForm", "RefinerPanel"]

KIND_TITLES = {"network_output": "network output", "rough_annotation": "rough annotation",
               "scribbles": "scribbles"}  # crfcore.presets.KINDS


EDITED = ", edited"  # appended to the Presets box's source line after a slider or number edit


def _label(name: str) -> str:
    return name.replace("_", " ")


class ParamForm(QWidget):
    """The controls of one refiner's parameters, in params.py declaration order."""

    def __init__(self, method: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.method = method
        layout = QFormLayout(self)
        layout.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.controls: dict[str, ParamControl] = {}
        for spec in P.specs(P.params_for(method)):
            control = make_control(spec)
            label = QLabel(_label(spec.name))
            label.setToolTip(control.toolTip())
            layout.addRow(label, control)
            self.controls[spec.name] = control

    def set_params(self, params: Any) -> None:
        """Show ``params`` (the method's dataclass) without emitting edits."""
        for name, control in self.controls.items():
            control.set_value(getattr(params, name))

    def show_effective(self, params: Any, factor: float | None) -> None:
        """Beside each spatial control, its value in ``params`` scaled by ``factor`` (None hides them)."""
        effective = P.scaled(params, factor) if factor is not None else None
        for spec in P.specs(params):
            control = self.controls[spec.name]
            if spec.spatial and isinstance(control, NumberControl):
                control.show_effective(getattr(effective, spec.name) if effective is not None else None)


class RefinerPanel(QWidget):
    """Method tabs + parameter forms + preset buttons, bound to one document at a time.

    Signals:
        param_edited(bool): a parameter was written to the document; True while a slider is being dragged.
        param_released(): a slider was let go (run the full refinement now).
        preset_kind_chosen(object): the user chose a shipped preset kind (a ``crfcore.presets.KINDS`` name), or
            None for "auto" (the kind that matches the unary source).
        error(str): a readable message (a bad preset file, a value the spec refused).
    """

    param_edited = Signal(bool)
    param_released = Signal()
    preset_kind_chosen = Signal(object)
    error = Signal(str)

    def __init__(self, methods: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        if not methods:
            raise ValueError("RefinerPanel needs at least one method; crfcore.refiners.names() is empty.")
        self.document: ImageDocument | None = None
        self.tabs = QTabWidget()
        self.forms: dict[str, ParamForm] = {}
        for method in methods:
            form = ParamForm(method)
            scroll = QScrollArea()
            scroll.setWidgetResizable(True)
            scroll.setWidget(form)
            self.tabs.addTab(scroll, crfcore.refiners.method(method).title)
            self.forms[method] = form
            for control in form.controls.values():
                control.edited.connect(lambda name, value, dragging, m=method: self._on_edited(m, name, value,
                                                                                                dragging))
                control.released.connect(lambda _name: self.param_released.emit())
        self.tabs.currentChanged.connect(self._on_tab)
        self.kind_combo = QComboBox()
        self.kind_combo.addItem("Auto: match the unary source", None)
        for kind in crfcore.presets.KINDS:
            self.kind_combo.addItem(KIND_TITLES[kind].capitalize(), kind)
        self.kind_combo.setToolTip("Shipped presets per kind of unary: a mask drawn by a person needs a gentler CRF "
                                   "than a network's noisy probabilities. Auto picks the kind of the loaded unary.")
        self.kind_combo.activated.connect(lambda i: self.preset_kind_chosen.emit(self.kind_combo.itemData(i)))
        self.source = QLabel("Values: the params.py defaults")
        self.source.setWordWrap(True)
        self.source.setToolTip("Where the refiner's current values came from.")
        kind_row = QFormLayout()
        kind_row.addRow("Presets", self.kind_combo)
        kind_row.addRow(self.source)
        self.load_button = QPushButton("Load preset…")
        self.save_button = QPushButton("Save preset…")
        self.reset_button = QPushButton("Reset")
        self.reset_button.setToolTip("Back to the defaults of crfcore/params.py for this refiner.")
        self.load_button.clicked.connect(self.load_preset)
        self.save_button.clicked.connect(self.save_preset)
        self.reset_button.clicked.connect(self.reset)
        buttons = QHBoxLayout()
        for button in (self.load_button, self.save_button, self.reset_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(kind_row)
        layout.addWidget(self.tabs, 1)
        layout.addLayout(buttons)
        self.setEnabled(False)

    @property
    def methods(self) -> list[str]:
        return list(self.forms)

    def current_method(self) -> str:
        return self.methods[self.tabs.currentIndex()]

    def set_document(self, document: ImageDocument | None) -> None:
        """Bind to ``document`` (None: disable); the previous one's signals are disconnected."""
        if self.document is not None:
            self.document.method_changed.disconnect(self._show_method)
            self.document.param_changed.disconnect(self._show_param)
            self.document.params_replaced.disconnect(self._show_params)
        self.document = document
        self.setEnabled(document is not None)
        if document is None:
            for method in self.forms:
                self._show_effective(method)
            return
        document.method_changed.connect(self._show_method)
        document.param_changed.connect(self._show_param)
        document.params_replaced.connect(self._show_params)
        for method, form in self.forms.items():
            form.set_params(document.params(method))
            self._show_effective(method)
        self._show_method(document.method)

    # --- document → widgets ------------------------------------------------------------------------------------
    def _show_method(self, method: str) -> None:
        with QSignalBlocker(self.tabs):
            self.tabs.setCurrentIndex(self.methods.index(method))

    def _show_param(self, method: str, name: str) -> None:
        self.forms[method].controls[name].set_value(getattr(self.document.params(method), name))
        self._show_effective(method)

    def _show_params(self, method: str) -> None:
        self.forms[method].set_params(self.document.params(method))
        self._show_effective(method)

    def _show_effective(self, method: str) -> None:
        if self.document is None:
            self.forms[method].show_effective(P.params_for(method)(), None)
            return
        height, width = self.document.image.shape[:2]
        self.forms[method].show_effective(self.document.params(method), P.scale_factor(height, width, "auto"))

    # --- widgets → document ------------------------------------------------------------------------------------
    def _on_tab(self, index: int) -> None:
        if self.document is not None:
            self.document.set_method(self.methods[index])

    def _on_edited(self, method: str, name: str, value: Any, dragging: bool) -> None:
        if self.document is None:
            return
        try:
            self.document.set_param(name, value, method=method)
        except ValueError as exc:
            self._show_param(method, name)
            self.error.emit(str(exc))
            return
        if not self.source.text().endswith(EDITED):
            self.source.setText(f"{self.source.text()}{EDITED}")
        self.param_edited.emit(dragging)

    def load_preset(self, path: str | Path | None = None) -> None:
        """Load a preset file (asks for one when ``path`` is None) into the document and switch to its method."""
        if self.document is None:
            return
        path = path or files.ask_preset_to_load(self, files.presets_folder())
        if not path:
            return
        try:
            preset = crfcore.presets.read(path)
            if preset.method not in self.forms:
                raise ValueError(f"preset {Path(path).name} is for {preset.method!r}, which is not registered here; "
                                 f"available refiners are {', '.join(self.forms)}.")
        except (OSError, ValueError) as exc:
            self.error.emit(str(exc))
            return
        self.document.set_method(preset.method)
        self.document.set_params(preset.method, preset.params)
        if preset.kind in ROUGH_KINDS or preset.unary or preset.appearance != P.UnaryParams():
            self.document.set_unary_settings(preset.appearance)  # the unary settings it was tuned with
        self.show_source(f"loaded from {Path(path).name}")

    def save_preset(self, path: str | Path | None = None) -> None:
        """Save the current refiner's parameters and the unary settings (:class:`crfcore.params.UnaryParams`, the
        preset's ``"unary"`` entry) as a preset; asks for a path, in the user's presets folder, when ``path`` is
        None."""
        if self.document is None:
            return
        doc = self.document
        method = doc.method
        path = path or files.ask_preset_to_save(self, files.presets_folder() / f"{method}.json")
        if not path:
            return
        try:
            P.save_preset(path, method, doc.params(method),
                          unary=dataclasses.asdict(doc.unary_settings))
        except (OSError, ValueError) as exc:
            self.error.emit(f"Could not save the preset: {exc}")
            return
        self.show_source(f"saved as {Path(path).name}")

    def show_source(self, text: str) -> None:
        """Say where the current values came from ("the shipped rough annotation presets", "loaded from x.json");
        an edit appends ", edited"."""
        self.source.setText(f"Values: {text}")

    def show_preset_kind(self, kind: str | None, *, auto: bool) -> None:
        """Show the preset kind in use: "Auto (<kind>)" when it follows the unary source, else the kind itself."""
        with QSignalBlocker(self.kind_combo):
            self.kind_combo.setItemText(0, f"Auto: {KIND_TITLES[kind]}" if auto and kind else
                                        "Auto: match the unary source")
            self.kind_combo.setCurrentIndex(0 if auto else self.kind_combo.findData(kind))

    def reset(self) -> None:
        """Back to the params.py defaults for the current refiner."""
        if self.document is not None:
            self.document.reset_params()
            self.show_source(f"defaults of {crfcore.refiners.method(self.document.method).title}")
