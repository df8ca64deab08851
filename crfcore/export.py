"""Export label masks for training tools: VOC palette PNG, index PNG (8/16-bit), COCO RLE, YOLO-seg, binary PNGs.

A mask is an ``(H, W)`` integer class map. Which labels are classes is set by a :class:`ClassTable`: names by label,
a ``background`` label and a ``void`` label, neither of which is exported as a class by the object formats (COCO,
YOLO, binary). Without names, the labels found in the masks (other than void) are the classes, label k named
``class_<k>``: sparse 16-bit labels {0, 256, 1000} export as those classes only.

=========  ======================================  ==========================================================
format     written                                 notes
=========  ======================================  ==========================================================
voc        ``OUT/<stem>.png`` palette PNG          PASCAL VOC colours (``io.voc_palette``); pixel index = label
index      ``OUT/<stem>.png`` 8-bit grey           pixel value = label; labels above 255 need ``index16``
index16    ``OUT/<stem>.png`` 16-bit grey          pixel value = label, 0..65535
coco       ``OUT/annotations.json``                one annotation per 8-connected region of a class (an
                                                   "instance"), compressed RLE, ``iscrowd`` 0; category id =
                                                   label; image ``file_name`` = the mask's (or, from a
                                                   project, the image's) file name
yolo       ``OUT/<stem>.txt``, ``classes.txt``     one line per 8-connected region: YOLO id, then x y pairs
                                                   normalised to 0..1 (``x = column / W`` with pixel k spanning
                                                   [k, k+1], as COCO polygons divided by the size); YOLO id k
                                                   = the k-th exported label, named on line k of classes.txt
binary     ``OUT/<class name>/<stem>.png``         0/255 8-bit PNG per exported class and mask
=========  ======================================  ==========================================================

COCO instances are a guess, since a semantic mask has none: touching objects of one class become one annotation,
and an object split by an occluder becomes two. YOLO-seg holds one polygon per line and no holes: a region's holes
are joined to its outline by zero-width cuts (the way Ultralytics merges multi-part COCO segments), so fillers
that use the even-odd rule (``cv2.fillPoly``, ``skimage.draw.polygon``) give the holes back; tools that keep only
the outline fill them. Pixels on a cut may flip, and polygons are simplified only when ``tolerance`` > 0.
Background and void cannot be told apart in COCO, YOLO or binary files: the importers give uncovered pixels the
background label (the void label when there is no background class).

Every file is written atomically (``crfcore.io.atomic_write``). ``read_*`` functions import each format back.
"""

from __future__ import annotations

import json
import logging
import os
import re
import unicodedata
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import io
from .errors import InputError
from .labels import VOID
from .polygons import fill_polygon, outlines, signed_area

__all__ = ["FORMATS", "ClassTable", "load_classes", "export_masks", "coco_annotations", "yolo_lines",
           "read_coco", "read_yolo", "read_binary"]

log = logging.getLogger(__name__)

FORMATS = ("voc", "index", "index16", "coco", "yolo", "binary")
_UNSAFE = re.compile(r"[^\w.\- ]")
_BREAKS = ("Cc", "Zl", "Zp")  # Unicode categories that break a line or control a terminal


@dataclass(frozen=True)
class ClassTable:
    """Class names by label and the two labels that are not classes.

    Attributes:
        names: ``names[k]`` names label k; labels ``0..len(names)-1`` are the classes (empty: see the module doc).
            A name is one line of printable text (it becomes a line of YOLO's classes.txt and a folder name).
        background: the label of unannotated pixels (not exported as a class), or None when every label is a class.
        void: the "ignore" label (never exported), or None.
        only: the labels to export, or None for every named one; set when the classes come from the labels found
            in the masks, so that sparse labels (16-bit masks with labels {0, 256, 1000}) export as three classes,
            not as every label up to the largest.

    Raises:
        InputError: a name that is not a string, is empty, or holds a line break or another control character.
    """

    names: tuple[str, ...] = ()
    background: int | None = 0
    void: int | None = VOID
    only: frozenset[int] | None = None

    def __post_init__(self) -> None:
        for k, name in enumerate(self.names):
            if (not isinstance(name, str) or not name.strip()
                    or any(unicodedata.category(c) in _BREAKS for c in name)):
                raise InputError(f"class {k} has name {name!r}; a class name is one line of printable text (no line "
                                 f"breaks, tabs or control characters), since it becomes a line of YOLO's "
                                 f"classes.txt and a folder name. Rename it.")

    def exported(self) -> list[int]:
        """The labels exported as classes by COCO, YOLO and binary, ascending; YOLO id k is entry k."""
        return [k for k in range(len(self.names)) if k not in (self.background, self.void)
                and (self.only is None or k in self.only)]

    def fill(self) -> int:
        """The label importers give to pixels no class covers: background, else void, else 0."""
        return next((v for v in (self.background, self.void) if v is not None), 0)


