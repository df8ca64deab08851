"""The ``crf-studio`` entry point: arguments, and a screenshot run end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

from app.main import main

ROOT = Path(__file__).resolve().parents[2]


def test_screenshot_run_opens_refines_saves_and_quits(sample_folder, tmp_path, qapp):
    out = tmp_path / "shot.png"
    assert main([str(sample_folder), "--method", "convcrf", "--device", "cpu", "--screenshot", str(out)]) == 0
    with Image.open(out) as shot:
        assert shot.mode == "P" and shot.width >= 800  # indexed colours, the whole window


def test_unknown_method_is_refused_with_the_valid_ones(capsys):
    assert main(["--method", "nope"]) == 2
    assert "'nope' is not a registered refiner; valid ones are convcrf" in capsys.readouterr().err


def test_startup_time_prints_the_seconds_to_a_shown_window_and_quits(sample_folder, qapp, capsys):
    assert main([str(sample_folder), "--device", "cpu", "--startup-time"]) == 0
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(r"startup \d+\.\d\d s \(CPU \d+\.\d\d s\)", line), line


def test_the_first_screen_does_not_import_what_it_does_not_show():
    """The window module leaves SciPy, the network models and the dialogs' libraries for later (issue 19)."""
    code = ("import sys, app.window; heavy = ('scipy', 'skimage', 'ray', 'crfcore.backbones', 'crfcore.metrics', "
            "'crfcore.learn', 'crfcore.export', 'app.dialogs.tune', 'app.dialogs.export', 'app.dialogs.network'); "
            "print(sorted(m for m in heavy if m in sys.modules))")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
