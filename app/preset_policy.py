"""Which shipped preset kind the refiners' parameters come from, as a model with no Qt (the window asks it).

In auto mode (the default) the kind follows the unary source: a mask gets the ``"rough_annotation"`` presets, a
probability map the ``"network_output"`` ones (``ImageDocument.preset_kind``), now and for every image opened later.
Choosing a kind (``crfcore.presets.KINDS``) fixes it whatever the unary source until auto is chosen again. When the
refiner changes while a mask or strokes make the unary, that refiner's preset of the current kind also brings the
unary settings (:class:`crfcore.params.UnaryParams`: confidence, roughness scale, colour weight, ...) it was tuned
with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import crfcore.presets
from crfcore import params as P

__all__ = ["PresetChange", "PresetPolicy"]

UnarySource = Literal["mask", "probs", "strokes"]


@dataclass(frozen=True)
class PresetChange:
    """Apply the presets of ``kind``; ``reason`` says why, for the status bar (``"chosen"``, ``"the unary is a
    mask"``)."""

    kind: str
    reason: str


class PresetPolicy:
    """The preset-kind state of the window: ``auto`` (follow the unary source) and ``kind`` (the kind the current
    parameters came from, None before any)."""

    def __init__(self) -> None:
        self.auto = True
        self.kind: str | None = None

    def choose(self, kind: str | None, *, source_kind: str | None, unary: UnarySource | None,
               has_document: bool) -> PresetChange | None:
        """The user chose ``kind`` (None: auto). Returns the presets to apply now, if any.

        Args:
            kind: a ``crfcore.presets.KINDS`` name, or None for auto.
            source_kind: the kind the open document's unary source calls for (``ImageDocument.preset_kind``).
            unary: the open document's unary source, or None.
            has_document: whether an image is open; without one the choice waits for the next image.

        Raises:
            ValueError: ``kind`` is not a preset kind.
        """
        if kind is not None and kind not in crfcore.presets.KINDS:
            valid = ", ".join(map(repr, crfcore.presets.KINDS))
            raise ValueError(f"{kind!r} is not a preset kind. Valid kinds are {valid}.")
        self.auto = kind is None
        if not has_document:
            self.kind = kind
            return None
        if kind is None:
            self.kind = None
            return self.follow(source_kind, unary)
        return PresetChange(kind, "chosen")

    def follow(self, source_kind: str | None, unary: UnarySource | None) -> PresetChange | None:
        """In auto mode, the kind a document's unary source calls for, when it differs from the current one."""
        if self.auto and source_kind is not None and source_kind != self.kind:
            source = {"mask": "a mask", "probs": "a probability map", "strokes": "strokes alone"}.get(unary, unary)
            return PresetChange(source_kind, f"the unary is {source}")
        return None

    def applied(self, change: PresetChange) -> None:
        """Record that ``change`` was applied."""
        self.kind = change.kind

    def mask_settings(self, method: str, unary: UnarySource | None) -> P.UnaryParams | None:
        """The unary settings to make a mask's or strokes' unary with after switching to ``method``, when auto mode
        is on, the unary is a mask or strokes, and the current kind is one made from them (``"rough_annotation"``,
        ``"scribbles"``): ``method``'s preset's (the defaults when it has none, as ``crfcore.refine_mask``); else
        None."""
        if not self.auto or self.kind not in ("rough_annotation", "scribbles") or unary not in ("mask", "strokes"):
            return None
        if method not in crfcore.presets.methods(self.kind):
            return P.UnaryParams()
        return crfcore.presets.get(self.kind, method).appearance
