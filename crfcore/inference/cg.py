"""Preconditioned conjugate gradient on many right-hand sides of one symmetric positive definite operator.

Hestenes & Stiefel 1952, "Methods of Conjugate Gradients for Solving Linear Systems", J. Res. NBS 49(6); with a
diagonal (Jacobi) preconditioner, every ``(b, c)`` column its own system with its own step sizes. Used by the
Gaussian CRF (:mod:`crfcore.inference.gaussian`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

__all__ = ["CGResult", "MatVec", "column_dot", "conjugate_gradient", "safe_div"]

MatVec = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class CGResult:
    """Output of :func:`conjugate_gradient`.

    Attributes:
        x: the solution, same shape as the right-hand side.
        iterations: iterations run (0 when the start already met ``tol``).
        residual: the largest relative residual ``|r|/|rhs|`` over the columns when it stopped.
        converged: ``residual <= tol``.
    """

    x: Tensor
    iterations: int
    residual: float
    converged: bool


def conjugate_gradient(matvec: MatVec, rhs: Tensor, diag: Tensor, *, tol: float, max_iter: int,
                       x0: Tensor | None = None,
                       callback: Callable[[int, int, Tensor], None] | None = None) -> CGResult:
    """Jacobi-preconditioned conjugate gradient on many right-hand sides of one SPD operator.

    Args:
        matvec: ``x ↦ A x`` for ``x`` shaped like ``rhs``; A symmetric positive definite.
        rhs: ``(B, C, N)``; each ``(b, c)`` column is its own system (its own step sizes).
        diag: ``(B, 1, N)`` or ``(B, C, N)``, positive: the preconditioner ``diag A``.
        tol: stop when every column has ``|r| ≤ tol·|rhs|`` (a zero column is solved by zero).
        max_iter: iteration limit ≥ 0; the result says whether ``tol`` was met (no warning here).
        x0: start, shaped like ``rhs`` (zeros if None): a previous solution makes a warm start.
        callback: ``callback(k, max_iter, x)`` after iteration k; ``x`` is the live iterate (copy it to keep it).
            Raising (e.g. :class:`~crfcore.inference.Cancelled`) stops the solve.
    """
    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    r = rhs - matvec(x) if x0 is not None else rhs.clone()
    rhs_sq = column_dot(rhs, rhs)
    scale = torch.where(rhs_sq > 0, rhs_sq, torch.ones_like(rhs_sq)).rsqrt()
    inv_diag = diag.reciprocal()
    z = r * inv_diag
    p = z.clone()
    rz = column_dot(r, z)
    residual = float((column_dot(r, r).sqrt() * scale).max())
    done = 0
    while residual > tol and done < max_iter:
        ap = matvec(p)
        alpha = safe_div(rz, column_dot(p, ap))
        x.addcmul_(alpha, p)
        r.addcmul_(alpha, ap, value=-1.0)
        torch.mul(r, inv_diag, out=z)
        rz_next = column_dot(r, z)
        p.mul_(safe_div(rz_next, rz)).add_(z)
        rz = rz_next
        done += 1
        residual = float((column_dot(r, r).sqrt() * scale).max())
        if callback is not None:
            callback(done, max_iter, x)
    return CGResult(x, done, residual, residual <= tol)


def column_dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-column inner products of ``(B, C, N)`` tensors, ``(B, C, 1)`` (a batched matrix product, without the
    temporary of ``(a * b).sum(-1)``)."""
    return torch.einsum("bcn,bcn->bc", a, b).unsqueeze(-1)


def safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` with 0 where ``den`` is 0 (a column already solved exactly)."""
    return torch.where(den != 0, num / torch.where(den != 0, den, torch.ones_like(den)), torch.zeros_like(num))
