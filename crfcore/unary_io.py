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
import io as _bytes_io
import json
import logging
import os
import re
import warnings
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image

from . import unary
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
        raise ValueError(f"{kind!r} is not a valid kind. Valid kinds are {', '.join(map(repr, KINDS))} and None.")
    confidence = unary.DEFAULT_CONFIDENCE if confidence is None else confidence
    if classes is not None:
        classes = list(classes)
        if num_classes is not None and num_classes != len(classes):
            raise ValueError(f"num_classes={num_classes} but {len(classes)} classes are named; pass one of them.")
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
            labels, n = _annotations(p, classes, num_classes, coco_image)
            if n < 2:
                raise ValueError(f"{p} defines {n} class; a CRF needs at least 2 (background + one category).")
            probs = unary.from_labels(labels, n, confidence=confidence, ignore_index=None, band=band)
        elif suffix in (".npy", ".npz", ".tif", ".tiff"):
            try:
                array, hint = _read_array(p)
            except (OSError, ValueError, zipfile.BadZipFile, tifffile.TiffFileError) as exc:
                raise ValueError(f"{p} could not be read as an array ({exc}); save it with np.save, np.savez or "
                                 f"tifffile.imwrite.") from None
            _check_layout(array, p, image_shape)
            probs = _from_array(array, p, kind or hint, num_classes, confidence, band, ignore_index)
        else:
            probs = _from_mask(load_mask(p), p, kind or "labels", num_classes, confidence, band, ignore_index)
    if num_classes is not None and probs.shape[0] != num_classes:
        raise ValueError(f"{source} holds {probs.shape[0]} classes but num_classes={num_classes}. Pass "
                         f"num_classes={probs.shape[0]} if that is right; if classes are missing from the file, add "
                         f"their channels (zeros for probabilities) at their indices.")
    return np.ascontiguousarray(_fit(probs, image_shape, resize, source), dtype=np.float32)


def _check_kind(kind: str | None, allowed: tuple[str, ...], what: str) -> None:
    if kind is not None and kind not in allowed:
        raise ValueError(f"kind={kind!r} does not apply to {what}; use {' or '.join(map(repr, allowed))} or None.")


