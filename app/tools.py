"""The editing tool state, without widgets: which tool is active, the class the brush paints, the brush size.

It outlives documents (the next image keeps the tool). The toolbar, the class legend and the canvas write to it
through its validated setters and follow it through its signals (STYLE.md habit 11).
"""

from __future__ import annotations

import math
from typing import Literal

from PySide6.QtCore import QObject, Signal

__all__ = ["Tool", "TOOLS", "SIZE_RANGE", "DEFAULT_SIZE", "ToolState"]

Tool = Literal["navigate", "brush", "eraser"]
TOOLS: tuple[Tool, ...] = ("navigate", "brush", "eraser")
SIZE_RANGE = (1, 256)  # brush diameter in image pixels
DEFAULT_SIZE = 12
SIZE_STEP = 1.25  # [ and ] scale the brush by this factor (at least one pixel)


class ToolState(QObject):
    """Active tool, brush label and brush size.

    Signals:
        tool_changed(str): one of :data:`TOOLS`.
        label_changed(int): the class index the brush paints.
        size_changed(int): the brush diameter in image pixels, within :data:`SIZE_RANGE`.
    """

    tool_changed = Signal(str)
    label_changed = Signal(int)
    size_changed = Signal(int)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._tool: Tool = "navigate"
        self._label = 1
        self._size = DEFAULT_SIZE

    @property
    def tool(self) -> Tool:
        return self._tool

    @property
    def label(self) -> int:
        """The class the brush paints (the eraser ignores it)."""
        return self._label

    @property
    def size(self) -> int:
        """Brush and eraser diameter in image pixels."""
        return self._size

    @property
    def painting(self) -> bool:
        """True when a left drag on the canvas paints or erases instead of panning."""
        return self._tool != "navigate"

    def set_tool(self, tool: str) -> None:
        if tool not in TOOLS:
            raise ValueError(f"{tool!r} is not a valid tool. Valid tools are {', '.join(map(repr, TOOLS))}.")
        if tool != self._tool:
            self._tool = tool  # type: ignore[assignment]
            self.tool_changed.emit(tool)

    def set_label(self, label: int) -> None:
        """Choose the brush's class index (≥ 0; the document checks it against its class count when painting)."""
        if not isinstance(label, int) or label < 0:
            raise ValueError(f"label must be a class index >= 0, got {label!r}.")
        if label != self._label:
            self._label = label
            self.label_changed.emit(label)

    def set_size(self, size: int) -> None:
        low, high = SIZE_RANGE
        if not isinstance(size, int) or not low <= size <= high:
            raise ValueError(f"brush size must be an integer in {low}..{high} pixels, got {size!r}.")
        if size != self._size:
            self._size = size
            self.size_changed.emit(size)

    def grow(self) -> None:
        """One step bigger (``]``): ×1.25, at least +1 pixel, clamped to the range."""
        self.set_size(min(SIZE_RANGE[1], max(self._size + 1, math.floor(self._size * SIZE_STEP))))

    def shrink(self) -> None:
        """One step smaller (``[``): ÷1.25, at least −1 pixel, clamped to the range."""
        self.set_size(max(SIZE_RANGE[0], min(self._size - 1, math.ceil(self._size / SIZE_STEP))))
