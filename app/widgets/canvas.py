"""The canvas: the image, the label overlay (opacity, boundary-only, before/after), zoom and pan (pyqtgraph).

The overlay is an index image drawn through a 256-entry RGBA lookup table: entries 0..C-1 are the class colours of
:func:`~app.palette.class_colors`, everything else (void 255, the hidden background, non-boundary pixels) is
transparent. Boundary-only mode draws 2 px outlines ringed by a dark 1 px halo (entry :data:`HALO`), nearly opaque.
Mouse: wheel zooms, drag pans; :meth:`Canvas.fit` shows the whole image. With the brush or the eraser
(:class:`~app.tools.ToolState`) a left drag paints into the document instead, one drag one undo item; the middle
button still pans. A circle shows the brush under the pointer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import pyqtgraph as pg
from pyqtgraph.GraphicsScene.mouseEvents import HoverEvent, MouseClickEvent, MouseDragEvent
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QPen
from PySide6.QtWidgets import QGraphicsEllipseItem, QWidget

from crfcore.labels import VOID

from ..palette import class_colors
from ..scribbles import UNPAINTED, stroke_pixels
from ..tools import ToolState

if TYPE_CHECKING:
    from ..document import ImageDocument

__all__ = ["BOUNDARY_OPACITY", "HALO", "class_colors", "overlay_lut", "label_boundaries", "Canvas"]

DEFAULT_OPACITY = 0.5
BOUNDARY_OPACITY = 0.9  # outlines are thin: boundary-only mode draws them at least this opaque
HALO = 254  # overlay index of the dark ring around outlines (boundary-only mode; classes must stay below it)
HALO_RGB = (20, 20, 20)


def overlay_lut(count: int, *, show_background: bool, names: Sequence[str] | None = None) -> np.ndarray:
    """``(256, 4)`` uint8 RGBA table for label indices: classes 0..count-1 opaque in :func:`class_colors` (of
    ``names``), :data:`HALO` dark when the classes leave it free, the rest transparent.

    ``show_background=False`` makes class 0 transparent too (the usual "background" class).
    """
    if not 0 <= count <= VOID:
        raise ValueError(f"count must be in 0..{VOID} classes, got {count}.")
    lut = np.zeros((256, 4), dtype=np.uint8)
    lut[:count, :3] = class_colors(count, names)
    lut[:count, 3] = 255
    if count <= HALO:
        lut[HALO] = (*HALO_RGB, 255)
    if not show_background and count:
        lut[0, 3] = 0
    return lut


def _grow(mask: np.ndarray) -> np.ndarray:
    """``mask`` ``(H, W)`` bool grown by one pixel in the four directions."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return grown


def _neighbours(index: np.ndarray) -> list[np.ndarray]:
    """The labels above, below, left and right of each pixel (:data:`VOID` past the image's border)."""
    up, down, left, right = (np.full_like(index, VOID) for _ in range(4))
    up[1:], down[:-1], left[:, 1:], right[:, :-1] = index[:-1], index[1:], index[:, :-1], index[:, 1:]
    return [up, down, left, right]


def _outlines(index: np.ndarray, edge: np.ndarray, count: int, *, hidden: int | None) -> np.ndarray:
    """Boundary-only overlay: 2 px outlines (both sides of every label edge) in class colours, ringed by a dark 1 px
    :data:`HALO` when the lookup table has it; edge pixels of the ``hidden`` class take their visible neighbour's
    colour, so an outline against the hidden background is 2 px wide too. Everything else is :data:`VOID`."""
    out = np.full_like(index, VOID)
    out[edge] = index[edge]
    if hidden is not None:
        for neighbour in _neighbours(index):
            take = edge & (out == hidden) & (neighbour != hidden) & (neighbour < count)
            out[take] = neighbour[take]
    if count <= HALO:
        out[_grow(edge) & ~edge] = HALO
    return out


