"""The canvas: the image, the label overlay (opacity, boundary-only, before/after), zoom and pan (pyqtgraph).

The overlay is an index image drawn through a 256-entry RGBA lookup table: entries 0..C-1 are the class colours of
:func:`class_colors`, everything else (void 255, the hidden background, non-boundary pixels) is transparent.
Mouse: wheel zooms, drag pans; :meth:`Canvas.fit` shows the whole image.
"""

from __future__ import annotations

import colorsys

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QWidget

from ..document import VOID, ImageDocument

__all__ = ["class_colors", "overlay_lut", "label_boundaries", "Canvas"]

DEFAULT_OPACITY = 0.5
BACKGROUND_RGB = (190, 190, 190)
GOLDEN = 0.618034


def class_colors(count: int) -> np.ndarray:
    """``(count, 3)`` uint8 RGB class colours, bright so they read over photographs at half opacity.

    Class 0 (usually the background) is light grey; class i ≥ 1 has hue ``(0.15 + 0.618034·(i−1)) mod 1`` (golden
    ratio steps keep consecutive classes far apart on the colour wheel), saturation 0.85, value 1.
    """
    colors = np.zeros((count, 3), dtype=np.uint8)
    for index in range(count):
        if index == 0:
            colors[0] = BACKGROUND_RGB
        else:
            rgb = colorsys.hsv_to_rgb((0.15 + GOLDEN * (index - 1)) % 1.0, 0.85, 1.0)
            colors[index] = [round(255 * c) for c in rgb]
    return colors


def overlay_lut(count: int, *, show_background: bool) -> np.ndarray:
    """``(256, 4)`` uint8 RGBA table for label indices: classes 0..count-1 opaque, the rest transparent.

    ``show_background=False`` makes class 0 transparent too (the usual "background" class).
    """
    if not 0 <= count <= VOID:
        raise ValueError(f"count must be in 0..{VOID} classes, got {count}.")
    lut = np.zeros((256, 4), dtype=np.uint8)
    lut[:count, :3] = class_colors(count)
    lut[:count, 3] = 255
    if not show_background and count:
        lut[0, 3] = 0
    return lut


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


class Canvas(pg.GraphicsView):
    """Image + overlay view of one :class:`~app.document.ImageDocument`.

    Signals:
        overlay_updated: the overlay image was replaced (new labels, or a view option changed).
    """

    overlay_updated = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, background="#202124")
        self.view = pg.ViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.setCentralItem(self.view)
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.overlay_item = pg.ImageItem(axisOrder="row-major")
        self.overlay_item.setZValue(1)
        self.view.addItem(self.image_item)
        self.view.addItem(self.overlay_item)
        self.document: ImageDocument | None = None
        self.overlay_visible = True
        self.opacity = DEFAULT_OPACITY
        self.boundary_only = False
        self.show_before = False
        self.show_background = False

    def set_document(self, document: ImageDocument | None) -> None:
        """Show ``document``'s image and labels, and follow its changes."""
        if self.document is not None:
            self.document.unary_changed.disconnect(self.refresh_overlay)
            self.document.result_changed.disconnect(self.refresh_overlay)
        self.document = document
        if document is None:
            self.image_item.clear()
            self.overlay_item.clear()
            return
        document.unary_changed.connect(self.refresh_overlay)
        document.result_changed.connect(self.refresh_overlay)
        self.image_item.setImage(document.image, levels=(0, 255), autoLevels=False)
        self.refresh_overlay()
        self.fit()

    def fit(self) -> None:
        """Zoom to show the whole image."""
        self.view.autoRange(padding=0.01)

    def shown_labels(self) -> np.ndarray | None:
        """``(H, W)`` labels the overlay draws: before (the unary's) or after (the refinement's)."""
        if self.document is None:
            return None
        return self.document.before_labels if self.show_before else self.document.labels

    def refresh_overlay(self) -> None:
        """Redraw the overlay from the document and the view options."""
        labels = self.shown_labels()
        if labels is None:
            self.overlay_item.clear()
        else:
            index = np.minimum(labels, VOID).astype(np.uint8)
            if self.boundary_only:
                index[~label_boundaries(labels)] = VOID
            lut = overlay_lut(self.document.num_classes, show_background=self.show_background)
            self.overlay_item.setImage(index, levels=(0, 255), lut=lut, autoLevels=False)
        self.overlay_item.setOpacity(self.opacity)
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
        self.overlay_item.setOpacity(self.opacity)

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
