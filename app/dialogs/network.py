"""The Network… dialog: choose a segmentation network as the unary source, see what it is and how it is fed, name
its classes, and choose to run it on the whole folder in the background (:mod:`app.network`)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFormLayout, QHBoxLayout, QLabel,
                               QLineEdit, QToolButton, QVBoxLayout, QWidget)

from ..network import PREPROCESSING, Network, open_network

__all__ = ["NetworkDialog"]


class NetworkDialog(QDialog):
    """Loads a model file (:meth:`load`), shows it, and collects the class names and the folder choice.

    Args:
        start: where the file chooser opens. folder_classes: ``classes.json``'s names, offered when their count
        fits. device: "cpu", "cuda" or None (CUDA when present).
    """

    def __init__(self, parent: QWidget | None = None, *, start: str | Path = "",
                 folder_classes: tuple[str, ...] = (), device: str | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Network unary source")
        self.start, self.folder_classes, self.device = Path(start), tuple(folder_classes), device
        self.network: Network | None = None
        self.path = QLineEdit()
        self.path.setPlaceholderText("a torchvision weight file (.pth), TorchScript (.pt) or torch.export (.pt2)")
        self.browse_button = QToolButton()
        self.browse_button.setText("…")
        self.info = QLabel("No network loaded.")
        self.info.setWordWrap(True)
        self.source = QComboBox()
        self.typed = QLineEdit()
        self.typed.setPlaceholderText("background, cat, dog (comma-separated, index order)")
        preprocessing = QLabel(PREPROCESSING + ".")
        preprocessing.setWordWrap(True)
        self.whole_folder = QCheckBox("Also run it on every image of the folder, in the background (cached in the "
                                      "folder's project)")
        self.whole_folder.setChecked(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        row = QHBoxLayout()
        row.addWidget(self.path, 1)
        row.addWidget(self.browse_button)
        form = QFormLayout()
        form.addRow("Model file", row)
        form.addRow("Network", self.info)
        form.addRow("Class names", self.source)
        form.addRow("", self.typed)
        form.addRow("Preprocessing", preprocessing)
        form.addRow(self.whole_folder)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.buttons)
        self.browse_button.clicked.connect(self.browse)
        self.path.editingFinished.connect(lambda: self.load(self.path.text()) if self.path.text() else None)
        self.source.currentIndexChanged.connect(self._check)
        self.typed.textChanged.connect(self._check)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self._fill_sources()
        self.resize(620, 0)

    def browse(self) -> None:
        from . import files

        path = files.ask_model_file(self, self.start)
        if path is not None:
            self.load(path)

    def load(self, path: str | Path) -> bool:
        """Load the model at ``path``; False (the reason shown) if it is no usable network."""
        self.path.setText(str(path))
        try:
            self.network = open_network(path, device=self.device)
        except (OSError, ValueError, RuntimeError) as exc:
            self.network = None
            self.info.setText(f"Cannot use {Path(path).name}: {exc}")
            self.info.setStyleSheet("color: #d93025;")
        else:
            self.info.setText(self.network.describe())
            self.info.setStyleSheet("")
        self._fill_sources()
        return self.network is not None

    def _fill_sources(self) -> None:
        net = self.network
        self.source.blockSignals(True)
        self.source.clear()
        if net is not None and net.file_classes:
            self.source.addItem(f"From the file: {', '.join(net.file_classes[:6])}"
                                f"{'…' if len(net.file_classes) > 6 else ''}", "file")
        fits = net is None or net.num_classes is None or net.num_classes == len(self.folder_classes)
        if self.folder_classes and fits:
            self.source.addItem(f"From classes.json: {', '.join(self.folder_classes[:6])}"
                                f"{'…' if len(self.folder_classes) > 6 else ''}", "folder")
        self.source.addItem("Typed below", "typed")
        if net is not None and net.num_classes and not net.file_classes:
            self.source.addItem(f"class 0 … class {net.num_classes - 1}", "numbered")
        self.source.blockSignals(False)
        self._check()

    def classes(self) -> tuple[str, ...]:
        """The chosen class names (empty: numbered "class i")."""
        how = self.source.currentData()
        if how == "file" and self.network is not None:
            return tuple(self.network.file_classes or ())
        if how == "folder":
            return self.folder_classes
        if how == "typed":
            return tuple(n.strip() for n in self.typed.text().split(",") if n.strip())
        return ()

    def problem(self) -> str:
        """Why OK is disabled, "" when it is not."""
        if self.network is None:
            return "Choose a model file."
        names, count = self.classes(), self.network.num_classes
        if self.source.currentData() == "typed" and not names:
            return "Type the class names, comma-separated, in index order."
        if count is not None and names and len(names) != count:
            return f"The network gives {count} classes but {len(names)} names are given."
        return ""

    def _check(self) -> None:
        self.typed.setEnabled(self.source.currentData() == "typed")
        problem = self.problem()
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setEnabled(not problem)
        ok.setToolTip(problem)
