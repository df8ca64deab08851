"""Memory layouts of ``(B, C, H, W)`` tensors: (B, C, H, W)-contiguous planes or channels-last rows of classes."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["to_memory_format"]


def to_memory_format(x: Tensor, memory_format: torch.memory_format) -> Tensor:
    """``x`` ``(B, C, H, W)`` in ``memory_format`` (contiguous or channels-last), copied only if it is not already.

    Both directions are transposes of ``(C, H·W)`` blocks, which ``Tensor.contiguous(memory_format=…)`` runs three to
    four times slower on CPU than a copy into a fresh tensor of the other layout (channels-last) or a 2-D transpose
    per image (back), measured on a 500×375×21 Q.
    """
    if x.is_contiguous(memory_format=memory_format):
        return x
    if memory_format == torch.channels_last:
        return torch.empty_like(x, memory_format=torch.channels_last).copy_(x)
    if memory_format != torch.contiguous_format or not x.is_contiguous(memory_format=torch.channels_last):
        return x.contiguous(memory_format=memory_format)
    b, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(b, h * w, c)  # a view of channels-last memory
    out = x.new_empty(b, c, h * w)
    for i in range(b):
        out[i].copy_(rows[i].t())
    return out.view(b, c, h, w)