def _natural(files: Iterable[Path]) -> list[Path]:
    return sorted(files, key=lambda q: [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", q.name)])


def _read_array(p: Path) -> tuple[np.ndarray, str | None]:
    """The array in a .npy, .npz or TIFF file, and the kind its .npz name implies (None: detect)."""
    suffix = p.suffix.lower()
    if suffix == ".npy":
        return np.load(p, allow_pickle=False), None
    if suffix == ".npz":
        with np.load(p, allow_pickle=False) as data:
            found = [k for k in _NPZ_KEYS if k in data.files]
            if found:
                return data[found[0]], _NPZ_KEYS[found[0]]
            arrays = [k for k in data.files if data[k].ndim >= 2]
            if len(arrays) != 1:
                raise ValueError(f"{p} holds arrays {data.files}; name the unary 'probs', 'logits' or 'labels'.")
            return data[arrays[0]], None
    with tifffile.TiffFile(p) as tif:
        series = tif.series[0]
        array = series.asarray()
        return (np.moveaxis(array, -1, 0) if series.axes.endswith("S") and array.ndim == 3 else array), None


def _check_layout(a: np.ndarray, p: Path, image_shape: tuple[int, int] | None) -> None:
    if (image_shape is not None and a.ndim == 3 and a.shape[:2] == tuple(image_shape)
            and a.shape[1:] != tuple(image_shape)):
        raise ValueError(f"{p} has shape {a.shape}, (H, W, C) for this {image_shape[0]}×{image_shape[1]} image; "
                         f"expected (C, H, W). Save np.moveaxis(a, -1, 0) instead.")


def _from_array(a: np.ndarray, p: Path, kind: str | None, num_classes: int | None, confidence: float,
                band: float | None, ignore_index: int) -> np.ndarray:
    if a.dtype.kind in "iub" and a.ndim == 2:
        return _from_mask(a.astype(np.int64), p, kind or "labels", num_classes, confidence, band, ignore_index)
    if a.dtype.kind != "f" or a.ndim != 3:
        raise ValueError(f"{p} holds a {a.dtype} array of shape {a.shape}; expected (C, H, W) float probabilities "
                         f"or logits, or (H, W) integer labels. For one foreground probability map p, save "
                         f"np.stack([1 - p, p]).")
    if kind in ("labels", "scribbles"):
        raise ValueError(f"{p} holds float data; kind={kind!r} needs an integer (H, W) mask.")
    return _from_float(a.astype(np.float32), str(p), kind)


def _from_float(a: np.ndarray, source: str, kind: str | None) -> np.ndarray:
    """``(C, H, W)`` float data → probabilities; ``kind`` None detects probabilities or logits and logs which."""
    bad = ~np.isfinite(a)
    if bad.any():
        raise ValueError(f"{source} has {int(bad.sum())} NaN or infinite values (first at class, y, x = "
                         f"{tuple(int(i) for i in np.argwhere(bad)[0])}); re-export it from a run without the failure "
                         f"(a NaN network output or a division by zero).")
    if a.shape[0] < 2:
        raise ValueError(f"{source} has {a.shape[0]} class; a CRF needs at least 2 (for a foreground probability p "
                         f"use np.stack([1 - p, p])).")
    sums = a.sum(0, dtype=np.float64)
    lo, hi, off = float(a.min()), float(a.max()), float(np.abs(sums - 1).max())
    if kind is None:
        if lo < 0 or hi > 1 + SUM_TOLERANCE:
            kind = "logits"
        elif off <= SUM_TOLERANCE:
            kind = "probs"
        else:
            raise ValueError(f"{source} has values in 0..1 but their sums over classes range {sums.min():.3g}.."
                             f"{sums.max():.3g}, so they are neither probabilities nor clearly logits. Pass "
                             f"kind='scores' to divide independent per-class scores by their sum, or kind='logits'.")
        log.info("%s: %s (values %.3g..%.3g)%s", Path(source).name, kind, lo, hi,
                 "; applying softmax" if kind == "logits" else "")
    if kind == "logits":
        return unary.from_logits(torch.from_numpy(a)).numpy()
    if lo < 0:
        raise ValueError(f"{source} has negative values (min {lo:.3g}); probabilities and scores are ≥ 0. If these "
                         f"are logits, pass kind='logits'.")
    if kind == "scores":
        empty = sums <= 0
        if empty.any():
            log.info("%s: %d pixels with all scores 0 set uniform", Path(source).name, int(empty.sum()))
        return np.where(empty, 1.0 / a.shape[0], a / np.where(empty, 1.0, sums)).astype(np.float32)
    if off > SUM_TOLERANCE:
        y, x = np.unravel_index(int(np.abs(sums - 1).argmax()), sums.shape)
        raise ValueError(f"{source}: probabilities sum to {sums[y, x]:.4g} over classes at (y, x) = ({y}, {x}), "
                         f"off by more than {SUM_TOLERANCE}. Pass kind='scores' to divide by the sum, or kind="
                         f"'logits' if they are scores for a softmax.")
    return a / sums.astype(np.float32)


def _class_maps(files: list[Path], kind: str | None, *, folder: Path | None = None) -> np.ndarray:
    where = folder if folder is not None else "the class-map list"
    if len(files) < 2:
        raise ValueError(f"{where} has {len(files)} PNG class map(s); one 8-bit grey PNG per class is needed, at "
                         f"least 2.")
    maps = []
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"class map {f} does not exist.")
        with Image.open(f) as im:
            if im.mode not in ("L", "I;16", "I;16B", "I;16L"):
                raise ValueError(f"{f} is a {im.mode} image; a class map is one grey channel (8 or 16 bit). Save "
                                 f"the class's probability times 255 as an 8-bit grey PNG.")
            a = np.array(im)
        maps.append(a.astype(np.float32) / (255.0 if im.mode == "L" else 65535.0))
        if maps[-1].shape != maps[0].shape:
            raise ValueError(f"{f} is {a.shape[0]}×{a.shape[1]} (H×W) but {files[0]} is "
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
        raise ValueError(f"{p} is an integer mask; kind={kind!r} needs float data. Use kind='labels' or "
                         f"'scribbles'.")
    known = labels[labels != ignore_index]
    if known.size and known.min() < 0:
        raise ValueError(f"{p} has negative labels (min {known.min()}); labels are class indices ≥ 0 and "
                         f"{ignore_index} (ignore_index) for void or unpainted pixels.")
    top = int(known.max()) if known.size else 0
    if num_classes is None:
        num_classes = max(2, top + 1)
        log.info("%s: %s with %d classes (largest label %d)", p.name, kind, num_classes, top)
    elif top >= num_classes:
        bad = np.unique(known[known >= num_classes])
        raise ValueError(f"{p} has labels {bad[:10].tolist()} ≥ num_classes={num_classes}; pass num_classes="
                         f"{int(bad.max()) + 1} if they are classes, or map them to {ignore_index} (ignore_index).")
    if kind == "scribbles":
        return unary.from_scribbles(labels, num_classes, unpainted=ignore_index)
    return unary.from_labels(labels, num_classes, confidence=confidence, ignore_index=ignore_index, band=band)


def _annotations(p: Path, classes: list[str] | None, num_classes: int | None,
                 coco_image: int | str | None) -> tuple[np.ndarray, int]:
    """``((H, W) int64 labels, C)`` from a COCO or labelme file; background 0 where no shape lies."""
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{p} is not valid JSON ({exc}); expected a COCO or labelme annotation file.") from None
    if isinstance(data, dict) and "shapes" in data:
        return _labelme(data, p, classes)
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        return _coco(data, p, classes, num_classes, coco_image)
    raise ValueError(f"{p} is neither a COCO file (keys 'images', 'annotations') nor a labelme file (key 'shapes').")


def _class_index(name: str, classes: list[str], p: Path) -> int:
    if name not in classes:
        raise ValueError(f"{p} has a shape labelled {name!r}, which is not in classes={classes}; add it to the list.")
    return classes.index(name)


def _labelme(data: dict, p: Path, classes: list[str] | None) -> tuple[np.ndarray, int]:
    names = sorted({s.get("label", "") for s in data["shapes"]})
    if classes is None:
        raise ValueError(f"{p} is a labelme file with labels {names}; pass classes=[...] (CLI: --classes), the class "
                         f"names in index order with the background first, e.g. {['background', *names]}.")
    shape = (int(data["imageHeight"]), int(data["imageWidth"]))
    labels = np.zeros(shape, dtype=np.int64)
    skipped: list[str] = []
    for s in data["shapes"]:
        label = _class_index(s.get("label", ""), classes, p)
        pts = np.asarray(s.get("points", []), dtype=np.float64).reshape(-1, 2)
        kind = s.get("shape_type") or "polygon"
        if kind == "polygon" and len(pts) >= 3:
            unary.paint_polygon(labels, label, pts)
        elif kind == "rectangle" and len(pts) == 2:
            (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
            unary.paint_polygon(labels, label, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))
        elif kind == "circle" and len(pts) == 2:
            radius = float(np.hypot(*(pts[1] - pts[0])))
            t = np.linspace(0, 2 * np.pi, _CIRCLE_VERTICES, endpoint=False)
            unary.paint_polygon(labels, label, pts[0] + radius * np.stack([np.cos(t), np.sin(t)], 1))
        elif kind == "mask" and s.get("mask") and len(pts) == 2:
            bitmap = np.array(Image.open(_bytes_io.BytesIO(base64.b64decode(s["mask"])))).astype(bool)
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
          coco_image: int | str | None) -> tuple[np.ndarray, int]:
    images = data["images"]
    if coco_image is None and len(images) != 1:
        shown = ", ".join(str(im.get("file_name")) for im in images[:5])
        raise ValueError(f"{p} describes {len(images)} images ({shown}, …); pass coco_image= (CLI: --coco-image) "
                         f"with the image's id or file name.")
    chosen = [im for im in images if coco_image is None or str(im.get("id")) == str(coco_image)
              or Path(str(im.get("file_name", ""))).name == Path(str(coco_image)).name]
    if not chosen:
        raise ValueError(f"{p} has no image with id or file name {coco_image!r}; check coco_image.")
    image = chosen[0]
    categories = sorted(data.get("categories", []), key=lambda c: c["id"])
    if classes is None:
        index = {c["id"]: i + 1 for i, c in enumerate(categories)}
        n = len(categories) + 1
        log.info("%s: classes 0 = background, %s", p.name,
                 ", ".join(f"{i + 1} = {c['name']}" for i, c in enumerate(categories)))
    else:
        index = {c["id"]: _class_index(c["name"], classes, p) for c in categories}
        n = len(classes)
    if num_classes is not None and num_classes != n:
        raise ValueError(f"{p} has {n} classes (background + {n - 1} categories) but num_classes={num_classes}; "
                         f"pass classes=[...] to map its categories onto your class list.")
    shape = (int(image["height"]), int(image["width"]))
    labels = np.zeros(shape, dtype=np.int64)
    anns = [a for a in data["annotations"] if a.get("image_id") == image.get("id")]
    for ann in sorted(anns, key=lambda a: -float(a.get("area", 0))):
        if ann["category_id"] not in index:
            raise ValueError(f"{p}: annotation {ann.get('id')} has category_id {ann['category_id']}, which is not in "
                             f"its categories; fix the file.")
        seg = ann.get("segmentation")
        if isinstance(seg, dict):
            labels[_decode_rle(seg, shape, p)] = index[ann["category_id"]]
        else:
            for flat in seg or []:
                if len(flat) >= 6:  # COCO vertices are pixel corners; pixel centres sit at +0.5
                    unary.paint_polygon(labels, index[ann["category_id"]], np.reshape(flat, (-1, 2)) - 0.5)
    return labels, n


def _decode_rle(rle: dict, shape: tuple[int, int], p: Path) -> np.ndarray:
    try:
        from pycocotools import mask as coco_mask
    except ImportError:
        raise ValueError(f"{p} has RLE masks, which need pycocotools: pip install 'crf-studio[export]'.") from None
    if tuple(rle.get("size", ())) != shape:
        raise ValueError(f"{p}: an RLE mask has size {rle.get('size')} but its image is {list(shape)}; fix the file.")
    if isinstance(rle.get("counts"), list):
        rle = coco_mask.frPyObjects(rle, *shape)
    with warnings.catch_warnings():  # pycocotools' own NumPy 2 copy-keyword notice, not the caller's concern
        warnings.filterwarnings("ignore", message=r".*__array__ implementation", category=DeprecationWarning)
        return coco_mask.decode(rle).astype(bool)


def _fit(probs: np.ndarray, image_shape: tuple[int, int] | None, resize: bool, source: str) -> np.ndarray:
    if image_shape is None or tuple(probs.shape[-2:]) == tuple(image_shape):
        return probs
    (h, w), (ih, iw) = probs.shape[-2:], image_shape
    if h == iw and w == ih and h != w:
        raise ValueError(f"{source} is {h}×{w} (H×W) but the image is {ih}×{iw}: transposed or rotated; was the "
                         f"image's EXIF orientation applied to one but not the other?")
    if not resize:
        raise ValueError(f"{source} is {h}×{w} (H×W) but the image is {ih}×{iw}; pass resize=True (CLI: --resize) "
                         f"to scale a network's output to the image, or use the unary made for this image.")
    if abs((h / w) / (ih / iw) - 1) > ASPECT_TOLERANCE:
        raise ValueError(f"{source} is {h}×{w} (H×W), another aspect ratio than the image's {ih}×{iw}; it is not a "
                         f"unary for this image, or it was cropped.")
    log.info("%s: resized %d×%d → %d×%d", Path(source).name, h, w, ih, iw)
    return unary.resize(probs, (ih, iw))
