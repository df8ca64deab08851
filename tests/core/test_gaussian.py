"""Gaussian CRF (issue 5): the conjugate-gradient solve, its closed-form gradient, the multi-scale system and the
reduced-rank affinities, each against an independent dense reference.

References are assembled here with ``ExactBackend`` (the N×N kernel) or by index arithmetic, and solved with
``torch.linalg.solve`` in float64; none reuses the solver's own operators.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import crfcore
from crfcore import Cancelled
from crfcore.affinity import ExactBackend, LocalBackend, LowRankBackend, PooledBackend, WindowMatrix
from crfcore.affinity.sparse import to_rows
from crfcore.affinity.grid import downsample
from crfcore.features import appearance_features, smoothness_features
from crfcore.inference import ConvergenceWarning, gaussian_crf, unary_scores
from crfcore.inference.gaussian import GaussianSystem, GridReduction, _degree, conjugate_gradient
from crfcore.params import GaussianCRFParams
from crfcore.refiners import GaussianCRF

D64 = torch.float64


def _image(h: int, w: int, batch: int = 1) -> torch.Tensor:
    """Two flat colour regions plus noise, ``(B, 3, H, W)`` in 0..255."""
    img = torch.zeros(batch, 3, h, w, dtype=D64)
    img[:, 0, :, : w // 2] = 200.0
    img[:, 2, :, w // 2:] = 180.0
    return (img + 20 * torch.rand(batch, 3, h, w, dtype=D64)).clamp(0, 255)


def _features(img: torch.Tensor, log_thetas: torch.Tensor | None = None) -> list[torch.Tensor]:
    t = log_thetas.exp() if log_thetas is not None else torch.tensor([3.0, 40.0, 1.5], dtype=D64)
    return [appearance_features(img, t[0], t[1]), smoothness_features(img, t[2])]


def _dense_matrix(op, batch: int, h: int, w: int) -> torch.Tensor:
    """W ``(B, N, N)`` of any op, by applying it to every basis vector (column j of W is W e_j)."""
    n = h * w
    basis = torch.eye(n, dtype=D64).reshape(1, n, h, w).expand(batch, n, h, w)
    return op.apply(basis).reshape(batch, n, n).transpose(1, 2)


def _dense_system(weight_matrix: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """A = λI + 2(D − W) ``(B, N, N)`` from W ``(B, N, N)``."""
    eye = torch.eye(weight_matrix.shape[-1], dtype=D64)
    return lam * eye + 2 * (torch.diag_embed(weight_matrix.sum(-1)) - weight_matrix)


def _dense_solve(weight_matrix: torch.Tensor, scores: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    b, c, h, w = scores.shape
    rhs = lam * scores.reshape(b, c, h * w).transpose(1, 2)
    return torch.linalg.solve(_dense_system(weight_matrix, lam), rhs).transpose(1, 2).reshape(b, c, h, w)


def _rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x - ref).norm() / ref.norm())


@pytest.mark.parametrize("window", [None, 3])
def test_cg_matches_dense_solve_with_exact_backend(window):
    img = _image(6, 7, batch=2)
    op = ExactBackend(window=window).build(_features(img)).weighted(torch.tensor([4.0, 2.0], dtype=D64))
    scores = torch.randn(2, 3, 6, 7, dtype=D64)
    x = gaussian_crf(op, scores, lam=0.5, tol=1e-10, max_iter=500)
    assert _rel_err(x, _dense_solve(op.matrix, scores, 0.5)) <= 1e-5


def test_cg_matches_dense_solve_with_local_and_pooled_backends():
    img = _image(8, 9)
    scores = torch.randn(1, 2, 8, 9, dtype=D64)
    for backend in (LocalBackend(3, 1), PooledBackend(LocalBackend(3, 1), 2)):
        op = backend.build(_features(img)).weighted(torch.tensor([3.0, 1.0], dtype=D64))
        x = gaussian_crf(op, scores, lam=1.0, tol=1e-10, max_iter=500)
        assert _rel_err(x, _dense_solve(_dense_matrix(op, 1, 8, 9), scores, 1.0)) <= 1e-5


def test_backward_passes_gradcheck_in_float64():
    img = _image(4, 5)
    scores = torch.randn(1, 2, 4, 5, dtype=D64, requires_grad=True)
    lam = torch.tensor(0.8, dtype=D64, requires_grad=True)
    weights = torch.tensor([2.0, 1.0], dtype=D64, requires_grad=True)
    log_thetas = torch.tensor([1.0, 3.5, 0.5], dtype=D64, requires_grad=True)

    def solve(scores, lam, weights, log_thetas):
        op = ExactBackend().build(_features(img, log_thetas)).weighted(weights)
        return gaussian_crf(op, scores, lam=lam, tol=1e-12, max_iter=1000)

    assert torch.autograd.gradcheck(solve, (scores, lam, weights, log_thetas), eps=1e-6, atol=1e-7, fast_mode=True)


def test_backward_matches_autograd_through_dense_solve():
    img = _image(5, 6)
    target = torch.randn(1, 3, 5, 6, dtype=D64)
    leaves = [torch.randn(1, 3, 5, 6, dtype=D64), torch.tensor(0.7, dtype=D64), torch.tensor([2.0, 1.5], dtype=D64),
              torch.tensor([1.2, 3.4, 0.3], dtype=D64)]

    def grads(dense: bool) -> list[torch.Tensor]:
        scores, lam, weights, log_thetas = [t.clone().requires_grad_() for t in leaves]
        op = ExactBackend().build(_features(img, log_thetas)).weighted(weights)
        x = (_dense_solve(op.matrix, scores, lam) if dense
             else gaussian_crf(op, scores, lam=lam, tol=1e-12, max_iter=1000))
        (x * target).sum().backward()
        return [scores.grad, lam.grad, weights.grad, log_thetas.grad]

    for ours, ref in zip(grads(False), grads(True)):
        assert _rel_err(ours, ref) <= 1e-6


def test_refiner_parameter_gradients_match_dense_solve():
    """GaussianCRF with the exact backend: gradients reach w1, w2, the θ's, λ and the unary probabilities."""
    img = _image(5, 6)
    probs = torch.softmax(torch.randn(1, 3, 5, 6, dtype=D64), 1)
    target = torch.randn(1, 3, 5, 6, dtype=D64)
    params = GaussianCRFParams(lam=2.0, tol=1e-8, theta_alpha=4.0, theta_beta=30.0, theta_gamma=2.0)

    def grads(dense: bool) -> dict[str, torch.Tensor]:
        model = GaussianCRF(params, backend=ExactBackend()).double()
        p = probs.clone().requires_grad_()
        if dense:
            op = model.build(img).weighted(model.kernels.weights())
            q = torch.softmax(_dense_solve(op.matrix, unary_scores(p), model.log_lam.exp()), 1)
        else:
            q = model(img, p)
        (q * target).sum().backward()
        out = {name: t.grad for name, t in model.named_parameters()}
        out["probs"] = p.grad
        return out

    ours, ref = grads(False), grads(True)
    assert set(ours) >= {"log_lam", "kernels.w_appearance", "kernels.log_theta_gamma", "probs"}
    for name in ref:
        assert ours[name] is not None and torch.isfinite(ours[name]).all(), name
        assert _rel_err(ours[name], ref[name]) <= 1e-6, name


