"""Label conventions shared by every mask reader and writer, metric, unary and trainer."""

from __future__ import annotations

__all__ = ["VOID"]

VOID = 255
"""The label of pixels with no class (PASCAL VOC's void): ignored by metrics and losses, uniform in unaries made from
masks, kept by readers and writers. Datasets with another void label (CamVid: 11) pass theirs explicitly."""