def label_boundaries(labels: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: pixels whose right or lower neighbour has another label, and those neighbours."""
    edge = np.zeros(labels.shape, dtype=bool)
    vertical = labels[1:] != labels[:-1]
    horizontal = labels[:, 1:] != labels[:, :-1]
    edge[1:] |= vertical
    edge[:-1] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge


class _PaintSurface(pg.ImageItem):
    """The image item; while a painting tool is active it takes left clicks and drags and hands them to the canvas."""

    def __init__(self, canvas: "Canvas") -> None:
        super().__init__(axisOrder="row-major")
        self._canvas = canvas

    def hoverEvent(self, ev: HoverEvent) -> None:  # noqa: N802 (pyqtgraph override)
        painting = self._canvas.tools.painting
        if not ev.isExit() and painting:
            ev.acceptDrags(Qt.MouseButton.LeftButton)
            ev.acceptClicks(Qt.MouseButton.LeftButton)
        self._canvas.show_cursor(None if ev.isExit() or not painting else ev.pos())

    def mouseDragEvent(self, ev: MouseDragEvent) -> None:  # noqa: N802 (pyqtgraph override)
        if ev.button() != Qt.MouseButton.LeftButton or not self._canvas.tools.painting:
            ev.ignore()
            return
        ev.accept()
        if ev.isStart() and not self._canvas.begin_stroke(ev.buttonDownPos()):
            return
        self._canvas.continue_stroke(ev.pos())
        self._canvas.show_cursor(ev.pos())
        if ev.isFinish():
            self._canvas.end_stroke()

    def mouseClickEvent(self, ev: MouseClickEvent) -> None:  # noqa: N802 (pyqtgraph override)
        if ev.button() == Qt.MouseButton.LeftButton and self._canvas.tools.painting:
            ev.accept()
            if self._canvas.begin_stroke(ev.pos()):
                self._canvas.end_stroke()


class Canvas(pg.GraphicsView):
    """Image + overlay view of one :class:`~app.document.ImageDocument`, and its brush.

    Args:
        tools: the tool state to follow (a fresh one if None).

    Signals:
        overlay_updated: the overlay image was replaced (new labels, or a view option changed).
        error(str): a stroke was refused (no unary yet, a brush class the image does not have).
    """

    overlay_updated = Signal()
    error = Signal(str)

    def __init__(self, parent: QWidget | None = None, *, tools: ToolState | None = None) -> None:
        super().__init__(parent, background="#202124")
        self.tools = tools or ToolState(self)
        self.view = pg.ViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.setCentralItem(self.view)
        self.image_item = _PaintSurface(self)
        self.overlay_item = pg.ImageItem(axisOrder="row-major")
        self.overlay_item.setZValue(1)
        self.view.addItem(self.image_item)
        self.view.addItem(self.overlay_item)
        self.cursor_item = QGraphicsEllipseItem()
        pen = QPen(Qt.GlobalColor.white)
        pen.setCosmetic(True)
        self.cursor_item.setPen(pen)
        self.cursor_item.setZValue(2)
        self.cursor_item.setVisible(False)
        self.view.addItem(self.cursor_item, ignoreBounds=True)
        self.document: ImageDocument | None = None
        self.overlay_visible = True
        self.opacity = DEFAULT_OPACITY
        self.boundary_only = False
        self.show_before = False
        self.show_background = False
        self._last: tuple[float, float] | None = None
        self._image_only = False  # an image shown without a document (:meth:`show_image`)
        self.tools.tool_changed.connect(self._on_tool)
        self.tools.size_changed.connect(lambda _size: self.show_cursor(None))

    def set_document(self, document: ImageDocument | None) -> None:
        """Show ``document``'s image and labels, and follow its changes."""
        if self.document is not None:
            self.end_stroke()
            for signal in (self.document.unary_changed, self.document.result_changed,
                           self.document.scribbles_changed):
                signal.disconnect(self.refresh_overlay)
        self.document = document
        self._image_only = False
        if document is None:
            self.image_item.clear()
            self.overlay_item.clear()
            return
        for signal in (document.unary_changed, document.result_changed, document.scribbles_changed):
            signal.connect(self.refresh_overlay)
        self.image_item.setImage(document.image, levels=(0, 255), autoLevels=False)
        self.refresh_overlay()
        self.fit()

    def show_image(self, image: np.ndarray) -> None:
        """Show ``image`` ``(H, W, 3)`` uint8 alone, without a document (nothing to paint on): the window's first
        screen while the compute engine loads. :meth:`set_document` replaces it."""
        self.set_document(None)
        self.image_item.setImage(image, levels=(0, 255), autoLevels=False)
        self._image_only = True
        self.fit()

    # --- brush ---------------------------------------------------------------------------------------------------
    def begin_stroke(self, pos: QPointF) -> bool:
        """Start a brush or eraser stroke at ``pos`` (image pixel coordinates x, y); False (and ``error``) if the
        document cannot take one."""
        doc = self.document
        if self._image_only:
            self.error.emit("Nothing to paint on yet: the image's mask and classes are still loading.")
        if doc is None or self._last is not None:
            return False
        brush = self.tools.tool == "brush"
        if not doc.has_unary:
            self.error.emit("Load a mask or probability map before painting: the classes come from it.")
            return False
        if brush and self.tools.label >= doc.num_classes:
            self.error.emit(f"The brush paints class {self.tools.label} but {doc.entry.stem} has "
                            f"{doc.num_classes} classes; pick one of them in the toolbar or the legend.")
            return False
        doc.begin_edit(self.tools.tool)
        self._last = (pos.x(), pos.y())
        self.continue_stroke(pos)
        return True

    def continue_stroke(self, pos: QPointF) -> None:
        """Paint from the previous position to ``pos`` with the brush's size and label (the eraser's: unpainted)."""
        if self._last is None or self.document is None:
            return
        end = (pos.x(), pos.y())
        rows, cols = stroke_pixels(self._last, end, self.tools.size, self.document.image.shape[:2])
        self._last = end
        label = self.tools.label if self.tools.tool == "brush" else UNPAINTED
        self.document.paint(rows, cols, label)

    def end_stroke(self) -> None:
        """Finish the stroke: the document makes it one undo item (and the window refines)."""
        if self._last is None:
            return
        self._last = None
        if self.document is not None and self.document.editing:
            self.document.end_edit()

    def show_cursor(self, pos: QPointF | None) -> None:
        """Draw the brush outline centred at ``pos`` (image pixels); None hides it."""
        if pos is None or not self.tools.painting:
            self.cursor_item.setVisible(False)
            return
        radius = self.tools.size / 2
        self.cursor_item.setRect(QRectF(pos.x() - radius, pos.y() - radius, 2 * radius, 2 * radius))
        self.cursor_item.setVisible(True)

    def _on_tool(self, tool: str) -> None:
        self.end_stroke()
        self.show_cursor(None)
        self.viewport().setCursor(Qt.CursorShape.CrossCursor if self.tools.painting else Qt.CursorShape.ArrowCursor)

    def fit(self) -> None:
        """Zoom to show the whole image."""
        self.view.autoRange(padding=0.01)

    def shown_labels(self) -> np.ndarray | None:
        """``(H, W)`` labels the overlay draws, before (the unary's) or after (the refinement's), painted pixels
        clamped to their scribble in both."""
        if self.document is None:
            return None
        return self.document.with_scribbles(self.document.before_labels) if self.show_before else self.document.labels

    def refresh_overlay(self) -> None:
        """Redraw the overlay from the document and the view options."""
        labels = self.shown_labels()
        if labels is None:
            self.overlay_item.clear()
        else:
            index = np.minimum(labels, VOID).astype(np.uint8)
            count = self.document.num_classes
            if self.boundary_only:
                index = _outlines(index, label_boundaries(labels), count, hidden=None if self.show_background else 0)
            lut = overlay_lut(count, show_background=self.show_background, names=self.document.class_names)
            self.overlay_item.setImage(index, levels=(0, 255), lut=lut, autoLevels=False)
        self.overlay_item.setOpacity(max(self.opacity, BOUNDARY_OPACITY) if self.boundary_only else self.opacity)
        self.overlay_item.setVisible(self.overlay_visible)
        self.overlay_updated.emit()

    def set_overlay_visible(self, visible: bool) -> None:
        self.overlay_visible = bool(visible)
        self.overlay_item.setVisible(self.overlay_visible)

    def set_opacity(self, opacity: float) -> None:
        """Overlay opacity in 0..1."""
        if not 0.0 <= opacity <= 1.0:
            raise ValueError(f"opacity must be in 0..1, got {opacity}.")
        self.opacity = float(opacity)
        self.overlay_item.setOpacity(max(self.opacity, BOUNDARY_OPACITY) if self.boundary_only else self.opacity)

    def set_boundary_only(self, on: bool) -> None:
        self.boundary_only = bool(on)
        self.refresh_overlay()

    def set_show_before(self, on: bool) -> None:
        """True: the unary's labels (before refinement); False: the refined ones."""
        self.show_before = bool(on)
        self.refresh_overlay()

    def set_show_background(self, on: bool) -> None:
        """Draw class 0 too (hidden by default: it is usually the background)."""
        self.show_background = bool(on)
        self.refresh_overlay()
