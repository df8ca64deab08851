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

**The pooled grid** (single scale, W a :class:`~crfcore.affinity.PooledOp`, the refiner's default): with
``W = U K Uᵀ/c − diag(s)`` (U bilinear, N×n; K the kernel on the grid of n = N/b² pixels; c = N/n),
``A = Δ − (2/c) U K Uᵀ`` with the diagonal ``Δ = λ + 2D + 2s``. For ``A X = F``, ``Y = UᵀX`` satisfies
``Y = UᵀΔ⁻¹F + (2/c) M K Y`` with ``M = UᵀΔ⁻¹U``, a 3×3 stencil on the grid (every pixel has 2×2 bilinear
parents). Writing ``Y = M z`` gives the grid system

    S z = g,   S = M − (2/c) M K M = M (M⁻¹ − (2/c) K) M,   g = UᵀΔ⁻¹F,   X = Δ⁻¹(F + (2/c) U K M z),

symmetric positive definite because A is (``xᵀAx = vᵀ(M⁻¹ − (2/c)K)v`` for ``x = Δ⁻¹U M⁻¹ v``), and its residual
maps exactly to the full-resolution one, ``F − A X = −(2/c) U K (g − S z)``. :class:`GridReduction` solves it by
conjugate gradient: the same solution and stopping rule (relative residual of ``A X = F``), one application of K
per iteration and no full-resolution work inside the loop. Its preconditioner is two-level (additive):
``diag(M)⁻¹ + Rᵀ S₀⁻¹ R`` with R the sum over a×a blocks of the grid and ``S₀ = R S Rᵀ`` dense (≤ 1024 blocks,
Cholesky once), read from ``(2q+1)²`` probes of S (blocks q apart in each axis are the farthest S couples, S
reaching 2 + k//2 grid pixels): the Jacobi part damps rough error, the block part the smooth error CG is slow on.
Without a windowed K (the exact kernel couples everything) it is ``diag(M)⁻¹`` alone.

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
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..affinity import AffinityOp, LocalOp, PooledOp
from ..affinity.grid import downsample
from .meanfield import ProgressCallback, unary_energy

__all__ = ["ConvergenceWarning", "CGResult", "GaussianSystem", "GridReduction", "conjugate_gradient", "gaussian_crf",
           "level_sizes", "unary_scores"]

MatVec = Callable[[Tensor], Tensor]
_SYMMETRY_TOL = 1e-3  # relative asymmetry above which an op is rejected (see _check_symmetric)
GRID_MIN_PIXELS = 100_000
"""Pixels from which the grid reduction pays for its set-up (the stencil and coarse-system probes): on smaller images,
e.g. the app's drag previews, Jacobi CG on the full system is faster (0.5 MP preview at 1/4: 41 against 82 ms; full
runs break even near 65k pixels, quiet machine)."""
_COARSE_UNKNOWNS = 1024  # most blocks of the two-level preconditioner's dense coarse system (Cholesky, ~0.4 GFLOP)


class ConvergenceWarning(UserWarning):
    """Conjugate gradient stopped at ``max_iter`` before reaching ``tol``; the result is approximate."""


def unary_scores(probs: Tensor) -> Tensor:
    """Unary scores b = log(clip(P, 1e-5, 1)) = −ψu, ``(B, C, H, W)``, in [−11.5, 0].

    Softmax of the G-CRF solution is unchanged by adding a per-pixel constant to b (A acts the same on every
    class), so log-probabilities and logits of the same probabilities give the same refined probabilities.
    """
    return -unary_energy(probs)


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
    rhs_sq = _dot(rhs, rhs)
    scale = torch.where(rhs_sq > 0, rhs_sq, torch.ones_like(rhs_sq)).rsqrt()
    inv_diag = diag.reciprocal()
    z = r * inv_diag
    p = z.clone()
    rz = _dot(r, z)
    residual = float((_dot(r, r).sqrt() * scale).max())
    done = 0
    while residual > tol and done < max_iter:
        ap = matvec(p)
        alpha = _safe_div(rz, _dot(p, ap))
        x.addcmul_(alpha, p)
        r.addcmul_(alpha, ap, value=-1.0)
        torch.mul(r, inv_diag, out=z)
        rz_next = _dot(r, z)
        p.mul_(_safe_div(rz_next, rz)).add_(z)
        rz = rz_next
        done += 1
        residual = float((_dot(r, r).sqrt() * scale).max())
        if callback is not None:
            callback(done, max_iter, x)
    return CGResult(x, done, residual, residual <= tol)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-column inner products of ``(B, C, N)`` tensors, ``(B, C, 1)`` (a batched matrix product, without the
    temporary of ``(a * b).sum(-1)``)."""
    return torch.einsum("bcn,bcn->bc", a, b).unsqueeze(-1)


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` with 0 where ``den`` is 0 (a column already solved exactly)."""
    return torch.where(den != 0, num / torch.where(den != 0, den, torch.ones_like(den)), torch.zeros_like(num))


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
        degrees = [op.apply(like.new_ones(batch, 1, h, w)) for op, (h, w) in zip(self.ops, self.sizes)]
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


class GridReduction:
    """The single-scale G-CRF system with a pooled affinity, reduced exactly to its grid (module docstring).

    Args:
        op: the weighted :class:`~crfcore.affinity.PooledOp` of the system (its inner K symmetric).
        diag: ``diag A = λ + 2D`` ``(B, 1, H, W)``, positive (:meth:`GaussianSystem.diagonal`).

    Built once per system (the 3×3 stencil M from nine probes through U, Δ⁻¹ and Uᵀ; the coarse system of the
    two-level preconditioner from ``(2q+1)²`` probes of S, about one more application of K), then :meth:`solve`
    any right-hand side ``F`` ``(B, C, H, W)``; nothing here is differentiable (the caller detaches).
    """

    def __init__(self, op: PooledOp, diag: Tensor) -> None:
        self.op = op
        self.coef = 2.0 / op.scale
        self.delta = diag + 2 * op.self_term()
        self.inv_delta = self.delta.reciprocal()
        self.stencil = _stencil(op, self.inv_delta)  # (B, 9, h, w): M_{J, J+d}, d row-major over {−1,0,1}²
        self.inv_m = self.stencil[:, 4:5].reciprocal()  # the Jacobi part diag(M)⁻¹
        self.blocks, self.coarse_factor = self._coarse_system()

    def _coarse_system(self) -> tuple[int, Tensor | None]:
        """``(a, cholesky(R S Rᵀ))`` of the two-level preconditioner, ``(0, None)`` without a windowed K."""
        inner = self.op.inner
        if not isinstance(inner, LocalOp) or inner.blur != 1:
            return 0, None
        h, w = self.op.grid
        reach = 2 + inner.filter_size // 2  # S = M K M couples grid pixels this far apart (Chebyshev)
        a = max(-(-reach // 2), math.ceil(math.sqrt(h * w / _COARSE_UNKNOWNS)))
        hb, wb = -(-h // a), -(-w // a)
        if hb * wb < 2:
            return 0, None
        q = (reach + a - 1) // a  # blocks this far apart (per axis) are the farthest S couples
        period = 2 * q + 1
        ref = self.inv_delta
        ys = torch.arange(h, device=ref.device)[:, None] // a
        xs = torch.arange(w, device=ref.device)[None, :] // a
        colours = torch.arange(period * period, device=ref.device)[:, None, None]
        probes = ((ys % period) * period + xs % period == colours).to(ref.dtype)
        batch = ref.shape[0]
        applied, _ = self._s_apply(probes.expand(batch, *probes.shape))
        sums = _block_sum(applied, a).flatten(2)  # (B, colours, n₀): Σ over each colour of (R S Rᵀ)_{I, ·}
        n0 = hb * wb
        index = torch.arange(n0, device=ref.device)
        iy, ix = index // wb, index % wb
        coarse = ref.new_zeros(batch, n0, n0)
        for dy in range(-q, q + 1):
            for dx in range(-q, q + 1):
                jy, jx = iy + dy, ix + dx
                inside = (jy >= 0) & (jy < hb) & (jx >= 0) & (jx < wb)
                rows, colour = index[inside], ((jy % period) * period + jx % period)[inside]
                coarse[:, rows, (jy * wb + jx)[inside]] = sums[:, colour, rows]
        factor, info = torch.linalg.cholesky_ex(0.5 * (coarse + coarse.transpose(1, 2)))
        if bool((info != 0).any()):  # rounding broke definiteness: Jacobi alone is still a valid preconditioner
            return 0, None
        return a, factor

    def precondition(self, r: Tensor) -> Tensor:
        """The two-level preconditioner ``diag(M)⁻¹ r + Rᵀ S₀⁻¹ R r`` for ``r`` ``(B, C, h, w)``."""
        out = r * self.inv_m
        if self.coarse_factor is None:
            return out
        h, w = r.shape[-2:]
        summed = _block_sum(r, self.blocks)
        solved = torch.cholesky_solve(summed.flatten(2).transpose(1, 2), self.coarse_factor)
        blocks = solved.transpose(1, 2).reshape(summed.shape)
        return out.add_(blocks.repeat_interleave(self.blocks, -2).repeat_interleave(self.blocks, -1)[..., :h, :w])

    def m_apply(self, z: Tensor) -> Tensor:
        """``M z`` for ``z`` ``(B, C, h, w)``."""
        h, w = z.shape[-2:]
        padded = F.pad(z, (1, 1, 1, 1))
        out = self.stencil[:, 4:5] * z
        for d in range(9):
            if d != 4:
                dy, dx = divmod(d, 3)
                out.addcmul_(self.stencil[:, d:d + 1], padded[..., dy:dy + h, dx:dx + w])
        return out

    def fine_matvec(self, x: Tensor) -> Tensor:
        """``A x = Δx − (2/c) U K Uᵀ x`` for ``x`` ``(B, C, H, W)``."""
        return self.delta * x - self.coef * self.op.prolong(self.op.inner.apply(self.op.restrict(x)))

    def _s_apply(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(S z, K M z)``: one application of K."""
        mz = self.m_apply(z)
        kmz = self.op.inner.apply(mz)
        return mz.sub_(self.m_apply(kmz), alpha=self.coef), kmz

    def _fine_norms(self, r: Tensor) -> Tensor:
        """``|F − A X|`` per column ``(B, C, 1, 1)`` from the grid residual ``r = g − S z``."""
        return _norms(self.op.prolong(self.op.inner.apply(r))) * self.coef

    def _solution(self, rhs: Tensor, kmz: Tensor) -> Tensor:
        return self.inv_delta * (rhs + self.coef * self.op.prolong(kmz))

    def _start(self, x0: Tensor) -> Tensor:
        """z with ``M z ≈ Uᵀ x0`` (so that ``Y = UᵀX`` starts at the warm start's), by a short Jacobi-preconditioned
        conjugate gradient on the well-conditioned M; any z is a valid start, this one is a good one."""
        y = self.op.restrict(x0)
        return conjugate_gradient(lambda v: self.m_apply(v.view_as(y)).flatten(2), y.flatten(2),
                                  self.stencil[:, 4:5].flatten(2), tol=1e-6, max_iter=50).x.view_as(y)

    def solve(self, rhs: Tensor, *, tol: float, max_iter: int, x0: Tensor | None = None,
              callback: Callable[[int, int, Tensor], None] | None = None) -> CGResult:
        """Solve ``A X = rhs`` for ``rhs`` ``(B, C, H, W)``, stopping as :func:`conjugate_gradient` does: every
        column's full-resolution relative residual ``≤ tol``, or ``max_iter`` grid iterations.

        The full-resolution residual costs one K, so it is computed only when the grid residual, times the last
        measured ratio of the two, says ``tol`` may be met. ``x0`` ``(B, C, H, W)`` is returned as it is when it
        already meets ``tol``; ``callback(k, max_iter, X_k)`` gets a fresh full-resolution iterate.
        """
        rhs_norm = _norms(rhs)
        scale = torch.where(rhs_norm > 0, rhs_norm, torch.ones_like(rhs_norm)).reciprocal()
        if x0 is not None:
            residual = float((_norms(rhs - self.fine_matvec(x0)) * scale).max())
            if residual <= tol:
                return CGResult(x0.clone(), 0, residual, True)
        g = self.op.restrict(self.inv_delta * rhs)
        if x0 is None:
            z, kmz, r = torch.zeros_like(g), torch.zeros_like(g), g.clone()
        else:
            z = self._start(x0)
            sz, kmz = self._s_apply(z)
            r = g - sz
        grid_norm = _norms(r)
        fine_norm = self._fine_norms(r)
        ratio = _safe_div(fine_norm, grid_norm)
        residual, checked = float((fine_norm * scale).max()), True
        pz = self.precondition(r)
        p = pz.clone()
        rz = _dot4(r, pz)
        done = 0
        while residual > tol and done < max_iter:
            sp, kmp = self._s_apply(p)
            alpha = _safe_div(rz, _dot4(p, sp))
            z.addcmul_(alpha, p)
            kmz.addcmul_(alpha, kmp)
            r.addcmul_(alpha, sp, value=-1.0)
            pz = self.precondition(r)
            rz_next = _dot4(r, pz)
            p.mul_(_safe_div(rz_next, rz)).add_(pz)
            rz = rz_next
            done += 1
            grid_norm = _norms(r)
            residual, checked = float((ratio * grid_norm * scale).max()), False
            if residual <= tol:
                fine_norm = self._fine_norms(r)
                ratio = _safe_div(fine_norm, grid_norm)
                residual, checked = float((fine_norm * scale).max()), True
            if callback is not None:
                callback(done, max_iter, self._solution(rhs, kmz))
        if not checked:
            residual = float((self._fine_norms(r) * scale).max())
        return CGResult(self._solution(rhs, kmz), done, residual, residual <= tol)


def _stencil(op: PooledOp, inv_delta: Tensor) -> Tensor:
    """``M = UᵀΔ⁻¹U`` as nine grid images ``(B, 9, h, w)``: entry d = 3(dy+1) + (dx+1) holds ``M_{J, J+(dy,dx)}``
    (0 off the grid). Read from nine probes, one per colour ``(y mod 3, x mod 3)``: among the 3×3 neighbours of J
    (the support of M's row J) exactly one pixel has each colour."""
    h, w = op.grid
    ys = torch.arange(h, device=inv_delta.device)[:, None]
    xs = torch.arange(w, device=inv_delta.device)[None, :]
    colours = torch.arange(9, device=inv_delta.device)[:, None, None]
    probes = ((ys % 3) * 3 + xs % 3 == colours).to(inv_delta.dtype)
    batch = inv_delta.shape[0]
    sums = op.restrict(inv_delta * op.prolong(probes.expand(batch, 9, h, w)))  # Σ over each colour of M_{J, ·}
    taps = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            inside = ((ys + dy >= 0) & (ys + dy < h) & (xs + dx >= 0) & (xs + dx < w)).to(inv_delta.dtype)
            colour = (((ys + dy) % 3) * 3 + (xs + dx) % 3).expand(h, w)
            taps.append(sums.gather(1, colour.expand(batch, 1, h, w)) * inside)
    return torch.cat(taps, dim=1)


def _block_sum(x: Tensor, size: int) -> Tensor:
    """Sums over ``size×size`` blocks of ``(B, C, h, w)``, ``(B, C, ⌈h/size⌉, ⌈w/size⌉)`` (edge blocks sum what
    they have)."""
    return F.avg_pool2d(x, size, ceil_mode=True, divisor_override=1)


def _norms(x: Tensor) -> Tensor:
    """Per-column 2-norms of ``(B, C, H, W)``, ``(B, C, 1, 1)``."""
    return _dot4(x, x).sqrt()


def _dot4(a: Tensor, b: Tensor) -> Tensor:
    """Per-column inner products of ``(B, C, H, W)`` tensors, ``(B, C, 1, 1)``."""
    return _dot(a.flatten(2), b.flatten(2)).unsqueeze(-1)


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
    """``solve(rhs, *, tol, max_iter, x0=None, callback=None)`` on ``(B, C, ΣN_s)`` tensors: the grid reduction
    for a single pooled level of at least :data:`GRID_MIN_PIXELS` pixels, Jacobi-preconditioned conjugate gradient
    on the full system otherwise."""
    size = system.sizes[0]
    if len(system.ops) == 1 and isinstance(system.ops[0], PooledOp) and size[0] * size[1] >= GRID_MIN_PIXELS:
        with torch.no_grad():
            reduction = GridReduction(system.ops[0], diag.unflatten(-1, system.sizes[0]))

        def reduced(rhs: Tensor, *, tol: float, max_iter: int, x0: Tensor | None = None,
                    callback: Callable[[int, int, Tensor], None] | None = None) -> CGResult:
            hook = None
            if callback is not None:
                def hook(k: int, total: int, x: Tensor) -> None:
                    callback(k, total, x.flatten(2))
            result = reduction.solve(rhs.unflatten(-1, system.sizes[0]), tol=tol, max_iter=max_iter,
                                     x0=None if x0 is None else x0.unflatten(-1, system.sizes[0]), callback=hook)
            return CGResult(result.x.flatten(2), result.iterations, result.residual, result.converged)

        return reduced

    def full(rhs: Tensor, *, tol: float, max_iter: int, x0: Tensor | None = None,
             callback: Callable[[int, int, Tensor], None] | None = None) -> CGResult:
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
    rhs = lam * system.pyramid(scores)
    diag = system.diagonal().detach()
    start = system.pyramid(x0.detach()) if x0 is not None else None
    n0 = system.numels[0]
    hook = None
    if callback is not None:
        def hook(k: int, total: int, x: Tensor) -> None:
            callback(k, total, x[..., :n0].unflatten(-1, system.sizes[0]))
    solve = _solver(system, diag)
    with torch.no_grad():
        result = solve(rhs.detach(), tol=tol, max_iter=max_iter, x0=start, callback=hook)
    if not result.converged:
        warnings.warn(_stop_message("forward", result, tol, max_iter), ConvergenceWarning, stacklevel=2)
    x = result.x
    if torch.is_grad_enabled():
        residual = rhs - system.matvec(x)
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
