"""crfcore: conditional random fields that turn rough segmentation masks into boundary-accurate ones.

    >>> import crfcore
    >>> r = crfcore.refine(image, unary, method="convcrf")      # doctest: +SKIP
    >>> r.labels.shape, r.timing["total_ms"]                      # doctest: +SKIP

Every name below is imported on first use (PEP 562): ``import crfcore`` alone, or a torch-free module such as
``crfcore.io``, does not import torch (1.7 s), so the app can show its window before the compute engine has loaded.
"""

import importlib
from typing import Any

__all__ = ["refine", "refine_mask", "ImageRefiner", "Refinement", "Cancelled", "VOID", "best_device", "appearance",
           "params", "presets", "refiners", "registry", "unary", "metrics", "backbones"]
__version__ = "0.1.0"

_NAMES = {"refine": "api", "Refinement": "api", "best_device": "api", "ImageRefiner": "image_refiner",
          "Cancelled": "inference", "VOID": "labels", "refine_mask": "mask_refine"}
"""Function and class names of the package: the module each one lives in."""

importlib.import_module(".registry", __name__).PROVIDERS.append(f"{__name__}.refiners")  # registered on first use


def __getattr__(name: str) -> Any:
    """The names of :data:`__all__` and every submodule (``crfcore.io``, ``crfcore.metrics``, …), imported on first
    access."""
    if name.startswith("__"):  # dunder probes (copy, inspect, doctest): never a submodule
        raise AttributeError(f"module 'crfcore' has no attribute {name!r}")
    if name in _NAMES:
        value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    else:
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module 'crfcore' has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, "__version__"})

