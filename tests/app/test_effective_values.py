"""Issue 20 in the app: spatial sliders set reference (500-px) values and show the value on the open image."""

from __future__ import annotations

from app.document import ImageDocument, available_methods
from app.folder import scan_folder
from app.widgets.refiner_panel import RefinerPanel
from crfcore import params as P


def test_spatial_sliders_show_the_effective_value_beside_the_reference_value(tmp_path, folder_factory, qtbot):
    folder = scan_folder(folder_factory(tmp_path / "big", count=1, height=256, width=1000))
    panel = RefinerPanel(available_methods())
    qtbot.addWidget(panel)
    controls = panel.forms["convcrf"].controls
    assert controls["theta_alpha"].effective.isHidden()  # no image yet
    document = ImageDocument.open(folder.entries[0])
    panel.set_document(document)
    assert controls["theta_alpha"].spin.value() == 80.0  # the reference value, as set
    assert controls["theta_alpha"].effective.text() == "→ 160 px here"  # 1000-px long side: twice the reference
    assert controls["theta_gamma"].effective.text() == "→ 6 px here"
    assert controls["blur"].effective.text() == "→ 8 here"
    assert not controls["theta_alpha"].effective.isHidden()
    assert controls["theta_beta"].effective.isHidden() and controls["w_appearance"].effective.isHidden()
    document.set_param("theta_alpha", 40.0, method="convcrf")
    assert controls["theta_alpha"].effective.text() == "→ 80 px here"
    assert P.scale_factor(256, 1000, "auto") == 2.0


def test_previews_of_a_large_image_take_effective_values_beyond_the_slider_ranges():
    from crfcore.image_refiner import preview_params

    effective = P.scaled(P.ConvCRFParams(theta_alpha=300.0), 8.0)  # a 4000-px photo: θα 2400 px, blur 32
    preview = preview_params(effective, 2)
    assert (preview.theta_alpha, preview.blur) == (1200.0, 16)
    assert preview.filter_size * preview.blur * 2 == effective.filter_size * effective.blur
