"""The single-scale G-CRF system with a pooled affinity, solved exactly on the pooled grid (DESIGN.md §3).

With ``W = U K Uᵀ/c − diag(s)`` (U bilinear, N×n; K the kernel on the grid of n = N/b² pixels; c = N/n),
``A = Δ − (2/c) U K Uᵀ`` with the diagonal ``Δ = λ + 2D + 2s``. For ``A X = F``, ``Y = UᵀX`` satisfies
``Y = UᵀΔ⁻¹F + (2/c) M K Y`` with ``M = UᵀΔ⁻¹U``, a 3×3 stencil on the grid (every pixel has 2×2 bilinear
parents). Writing ``Y = M z`` gives the grid system

    S z = g,   S = M − (2/c) M K M = M (M⁻¹ − (2/c) K) M,   g = UᵀΔ⁻¹F,   X = Δ⁻¹(F + (2/c) U K M z),

symmetric positive definite because A is (``xᵀAx = vᵀ(M⁻¹ − (2/c)K)v`` for ``x = Δ⁻¹U M⁻¹ v``), and its residual
maps exactly to the full-resolution one, ``F − A X = −(2/c) U K (g − S z)``. :class:`GridReduction` solves it by
conjugate gradient: the same solution and stopping rule (relative residual of ``A X = F``), one application of K
per iteration and no full-resolution work inside the loop; K is applied as a sparse matrix
(:class:`~crfcore.affinity.sparse.WindowMatrix`) where it fits.

Preconditioning: Jacobi on M (``diag(M)⁻¹``, damping rough error) and deflation of the smooth error CG is slow on
(Tang, Nabben, Vuik & Erlangga 2009, "Comparison of Two-Level Preconditioners Derived from Deflation, Domain
Decomposition and Multigrid Methods", J. Sci. Comput. 39, the "DEF2" variant): with ``Z`` the indicators of the
a×a blocks of the grid, ``E = ZᵀSZ`` (dense, ≤ 512 blocks, inverted once), ``Q = Z E⁻¹ Zᵀ`` and ``P = I − S Q``,
CG starts at ``z₀ = Q g`` and is preconditioned by ``Pᵀ diag(M)⁻¹``, so every residual has zero block sums. ``SZ``
and ``KMZ`` are read from ``(2q+1)²`` probes of S (blocks q apart in each axis are the farthest S couples, S
reaching 2 + k//2 grid pixels) and kept as sparse matrices, so the projection costs no extra K: with
``y = diag(M)⁻¹ r`` the preconditioned residual is ``y − Z e``, ``e = E⁻¹ Zᵀ S y``, and its product with S is
``S y − SZ e``; search directions and their products with S and K M follow by the same recurrence. At 500×375,
21 classes, defaults: 14 iterations where the additive two-level preconditioner ``diag(M)⁻¹ + Z E⁻¹ Zᵀ`` took 20.
Without a windowed K (the exact kernel couples everything) it is Jacobi alone.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..affinity import LocalOp, PooledOp
from ..affinity.sparse import WindowMatrix, csr_matrix, dense_columns
from .cg import CGResult, column_dot, conjugate_gradient, safe_div

__all__ = ["GridReduction"]

_COARSE_UNKNOWNS = 512
"""Most blocks of the deflation space (dense E, inverted once). At the 500×375 defaults (grid 94×125) 512 gives 5×5
blocks (475), as many CG iterations (14) as 4×4 blocks (768) for a third of the inversion."""


class GridReduction:
    """The single-scale G-CRF system with a pooled affinity, reduced exactly to its grid (module docstring).

    Args:
        op: the weighted :class:`~crfcore.affinity.PooledOp` of the system (its inner K symmetric).
        diag: ``diag A = λ + 2D`` ``(B, 1, H, W)``, positive (:meth:`GaussianSystem.diagonal`).

    Built once per system (the 3×3 stencil M from nine probes through U, Δ⁻¹ and Uᵀ; the deflation space from
    ``(2q+1)²`` probes of S, about one more application of K), then :meth:`solve` any right-hand side ``F``
    ``(B, C, H, W)``; nothing here is differentiable (the caller detaches).
    """

    def __init__(self, op: PooledOp, diag: Tensor) -> None:
        self.op = op
        self.coef = 2.0 / op.scale
        self.delta = diag + 2 * op.self_term()
        self.inv_delta = self.delta.reciprocal()
        self.window = WindowMatrix.of(op.inner) if isinstance(op.inner, LocalOp) else None
        self.stencil = _stencil(op, self.inv_delta)  # (B, 9, h, w): M_{J, J+d}, d row-major over {−1,0,1}²
        self.inv_m = self.stencil[:, 4:5].reciprocal()  # the Jacobi part diag(M)⁻¹
        self._m = WindowMatrix.stencil(self.stencil) if self.window is not None else None  # one product, not nine
        self.mass = [_mass_bands(small, big, self.inv_delta) for small, big in zip(op.grid, op.size)]
        self.blocks, self.coarse_factor, self.coarse_inverse = 0, None, None
        self._deflation: list[Tensor] | None = None  # sparse [SZ; KMZ] per batch item
        self._deflation_s: list[Tensor] | None = None  # its SZ rows
        self._reach_blocks = 0
        self._coarse_system()

    def k_apply(self, v: Tensor) -> Tensor:
        """``K v`` for ``v`` ``(B, C, h, w)`` on the grid."""
        return self.window.apply(v) if self.window is not None else self.op.inner.apply(v)

    def _coarse_system(self) -> None:
        """The deflation space: block size a, ``cholesky(E)``, ``E⁻¹`` and the sparse ``[SZ; KMZ]``; left unset
        without a windowed K or with fewer than two blocks."""
        inner = self.op.inner
        if not isinstance(inner, LocalOp) or inner.blur != 1:
            return
        h, w = self.op.grid
        reach = 2 + inner.filter_size // 2  # S = M K M couples grid pixels this far apart (Chebyshev)
        a = max(-(-reach // 2), math.ceil(math.sqrt(h * w / _COARSE_UNKNOWNS)))
        hb, wb = -(-h // a), -(-w // a)
        if hb * wb < 2:
            return
        q = (reach + a - 1) // a  # blocks this far apart (per axis) are the farthest S couples
        period = 2 * q + 1
        ref = self.inv_delta
        ys = torch.arange(h, device=ref.device)[:, None] // a
        xs = torch.arange(w, device=ref.device)[None, :] // a
        colours = torch.arange(period * period, device=ref.device)[:, None, None]
        probes = ((ys % period) * period + xs % period == colours).to(ref.dtype)
        batch = ref.shape[0]
        s_cols, km_cols = self._s_apply(probes.expand(batch, *probes.shape))  # (B, colours, h, w) each
        sums = _block_sum(s_cols, a).flatten(2)  # (B, colours, n₀): Σ over each colour of (ZᵀSZ)_{I, ·}
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
            return
        inverse = torch.cholesky_inverse(factor)
        self.blocks, self.coarse_factor, self.coarse_inverse = a, factor, 0.5 * (inverse + inverse.transpose(1, 2))
        self._reach_blocks = q
        self._deflation = [_block_columns(s, km, a, q, (hb, wb)) for s, km in zip(s_cols, km_cols)]
        n = h * w
        self._deflation_s = [csr_matrix(m.crow_indices()[:n + 1], m.col_indices()[:m.crow_indices()[n]],
                                        m.values()[:m.crow_indices()[n]], (n, m.shape[1])) for m in self._deflation]

    def _coarse(self, v: Tensor) -> Tensor:
        """``E⁻¹ Zᵀ v`` ``(B, C, n₀)`` for ``v`` ``(B, C, h, w)``."""
        return torch.matmul(_block_sum(v, self.blocks).flatten(2), self.coarse_inverse)

    def _expand(self, c: Tensor, like: Tensor) -> Tensor:
        """``Z c``: each block's value over its a×a pixels, ``(B, C, h, w)``."""
        a = self.blocks
        h, w = like.shape[-2:]
        blocks = c.unflatten(-1, (-(-h // a), -(-w // a)))
        return blocks.repeat_interleave(a, -2).repeat_interleave(a, -1)[..., :h, :w]

    def _deflated(self, c: Tensor, like: Tensor, *, km: bool = True) -> tuple[Tensor, Tensor | None]:
        """``(SZ c, KMZ c)`` for ``c`` ``(B, C, n₀)``, each ``(B, C, h, w)``: one sparse product per batch item
        (``SZ c`` only, and None, with ``km=False``)."""
        b, classes = c.shape[:2]
        h, w = like.shape[-2:]
        n, a, q = h * w, self.blocks, self._reach_blocks
        hb, wb = -(-h // a), -(-w // a)
        padded = c.new_zeros(b, hb + 2 * q, wb + 2 * q, dense_columns(classes))
        padded[:, q:q + hb, q:q + wb, :classes] = c.unflatten(-1, (hb, wb)).permute(0, 2, 3, 1)
        parts = [(m @ padded[i].flatten(0, 1))[:, :classes].t().contiguous()  # (C, 2n) or (C, n) each
                 for i, m in enumerate(self._deflation if km else self._deflation_s)]
        both = parts[0][None] if b == 1 else torch.stack(parts)
        return both[..., :n].unflatten(-1, (h, w)), both[..., n:].unflatten(-1, (h, w)) if km else None

    def m_apply(self, z: Tensor) -> Tensor:
        """``M z`` for ``z`` ``(B, C, h, w)``."""
        if self._m is not None:
            return self._m.apply(z)
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
        return self.delta * x - self.coef * self.op.prolong(self.k_apply(self.op.restrict(x)))

    def _s_apply(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(S z, K M z)``: one application of K."""
        mz = self.m_apply(z)
        kmz = self.k_apply(mz)
        return mz.sub_(self.m_apply(kmz), alpha=self.coef), kmz

    def _precondition(self, r: Tensor, track: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(ẑ, S ẑ, K M ẑ)`` for the preconditioned residual ``ẑ = Pᵀ diag(M)⁻¹ r`` (``K M ẑ`` None unless
        ``track``): one application of K."""
        y = r * self.inv_m
        sy, kmy = self._s_apply(y)
        if self._deflation is not None:
            e = self._coarse(sy)
            sze, kmze = self._deflated(e, r, km=track)
            y.sub_(self._expand(e, r))
            sy.sub_(sze)
            if track:
                kmy.sub_(kmze)
        return y, sy, kmy if track else None

    def _fine_norms(self, r: Tensor) -> Tensor:
        """``|F − A X|`` per column ``(B, C, 1, 1)`` from the grid residual ``r = g − S z``: ``(2/c)|U K r|``, with
        ``|U v|² = vᵀ(UᵀU)v`` on the grid (UᵀU is separable and tridiagonal along each axis)."""
        v = self.k_apply(r)
        return _dot4(v, _mass_apply(v, self.mass)).clamp_min(0).sqrt() * self.coef

    def _solution(self, rhs: Tensor, kmz: Tensor) -> Tensor:
        return torch.add(rhs, self.op.prolong(kmz), alpha=self.coef).mul_(self.inv_delta)

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
        already meets ``tol``; ``callback(k, max_iter, X_k)`` gets a fresh full-resolution iterate (for it, ``K M z``
        is carried along by recurrence; without a callback it is computed once at the end, one more K).
        """
        track = callback is not None
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
        if self._deflation is not None:  # z ← z + Q r: the deflated start, after which Zᵀ r = 0
            c = self._coarse(r)
            sc, kmc = self._deflated(c, r, km=track)
            z.add_(self._expand(c, r))
            r.sub_(sc)
            if track:
                kmz.add_(kmc)
        grid_norm = _norms(r)
        fine_norm = self._fine_norms(r)
        ratio = safe_div(fine_norm, grid_norm)
        residual, checked = float((fine_norm * scale).max()), True
        done = 0
        if residual > tol and max_iter > 0:
            p, sp, kmp = self._precondition(r, track)
            rz = _dot4(r, p)
        while residual > tol and done < max_iter:
            alpha = safe_div(rz, _dot4(p, sp))
            z.addcmul_(alpha, p)
            if track:
                kmz.addcmul_(alpha, kmp)
            r.addcmul_(alpha, sp, value=-1.0)
            done += 1
            grid_norm = _norms(r)
            residual, checked = float((ratio * grid_norm * scale).max()), False
            if residual <= tol:
                fine_norm = self._fine_norms(r)
                ratio = safe_div(fine_norm, grid_norm)
                residual, checked = float((fine_norm * scale).max()), True
            if callback is not None:
                callback(done, max_iter, self._solution(rhs, kmz))
            if residual <= tol or done >= max_iter:
                break
            pz, spz, kmpz = self._precondition(r, track)
            rz_next = _dot4(r, pz)
            beta = safe_div(rz_next, rz)
            p.mul_(beta).add_(pz)
            sp.mul_(beta).add_(spz)
            if track:
                kmp.mul_(beta).add_(kmpz)
            rz = rz_next
        if not checked:
            residual = float((self._fine_norms(r) * scale).max())
        if not track:
            kmz = self.k_apply(self.m_apply(z))
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


def _block_columns(s_cols: Tensor, km_cols: Tensor, a: int, q: int, blocks: tuple[int, int]) -> Tensor:
    """The sparse ``[SZ; KMZ]`` ``(2n, n₀')`` of one batch item from its colour probes ``(colours, h, w)``.

    Blocks of one colour are ``2q+1`` blocks apart along each axis, farther than S (and K M) reach, so at pixel j
    the probe of colour c holds the column of the one block of that colour within q blocks of j's own. Row j has
    one entry per block offset ``(dy, dx)`` in ``[−q, q]²``, in that order, which is increasing column order;
    columns index the block grid padded by q blocks on every side (``n₀' = (hb + 2q)(wb + 2q)``), whose padding
    blocks do not exist and get the probe's 0 there, so the product takes ``c`` zero-padded (:meth:`_deflated`).
    """
    _, h, w = s_cols.shape
    hb, wb = blocks
    period = 2 * q + 1
    wp = wb + 2 * q
    device = s_cols.device
    by = torch.arange(h, device=device) // a
    bx = torch.arange(w, device=device) // a
    offsets = torch.arange(-q, q + 1, device=device)
    ty, tx = by[None, :] + offsets[:, None], bx[None, :] + offsets[:, None]  # (period, h), (period, w)
    colour = ((ty % period)[:, None, :, None] * period + (tx % period)[None, :, None, :]).reshape(-1, h, w)
    columns = ((ty + q)[:, None, :, None] * wp + (tx + q)[None, :, None, :]).reshape(-1, h * w).t()  # (n, period²)
    values = [cols.gather(0, colour).reshape(-1, h * w).t() for cols in (s_cols, km_cols)]
    entries = period * period
    rows = torch.arange(0, 2 * h * w * entries + 1, entries, dtype=torch.int32, device=device)
    index = columns.reshape(-1).to(torch.int32)
    return csr_matrix(rows, torch.cat([index, index]), torch.cat(values).reshape(-1), (2 * h * w, (hb + 2 * q) * wp))


def _mass_bands(small: int, big: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """Diagonal ``(small,)`` and first off-diagonal ``(small − 1,)`` of ``UᵀU`` for the 1-D bilinear upsampling U
    from ``small`` to ``big`` samples (``upsample``'s pixel-centred weights, the same interpolation along each axis)."""
    basis = torch.eye(small, dtype=like.dtype, device=like.device)[None]
    u = F.interpolate(basis, size=big, mode="linear", align_corners=False)[0]  # (small, big): row i = U e_i
    return u.square().sum(1), (u[:-1] * u[1:]).sum(1)


def _mass_apply(v: Tensor, mass: list[tuple[Tensor, Tensor]]) -> Tensor:
    """``UᵀU v`` for ``v`` ``(B, C, h, w)``, one tridiagonal product per axis."""
    (dy, ey), (dx, ex) = mass
    t = v * dy[:, None]
    t[..., 1:, :].addcmul_(v[..., :-1, :], ey[:, None])
    t[..., :-1, :].addcmul_(v[..., 1:, :], ey[:, None])
    out = t * dx
    out[..., 1:].addcmul_(t[..., :-1], ex)
    out[..., :-1].addcmul_(t[..., 1:], ex)
    return out


def _block_sum(x: Tensor, size: int) -> Tensor:
    """Sums over ``size×size`` blocks of ``(B, C, h, w)``, ``(B, C, ⌈h/size⌉, ⌈w/size⌉)`` (edge blocks sum what
    they have)."""
    return F.avg_pool2d(x, size, ceil_mode=True, divisor_override=1)


def _norms(x: Tensor) -> Tensor:
    """Per-column 2-norms of ``(B, C, H, W)``, ``(B, C, 1, 1)``."""
    return _dot4(x, x).sqrt()


def _dot4(a: Tensor, b: Tensor) -> Tensor:
    """Per-column inner products of ``(B, C, H, W)`` tensors, ``(B, C, 1, 1)``."""
    return column_dot(a.flatten(2), b.flatten(2)).unsqueeze(-1)
