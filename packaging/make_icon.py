"""Rebuild the app icon: ``.venv/bin/python packaging/make_icon.py``.

Writes ``resources/icons/crf-studio.png`` (256×256 RGBA) and ``resources/icons/crf-studio.ico`` (16…256 px) from
nothing but drawing calls, so the icon is ours and rebuilt byte for byte. The picture is what the app does: a blocky,
coarse orange mask over a disc, and the disc's smooth refined boundary drawn over it in white. PyInstaller turns the
PNG into the macOS ``.icns`` itself (it needs Pillow at build time, which the app already requires).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["ICON_DIR", "ICON_SIZES", "draw_icon", "main"]

ICON_DIR = Path(__file__).resolve().parents[1] / "resources" / "icons"
ICON_SIZES = (16, 24, 32, 48, 64, 128, 256)  # the sizes Windows picks from, px
SIZE = 256
BLOCK = 32  # side of the coarse mask's blocks, px
BACKGROUND = (38, 50, 72, 255)
MASK = (243, 146, 46, 200)
BOUNDARY = (255, 255, 255, 255)


def draw_icon(size: int = SIZE) -> Image.Image:
    """The icon as a ``size × size`` RGBA image (``size`` a multiple of 32, px)."""
    if size % BLOCK:
        raise ValueError(f"size must be a multiple of {BLOCK} px, got {size}; draw at 256 and let Pillow shrink it.")
    centre, radius = size / 2, size * 0.31
    yy, xx = (np.mgrid[:size, :size] + 0.5) / BLOCK
    cells = np.floor(yy) * BLOCK + BLOCK / 2, np.floor(xx) * BLOCK + BLOCK / 2
    coarse = (cells[0] - centre) ** 2 + (cells[1] - centre) ** 2 < (radius + BLOCK / 4) ** 2
    overlay = np.zeros((size, size, 4), np.uint8)
    overlay[coarse] = MASK
    icon = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    plate = ImageDraw.Draw(icon)
    plate.rounded_rectangle((0, 0, size - 1, size - 1), radius=size // 6, fill=BACKGROUND)
    icon.alpha_composite(Image.fromarray(overlay, "RGBA"))
    ImageDraw.Draw(icon).ellipse((centre - radius, centre - radius, centre + radius, centre + radius),
                                 outline=BOUNDARY, width=max(2, size // 28))
    return icon


def main() -> None:
    """Write the PNG and the multi-size ICO into :data:`ICON_DIR`."""
    ICON_DIR.mkdir(parents=True, exist_ok=True)
    icon = draw_icon()
    icon.save(ICON_DIR / "crf-studio.png", optimize=True)
    icon.save(ICON_DIR / "crf-studio.ico", sizes=[(s, s) for s in ICON_SIZES])


if __name__ == "__main__":
    main()
