"""Brute-force dense affinity: the test oracle for every other backend.

Builds the full N×N kernel matrix ``K_ij = Σ_m w_m exp(-|f_i - f_j|²/2)`` (optionally truncated to a window and
normalised as DenseCRF does), so it is exact but O(N²) in memory: small images only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from torch import Tensor

__all__ = ["ExactBackend", "ExactOp", "MAX_PIXELS"]

MAX_PIXELS = 16_384  # N×N float64 for N = 16384 is 2 GiB: beyond that use a real backend
Normalization = Literal["none", "per_pixel", "symmetric"]


@dataclass(frozen=True)
class ExactBackend:
    """Dense kernel matrices.

    Args:
        window: if set (odd k), keep only pairs with ``|dx|, |dy| ≤ k//2`` (the ConvCRF truncation).
        normalization: ``"none"``; ``"per_pixel"`` ``D⁻¹K``; ``"symmetric"`` ``D^-1/2 K D^-1/2``, where
            ``D = K·1`` includes the self term ``k_ii = 1`` (as pydensecrf). The self term is removed afterwards.
    """

    window: int | None = None
    normalization: Normalization = "none"

    def build(self, features: Sequence[Tensor]) -> "ExactOp":
        features = list(features)
        b, _, h, w = features[0].shape
        if h * w > MAX_PIXELS:
            raise ValueError(f"ExactBackend is O(N²): {h}×{w} = {h * w} pixels is over its {MAX_PIXELS}; "
                             f"use LocalBackend or the lattice backend.")
        mask = None
        if self.window is not None:
            ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            ys, xs = ys.reshape(-1), xs.reshape(-1)
            r = self.window // 2
            mask = ((ys[:, None] - ys[None, :]).abs() <= r) & ((xs[:, None] - xs[None, :]).abs() <= r)
            mask = mask.to(features[0].device)
        kernels = []
        for f in features:
            flat = f.reshape(b, f.shape[1], h * w).transpose(1, 2)  # (B, N, D)
            k = torch.exp(-0.5 * torch.cdist(flat, flat).square())
            if mask is not None:
                k = k * mask
            kernels.append(_normalize(k, self.normalization))
        return ExactOp(torch.stack(kernels, dim=1), (h, w))


def _normalize(k: Tensor, mode: Normalization) -> Tensor:
    """Normalise a ``(B, N, N)`` kernel (self term included), then drop the self term."""
    if mode == "symmetric":
        d = k.sum(-1).rsqrt()
        k = d[:, :, None] * k * d[:, None, :]
    elif mode == "per_pixel":
        k = k / k.sum(-1, keepdim=True)
    elif mode != "none":
        raise ValueError(f"{mode!r} is not a valid normalization. Valid values are 'none', 'per_pixel', "
                         f"'symmetric'.")
    return k - torch.diag_embed(torch.diagonal(k, dim1=-2, dim2=-1))


class ExactOp:
    """Dense operator ``(B, M, N, N)``; ``apply`` is one matrix product."""

    def __init__(self, kernels: Tensor, size: tuple[int, int], weights: Tensor | None = None) -> None:
        self.kernels = kernels
        self.size = size
        self.weights = weights if weights is not None else torch.ones(kernels.shape[1], dtype=kernels.dtype,
                                                                      device=kernels.device)

    def weighted(self, weights: Tensor) -> "ExactOp":
        return ExactOp(self.kernels, self.size, torch.as_tensor(weights, dtype=self.kernels.dtype))

    @property
    def matrix(self) -> Tensor:
        """The weighted kernel matrix ``(B, N, N)``, no self term."""
        return torch.einsum("m,bmij->bij", self.weights, self.kernels)

    def apply(self, q: Tensor) -> Tensor:
        b, c, h, w = q.shape
        out = torch.einsum("bij,bcj->bci", self.matrix, q.reshape(b, c, h * w))
        return out.reshape(b, c, h, w)
