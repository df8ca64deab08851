"""Help menu contents: the shortcuts sheet (every action of the window with its keys) and About (versions, device)."""

from __future__ import annotations

import platform
from typing import Mapping

from PySide6.QtCore import qVersion
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QHeaderView, QMessageBox, QTableWidget, QTableWidgetItem,
                               QVBoxLayout, QWidget)

__all__ = ["ShortcutsDialog", "about_text", "show_about"]


def _rows(actions: Mapping[str, QAction]) -> list[tuple[str, str, str]]:
    """``(action, keys, what it does)`` for every action with a shortcut, in the order given."""
    rows = []
    for action in actions.values():
        keys = ", ".join(k.toString() for k in action.shortcuts())
        if keys:
            what = action.toolTip()
            for key in (keys, *(k.toString() for k in action.shortcuts())):  # the keys have their own column
                what = what.replace(f" ({key})", "")
            what = "" if what == action.text() else what.removesuffix(".")  # rows read as a list: no full stops
            rows.append((action.text().replace("&", "").rstrip("…"), keys, what))
    return rows


class ShortcutsDialog(QDialog):
    """A table of the window's actions and their keys (Help ▸ Keyboard shortcuts, F1)."""

    def __init__(self, actions: Mapping[str, QAction], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        rows = _rows(actions)
        self.table = QTableWidget(len(rows), 3)
        self.table.setHorizontalHeaderLabels(["Action", "Keys", "What it does"])
        for row, values in enumerate(rows):
            for column, value in enumerate(values):
                self.table.setItem(row, column, QTableWidgetItem(value))
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.setWordWrap(True)
        # wrapped rows take their height at the columns' final widths, not at those before the dialog is laid out
        header.sectionResized.connect(lambda *_: self.table.resizeRowsToContents())
        self.table.resizeRowsToContents()
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(700, 560)

    def keys_of(self, action_text: str) -> str:
        """The keys shown for the action titled ``action_text`` ("" if it is not listed)."""
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).text() == action_text:
                return self.table.item(row, 1).text()
        return ""


def _version(distribution: str) -> str:
    from importlib import metadata  # 0.05 s: not on the first screen

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def about_text(device: str) -> str:
    """Versions of the app and what it runs on, one per line (``device``: the refiners' device)."""
    import torch

    cuda = torch.version.cuda or "none (CPU build)"
    lines = [f"CRF Studio {_version('crf-studio')}", "Refine rough segmentation masks with conditional random fields.",
             "", f"device: {device}", f"PyTorch {torch.__version__} (CUDA {cuda})",
             f"PySide6 {_version('PySide6-Essentials')} (Qt {qVersion()})", f"pyqtgraph {_version('pyqtgraph')}",
             f"NumPy {_version('numpy')}", f"Python {platform.python_version()} on {platform.platform(terse=True)}"]
    return "\n".join(lines)


def show_about(parent: QWidget, device: str) -> QMessageBox:
    """Help ▸ About, non-blocking; returns the box."""
    box = QMessageBox(QMessageBox.Icon.Information, "About CRF Studio", about_text(device),
                      QMessageBox.StandardButton.Close, parent)
    box.open()
    return box
