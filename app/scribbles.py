"""Brush scribbles and their undo history, without Qt (STYLE.md habits 10-11).

A :class:`ScribbleLayer` holds one label per pixel, :data:`UNPAINTED` where the user has not painted. Painted pixels
are clamped: they become hard unaries for the next refinement (``crfcore.unary.from_scribbles``) and override the
refined labels in the mask the user sees and saves.

Undo follows napari's labels layer: an undo item is an :class:`Edit` atom ``(indices, before, after)`` over the
flattened scribbles. Everything painted between :meth:`ScribbleLayer.begin` and :meth:`ScribbleLayer.end` (one brush
drag) becomes a single item: ``begin`` snapshots the layer, ``end`` keeps only the pixels whose value
changed, with their first and last values, so a drag that crosses a pixel many times is still one small atom.

:func:`stroke_pixels` rasterises one brush segment (a capsule: all pixel centres within half the brush size of the
segment between two mouse positions), so fast drags leave no gaps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["UNPAINTED", "UNDO_LIMIT", "Edit", "ScribbleLayer", "stroke_pixels"]

UNPAINTED = -1  # scribble value of pixels without a stroke (crfcore.unary.from_scribbles' default)
UNDO_LIMIT = 500  # undo items kept per image; the oldest are forgotten first


@dataclass(frozen=True, eq=False)
class Edit:
    """One undo item.

    Attributes:
        name: what the user did (``"brush"``, ``"eraser"``), for menus and messages.
        indices: ``(N,)`` int64 flat indices into the ``(H, W)`` scribbles, increasing.
        before: ``(N,)`` int16 values before the edit (:data:`UNPAINTED` or a class index).
        after: ``(N,)`` int16 values after it.
    """

    name: str
    indices: np.ndarray
    before: np.ndarray
    after: np.ndarray


def stroke_pixels(start: tuple[float, float], end: tuple[float, float], size: float,
                  shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixels a round brush of diameter ``size`` covers moving from ``start`` to ``end``.

    Args:
        start, end: ``(x, y)`` positions in image pixels; pixel ``(row, col)`` spans ``[col, col+1) × [row, row+1)``,
            its centre is ``(col + 0.5, row + 0.5)`` (pyqtgraph's ImageItem coordinates).
        size: brush diameter in pixels, > 0; a pixel is covered when its centre lies within ``max(size / 2, 0.5)``
            of the segment. The pixels under ``start`` and ``end`` are always covered.
        shape: ``(H, W)`` of the image; pixels outside it are dropped.

    Returns:
        ``(rows, cols)`` int64 arrays of equal length (empty when the segment lies outside the image).
    """
    if not size > 0:
        raise ValueError(f"size must be > 0 pixels (the brush diameter), got {size}.")
    height, width = shape
    radius = max(size / 2.0, 0.5)
    (x0, y0), (x1, y1) = start, end
    c0, c1 = max(int(np.floor(min(x0, x1) - radius)), 0), min(int(np.ceil(max(x0, x1) + radius)), width)
    r0, r1 = max(int(np.floor(min(y0, y1) - radius)), 0), min(int(np.ceil(max(y0, y1) + radius)), height)
    if c0 >= c1 or r0 >= r1:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows, cols = np.mgrid[r0:r1, c0:c1]
    px, py = cols + 0.5, rows + 0.5
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    t = np.zeros_like(px) if length2 == 0 else np.clip(((px - x0) * dx + (py - y0) * dy) / length2, 0.0, 1.0)
    inside = (px - (x0 + t * dx)) ** 2 + (py - (y0 + t * dy)) ** 2 <= radius * radius
    for x, y in (start, end):
        col, row = int(np.floor(x)), int(np.floor(y))
        if r0 <= row < r1 and c0 <= col < c1:
            inside[row - r0, col - c0] = True
    return rows[inside].astype(np.int64), cols[inside].astype(np.int64)


