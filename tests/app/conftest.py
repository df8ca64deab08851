"""App test fixtures: headless Qt (offscreen, set before any Qt import), small generated image folders, a window."""

from __future__ import annotations

import json
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from crfcore.io import save_image, save_mask  # noqa: E402

HEIGHT, WIDTH = 64, 80
NAMES = ["background", "disc"]
TIMEOUT = 20_000  # ms: the longest any app test waits for a signal (a refinement, a save, an export)
TUNE_TIMEOUT = 3 * TIMEOUT  # ms: fine-tuning runs longer


def make_pair(seed: int, height: int = HEIGHT, width: int = WIDTH) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image (H, W, 3) uint8, coarse mask (H, W) uint8, ground truth (H, W) uint8)``: a noisy orange disc on
    blue; the mask is the truth pooled to 8×8 blocks, so its edges are blocky and a CRF has something to fix."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    cy, cx, r = height / 2 + seed, width / 2 - seed, min(height, width) / 3
    truth = ((yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2).astype(np.uint8)
    colour = np.where(truth[..., None] == 1, [230.0, 140.0, 40.0], [40.0, 90.0, 200.0])
    image = np.clip(colour + rng.normal(0, 12, colour.shape), 0, 255).astype(np.uint8)
    blocks = truth[: height // 8 * 8, : width // 8 * 8].reshape(height // 8, 8, width // 8, 8).mean((1, 3)) > 0.5
    mask = np.kron(blocks, np.ones((8, 8))).astype(np.uint8)
    return image, mask, truth


def write_folder(root: Path, count: int = 3, *, probs_for: tuple[int, ...] = (), truth_for: tuple[int, ...] = (),
                 height: int = HEIGHT, width: int = WIDTH) -> Path:
    """``img<k>.png`` + ``img<k>_mask.png`` (+ ``img<k>_probs.npy`` for k in ``probs_for``, + the ground truth
    ``img<k>_gt.png`` for k in ``truth_for``) + classes.json."""
    root.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        image, mask, truth = make_pair(k, height, width)
        save_image(root / f"img{k}.png", image)
        save_mask(root / f"img{k}_mask.png", mask)
        if k in truth_for:
            save_mask(root / f"img{k}_gt.png", truth)
        if k in probs_for:
            fg = np.clip(0.2 + 0.6 * truth.astype(np.float32), 0, 1)
            np.save(root / f"img{k}_probs.npy", np.stack([1 - fg, fg]).astype(np.float32))
    (root / "classes.json").write_text(json.dumps({"names": NAMES}))
    return root


@pytest.fixture
def folder_factory():
    """:func:`write_folder`, for tests that need folders of other sizes."""
    return write_folder


@pytest.fixture
def sample_folder(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "samples", probs_for=(1,))


@pytest.fixture
def window(qtbot, sample_folder):
    """The real main window with ``sample_folder`` open and its first refinement done."""
    from app.window import MainWindow

    win = MainWindow(device="cpu")
    qtbot.addWidget(win)
    win.show()
    with qtbot.waitSignal(win.scheduler.finished, timeout=TIMEOUT):
        assert win.open_folder(sample_folder)
    yield win
    win.scheduler.shutdown()
