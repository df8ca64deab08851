"""``crf-studio --selftest``, run from source through :func:`app.main.main` as the frozen app runs it, and where the
app's settings go (the user's config location, never the program's folder)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QCoreApplication, QStandardPaths

from app.main import SAMPLES, main
from app.selftest import Selftest, settings_file, use_offscreen_without_display
import crfcore
import crfcore.presets
from crfcore.io import load_image, load_mask

ROOT = Path(__file__).resolve().parents[2]


def test_selftest_refines_the_folders_first_image_and_writes_its_mask(folder_factory, tmp_path, qapp, capsys):
    # 480 px wide: the rough-annotation preset's pixel-sized settings act as at the 500-px reference (on an 80-px
    # thumbnail, scaled to it, they leave this mask as it is)
    sample_folder = folder_factory(tmp_path / "samples", count=2, height=400, width=480)
    out = tmp_path / "out"
    assert main([str(sample_folder), "--selftest", "--selftest-out", str(out), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "selftest OK" in lines[0]
    assert "refined img0 (480×400, 2 classes) with convcrf on cpu in " in lines[0]
    if sys.platform.startswith("linux"):
        assert " s after process start;" in lines[0]
    refined = load_mask(out / "img0_refined.png")
    coarse = load_mask(sample_folder / "img0_mask.png")
    # a mask: the window picks the rough_annotation presets, so its result is crfcore.refine_mask's with params=None
    expected = crfcore.refine_mask(load_image(sample_folder / "img0.png"), coarse.astype(np.int64), num_classes=2,
                                   method="convcrf", device="cpu")
    np.testing.assert_array_equal(refined, expected.labels)  # the window's result, not the coarse mask
    assert not np.array_equal(refined, coarse)


def test_selftest_without_a_folder_refines_a_bundled_sample(tmp_path, qapp, capsys):
    if not SAMPLES.is_dir():
        pytest.skip(f"the bundled samples are missing at {SAMPLES}")
    assert main(["--selftest", "--selftest-out", str(tmp_path), "--device", "cpu"]) == 0
    height, width = load_image(SAMPLES / "astronaut.png").shape[:2]
    assert f"refined astronaut ({width}×{height}, 3 classes)" in capsys.readouterr().out
    assert (tmp_path / "astronaut_refined.png").is_file()


def test_selftest_names_a_missing_folder_and_exits_1(tmp_path, qapp, capsys):
    assert main([str(tmp_path / "nowhere"), "--selftest", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "crf-studio --selftest FAILED: no image was opened:" in err and "nowhere is not a folder" in err


def test_selftest_fails_on_an_image_without_mask_or_probabilities(folder_factory, tmp_path, qapp, capsys):
    folder = folder_factory(tmp_path / "bare", count=1)
    (folder / "img0_mask.png").unlink()
    assert main([str(folder), "--selftest", "--device", "cpu"]) == 1
    assert "FAILED: nothing to refine: img0 has no mask or probability map" in capsys.readouterr().err


def test_selftest_fails_when_something_is_written_into_the_watched_app_folder(window, tmp_path, capsys):
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "crf-studio").write_bytes(b"")
    selftest = Selftest(watch=app_dir)
    (app_dir / "settings.ini").write_text("[General]\n")  # what a program that writes beside itself leaves
    assert selftest.run(window, out=tmp_path / "out") == 1
    assert f"wrote 1 file(s) into its own folder {app_dir}: settings.ini" in capsys.readouterr().err


def test_settings_go_to_the_user_config_location_never_beside_the_program(sample_folder, tmp_path, qapp, capsys):
    assert main([str(sample_folder), "--selftest", "--selftest-out", str(tmp_path), "--device", "cpu"]) == 0
    assert (QCoreApplication.organizationName(), QCoreApplication.applicationName()) == ("CRF Studio", "CRF Studio")
    where = settings_file()
    assert f"settings {where}" in capsys.readouterr().out
    if sys.platform == "win32":
        assert where.startswith("\\HKEY_CURRENT_USER\\Software\\CRF Studio")
        return
    path = Path(where).resolve()
    config = Path(QStandardPaths.writableLocation(QStandardPaths.StandardLocation.GenericConfigLocation)).resolve()
    assert path.is_relative_to(config) and "CRF Studio" in path.parts
    for program_dir in (ROOT, Path(sys.executable).resolve().parent):
        assert not path.is_relative_to(program_dir)


@pytest.mark.parametrize(("platform", "environ", "chosen"), [
    ("linux", {}, "offscreen"),
    ("linux", {"DISPLAY": ":0"}, None),
    ("linux", {"WAYLAND_DISPLAY": "wayland-0"}, None),
    ("linux", {"QT_QPA_PLATFORM": "xcb"}, "xcb"),
    ("win32", {}, None),
    ("darwin", {}, None),
])
def test_offscreen_is_chosen_only_on_linux_without_a_display(platform, environ, chosen):
    env = dict(environ)
    assert use_offscreen_without_display(env, platform=platform) == (chosen == "offscreen")
    assert env.get("QT_QPA_PLATFORM") == chosen
