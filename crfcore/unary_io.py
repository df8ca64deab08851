"""Unaries from files: probability or logit arrays, per-class PNGs, label masks, scribbles and annotation polygons.

:func:`load_unary` reads any of them into ``(C, H, W)`` float32 probabilities (sum 1 over C) for ``crfcore.refine``:

========================  ===========================================================================================
source                    read as
========================  ===========================================================================================
``.npy``, ``.npz``, TIFF  float ``(C, H, W)`` probabilities or logits (detected, or ``kind``); integer ``(H, W)``
                          labels. ``.npz``: the array named ``probs``, ``logits``, ``unary`` or ``labels``, or its
                          only array. TIFF stacks are ``(C, H, W)``; per-pixel samples ``(H, W, C)`` are moved first.
folder / list of PNGs     one 8- or 16-bit grey map per class (value/255 or /65535), folders in natural name order
PNG and other images      a label mask (``kind="labels"``, default) or brush strokes (``kind="scribbles"``)
COCO ``.json``            the polygons and RLE masks of one image (``coco_image``), larger areas painted first
labelme ``.json``         polygon, rectangle, circle and mask shapes, painted in file order; ``classes`` names them
========================  ===========================================================================================

Repairs, each logged: per-class 8-bit maps whose sums are off by no more than their rounding are renormalised;
``kind="scores"`` divides non-negative independent scores (sigmoid outputs) by their sum, pixels with all zeros
becoming uniform; ``resize=True`` scales a unary with the image's aspect ratio to the image's size. Everything else
that is wrong (NaN/inf, sums not 1, a class count other than ``num_classes``, labels ≥ C, a size other than the
image's) raises ``ValueError`` naming the file and the fix.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import struct
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
from PIL import UnidentifiedImageError

from . import unary
from .errors import InputError
from .files import (MAX_CLASSES, check_array_header, check_declared_size, check_pixels, decode_embedded_image, field,
                    int_field, open_pil, read_json)
from .io import load_mask
from .labels import VOID

__all__ = ["KINDS", "load_unary"]

log = logging.getLogger(__name__)

KINDS = ("probs", "scores", "logits", "labels", "scribbles")
SUM_TOLERANCE = 1e-3  # |Σ_c p_c − 1| allowed for probabilities
ASPECT_TOLERANCE = 0.02  # relative aspect-ratio difference resize=True accepts (network outputs round sizes)
_NPZ_KEYS = {"probs": "probs", "logits": "logits", "unary": None, "labels": "labels"}
_CIRCLE_VERTICES = 64

PathLike = str | os.PathLike


def load_unary(path: PathLike | Sequence[PathLike], *, num_classes: int | None = None,
               image_shape: tuple[int, int] | None = None, kind: str | None = None,
               confidence: float | None = None, classes: Sequence[str] | None = None,
               coco_image: int | str | None = None, resize: bool = False, ignore_index: int = VOID,
               band: float | None = None) -> np.ndarray:
    """Read a unary source (see the module table) as ``(C, H, W)`` float32 probabilities.

    Args:
        path: a file, a folder of per-class PNGs, or a list of per-class PNG paths (class k = entry k).
        num_classes: expected C; None takes it from the file (labels: the largest label + 1, at least 2).
        image_shape: ``(H, W)`` of the image the unary is for; a different size is an error unless ``resize``.
        kind: None detects; ``"probs"``, ``"scores"`` or ``"logits"`` for float data, ``"labels"`` or
            ``"scribbles"`` for integer masks (scribbles: painted pixels hard, ``ignore_index`` = unpainted).
        confidence: probability of a mask's or polygon's label, in (1/C, 1]; default
            :data:`crfcore.unary.DEFAULT_CONFIDENCE`.
        classes: class names in index order, index 0 the background that no polygon covers (labelme: required; COCO:
            maps category names, default background + the categories in id order).
        coco_image: the COCO image id or file name; needed when the file describes several images.
        resize: scale a unary of the image's aspect ratio but another size to ``image_shape`` (bilinear).
        ignore_index: label of void (uniform) pixels in masks, of unpainted pixels in scribbles.
        band: masks and polygons: uncertain band along the outlines, pixels > 0, or None (see
            :func:`crfcore.unary.from_labels`).

    Raises:
        FileNotFoundError: no such file or folder.
        ValueError: bad data, each message naming the file and the fix.
    """
    if kind is not None and kind not in KINDS:
        raise InputError(f"{kind!r} is not a valid kind. Valid kinds are {', '.join(map(repr, KINDS))} and None.")
    confidence = unary.DEFAULT_CONFIDENCE if confidence is None else confidence
    if classes is not None:
        classes = list(classes)
        if num_classes is not None and num_classes != len(classes):
            raise InputError(f"num_classes={num_classes} but {len(classes)} classes are named; pass one of them.")
        num_classes = len(classes)
    if isinstance(path, (list, tuple)):
        _check_kind(kind, ("probs", "scores"), "a list of class maps")
        probs, source = _class_maps([Path(p) for p in path], kind), f"the {len(path)} class maps"
    else:
        p = Path(path)
        source = str(p)
        if not p.exists():
            raise FileNotFoundError(f"unary {p} does not exist; check the path.")
        suffix = p.suffix.lower()
        if p.is_dir():
            _check_kind(kind, ("probs", "scores"), f"folder {p} (class maps)")
            probs = _class_maps(_natural(q for q in p.iterdir() if q.suffix.lower() == ".png"), kind, folder=p)
        elif suffix == ".json":
            _check_kind(kind, ("labels",), f"{p} (annotations)")
            labels, n = _annotations(p, classes, num_classes, coco_image, None if resize else image_shape)
            if n < 2:
                raise InputError(f"{p} defines {n} class; a CRF needs at least 2 (background + one category).")
            probs = unary.from_labels(labels, n, confidence=confidence, ignore_index=None, band=band)
        elif suffix in (".npy", ".npz", ".tif", ".tiff"):
            try:
                array, hint = _read_array(p, image_shape)
            except InputError:
                raise
            except (OSError, ValueError, zipfile.BadZipFile, tifffile.TiffFileError) as exc:
                raise InputError(f"{p} could not be read as an array ({exc}); save it with np.save, np.savez or "
                                 f"tifffile.imwrite.") from None
            _check_layout(array, p, image_shape)
            probs = _from_array(array, p, kind or hint, num_classes, confidence, band, ignore_index)
        else:
            probs = _from_mask(load_mask(p), p, kind or "labels", num_classes, confidence, band, ignore_index)
    if num_classes is not None and probs.shape[0] != num_classes:
        raise InputError(f"{source} holds {probs.shape[0]} classes but num_classes={num_classes}. Pass "
                         f"num_classes={probs.shape[0]} if that is right; if classes are missing from the file, add "
                         f"their channels (zeros for probabilities) at their indices.")
    return np.ascontiguousarray(_fit(probs, image_shape, resize, source), dtype=np.float32)


def _check_kind(kind: str | None, allowed: tuple[str, ...], what: str) -> None:
    if kind is not None and kind not in allowed:
        raise InputError(f"kind={kind!r} does not apply to {what}; use {' or '.join(map(repr, allowed))} or None.")


def _natural(files: Iterable[Path]) -> list[Path]:
    return sorted(files, key=lambda q: [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", q.name)])


def _read_array(p: Path, image_shape: tuple[int, int] | None) -> tuple[np.ndarray, str | None]:
    """The array in a .npy, .npz or TIFF file, and the kind its .npz name implies (None: detect); declared shapes
    are checked (:func:`crfcore.files.check_array_header`) before the data is read."""
    suffix = p.suffix.lower()
    if suffix in (".npy", ".npz"):
        check_array_header(p, image_shape)
    if suffix == ".npy":
        return np.load(p, allow_pickle=False), None
    if suffix == ".npz":
        with np.load(p, allow_pickle=False) as data:
            found = [k for k in _NPZ_KEYS if k in data.files]
            if found:
                return data[found[0]], _NPZ_KEYS[found[0]]
            arrays = [k for k in data.files if data[k].ndim >= 2]
            if len(arrays) != 1:
                raise InputError(f"{p} holds arrays {data.files}; name the unary 'probs', 'logits' or 'labels'.")
            return data[arrays[0]], None
    try:
        with tifffile.TiffFile(p) as tif:
            if not tif.series:
                raise InputError(f"{p} is a TIFF without images; save the unary with tifffile.imwrite.")
            series = tif.series[0]
            shape = tuple(series.shape)
            grid = shape[:2] if series.axes.endswith("S") and len(shape) == 3 else shape[-2:]
            if len(shape) < 2 or len(shape) > 3:
                raise InputError(f"{p} holds a TIFF series of shape {shape}; expected (C, H, W) maps or (H, W) "
                                 f"labels.")
            check_pixels(p, grid[0], grid[1], what=f"(TIFF series of shape {shape})")
            array = series.asarray()
    except InputError:
        raise
    except (tifffile.TiffFileError, ValueError, OSError, KeyError, IndexError, zlib.error, struct.error) as exc:
        raise InputError(f"{p} is a truncated or corrupt TIFF ({type(exc).__name__}: {exc}); re-export it with "
                         f"tifffile.imwrite.") from None
    return (np.moveaxis(array, -1, 0) if series.axes.endswith("S") and array.ndim == 3 else array), None


def _check_layout(a: np.ndarray, p: Path, image_shape: tuple[int, int] | None) -> None:
    if (image_shape is not None and a.ndim == 3 and a.shape[:2] == tuple(image_shape)
            and a.shape[1:] != tuple(image_shape)):
        raise InputError(f"{p} has shape {a.shape}, (H, W, C) for this {image_shape[0]}×{image_shape[1]} image; "
                         f"expected (C, H, W). Save np.moveaxis(a, -1, 0) instead.")


def _from_array(a: np.ndarray, p: Path, kind: str | None, num_classes: int | None, confidence: float,
                band: float | None, ignore_index: int) -> np.ndarray:
    if a.dtype.kind in "iub" and a.ndim == 2:
        return _from_mask(a.astype(np.int64), p, kind or "labels", num_classes, confidence, band, ignore_index)
    if a.dtype.kind != "f" or a.ndim != 3:
        raise InputError(f"{p} holds a {a.dtype} array of shape {a.shape}; expected (C, H, W) float probabilities "
                         f"or logits, or (H, W) integer labels. For one foreground probability map p, save "
                         f"np.stack([1 - p, p]).")
    if kind in ("labels", "scribbles"):
        raise InputError(f"{p} holds float data; kind={kind!r} needs an integer (H, W) mask.")
    return _from_float(a.astype(np.float32), str(p), kind)


def _from_float(a: np.ndarray, source: str, kind: str | None) -> np.ndarray:
    """``(C, H, W)`` float data → probabilities; ``kind`` None detects probabilities or logits and logs which."""
    bad = ~np.isfinite(a)
    if bad.any():
        raise InputError(f"{source} has {int(bad.sum())} NaN or infinite values (first at class, y, x = "
                         f"{tuple(int(i) for i in np.argwhere(bad)[0])}); re-export it from a run without the failure "
                         f"(a NaN network output or a division by zero).")
    if a.shape[0] < 2:
        raise InputError(f"{source} has {a.shape[0]} class; a CRF needs at least 2 (for a foreground probability p "
                         f"use np.stack([1 - p, p])).")
    sums = a.sum(0, dtype=np.float64)
    lo, hi, off = float(a.min()), float(a.max()), float(np.abs(sums - 1).max())
    if kind is None:
        if lo < 0 or hi > 1 + SUM_TOLERANCE:
            kind = "logits"
        elif off <= SUM_TOLERANCE:
            kind = "probs"
        else:
            raise InputError(f"{source} has values in 0..1 but their sums over classes range {sums.min():.3g}.."
                             f"{sums.max():.3g}, so they are neither probabilities nor clearly logits. Pass "
                             f"kind='scores' to divide independent per-class scores by their sum, or kind='logits'.")
        log.info("%s: %s (values %.3g..%.3g)%s", Path(source).name, kind, lo, hi,
                 "; applying softmax" if kind == "logits" else "")
    if kind == "logits":
        return unary.from_logits(torch.from_numpy(a)).numpy()
    if lo < 0:
        raise InputError(f"{source} has negative values (min {lo:.3g}); probabilities and scores are ≥ 0. If these "
                         f"are logits, pass kind='logits'.")
    if kind == "scores":
        empty = sums <= 0
        if empty.any():
            log.info("%s: %d pixels with all scores 0 set uniform", Path(source).name, int(empty.sum()))
        return np.where(empty, 1.0 / a.shape[0], a / np.where(empty, 1.0, sums)).astype(np.float32)
    if off > SUM_TOLERANCE:
        y, x = np.unravel_index(int(np.abs(sums - 1).argmax()), sums.shape)
        raise InputError(f"{source}: probabilities sum to {sums[y, x]:.4g} over classes at (y, x) = ({y}, {x}), "
                         f"off by more than {SUM_TOLERANCE}. Pass kind='scores' to divide by the sum, or kind="
                         f"'logits' if they are scores for a softmax.")
    return a / sums.astype(np.float32)


def _class_maps(files: list[Path], kind: str | None, *, folder: Path | None = None) -> np.ndarray:
    where = folder if folder is not None else "the class-map list"
    if len(files) < 2:
        raise InputError(f"{where} has {len(files)} PNG class map(s); one 8-bit grey PNG per class is needed, at "
                         f"least 2.")
    maps = []
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"class map {f} does not exist.")
        try:
            with open_pil(f) as im:
                check_pixels(f, im.height, im.width)
                if im.mode not in ("L", "I;16", "I;16B", "I;16L"):
                    raise InputError(f"{f} is a {im.mode} image; a class map is one grey channel (8 or 16 bit). "
                                     f"Save the class's probability times 255 as an 8-bit grey PNG.")
                a, full = np.array(im), 255.0 if im.mode == "L" else 65535.0
        except (UnidentifiedImageError, OSError, SyntaxError, EOFError) as exc:
            raise InputError(f"class map {f} is not a readable image ({exc}); save it as an 8-bit grey "
                             f"PNG.") from None
        maps.append(a.astype(np.float32) / full)
        if maps[-1].shape != maps[0].shape:
            raise InputError(f"{f} is {a.shape[0]}×{a.shape[1]} (H×W) but {files[0]} is "
                             f"{maps[0].shape[0]}×{maps[0].shape[1]}; all class maps must have one size.")
    a = np.stack(maps)
    log.info("class maps in order: %s", ", ".join(f.name for f in files))
    rounding = 0.5 * len(files) / 255 + SUM_TOLERANCE  # worst sum error of C maps each rounded to 8 bits
    if kind is None and float(np.abs(a.sum(0) - 1).max()) <= rounding:
        log.info("%s: sums within 8-bit rounding of 1; renormalised", where)
        kind = "scores"
    return _from_float(a, str(where), kind or "probs")


def _from_mask(labels: np.ndarray, p: Path, kind: str, num_classes: int | None, confidence: float,
               band: float | None, ignore_index: int) -> np.ndarray:
    if kind not in ("labels", "scribbles"):
        raise InputError(f"{p} is an integer mask; kind={kind!r} needs float data. Use kind='labels' or "
                         f"'scribbles'.")
    known = labels[labels != ignore_index]
    if known.size and known.min() < 0:
        raise InputError(f"{p} has negative labels (min {known.min()}); labels are class indices ≥ 0 and "
                         f"{ignore_index} (ignore_index) for void or unpainted pixels.")
    top = int(known.max()) if known.size else 0
    if num_classes is None:
        if top >= MAX_CLASSES:
            raise InputError(f"{p} has labels up to {top}, which would make {top + 1} classes (over {MAX_CLASSES}); "
                             f"if it is a label mask, map unannotated pixels to {ignore_index} (ignore_index) and the "
                             f"classes to 0..C-1, or pass num_classes.")
        num_classes = max(2, top + 1)
        log.info("%s: %s with %d classes (largest label %d)", p.name, kind, num_classes, top)
    elif top >= num_classes:
        bad = np.unique(known[known >= num_classes])
        raise InputError(f"{p} has labels {bad[:10].tolist()} ≥ num_classes={num_classes}; pass num_classes="
                         f"{int(bad.max()) + 1} if they are classes, or map them to {ignore_index} (ignore_index).")
    if kind == "scribbles":
        return unary.from_scribbles(labels, num_classes, unpainted=ignore_index)
    return unary.from_labels(labels, num_classes, confidence=confidence, ignore_index=ignore_index, band=band)


_ANNOTATION_EXAMPLE = ('a COCO file {"images": [...], "annotations": [...], "categories": [...]} or a labelme file '
                       '{"shapes": [...], "imageHeight": H, "imageWidth": W}')


def _annotations(p: Path, classes: list[str] | None, num_classes: int | None, coco_image: int | str | None,
                 image_shape: tuple[int, int] | None) -> tuple[np.ndarray, int]:
    """``((H, W) int64 labels, C)`` from a COCO or labelme file; background 0 where no shape lies.

    The size the file declares is checked against the pixel limit and ``image_shape`` before the label map is
    allocated; every field is checked before use (:mod:`crfcore.files`).
    """
    data = read_json(p, "annotation file", _ANNOTATION_EXAMPLE)
    if isinstance(data, dict) and "shapes" in data:
        return _labelme(data, p, classes, image_shape)
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        return _coco(data, p, classes, num_classes, coco_image, image_shape)
    raise InputError(f"{p} is neither a COCO file (keys 'images', 'annotations') nor a labelme file (key 'shapes'); "
                     f"expected {_ANNOTATION_EXAMPLE}.")


def _class_index(name: str, classes: list[str], p: Path) -> int:
    if name not in classes:
        raise InputError(f"{p} has a shape labelled {name!r}, which is not in classes={classes}; add it to the "
                         f"list.")
    return classes.index(name)


def _points(value: Any, p: Path, where: str) -> np.ndarray:
    """``(N, 2)`` float64 x, y vertices from a JSON list of pairs (labelme) or a flat list (COCO)."""
    if not isinstance(value, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in _flatten(value)):
        raise InputError(f"{p}: {where} must be a list of numbers (x, y pairs), got {json.dumps(value)[:60]}; fix "
                         f"the file.")
    flat = np.asarray(list(_flatten(value)), dtype=np.float64)
    if flat.size % 2 or not np.isfinite(flat).all():
        raise InputError(f"{p}: {where} must hold finite x, y pairs, got {flat.size} values; fix the file.")
    return flat.reshape(-1, 2)


def _flatten(value: Any) -> Iterable[Any]:
    """The leaves of a list of numbers or of [x, y] pairs (one level of nesting); anything deeper is a leaf."""
    for v in value:
        if isinstance(v, list) and len(v) == 2:
            yield from v
        else:
            yield v


def _labelme(data: dict, p: Path, classes: list[str] | None,
             image_shape: tuple[int, int] | None) -> tuple[np.ndarray, int]:
    shapes = field(data, "shapes", list, p, "'shapes'", "a list of labelme shapes")
    for k, s in enumerate(shapes):
        field(shapes, k, dict, p, f"shapes[{k}]", "an object with 'label', 'points' and 'shape_type'")
        field(s, "label", str, p, f"shapes[{k}].label", "the class name of the shape", default="")
    names = sorted({s.get("label", "") for s in shapes})
    if classes is None:
        raise InputError(f"{p} is a labelme file with labels {names}; pass classes=[...] (CLI: --classes "
                         f"{','.join(['background', *names])}), the class names in index order with the background "
                         f"first, e.g. {['background', *names]}.")
    shape = check_declared_size(p, "imageHeight/imageWidth",
                                field(data, "imageHeight", int, p, "'imageHeight'", "the image's height in pixels"),
                                field(data, "imageWidth", int, p, "'imageWidth'", "the image's width in pixels"),
                                image_shape)
    labels = np.zeros(shape, dtype=np.int64)
    skipped: list[str] = []
    for k, s in enumerate(shapes):
        label = _class_index(s.get("label", ""), classes, p)
        pts = _points(field(s, "points", list, p, f"shapes[{k}].points", "a list of [x, y] pairs", default=[]), p,
                      f"shapes[{k}].points")
        kind = field(s, "shape_type", (str, type(None)), p, f"shapes[{k}].shape_type",
                     "'polygon', 'rectangle', 'circle' or 'mask'", default=None) or "polygon"
        mask = field(s, "mask", (str, type(None)), p, f"shapes[{k}].mask", "a base64 PNG", default=None)
        if kind == "polygon" and len(pts) >= 3:
            unary.paint_polygon(labels, label, pts)
        elif kind == "rectangle" and len(pts) == 2:
            (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
            unary.paint_polygon(labels, label, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))
        elif kind == "circle" and len(pts) == 2:
            radius = float(np.hypot(*(pts[1] - pts[0])))
            t = np.linspace(0, 2 * np.pi, _CIRCLE_VERTICES, endpoint=False)
            unary.paint_polygon(labels, label, pts[0] + radius * np.stack([np.cos(t), np.sin(t)], 1))
        elif kind == "mask" and mask and len(pts) == 2:
            try:
                raw = base64.b64decode(mask, validate=True)
            except ValueError:
                raise InputError(f"{p}: shapes[{k}].mask is not base64; re-save the annotation.") from None
            bitmap = decode_embedded_image(raw, p, f"shapes[{k}].mask").astype(bool)
            if bitmap.ndim == 3:
                bitmap = bitmap.any(-1)
            _paint_bitmap(labels, label, bitmap, pts[0].astype(int))
        else:
            skipped.append(f"{kind} {s.get('label')!r}")
    if skipped:
        warnings.warn(f"{p}: skipped {len(skipped)} shapes that enclose no area ({', '.join(skipped[:5])}); draw "
                      f"them as polygons to use them.", stacklevel=4)
    return labels, len(classes)


def _paint_bitmap(labels: np.ndarray, label: int, bitmap: np.ndarray, origin: np.ndarray) -> None:
    """Set ``labels`` to ``label`` where ``bitmap`` (placed with its top-left pixel at ``origin`` = x, y) is true."""
    x0, y0 = int(origin[0]), int(origin[1])
    ys = slice(max(y0, 0), min(y0 + bitmap.shape[0], labels.shape[0]))
    xs = slice(max(x0, 0), min(x0 + bitmap.shape[1], labels.shape[1]))
    if ys.start < ys.stop and xs.start < xs.stop:
        inside = bitmap[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        labels[ys, xs][inside] = label


def _coco(data: dict, p: Path, classes: list[str] | None, num_classes: int | None,
          coco_image: int | str | None, image_shape: tuple[int, int] | None) -> tuple[np.ndarray, int]:
    images = field(data, "images", list, p, "'images'", "a list of {id, file_name, height, width} objects")
    annotations = field(data, "annotations", list, p, "'annotations'", "a list of annotation objects")
    for k, im in enumerate(images):
        field(images, k, dict, p, f"images[{k}]", "an object {id, file_name, height, width}")
    if not images:
        raise InputError(f"{p}: 'images' is empty; a COCO file lists the images its annotations are for.")
    if coco_image is None and len(images) != 1:
        shown = ", ".join(str(im.get("file_name")) for im in images[:5])
        raise InputError(f"{p} describes {len(images)} images ({shown}, …); pass coco_image= (CLI: --coco-image) "
                         f"with the image's id or file name.")
    chosen = [k for k, im in enumerate(images) if coco_image is None or str(im.get("id")) == str(coco_image)
              or Path(str(im.get("file_name", ""))).name == Path(str(coco_image)).name]
    if not chosen:
        raise InputError(f"{p} has no image with id or file name {coco_image!r}; check coco_image.")
    k = chosen[0]
    image = images[k]
    image_id = field(image, "id", (int, str), p, f"images[{k}].id", "the image's id")
    shape = check_declared_size(p, f"images[{k}].height/width",
                                field(image, "height", int, p, f"images[{k}].height", "the image's height in pixels"),
                                field(image, "width", int, p, f"images[{k}].width", "the image's width in pixels"),
                                image_shape)
    raw_categories = field(data, "categories", list, p, "'categories'", "a list of {id, name} objects", default=[])
    categories = []
    for c, cat in enumerate(raw_categories):
        field(raw_categories, c, dict, p, f"categories[{c}]", "an object {id, name}")
        categories.append((int_field(cat, "id", p, f"categories[{c}].id", "the category's integer id"),
                           field(cat, "name", str, p, f"categories[{c}].name", "the category's name")))
    categories.sort()
    if classes is None:
        index = {cid: i + 1 for i, (cid, _) in enumerate(categories)}
        n = len(categories) + 1
        log.info("%s: classes 0 = background, %s", p.name,
                 ", ".join(f"{i + 1} = {name}" for i, (_, name) in enumerate(categories)))
    else:
        index = {cid: _class_index(name, classes, p) for cid, name in categories}
        n = len(classes)
    if num_classes is not None and num_classes != n:
        raise InputError(f"{p} has {n} classes (background + {n - 1} categories) but num_classes={num_classes}; "
                         f"pass classes=[...] to map its categories onto your class list.")
    mine = []
    for a, ann in enumerate(annotations):
        field(annotations, a, dict, p, f"annotations[{a}]", "an annotation object")
        if ann.get("image_id") == image_id:
            area = field(ann, "area", (int, float), p, f"annotations[{a}].area", "the area in pixels", default=0)
            mine.append((-float(area), a, ann))
    labels = np.zeros(shape, dtype=np.int64)
    for _, a, ann in sorted(mine, key=lambda t: t[:2]):
        category = int_field(ann, "category_id", p, f"annotations[{a}].category_id", "a category id")
        if category not in index:
            raise InputError(f"{p}: annotations[{a}] (id {ann.get('id')}) has category_id {category}, which is not "
                             f"in its categories; fix the file.")
        seg = field(ann, "segmentation", (dict, list), p, f"annotations[{a}].segmentation",
                    "a list of polygons or an RLE object {size, counts}", default=[])
        if isinstance(seg, dict):
            labels[_decode_rle(seg, shape, p, f"annotations[{a}].segmentation")] = index[category]
        else:
            for q, flat in enumerate(seg):
                xy = _points(flat, p, f"annotations[{a}].segmentation[{q}]")
                if len(xy) >= 3:  # COCO vertices are pixel corners; pixel centres sit at +0.5
                    unary.paint_polygon(labels, index[category], xy - 0.5)
    return labels, n


def _decode_rle(rle: dict, shape: tuple[int, int], p: Path, where: str) -> np.ndarray:
    try:
        from pycocotools import mask as coco_mask
    except ImportError:
        raise InputError(f"{p} has RLE masks, which need pycocotools: pip install 'crf-studio[export]'.") from None
    size = field(rle, "size", list, p, f"{where}.size", "[height, width] of the image")
    if size != list(shape):
        raise InputError(f"{p}: {where}.size is {size} but its image is {list(shape)}; fix the file.")
    counts = field(rle, "counts", (list, str), p, f"{where}.counts", "RLE counts (a list of integers or a string)")
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts) \
                or sum(counts) != shape[0] * shape[1]:
            raise InputError(f"{p}: {where}.counts must be non-negative integers summing to height × width = "
                             f"{shape[0] * shape[1]}; fix the file.")
        rle = coco_mask.frPyObjects({"size": size, "counts": counts}, *shape)
    else:
        rle = {"size": size, "counts": counts.encode("ascii", "replace")}
    with warnings.catch_warnings():  # pycocotools' own NumPy 2 copy-keyword notice, not the caller's concern
        warnings.filterwarnings("ignore", message=r".*__array__ implementation", category=DeprecationWarning)
        try:
            decoded = coco_mask.decode(rle)
        except (ValueError, TypeError) as exc:
            raise InputError(f"{p}: {where} is not a valid compressed RLE ({exc}); fix the file.") from None
    if decoded.shape[:2] != tuple(shape):
        raise InputError(f"{p}: {where} decodes to {decoded.shape[:2]}, not {tuple(shape)}; fix the file.")
    return decoded.astype(bool)


def _fit(probs: np.ndarray, image_shape: tuple[int, int] | None, resize: bool, source: str) -> np.ndarray:
    if image_shape is None or tuple(probs.shape[-2:]) == tuple(image_shape):
        return probs
    (h, w), (ih, iw) = probs.shape[-2:], image_shape
    if h == iw and w == ih and h != w:
        raise InputError(f"{source} is {h}×{w} (H×W) but the image is {ih}×{iw}: transposed or rotated; was the "
                         f"image's EXIF orientation applied to one but not the other?")
    if not resize:
        raise InputError(f"{source} is {h}×{w} (H×W) but the image is {ih}×{iw}; pass resize=True (CLI: --resize) "
                         f"to scale a network's output to the image, or use the unary made for this image.")
    if abs((h / w) / (ih / iw) - 1) > ASPECT_TOLERANCE:
        raise InputError(f"{source} is {h}×{w} (H×W), another aspect ratio than the image's {ih}×{iw}; it is not a "
                         f"unary for this image, or it was cropped.")
    log.info("%s: resized %d×%d → %d×%d", Path(source).name, h, w, ih, iw)
    return unary.resize(probs, (ih, iw))
