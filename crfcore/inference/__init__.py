"""Inference over a built affinity operator: mean field (iterative) and the Gaussian CRF solve (exact)."""

from .gaussian import CGResult, ConvergenceWarning, GaussianSystem, conjugate_gradient, gaussian_crf, unary_scores
from .meanfield import (Cancelled, ProgressCallback, compatibility_transform, hard_pixels, held_pixels, mean_field,
                        to_memory_format, unary_energy)

__all__ = ["Cancelled", "ProgressCallback", "compatibility_transform", "hard_pixels", "held_pixels", "mean_field",
           "to_memory_format", "unary_energy", "CGResult", "ConvergenceWarning", "GaussianSystem", "conjugate_gradient", "gaussian_crf",
           "unary_scores"]