def _pool_matrix(fine: tuple[int, int], coarse: tuple[int, int]) -> torch.Tensor:
    """P ``(n, N)``: mean over the fine pixels (y, x) with (y//2, x//2) = coarse pixel; U = (P > 0) replicates."""
    rows = []
    for cy in range(coarse[0]):
        for cx in range(coarse[1]):
            mask = torch.zeros(fine, dtype=D64)
            mask[2 * cy:2 * cy + 2, 2 * cx:2 * cx + 2] = 1.0
            rows.append(mask.flatten() / mask.sum())
    return torch.stack(rows)


def test_multiscale_joint_solve_matches_dense_block_system():
    sizes = [(5, 7), (3, 4), (2, 2)]
    img = _image(*sizes[0])
    lam, mu = 0.6, 1.7
    weights = torch.tensor([3.0, 1.0], dtype=D64)
    features, ops = _features(img), []
    for level in range(3):
        if level:
            features = [downsample(f, 2) for f in features]
        ops.append(ExactBackend().build(features).weighted(weights))
    scores = torch.randn(1, 2, *sizes[0], dtype=D64)
    x = gaussian_crf(ops, scores, lam=lam, mu=mu, tol=1e-11, max_iter=2000)

    n = [h * w for h, w in sizes]
    pools = [_pool_matrix(sizes[s], sizes[s + 1]) for s in range(2)]
    ups = [(p > 0).to(D64).T for p in pools]  # (N_s, N_{s+1})
    blocks = [[torch.zeros(n[r], n[c], dtype=D64) for c in range(3)] for r in range(3)]
    for s in range(3):
        blocks[s][s] = _dense_system(ops[s].matrix, lam)[0]
        if s < 2:
            blocks[s][s] = blocks[s][s] + mu * torch.eye(n[s], dtype=D64)
            blocks[s][s + 1] = -mu * ups[s]
            blocks[s + 1][s] = -mu * ups[s].T
        if s > 0:
            blocks[s][s] = blocks[s][s] + mu * ups[s - 1].T @ ups[s - 1]
    system = torch.cat([torch.cat(row, 1) for row in blocks], 0)
    b0 = scores[0].reshape(2, -1).T
    b1 = pools[0] @ b0
    rhs = lam * torch.cat([b0, b1, pools[1] @ b1])
    ref = torch.linalg.solve(system, rhs)[: n[0]].T.reshape(1, 2, *sizes[0])
    assert _rel_err(x, ref) <= 1e-5


