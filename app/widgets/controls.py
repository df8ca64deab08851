"""One small widget per parameter kind, generated from a :class:`crfcore.params.ParamSpec`.

Numbers get a slider and a spin box (log-scaled where ``spec.scale == "log"``, odd values only where ``spec.odd``),
choices a combo box, booleans a check box. A control emits ``edited(name, value, dragging)`` when the user changes it
(``dragging`` while a slider is held) and ``released(name)`` when a slider is let go; :meth:`ParamControl.set_value`
updates it from the document without emitting (napari's blocker habit). A spatial number (``spec.spatial``) is set at
the 500-px reference size; :meth:`NumberControl.show_effective` writes its value on the current image beside it.
"""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import QSignalBlocker, Qt, Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel, QSlider, QSpinBox,
                               QWidget)

from crfcore.params import REFERENCE_SIZE, ParamSpec

__all__ = ["SLIDER_STEPS", "SliderScale", "ParamControl", "NumberControl", "ChoiceControl", "BoolControl",
           "make_control", "describe_spec"]

SLIDER_STEPS = 1000  # positions of a log-scaled or finely stepped slider


def describe_spec(spec: ParamSpec) -> str:
    """Tooltip text: the help, the unit and range, and whether a change rebuilds the affinity operator."""
    lines = [spec.help]
    if spec.kind in ("int", "float"):
        unit = f" {spec.unit}" if spec.unit else ""
        scale = ", log scale" if spec.scale == "log" else ""
        lines.append(f"Range {spec.low:g}…{spec.high:g}{unit}{scale}; default {spec.default:g}.")
    if spec.rebuilds:
        lines.append("Changing it rebuilds the affinity operator (slower than a weight change).")
    return "\n".join(lines)


class SliderScale:
    """Maps a numeric spec's values to integer slider positions and back.

    Log specs spread :data:`SLIDER_STEPS` positions evenly in log(value); odd specs step by 2 from ``low``; other
    specs step by ``spec.step`` (at most :data:`SLIDER_STEPS` positions). Values read off a log slider are rounded to
    3 significant digits so the spin box and the stored value agree.
    """

    def __init__(self, spec: ParamSpec) -> None:
        if spec.kind not in ("int", "float") or spec.low is None or spec.high is None:
            raise ValueError(f"{spec.name}: a slider needs a numeric spec with low and high, got kind {spec.kind!r}, "
                             f"range [{spec.low}, {spec.high}].")
        self.spec = spec
        self.log = spec.scale == "log"
        if self.log:
            self.steps = SLIDER_STEPS
        else:
            step = 2.0 if spec.odd else (spec.step or (1.0 if spec.kind == "int" else (spec.high - spec.low) / 100))
            self.steps = min(SLIDER_STEPS, max(1, round((spec.high - spec.low) / step)))

    def to_value(self, position: int) -> float | int:
        spec, frac = self.spec, min(max(position, 0), self.steps) / self.steps
        if self.log:
            value = math.exp(math.log(spec.low) + frac * (math.log(spec.high) - math.log(spec.low)))
            value = float(f"{value:.3g}")
        else:
            value = spec.low + frac * (spec.high - spec.low)
        value = min(max(value, spec.low), spec.high)
        if spec.kind == "float":
            return value
        number = round(value)
        if spec.odd and number % 2 == 0:
            number = number + 1 if number + 1 <= spec.high else number - 1
        return number

    def to_position(self, value: float) -> int:
        spec = self.spec
        value = min(max(float(value), spec.low), spec.high)
        if self.log:
            frac = (math.log(value) - math.log(spec.low)) / (math.log(spec.high) - math.log(spec.low))
        else:
            frac = (value - spec.low) / (spec.high - spec.low)
        return round(frac * self.steps)


class _SciSpinBox(QDoubleSpinBox):
    """A double spin box that shows and accepts scientific notation (``1e-05``), for log-scaled ranges."""

    def textFromValue(self, value: float) -> str:  # noqa: N802 (Qt override)
        return f"{value:.4g}"

    def valueFromText(self, text: str) -> float:  # noqa: N802 (Qt override)
        try:
            return float(text)
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int) -> object:
        try:
            float(text)
        except ValueError:
            return QValidator.State.Intermediate, text, pos
        return QValidator.State.Acceptable, text, pos


class ParamControl(QWidget):
    """Base of the controls. Signals: ``edited(name, value, dragging)``, ``released(name)``."""

    edited = Signal(str, object, bool)
    released = Signal(str)

    def __init__(self, spec: ParamSpec, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.spec = spec
        self.setToolTip(describe_spec(spec))
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)

    def value(self) -> Any:
        raise NotImplementedError

    def set_value(self, value: Any) -> None:
        raise NotImplementedError


