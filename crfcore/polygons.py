"""Polygon helpers, in one place for every reader and writer of outlines (YOLO-seg and COCO export and import,
labelme and COCO unaries, the polygon protocol of ``crfcore eval``).

Conventions: contours from :func:`outlines` are ``(N, 2)`` (row, col) in the mask's frame, pixel centres at
integers; polygons for :func:`fill_polygon` are ``(N, 2)`` (x, y) with pixel centres at integer coordinates.
"""

from __future__ import annotations

import numpy as np

__all__ = ["signed_area", "outlines", "fill_polygon"]


def signed_area(rc: np.ndarray) -> float:
    """Shoelace area of a closed ``(N, 2)`` row/col contour, in pixels² (the sign gives the orientation)."""
    r, c = rc[:, 0], rc[:, 1]
    return 0.5 * float(np.dot(r, np.roll(c, -1)) - np.dot(c, np.roll(r, -1)))


def outlines(mask: np.ndarray) -> list[np.ndarray]:
    """The closed contours of a ``(h, w)`` bool region, ``(N, 2)`` row/col in the mask's frame (first vertex
    repeated last), half a pixel outside the region's pixel centres.

    Diagonal neighbours connect (``fully_connected='high'``), as in an 8-connected labelling: an 8-connected region
    has one outer contour, and one more per hole.
    """
    from skimage.measure import find_contours

    return [rc - 1.0 for rc in find_contours(np.pad(mask, 1).astype(np.float32), 0.5, fully_connected="high")]


def fill_polygon(xy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` bool: the pixel centres (integer x, y) inside the polygon ``xy`` ((N, 2) x, y), even-odd rule.

    A scanline fill: each edge is taken bottom-up, so a zero-width cut (an edge traversed both ways) crosses every
    row at bit-identical x and fills nothing. Centres on a left edge are inside, on a right edge outside.
    """
    height, width = shape
    a, b = np.asarray(xy, np.float64), np.roll(np.asarray(xy, np.float64), -1, axis=0)
    swap = a[:, 1] > b[:, 1]
    a[swap], b[swap] = b[swap], a[swap].copy()
    first = np.clip(np.ceil(a[:, 1]), 0, height).astype(np.int64)  # rows r with y0 <= r < y1
    stop = np.clip(np.ceil(b[:, 1]), 0, height).astype(np.int64)
    count = np.maximum(stop - first, 0)
    edge = np.repeat(np.arange(len(a)), count)
    rows = first[edge] + np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    (x0, y0), (x1, y1) = a[edge].T, b[edge].T
    xs = x0 + (rows - y0) * (x1 - x0) / (y1 - y0)
    order = np.lexsort((xs, rows))
    rows, cols = rows[order], np.clip(np.ceil(xs[order]), 0, width).astype(np.int64)
    inside = np.zeros(shape, bool)
    if rows.size:
        (r0, c0), (r1, c1) = (rows.min(), cols.min()), (rows.max() + 1, cols.max())
        marks = np.zeros((r1 - r0, c1 - c0 + 1), np.int32)  # +1 at each entry, -1 at each exit, within the bbox
        np.add.at(marks, (rows[0::2] - r0, cols[0::2] - c0), 1)
        np.add.at(marks, (rows[1::2] - r0, cols[1::2] - c0), -1)
        inside[r0:r1, c0:c1] = np.cumsum(marks, axis=1)[:, :-1] > 0
    return inside