def test_multiscale_backward_passes_gradcheck():
    img = _image(4, 5)
    ops = [ExactBackend().build(_features(img)).weighted(torch.tensor([2.0, 1.0], dtype=D64)),
           ExactBackend().build([downsample(f, 2) for f in _features(img)])]
    scores = torch.randn(1, 2, 4, 5, dtype=D64, requires_grad=True)
    lam = torch.tensor(0.9, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s, l: gaussian_crf(ops, s, lam=l, tol=1e-12, max_iter=1000),
                                    (scores, lam), eps=1e-6, atol=1e-7, fast_mode=True)


def test_lowrank_op_matches_explicit_outer_product_without_diagonal():
    emb = [torch.rand(2, 4, 5, 6, dtype=D64), torch.rand(2, 3, 5, 6, dtype=D64)]
    weights = torch.tensor([0.7, 2.0], dtype=D64)
    op = LowRankBackend().build(emb).weighted(weights)
    expected = 0
    for w, e in zip(weights, emb):
        flat = e.reshape(2, e.shape[1], 30)
        outer = flat.transpose(1, 2) @ flat
        expected = expected + w * (outer - torch.diag_embed(torch.diagonal(outer, dim1=1, dim2=2)))
    assert torch.allclose(_dense_matrix(op, 2, 5, 6), expected, atol=1e-12)
    scores = torch.randn(2, 3, 5, 6, dtype=D64)
    x = gaussian_crf(op, scores, lam=1.0, tol=1e-10, max_iter=500)
    assert _rel_err(x, _dense_solve(expected, scores, 1.0)) <= 1e-5


def test_lowrank_rejects_negative_embeddings_with_fix():
    with pytest.raises(ValueError, match="relu or softplus"):
        LowRankBackend().build([torch.randn(1, 3, 4, 4)])


