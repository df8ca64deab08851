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
from ..affinity.sparse import WindowMatrix, csr_matrix, dense_columns, from_rows, sorted_columns, spmm, to_rows
from .cg import CGResult, conjugate_gradient, safe_div

__all__ = ["GridReduction"]

_COARSE_UNKNOWNS = 512
"""Most blocks of the deflation space (dense E, inverted once). At the 500×375 defaults (grid 94×125) 512 gives 5×5
blocks (475), as many CG iterations (14) as 4×4 blocks (768) for a third of the inversion."""


class GridReduction:
    """The single-scale G-CRF system with a pooled affinity, reduced exactly to its grid (module docstring).

    Args:
        op: the weighted :class:`~crfcore.affinity.PooledOp` of the system (its inner K symmetric).
        diag: ``diag A = λ + 2D`` ``(B, 1, H, W)``, positive (:meth:`GaussianSystem.diagonal`).

    Built once per system (the 3×3 stencil M from the separable weights of U; the deflation space from
    ``(2q+1)²`` probes of S, about one more application of K), then :meth:`solve` any right-hand side ``F``
    ``(B, C, H, W)``; nothing here is differentiable (the caller detaches). Inside the solve every grid vector is
    kept as rows ``(B, n, P)`` (pixels × classes, ``P = dense_columns(C)``, the extra columns zero), the layout the
    sparse products read and write, so the loop makes no layout copies.
    """

    def __init__(self, op: PooledOp, diag: Tensor) -> None:
        self.op = op
        self.coef = 2.0 / op.scale
        self.delta = diag + 2 * op.self_term()
        self.inv_delta = self.delta.reciprocal()
        self.window = WindowMatrix.of(op.inner) if isinstance(op.inner, LocalOp) else None
        self.stencil = _stencil(op, self.inv_delta)  # (B, 9, h, w): M_{J, J+d}, d row-major over {−1,0,1}²
        self.inv_m = self.stencil[:, 4:5].reciprocal()  # the Jacobi part diag(M)⁻¹
        self._inv_m_rows = self.inv_m.flatten(2).transpose(1, 2)  # (B, n, 1)
        self._m = WindowMatrix.stencil(self.stencil) if self.window is not None else None  # one product, not nine
        self.mass = [_mass_bands(small, big, self.inv_delta) for small, big in zip(op.grid, op.size)]
        self.blocks, self.coarse_factor, self.coarse_inverse = 0, None, None
        self._block_of: Tensor | None = None  # (n,) the block of each grid pixel
        self._block_sums: Tensor | None = None  # Zᵀ as a sparse (n₀, n)
        self._deflation: list[Tensor] | None = None  # sparse [SZ; KMZ] (2n, n₀) per batch item
        self._deflation_s: list[Tensor] | None = None  # its SZ rows
        self._coarse_system()

    def k_apply(self, v: Tensor) -> Tensor:
        """``K v`` for ``v`` ``(B, C, h, w)`` on the grid."""
        return self.window.apply(v) if self.window is not None else self.op.inner.apply(v)

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

    def _k_rows(self, x: Tensor) -> Tensor:
        """``K x`` for rows ``x`` ``(B, n, P)``."""
        if self.window is not None:
            return self.window.apply_rows(x)
        return to_rows(self.op.inner.apply(from_rows(x, self.op.grid, x.shape[-1])))

    def _m_rows(self, x: Tensor) -> Tensor:
        """``M x`` for rows ``x`` ``(B, n, P)``."""
        if self._m is not None:
            return self._m.apply_rows(x)
        return to_rows(self.m_apply(from_rows(x, self.op.grid, x.shape[-1])))

    def _s_rows(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(S z, K M z)`` for rows ``z``: one application of K."""
        mz = self._m_rows(z)
        kmz = self._k_rows(mz)
        return mz.sub_(self._m_rows(kmz), alpha=self.coef), kmz

    def _coarse_system(self) -> None:
        """The deflation space: block size a, ``cholesky(E)``, ``E⁻¹``, ``Zᵀ`` and the sparse ``[SZ; KMZ]``; left
        unset without a windowed K or with fewer than two blocks."""
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
        device, batch, n, n0 = ref.device, ref.shape[0], h * w, hb * wb
        by = torch.arange(h, device=device)[:, None] // a
        bx = torch.arange(w, device=device)[None, :] // a
        block_of = (by * wb + bx).reshape(-1)
        colour_of = ((by % period) * period + bx % period).reshape(-1)
        probes = ref.new_zeros(batch, n, dense_columns(period * period))  # one column per colour
        probes.scatter_(2, colour_of.view(1, n, 1).expand(batch, n, 1), 1.0)
        s_cols, km_cols = self._s_rows(probes)  # (B, n, colours) each
        order = torch.argsort(block_of, stable=True)
        counts = torch.bincount(block_of, minlength=n0)
        starts = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).to(torch.int32)
        block_sums = csr_matrix(starts, order.to(torch.int32), ref.new_ones(n), (n0, n))
        sums = torch.stack([spmm(block_sums, cols) for cols in s_cols])  # (B, n₀, colours): Σ over each colour of E_{I,·}
        index = torch.arange(n0, device=device)
        iy, ix = index // wb, index % wb
        coarse = ref.new_zeros(batch, n0, n0)
        for dy in range(-q, q + 1):
            for dx in range(-q, q + 1):
                jy, jx = iy + dy, ix + dx
                inside = (jy >= 0) & (jy < hb) & (jx >= 0) & (jx < wb)
                rows, colour = index[inside], ((jy % period) * period + jx % period)[inside]
                coarse[:, rows, (jy * wb + jx)[inside]] = sums[:, rows, colour]
        factor, info = torch.linalg.cholesky_ex(0.5 * (coarse + coarse.transpose(1, 2)))
        if bool((info != 0).any()):  # rounding broke definiteness: Jacobi alone is still a valid preconditioner
            return
        inverse = torch.cholesky_inverse(factor)
        self.blocks, self.coarse_factor, self.coarse_inverse = a, factor, 0.5 * (inverse + inverse.transpose(1, 2))
        self._block_of, self._block_sums = block_of, block_sums
        self._deflation = [_block_columns(s, km, a, q, (h, w), (hb, wb)) for s, km in zip(s_cols, km_cols)]
        self._deflation_s = [csr_matrix(m.crow_indices()[:n + 1], m.col_indices()[:m.crow_indices()[n]],
                                        m.values()[:m.crow_indices()[n]], (n, n0)) for m in self._deflation]

    def _coarse(self, v: Tensor) -> Tensor:
        """``E⁻¹ Zᵀ v`` ``(B, n₀, P)`` for rows ``v`` ``(B, n, P)``."""
        sums = [spmm(self._block_sums, item) for item in v]
        return torch.matmul(self.coarse_inverse, sums[0][None] if len(sums) == 1 else torch.stack(sums))

    def _expand(self, c: Tensor) -> Tensor:
        """``Z c`` ``(B, n, P)``: each block's row of ``c`` ``(B, n₀, P)`` for each of its pixels."""
        return c.index_select(1, self._block_of)

    def _deflated(self, c: Tensor, *, km: bool = True) -> tuple[Tensor, Tensor | None]:
        """``(SZ c, KMZ c)`` for ``c`` ``(B, n₀, P)``, each ``(B, n, P)``: one sparse product per batch item
        (``SZ c`` only, and None, with ``km=False``)."""
        n = self._block_of.numel()
        parts = [spmm(m, c[i]) for i, m in enumerate(self._deflation if km else self._deflation_s)]
        both = parts[0][None] if len(parts) == 1 else torch.stack(parts)
        return both[:, :n], both[:, n:] if km else None

    def fine_matvec(self, x: Tensor) -> Tensor:
        """``A x = Δx − (2/c) U K Uᵀ x`` for ``x`` ``(B, C, H, W)``."""
        return self.delta * x - self.coef * self.op.prolong(self.k_apply(self.op.restrict(x)))

    def _precondition(self, r: Tensor, track: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(ẑ, S ẑ, K M ẑ)`` for the preconditioned residual ``ẑ = Pᵀ diag(M)⁻¹ r`` of rows ``r`` (``K M ẑ`` None
        unless ``track``): one application of K."""
        y = r * self._inv_m_rows
        sy, kmy = self._s_rows(y)
        if self._deflation is not None:
            e = self._coarse(sy)
            sze, kmze = self._deflated(e, km=track)
            y.sub_(self._expand(e))
            sy.sub_(sze)
            if track:
                kmy.sub_(kmze)
        return y, sy, kmy if track else None

    def _fine_norms(self, r: Tensor) -> Tensor:
        """``|F − A X|`` per column ``(B, 1, P)`` from the grid residual rows ``r = g − S z``: ``(2/c)|U K r|``, with
        ``|U v|² = vᵀ(UᵀU)v`` on the grid (UᵀU is separable and tridiagonal along each axis)."""
        v = self._k_rows(r)
        return _dot(v, _mass_apply(v, self.mass, self.op.grid)).clamp_min(0).sqrt() * self.coef

    def _solution(self, scaled: Tensor, kmz: Tensor) -> Tensor:
        """``X = Δ⁻¹F + (2/c) Δ⁻¹ U K M z`` ``(B, C, H, W)`` from ``scaled = Δ⁻¹F`` and the rows ``K M z``, the sum
        written over U's output."""
        up = self.op.prolong(from_rows(kmz, self.op.grid, scaled.shape[1]))
        return torch.addcmul(scaled, up, self.inv_delta, value=self.coef, out=up)

    def _start(self, x0: Tensor) -> Tensor:
        """z with ``M z ≈ Uᵀ x0`` (so that ``Y = UᵀX`` starts at the warm start's), by a short Jacobi-preconditioned
        conjugate gradient on the well-conditioned M; any z is a valid start, this one is a good one. Rows."""
        y = self.op.restrict(x0)
        z = conjugate_gradient(lambda v: self.m_apply(v.view_as(y)).flatten(2), y.flatten(2),
                               self.stencil[:, 4:5].flatten(2), tol=1e-6, max_iter=50).x.view_as(y)
        return to_rows(z)

    def solve(self, rhs: Tensor, *, tol: float, max_iter: int, x0: Tensor | None = None,
              callback: Callable[[int, int, Tensor], None] | None = None, factor: float | Tensor = 1.0) -> CGResult:
        """Solve ``A X = F``, ``F = factor·rhs`` for ``rhs`` ``(B, C, H, W)`` (``factor`` a float or 0-d tensor, folded
        into Δ⁻¹), stopping as :func:`conjugate_gradient` does: every column's full-resolution relative residual
        ``≤ tol``, or ``max_iter`` grid iterations.

        The full-resolution residual costs one K, so it is computed only when the grid residual, times the last
        measured ratio of the two, says ``tol`` may be met. ``x0`` ``(B, C, H, W)`` is returned as it is when it
        already meets ``tol``; ``callback(k, max_iter, X_k)`` gets a fresh full-resolution iterate (for it, ``K M z``
        is carried along by recurrence; without a callback it is computed once at the end, one more K).
        """
        track = callback is not None
        rhs_norm = to_rows(_norms(rhs) * abs(factor))  # (B, 1, P)
        scale = torch.where(rhs_norm > 0, rhs_norm, torch.ones_like(rhs_norm)).reciprocal()
        if x0 is not None:
            residual = float((_norms(factor * rhs - self.fine_matvec(x0)).flatten(1)
                              * scale[:, 0, :rhs.shape[1]]).max())
            if residual <= tol:
                return CGResult(x0.clone(), 0, residual, True)
        weight = self.inv_delta if isinstance(factor, float) and factor == 1.0 else factor * self.inv_delta
        scaled = rhs * weight  # Δ⁻¹F, kept for the solution
        # Uᵀ of a channels-last copy: one thread, 21 classes at 500×375, 5 ms for the copy and 8–11 ms for Uᵀ
        # against 24–31 ms for Uᵀ of (B, C, H, W)
        g = to_rows(self.op.restrict(torch.empty_like(scaled, memory_format=torch.channels_last).copy_(scaled)))
        if x0 is None:
            z, kmz, r = torch.zeros_like(g), torch.zeros_like(g), g
        else:
            z = self._start(x0)
            sz, kmz = self._s_rows(z)
            r = g.sub_(sz)
        if self._deflation is not None:  # z ← z + Q r: the deflated start, after which Zᵀ r = 0
            c = self._coarse(r)
            sc, kmc = self._deflated(c, km=track)
            z.add_(self._expand(c))
            r.sub_(sc)
            if track:
                kmz.add_(kmc)
        grid_norm = _dot(r, r).sqrt()
        fine_norm = self._fine_norms(r)
        ratio = safe_div(fine_norm, grid_norm)
        residual, checked = float((fine_norm * scale).max()), True
        done = 0
        if residual > tol and max_iter > 0:
            p, sp, kmp = self._precondition(r, track)
            rz = _dot(r, p)
        while residual > tol and done < max_iter:
            alpha = safe_div(rz, _dot(p, sp))
            z.addcmul_(alpha, p)
            if track:
                kmz.addcmul_(alpha, kmp)
            r.addcmul_(alpha, sp, value=-1.0)
            done += 1
            grid_norm = _dot(r, r).sqrt()
            residual, checked = float((ratio * grid_norm * scale).max()), False
            if residual <= tol:
                fine_norm = self._fine_norms(r)
                ratio = safe_div(fine_norm, grid_norm)
                residual, checked = float((fine_norm * scale).max()), True
            if callback is not None:
                callback(done, max_iter, self._solution(scaled, kmz))
            if residual <= tol or done >= max_iter:
                break
            pz, spz, kmpz = self._precondition(r, track)
            rz_next = _dot(r, pz)
            beta = safe_div(rz_next, rz)
            torch.addcmul(pz, beta, p, out=p)  # p ← ẑ + β p, one pass
            torch.addcmul(spz, beta, sp, out=sp)
            if track:
                torch.addcmul(kmpz, beta, kmp, out=kmp)
            rz = rz_next
        if not checked:
            residual = float((self._fine_norms(r) * scale).max())
        if not track:
            kmz = self._k_rows(self._m_rows(z))
        return CGResult(self._solution(scaled, kmz), done, residual, residual <= tol)


def _stencil(op: PooledOp, inv_delta: Tensor) -> Tensor:
    """``M = UᵀΔ⁻¹U`` as nine grid images ``(B, 9, h, w)``: entry d = 3(dy+1) + (dx+1) holds ``M_{J, J+(dy,dx)}``
    (0 off the grid). U is separable, ``u_J(i) = uʸ_{jy}(iy) uˣ_{jx}(ix)``, so with ``Aʸ_dy`` (h×H) the products
    ``uʸ_j(iy) uʸ_{j+dy}(iy)`` along y (0 where j + dy is off the grid) and ``Aˣ_dx`` (w×W) those along x, tap (dy, dx)
    is ``Aʸ_dy Δ⁻¹ Aˣ_dxᵀ``: twelve small dense products, nothing at full resolution but reading Δ⁻¹ three times."""
    (h, w), (big_h, big_w) = op.grid, op.size
    uy, ux = _interpolation_rows(h, big_h, inv_delta), _interpolation_rows(w, big_w, inv_delta)
    inv = inv_delta[:, 0]  # (B, H, W)
    taps = []
    for dy in (-1, 0, 1):
        rows = torch.matmul(_neighbour_products(uy, dy), inv)  # (B, h, W)
        for dx in (-1, 0, 1):
            taps.append(torch.matmul(rows, _neighbour_products(ux, dx).t()))  # (B, h, w)
    return torch.stack(taps, dim=1)


def _interpolation_rows(small: int, big: int, like: Tensor) -> Tensor:
    """``(small, big)``: row j holds the weights of sample j in the 1-D bilinear upsampling from ``small`` to ``big``
    samples (``upsample``'s pixel-centred weights, the same interpolation along each axis)."""
    basis = torch.eye(small, dtype=like.dtype, device=like.device)[None]
    return F.interpolate(basis, size=big, mode="linear", align_corners=False)[0]


def _neighbour_products(u: Tensor, d: int) -> Tensor:
    """``(small, big)``: row j is ``u_j ⊙ u_{j+d}``, 0 where ``j + d`` is off the grid."""
    out = torch.zeros_like(u)
    n = u.shape[0]
    if d >= 0:
        out[:n - d] = u[:n - d] * u[d:]
    else:
        out[-d:] = u[-d:] * u[:n + d]
    return out


def _block_columns(s_cols: Tensor, km_cols: Tensor, a: int, q: int, grid: tuple[int, int],
                   blocks: tuple[int, int]) -> Tensor:
    """The sparse ``[SZ; KMZ]`` ``(2n, n₀)`` of one batch item from its colour probes, rows ``(n, colours)``.

    Blocks of one colour are ``2q+1`` blocks apart along each axis, farther than S (and K M) reach, so at pixel j
    the probe of colour c holds the column of the one block of that colour within q blocks of j's own. Row j has
    one entry per block offset ``(dy, dx)`` in ``[−q, q]²``, in that order; offsets past the block grid are
    explicit zeros (:func:`~crfcore.affinity.sparse.sorted_columns` keeps the columns sorted).
    """
    h, w = grid
    hb, wb = blocks
    period = 2 * q + 1
    device = s_cols.device
    by = torch.arange(h, device=device) // a
    bx = torch.arange(w, device=device) // a
    offsets = torch.arange(-q, q + 1, device=device)
    ty, tx = by[:, None] + offsets[None, :], bx[:, None] + offsets[None, :]  # (h, period), (w, period)
    colour = ((ty % period)[:, None, :, None] * period + (tx % period)[None, :, None, :]).reshape(h * w, -1)
    columns = (ty[:, None, :, None] * wb + tx[None, :, None, :]).reshape(h * w, -1)
    off = (((ty < 0) | (ty >= hb))[:, None, :, None] | ((tx < 0) | (tx >= wb))[None, :, None, :]).reshape(h * w, -1)
    index = sorted_columns(columns.to(torch.int32), off)
    values = [cols.gather(1, colour).masked_fill_(off, 0.0) for cols in (s_cols, km_cols)]
    entries = period * period
    rows = torch.arange(0, 2 * h * w * entries + 1, entries, dtype=torch.int32, device=device)
    return csr_matrix(rows, torch.cat([index, index]), torch.cat(values).reshape(-1), (2 * h * w, hb * wb))


def _mass_bands(small: int, big: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """Diagonal ``(small,)`` and first off-diagonal ``(small − 1,)`` of ``UᵀU`` for the 1-D bilinear upsampling U
    from ``small`` to ``big`` samples (``upsample``'s pixel-centred weights, the same interpolation along each axis)."""
    u = _interpolation_rows(small, big, like)
    return u.square().sum(1), (u[:-1] * u[1:]).sum(1)


def _mass_apply(v: Tensor, mass: list[tuple[Tensor, Tensor]], grid: tuple[int, int]) -> Tensor:
    """``UᵀU v`` for rows ``v`` ``(B, n, P)``, one tridiagonal product per axis."""
    (dy, ey), (dx, ex) = mass
    h, w = grid
    v = v.view(v.shape[0], h, w, v.shape[-1])
    t = v * dy[:, None, None]
    t[:, 1:].addcmul_(v[:, :-1], ey[:, None, None])
    t[:, :-1].addcmul_(v[:, 1:], ey[:, None, None])
    out = t * dx[:, None]
    out[:, :, 1:].addcmul_(t[:, :, :-1], ex[:, None])
    out[:, :, :-1].addcmul_(t[:, :, 1:], ex[:, None])
    return out.view(v.shape[0], h * w, v.shape[-1])


def _norms(x: Tensor) -> Tensor:
    """Per-column 2-norms of ``(B, C, H, W)``, ``(B, C, 1, 1)``."""
    return torch.linalg.vector_norm(x.flatten(2), dim=-1)[..., None, None]


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-column inner products of rows ``(B, n, P)``, ``(B, 1, P)``."""
    return torch.linalg.vecdot(a, b, dim=1).unsqueeze(1)
