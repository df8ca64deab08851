"""crfcore: conditional random fields that turn rough segmentation masks into boundary-accurate ones.

    >>> import crfcore
    >>> r = crfcore.refine(image, unary, method="convcrf")      # doctest: +SKIP
    >>> r.labels.shape, r.timing["total_ms"]                      # doctest: +SKIP
"""

from . import backbones, metrics, params, presets, refiners, unary
from .api import Refinement, best_device, refine
from .inference import Cancelled
from . import learn  # noqa: E402  (registers the "piecewise" refiner; needs refiners and api loaded first)
from . import appearance  # noqa: E402
from .mask_refine import refine_mask  # noqa: E402

__all__ = ["refine", "refine_mask", "appearance", "Refinement", "Cancelled", "best_device", "params", "presets", "refiners", "unary", "metrics", "backbones"]
__version__ = "0.1.0"
