"""Training curves of a tuning run: a CSV table and a PNG plot drawn with Pillow (no plotting library needed)."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw

__all__ = ["write_csv", "plot_png"]

_WIDTH, _PANEL, _MARGIN = 640, 200, 48
_COLOURS = {"train_loss": (200, 80, 30), "train_miou": (60, 110, 200), "val_miou": (30, 150, 60)}


def write_csv(history: Sequence[dict[str, float]], path: str | os.PathLike) -> None:
    """One row per step; columns ``step`` first, then every other key in order of first appearance (NaN blank)."""
    columns: list[str] = ["step"]
    for row in history:
        columns += [k for k in row if k not in columns]
    from ..io import atomic_write

    with atomic_write(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for row in history:
            writer.writerow(["" if _missing(row.get(c)) else f"{row[c]:.6g}" for c in columns])


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def plot_png(history: Sequence[dict[str, float]], path: str | os.PathLike, *, title: str = "") -> None:
    """Two panels over steps: training loss on top, training and validation mIoU (%) below; a legend in each.

    Validation points are drawn as dots joined by a line, since they exist only every few steps.
    """
    image = Image.new("RGB", (_WIDTH, 2 * _PANEL + 2 * _MARGIN), "white")
    draw = ImageDraw.Draw(image)
    steps = [row["step"] for row in history]
    x_max = max(max(steps), 1)
    if title:
        draw.text((_MARGIN, 8), title, fill="black")
    _panel(draw, history, ["train_loss"], top=_MARGIN // 2 + 12, x_max=x_max, y_range=None)
    _panel(draw, history, ["train_miou", "val_miou"], top=_MARGIN + _PANEL + 12, x_max=x_max, y_range=(0.0, 100.0))
    draw.text((_WIDTH // 2 - 12, image.height - 16), "step", fill="black")
    from ..io import atomic_write

    with atomic_write(path) as tmp:
        image.save(tmp, format=Image.registered_extensions().get(Path(path).suffix.lower(), "PNG"))


def _panel(draw: ImageDraw.ImageDraw, history: Sequence[dict[str, float]], keys: list[str], *, top: int,
           x_max: float, y_range: tuple[float, float] | None) -> None:
    """Axes with ticks and one polyline per key."""
    left, right, bottom = _MARGIN, _WIDTH - 16, top + _PANEL - 24
    series = {k: [(r["step"], r[k]) for r in history if not _missing(r.get(k))] for k in keys}
    values = [v for pts in series.values() for _, v in pts]
    if y_range is None:
        low, high = (min(values), max(values)) if values else (0.0, 1.0)
        y_range = (low, high if high > low else low + 1.0)
    low, high = y_range
    draw.rectangle([left, top, right, bottom], outline="black")
    for fraction in (0.0, 0.5, 1.0):
        y = bottom - fraction * (bottom - top)
        draw.line([left - 4, y, left, y], fill="black")
        draw.text((4, y - 6), f"{low + fraction * (high - low):.3g}", fill="black")
        x = left + fraction * (right - left)
        draw.line([x, bottom, x, bottom + 4], fill="black")
        draw.text((x - 8, bottom + 6), f"{fraction * x_max:.0f}", fill="black")

    def to_px(step: float, value: float) -> tuple[float, float]:
        return (left + step / x_max * (right - left), bottom - (value - low) / (high - low) * (bottom - top))

    for n, (key, pts) in enumerate(series.items()):
        colour = _COLOURS.get(key, (0, 0, 0))
        xy = [to_px(s, v) for s, v in pts]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        for x, y in xy if key == "val_miou" else []:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        draw.text((left + 8, top + 6 + 14 * n), key.replace("_", " "), fill=colour)
