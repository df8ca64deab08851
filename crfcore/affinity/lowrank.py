"""Affinities of reduced rank, for the Gaussian CRF's conjugate-gradient solve.

Two operators whose matrix ``W`` is symmetric (conjugate gradient and the closed-form gradient of
:mod:`crfcore.inference.gaussian` need that), non-negative and without self term:

- **Learned embeddings** (Chandra, Usunier & Kokkinos 2017, "Dense and Low-Rank Gaussian CRFs Using Deep
  Embeddings", ICCV): non-negative embeddings ``E_m`` of D_m dimensions per pixel give
  ``W = Σ_m w_m (E_m E_mᵀ − diag(E_m E_mᵀ))``, a fully connected affinity applied in O(N·D·C) as ``E (Eᵀ Q)``
  without ever forming the N×N matrix.
- **A pooled grid**: the Gaussian kernels ``K`` of an inner backend evaluated on a grid downsampled b times, brought
  back by bilinear interpolation ``U`` (N × n) and its adjoint, ``W = U K Uᵀ / c − diag(U K Uᵀ / c)`` with
  ``c = N / n``, so rows sum as ``K·1`` does. Its rank is at most n = N/b². :class:`~crfcore.affinity.LocalOp` with
  ``blur > 1`` computes ``U K P`` with P a box average, which is not symmetric; this is its symmetric counterpart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from .grid import downsample, upsample_planes
from .local import check_features

__all__ = ["LowRankBackend", "LowRankOp", "PooledBackend", "PooledOp"]


def _as_weights(weights: Tensor, like: Tensor, count: int) -> Tensor:
    weights = torch.as_tensor(weights, dtype=like.dtype, device=like.device)
    if weights.shape != (count,):
        raise ValueError(f"weights must have shape ({count},) (one per kernel), got {tuple(weights.shape)}.")
    return weights


@dataclass(frozen=True)
class LowRankBackend:
    """Builds :class:`LowRankOp` from non-negative embeddings, one ``(B, D_m, H, W)`` tensor per kernel.

    Embeddings must be non-negative so that every ``W_ij ≥ 0`` and the Laplacian ``D − W`` is positive
    semi-definite (pass a network's output through ``relu`` or ``softplus``).
    """

    def build(self, features: Sequence[Tensor]) -> "LowRankOp":
        """``features``: ``[(B, D_m, H, W)]`` non-negative embeddings sharing B, H, W; weights start at 1.

        Raises:
            ValueError: an empty list, mismatched shapes, or negative entries.
        """
        features = list(features)
        shapes = {(f.shape[0], *f.shape[2:]) for f in features}
        if not features or len(shapes) != 1 or any(f.ndim != 4 for f in features):
            raise ValueError(f"features must be a non-empty list of (B, D, H, W) embeddings sharing B, H, W; "
                             f"got shapes {[tuple(f.shape) for f in features]}.")
        for m, emb in enumerate(features):
            if bool((emb < 0).any()):
                raise ValueError(f"embedding {m} has negative entries (min {float(emb.min()):.3g}); the low-rank "
                                 f"affinity needs E ≥ 0 so that W = EEᵀ ≥ 0. Apply relu or softplus first.")
        return LowRankOp(features)


class LowRankOp:
    """``W Q = Σ_m w_m (E_m (E_mᵀ Q) − diag(E_m E_mᵀ) Q)``, O(N·D·C) per application."""

    def __init__(self, embeddings: list[Tensor], weights: Tensor | None = None) -> None:
        self.embeddings = [e.flatten(2) for e in embeddings]  # (B, D_m, N)
        self.size = tuple(embeddings[0].shape[-2:])
        self.self_terms = [e.square().sum(1, keepdim=True) for e in self.embeddings]  # (B, 1, N)
        ref = self.embeddings[0]
        self.weights = weights if weights is not None else torch.ones(len(embeddings), dtype=ref.dtype,
                                                                      device=ref.device)

    def weighted(self, weights: Tensor) -> "LowRankOp":
        op = LowRankOp.__new__(LowRankOp)
        op.embeddings, op.size, op.self_terms = self.embeddings, self.size, self.self_terms
        op.weights = _as_weights(weights, self.embeddings[0], len(self.embeddings))
        return op

    def apply(self, q: Tensor) -> Tensor:
        """``(B, C, H, W)`` → ``(B, C, H, W)``."""
        b, c, h, w = q.shape
        if (h, w) != self.size or b != self.embeddings[0].shape[0]:
            raise ValueError(f"q has shape {tuple(q.shape)}, but the operator was built for batch "
                             f"{self.embeddings[0].shape[0]} and size {self.size}.")
        flat = q.reshape(b, c, h * w)
        out = None
        for weight, emb, diag in zip(self.weights, self.embeddings, self.self_terms):
            term = torch.bmm(torch.bmm(flat, emb.transpose(1, 2)), emb) - diag * flat  # (B, C, N)
            out = weight * term if out is None else out + weight * term
        return out.reshape(b, c, h, w)


@dataclass(frozen=True)
class PooledBackend:
    """Runs an inner backend on a grid pooled ``blur`` times, symmetrically (see the module docstring).

    Args:
        inner: a backend of Gaussian kernels ``exp(−|f_I − f_J|²/2)`` over the features it is given, e.g.
            ``LocalBackend(filter_size, blur=1)`` (window k ≥ 3) or ``ExactBackend()``; the self term of
            ``U K Uᵀ`` is computed from that formula and removed.
        blur: downsampling factor b ≥ 1 (features are averaged over b×b blocks, as LocalBackend does).
    """

    inner: Any
    blur: int

    def __post_init__(self) -> None:
        if int(self.blur) != self.blur or self.blur < 1:
            raise ValueError(f"blur must be an integer >= 1, got {self.blur!r}.")

    def build(self, features: Sequence[Tensor]) -> "PooledOp":
        """One ``(B, D_m, H, W)`` feature tensor per kernel (divided by θ); all share B, H, W."""
        features = check_features(features)
        size = tuple(features[0].shape[-2:])
        pooled = [downsample(f, self.blur) for f in features]
        self_terms = [_bilinear_self_term(f, size) for f in pooled]
        return PooledOp(self.inner.build(pooled), self_terms, size, tuple(pooled[0].shape[-2:]))


class PooledOp:
    """``W Q = U K Uᵀ Q / c − s ⊙ Q`` with ``s = diag(U K Uᵀ) / c``; ``K`` is the inner operator on the grid."""

    def __init__(self, inner: Any, self_terms: list[Tensor], size: tuple[int, int], grid: tuple[int, int],
                 weights: Tensor | None = None) -> None:
        self.inner = inner
        self.self_terms = self_terms  # per kernel (B, 1, H, W), unweighted, already divided by c
        self.size = size
        self.grid = grid
        ref = self_terms[0]
        self.weights = weights if weights is not None else torch.ones(len(self_terms), dtype=ref.dtype,
                                                                      device=ref.device)

    def weighted(self, weights: Tensor) -> "PooledOp":
        weights = _as_weights(weights, self.self_terms[0], len(self.self_terms))
        return PooledOp(self.inner.weighted(weights), self.self_terms, self.size, self.grid, weights)

    @property
    def scale(self) -> float:
        """``c = N / n``: full-resolution pixels per grid pixel."""
        return (self.size[0] * self.size[1]) / (self.grid[0] * self.grid[1])

    def restrict(self, q: Tensor) -> Tensor:
        """``Uᵀ q``: ``(B, C, H, W)`` → ``(B, C, h, w)`` on the grid (the exact adjoint of :meth:`prolong`)."""
        return _upsample_adjoint(q, self.grid)

    def prolong(self, y: Tensor) -> Tensor:
        """``U y``: ``(B, C, h, w)`` → ``(B, C, H, W)``, bilinear."""
        return upsample_planes(y, self.size)

    def self_term(self) -> Tensor:
        """``s = diag(U K Uᵀ) / c`` with the current weights, ``(B, 1, H, W)``."""
        total = self.weights[0] * self.self_terms[0]
        for w, s in zip(self.weights[1:], self.self_terms[1:]):
            total = total + w * s
        return total

    def apply(self, q: Tensor) -> Tensor:
        """``(B, C, H, W)`` → ``(B, C, H, W)``."""
        if tuple(q.shape[-2:]) != self.size:
            raise ValueError(f"q has shape {tuple(q.shape)}, but the operator was built for size {self.size}.")
        message = self.prolong(self.inner.apply(self.restrict(q) / self.scale))
        return message - self.self_term() * q


def _upsample_adjoint(q: Tensor, grid: tuple[int, int]) -> Tensor:
    """``Uᵀ q``: the exact adjoint of :func:`~crfcore.affinity.local.upsample` to ``q``'s size, ``(B, C, h, w)``."""
    b, c, h, w = q.shape
    return torch.ops.aten.upsample_bilinear2d_backward(q, [h, w], [b, c, *grid], False, None, None)


def _axis(small: int, big: int, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Bilinear taps of ``upsample`` along one axis (align_corners=False): first and second source index
    ``(big,)`` int64 and the second one's weight ``(big,)``."""
    src = ((torch.arange(big, dtype=torch.float64, device=like.device) + 0.5) * (small / big) - 0.5).clamp_min(0)
    first = src.floor().long()
    second = (first + 1).clamp_max(small - 1)
    return first, second, (src - first).to(like.dtype)


def _bilinear_self_term(features: Tensor, size: tuple[int, int]) -> Tensor:
    """``diag(U K Uᵀ) / c`` for ``K_IJ = exp(−|f_I − f_J|²/2)`` (K_II = 0), ``(B, 1, H, W)``.

    Each output pixel has at most 2×2 grid parents with separable bilinear weights ``u``; its diagonal entry is
    ``Σ_{P≠Q} u_P u_Q K_PQ`` over ordered pairs of distinct parents. Distinct parents are grid neighbours (across,
    down, or diagonally), so K is evaluated once per neighbouring grid pair and gathered per pixel; where both
    parents along an axis are the same grid pixel (the clamped edge) that axis's second weight is 0.
    """
    h, w = features.shape[-2:]
    (y0, y1, fy), (x0, x1, fx) = _axis(h, size[0], features), _axis(w, size[1], features)
    fy, fx = fy * (y0 != y1), fx * (x0 != x1)  # one parent along the axis: its weight is 1
    gy, gx = (1 - fy) * fy, (1 - fx) * fx  # products of the two distinct weights along each axis

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        return torch.exp(-0.5 * (a - b).square().sum(1, keepdim=True))

    def at(grid_values: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        """``grid_values`` (B, 1, h', w') gathered at pixel rows × cols (indices clamped into range)."""
        rows = rows.clamp_max(grid_values.shape[-2] - 1)
        cols = cols.clamp_max(grid_values.shape[-1] - 1)
        return grid_values.index_select(-2, rows).index_select(-1, cols)

    total = torch.zeros(features.shape[0], 1, *size, dtype=features.dtype, device=features.device)
    if w > 1:  # pairs along a row: (y, x0)–(y, x0+1) in the top and bottom parent rows
        across = kernel(features[..., :, :-1], features[..., :, 1:])
        total = total + gx[None, :] * ((1 - fy).square()[:, None] * at(across, y0, x0)
                                       + fy.square()[:, None] * at(across, y1, x0))
    if h > 1:  # pairs along a column, in the left and right parent columns
        down = kernel(features[..., :-1, :], features[..., 1:, :])
        total = total + gy[:, None] * ((1 - fx).square()[None, :] * at(down, y0, x0)
                                       + fx.square()[None, :] * at(down, y0, x1))
    if h > 1 and w > 1:  # the two diagonals of the 2×2 parents
        diagonal = kernel(features[..., :-1, :-1], features[..., 1:, 1:])
        anti = kernel(features[..., :-1, 1:], features[..., 1:, :-1])
        total = total + gy[:, None] * gx[None, :] * (at(diagonal, y0, x0) + at(anti, y0, x0))
    return total * (2 * (h * w) / (size[0] * size[1]))
