"""The per-image work of a batch: tasks found in a folder, the picklable spec every worker builds its refiner from,
and :func:`refine_file`, a pure function of (task, refiner) that never raises for a bad input.

A label-mask image goes through :func:`crfcore.refine_mask` (colour models learned from the mask, roughness-aware),
as ``crfcore refine IMAGE MASK`` does; with an outline band (``RefineSpec.band``: ``--band`` or the preset's
``"unary"`` entry) a mask becomes the plain band unary of :func:`crfcore.unary.from_labels` instead. Probabilities,
logits and annotation files go through :func:`crfcore.refine`.

Nothing here knows how tasks are scheduled: :mod:`crfcore.batch.engine` chooses an engine
(:mod:`~crfcore.batch.local`, :mod:`~crfcore.batch.ray`) and runs the tasks whose output is missing or damaged.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .. import io
from .. import params as P
from ..errors import InputError

__all__ = ["Task", "RefineSpec", "Outcome", "Refiner", "UNARY_SUFFIXES", "DEFAULT_VOID", "find_tasks",
           "is_mask_file", "refine_file", "output_ok", "quiet_per_image_logs"]

log = logging.getLogger(__name__)

UNARY_SUFFIXES = io.IMAGE_SUFFIXES + (".npy", ".npz", ".json")
"""Suffixes a unary file may have (masks, probability arrays, annotation JSON); a folder of class maps also counts."""

DEFAULT_VOID = 255
"""The mask label of unannotated pixels unless ``--void`` says otherwise (PASCAL VOC's convention)."""


@dataclass(frozen=True)
class Task:
    """One image to refine. ``problem`` is set when it is known to fail before running (no unary, ...)."""

    image: Path
    unary: Path | None
    out: Path
    problem: str | None = None


@dataclass(frozen=True)
class RefineSpec:
    """What every worker builds its :class:`Refiner` from (picklable).

    Attributes:
        method: refiner name ("convcrf", "densecrf", "gaussian", "piecewise").
        params: that refiner's params dataclass (``crfcore.params``), or None: ``preset`` when given, else the
            method's defaults for probability unaries and its shipped ``rough_annotation`` preset for masks.
        device: "cpu" or "cuda".
        num_classes: C of every unary; None takes it from each file.
        confidence: probability of a mask's label in its unary, (1/C, 1]; None for the preset's (or the default).
        band: uncertain band along a mask's outlines in pixels (``crfcore.unary.from_labels``) at the reference
            size when ``scale`` is "auto" (scaled with each image, as the spatial params are); None: masks go
            through :func:`crfcore.refine_mask`.
        threads: torch threads per worker (set in the calling process too when it runs the tasks itself); None
            leaves torch's default (pool workers then use 1).
        resize: scale a unary of the image's aspect ratio but another size (a network's output) to the image.
        void: the mask label of unannotated pixels (uniform in the unary; ``crfcore batch --void``).
        scale: how spatial parameters follow each image's size, as in :func:`crfcore.refine` ("auto" or a number).
        preset: a preset file (not with ``params``): its refiner parameters, and for masks its ``"unary"`` settings
            (:class:`crfcore.params.UnaryParams`) as :func:`crfcore.refine_mask` reads them.
        overrides: ``(name, value)`` pairs of refiner parameters applied over ``params`` / ``preset`` (the CLI's
            parameter flags).
        roughness: masks: :func:`crfcore.refine_mask`'s ``roughness``, ``"auto"`` or pixels > 0 (at the reference
            size under ``scale="auto"``).
    """

    method: str = "convcrf"
    params: Any = None
    device: str = "cpu"
    num_classes: int | None = None
    confidence: float | None = None
    band: float | None = None
    threads: int | None = None
    resize: bool = False
    void: int = DEFAULT_VOID
    scale: str | float = "auto"
    preset: str | None = None
    overrides: tuple[tuple[str, Any], ...] = ()
    roughness: float | str = "auto"


@dataclass(frozen=True)
class Outcome:
    """The result of one task: ``status`` "done", "skipped" (output existed) or "failed" (``error`` says why)."""

    task: Task
    status: Literal["done", "skipped", "failed"]
    error: str = ""
    seconds: float = 0.0


class Refiner:
    """The per-worker state: parameters resolved (a preset read) once, torch threads set, device checked.

    Calling it refines one image's probabilities with :func:`crfcore.refine`; :meth:`refine_mask` refines a label
    mask with :func:`crfcore.refine_mask`. Both return ``(H, W)`` int64 labels.
    """

    def __init__(self, spec: RefineSpec) -> None:
        import torch

        from ..api import resolve_params
        from ..checks import as_device
        from ..mask_refine import resolve_settings

        if spec.device not in ("cpu", "cuda"):
            raise InputError(f"device must be 'cpu' or 'cuda', got {spec.device!r}.")
        if spec.params is not None and spec.preset is not None:
            raise InputError(f"RefineSpec got both params ({type(spec.params).__name__}) and preset {spec.preset}; "
                             f"give one.")
        _check_roughness(spec.roughness)
        as_device(spec.device)
        if spec.threads is not None:
            torch.set_num_threads(spec.threads)
        P.scale_factor(1, 1, spec.scale)  # a bad scale fails here, before any image
        self.spec = spec
        source = spec.params if spec.params is not None else spec.preset
        overrides = dict(spec.overrides)
        self.params = resolve_params(spec.method, source, **overrides)
        if spec.confidence is not None:
            overrides["confidence"] = spec.confidence
        self.mask_params, self.mask_settings = resolve_settings(spec.method, source, "rough_annotation",
                                                                **overrides)

    def __call__(self, image: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """``image`` (H, W, 3) uint8, ``probs`` (C, H, W) float32 → ``(H, W)`` int64 labels."""
        from ..api import refine

        return refine(image, probs, self.spec.method, params=self.params, device=self.spec.device,
                      scale=self.spec.scale).labels

    def refine_mask(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``image`` (H, W, 3) uint8, ``mask`` (H, W) int labels (``spec.void`` unannotated) → ``(H, W)`` int64
        labels of :func:`crfcore.refine_mask` with the spec's preset, unary settings and roughness."""
        from ..mask_refine import refine_mask

        spec = self.spec
        return refine_mask(image, mask, num_classes=spec.num_classes, method=spec.method, params=self.mask_params,
                           roughness=spec.roughness, void=None if spec.void < 0 else spec.void, device=spec.device,
                           scale=spec.scale, **dataclasses.asdict(self.mask_settings)).labels


def _check_roughness(roughness: float | str) -> None:
    if roughness == "auto":
        return
    if isinstance(roughness, bool) or not isinstance(roughness, (int, float)) or not np.isfinite(roughness) \
            or roughness <= 0:
        raise InputError(f"roughness must be 'auto' or a number of pixels > 0, got {roughness!r}.")


_ARRAY_SUFFIXES = (".npy", ".npz", ".tif", ".tiff", ".json")


def is_mask_file(path: Path) -> bool:
    """True for a label-mask image (PNG, BMP, ...), which :func:`refine_file` refines with
    :func:`crfcore.refine_mask`; False for probability arrays, TIFF stacks, annotation JSON and class-map folders."""
    return path.is_file() and path.suffix.lower() not in _ARRAY_SUFFIXES


def _fit_mask(mask: np.ndarray, image_shape: tuple[int, int], resize: bool, source: Path) -> np.ndarray:
    """The mask at the image's size: as is, or nearest-neighbour resampled with ``resize`` (same aspect ratio)."""
    (h, w), (ih, iw) = mask.shape, image_shape
    if (h, w) == (ih, iw):
        return mask
    if not resize:
        raise InputError(f"{source} is {h}×{w} (H×W) but the image is {ih}×{iw}; pass --resize to scale it to the "
                         f"image, or use the mask made for this image.")
    if abs((h / w) / (ih / iw) - 1) > 0.02:
        raise InputError(f"{source} is {h}×{w} (H×W), another aspect ratio than the image's {ih}×{iw}; it is not a "
                         f"mask of this image, or it was cropped.")
    rows = ((np.arange(ih) + 0.5) * h / ih).astype(np.int64).clip(max=h - 1)
    cols = ((np.arange(iw) + 0.5) * w / iw).astype(np.int64).clip(max=w - 1)
    return mask[rows][:, cols]


def refine_file(task: Task, refiner: Refiner) -> Outcome:
    """Refine one image and write its index PNG atomically; every failure is returned, not raised."""
    from ..unary_io import load_unary

    start = time.perf_counter()
    if task.problem is not None:
        return Outcome(task, "failed", task.problem)
    try:
        image = io.load_image(task.image)
        band = refiner.spec.band
        if band is None and task.unary is not None and is_mask_file(task.unary):
            mask = _fit_mask(io.load_mask(task.unary), image.shape[:2], refiner.spec.resize, task.unary)
            io.save_mask(task.out, refiner.refine_mask(image, mask))
            return Outcome(task, "done", "", time.perf_counter() - start)
        if band is not None:
            band = P.scaled_length(band, P.scale_factor(*image.shape[:2], refiner.spec.scale))
        probs = load_unary(task.unary, num_classes=refiner.spec.num_classes, image_shape=image.shape[:2],
                           confidence=refiner.spec.confidence, band=band, resize=refiner.spec.resize,
                           ignore_index=refiner.spec.void)
        io.save_mask(task.out, refiner(image, probs))
    except Exception as exc:  # one bad image must not stop the batch; the reason goes in the summary
        return Outcome(task, "failed", f"{type(exc).__name__}: {exc}", time.perf_counter() - start)
    return Outcome(task, "done", "", time.perf_counter() - start)


def output_ok(path: Path) -> bool:
    """True when ``path`` is a complete output: a non-empty PNG that decodes (checksums verified).

    Outputs are written atomically, so a damaged one was written by something else (a full disk, a copy cut
    short); a batch redoes it rather than skipping it forever.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        if path.stat().st_size == 0:
            return False
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            im.load()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
        return False
    return True


def find_tasks(in_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
               unary_dir: str | os.PathLike | None = None) -> list[Task]:
    """The tasks of a folder: every image with its unary and its output ``out_dir/<stem>.png``.

    Images are ``in_dir/images/*`` when that folder exists, else the images of ``in_dir`` (files ending in ``_mask``
    excluded). A unary is the file or folder named ``<stem>`` (any of :data:`UNARY_SUFFIXES`) in ``unary_dir``; without
    one, ``in_dir/masks/<stem>.*``, else ``in_dir/<stem>_mask.*``. Images without exactly one unary, and images
    sharing a stem, become tasks with a ``problem``. Left-over temporary files of interrupted writes in ``out_dir``
    are removed.

    Raises:
        FileNotFoundError: ``in_dir`` or ``unary_dir`` is not a folder.
        ValueError: ``out_dir`` is one of the input folders (outputs would overwrite inputs); no images.
    """
    root, out = Path(in_dir), Path(out_dir)
    for name, folder in (("IN_DIR", root), ("--unary-dir", unary_dir)):
        if folder is not None and not Path(folder).is_dir():
            raise FileNotFoundError(f"{name} {folder} does not exist or is not a folder.")
    flat = not (root / "images").is_dir()
    image_dir = root if flat else root / "images"
    inputs = [image_dir, root / "masks"] + ([Path(unary_dir)] if unary_dir is not None else [])
    if out.exists() and any(out.resolve() == p.resolve() for p in inputs if p.exists()):
        raise InputError(f"output folder {out} is an input folder; outputs <stem>.png would overwrite inputs. Pick "
                         f"another -o.")
    images = sorted(f for f in image_dir.iterdir() if f.is_file() and not f.name.startswith(".")
                    and f.suffix.lower() in io.IMAGE_SUFFIXES and not (flat and f.stem.endswith("_mask")))
    if not images:
        raise InputError(f"{image_dir} holds no images ({', '.join(io.IMAGE_SUFFIXES)}).")
    if out.is_dir():
        for leftover in (f for f in out.iterdir() if io.is_temporary(f.name)):
            leftover.unlink(missing_ok=True)
    if unary_dir is not None:
        where, suffix = Path(unary_dir), ""
    else:
        where, suffix = (root, "_mask") if flat else (root / "masks", "")
    candidates: dict[str, list[Path]] = {}
    if where.is_dir():
        for f in where.iterdir():
            if not f.name.startswith(".") and (f.is_dir() or f.suffix.lower() in UNARY_SUFFIXES):
                candidates.setdefault(f.name if f.is_dir() else f.stem, []).append(f)
    stems = [f.stem for f in images]
    tasks = []
    for image in images:
        found = sorted(candidates.get(image.stem + suffix, []))
        problem = None
        if stems.count(image.stem) > 1:
            problem = f"another image has the stem {image.stem!r} (both would write {image.stem}.png); rename one"
        elif not found:
            problem = f"no unary found: expected {where / (image.stem + suffix)}.<png|npy|npz|tif|json>"
        elif len(found) > 1:
            problem = f"{len(found)} unaries match ({', '.join(f.name for f in found)}); keep one"
        tasks.append(Task(image, found[0] if len(found) == 1 else None, out / f"{image.stem}.png", problem))
    return tasks


@contextmanager
def quiet_per_image_logs() -> Iterator[None]:
    """Within the block, ``crfcore.unary_io`` logs warnings only: its INFO line per image would bury a progress bar."""
    logger = logging.getLogger("crfcore.unary_io")
    saved = logger.level
    logger.setLevel(max(saved, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(saved)
