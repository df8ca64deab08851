"""The Gaussian kernels' learnable parameters, shared by the refiners built on them (DESIGN.md §3)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..features import FeatureTransform, appearance_features, smoothness_features

__all__ = ["GaussianKernels"]


class GaussianKernels(nn.Module):
    """The appearance and smoothness kernels' learnable parameters (Krähenbühl & Koltun 2011, eq. 3).

    ``k(i,j) = w1·exp(−|p_i−p_j|²/2θα² − |I_i−I_j|²/2θβ²) + w2·exp(−|p_i−p_j|²/2θγ²)``; with ``learn_features`` each
    kernel's features pass through a learnable linear map (identity at start, or ``params.feature_transforms`` when a
    tuned preset sets them; they then apply even without ``learn_features``).
    """

    def __init__(self, params: Any, *, learn_features: bool = False) -> None:
        super().__init__()
        self.w_appearance = nn.Parameter(torch.tensor(float(params.w_appearance)))
        self.w_smoothness = nn.Parameter(torch.tensor(float(params.w_smoothness)))
        self.log_theta_alpha = nn.Parameter(torch.tensor(math.log(params.theta_alpha)))
        self.log_theta_beta = nn.Parameter(torch.tensor(math.log(params.theta_beta)))
        self.log_theta_gamma = nn.Parameter(torch.tensor(math.log(params.theta_gamma)))
        preset = getattr(params, "feature_transforms", "identity")
        self.transforms = None
        if learn_features or preset != "identity":  # a tuned preset's "+T" matrices run with or without learning
            self.transforms = nn.ModuleList([FeatureTransform(5), FeatureTransform(2)])
            if preset != "identity":
                shapes = [(len(m), len(m[0])) for m in preset]
                if shapes != [(5, 5), (2, 2)]:
                    raise ValueError(f"feature_transforms must be a 5×5 appearance and a 2×2 smoothness matrix, "
                                     f"got shapes {shapes}; use 'identity' or a preset written by crfcore tune.")
                for transform, matrix in zip(self.transforms, preset):
                    transform.matrix.data.copy_(torch.tensor(matrix))
            self.transforms.requires_grad_(learn_features)

    def features(self, image: Tensor) -> list[Tensor]:
        """``[(B, 5, H, W) appearance, (B, 2, H, W) smoothness]`` for an image ``(B, 3, H, W)`` in 0..255."""
        dtype = image.dtype
        feats = [appearance_features(image, self.log_theta_alpha.exp().to(dtype), self.log_theta_beta.exp().to(dtype)),
                 smoothness_features(image, self.log_theta_gamma.exp().to(dtype))]
        if self.transforms is not None:
            feats = [t(f) for t, f in zip(self.transforms, feats)]
        return feats

    def weights(self) -> Tensor:
        """``(2,)``: (w1, w2)."""
        return torch.stack([self.w_appearance, self.w_smoothness])

    def values(self) -> dict[str, float]:
        """Current values under their params.py names."""
        return {"w_appearance": self.w_appearance.item(), "w_smoothness": self.w_smoothness.item(),
                "theta_alpha": self.log_theta_alpha.exp().item(), "theta_beta": self.log_theta_beta.exp().item(),
                "theta_gamma": self.log_theta_gamma.exp().item()}
