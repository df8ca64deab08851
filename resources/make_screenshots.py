"""Retake the README screenshots: ``xvfb-run -s "-screen 0 1400x900x24" python resources/make_screenshots.py``.

* ``screenshot.png``: the window at 1280×800 with a network unary on the bundled astronaut sample. No trained
  segmentation weights ship with the project, so the network is a stand-in: a tiny TorchScript per-pixel model
  (colour and position → 32 hidden units → 3 classes, 1×1 convolutions) fitted for a few seconds, seeded, to the
  sample's own coarse mask; it is not a trained segmentation model and the README caption says so.
* ``shortcuts.png``: the keyboard-shortcuts sheet (Help ▸ Keyboard shortcuts, F1).

The folder is a temporary copy of the sample, so no project catalog is written into ``resources/samples``.
No ``from __future__ import annotations`` here: TorchScript reads the model's ``classes: List[str]`` annotation.
"""

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import List

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SAMPLE = "astronaut"
SIZE = (1280, 800)
STEPS = 300


class PixelNet(nn.Module):
    """``(1, 3, H, W)`` ImageNet-normalised image → ``(1, C, H, W)`` logits from each pixel's colour and position."""

    classes: List[str]

    def __init__(self, classes: list[str]) -> None:
        super().__init__()
        self.classes = classes
        self.body = nn.Sequential(nn.Conv2d(5, 32, 1), nn.ReLU(), nn.Conv2d(32, 32, 1), nn.ReLU(),
                                  nn.Conv2d(32, len(classes), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        ys = torch.linspace(-1.0, 1.0, h, device=x.device).view(1, 1, h, 1).expand(n, 1, h, w)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device).view(1, 1, 1, w).expand(n, 1, h, w)
        return self.body(torch.cat([x, ys, xs], 1))


def fit_stand_in(image: np.ndarray, mask: np.ndarray, classes: list[str], path: Path) -> None:
    """Fit :class:`PixelNet` to ``mask`` (void 255 ignored) and save it as TorchScript at ``path``."""
    from crfcore.backbones import normalize

    torch.manual_seed(0)
    net = PixelNet(classes)
    x = normalize(image)  # as the app feeds the network (ImageNet normalisation); fitted at a quarter size
    x = nn.functional.interpolate(x, scale_factor=0.25, mode="area")
    target = torch.from_numpy(mask[2::4, 2::4].astype(np.int64)).unsqueeze(0)[:, : x.shape[2], : x.shape[3]]
    optimiser = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(STEPS):
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(net(x), target, ignore_index=255)
        loss.backward()
        optimiser.step()
    torch.jit.save(torch.jit.script(net.eval()), str(path))


def wait(app, until, timeout_s: float = 120.0) -> None:
    start = time.monotonic()
    while not until():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError("the window did not get there in time")
        app.processEvents()
        time.sleep(0.02)


def main() -> int:
    from PySide6.QtWidgets import QApplication

    from app.main import save_screenshot
    from app.window import MainWindow
    from crfcore.io import load_image, load_mask

    samples = ROOT / "resources" / "samples"
    classes = json.loads((samples / "classes.json").read_text())[SAMPLE]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "samples"
        folder.mkdir()
        for name in (f"{SAMPLE}.png", f"{SAMPLE}_mask.png"):
            shutil.copy(samples / name, folder / name)
        (folder / "classes.json").write_text(json.dumps({"names": classes}))
        model = Path(tmp) / "pixelnet.pt"
        fit_stand_in(load_image(folder / f"{SAMPLE}.png"), load_mask(folder / f"{SAMPLE}_mask.png"), classes, model)

        app = QApplication.instance() or QApplication(sys.argv[:1])
        app.setApplicationName("CRF Studio")
        window = MainWindow(device="cpu")
        window.resize(*SIZE)
        window.show()
        assert window.open_folder(folder)
        assert window.use_network_file(model, whole_folder=False)
        scheduler = window.scheduler
        wait(app, lambda: window.document is not None and window.document.unary_kind == "probs"
             and window.document.result_is_current and not scheduler.busy and not scheduler.pending)
        app.processEvents()
        save_screenshot(window, HERE / "screenshot.png")
        window.show_shortcuts()
        dialog = window.shortcuts_dialog
        wait(app, dialog.isVisible)
        app.processEvents()
        save_screenshot(dialog, HERE / "shortcuts.png")
        dialog.close()
        window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
