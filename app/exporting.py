"""What an export would skip, and refining those images so they can be included, without Qt.

The Export dialog exports each image's latest saved mask revision (:mod:`crfcore.export`). Images never edited nor
accepted have none and would be skipped; :func:`unsaved` counts them, and :func:`refine_and_save` refines each with
the window's refiner and settings and saves the result as a revision (note ``"refined for export"``), so the export
includes it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

import crfcore
from crfcore import params as P
from crfcore.io import load_image, load_mask
from crfcore.project import CATALOG_DIR, Project
from crfcore.unary_io import load_unary

from .folder import ImageEntry

__all__ = ["EXPORT_NOTE", "RefineSettings", "unsaved", "refine_entry", "refine_and_save"]

EXPORT_NOTE = "refined for export"


@dataclass(frozen=True)
class RefineSettings:
    """How the window refines: ``method`` with ``params`` (its dataclass), masks made unaries as
    ``crfcore.refine_mask`` makes them with ``unary`` (:class:`crfcore.params.UnaryParams`) and ``roughness``
    (pixels at the reference size, or None for Auto), ``class_names`` (C names; empty: from the files), ``device``
    (None = best)."""

    method: str
    params: Any
    unary: P.UnaryParams = field(default_factory=P.UnaryParams)
    roughness: float | None = None
    class_names: tuple[str, ...] = ()
    device: str | None = None


def unsaved(root: str | Path, entries: Sequence[ImageEntry]) -> tuple[list[ImageEntry], list[ImageEntry]]:
    """``(refinable, sourceless)``: the entries of ``root`` without a saved mask revision, split into those with a
    mask or probability map (they can be refined and included) and those with neither (they cannot)."""
    saved: set[Path] = set()
    if (Path(root) / CATALOG_DIR / "catalog.sqlite").is_file():
        with Project.open(root) as project:
            saved = {r.path for r in project.images() if project.latest_revision(r.id) is not None}
    missing = [e for e in entries if e.image.resolve() not in saved]
    return ([e for e in missing if e.probs is not None or e.mask is not None],
            [e for e in missing if e.probs is None and e.mask is None])


def refine_entry(entry: ImageEntry, settings: RefineSettings) -> np.ndarray:
    """``(H, W)`` int64 refined labels of ``entry`` from its probability map (``crfcore.refine``), else its mask
    (``crfcore.refine_mask`` with one GrabCut round per the settings, as the window refines it).

    Raises:
        ValueError: the entry has no unary source, or a file is unreadable (the message names it).
    """
    if entry.probs is None and entry.mask is None:
        raise ValueError(f"{entry.stem} has no mask or probability map to refine.")
    image = load_image(entry.image)
    names = settings.class_names or entry.class_names or ()
    if entry.probs is None:
        mask = load_mask(entry.mask)
        if mask.shape != image.shape[:2]:
            raise ValueError(f"{entry.mask.name} is {mask.shape[0]}×{mask.shape[1]} but {entry.image.name} is "
                             f"{image.shape[0]}×{image.shape[1]} (H×W); use a mask made for this image.")
        result = crfcore.refine_mask(image, mask.astype(np.int64), num_classes=len(names) or None,
                                     method=settings.method, params=settings.params,
                                     roughness="auto" if settings.roughness is None else settings.roughness,
                                     void=entry.void, device=settings.device,
                                     **dataclasses.asdict(settings.unary))
        return np.asarray(result.labels, dtype=np.int64)
    unary = load_unary(entry.probs, num_classes=len(names) or None, image_shape=image.shape[:2],
                       confidence=settings.unary.confidence, ignore_index=entry.void)
    result = crfcore.refine(image, unary, method=settings.method, params=settings.params, device=settings.device)
    return np.asarray(result.labels, dtype=np.int64)


def refine_and_save(root: str | Path, entries: Sequence[ImageEntry], settings: RefineSettings, *,
                    on_item: Callable[[int, int, str], None] | None = None) -> list[int]:
    """Refine each entry (:func:`refine_entry`) and save it into ``root``'s project as a revision; returns the
    revision ids. ``on_item(done, total, stem)`` runs after each image (raise in it to stop)."""
    revisions = []
    with Project.open(root) as project:
        if not project.classes and settings.class_names:
            project.classes = list(settings.class_names)
        for done, entry in enumerate(entries, start=1):
            labels = refine_entry(entry, settings)
            image_id = project.add_images([entry.image])[0]
            revisions.append(project.save_mask(image_id, labels, preset=settings.params, method=settings.method,
                                               note=EXPORT_NOTE))
            if on_item is not None:
                on_item(done, len(entries), entry.stem)
    return revisions
