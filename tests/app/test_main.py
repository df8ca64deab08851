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
    found = re.fullmatch(r"startup (\d+\.\d\d) s \(CPU \d+\.\d\d s\); engine ready (\d+\.\d\d) s \(its import "
                         r"\d+\.\d\d s\), window blocked "
                         r"<= \d+ ms while loading, \d+ ms attaching", line)
    assert found, line
    assert float(found[2]) >= float(found[1])


def test_the_first_screen_does_not_import_what_it_does_not_show():
    """The window module leaves torch, SciPy, the network models and the dialogs' libraries for later (issue 19)."""
    code = ("import sys, app.window; heavy = ('torch', 'scipy', 'skimage', 'ray', 'crfcore.refiners', "
            "'crfcore.backbones', 'crfcore.metrics', 'crfcore.learn', 'crfcore.export', 'app.document', "
            "'app.workers', 'app.dialogs.tune', 'app.dialogs.export', 'app.dialogs.network'); "
            "print(sorted(m for m in heavy if m in sys.modules))")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


FIRST_PAINT = """
import sys, time
from pathlib import Path
from PySide6.QtWidgets import QApplication
from app.engine import ENGINE_MODULES
from app.window import MainWindow

app = QApplication([])
window = MainWindow(device="cpu", load_engine_later=True)
window.show()
assert window.open_folder(Path(sys.argv[1]))
window.refine_now()  # before the engine: says it waits, does not fail
window.repaint()
print(sorted(m for m in ENGINE_MODULES if m in sys.modules))
print(window.canvas.image_item.image.shape, window.panel is None, window.document is None, window.message.text())
deadline = time.perf_counter() + 120
while not (window.engine_ready or window.engine_error) and time.perf_counter() < deadline:
    app.processEvents()
    time.sleep(0.01)
app.processEvents()  # the refiner panel, put in the placeholder's place, is shown by the event loop
print(sorted(m for m in ENGINE_MODULES if m in sys.modules), window.engine_error)
doc = window.document
print(doc.entry.stem, doc.unary_kind, window.panel.isVisible(), window.scheduler.busy or window.scheduler.pending)
window.scheduler.cancel()
window.close()
"""


def test_the_first_paint_shows_the_image_before_torch_is_imported_and_the_engine_follows(sample_folder):
    """Issue 19: the window is painted with the folder's first image before torch is imported; the paint starts
    the engine's import on a thread, after which the image opens with its mask and is refined."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", FIRST_PAINT, str(sample_folder)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    before, shown, after, opened = done.stdout.strip().splitlines()
    assert before == "[]"
    assert shown.startswith("(64, 80, 3) True True "), shown
    assert "Loading the compute engine" in shown
    assert after == "['app.document', 'app.workers', 'crfcore.refiners', 'torch'] "
    assert opened == "img0 mask True True", opened


def test_before_the_engine_the_window_pages_through_images_and_waits_for_it(sample_folder, qtbot):
    """While the engine loads (a window made with load_engine_later and never painted here), Next shows the next
    image alone, Refine and About say they wait, and the engine, once attached, opens the image shown then."""
    from app.window import LOADING, MainWindow

    window = MainWindow(device="cpu", load_engine_later=True)
    qtbot.addWidget(window)
    assert window.open_folder(sample_folder)
    assert window.panel is None and window.document is None and window.image_list.currentRow() == 0
    window.qactions["next"].trigger()
    assert window.image_list.currentRow() == 1 and window.canvas.image_item.image is not None
    window.refine_now()
    assert LOADING in window.message.text() and "refined as soon as it is ready" in window.message.text()
    window.show_about()
    assert window.about_box is None and "About opens when it is ready" in window.message.text()
    done = []
    window.when_engine_ready(lambda: done.append(window.document.entry.stem))
    with qtbot.waitSignal(window.engine_loader.ready, timeout=120_000):
        window.engine_loader.start()
    assert window.engine_ready and window.document.entry.stem == "img1" and done == ["img1"]
    assert window.about_box is not None  # About, asked for while loading, opened once the engine was there
    window.about_box.close()


def test_an_engine_that_cannot_load_is_named_in_the_window_and_refine_says_so(sample_folder, qtbot, monkeypatch):
    from app import engine
    from app.window import MainWindow

    def broken() -> None:
        raise ImportError("libtorch_cpu.so: cannot open shared object file")

    monkeypatch.setattr(engine, "load", broken)
    window = MainWindow(device="cpu", load_engine_later=True)
    qtbot.addWidget(window)
    assert window.open_folder(sample_folder)
    with qtbot.waitSignal(window.engine_loader.failed, timeout=10_000):
        window.engine_loader.start()
    assert "could not be loaded: ImportError: libtorch_cpu.so" in window.engine_error
    assert "python -c 'import torch'" in window.engine_error
    assert window.refiner_box.layout().itemAt(0).widget().text().startswith("The compute engine could not be loaded")
    window.refine_now()
    assert window.message.text() == window.engine_error and not window.engine_ready
    window.error_box.close()