def test_pooled_op_is_bilinear_sandwich_of_exact_kernel_without_self_term():
    img = _image(7, 9)
    weights = torch.tensor([2.0, 1.0], dtype=D64)
    op = PooledBackend(ExactBackend(), 3).build(_features(img)).weighted(weights)
    coarse = ExactBackend().build([downsample(f, 3) for f in _features(img)]).weighted(weights).matrix[0]
    grid = (3, 3)
    # U (N, n): column J is the bilinear upsampling (align_corners=False) of the J-th coarse basis vector.
    basis = torch.eye(9, dtype=D64).reshape(9, 1, *grid)
    up = F.interpolate(basis, size=(7, 9), mode="bilinear", align_corners=False).reshape(9, 63).T
    full = up @ coarse @ up.T / (63 / 9)
    expected = full - torch.diag(torch.diagonal(full))
    dense = _dense_matrix(op, 1, 7, 9)[0]
    assert torch.allclose(dense, expected, atol=1e-12)
    assert torch.allclose(dense, dense.T, atol=1e-12)


def _pooled_system(h: int, w: int, classes: int, *, filter_size: int, blur: int, lam: float, batch: int = 1):
    """A weighted PooledOp on a two-region image, its GaussianSystem, the grid reduction, random scores and the
    image."""
    img = _image(h, w, batch)
    op = PooledBackend(LocalBackend(filter_size, 1), blur).build(_features(img)).weighted(
        torch.tensor([6.0, 3.0], dtype=D64))
    scores = torch.randn(batch, classes, h, w, dtype=D64)
    system = GaussianSystem([op], (h, w), batch, lam=lam, mu=lam, like=scores)
    return op, system, GridReduction(op, system.diagonal().unflatten(-1, (h, w))), scores, img


