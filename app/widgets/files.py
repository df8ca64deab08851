"""File choosers and the error message box.

Every chooser returns a :class:`~pathlib.Path`, or None when the user cancels. Tests replace these functions (the
native dialogs would block a headless run); the error box is opened window-modal and returns at once.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QStandardPaths
from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

from ..folder import IMAGE_SUFFIXES, PROBS_SUFFIXES

__all__ = ["ask_folder", "ask_output_folder", "ask_unary_file", "ask_model_file", "ask_preset_to_load", "ask_preset_to_save",
           "presets_folder", "show_error"]

PRESET_FILTER = "CRF Studio presets (*.json)"


def _path(selected: str) -> Path | None:
    return Path(selected) if selected else None


def ask_folder(parent: QWidget, start: str | Path = "") -> Path | None:
    """A folder of images with masks or probability maps beside them."""
    return _path(QFileDialog.getExistingDirectory(parent, "Open a folder of images", str(start)))


def ask_output_folder(parent: QWidget, start: str | Path = "") -> Path | None:
    """A folder to write exported masks into (created by the export if missing)."""
    return _path(QFileDialog.getExistingDirectory(parent, "Export into a folder", str(start)))


def ask_unary_file(parent: QWidget, start: str | Path = "") -> Path | None:
    """A mask (an index image) or a probability map (``.npy`` / ``.npz``, ``(C, H, W)``)."""
    masks = " ".join(f"*{s}" for s in IMAGE_SUFFIXES)
    probs = " ".join(f"*{s}" for s in PROBS_SUFFIXES)
    selected, _ = QFileDialog.getOpenFileName(parent, "Choose a mask or a probability map", str(start),
                                              f"Masks and probability maps ({masks} {probs});;Masks ({masks});;"
                                              f"Probability maps ({probs})")
    return _path(selected)


def presets_folder() -> Path:
    """The user's presets folder (``presets`` in the app's data location, e.g. ``~/.local/share/CRF Studio/``),
    created if missing; the working directory when the platform gives no writable location."""
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    if not base:
        return Path.cwd()
    folder = Path(base) / "presets"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return Path.cwd()
    return folder


def ask_model_file(parent: QWidget, start: str | Path = "") -> Path | None:
    """A segmentation network: torchvision weights (.pth), TorchScript or a torch.export program (.pt2)."""
    selected, _ = QFileDialog.getOpenFileName(parent, "Choose a segmentation network", str(start),
                                              "Segmentation networks (*.pth *.pt *.pt2 *.ts);;All files (*)")
    return _path(selected)


def ask_preset_to_load(parent: QWidget, start: str | Path = "") -> Path | None:
    selected, _ = QFileDialog.getOpenFileName(parent, "Load a preset", str(start), PRESET_FILTER)
    return _path(selected)


def ask_preset_to_save(parent: QWidget, suggested: str | Path = "") -> Path | None:
    selected, _ = QFileDialog.getSaveFileName(parent, "Save the preset", str(suggested), PRESET_FILTER)
    return _path(selected)


def show_error(parent: QWidget, title: str, message: str) -> QMessageBox:
    """Show ``message`` in a window-modal box without blocking; returns the box (closed by the user)."""
    box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, parent)
    box.open()
    return box
