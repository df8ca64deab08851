"""Affinity backends: "multiply by the kernel matrix" (DESIGN.md §2).

A backend turns pairwise features into an operator once per image and feature set; the operator is then applied to
many label distributions. Every backend returns ``Σ_{j≠i} Σ_m w_m k_m(f_i, f_j) q_j`` for every pixel i (no self
term), with ``k_m(f_i, f_j) = exp(-|f_i - f_j|²/2)``.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from torch import Tensor

from .exact import ExactBackend, ExactOp
from .lattice import LatticeBackend, LatticeOp
from .local import LocalBackend, LocalOp
from .lowrank import LowRankBackend, LowRankOp, PooledBackend, PooledOp
from .sparse import WindowMatrix

__all__ = ["AffinityOp", "Backend", "ExactBackend", "ExactOp", "LatticeBackend", "LatticeOp", "LocalBackend",
           "LocalOp", "LowRankBackend", "LowRankOp", "PooledBackend", "PooledOp", "WindowMatrix"]


class AffinityOp(Protocol):
    """A built operator. ``apply`` must not recompute what ``build`` made."""

    def weighted(self, weights: Tensor) -> "AffinityOp":
        """The same kernels with per-kernel weights ``(M,)`` (differentiable), sharing what was built."""

    def apply(self, q: Tensor) -> Tensor:
        """``(B, C, H, W)`` → ``(B, C, H, W)``: the weighted kernel sum applied to ``q``, no self term; a new tensor
        (mean field overwrites it in place)."""


class Backend(Protocol):
    def build(self, features: Sequence[Tensor]) -> AffinityOp:
        """One ``(B, D_m, H, W)`` feature tensor per kernel m (already divided by θ); weights start at 1."""
