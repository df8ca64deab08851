"""The class legend: a colour swatch, the class name and its share of the shown labels, one row per class.

Clicking a row picks that class for the brush (``class_clicked``); the brush's class is shown in bold.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QMouseEvent, QPixmap
from PySide6.QtWidgets import QGridLayout, QLabel, QWidget

from ..palette import class_colors

__all__ = ["Legend"]

SWATCH_PX = 14


class Legend(QWidget):
    """Rows of (swatch, name, percentage); :meth:`set_labels` refreshes the percentages.

    Signals:
        class_clicked(int): the user clicked the row of this class index.
    """

    class_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(4, 4, 4, 4)
        self.grid.setColumnStretch(1, 1)
        self.names: tuple[str, ...] = ()
        self._shares: list[QLabel] = []
        self._names: list[QLabel] = []
        self._selected = -1
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setToolTip("Click a class to paint it with the brush.")

    def set_classes(self, names: tuple[str, ...] | list[str]) -> None:
        """One row per class name, coloured as the overlay draws it."""
        if tuple(names) == self.names:
            return
        while self.grid.count():
            widget = self.grid.takeAt(0).widget()
            widget.hide()  # deleteLater waits for the event loop; hidden now, the old rows never overlap the new
            widget.deleteLater()
        self.names = tuple(names)
        self._shares, self._names = [], []
        for row, (name, rgb) in enumerate(zip(self.names, class_colors(len(self.names), self.names))):
            pixmap = QPixmap(SWATCH_PX, SWATCH_PX)
            pixmap.fill(QColor(*(int(c) for c in rgb)))
            swatch = QLabel()
            swatch.setPixmap(pixmap)
            share = QLabel("")
            title = QLabel(f"{row}  {name}")
            self.grid.addWidget(swatch, row, 0)
            self.grid.addWidget(title, row, 1)
            self.grid.addWidget(share, row, 2)
            self._shares.append(share)
            self._names.append(title)
        self.set_selected(self._selected)

    def set_selected(self, index: int) -> None:
        """Show class ``index`` (the brush's) in bold; an index without a row marks none."""
        self._selected = index
        for row, title in enumerate(self._names):
            font = title.font()
            font.setBold(row == index)
            title.setFont(font)

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 (Qt override)
        child = self.childAt(event.position().toPoint())
        index = self.grid.indexOf(child) if child is not None else -1
        if index >= 0 and event.button() == Qt.MouseButton.LeftButton:
            self.class_clicked.emit(self.grid.getItemPosition(index)[0])
            return
        super().mousePressEvent(event)

    def row_of(self, index: int) -> QLabel:
        """The name label of class ``index`` (tests click it)."""
        return self._names[index]

    def set_labels(self, labels: np.ndarray | None) -> None:
        """Show each class's share of ``labels`` ``(H, W)`` (void excluded) in percent; blank for None."""
        if labels is None or not self._shares:
            for share in self._shares:
                share.setText("")
            return
        counts = np.bincount(labels.ravel(), minlength=len(self._shares))[:len(self._shares)]
        total = max(int(counts.sum()), 1)
        for share, count in zip(self._shares, counts):
            share.setText(f"{100.0 * count / total:.1f}%")

    def shares(self) -> list[str]:
        """The percentages as shown, one string per class."""
        return [share.text() for share in self._shares]
