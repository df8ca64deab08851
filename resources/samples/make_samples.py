"""Rebuild the bundled samples: ``python resources/samples/make_samples.py`` (see SOURCE.md in this folder).

Each sample is a public-domain / CC0 photo from scikit-image's ``skimage.data``, downscaled so its longer side is
480 px, with a deliberately coarse mask: a few hand-placed polygons, each roughly around one object, as a user would
draw them in a hurry. The polygons are written in the original photo's pixel coordinates ``(x, y)`` and scaled with
the photo. They are painted in the order listed, later ones over earlier ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image, ImageDraw

from crfcore.io import save_image, save_mask, voc_palette

LONG_SIDE = 480
HERE = Path(__file__).resolve().parent

# name → [(class name, polygon in original-photo (x, y) pixels), ...]; class k is the k-th distinct name after
# "background" (0).
SAMPLES: dict[str, list[tuple[str, list[tuple[int, int]]]]] = {
    "coffee": [  # 400×600 (H×W)
        ("saucer", [(70, 245), (85, 170), (140, 110), (200, 85), (430, 100), (470, 150), (488, 230), (460, 310),
                    (390, 370), (290, 398), (180, 385), (105, 330)]),
        ("cup", [(168, 40), (215, 10), (300, 5), (385, 15), (420, 60), (415, 140), (395, 230), (350, 285),
                 (270, 292), (262, 315), (195, 312), (188, 235), (178, 150)]),
        ("spoon", [(392, 60), (430, 68), (418, 120), (395, 200), (385, 232), (412, 255), (415, 300), (390, 332),
                   (345, 335), (318, 300), (322, 258), (350, 238), (372, 225), (392, 140)]),
    ],
    "astronaut": [  # 512×512
        ("astronaut", [(190, 20), (250, 5), (305, 40), (312, 110), (300, 150), (320, 210), (345, 255), (370, 330),
                       (330, 360), (290, 420), (300, 512), (15, 512), (25, 330), (45, 280), (100, 215), (120, 170),
                       (150, 140), (150, 60)]),
        ("helmet", [(300, 380), (350, 340), (420, 330), (480, 365), (512, 430), (512, 512), (285, 512),
                    (275, 450)]),
    ],
    "rocket": [  # 427×640
        ("rocket", [(312, 115), (335, 115), (348, 150), (346, 405), (300, 405), (298, 150)]),
    ],
}


def class_names(name: str) -> list[str]:
    """``["background", <object classes in first-painted order>]`` for one sample."""
    names = ["background"]
    for cls, _ in SAMPLES[name]:
        if cls not in names:
            names.append(cls)
    return names


def make(name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(image (H, W, 3) uint8, mask (H, W) uint8)`` of one sample at its bundled size."""
    photo = Image.fromarray(getattr(skimage.data, name)())
    scale = LONG_SIDE / max(photo.size)
    size = (round(photo.width * scale), round(photo.height * scale))
    image = photo.resize(size, Image.Resampling.LANCZOS)
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    names = class_names(name)
    for cls, polygon in SAMPLES[name]:
        draw.polygon([(x * scale, y * scale) for x, y in polygon], fill=names.index(cls))
    return np.asarray(image), np.asarray(mask)


def main() -> None:
    for name in SAMPLES:
        image, mask = make(name)
        save_image(HERE / f"{name}.png", image)
        save_mask(HERE / f"{name}_mask.png", mask, palette=voc_palette())
        print(f"{name}: {image.shape[0]}×{image.shape[1]} (H×W), classes {class_names(name)}")
    classes = {name: class_names(name) for name in SAMPLES}
    (HERE / "classes.json").write_text(json.dumps(classes, indent=2) + "\n")


if __name__ == "__main__":
    main()
