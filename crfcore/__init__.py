"""crfcore: conditional random fields that turn rough segmentation masks into boundary-accurate ones.

    >>> import crfcore
    >>> r = crfcore.refine(image, unary, method="convcrf")      # doctest: +SKIP
    >>> r.labels.shape, r.timing["total_ms"]                      # doctest: +SKIP
"""

import importlib
from types import ModuleType

from . import params, presets, refiners, registry, unary
from .api import Refinement, best_device, refine
from .image_refiner import ImageRefiner
from .inference import Cancelled
from .labels import VOID
from .mask_refine import refine_mask
from . import appearance

__all__ = ["refine", "refine_mask", "ImageRefiner", "Refinement", "Cancelled", "VOID", "best_device", "appearance",
           "params", "presets", "refiners", "registry", "unary", "metrics", "backbones"]
__version__ = "0.1.0"

_LAZY = ("metrics", "backbones")  # imported on first use: SciPy and the network models cost ~0.7 s at start-up


def __getattr__(name: str) -> ModuleType:
    """``crfcore.metrics`` and ``crfcore.backbones``, imported on first access (PEP 562)."""
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'crfcore' has no attribute {name!r}")
