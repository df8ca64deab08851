"""The Network… unary source end to end on a tiny TorchScript model: the shown image at once, the folder in the
background with progress, the probabilities cached in the project and reused on reopening, remembered per folder.

No ``from __future__ import annotations`` here: TorchScript reads the model's ``classes: List[str]`` annotation.
"""

from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
from PySide6.QtCore import QSettings
from torch import nn

from app.main import build_parser
from app.network import cache_file, open_network, predict_image
from app.window import MainWindow
from crfcore import backbones
from crfcore.io import save_image
from tests.app.conftest import make_pair

from tests.app.conftest import TUNE_TIMEOUT as TIMEOUT  # the folder run of a network takes longer


class _DiscNet(nn.Module):
    """Class 1 ("disc") where red exceeds blue: the orange discs of tests/app/conftest.py on their blue ground."""

    classes: List[str]

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[1, 0] = 2.0
            self.conv.weight[1, 2] = -2.0
            self.conv.bias.zero_()
        self.classes = ["background", "disc"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    path = tmp_path / "disc.pt"
    torch.jit.save(torch.jit.script(_DiscNet()), str(path))
    return path


def _window(qtbot, folder: Path, settings: QSettings) -> MainWindow:
    win = MainWindow(device="cpu")
    qtbot.addWidget(win)
    win.network_jobs.settings = settings
    win.show()
    with qtbot.waitSignal(win.scheduler.finished, timeout=TIMEOUT):
        assert win.open_folder(folder)
    return win


def test_a_network_runs_on_the_image_then_the_folder_and_its_cache_serves_the_reopened_folder_19(
        qtbot, tmp_path, folder_factory, tiny_model):
    folder = folder_factory(tmp_path / "discs", count=3)
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = _window(qtbot, folder, settings)
    assert win.document.unary_kind == "mask"
    progress = []
    win.network_jobs.progress.connect(lambda done, total: progress.append((done, total)))
    with qtbot.waitSignal(win.network_jobs.busy_changed, timeout=TIMEOUT,
                          check_params_cb=lambda busy: not busy):
        assert win.use_network_file(tiny_model)
        assert win.network_progress.isVisible() and win.network_cancel.isVisible()
    assert progress[0] == (0, 3) and progress[-1] == (3, 3)
    key = win.network_jobs.network.key
    assert all(cache_file(folder, key, f"img{k}").is_file() for k in range(3))
    qtbot.waitUntil(lambda: win.document.unary_kind == "probs", timeout=TIMEOUT)
    doc = win.document
    assert doc.entry.stem == "img0" and doc.unary_path == cache_file(folder, key, "img0")
    assert doc.class_names == ("background", "disc")
    assert win.preset_kind == "network_output"
    qtbot.waitUntil(lambda: doc.result_is_current, timeout=TIMEOUT)
    _, _, truth = make_pair(0)
    assert (doc.result.labels == truth).mean() > 0.95  # the network sees the disc; the CRF keeps it
    assert not win.network_progress.isVisible()
    win.close()

    reopened = _window(qtbot, folder, settings)  # remembered for the folder; the cache serves it, nothing runs
    ran = []
    reopened.network_jobs.progress.connect(lambda done, total: ran.append(done))
    assert reopened.network_jobs.network is not None and reopened.network_jobs.network.path == tiny_model
    assert reopened.document.unary_kind == "probs" and not reopened.network_jobs.busy
    with qtbot.waitSignal(reopened.scheduler.finished, timeout=TIMEOUT):
        reopened.next_image()
    assert reopened.document.unary_path == cache_file(folder, key, "img1") and not ran
    reopened.close()


def test_the_network_dialog_shows_the_model_and_checks_the_class_names_19(qtbot, window, tiny_model, tmp_path):
    window.network_jobs.settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    window.ask_network()
    dialog = window.network_dialog
    assert not dialog.buttons.button(dialog.buttons.StandardButton.Ok).isEnabled()
    assert dialog.load(tiny_model)
    assert "TorchScript, 2 classes, on cpu" in dialog.info.text()
    assert dialog.source.currentData() == "file" and dialog.classes() == ("background", "disc")
    dialog.source.setCurrentIndex(dialog.source.findData("typed"))
    dialog.typed.setText("a, b, c")
    assert "2 classes but 3 names" in dialog.problem()
    dialog.typed.setText("sea, disc")
    assert dialog.problem() == "" and dialog.classes() == ("sea", "disc")
    assert not dialog.load(tmp_path / "nothing.pt") and "does not exist" in dialog.info.text()
    dialog.reject()


def test_a_file_that_is_no_network_is_refused_with_the_reason_19(tmp_path):
    bad = tmp_path / "notes.pth"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError):
        open_network(bad, device="cpu")


def test_the_command_line_takes_a_model_19():
    args = build_parser().parse_args(["folder", "--model", "net.pt"])
    assert args.model == Path("net.pt")


def test_a_torchvision_weight_file_and_a_pt2_program_load_as_networks_19(tmp_path):
    weights = tmp_path / "lraspp.pth"
    torch.save(backbones.get("lraspp_mobilenet_v3_large", num_classes=21).state_dict(), weights)
    network = open_network(weights, device="cpu")
    assert (network.kind, network.architecture, network.num_classes) == ("weights", "lraspp_mobilenet_v3_large", 21)
    assert network.file_classes[:2] == ("background", "aeroplane")  # torchvision's 21 classes are VOC's
    exported = tmp_path / "disc.pt2"
    torch.export.save(torch.export.export(_DiscNet().eval(), (torch.zeros(1, 3, 32, 32),)), str(exported))
    program = open_network(exported, device="cpu")
    assert program.kind == "exported" and program.num_classes is None
    image = tmp_path / "img.png"
    save_image(image, np.full((32, 32, 3), 200, np.uint8))
    out = predict_image(program, image, tmp_path / "cache" / "img.npz")
    assert program.num_classes == 2 and np.load(out)["logits"].shape == (2, 32, 32)