class NumberControl(ParamControl):
    """Slider + spin box for an ``int`` or ``float`` spec."""

    def __init__(self, spec: ParamSpec, parent: QWidget | None = None) -> None:
        super().__init__(spec, parent)
        self.scale = SliderScale(spec)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, self.scale.steps)
        self.slider.setPageStep(max(1, self.scale.steps // 10))
        if spec.kind == "int":
            self.spin: QSpinBox | QDoubleSpinBox = QSpinBox()
            self.spin.setRange(int(spec.low), int(spec.high))
            self.spin.setSingleStep(2 if spec.odd else int(spec.step or 1))
        elif spec.scale == "log":
            self.spin = _SciSpinBox()
            self.spin.setDecimals(12)
            self.spin.setRange(spec.low, spec.high)
            self.spin.setStepType(QDoubleSpinBox.StepType.AdaptiveDecimalStepType)
        else:
            self.spin = QDoubleSpinBox()
            self.spin.setDecimals(max(0, -math.floor(math.log10(spec.step))) if spec.step else 2)
            self.spin.setRange(spec.low, spec.high)
            self.spin.setSingleStep(spec.step or (spec.high - spec.low) / 100)
        self.spin.setKeyboardTracking(False)
        self.spin.setMinimumWidth(72)
        if spec.unit:
            self.spin.setSuffix(f" {spec.unit}" if len(spec.unit) <= 3 else "")
        self.layout().addWidget(self.slider, 1)
        self.layout().addWidget(self.spin)
        self.effective = QLabel()  # spatial specs: the value on this image (show_effective)
        self.effective.setToolTip(f"The value on this image: set at a {REFERENCE_SIZE}-px long side, scaled by the "
                                  f"image's long side / {REFERENCE_SIZE}.")
        self.effective.setVisible(False)
        self.layout().addWidget(self.effective)
        self._value: float | int = spec.default
        self.set_value(spec.default)
        self.slider.valueChanged.connect(self._on_slider)
        self.slider.sliderReleased.connect(lambda: self.released.emit(self.spec.name))
        self.spin.valueChanged.connect(self._on_spin)

    def value(self) -> float | int:
        return self._value

    def set_value(self, value: float | int) -> None:
        self._value = value
        with QSignalBlocker(self.slider), QSignalBlocker(self.spin):
            self.slider.setValue(self.scale.to_position(value))
            self.spin.setValue(value)

    def show_effective(self, value: float | int | None) -> None:
        """Show ``value``, this parameter on the current image, beside the reference value; None hides it."""
        self.effective.setVisible(value is not None)
        if value is not None:
            unit = f" {self.spec.unit}" if self.spec.unit else ""
            self.effective.setText(f"→ {value:.3g}{unit} here")

    def _on_slider(self, position: int) -> None:
        value = self.scale.to_value(position)
        if value == self._value:
            return
        self._value = value
        with QSignalBlocker(self.spin):
            self.spin.setValue(value)
        self.edited.emit(self.spec.name, value, self.slider.isSliderDown())

    def _on_spin(self, value: float) -> None:
        if self.spec.kind == "int":
            value = int(value)
            if self.spec.odd and value % 2 == 0:
                value = value + 1 if value + 1 <= self.spec.high else value - 1
                with QSignalBlocker(self.spin):
                    self.spin.setValue(value)
        if value == self._value:
            return
        self._value = value
        with QSignalBlocker(self.slider):
            self.slider.setValue(self.scale.to_position(value))
        self.edited.emit(self.spec.name, value, False)


class ChoiceControl(ParamControl):
    """Combo box for a ``choice`` spec. A value outside the choices (a compat matrix from a preset) is shown as an
    extra, read-only entry; choosing a listed value replaces it."""

    def __init__(self, spec: ParamSpec, parent: QWidget | None = None) -> None:
        super().__init__(spec, parent)
        self.combo = QComboBox()
        for choice in spec.choices:
            self.combo.addItem(str(choice), choice)
        self.layout().addWidget(self.combo, 1)
        self._value: Any = spec.default
        self.set_value(spec.default)
        self.combo.currentIndexChanged.connect(self._on_index)

    def value(self) -> Any:
        return self._value

    def set_value(self, value: Any) -> None:
        self._value = value
        with QSignalBlocker(self.combo):
            while self.combo.count() > len(self.spec.choices):
                self.combo.removeItem(self.combo.count() - 1)
            if value in self.spec.choices:
                self.combo.setCurrentIndex(self.spec.choices.index(value))
            else:
                self.combo.addItem(f"{_describe_value(value)} (from preset)", value)
                self.combo.setCurrentIndex(self.combo.count() - 1)

    def _on_index(self, index: int) -> None:
        value = self.combo.itemData(index)
        if index < len(self.spec.choices) and value != self._value:
            self.set_value(value)
            self.edited.emit(self.spec.name, value, False)


def _describe_value(value: Any) -> str:
    """``"3×3 matrix"`` for a square matrix of numbers, ``"custom value"`` for anything else."""
    try:
        rows = [list(row) for row in value]
    except TypeError:
        return "custom value"
    square = bool(rows) and all(len(row) == len(rows) for row in rows)
    numbers = all(isinstance(x, (int, float)) for row in rows for x in row)
    return f"{len(rows)}×{len(rows)} matrix" if square and numbers else "custom value"


class BoolControl(ParamControl):
    """Check box for a ``bool`` spec."""

    def __init__(self, spec: ParamSpec, parent: QWidget | None = None) -> None:
        super().__init__(spec, parent)
        self.check = QCheckBox()
        self.layout().addWidget(self.check, 1)
        self.set_value(spec.default)
        self.check.toggled.connect(lambda on: self.edited.emit(self.spec.name, bool(on), False))

    def value(self) -> bool:
        return self.check.isChecked()

    def set_value(self, value: bool) -> None:
        with QSignalBlocker(self.check):
            self.check.setChecked(bool(value))


def make_control(spec: ParamSpec, parent: QWidget | None = None) -> ParamControl:
    """The control for ``spec``'s kind."""
    kinds = {"int": NumberControl, "float": NumberControl, "choice": ChoiceControl, "bool": BoolControl}
    if spec.kind not in kinds:
        raise ValueError(f"{spec.name} has kind {spec.kind!r}; valid kinds are {', '.join(map(repr, kinds))}.")
    return kinds[spec.kind](spec, parent)