def test_grid_reduction_stencil_and_coarse_system_match_their_definitions():
    """M = UᵀΔ⁻¹U by its 3×3 stencil, and the two-level coarse system R S Rᵀ read from colour probes, against
    both assembled column by column from the operators (odd sizes, edge blocks cut by the grid)."""
    op, _, reduction, _, _ = _pooled_system(23, 29, 2, filter_size=5, blur=3, lam=0.5, batch=2)
    h, w = op.grid
    z = torch.randn(2, 3, h, w, dtype=D64)
    assert torch.allclose(reduction.m_apply(z), op.restrict(reduction.inv_delta * op.prolong(z)), atol=1e-12)
    a = reduction.blocks
    assert a > 0 and reduction.coarse_factor is not None
    hb, wb = -(-h // a), -(-w // a)
    indicators = torch.zeros(hb * wb, h, w, dtype=D64)
    for j in range(hb * wb):
        by, bx = divmod(j, wb)
        indicators[j, by * a:(by + 1) * a, bx * a:(bx + 1) * a] = 1
    m_cols = reduction.m_apply(indicators[None].expand(2, -1, h, w))
    s_cols = m_cols - reduction.coef * reduction.m_apply(op.inner.apply(m_cols))  # S of each block indicator
    dense = torch.einsum("bjyx,iyx->bij", s_cols, indicators)  # (R S Rᵀ)_{ij}
    factor = reduction.coarse_factor
    assert torch.allclose(factor @ factor.transpose(1, 2), dense, atol=1e-9 * float(dense.abs().max()))


@pytest.mark.parametrize("classes", [3, 11])
def test_window_matrix_matches_the_window_and_is_exactly_symmetric(classes):
    """The sparse K (issue 17) against the window's tap-by-tap apply, batch 2, odd sizes, class counts below and
    above the product's column padding; K read column by column from it is symmetric to the last bit."""
    img = _image(13, 17, 2)
    op = LocalBackend(5, 1).build(_features(img)).weighted(torch.tensor([6.0, 3.0], dtype=D64))
    matrix = WindowMatrix.of(op)
    q = torch.randn(2, classes, 13, 17, dtype=D64)
    assert torch.allclose(matrix.apply(q), op.apply(q), rtol=0, atol=1e-12)
    dense = _dense_matrix(matrix, 2, 13, 17)
    assert torch.equal(dense, dense.transpose(1, 2))
    for m in matrix.matrices + WindowMatrix.stencil(torch.randn(2, 9, 13, 17, dtype=D64)).matrices:
        columns = m.col_indices().view(13 * 17, -1)  # every row's taps, off-grid ones as zeros at sorted columns
        assert bool((columns[:, 1:] >= columns[:, :-1]).all()) and int(columns.max()) < 13 * 17
    assert WindowMatrix.of(LocalBackend(5, 2).build(_features(img))) is None  # blurred: not symmetric, not kept


def test_pooled_degree_without_autograd_matches_the_op():
    """W·1 of the pooled window by its sparse K on the grid (no autograd, issue 17) against the op's own apply
    (odd sizes, batch 2); with autograd it is the op's apply, differentiable."""
    img = _image(23, 29, 2)
    op = PooledBackend(LocalBackend(5, 1), 3).build(_features(img)).weighted(torch.tensor([6.0, 3.0], dtype=D64))
    ones = torch.ones(2, 1, 23, 29, dtype=D64)
    with torch.no_grad():
        fast = _degree(op, ones)
    assert torch.allclose(fast, op.apply(ones), rtol=0, atol=1e-12) and float(fast.min()) > 0


def test_grid_reduction_deflation_columns_and_fine_norms_match_their_definitions():
    """``SZ c`` and ``K M Z c`` read from the colour probes against S and K M applied to the expanded ``Z c``, and
    the full-resolution residual norm computed on the grid (UᵀU) against ``(2/c)|U K r|`` at full resolution."""
    op, _, reduction, _, _ = _pooled_system(23, 29, 2, filter_size=5, blur=3, lam=0.5, batch=2)
    h, w = op.grid
    a = reduction.blocks
    c = torch.randn(2, -(-h // a) * -(-w // a), 16, dtype=D64)  # rows: blocks × (11 classes padded to 16)
    sz, kmz = reduction._deflated(c)
    s_ref, km_ref = reduction._s_rows(reduction._expand(c))
    assert torch.allclose(sz, s_ref, atol=1e-10) and torch.allclose(kmz, km_ref, atol=1e-10)
    expanded = torch.stack([reduction._block_sums.to_dense().T @ item for item in c])  # Z c from Zᵀ
    assert torch.equal(reduction._expand(c), expanded)
    r = torch.randn(2, 11, h, w, dtype=D64)
    norms = reduction.coef * op.prolong(op.inner.apply(r)).flatten(2).norm(dim=-1)
    assert torch.allclose(reduction._fine_norms(to_rows(r))[:, 0, :11], norms, rtol=1e-10)


def test_grid_reduction_solves_the_full_system_in_fewer_iterations():
    """The reduced, two-level preconditioned solve reaches the solution of plain and of Jacobi CG on the full grid
    (and of the dense solve) in fewer iterations; its stopping rule is the full system's relative residual."""
    h, w, lam = 40, 48, 0.5
    op, system, reduction, scores, _ = _pooled_system(h, w, 3, filter_size=5, blur=2, lam=lam)
    rhs = lam * scores
    plain = conjugate_gradient(system.matvec, rhs.flatten(2), torch.ones(1, 1, h * w, dtype=D64), tol=1e-10,
                               max_iter=5000)
    jacobi = conjugate_gradient(system.matvec, rhs.flatten(2), system.diagonal(), tol=1e-10, max_iter=5000)
    reduced = reduction.solve(rhs, tol=1e-10, max_iter=5000)
    assert plain.converged and jacobi.converged and reduced.converged
    x = reduced.x.flatten(2)
    assert _rel_err(x, plain.x) <= 1e-8 and _rel_err(x, jacobi.x) <= 1e-8
    true_residual = (rhs.flatten(2) - system.matvec(x)).norm(dim=-1) / rhs.flatten(2).norm(dim=-1)
    assert float(true_residual.max()) <= 1e-9 and reduced.residual <= 1e-10
    assert reduced.iterations < jacobi.iterations < plain.iterations
    dense = _dense_solve(_dense_matrix(op, 1, h, w), scores, lam)
    assert _rel_err(reduced.x, dense) <= 1e-8


def test_grid_reduction_with_a_callback_carries_k_m_z_to_the_same_solution():
    """With a callback, K M z is carried by recurrence so every iterate can be shown; without one it is computed
    once at the end. Both give the same solution, and the last iterate shown is it."""
    h, w, lam = 40, 48, 0.5
    _, _, reduction, scores, _ = _pooled_system(h, w, 3, filter_size=5, blur=2, lam=lam)
    seen = []
    shown = reduction.solve(lam * scores, tol=1e-10, max_iter=5000, callback=lambda k, n, x: seen.append(x.clone()))
    plain = reduction.solve(lam * scores, tol=1e-10, max_iter=5000)
    assert shown.iterations == plain.iterations == len(seen) > 1
    assert _rel_err(shown.x, plain.x) <= 1e-9 and _rel_err(seen[-1], shown.x) <= 1e-12


def test_grid_reduction_without_kept_filters_applies_k_and_m_by_the_window_to_the_same_solution():
    """A window whose filters exceed its cache budget has no sparse K: the reduction falls back to the banded apply
    and the nine-tap M, and reaches the same solution."""
    h, w, lam = 40, 48, 0.5
    img = _image(h, w)
    scores = torch.randn(1, 3, h, w, dtype=D64)
    solutions = []
    for cache_bytes in (1 << 30, 0):
        op = PooledBackend(LocalBackend(5, 1, cache_bytes=cache_bytes), 2).build(_features(img)).weighted(
            torch.tensor([6.0, 3.0], dtype=D64))
        system = GaussianSystem([op], (h, w), 1, lam=lam, mu=lam, like=scores)
        reduction = GridReduction(op, system.diagonal().unflatten(-1, (h, w)))
        assert (reduction.window is None) == (cache_bytes == 0)
        solutions.append(reduction.solve(lam * scores, tol=1e-10, max_iter=5000).x)
    assert _rel_err(solutions[1], solutions[0]) <= 1e-8


def test_grid_reduction_warm_start_converges_in_fewer_iterations_and_float32_stays_float32():
    h, w, lam = 32, 36, 0.5
    _, system, reduction, scores, img = _pooled_system(h, w, 2, filter_size=5, blur=2, lam=lam)
    rhs = lam * scores
    cold = reduction.solve(rhs, tol=1e-8, max_iter=1000)
    near = cold.x + 1e-3 * torch.randn_like(cold.x)
    warm = reduction.solve(rhs, tol=1e-8, max_iter=1000, x0=near)
    assert warm.converged and 0 < warm.iterations < cold.iterations
    assert _rel_err(warm.x, cold.x) <= 1e-6
    op32 = PooledBackend(LocalBackend(5, 1), 2).build([f.float() for f in _features(img)]).weighted(
        torch.tensor([6.0, 3.0]))
    x32 = gaussian_crf(op32, scores.float(), lam=lam, tol=1e-4, max_iter=500)
    assert x32.dtype == torch.float32 and _rel_err(x32.double(), cold.x) <= 1e-3


def test_grid_reduction_backward_matches_autograd_through_dense_solve(monkeypatch):
    """The backward solve of a pooled op runs through the grid reduction too; its gradients match the dense solve's."""
    monkeypatch.setattr(crfcore.inference.gaussian, "GRID_MIN_PIXELS", 0)  # this small image takes the reduction
    img = _image(12, 14)
    target = torch.randn(1, 2, 12, 14, dtype=D64)
    leaves = [torch.randn(1, 2, 12, 14, dtype=D64), torch.tensor(0.6, dtype=D64), torch.tensor([5.0, 2.0], dtype=D64)]

    def grads(dense: bool) -> list[torch.Tensor]:
        scores, lam, weights = [t.clone().requires_grad_() for t in leaves]
        op = PooledBackend(LocalBackend(3, 1), 2).build(_features(img)).weighted(weights)
        x = (_dense_solve(_dense_matrix(op, 1, 12, 14), scores, lam) if dense
             else gaussian_crf(op, scores, lam=lam, tol=1e-12, max_iter=1000))
        (x * target).sum().backward()
        return [scores.grad, lam.grad, weights.grad]

    for ours, ref in zip(grads(False), grads(True)):
        assert _rel_err(ours, ref) <= 1e-6


@pytest.mark.parametrize("grid_min", [0, 10**9])
def test_pooled_solve_matches_the_dense_solve_by_either_path(monkeypatch, grid_min):
    """Large pooled systems take the grid reduction, small ones Jacobi CG (GRID_MIN_PIXELS): both reach the dense
    solve's solution."""
    monkeypatch.setattr(crfcore.inference.gaussian, "GRID_MIN_PIXELS", grid_min)
    img = _image(12, 14)
    scores = torch.randn(1, 2, 12, 14, dtype=D64)
    op = PooledBackend(LocalBackend(3, 1), 2).build(_features(img)).weighted(torch.tensor([5.0, 2.0], dtype=D64))
    ref = _dense_solve(_dense_matrix(op, 1, 12, 14), scores, torch.tensor(0.6, dtype=D64))
    assert _rel_err(gaussian_crf(op, scores, lam=0.6, tol=1e-12, max_iter=1000), ref) <= 1e-8


def test_solution_is_unique_from_two_starts():
    img = _image(6, 6)
    op = ExactBackend().build(_features(img)).weighted(torch.tensor([5.0, 2.0], dtype=D64))
    scores = torch.randn(1, 3, 6, 6, dtype=D64)
    a = gaussian_crf(op, scores, lam=0.3, tol=1e-10, max_iter=1000)
    b = gaussian_crf(op, scores, lam=0.3, tol=1e-10, max_iter=1000, x0=100 * torch.randn(1, 3, 6, 6, dtype=D64))
    assert _rel_err(a, b) <= 1e-7


def test_warm_start_from_the_solution_needs_no_iteration():
    img = _image(6, 6)
    op = ExactBackend().build(_features(img)).weighted(torch.tensor([5.0, 2.0], dtype=D64))
    scores = torch.randn(1, 3, 6, 6, dtype=D64)
    steps: list[int] = []
    x = gaussian_crf(op, scores, lam=1.0, tol=1e-6, max_iter=500, callback=lambda k, t, x: steps.append(k))
    assert steps and steps == list(range(1, len(steps) + 1))
    warm: list[int] = []
    gaussian_crf(op, scores, lam=1.0, tol=1e-6, max_iter=500, x0=x, callback=lambda k, t, x: warm.append(k))
    assert warm == []


def test_warns_naming_max_iter_and_tol_when_stopping_short():
    img = _image(8, 8)
    op = ExactBackend().build(_features(img)).weighted(torch.tensor([50.0, 20.0], dtype=D64))
    with pytest.warns(ConvergenceWarning, match=r"max_iter=2 .* tol=1e-08"):
        gaussian_crf(op, torch.randn(1, 2, 8, 8, dtype=D64), lam=0.01, tol=1e-8, max_iter=2)


def test_callback_can_cancel_the_solve():
    img = _image(6, 6)
    op = ExactBackend().build(_features(img))

    def cancel(k, total, x):
        raise Cancelled

    with pytest.raises(Cancelled):
        gaussian_crf(op, torch.randn(1, 2, 6, 6, dtype=D64), lam=1.0, tol=1e-8, max_iter=50, callback=cancel)


def test_rejects_an_asymmetric_op_naming_the_symmetric_backend():
    """LocalBackend with blur > 1 is U K P (bilinear up, box down): not symmetric, so CG would be wrong."""
    img = _image(12, 12)
    with pytest.raises(ValueError, match=r"not symmetric .*PooledBackend"):
        gaussian_crf(LocalBackend(3, 2).build(_features(img)), torch.randn(1, 2, 12, 12, dtype=D64), lam=1.0,
                     tol=1e-6, max_iter=50)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"lam": 0.0}, "lam must be a finite number > 0"),
    ({"max_iter": 0}, "max_iter must be an integer >= 1"),
    ({"tol": -1.0}, "tol must be >= 0"),
    ({"x0": torch.zeros(1, 2, 3, 3, dtype=D64)}, "x0 has shape"),
])
def test_gaussian_crf_rejects_bad_arguments(kwargs, match):
    op = ExactBackend().build(_features(_image(4, 4)))
    args = {"lam": 1.0, "tol": 1e-4, "max_iter": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        gaussian_crf(op, torch.randn(1, 2, 4, 4, dtype=D64), **args)


def test_refine_gaussian_is_identity_for_a_dominant_unary_and_smooths_otherwise():
    rng = np.random.default_rng(0)
    image = (rng.random((12, 16, 3)) * 255).astype(np.uint8)
    probs = rng.random((3, 12, 16)).astype(np.float32)
    probs /= probs.sum(0)
    # scale=1.0: the default θ's in pixels of this 16-px image (under "auto" they would shrink 31 times)
    strong = crfcore.refine(image, probs, method="gaussian", lam=1e3, w_appearance=0.1, w_smoothness=0.1, scale=1.0)
    assert strong.probs.shape == probs.shape and strong.labels.shape == (12, 16)
    assert np.abs(strong.probs - probs).max() < 1e-2
    smooth = crfcore.refine(image, probs, method="gaussian", lam=0.1, scales=2, scale=1.0)
    assert np.allclose(smooth.probs.sum(0), 1, atol=1e-5)
    assert np.abs(np.diff(smooth.probs, axis=2)).mean() < 0.1 * np.abs(np.diff(probs, axis=2)).mean()


@pytest.mark.parametrize("scales", [1, 2])
def test_refiner_reuses_op_and_warm_starts(scales):
    img = _image(10, 12)
    probs = torch.softmax(torch.randn(1, 3, 10, 12, dtype=D64), 1)
    model = GaussianCRF(GaussianCRFParams(scales=scales, blur=2, filter_size=3, tol=1e-6)).double()
    cold: list[int] = []
    warm: list[int] = []
    with torch.no_grad():
        op = model.build(img)
        x = model.scores(img, probs, op=op, callback=lambda k, t, q: cold.append(k))
        q = model(img, probs, op=op, x0=x, callback=lambda k, t, q: warm.append(k))
    assert torch.allclose(q, torch.softmax(x, 1), atol=1e-5)
    if scales == 1:
        assert warm == []  # the finest level is the whole solution
    else:
        assert isinstance(op, tuple) and len(op) == 2
        assert len(warm) < len(cold)  # coarser levels restart from the pooled solution
        with pytest.raises(ValueError, match="scales=2"):
            model(img, probs, op=op[0])


def test_refiner_rejects_learn_compat_and_negative_weights():
    with pytest.raises(ValueError, match="no label compatibility"):
        GaussianCRF(learn_compat=True)
    model = GaussianCRF()
    with torch.no_grad():
        model.kernels.w_smoothness.fill_(-1.0)
    with pytest.raises(ValueError, match="must be >= 0"):
        model(_image(6, 6).float(), torch.full((1, 2, 6, 6), 0.5))


def test_current_params_round_trip_learned_lam():
    model = GaussianCRF(GaussianCRFParams(lam=3.0))
    with torch.no_grad():
        model.log_lam.fill_(math.log(5.0))
    assert model.current_params().lam == pytest.approx(5.0)
