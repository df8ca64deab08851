"""Gaussian CRF inference: an exact solve by conjugate gradient, with closed-form gradients.

Chandra & Kokkinos 2016, "Fast, Exact and Multi-Scale Inference for Semantic Image Segmentation with Deep Gaussian
CRFs", ECCV (arXiv:1603.08358): the G-CRF energy and its linear system, inference by conjugate gradient,
back-propagation through the solution in closed form, and the multi-resolution model. In DESIGN.md §3 notation,
with continuous scores X (N×C) for N pixels and C classes,

    E(X) = λ/2 Σ_i |x_i − b_i|² + 1/2 Σ_ij W_ij |x_i − x_j|²,

where b are the unary scores (here log-probabilities, :func:`unary_scores`) and W a symmetric non-negative affinity
with no self term, applied by an affinity op. The minimiser solves

    A X = λB,   A = λI + 2L,   L = D − W,   D = diag(W·1),

A is symmetric positive definite (λ > 0, L ⪰ 0), so X is unique; every class is an independent right-hand side of
the same A, and all are solved together by Jacobi-preconditioned conjugate gradient (``diag A = λ + 2D``).

**The pooled grid** (single scale, W a :class:`~crfcore.affinity.PooledOp`, the refiner's default): the system is
reduced exactly to the pooled grid and solved there by deflated conjugate gradient, one application of the grid
kernel per iteration (:class:`~crfcore.inference.grid_solve.GridReduction`).

**Multi-scale**: levels s = 0..S−1, level s+1 at half the resolution of level s (``⌈H/2⌉``), each with its own
scores B_s (B average-pooled) and affinity W_s, coupled by ``μ/2 |X_s − U X_{s+1}|²`` with U pixel replication (so
``Uᵀ`` is 2×2 sum pooling and ``UᵀU`` the diagonal of replica counts). The block system is, for each level,

    (λI + 2L_s + μ[s<S−1] I + μ[s>0] UᵀU) X_s − μ U X_{s+1} − μ Uᵀ X_{s−1} = λ B_s,

symmetric positive definite, applied matrix-free and solved jointly; the output is the finest level X_0.

**Gradients**: X = A⁻¹λB, so for a loss ℓ with g = ∂ℓ/∂X, y = A⁻¹g (A is symmetric), ∂ℓ/∂B = λy, and for any
parameter θ of A or of λ, ∂ℓ/∂θ = ∂/∂θ [yᵀ(λB − A(θ)X)] with X held fixed. No iterate of the forward solve is kept.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..affinity import AffinityOp, LocalOp, PooledOp
from ..affinity.grid import downsample
from ..affinity.sparse import WindowMatrix
from .cg import CGResult, conjugate_gradient
from .grid_solve import GridReduction
from .meanfield import UNARY_CLIP, ProgressCallback

__all__ = ["ConvergenceWarning", "CGResult", "GaussianSystem", "GridReduction", "conjugate_gradient", "gaussian_crf",
           "level_sizes", "unary_scores"]

_SYMMETRY_TOL = 1e-3  # relative asymmetry above which an op is rejected (see _check_symmetric)
GRID_MIN_PIXELS = 100_000
"""Pixels from which the grid reduction pays for its set-up (the stencil and coarse-system probes): on smaller images,
e.g. the app's drag previews, Jacobi CG on the full system is faster (0.5 MP preview at 1/4: 41 against 82 ms; full
runs break even near 65k pixels, quiet machine)."""


class ConvergenceWarning(UserWarning):
    """Conjugate gradient stopped at ``max_iter`` before reaching ``tol``; the result is approximate."""


def unary_scores(probs: Tensor) -> Tensor:
    """Unary scores b = log(clip(P, 1e-5, 1)) = −ψu, ``(B, C, H, W)``, in [−11.5, 0].

    Softmax of the G-CRF solution is unchanged by adding a per-pixel constant to b (A acts the same on every
    class), so log-probabilities and logits of the same probabilities give the same refined probabilities.
    """
    return probs.clamp(UNARY_CLIP, 1.0).log_()


def level_sizes(size: tuple[int, int], levels: int) -> list[tuple[int, int]]:
    """``(H, W)`` of each pyramid level: level s+1 is ``(⌈H_s/2⌉, ⌈W_s/2⌉)``."""
    sizes = [tuple(size)]
    for _ in range(levels - 1):
        h, w = sizes[-1]
        sizes.append((-(-h // 2), -(-w // 2)))
    return sizes


def _replicate(x: Tensor, size: tuple[int, int]) -> Tensor:
    """U: each pixel of the coarser level copied to its 2×2 block, cropped to ``size``."""
    return x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)[..., :size[0], :size[1]]


def _replicate_adjoint(x: Tensor) -> Tensor:
    """Uᵀ: sum over each 2×2 block (blocks cut by the edge sum what they have)."""
    h, w = x.shape[-2:]
    return F.avg_pool2d(F.pad(x, (0, w % 2, 0, h % 2)), 2) * 4


class GaussianSystem:
    """The matrix-free operator A of the (multi-scale) G-CRF system; see the module docstring.

    Args:
        ops: one weighted affinity op per level, finest first, each built for that level's size.
        size: ``(H, W)`` of the finest level.
        batch: B of the ops.
        lam: unary weight λ > 0 (a float or a 0-d tensor, differentiable).
        mu: inter-level coupling μ ≥ 0 (ignored with one level).
        like: a tensor giving dtype and device.

    The degrees ``D_s = W_s·1`` are computed here, in the caller's grad mode, so a differentiable ``apply``
    of the ops gives a differentiable :meth:`matvec`.
    """

    def __init__(self, ops: Sequence[AffinityOp], size: tuple[int, int], batch: int, *, lam: float | Tensor,
                 mu: float | Tensor, like: Tensor) -> None:
        self.ops = list(ops)
        self.sizes = level_sizes(size, len(self.ops))
        self.lam, self.mu = lam, mu
        self.numels = [h * w for h, w in self.sizes]
        degrees = [_degree(op, like.new_ones(batch, 1, h, w)) for op, (h, w) in zip(self.ops, self.sizes)]
        self.counts = [None] + [_replicate_adjoint(like.new_ones(1, 1, *fine)) for fine in self.sizes[:-1]]
        last = len(self.ops) - 1
        self.diagonals = []  # diag A per level (B, 1, H_s, W_s): λ + 2 D_s + μ[s<S−1] + μ[s>0] UᵀU
        for s, degree in enumerate(degrees):
            d = lam + 2 * degree
            if s < last:
                d = d + mu
            if s > 0:
                d = d + mu * self.counts[s]
            self.diagonals.append(d)

    def split(self, x: Tensor) -> list[Tensor]:
        """``(B, C, ΣN_s)`` → per level ``(B, C, H_s, W_s)`` (views)."""
        parts = torch.split(x, self.numels, dim=-1)
        return [p.unflatten(-1, hw) for p, hw in zip(parts, self.sizes)]

    def merge(self, levels: Sequence[Tensor]) -> Tensor:
        """Per level ``(B, C, H_s, W_s)`` → ``(B, C, ΣN_s)``."""
        flat = [t.flatten(-2) for t in levels]
        return flat[0] if len(flat) == 1 else torch.cat(flat, dim=-1)

    def pyramid(self, x: Tensor) -> Tensor:
        """A finest-level ``(B, C, H, W)`` tensor and its 2×2 average-pooled levels, merged: ``(B, C, ΣN_s)``."""
        levels = [x]
        for _ in self.sizes[1:]:
            levels.append(downsample(levels[-1], 2))
        return self.merge(levels)

    def diagonal(self) -> Tensor:
        """``diag A`` ``(B, 1, ΣN_s)``, positive: the Jacobi preconditioner."""
        return self.merge(self.diagonals)

    def matvec(self, x: Tensor) -> Tensor:
        """``A x`` for ``x`` ``(B, C, ΣN_s)``; differentiable when grad mode is on."""
        xs = self.split(x)
        last = len(xs) - 1
        out = []
        for s, (op, diag, xl) in enumerate(zip(self.ops, self.diagonals, xs)):
            y = torch.addcmul(op.apply(xl), diag, xl, value=-0.5).mul_(-2)  # diag·x − 2Wx
            if s < last:
                y = y - self.mu * _replicate(xs[s + 1], self.sizes[s])
            if s > 0:
                y = y - self.mu * _replicate_adjoint(xs[s - 1])
            out.append(y)
        return self.merge(out)


def _degree(op: AffinityOp, ones: Tensor) -> Tensor:
    """``W·1`` ``(B, 1, H, W)``: without autograd, for the pooled unblurred window by its sparse K on the grid
    (:class:`~crfcore.affinity.sparse.WindowMatrix`, built without a copy), where the window's own apply of one
    channel costs its gather's set-up over all k² taps of every pixel (one thread at the defaults: ~1 ms against
    ~10 ms); otherwise by ``op.apply``, differentiable in the caller's grad mode."""
    if not torch.is_grad_enabled() and isinstance(op, PooledOp) and isinstance(op.inner, LocalOp):
        window = WindowMatrix.of(op.inner)
        if window is not None:
            return op.prolong(window.apply(op.restrict(ones) / op.scale)) - op.self_term() * ones
    return op.apply(ones)


