"""Range boxes: asymmetric windows of the local message passing (Lin et al. 2016, §4.1, "range boxes").

A range box is a set D of offsets ``d = (dy, dx)`` in pixels of a grid downsampled ``b`` times. Its operator computes,
for every pixel i and every kernel m,

    M_{m,i} = Σ_{d ∈ D} k_m(f_i, f_{i+d}) · q_{i+d},     k_m(f_i, f_j) = exp(−|f_i − f_j|²/2),

where offsets that leave the image contribute nothing. Unlike :class:`crfcore.affinity.LocalOp` it keeps one message
per kernel (each kernel of a piecewise potential has its own K×K energies) and the box need not be centred:

* ``surrounding``: the k×k window around the pixel, without the pixel itself (ConvCRF's window);
* ``above``: a k×k window whose centre is k rows above the pixel (it starts where the surrounding box ends);
* ``below``: its mirror image, k rows below.

As in ConvCRF (Teichmann & Cipolla 2018, §4), features and q are averaged over b×b blocks and the messages are
upsampled back bilinearly, so a box reaches k·b pixels for 1/b² of the work. The per-pixel filters are built once
(``build``) and reused by every ``apply``; they take ``B·M·|D|·(H/b)·(W/b)`` floats.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .grid import downsample, upsample

__all__ = ["BOX_NAMES", "range_box", "BoxOp", "build_box"]

BOX_NAMES = ("surrounding", "above", "below")


def range_box(name: str, filter_size: int) -> tuple[tuple[int, int], ...]:
    """The offsets ``(dy, dx)`` of a named box of side ``filter_size`` (odd), in grid pixels; y grows downwards.

    Raises:
        ValueError: an unknown name (the valid ones are listed) or an even or non-positive size.
    """
    if filter_size < 1 or filter_size % 2 == 0:
        raise ValueError(f"filter_size must be a positive odd number, got {filter_size}.")
    r = filter_size // 2
    square = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
    if name == "surrounding":
        return tuple(d for d in square if d != (0, 0))
    if name == "above":
        return tuple((dy - filter_size, dx) for dy, dx in square)
    if name == "below":
        return tuple((dy + filter_size, dx) for dy, dx in square)
    valid = ", ".join(repr(n) for n in BOX_NAMES)
    raise ValueError(f"{name!r} is not a valid range box. Valid boxes are {valid}.")


def _shift(padded: Tensor, pad: int, dy: int, dx: int, h: int, w: int) -> Tensor:
    """``x[..., i + dy, j + dx]`` (0 outside) from ``padded = F.pad(x, (pad,) * 4)``."""
    return padded[..., pad + dy:pad + dy + h, pad + dx:pad + dx + w]


class BoxOp:
    """The built operator of one range box over M kernels.

    Args:
        features: one ``(B, D_m, h, w)`` tensor per kernel on the blurred grid (already divided by θ); a kernel
            whose features are all zero is the box kernel (1 on every offset inside the image).
        offsets: the box, from :func:`range_box`.
        blur: b; ``size`` is the full-resolution ``(H, W)`` the messages are upsampled to.

    Shape:
        - apply: ``(B, C, H, W)`` → ``(B, M, C, H, W)``
    """

    def __init__(self, features: Sequence[Tensor], offsets: Sequence[tuple[int, int]], blur: int,
                 size: tuple[int, int]) -> None:
        self.offsets = tuple(offsets)
        self.blur = blur
        self.size = tuple(size)
        b, _, h, w = features[0].shape
        self.grid = (h, w)
        self.pad = max(max(abs(dy), abs(dx)) for dy, dx in self.offsets)
        ones = F.pad(torch.ones(1, 1, h, w, dtype=features[0].dtype, device=features[0].device), (self.pad,) * 4)
        padded = [F.pad(f, (self.pad,) * 4) for f in features]
        taps = []
        for dy, dx in self.offsets:
            inside = _shift(ones, self.pad, dy, dx, h, w)[:, 0]
            taps.append(torch.stack([torch.exp(-0.5 * (_shift(p, self.pad, dy, dx, h, w) - f).square().sum(1))
                                     for p, f in zip(padded, features)], dim=1) * inside[:, None])
        self.filters = torch.stack(taps, dim=2)  # (B, M, |D|, h, w)
        self.batch = b

    def apply(self, q: Tensor) -> Tensor:
        """Messages ``(B, M, C, H, W)``: per kernel m, ``Σ_{d∈D} k_m(f_i, f_{i+d}) q_{i+d}``."""
        if tuple(q.shape[-2:]) != self.size or q.shape[0] != self.batch:
            raise ValueError(f"q has shape {tuple(q.shape)}, but the box was built for batch {self.batch} and size "
                             f"{self.size}; build it again for this image.")
        h, w = self.grid
        small = downsample(q, self.blur)
        padded = F.pad(small, (self.pad,) * 4)
        b, c = small.shape[:2]
        acc = small.new_zeros(b, self.filters.shape[1], c, h, w)
        for index, (dy, dx) in enumerate(self.offsets):
            acc.addcmul_(self.filters[:, :, index, None], _shift(padded, self.pad, dy, dx, h, w)[:, None])
        message = upsample(acc.reshape(b, -1, h, w), self.size)
        return message.reshape(b, -1, c, *self.size)


def build_box(name: str, features: Sequence[Tensor], filter_size: int, blur: int) -> BoxOp:
    """A :class:`BoxOp` for box ``name`` over full-resolution features ``(B, D_m, H, W)`` (pooled by ``blur`` here)."""
    size = tuple(features[0].shape[-2:])
    return BoxOp([downsample(f, blur) for f in features], range_box(name, filter_size), blur, size)
