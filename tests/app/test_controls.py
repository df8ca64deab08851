"""Parameter controls generated from params.py specs: slider scales, odd values, signals, the panel's tabs."""

from __future__ import annotations

import math

import pytest

from app.document import available_methods
from app.widgets.controls import ChoiceControl, NumberControl, SliderScale, make_control
from app.widgets.refiner_panel import RefinerPanel
from crfcore import params as P


def spec_of(cls, name):
    return next(s for s in P.specs(cls) if s.name == name)


def test_log_slider_spreads_positions_evenly_in_log_value():
    scale = SliderScale(spec_of(P.ConvCRFParams, "theta_alpha"))  # 1..300 px, log
    assert scale.to_value(0) == 1.0 and scale.to_value(scale.steps) == 300.0
    middle = scale.to_value(scale.steps // 2)
    assert middle == pytest.approx(math.sqrt(300.0), rel=1e-2)
    for position in (0, 137, 500, 999):
        assert scale.to_position(scale.to_value(position)) == pytest.approx(position, abs=1)


def test_odd_spec_slider_only_gives_odd_values():
    spec = spec_of(P.ConvCRFParams, "filter_size")
    scale = SliderScale(spec)
    values = [scale.to_value(p) for p in range(scale.steps + 1)]
    assert values[0] == spec.low and values[-1] == spec.high
    assert all(v % 2 == 1 for v in values) and values == sorted(set(values))


def test_number_control_reports_drags_and_keeps_programmatic_changes_silent(qtbot):
    control = make_control(spec_of(P.ConvCRFParams, "w_smoothness"))
    qtbot.addWidget(control)
    assert isinstance(control, NumberControl)
    edits = []
    control.edited.connect(lambda name, value, dragging: edits.append((name, value, dragging)))
    control.set_value(12.5)
    assert edits == [] and control.spin.value() == 12.5
    control.slider.setSliderDown(True)
    control.slider.setValue(control.scale.to_position(20.0))
    with qtbot.waitSignal(control.released):
        control.slider.setSliderDown(False)
    control.spin.setValue(4.0)
    assert edits == [("w_smoothness", 20.0, True), ("w_smoothness", 4.0, False)]


def test_odd_spin_box_snaps_an_even_entry_to_odd(qtbot):
    control = make_control(spec_of(P.ConvCRFParams, "filter_size"))
    qtbot.addWidget(control)
    control.spin.setValue(8)
    assert control.value() == 9 and control.spin.value() == 9


def test_log_spin_box_shows_scientific_notation(qtbot):
    spec = spec_of(P.GaussianCRFParams, "tol")
    control = make_control(spec)
    qtbot.addWidget(control)
    assert control.spin.text() == "0.0001"
    control.spin.setValue(1e-7)
    assert control.spin.text() == "1e-07" and control.value() == pytest.approx(1e-7)


def test_a_compat_matrix_from_a_preset_is_shown_but_not_edited(qtbot):
    control = make_control(spec_of(P.ConvCRFParams, "compat"))
    qtbot.addWidget(control)
    assert isinstance(control, ChoiceControl)
    control.set_value(((0.0, 1.0), (1.0, 0.0)))
    assert control.combo.currentText() == "2×2 matrix (from preset)"
    edits = []
    control.edited.connect(lambda name, value, dragging: edits.append(value))
    control.combo.setCurrentIndex(0)
    assert edits == ["potts"] and control.combo.count() == 1


def test_panel_has_a_tab_per_registered_refiner_and_a_control_per_spec(qtbot):
    panel = RefinerPanel(available_methods())
    qtbot.addWidget(panel)
    assert panel.methods == available_methods()
    for method, form in panel.forms.items():
        assert list(form.controls) == [s.name for s in P.specs(P.params_for(method))]
    with pytest.raises(ValueError, match="at least one method"):
        RefinerPanel([])


def test_a_non_matrix_custom_value_is_labelled_as_such(qtbot):
    control = make_control(spec_of(P.ConvCRFParams, "compat"))
    qtbot.addWidget(control)
    control.set_value((((1.0, 0.0), (0.0, 1.0)), ((2.0,),)))
    assert control.combo.currentText() == "custom value (from preset)"
