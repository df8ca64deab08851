"""The ``crf-studio`` entry point: arguments, and a screenshot run end to end."""

from __future__ import annotations

from PIL import Image

from app.main import main


def test_screenshot_run_opens_refines_saves_and_quits(sample_folder, tmp_path, qapp):
    out = tmp_path / "shot.png"
    assert main([str(sample_folder), "--method", "convcrf", "--device", "cpu", "--screenshot", str(out)]) == 0
    with Image.open(out) as shot:
        assert shot.mode == "P" and shot.width >= 800  # indexed colours, the whole window


def test_unknown_method_is_refused_with_the_valid_ones(capsys):
    assert main(["--method", "nope"]) == 2
    assert "'nope' is not a registered refiner; valid ones are convcrf" in capsys.readouterr().err
