"""Toolbar controls of the editing tools: tool actions (navigate, brush, eraser), the brush's class and size.

They write to a :class:`~app.tools.ToolState` and follow it under ``QSignalBlocker`` (STYLE.md habit 11), so a
shortcut, the legend and the toolbar always agree.
"""

from __future__ import annotations

from PySide6.QtCore import QSignalBlocker, Qt
from PySide6.QtGui import QAction, QActionGroup, QColor, QIcon, QKeySequence, QPixmap
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSpinBox, QWidget

from ..tools import SIZE_RANGE, TOOLS, ToolState
from ..palette import class_colors

__all__ = ["TOOL_SHORTCUTS", "BrushControls", "tool_actions"]

TOOL_SHORTCUTS = {"navigate": ["V"], "brush": ["D"], "eraser": ["X"], "shrink": ["["], "grow": ["]"]}
_TEXTS = {"navigate": ("Navigate", "Drag to pan, wheel to zoom"),
          "brush": ("Brush", "Paint the chosen class; painted pixels are clamped and the mask is refined after each "
                             "stroke"),
          "eraser": ("Eraser", "Remove painted strokes"),
          "shrink": ("Smaller brush", "Shrink the brush"), "grow": ("Larger brush", "Grow the brush")}


def tool_actions(tools: ToolState, parent: QWidget) -> dict[str, QAction]:
    """Checkable, mutually exclusive tool actions plus brush-size steps, with the shortcuts of
    :data:`TOOL_SHORTCUTS`; added to ``parent`` so the shortcuts work anywhere in its window."""
    group = QActionGroup(parent)
    actions: dict[str, QAction] = {}
    for name, (text, tip) in _TEXTS.items():
        action = QAction(text, parent)
        keys = [QKeySequence(k) for k in TOOL_SHORTCUTS[name]]
        action.setShortcuts(keys)
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.setToolTip(f"{tip} ({', '.join(k.toString() for k in keys)})")
        if name in TOOLS:
            action.setCheckable(True)
            action.setChecked(tools.tool == name)
            group.addAction(action)
            action.triggered.connect(lambda _checked=False, n=name: tools.set_tool(n))
        parent.addAction(action)
        actions[name] = action
    actions["shrink"].triggered.connect(tools.shrink)
    actions["grow"].triggered.connect(tools.grow)

    def show_tool(tool: str) -> None:
        with QSignalBlocker(actions[tool]):
            actions[tool].setChecked(True)

    tools.tool_changed.connect(show_tool)
    return actions


class BrushControls(QWidget):
    """The brush's class (a combo with the class colours) and size (a spin box in image pixels)."""

    def __init__(self, tools: ToolState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tools = tools
        self.label_combo = QComboBox()
        self.label_combo.setToolTip("Class the brush paints (or click it in the Classes legend).")
        self.label_combo.setMinimumContentsLength(10)
        self.size_spin = QSpinBox()
        self.size_spin.setRange(*SIZE_RANGE)
        self.size_spin.setSuffix(" px")
        self.size_spin.setValue(tools.size)
        self.size_spin.setToolTip("Brush diameter in image pixels ([ smaller, ] larger).")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel(" Class "))
        layout.addWidget(self.label_combo)
        layout.addWidget(QLabel(" Size "))
        layout.addWidget(self.size_spin)
        self.label_combo.activated.connect(self._on_label)
        self.size_spin.valueChanged.connect(tools.set_size)
        tools.label_changed.connect(self._show_label)
        tools.size_changed.connect(self._show_size)

    def set_classes(self, names: tuple[str, ...] | list[str]) -> None:
        """One entry per class, with its overlay colour; keeps the brush's class selected where it exists."""
        with QSignalBlocker(self.label_combo):
            self.label_combo.clear()
            for index, (name, rgb) in enumerate(zip(names, class_colors(len(names), names))):
                pixmap = QPixmap(12, 12)
                pixmap.fill(QColor(*(int(c) for c in rgb)))
                self.label_combo.addItem(QIcon(pixmap), f"{index} {name}", index)
        self._show_label(self.tools.label)

    def _on_label(self, index: int) -> None:
        self.tools.set_label(int(self.label_combo.itemData(index)))

    def _show_label(self, label: int) -> None:
        with QSignalBlocker(self.label_combo):
            self.label_combo.setCurrentIndex(label if label < self.label_combo.count() else -1)

    def _show_size(self, size: int) -> None:
        with QSignalBlocker(self.size_spin):
            self.size_spin.setValue(size)
