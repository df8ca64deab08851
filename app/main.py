"""Entry point ``crf-studio [FOLDER]``: open a folder of images with masks or probability maps and refine them live.

Without FOLDER the bundled samples (``resources/samples``) are opened when present. The folder conventions are in
:mod:`app.folder`; keyboard shortcuts in :data:`app.window.SHORTCUTS`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PySide6.QtWidgets import QApplication, QWidget

    from .window import MainWindow

__all__ = ["SAMPLES", "build_parser", "main", "save_screenshot"]

SAMPLES = Path(__file__).resolve().parents[1] / "resources" / "samples"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crf-studio", description="Refine rough segmentation masks with CRFs, "
                                     "live: sliders generated from crfcore's parameter specs.")
    parser.add_argument("folder", nargs="?", type=Path, help="images with <stem>_mask.png and/or <stem>_probs.npy "
                        "beside them, or images/ + masks/ subfolders; optional classes.json "
                        f"(default: the bundled samples, {SAMPLES})")
    parser.add_argument("--model", type=Path, metavar="FILE", help="use a segmentation network as the unary source: "
                        "torchvision weights (.pth, the five architectures of crfcore.backbones), TorchScript or "
                        "torch.export (.pt2); it runs on the shown image at once and on the folder in the background, "
                        "its probabilities cached in the folder's project")
    parser.add_argument("--method", help="refiner to start with (default: the first registered, convcrf)")
    parser.add_argument("--device", help="'cpu' or 'cuda' (default: CUDA when available)")
    parser.add_argument("--screenshot", type=Path, metavar="PNG", help="save a picture of the window once the "
                        "first image is refined, then quit (documentation, smoke tests)")
    parser.add_argument("--selftest", action="store_true", help="show the window, refine the folder's first image "
                        "(default: the bundled samples), check the install, print one line with the start-up and "
                        "refine times, then quit: 0 on success, 1 with the reason otherwise (app.selftest)")
    parser.add_argument("--selftest-out", type=Path, metavar="DIR", help="where --selftest writes the refined "
                        "mask (default: a new temporary folder)")
    parser.add_argument("--startup-time", action="store_true", help="print the seconds from process start to the "
                        "window painted with the folder's first image, then when the compute engine (torch), loaded "
                        "after that paint, was ready and how long the window was blocked meanwhile; then quit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the app; returns the Qt event loop's exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if args.selftest:
        from .selftest import Selftest
        selftest = Selftest()  # before the QApplication: picks the offscreen platform when there is no screen
    from .system import ADVICE, advise_on_fatal, preflight

    problem = preflight()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    # The compute engine (torch, 1.7 s) is imported on a thread once the window has been painted (app.engine);
    # --method must be checked against the registered refiners first, so it loads the engine before the window.
    later = args.method is None
    if not later:
        import crfcore.refiners  # noqa: F401  torch before Qt: PySide6's import hook would wrap torch's imports

        if args.method not in crfcore.refiners.names():
            valid = ", ".join(crfcore.refiners.names())
            print(f"crf-studio: --method {args.method!r} is not a registered refiner; valid ones are {valid}.",
                  file=sys.stderr)
            return 2
    try:
        from PySide6.QtWidgets import QApplication
    except ImportError as exc:  # QtGui links the system GL libraries
        print(f"crf-studio: Qt cannot load ({exc}).\n{ADVICE}", file=sys.stderr)
        return 1
    from .window import MainWindow

    if QApplication.instance() is None:
        advise_on_fatal()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("CRF Studio")
    app.setOrganizationName("CRF Studio")  # QSettings then writes to the user's config location, never beside us
    window = MainWindow(device=args.device, load_engine_later=later)
    folder = args.folder if args.folder is not None else (SAMPLES if SAMPLES.is_dir() else None)
    opened = folder is not None and window.open_folder(folder)
    window.show()  # after the folder: its first frame has the image, the list and the legend in place
    if opened and args.model is not None:
        window.when_engine_ready(lambda: window.use_network_file(args.model))
    if opened and args.method is not None and window.document is not None:
        window.document.set_method(args.method)
    if args.startup_time:
        return _print_startup_time(app, window)
    if args.screenshot is not None:
        _screenshot_when_idle(window, args.screenshot)
        return 0
    if args.selftest:
        return selftest.run(window, out=args.selftest_out)
    return app.exec()


def save_screenshot(widget: "QWidget", path: Path) -> None:
    """Save ``widget`` as an indexed-colour PNG (256 colours keep a 1280×800 window near 150 KB)."""
    import numpy as np
    from PIL import Image
    from PySide6.QtGui import QImage

    image = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    rows = np.frombuffer(image.constBits(), dtype=np.uint8).reshape(image.height(), image.bytesPerLine())
    rgb = rows[:, : image.width() * 3].reshape(image.height(), image.width(), 3)
    Image.fromarray(rgb).quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def _print_startup_time(app: "QApplication", window: "MainWindow") -> int:
    """Paint the window once and print ``startup <s> s (CPU <c> s)``: the seconds since the process began (Linux
    ``/proc``) until the window with the folder's first image has been painted, and the CPU seconds the main thread
    used until then (less sensitive to a busy machine; other threads are not counted). Then wait for the compute
    engine, imported on a thread after that paint, and add ``; engine ready <s> s (its import <s> s), window
    blocked <= <ms> ms while loading, <ms> ms attaching``: when the refiner's controls were there and the image opened
    with its unary (seconds since the process began), how long the import took on its thread, the longest the event
    loop went without running while the engine was imported (a 10 ms timer's largest gap, less its 10 ms: the window
    did not answer that long; the import thread holds the GIL in torch's C extension initialisation) and how long
    building the engine's widgets and opening the image took on the GUI thread. Then close.

    Returns 0, 1 where the process start time is unknown (not Linux) or the engine failed to load."""
    import time

    from PySide6.QtCore import QElapsedTimer, QEventLoop, QTimer

    from .selftest import seconds_since_process_start

    window.repaint()  # the first frame: the window with its first image (this paint starts the engine's import)
    app.processEvents()
    seconds = seconds_since_process_start()
    cpu = time.thread_time()
    if seconds is None:
        window.close()
        print("crf-studio: --startup-time needs /proc (Linux) to know when the process began.", file=sys.stderr)
        return 1
    clock, tick, longest = QElapsedTimer(), QTimer(), [0]
    loop = QEventLoop()

    def beat() -> None:
        gap = clock.restart()
        if window.engine_ready or window.engine_error:
            loop.quit()
        else:  # a gap that ends after the engine was attached holds the attaching, timed on its own
            longest[0] = max(longest[0], gap)

    tick.timeout.connect(beat)
    clock.start()
    tick.start(_BEAT_MS)
    if not (window.engine_ready or window.engine_error):
        loop.exec()
    tick.stop()
    ready = seconds_since_process_start()
    if window.scheduler is not None:
        window.scheduler.cancel()
    window.close()
    if window.engine_error:
        print(f"crf-studio: {window.engine_error}", file=sys.stderr)
        return 1
    print(f"startup {seconds:.2f} s (CPU {cpu:.2f} s); engine ready {ready:.2f} s (its import "
          f"{window.engine_seconds or 0.0:.2f} s), window blocked <= "
          f"{max(longest[0] - _BEAT_MS, 0)} ms while loading, {window.engine_attach_seconds * 1000:.0f} ms attaching",
          flush=True)
    return 0


_BEAT_MS = 10


def _screenshot_when_idle(window: "MainWindow", path: Path) -> None:
    """Run the event loop until the first refinement has arrived and nothing runs, then save ``path`` and close.

    A local event loop, not the application's: quitting the application would end every later loop at once.
    """
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()

    def check() -> None:
        doc = window.document
        if not window.engine_ready and not window.engine_error:
            return
        if doc is None or doc.result is not None and not window.scheduler.busy and not window.scheduler.pending:
            timer.stop()
            save_screenshot(window, path)
            window.close()
            loop.quit()

    timer = QTimer(window)
    timer.timeout.connect(check)
    timer.start(200)
    loop.exec()


if __name__ == "__main__":
    sys.exit(main())
