"""crfcore: conditional random fields that turn rough segmentation masks into boundary-accurate ones.

    >>> import crfcore
    >>> r = crfcore.refine(image, unary, method="convcrf")      # doctest: +SKIP
    >>> r.labels.shape, r.timing["total_ms"]                      # doctest: +SKIP
"""

from . import backbones, metrics, params, presets, refiners, registry, unary
from .api import Refinement, best_device, refine
from .image_refiner import ImageRefiner
from .inference import Cancelled
from .labels import VOID
from .mask_refine import refine_mask
from . import appearance

__all__ = ["refine", "refine_mask", "ImageRefiner", "Refinement", "Cancelled", "VOID", "best_device", "appearance",
           "params", "presets", "refiners", "registry", "unary", "metrics", "backbones"]
__version__ = "0.1.0"