class _AdjointSolve(torch.autograd.Function):
    """Zero in the forward pass; in the backward pass maps the incoming gradient g to y = A⁻¹g.

    Added to the detached solution as ``X + _AdjointSolve(λB − A(θ)X)``: the value stays X, and autograd carries y
    through the differentiable residual ``λB − A(θ)X`` to B, λ and whatever the ops were built from.
    """

    @staticmethod
    def forward(ctx, residual: Tensor, solve: Callable[[Tensor], Tensor]) -> Tensor:
        ctx.solve = solve
        return torch.zeros_like(residual)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return ctx.solve(grad), None


def _adjoint_solver(solve: Callable[..., CGResult], tol: float, max_iter: int) -> Callable[[Tensor], Tensor]:
    def adjoint(grad: Tensor) -> Tensor:
        with torch.no_grad():
            result = solve(grad, tol=tol, max_iter=max_iter)
        if not result.converged:
            warnings.warn(_stop_message("backward", result, tol, max_iter), ConvergenceWarning, stacklevel=2)
        return result.x

    return adjoint


def _solver(system: GaussianSystem, diag: Tensor) -> Callable[..., CGResult]:
    """``solve(rhs, *, tol, max_iter, x0=None, callback=None, factor=1)`` for ``A X = factor·rhs`` on ``(B, C, ΣN_s)``
    tensors (``factor`` a float or 0-d tensor, folded into a per-pixel scale instead of a pass over rhs): the grid reduction
    for a single pooled level of at least :data:`GRID_MIN_PIXELS` pixels, Jacobi-preconditioned conjugate gradient
    on the full system otherwise."""
    size = system.sizes[0]
    if len(system.ops) == 1 and isinstance(system.ops[0], PooledOp) and size[0] * size[1] >= GRID_MIN_PIXELS:
        with torch.no_grad():
            reduction = GridReduction(system.ops[0], diag.unflatten(-1, system.sizes[0]))

        def reduced(rhs: Tensor, *, tol: float, max_iter: int, x0: Tensor | None = None,
                    callback: Callable[[int, int, Tensor], None] | None = None,
                    factor: float | Tensor = 1.0) -> CGResult:
            hook = None
            if callback is not None:
                def hook(k: int, total: int, x: Tensor) -> None:
                    callback(k, total, x.flatten(2))
            result = reduction.solve(rhs.unflatten(-1, system.sizes[0]), tol=tol, max_iter=max_iter,
                                     x0=None if x0 is None else x0.unflatten(-1, system.sizes[0]), callback=hook,
                                     factor=factor)
            return CGResult(result.x.flatten(2), result.iterations, result.residual, result.converged)

        return reduced

    def full(rhs: Tensor, *, tol: float, max_iter: int, x0: Tensor | None = None,
             callback: Callable[[int, int, Tensor], None] | None = None, factor: float | Tensor = 1.0) -> CGResult:
        rhs = rhs if isinstance(factor, float) and factor == 1.0 else factor * rhs
        return conjugate_gradient(system.matvec, rhs, diag, tol=tol, max_iter=max_iter, x0=x0, callback=callback)

    return full


