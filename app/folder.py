"""The folder conventions of ``crf-studio FOLDER``: which files are images, masks, probability maps and class names.

Two layouts are recognised (README "Opening a folder"):

- flat: ``<stem>.png|jpg|tif|…`` images (``crfcore.io.IMAGE_SUFFIXES``), ``<stem>_mask.png`` index masks and
  ``<stem>_probs.npy|npz`` probability maps ``(C, H, W)`` beside them;
- split: images in ``images/``, masks as ``masks/<stem>.png``, probability maps as ``probs/<stem>.npy|npz`` (or
  ``<stem>_probs.npy|npz`` beside the image). Masks may use any image suffix, as in ``crfcore.io.find_pairs``.

Either layout may hold ground-truth masks for fine-tuning (the Fine-tune dialog): ``<stem>_gt.png`` beside the image,
or ``gt/<stem>.png``. Files named ``*_mask.*`` or ``*_gt.*`` are never taken for images.

``classes.json`` in the folder is optional: ``{"names": ["background", "cat"]}`` for every image, or
``{"<stem>": [...], ...}`` per image. Either form may add ``"void": 11``: the mask label of unannotated pixels
(default 255, VOC's), which the unary, refinement, fine-tuning and export treat as "no label" and never as a class;
it must lie outside the named classes (CamVid: 11 names, ``"void": 11``). No Qt here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from crfcore.io import IMAGE_SUFFIXES
from crfcore.labels import VOID  # the default void label; classes.json's "void" overrides it

__all__ = ["IMAGE_SUFFIXES", "PROBS_SUFFIXES", "VOID", "ImageEntry", "ImageFolder", "scan_folder", "read_classes",
           "read_void"]

PROBS_SUFFIXES = (".npy", ".npz")
MASK_TAG = "_mask"
PROBS_TAG = "_probs"
TRUTH_TAG = "_gt"
CLASSES_FILE = "classes.json"


@dataclass(frozen=True)
class ImageEntry:
    """One image of a folder and the unary sources found for it.

    Attributes:
        stem: file name without suffix, the key shared by the image and its sources.
        image: path of the RGB (or grey/RGBA, converted on load) image.
        mask: path of an index mask (one class index per pixel, ``void`` = unannotated), or None.
        probs: path of a ``(C, H, W)`` probability map (``.npy``, or ``.npz`` with one array), or None.
        class_names: names of classes 0..C-1 from ``classes.json``, or None.
        truth: path of a ground-truth index mask (255 = void) for fine-tuning, or None.
        void: the mask label of unannotated pixels (``classes.json``'s ``"void"``, default 255).
    """

    stem: str
    image: Path
    mask: Path | None = None
    probs: Path | None = None
    class_names: tuple[str, ...] | None = None
    truth: Path | None = None
    void: int = VOID


@dataclass(frozen=True)
class ImageFolder:
    """The images of a folder, sorted by stem, and the mask label of unannotated pixels (``void``)."""

    root: Path
    entries: tuple[ImageEntry, ...]
    void: int = VOID

    def __len__(self) -> int:
        return len(self.entries)


def _first_existing(*candidates: Path) -> Path | None:
    return next((c for c in candidates if c.is_file()), None)


def _masks(directory: Path, name: str) -> list[Path]:
    return [directory / f"{name}{s}" for s in IMAGE_SUFFIXES]


def _probs_beside(directory: Path, stem: str) -> list[Path]:
    return [directory / f"{stem}{PROBS_TAG}{s}" for s in PROBS_SUFFIXES]


_FORMS = '{"names": ["background", "cat"]} or {"<image stem>": ["background", "cat"], ...}, either with an ' \
         'optional "void": 255'


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); expected {_FORMS}.") from None


def read_void(path: str | os.PathLike) -> int:
    """The void label of a ``classes.json`` (its ``"void"`` entry), :data:`VOID` when it has none.

    Raises:
        ValueError: ``"void"`` is not an integer label in 0..65535 (masks are 8- or 16-bit).
    """
    path = Path(path)
    data = _read_json(path)
    value = data.get("void", VOID) if isinstance(data, dict) else VOID
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError(f'{path}: "void" must be a mask label in 0..65535 (e.g. 11 for CamVid), got {value!r}.')
    return value


def read_classes(path: str | os.PathLike) -> dict[str, tuple[str, ...]] | tuple[str, ...]:
    """Class names from a ``classes.json``: a tuple for ``{"names": [...]}``, a dict of tuples for ``{stem: [...]}``
    (a ``"void"`` entry is not a class: see :func:`read_void`).

    Raises:
        ValueError: the file is not JSON of either form; the message names the file and both forms.
    """
    path = Path(path)
    forms = _FORMS
    data = _read_json(path)

    def names(value: object, where: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{path}: {where} must be a non-empty list of class names, got {value!r}; "
                             f"expected {forms}.")
        return tuple(value)

    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}; expected {forms}.")
    if "names" in data:
        return names(data["names"], '"names"')
    return {stem: names(value, repr(stem)) for stem, value in data.items() if stem != "void"}


def scan_folder(path: str | os.PathLike) -> ImageFolder:
    """Find the images of ``path`` and, for each, its mask, probability map and class names.

    Images without a mask or probability map are kept (a unary file can be chosen in the app); files named
    ``*_mask.*`` are never taken for images.

    Raises:
        FileNotFoundError: ``path`` is not a folder.
        ValueError: the folder holds no image, or ``classes.json`` is malformed (or its void is a named class).
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; pass a folder of images with masks or probability maps "
                                f"beside them (e.g. resources/samples).")
    split = (root / "images").is_dir()
    image_dir = root / "images" if split else root
    images = sorted((p for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                     and not p.stem.endswith((MASK_TAG, TRUTH_TAG))), key=lambda p: p.stem)
    if not images:
        raise ValueError(f"{image_dir} holds no image ({', '.join(IMAGE_SUFFIXES)}); see the folder conventions in "
                         f"the README.")
    classes_path = root / CLASSES_FILE
    classes = read_classes(classes_path) if classes_path.is_file() else None
    void = read_void(classes_path) if classes_path.is_file() else VOID
    named = [classes] if isinstance(classes, tuple) else list((classes or {}).values())
    if any(void < len(n) for n in named):
        raise ValueError(f'{classes_path}: "void" is {void} but the names list {max(map(len, named))} classes, so '
                         f'label {void} would be both a class and unannotated; list only the classes (labels '
                         f'0..{void - 1}) or set "void" to a label past them.')
    entries = []
    for image in images:
        stem = image.stem
        if split:
            mask = _first_existing(*_masks(root / "masks", stem), *_masks(image_dir, f"{stem}{MASK_TAG}"))
            probs = _first_existing(*[root / "probs" / f"{stem}{s}" for s in PROBS_SUFFIXES],
                                    *_probs_beside(image_dir, stem))
        else:
            mask = _first_existing(*_masks(image_dir, f"{stem}{MASK_TAG}"))
            probs = _first_existing(*_probs_beside(image_dir, stem))
        truth = _first_existing(*_masks(root / "gt", stem), *_masks(image_dir, f"{stem}{TRUTH_TAG}"))
        names = classes.get(stem) if isinstance(classes, dict) else classes
        entries.append(ImageEntry(stem, image, mask, probs, names, truth, void))
    return ImageFolder(root, tuple(entries), void)

