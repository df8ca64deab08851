"""Shipped presets per unary kind: refiner parameters suited to where the unary came from.

A CRF tuned for a network's noisy probabilities (strong pairwise terms, wide reach) damages a careful annotation,
and one tuned for annotations is too timid to spread scribbles. So presets are chosen by the kind of unary:

==================  =====================================================================================
kind                for
==================  =====================================================================================
network_output      softmax probabilities, logits or a backbone's output: noisy, blurred at object edges;
                    the classic parameters (the params.py defaults)
rough_annotation    a mask or polygons drawn by a person: mostly right, off by a few pixels at edges; the
                    CRF may move boundaries to nearby colour edges but must not make the mask worse
scribbles           brush strokes: a few hard pixels, the rest unknown; strong, far-reaching propagation
==================  =====================================================================================

Each preset is a file ``crfcore/presets/<kind>.<method>.json`` that :func:`crfcore.params.load_preset` (and so
``crfcore.refine(params=path)``, ``crfcore refine --preset``) reads as any preset: ``{"method", "params"}``, where
``params`` lists only what differs from the params.py defaults. Beside them the file holds ``"kind"``,
``"description"``, ``"tuning"`` (how the values were chosen) and ``"unary"``: ``{"confidence": p, "band": px}`` for
kinds whose unary is made from a label mask by :func:`crfcore.unary.from_labels` (``band`` optional). These live in
the preset, not in the refiner's params, because they shape the unary rather than the CRF; yet they are tuned
together with the CRF weights (the two trade against each other), so they travel with them. :attr:`Preset.unary` is
that entry as ``from_labels`` keyword arguments: ``from_labels(mask, C, **preset.unary)``; :attr:`Preset.appearance`
is the whole entry as :class:`crfcore.params.UnaryParams` (the colour-model unary of :func:`crfcore.refine_mask`:
confidence, roughness scale, colour weight, ...), its defaults where the entry is silent.

Spatial values (θα, θγ, windows, the unary's ``band``) are stored at the reference size, a 500-px long side
(:data:`crfcore.params.REFERENCE_SIZE`; a file's optional ``"reference_size"`` says otherwise and is converted on
reading), and scaled to each image by ``crfcore.refine(..., scale="auto")``; scale a preset's unary settings with
:func:`crfcore.params.scaled_unary` before ``from_labels``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import params as P
from .. import registry
from ..unary import check_band

__all__ = ["KINDS", "UNARY_SOURCES", "UNARY_OPTIONS", "Preset", "names", "methods", "path", "read", "get", "load",
           "for_unary_source"]

_DIR = Path(__file__).resolve().parent

KINDS = ("network_output", "rough_annotation", "scribbles")
"""The preset kinds, one per kind of unary (see the module docstring)."""

UNARY_SOURCES: dict[str, str] = {
    "probabilities": "network_output",
    "logits": "network_output",
    "backbone": "network_output",
    "mask": "rough_annotation",
    "polygons": "rough_annotation",
    "scribbles": "scribbles",
}
"""Unary source → preset kind (:func:`for_unary_source`)."""


@dataclass(frozen=True)
class Preset:
    """A preset file's contents.

    Attributes:
        method: the refiner it is for.
        params: that refiner's params dataclass, validated.
        kind: one of :data:`KINDS`, or None for a preset without one (e.g. written by ``crfcore tune``).
        unary: the file's ``"unary"`` entry as :func:`crfcore.unary.from_labels` keyword arguments, validated:
            ``confidence`` (the probability of a mask's label, in (0.5, 1]) and ``band`` (pixels > 0), each only
            when the file gives it; empty when the unary is not made from a mask, or the caller chooses.
        appearance: the ``"unary"`` entry as :class:`crfcore.params.UnaryParams` (for :func:`crfcore.refine_mask`).
        description: what the preset is for; may be empty.
    """

    method: str
    params: Any
    kind: str | None = None
    unary: Mapping[str, float] = field(default_factory=dict)
    description: str = ""
    appearance: P.UnaryParams = field(default_factory=P.UnaryParams)

    @property
    def confidence(self) -> float | None:
        """``unary["confidence"]``, or None when the file gives none."""
        return self.unary.get("confidence")

    @property
    def band(self) -> float | None:
        """``unary["band"]`` in pixels, or None when the file gives none."""
        return self.unary.get("band")


def names() -> list[str]:
    """The preset kinds, in :data:`KINDS` order."""
    return list(KINDS)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"{kind!r} is not a preset kind. Valid kinds are {', '.join(map(repr, KINDS))}.")


def methods(kind: str) -> list[str]:
    """Methods with a shipped preset of ``kind``, sorted."""
    _check_kind(kind)
    return sorted(p.name.split(".")[1] for p in _DIR.glob(f"{kind}.*.json"))


def path(kind: str, method: str = "convcrf") -> Path:
    """The shipped file of ``kind`` for ``method``; raises ``ValueError`` listing the methods that have one."""
    _check_kind(kind)
    file = _DIR / f"{kind}.{method}.json"
    if not file.is_file():
        have = ", ".join(map(repr, methods(kind))) or "no method"
        none = "" if registry.get(method).has_presets else (f" ({method!r} ships no presets at all: tune one with "
                                                            f"crfcore tune --method {method} -o P.json)")
        raise ValueError(f"no {kind!r} preset for method {method!r}; presets of that kind exist for {have}.{none}")
    return file


UNARY_OPTIONS = ("band", *(s.name for s in P.specs(P.UnaryParams)))
"""The settings a preset's ``"unary"`` entry may hold: :func:`crfcore.unary.from_labels`' ``band`` and the fields of
:class:`crfcore.params.UnaryParams` (``confidence`` serves both)."""


def _unary(file: Path, unary: Any) -> dict[str, float]:
    if not isinstance(unary, dict):
        raise ValueError(f"preset {file}: 'unary' must be an object such as {{\"confidence\": 0.9, \"band\": 4}}, got "
                         f"{unary!r}.")
    unknown = sorted(set(unary) - set(UNARY_OPTIONS))
    if unknown:
        raise ValueError(f"preset {file}: unknown unary setting(s) {', '.join(map(repr, unknown))}; valid settings "
                         f"are {', '.join(map(repr, UNARY_OPTIONS))}.")
    out: dict[str, float] = {}
    confidence = unary.get("confidence")
    if confidence is not None:
        if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.5 < confidence <= 1.0:
            raise ValueError(f"preset {file}: unary confidence must be a number in (0.5, 1] (the probability of a "
                             f"mask's label), got {confidence!r}.")
        out["confidence"] = float(confidence)
    try:
        band = check_band(unary.get("band"), "unary band")
    except ValueError as exc:
        raise ValueError(f"preset {file}: {exc}") from None
    if band is not None:
        out["band"] = band
    return out


def read(file: str | os.PathLike) -> Preset:
    """Any preset file, shipped or not, with its optional ``kind``, ``unary`` and ``description`` entries.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a preset, a parameter out of range, an unknown kind or a bad unary setting (the message
            names the file).
    """
    file = Path(file)
    method, params = P.load_preset(file)
    data = json.loads(file.read_text(encoding="utf-8"))
    kind = data.get("kind")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"preset {file}: kind {kind!r} is not one of {', '.join(map(repr, KINDS))}.")
    entry = data.get("unary", {})
    unary = P.scaled_unary(_unary(file, entry), P.REFERENCE_SIZE / P.preset_reference_size(data, file))
    try:
        appearance = P.with_overrides(P.UnaryParams(), **{k: v for k, v in entry.items() if k != "band"})
    except ValueError as exc:
        raise ValueError(f"preset {file}: unary {exc}") from None
    return Preset(method, params, kind, unary, str(data.get("description", "")), appearance)


def get(kind: str, method: str = "convcrf") -> Preset:
    """The shipped preset of ``kind`` for ``method``, with its unary settings and description."""
    return read(path(kind, method))


def load(kind: str, method: str = "convcrf") -> Any:
    """The refiner params of the shipped preset of ``kind`` for ``method`` (a params.py dataclass), e.g.
    ``crfcore.refine(image, unary, method="convcrf", params=crfcore.presets.load("rough_annotation"))``."""
    return get(kind, method).params


def for_unary_source(source: str) -> str:
    """The preset kind for a unary source: ``"probabilities"``, ``"logits"``, ``"backbone"`` → ``"network_output"``;
    ``"mask"``, ``"polygons"`` → ``"rough_annotation"``; ``"scribbles"`` → ``"scribbles"``."""
    try:
        return UNARY_SOURCES[source]
    except KeyError:
        raise ValueError(f"{source!r} is not a unary source. Valid sources are "
                         f"{', '.join(map(repr, UNARY_SOURCES))}.") from None
