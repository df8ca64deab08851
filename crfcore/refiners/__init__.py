"""The refiners: features × affinity backend × inference (DESIGN.md §2), and the table of methods.

* :mod:`~crfcore.refiners.meanfield`: ConvCRF (local window) and DenseCRF (permutohedral lattice), mean field;
* :mod:`~crfcore.refiners.gaussian`: the Gaussian CRF, conjugate gradient to a tolerance;
* :mod:`~crfcore.refiners.piecewise`: range-box potentials (Lin et al. 2016), mean field; trained by
  :mod:`crfcore.learn.piecewise_train`.

:data:`REGISTRY` holds one :class:`~crfcore.registry.Method` per refiner (class, params, title, capabilities),
declared below and nowhere else; :func:`get` builds a module by name.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .. import params as P
from ..registry import METHODS, Method, names, register
from ..registry import get as method
from .gaussian import GaussianCRF
from .kernels import GaussianKernels
from .meanfield import ConvCRF, DenseCRF, MeanFieldCRF
from .piecewise import PiecewiseCRF

__all__ = ["GaussianKernels", "MeanFieldCRF", "ConvCRF", "DenseCRF", "GaussianCRF", "PiecewiseCRF", "Method",
           "REGISTRY", "method", "get", "names"]

REGISTRY: dict[str, Method] = METHODS
"""Every refiner by name (the same table as :data:`crfcore.registry.METHODS`)."""

_CONSTRUCTOR_KEYS = ("num_classes", "learn_compat", "learn_features")


def _entry(cls: type, title: str, **capabilities: Any) -> Method:
    """The entry of a refiner class; its name and params come from the class itself."""
    return Method(cls.method, title, cls, cls.params_cls, **capabilities)


register(_entry(ConvCRF, "ConvCRF", learns_compat=True, learns_features=True, has_presets=True))
register(_entry(GaussianCRF, "Gaussian CRF", learns_features=True, has_presets=True))
register(_entry(DenseCRF, "DenseCRF", learns_compat=True, has_presets=True))
register(_entry(PiecewiseCRF, "Piecewise", training="piecewise", has_presets=True))


def get(name: str, params: Any = None, **kwargs: Any) -> nn.Module:
    """A new refiner module by name, e.g. ``get("convcrf", filter_size=7)``.

    ``params`` is that refiner's params dataclass (defaults if None); ``kwargs`` are parameter overrides by name,
    or the constructor's keywords (``num_classes``, ``learn_compat``, ``learn_features``).
    """
    entry = method(name)  # the one "is not a valid method" check
    ctor = {k: kwargs.pop(k) for k in _CONSTRUCTOR_KEYS if k in kwargs}
    params = P.with_overrides(params if params is not None else entry.params_cls(), **kwargs)
    return entry.refiner(params, **ctor)