def load_classes(path: str | os.PathLike) -> ClassTable:
    """Read ``classes.json``: a list of names by label, or ``{"classes": [...], "background": 0, "void": 255}``
    (``background``/``void`` optional, null for none)."""
    from .files import read_json

    p = Path(path)
    data = read_json(p, "classes file",
                     '["background", "horse"] or {"classes": [...], "background": 0, "void": 255}')
    if isinstance(data, list):
        data = {"classes": data}
    names = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise InputError(f"{p} must hold a list of non-empty class names, or {{\"classes\": [...], \"background\": "
                         f"0, \"void\": 255}}; got {str(data)[:80]}.")
    extra = {k: data[k] for k in ("background", "void") if k in data}
    for key, value in extra.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise InputError(f"{p}: {key} must be a label ≥ 0 or null, got {value!r}.")
    try:
        return ClassTable(tuple(names), **extra)
    except InputError as exc:
        raise InputError(f"{p}: {exc}") from None


@dataclass(frozen=True)
class _Item:
    stem: str
    file_name: str
    load: Callable[[], np.ndarray]


def _items(source: str | os.PathLike) -> tuple[list[_Item], list[str]]:
    """The masks of a folder (or a project's latest masks) and the project's class names."""
    from .project import CATALOG_DIR, Project

    root = Path(source)
    if not root.is_dir():
        raise FileNotFoundError(f"masks folder {root} does not exist or is not a folder.")
    if (root / CATALOG_DIR / "catalog.sqlite").is_file():
        with Project.open(root) as project:
            found = [(r, project.latest_revision(r.id)) for r in project.images()]
            names = project.classes
        items = [_Item(r.path.stem, r.path.name, lambda f=rev.file: io.load_mask(f)) for r, rev in found if rev]
    else:
        files = sorted(f for f in root.iterdir() if f.is_file() and not f.name.startswith(".")
                       and f.suffix.lower() in io.IMAGE_SUFFIXES)
        items, names = [_Item(f.stem, f.name, lambda f=f: io.load_mask(f)) for f in files], []
    if not items:
        raise InputError(f"{root} holds no masks (image files, or a project with saved masks) to export.")
    stems: dict[str, str] = {}
    for item in items:
        if item.stem in stems:
            raise InputError(f"{root}: {stems[item.stem]} and {item.file_name} would both be exported as "
                             f"{item.stem!r}; rename one.")
        stems[item.stem] = item.file_name
    return items, names


def _check_labels(labels: np.ndarray, table: ClassTable, name: str) -> None:
    high = int(labels[labels != table.void].max(initial=0))
    if high >= len(table.names):
        raise InputError(f"{name} has label {high}, but the class table names {len(table.names)} classes; add names "
                         f"up to label {high} to classes.json, or set void= if {high} is not a class.")


