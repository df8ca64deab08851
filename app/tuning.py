"""Fine-tuning a refiner on the folder's labelled images, without Qt (the Fine-tune dialog runs it on a worker).

A labelled image has a ground-truth mask (``<stem>_gt.png`` or ``gt/<stem>.png``, :mod:`app.folder`) and a unary
source (its probability map, else its coarse mask made a unary as the window makes it: ``crfcore.refine_mask``'s
first-round colour-model unary at the app's unary settings and roughness): the unary stays fixed and the refiner's
parameters are trained through inference to turn it into the ground truth — decoupled fine-tuning
(Teichmann & Cipolla 2018, "Convolutional CRFs for Semantic Segmentation", §5.2), run by
:func:`crfcore.learn.fine_tune`, or :func:`crfcore.learn.train_piecewise` for the ``piecewise`` refiner.

The chosen images are copied into a temporary ``images/`` + ``masks/`` folder, so :class:`crfcore.learn.LearnData`
splits them (a seeded hash, ``val_frac`` held out for validation), crops and caches them as ``crfcore tune`` does.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import crfcore
from crfcore import learn
from crfcore import params as P
from crfcore.errors import InputError
from crfcore.mask_refine import rough_mask
from crfcore.learn.settings import FINETUNE, SEED, VAL_FRAC
from crfcore.unary_io import load_unary

from .folder import ImageEntry

__all__ = ["TuneSettings", "labelled", "run_tuning"]


@dataclass(frozen=True)
class TuneSettings:
    """What to tune and how.

    Attributes:
        method: a registered refiner; params: its params dataclass to start from (the panel's current ones).
        num_classes: C of the unaries and ground truths.
        unary: how a coarse mask becomes a unary (the app's unary settings, :class:`crfcore.params.UnaryParams`).
        roughness: a coarse mask's roughness, pixels at the 500-px reference size, or None for Auto.
        steps: optimisation steps; lr: Adam learning rate; crop: side of the square training crops, pixels.
        val_frac: share of the images held out for validation, in (0, 1); seed: seeds the split and the crops.
        learn_compat: also learn a C×C label compatibility ("+C"; mean-field refiners only).
    """

    method: str
    params: Any
    num_classes: int
    unary: P.UnaryParams = dataclasses.field(default_factory=P.UnaryParams)
    roughness: float | None = None
    steps: int = FINETUNE["steps"].default
    lr: float = FINETUNE["lr"].default
    crop: int = FINETUNE["crop"].default
    val_frac: float = VAL_FRAC.default
    seed: int = SEED.default
    learn_compat: bool = False


def labelled(entries: Sequence[ImageEntry]) -> list[ImageEntry]:
    """The entries with a ground-truth mask and a unary source (probability map or coarse mask)."""
    return [e for e in entries if e.truth is not None and (e.probs is not None or e.mask is not None)]


def _unary_fn(entries: dict[str, ImageEntry], settings: P.UnaryParams, roughness: float | None) -> learn.data.UnaryFn:
    def unary(image_path: Path, image: np.ndarray, num_classes: int) -> np.ndarray:
        entry = entries[image_path.stem]
        if entry.probs is not None:
            return load_unary(entry.probs, num_classes=num_classes, image_shape=image.shape[:2],
                              ignore_index=entry.void)
        mask = crfcore.io.load_mask(entry.mask)
        if mask.shape != image.shape[:2]:
            raise InputError(f"{entry.mask}: mask is {mask.shape[0]}×{mask.shape[1]} but its image is "
                             f"{image.shape[0]}×{image.shape[1]}; fix or remove the mask.")
        rough = rough_mask(image, mask, num_classes=num_classes, void=entry.void, device="cpu",
                           roughness="auto" if roughness is None else roughness, settings=settings)
        return rough.unary().numpy()

    return unary


def run_tuning(entries: Sequence[ImageEntry], settings: TuneSettings, *,
               callback: learn.finetune.TuneCallback | None = None) -> learn.TuneResult:
    """Tune ``settings.method`` on ``entries`` (at least two labelled images); ``callback`` as
    :data:`crfcore.learn.finetune.TuneCallback` (raise ``crfcore.Cancelled`` in it to stop).

    Returns:
        The :class:`crfcore.learn.TuneResult`: its ``params`` are the best on the validation images.

    Raises:
        ValueError: fewer than two labelled images, an image without ground truth, or a settings value the learner
            refuses (the message names it).
        crfcore.Cancelled: from the callback.
    """
    missing = [e.stem for e in entries if e.truth is None or (e.probs is None and e.mask is None)]
    if missing:
        raise ValueError(f"{', '.join(missing)}: no ground truth or no unary; fine-tuning needs <stem>_gt.png (or "
                         f"gt/<stem>.png) and a mask or probability map for every chosen image.")
    if len(entries) < 2:
        raise ValueError(f"fine-tuning needs at least 2 labelled images (one to train on, one to validate on), got "
                         f"{len(entries)}; add <stem>_gt.png ground truths to the folder.")
    method = crfcore.refiners.method(settings.method)
    if settings.learn_compat and not method.learns_compat:
        raise ValueError(f"learn_compat is for mean-field refiners; {settings.method!r} has no compatibility to "
                         f"learn. Untick it.")
    if len({e.void for e in entries}) > 1:
        raise ValueError(f"the chosen images disagree on the void label ({sorted({e.void for e in entries})}); "
                         f"choose images of one folder.")
    by_stem = {e.stem: e for e in entries}
    with tempfile.TemporaryDirectory(prefix="crf-studio-tune-") as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        (root / "masks").mkdir()
        for entry in entries:
            shutil.copyfile(entry.image, root / "images" / f"{entry.stem}{entry.image.suffix}")
            shutil.copyfile(entry.truth, root / "masks" / f"{entry.stem}{entry.truth.suffix}")
        data = learn.LearnData(root, num_classes=settings.num_classes, val_frac=settings.val_frac,
                               seed=settings.seed, void=entries[0].void,
                               unary_fn=_unary_fn(by_stem, settings.unary, settings.roughness))
        if method.training == "piecewise":
            model = crfcore.refiners.get(settings.method, settings.params, num_classes=settings.num_classes)
            config = learn.PiecewiseConfig(steps=settings.steps, lr=settings.lr, crop=settings.crop,
                                           seed=settings.seed)
            return learn.train_piecewise(model, data, config=config, callback=callback)
        extra = {"learn_compat": True} if settings.learn_compat else {}
        model = crfcore.refiners.get(settings.method, settings.params, num_classes=settings.num_classes, **extra)
        config = dataclasses.replace(learn.FinetuneConfig(), steps=settings.steps, lr=settings.lr,
                                     crop=settings.crop, seed=settings.seed)
        return learn.fine_tune(model, data, config=config, callback=callback)