class ScribbleLayer:
    """``(H, W)`` int16 scribbles with an undo history.

    Args:
        shape: ``(H, W)`` of the image.
        undo_limit: undo items kept, ≥ 1.
    """

    def __init__(self, shape: tuple[int, int], *, undo_limit: int = UNDO_LIMIT) -> None:
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"shape must be (H, W) with H, W >= 1, got {shape}.")
        if undo_limit < 1:
            raise ValueError(f"undo_limit must be >= 1, got {undo_limit}.")
        self._values = np.full(shape, UNPAINTED, dtype=np.int16)
        self._undo: list[Edit] = []
        self._redo: list[Edit] = []
        self._limit = undo_limit
        self._snapshot: np.ndarray | None = None
        self._name = ""
        self._painted = False

    @property
    def values(self) -> np.ndarray:
        """``(H, W)`` int16 scribbles, read-only; :data:`UNPAINTED` where nothing is painted."""
        view = self._values.view()
        view.flags.writeable = False
        return view

    @property
    def painted(self) -> bool:
        """True when at least one pixel may be painted (exact after every finished edit)."""
        return self._painted

    @property
    def in_edit(self) -> bool:
        """True between :meth:`begin` and :meth:`end`."""
        return self._snapshot is not None

    # --- editing -----------------------------------------------------------------------------------------------
    def begin(self, name: str) -> None:
        """Start an undo item; everything painted until :meth:`end` is undone at once."""
        if self._snapshot is not None:
            raise ValueError(f"an edit ({self._name!r}) is already open; end it before beginning {name!r}.")
        self._snapshot = self._values.copy()
        self._name = name

    def paint(self, rows: np.ndarray, cols: np.ndarray, label: int) -> bool:
        """Set the pixels ``(rows, cols)`` to ``label`` (a class index ≥ 0, or :data:`UNPAINTED` to erase).

        Must run inside :meth:`begin` / :meth:`end`. Returns True if any pixel changed.
        """
        if self._snapshot is None:
            raise ValueError("paint() outside an edit; call begin(name) first and end() after the last paint.")
        rows, cols = np.asarray(rows), np.asarray(cols)
        height, width = self._values.shape
        if rows.shape != cols.shape or (rows.size and (rows.min() < 0 or rows.max() >= height or cols.min() < 0
                                                        or cols.max() >= width)):
            raise ValueError(f"rows and cols must be equal-length pixel indices inside {height}×{width} (H×W).")
        if not UNPAINTED <= label <= np.iinfo(np.int16).max:
            raise ValueError(f"label must be a class index >= 0 or UNPAINTED ({UNPAINTED}), got {label}.")
        region = self._values[rows, cols]
        if not (region != label).any():
            return False
        self._values[rows, cols] = label
        self._painted = self._painted or label != UNPAINTED
        return True

    def end(self) -> Edit | None:
        """Close the open item; returns it, or None when nothing changed (no undo item is made then)."""
        if self._snapshot is None:
            raise ValueError("end() without begin(); there is no open edit.")
        snapshot, self._snapshot = self._snapshot, None
        changed = np.flatnonzero(snapshot != self._values)
        self._painted = bool((self._values != UNPAINTED).any())
        if changed.size == 0:
            return None
        edit = Edit(self._name, changed, snapshot.ravel()[changed], self._values.ravel()[changed])
        self._undo.append(edit)
        del self._undo[:-self._limit]
        self._redo.clear()
        return edit

    def replace(self, values: np.ndarray) -> None:
        """Load saved scribbles (a reopened project); forgets the history."""
        if self._snapshot is not None:
            raise ValueError(f"cannot replace the scribbles during an edit ({self._name!r}); end it first.")
        values = np.asarray(values)
        if values.shape != self._values.shape or values.dtype.kind not in "iu":
            raise ValueError(f"scribbles must be {self._values.shape} integers (H×W), got {values.shape} "
                             f"{values.dtype}.")
        if values.size and (values.min() < UNPAINTED or values.max() > np.iinfo(np.int16).max):
            raise ValueError(f"scribbles must hold class indices or UNPAINTED ({UNPAINTED}), got values "
                             f"{int(values.min())}..{int(values.max())}.")
        self._values[:] = values
        self._painted = bool((self._values != UNPAINTED).any())
        self._undo.clear()
        self._redo.clear()

    # --- history -----------------------------------------------------------------------------------------------
    @property
    def can_undo(self) -> bool:
        return bool(self._undo) and self._snapshot is None

    @property
    def can_redo(self) -> bool:
        return bool(self._redo) and self._snapshot is None

    @property
    def undo_name(self) -> str:
        """Name of the item :meth:`undo` would revert, "" if none."""
        return self._undo[-1].name if self._undo else ""

    @property
    def redo_name(self) -> str:
        return self._redo[-1].name if self._redo else ""

    def undo(self) -> Edit | None:
        """Revert the latest item; returns it, or None when there is nothing to undo (or an edit is open)."""
        if not self.can_undo:
            return None
        edit = self._undo.pop()
        self._values.ravel()[edit.indices] = edit.before
        self._redo.append(edit)
        self._painted = bool((self._values != UNPAINTED).any())
        return edit

    def redo(self) -> Edit | None:
        """Re-apply the latest undone item; None when there is none."""
        if not self.can_redo:
            return None
        edit = self._redo.pop()
        self._values.ravel()[edit.indices] = edit.after
        self._undo.append(edit)
        self._painted = bool((self._values != UNPAINTED).any())
        return edit

    # --- use -----------------------------------------------------------------------------------------------------
    def max_label(self) -> int:
        """The largest painted class index, :data:`UNPAINTED` when nothing is painted."""
        return int(self._values.max()) if self._painted else UNPAINTED

    def over(self, labels: np.ndarray) -> np.ndarray:
        """``(H, W)`` int64 copy of ``labels`` with the painted pixels set to their scribble."""
        return np.where(self._values != UNPAINTED, self._values, labels).astype(np.int64)