def export_masks(source: str | os.PathLike, out: str | os.PathLike, fmt: str, *, classes: ClassTable | None = None,
                 tolerance: float = 0.0, on_item: Callable[[int, int, str], None] | None = None) -> list[Path]:
    """Export every mask of ``source`` to ``out`` in format ``fmt`` (see the module table).

    Args:
        source: a folder of mask images, or a project folder (its images' latest masks, its class names).
        out: output folder, created if missing.
        fmt: one of :data:`FORMATS`.
        classes: the class table (default ``ClassTable()``); without names, a project's names are used, else
            ``class_<k>`` for labels up to the largest non-void one.
        tolerance: YOLO polygon simplification, pixels ≥ 0 (Douglas–Peucker; 0 keeps the exact pixel outline).
        on_item: ``on_item(done, total, stem)`` after each mask.

    Returns:
        The files written.

    Raises:
        FileNotFoundError: no ``source`` folder. ValueError: unknown format, ``out`` is ``source``, two masks with
        one stem, labels the class table does not name (object formats), labels too large for the format.
    """
    if fmt not in FORMATS:
        raise InputError(f"{fmt!r} is not a valid format. Valid formats are {', '.join(map(repr, FORMATS))}.")
    if not tolerance >= 0:
        raise InputError(f"tolerance must be ≥ 0 pixels, got {tolerance}.")
    target = Path(out)
    if target.exists() and target.resolve() == Path(source).resolve():
        raise InputError(f"output folder {target} is the masks folder; exports would overwrite the masks. Pick "
                         f"another -o.")
    items, names = _items(source)
    table = classes if classes is not None else ClassTable()
    if not table.names and names:
        table = ClassTable(tuple(names), table.background, table.void)
    if not table.names:
        present: set[int] = set()
        for item in items:
            labels = item.load()
            present.update(np.unique(labels[labels != table.void]).tolist())
        top = max(present, default=0)
        table = ClassTable(tuple(f"class_{k}" for k in range(top + 1)), table.background, table.void,
                           frozenset(present))
    target.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, item in enumerate(items, start=1):
        labels = item.load()
        if fmt in ("coco", "yolo", "binary"):
            _check_labels(labels, table, item.file_name)
        if fmt in ("voc", "index", "index16"):
            written.append(_write_index(target / f"{item.stem}.png", labels, fmt))
        elif fmt == "coco":
            images.append({"id": image_id, "file_name": item.file_name, "height": labels.shape[0],
                           "width": labels.shape[1]})
            annotations += coco_annotations(labels, table, image_id=image_id, first_id=len(annotations) + 1)
        elif fmt == "yolo":
            text = "".join(line + "\n" for line in yolo_lines(labels, table, tolerance=tolerance))
            written.append(_write_text(target / f"{item.stem}.txt", text))
        else:
            for label in table.exported():
                written.append(_write_png(target / _folder_name(table, label) / f"{item.stem}.png",
                                          np.where(labels == label, 255, 0).astype(np.uint8)))
        if on_item is not None:
            on_item(image_id, len(items), item.stem)
    if fmt == "coco":
        categories = [{"id": k, "name": table.names[k], "supercategory": ""} for k in table.exported()]
        doc = {"info": {"description": "exported by CRF Studio (crfcore.export)"}, "images": images,
               "annotations": annotations, "categories": categories}
        written.append(_write_text(target / "annotations.json", json.dumps(doc)))
    elif fmt == "yolo":
        written.append(_write_text(target / "classes.txt", "".join(table.names[k] + "\n" for k in table.exported())))
    return written