def _stop_message(which: str, result: CGResult, tol: float, max_iter: int) -> str:
    return (f"G-CRF {which} conjugate gradient stopped at max_iter={max_iter} with relative residual "
            f"{result.residual:.2e} > tol={tol:g}; raise max_iter, loosen tol, or raise lam (a larger λ "
            f"makes the system better conditioned).")


def gaussian_crf(ops: AffinityOp | Sequence[AffinityOp], scores: Tensor, *, lam: float | Tensor, tol: float,
                 max_iter: int, mu: float | Tensor | None = None, x0: Tensor | None = None,
                 callback: ProgressCallback | None = None) -> Tensor:
    """Solve the (multi-scale) G-CRF for scores X; differentiable by the closed-form gradient.

    Args:
        ops: a weighted affinity op with symmetric, non-negative W and no self term (``op.apply``), or one per
            pyramid level, finest first, each built for that level (``level_sizes``).
        scores: unary scores B ``(B, C, H, W)`` (e.g. :func:`unary_scores`), differentiable.
        lam: unary weight λ > 0, differentiable if a tensor.
        tol: relative-residual tolerance ≥ 0 of conjugate gradient (also used for the backward solve).
        max_iter: conjugate-gradient iteration limit ≥ 1; stopping short of ``tol`` warns
            (:class:`ConvergenceWarning`).
        mu: coupling μ ≥ 0 between levels (λ if None); unused with one op.
        x0: warm start ``(B, C, H, W)``, e.g. a previous solution for nearby parameters (coarser levels start
            from it average-pooled); treated as a constant.
        callback: ``callback(k, max_iter, X_0)`` after conjugate-gradient iteration k, with the live finest-level
            iterate; raise :class:`~crfcore.inference.Cancelled` to stop.

    Returns:
        X ``(B, C, H, W)``, the finest level's solution; ``softmax(X, dim=1)`` are the refined probabilities.

    Raises:
        ValueError: bad shapes, out-of-range ``lam``, ``mu``, ``tol``, ``max_iter``, or an op whose W is not
            symmetric (checked with a random probe: LocalBackend with blur > 1, the lattice).
    """
    ops = [ops] if hasattr(ops, "apply") else list(ops)
    _check_args(ops, scores, lam, mu, tol, max_iter, x0)
    if isinstance(lam, Tensor):
        lam = lam.to(scores.dtype)
    mu = lam if mu is None else mu
    for level, (op, size) in enumerate(zip(ops, level_sizes(tuple(scores.shape[-2:]), len(ops)))):
        if not _symmetric_by_construction(op):
            _check_symmetric(op, level, scores.shape[0], size, scores)
    system = GaussianSystem(ops, tuple(scores.shape[-2:]), scores.shape[0], lam=lam, mu=mu, like=scores)
    scores_flat = system.pyramid(scores)
    diag = system.diagonal().detach()
    start = system.pyramid(x0.detach()) if x0 is not None else None
    n0 = system.numels[0]
    hook = None
    if callback is not None:
        def hook(k: int, total: int, x: Tensor) -> None:
            callback(k, total, x[..., :n0].unflatten(-1, system.sizes[0]))
    solve = _solver(system, diag)
    with torch.no_grad():
        result = solve(scores_flat.detach(), tol=tol, max_iter=max_iter, x0=start, callback=hook,
                       factor=lam.detach() if isinstance(lam, Tensor) else lam)
    if not result.converged:
        warnings.warn(_stop_message("forward", result, tol, max_iter), ConvergenceWarning, stacklevel=2)
    x = result.x
    if torch.is_grad_enabled():
        residual = lam * scores_flat - system.matvec(x)
        if residual.requires_grad:
            x = x + _AdjointSolve.apply(residual, _adjoint_solver(solve, tol, max_iter))
    return x[..., :n0].unflatten(-1, system.sizes[0])


