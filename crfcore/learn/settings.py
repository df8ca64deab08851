"""Training settings, declared once: each is a :class:`~crfcore.params.ParamSpec` (default, range, step, unit,
help) that the config dataclasses take their defaults from, ``crfcore tune`` builds its flags from and the app's
Fine-tune dialog builds its fields from. They are not CRF parameters (those live in :mod:`crfcore.params`).
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from ..params import ParamSpec

__all__ = ["VAL_FRAC", "SEED", "CLASSES", "FINETUNE", "PIECEWISE", "setting"]

VAL_FRAC = ParamSpec("val_frac", 0.2, "Share of the images held out for validation (at least one image).",
                     low=0.05, high=0.95, step=0.05)
SEED = ParamSpec("seed", 0, "Seeds the train/validation split and the sampling.", kind="int", low=0, high=2**31 - 1,
                 step=1)
CLASSES = ParamSpec("classes", "gt", "The mIoU rule of validation: 'gt' averages the classes in the ground truth, "
                    "'any' those in the ground truth or the prediction.", kind="choice", choices=("gt", "any"))

_STEPS_HELP = "Optimisation steps (at most)."
_CROP_HELP = "Side of the square training crops (smaller images are cropped to their own size)."

FINETUNE: dict[str, ParamSpec] = {s.name: s for s in (
    ParamSpec("steps", 60, _STEPS_HELP, kind="int", low=1, high=10_000, step=1),
    ParamSpec("lr", 0.02, "Adam learning rate (a relative step for the log-parametrised θ's).", low=1e-4, high=1.0,
              scale="log", step=0.005),
    ParamSpec("batch_size", 2, "Crops per step.", kind="int", low=1, high=64, step=1),
    ParamSpec("crop", 128, _CROP_HELP, kind="int", low=16, high=1024, step=1, unit="px"),
    ParamSpec("val_every", 10, "Validate every this many steps (and after the last).", kind="int", low=1,
              high=10_000, step=1),
    ParamSpec("patience", 3, "Stop after this many validations without a better validation mIoU.", kind="int",
              low=1, high=1000, step=1),
    ParamSpec("checkpoint_every", 10, "Write the checkpoint every this many steps (with a checkpoint path).",
              kind="int", low=1, high=10_000, step=1),
)}
"""Decoupled fine-tuning (:class:`~crfcore.learn.FinetuneConfig`)."""

PIECEWISE: dict[str, ParamSpec] = {s.name: s for s in (
    ParamSpec("steps", 150, _STEPS_HELP, kind="int", low=1, high=10_000, step=1),
    ParamSpec("lr", 0.05, "Adam learning rate.", low=1e-4, high=1.0, scale="log", step=0.005),
    ParamSpec("edges", 4096, "Candidate edges drawn per potential, image and step.", kind="int", low=1,
              high=1 << 20, step=256),
    ParamSpec("images_per_step", 2, "Training images sampled per step.", kind="int", low=1, high=64, step=1),
    ParamSpec("weight_decay", 0.3, "L2 weight on the potentials (bounds the energies of unseen label pairs).",
              low=0.0, high=100.0, step=0.05),
    ParamSpec("calibration_crops", 8, "Training crops used to fit the scale of the learned energies.", kind="int",
              low=1, high=1000, step=1),
    ParamSpec("crop", 128, _CROP_HELP, kind="int", low=16, high=1024, step=1, unit="px"),
)}
"""Piecewise training (:class:`~crfcore.learn.PiecewiseConfig`)."""


def setting(spec: ParamSpec) -> Any:
    """A dataclass field carrying ``spec``, its default taken from it (so ``crfcore.params.specs`` reads it)."""
    return field(default=spec.default, metadata={"spec": spec})
