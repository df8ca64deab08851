"""The methods: one entry per refiner, read by everything that needs to know what a method is.

An entry names the refiner's ``nn.Module`` class, its params dataclass (``params.py``), the title people see, and
what it can do: whether fine-tuning can learn a compatibility matrix ("+C") or feature transforms ("+T"), how it is
trained (through inference, or piecewise without it) and whether shipped presets exist for it. The table itself is declared in :mod:`crfcore.refiners`, next to the classes;
this module sits below ``params.py`` so that every layer, ``params`` included, reads it without a circle.

    >>> from crfcore import registry
    >>> registry.get("gaussian").learns_compat                          # doctest: +SKIP
    False
"""

from __future__ import annotations

import importlib

from dataclasses import dataclass
from typing import Literal

from .errors import InputError

__all__ = ["Method", "METHODS", "declared", "get", "names", "register"]


@dataclass(frozen=True)
class Method:
    """One refiner.

    Attributes:
        name: the name scripts and the CLI use (``"convcrf"``).
        title: the name people read (``"ConvCRF"``).
        refiner: the ``nn.Module`` class; ``refiner(params, num_classes=, learn_compat=, learn_features=)``.
        params_cls: its params dataclass in :mod:`crfcore.params`.
        learns_compat: fine-tuning can learn a C×C compatibility ("+C").
        learns_features: fine-tuning can learn feature transforms ("+T").
        training: ``"inference"`` (decoupled fine-tuning, backprop through inference) or ``"piecewise"``
            (each potential by its own likelihood, no inference; Lin et al. 2016).
        has_presets: ``crfcore/presets`` ships presets for it.
    """

    name: str
    title: str
    refiner: type
    params_cls: type
    learns_compat: bool = False
    learns_features: bool = False
    training: Literal["inference", "piecewise"] = "inference"
    has_presets: bool = False


METHODS: dict[str, Method] = {}
"""Every method by name, in registration order."""


def register(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS`; a second entry of the same name is refused."""
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is registered already (by {METHODS[method.name].refiner.__name__}).")
    METHODS[method.name] = method
    return method


PROVIDERS: list[str] = []
"""Modules whose import registers methods; the package (``crfcore/__init__.py``) names :mod:`crfcore.refiners` here,
so this bottom layer never imports the refiners above it."""


def declared() -> dict[str, Method]:
    """:data:`METHODS` with the :data:`PROVIDERS`' entries in it: those modules (and torch) are imported on the first
    call, since ``import crfcore`` imports nothing until it is used."""
    for provider in PROVIDERS:
        importlib.import_module(provider)
    return METHODS


def names() -> list[str]:
    """Registered method names."""
    return list(declared())


def get(name: str) -> Method:
    """The entry of ``name``; raises ``ValueError`` listing the valid names (the one "not a valid method" check)."""
    try:
        return declared()[name]
    except (KeyError, TypeError):
        valid = ", ".join(repr(m) for m in METHODS)
        raise InputError(f"{name!r} is not a valid method. Valid methods are {valid}.") from None
