"""Pairwise features of the Gaussian kernels (Krähenbühl & Koltun 2011, eq. 3).

A kernel over features f is ``k(i, j) = exp(-|f_i - f_j|² / 2)``; the features here are already divided by their
ranges θ, so position in pixels / θα and colour in 0..255 levels / θβ. x is the column, y the row.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["position_grid", "appearance_features", "smoothness_features", "FeatureTransform"]


def position_grid(batch: int, height: int, width: int, *, device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.float32) -> Tensor:
    """Pixel coordinates ``(B, 2, H, W)``: channel 0 is x (column), channel 1 is y (row), in pixels."""
    ys = torch.arange(height, device=device, dtype=dtype)
    xs = torch.arange(width, device=device, dtype=dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y]).unsqueeze(0).expand(batch, 2, height, width)


def appearance_features(image: Tensor, theta_alpha: float | Tensor, theta_beta: float | Tensor) -> Tensor:
    """Bilateral features ``(x/θα, y/θα, r/θβ, g/θβ, b/θβ)``.

    Args:
        image: ``(B, 3, H, W)`` float, RGB in 0..255.
        theta_alpha: spatial range, pixels (a float or a 0-d tensor, differentiable).
        theta_beta: colour range, colour levels.

    Returns:
        ``(B, 5, H, W)``, same dtype and device as ``image``.
    """
    b, _, h, w = image.shape
    pos = position_grid(b, h, w, device=image.device, dtype=image.dtype)
    return torch.cat([pos / theta_alpha, image / theta_beta], dim=1)


def smoothness_features(image: Tensor, theta_gamma: float | Tensor) -> Tensor:
    """Position features ``(x/θγ, y/θγ)``, ``(B, 2, H, W)``, for an image ``(B, 3, H, W)`` (only its shape is used)."""
    b, _, h, w = image.shape
    return position_grid(b, h, w, device=image.device, dtype=image.dtype) / theta_gamma


class FeatureTransform(nn.Module):
    """A learnable linear map of the features ("+T", ConvCRF §5.2): ``k = exp(-|A(f_i - f_j)|²/2)``.

    Initialised to the identity, so an untrained transform leaves the classic kernel unchanged.

    Shape:
        - Input: ``(B, D, H, W)``
        - Output: ``(B, D, H, W)``
    """

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.matrix = nn.Parameter(torch.eye(dims))

    def forward(self, features: Tensor) -> Tensor:
        return torch.einsum("ed,bdhw->behw", self.matrix.to(features.dtype), features)
