"""Slider-to-overlay latency of the real window (DESIGN.md §7, "against the user's patience").

``python -m app.bench_latency`` opens a synthetic 0.5 MP image (512×1024, three classes, a noisy unary from
``crfcore.synthetic``) in the main window and, for every registered refiner, moves a weight slider and a θ slider
``--changes`` steps each the way a user does: press, drag a few steps, release. It prints, per refiner and slider,
the median and p95 of two latencies — **drag**: a slider step to the end of the first repaint showing the preview
made for it (reduced resolution; the step the user watches), and **release**: the release to the repaint showing
the full-resolution result — with the refiner's own median time from its timing breakdown, the preview sizes the
drag steps ran at (downsampling factors, fewest to most), and the longest gap of a 10 ms GUI timer over the whole
run (how long the event loop was ever blocked).

Runs headless (``QT_QPA_PLATFORM=offscreen``) unless a display is set. Timings on a shared machine are noisy; run
it once and report the load it ran under.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["make_scene", "percentile", "main"]

HEIGHT, WIDTH = 512, 1024  # 524,288 pixels = 0.5 MP
SLIDERS = ("w_smoothness", "theta_gamma")  # a weight (operator reused) and a θ (operator rebuilt)
STEPS_PER_DRAG = 5
TIMEOUT_S = 120.0


def make_scene(folder: Path, *, height: int = HEIGHT, width: int = WIDTH, seed: int = 0) -> Path:
    """Write ``scene.png``, ``scene_probs.npy`` (a noisy 3-class unary) and ``classes.json`` into ``folder``."""
    from crfcore.io import save_image
    from crfcore.synthetic import noisy_unary

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    labels = np.zeros((height, width), dtype=np.int64)
    labels[(yy - 0.5 * height) ** 2 + (xx - 0.3 * width) ** 2 < (0.3 * height) ** 2] = 1
    labels[(np.abs(yy - 0.55 * height) < 0.25 * height) & (np.abs(xx - 0.72 * width) < 0.12 * width)] = 2
    colours = np.array([[70, 110, 170], [220, 150, 60], [90, 170, 90]], dtype=np.float64)
    shading = (0.8 + 0.4 * xx / width)[..., None]
    image = np.clip(colours[labels] * shading + rng.normal(0, 14, (height, width, 3)), 0, 255).astype(np.uint8)
    save_image(folder / "scene.png", image)
    np.save(folder / "scene_probs.npy", noisy_unary(labels, 3, image_id="scene"))
    (folder / "classes.json").write_text('{"names": ["background", "disc", "box"]}')
    return folder


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation, as ``numpy.percentile``."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def _wait_for(window, done, what: str) -> None:
    """Run the event loop until ``done()`` holds, then paint once (what the user sees).

    The GUI thread idles in a real event loop meanwhile, woken only by events (results, the gap timer), as in the
    app; a loop of ``processEvents`` would keep taking the interpreter lock from the worker and slow it down.
    """
    from PySide6.QtCore import QEventLoop, QTimer

    loop, expired = QEventLoop(), []

    def check() -> None:
        if done():
            loop.quit()

    def give_up() -> None:
        expired.append(True)
        loop.quit()

    signals = (window.document.result_changed, window.scheduler.busy_changed)
    for signal in signals:
        signal.connect(check)
    deadline = QTimer()
    deadline.setSingleShot(True)
    deadline.timeout.connect(give_up)
    deadline.start(int(TIMEOUT_S * 1e3))
    try:
        if not done():
            loop.exec()
    finally:
        deadline.stop()
        for signal in signals:
            signal.disconnect(check)
    if expired and not done():
        raise TimeoutError(f"no {what} arrived within {TIMEOUT_S:.0f} s; status: {window.message.text()}")
    window.canvas.viewport().repaint()


def _wait_for_full_result(window, previous: object) -> None:
    """Until the document holds a new full-resolution result and no refinement runs."""
    def done() -> bool:
        result = window.document.result
        return (result is not None and result is not previous and not result.preview
                and not window.scheduler.busy)

    _wait_for(window, done, "refinement")


def _wait_for_preview(window, method: str) -> None:
    """Until the document holds a preview made with the parameters the sliders show now."""
    def done() -> bool:
        result = window.document.result
        return result is not None and result.preview and result.params == window.document.params(method)

    _wait_for(window, done, "preview")


def _move(window, method: str, name: str, changes: int) -> dict[str, list[float]]:
    """Drags of ``STEPS_PER_DRAG`` steps of one slider, ``changes`` steps in all, as a user drags: press, move
    (each step waits for its preview overlay, then the next step comes at once), release (waits for the
    full-resolution overlay). Returns milliseconds: ``drag`` (step → preview shown), ``release`` (release → full
    result shown), ``refiner`` (the full runs' own ``total_ms``); and ``preview``: each drag step's downsampling
    factor."""
    control = window.panel.forms[method].controls[name]
    spec = control.spec
    low, high = control.scale.to_position(spec.default * 0.5), control.scale.to_position(spec.default * 2.0)
    positions = np.linspace(low, high, 7).round().astype(int).tolist()
    times: dict[str, list[float]] = {"drag": [], "release": [], "refiner": [], "preview": []}
    step = 0
    while step < changes:
        control.slider.setSliderDown(True)
        for _ in range(min(STEPS_PER_DRAG, changes - step)):
            position = positions[step % len(positions)]
            if position == control.slider.value():
                position = positions[(step + 1) % len(positions)]
            start = time.perf_counter()
            control.slider.setValue(position)
            _wait_for_preview(window, method)
            times["drag"].append((time.perf_counter() - start) * 1e3)
            times["preview"].append(window.document.result.timing["preview_scale"])
            step += 1
        previous = window.document.result
        start = time.perf_counter()
        control.slider.setSliderDown(False)  # the release runs the full refinement at once
        _wait_for_full_result(window, previous)
        times["release"].append((time.perf_counter() - start) * 1e3)
        times["refiner"].append(window.document.result.timing["total_ms"])
    return times


def _sizes(factors: list[float]) -> str:
    """``"1/4"`` or ``"1/4-1/6"``: the range of preview downsampling factors."""
    low, high = int(min(factors)), int(max(factors))
    return f"1/{low}" if low == high else f"1/{low}-1/{high}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.bench_latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=50, help="slider changes per refiner and slider (50)")
    parser.add_argument("--methods", nargs="*", help="refiners to time (default: every registered one)")
    parser.add_argument("--device", default=None, help="'cpu' or 'cuda' (default: CUDA when available)")
    args = parser.parse_args(argv)
    if args.changes < 1:
        parser.error(f"--changes must be >= 1, got {args.changes}")
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QElapsedTimer, QTimer
    from PySide6.QtWidgets import QApplication

    from .document import available_methods
    from .window import MainWindow

    methods = args.methods or available_methods()
    unknown = sorted(set(methods) - set(available_methods()))
    if unknown:
        parser.error(f"unknown refiner(s) {', '.join(unknown)}; registered ones are {', '.join(available_methods())}")
    app = QApplication.instance() or QApplication(sys.argv[:1])
    gaps, clock, ticker = [0], QElapsedTimer(), QTimer()
    ticker.setInterval(10)
    ticker.timeout.connect(lambda: gaps.append(clock.restart()))
    with tempfile.TemporaryDirectory(prefix="crf-latency-") as tmp:
        window = MainWindow(device=args.device)
        window.show()
        window.open_folder(make_scene(Path(tmp)))
        _wait_for_full_result(window, None)
        print(f"image {HEIGHT}×{WIDTH} ({HEIGHT * WIDTH / 2 ** 20:.2f} MP), 3 classes, device "
              f"{window.document.result.timing['device']}, {args.changes} changes per row, load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"{'refiner':<10} {'slider':<14} {'drag median':>12} {'drag p95':>9} {'release median':>15} "
              f"{'release p95':>12} {'refiner ms':>11} {'preview sizes':>14}")
        clock.start()
        ticker.start()
        for method in methods:
            previous = window.document.result
            window.document.set_method(method)
            if method != previous.method:
                _wait_for_full_result(window, previous)
            for name in SLIDERS:
                if name not in window.panel.forms[method].controls:
                    continue
                times = _move(window, method, name, args.changes)
                print(f"{method:<10} {name:<14} {statistics.median(times['drag']):>12.0f} "
                      f"{percentile(times['drag'], 95):>9.0f} {statistics.median(times['release']):>15.0f} "
                      f"{percentile(times['release'], 95):>12.0f} {statistics.median(times['refiner']):>11.0f} "
                      f"{_sizes(times['preview']):>14}",
                      flush=True)
            window.document.reset_params(method)
        ticker.stop()
        window.close()
    app.processEvents()
    print(f"longest event-loop gap (10 ms timer): {max(gaps)} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
