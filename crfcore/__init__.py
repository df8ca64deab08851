"""crfcore: conditional random fields that turn rough segmentation masks into boundary-accurate ones.

    >>> import crfcore
    >>> r = crfcore.refine(image, unary, method="convcrf")      # doctest: +SKIP
    >>> r.labels.shape, r.timing["total_ms"]                      # doctest: +SKIP
"""

from . import metrics, params, refiners, unary
from .api import Refinement, best_device, refine
from .inference import Cancelled

__all__ = ["refine", "Refinement", "Cancelled", "best_device", "params", "refiners", "unary", "metrics"]
__version__ = "0.1.0"