def _symmetric_by_construction(op: AffinityOp) -> bool:
    """True for the ops whose W is symmetric by how they are built, so the random probe of :func:`_check_symmetric`
    (two applications with 4 columns, about a quarter of a drag preview's solve) is skipped: the unblurred window
    (each tap before the centre is a copy of the mirrored tap after it, so K is symmetric to the last bit) and the
    pooled grid around it (``U K Uᵀ/c − diag(s)`` with that K)."""
    inner = op.inner if isinstance(op, PooledOp) else op
    return isinstance(inner, LocalOp) and inner.blur == 1


def _check_symmetric(op: AffinityOp, level: int, batch: int, size: tuple[int, int], like: Tensor) -> None:
    """Raise ``ValueError`` if ``op``'s W is visibly not symmetric.

    With Rademacher probes u, v (4 columns), ``uᵀWv − vᵀWu`` has mean square ``‖W − Wᵀ‖_F²`` and ``|Wv|²`` has mean
    ``‖W‖_F²``, so their ratio estimates the relative asymmetry at the cost of two applications with 4 columns;
    rounding keeps it near 1e-6 in float32 for a symmetric W, while the asymmetric backends give 1e-2 or more.
    """
    gen = torch.Generator(device=like.device).manual_seed(0)
    u, v = (torch.randint(0, 2, (batch, 4, *size), generator=gen, device=like.device).to(like.dtype) * 2 - 1
            for _ in range(2))
    with torch.no_grad():
        wu, wv = op.apply(u), op.apply(v)
        gap = ((u * wv).flatten(2).sum(-1) - (v * wu).flatten(2).sum(-1)).square().sum()
        norm = wv.square().sum()
    if norm > 0 and float((gap / norm).sqrt()) > _SYMMETRY_TOL:
        raise ValueError(f"the affinity op of level {level} is not symmetric (‖W − Wᵀ‖/‖W‖ ≈ "
                         f"{float((gap / norm).sqrt()):.2g} by a random probe); the Gaussian CRF needs a symmetric W "
                         f"for conjugate gradient and its closed-form gradient. LocalBackend with blur > 1 and the "
                         f"permutohedral lattice are not symmetric: use PooledBackend(LocalBackend(k, 1), blur), the "
                         f"GaussianCRF default, or LocalBackend(k, 1).")


def _value(number: float | Tensor) -> float:
    return float(number.detach()) if isinstance(number, Tensor) else float(number)


def _check_args(ops: list, scores: Tensor, lam: float | Tensor, mu: float | Tensor | None, tol: float,
                max_iter: int, x0: Tensor | None) -> None:
    if not ops:
        raise ValueError("ops is empty; pass one affinity op, or one per pyramid level (finest first).")
    if scores.ndim != 4:
        raise ValueError(f"scores has shape {tuple(scores.shape)}; expected (B, C, H, W).")
    if not _value(lam) > 0 or not math.isfinite(_value(lam)):
        raise ValueError(f"lam must be a finite number > 0 (the unary weight λ), got {_value(lam)!r}.")
    if mu is not None and not _value(mu) >= 0:
        raise ValueError(f"mu must be >= 0 (the coupling between pyramid levels), got {_value(mu)!r}.")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0 (a relative residual), got {tol!r}.")
    if int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}.")
    if x0 is not None and x0.shape != scores.shape:
        raise ValueError(f"x0 has shape {tuple(x0.shape)}, but scores are {tuple(scores.shape)}; pass a previous "
                         f"solution for the same image and classes, or None.")