def _write_text(path: Path, text: str) -> Path:
    with io.atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with io.atomic_write(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
    return path


def _write_index(path: Path, labels: np.ndarray, fmt: str) -> Path:
    high = int(labels.max(initial=0))
    if fmt != "index16" and high > 255:
        raise InputError(f"{path.stem} has label {high}, over the 255 an 8-bit {fmt} PNG holds; use --format "
                         f"index16.")
    if fmt == "voc":
        io.save_mask(path, labels, palette=io.voc_palette())
    elif fmt == "index":
        io.save_mask(path, labels)
    else:
        if high > 65535:
            raise InputError(f"{path.stem} has label {high}, over the 65535 a 16-bit PNG holds; remap the labels.")
        _write_png(path, labels.astype(np.uint16))
    return path


def _folder_name(table: ClassTable, label: int) -> str:
    name = _UNSAFE.sub("_", table.names[label]).strip(" .") or f"class_{label}"
    clash = [k for k in table.exported() if k < label and _UNSAFE.sub("_", table.names[k]).strip(" .") == name]
    return f"{label}_{name}" if clash else name


def _regions(labels: np.ndarray, table: ClassTable) -> Iterator[tuple[int, Any]]:
    """``(label, region)`` for every 8-connected region of every exported class (skimage regionprops)."""
    from skimage.measure import label as connected, regionprops

    present = set(np.unique(labels).tolist())
    for cls in table.exported():
        if cls in present:
            for region in regionprops(connected(labels == cls, connectivity=2)):
                yield cls, region


def coco_annotations(labels: np.ndarray, table: ClassTable, *, image_id: int, first_id: int = 1) -> list[dict]:
    """COCO annotations of one mask: one compressed-RLE annotation per 8-connected region of an exported class."""
    coco_mask = _pycocotools()
    anns = []
    for cls, region in _regions(labels, table):
        binary = np.zeros(labels.shape, np.uint8, order="F")
        (top, left, bottom, right), local = region.bbox, region.image
        binary[top:bottom, left:right] = local
        rle = coco_mask.encode(binary)
        anns.append({"id": first_id + len(anns), "image_id": image_id, "category_id": cls,
                     "segmentation": {"size": list(labels.shape), "counts": rle["counts"].decode("ascii")},
                     "area": int(local.sum()), "bbox": [left, top, right - left, bottom - top], "iscrowd": 0})
    return anns


def _pycocotools() -> Any:
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            from pycocotools import mask as coco_mask
    except ImportError:
        raise ImportError("COCO RLE needs pycocotools: pip install 'crf-studio[export]'.") from None
    return coco_mask


def yolo_lines(labels: np.ndarray, table: ClassTable, *, tolerance: float = 0.0) -> list[str]:
    """YOLO-seg lines of one mask: ``id x1 y1 x2 y2 ...`` per 8-connected region, coordinates normalised 0..1."""
    height, width = labels.shape
    ids = {label: k for k, label in enumerate(table.exported())}
    lines = []
    for cls, region in _regions(labels, table):
        contours = [_simplify(c, tolerance) for c in outlines(region.image)]  # one outer contour, one per hole
        contours.sort(key=lambda rc: -abs(signed_area(rc)))
        rows_cols = _bridge(contours[0], contours[1:])
        top, left = region.bbox[0], region.bbox[1]
        x = (rows_cols[:, 1] + left + 0.5) / width  # pixel centres at k + 0.5, image edges at 0 and 1
        y = (rows_cols[:, 0] + top + 0.5) / height
        lines.append(f"{ids[cls]} " + " ".join(f"{a:.6f} {b:.6f}" for a, b in zip(x, y)))
    return lines


def _simplify(closed: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas–Peucker on a closed contour (first vertex repeated last); vertices once each, at least 3."""
    from skimage.measure import approximate_polygon

    simple = approximate_polygon(closed, tolerance)[:-1]
    return simple if len(simple) >= 3 else closed[:-1]


def _bridge(outer: np.ndarray, holes: Sequence[np.ndarray]) -> np.ndarray:
    """One vertex ring: each hole spliced into the outline at its nearest vertex pair by a zero-width cut."""
    from scipy.spatial import cKDTree

    ring, tree = outer, cKDTree(outer)
    for hole in sorted(holes, key=lambda h: tree.query(h)[0].min()):
        dist, nearest = cKDTree(ring).query(hole)
        j = int(np.argmin(dist))
        i = int(nearest[j])
        ring = np.concatenate([ring[:i + 1], hole[j:], hole[:j + 1], ring[i:]])
    return ring


def read_coco(path: str | os.PathLike, table: ClassTable = ClassTable()) -> dict[str, np.ndarray]:
    """Masks from a COCO file with RLE or polygon segmentations: ``{file_name: (H, W) int64 labels}``.

    Category ids are labels; pixels no annotation covers get ``table.fill()``; later annotations paint over earlier.
    """
    coco_mask = _pycocotools()
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    out = {im["file_name"]: np.full((im["height"], im["width"]), table.fill(), np.int64) for im in data["images"]}
    names = {im["id"]: im["file_name"] for im in data["images"]}
    for ann in data["annotations"]:
        labels, seg = out[names[ann["image_id"]]], ann["segmentation"]
        if isinstance(seg, dict):
            rle = dict(seg, counts=seg["counts"].encode("ascii")) if isinstance(seg["counts"], str) else \
                coco_mask.frPyObjects(seg, *labels.shape)
            with warnings.catch_warnings():  # pycocotools' own NumPy 2 copy-keyword notice
                warnings.filterwarnings("ignore", message=r".*__array__ implementation", category=DeprecationWarning)
                labels[coco_mask.decode(rle).astype(bool)] = ann["category_id"]
        else:
            for flat in seg:
                labels[fill_polygon(np.reshape(flat, (-1, 2)) - 0.5, labels.shape)] = ann["category_id"]
    return out


def read_yolo(path: str | os.PathLike, shape: tuple[int, int], table: ClassTable) -> np.ndarray:
    """The ``(H, W)`` int64 mask of a YOLO-seg label file for an image of ``shape``; uncovered pixels get
    ``table.fill()``; polygons are filled by the even-odd rule, in file order."""
    labels = np.full(shape, table.fill(), np.int64)
    exported = table.exported()
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 7 or len(fields) % 2 == 0 or not fields[0].isdigit() or int(fields[0]) >= len(exported):
            raise InputError(f"{path}:{number} is not a YOLO-seg line for {len(exported)} classes (id x y x y x y "
                             f"...); check the file and the class table.")
        xy = np.asarray(fields[1:], np.float64).reshape(-1, 2) * (shape[1], shape[0]) - 0.5
        labels[fill_polygon(xy, shape)] = exported[int(fields[0])]
    return labels


def read_binary(folder: str | os.PathLike, stem: str, table: ClassTable) -> np.ndarray:
    """The ``(H, W)`` int64 mask of ``stem`` from a binary export in ``folder``; unclaimed pixels get
    ``table.fill()``."""
    labels: np.ndarray | None = None
    for label in table.exported():
        on = io.load_mask(Path(folder) / _folder_name(table, label) / f"{stem}.png") > 0
        labels = np.full(on.shape, table.fill(), np.int64) if labels is None else labels
        labels[on] = label
    if labels is None:
        raise InputError("the class table exports no classes; nothing to read.")
    return labels
