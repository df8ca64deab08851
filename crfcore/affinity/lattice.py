"""Gaussian filtering on the permutohedral lattice: DenseCRF message passing.

Adams, Baek & Davis, "Fast High-Dimensional Filtering Using the Permutohedral Lattice", Eurographics 2010, §3–4;
used for mean field by Krähenbühl & Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge
Potentials", NIPS 2011, §4.

For features f (already divided by θ) the kernel ``k(i, j) = exp(-|f_i - f_j|² / 2)`` is applied as
``L = α · Sᵀ B S``: each pixel's feature vector, scaled and lifted onto the hyperplane ``Σ x = 0`` of R^{d+1}, falls
in one simplex of the permutohedral lattice; **splat** S spreads its value to the d+1 vertices with barycentric
weights; **blur** B = B_d ⋯ B_0 convolves the occupied vertices with [½, 1, ½] along each of the d+1 lattice
directions; **slice** Sᵀ reads the result back at the pixel with the same weights. ``α = 1 / (1 + 2^-d)`` makes the
peak 1. The lattice includes the self term (``k_ii ≈ 1``), as pydensecrf's does.

Normalisation (per kernel, ``D = L·1``, self term included): ``"symmetric"`` ``D^-1/2 L D^-1/2`` (pydensecrf's
NORMALIZE_SYMMETRIC), ``"per_pixel"`` ``D^-1 L``, ``"none"`` ``L``. Per the backend interface, :meth:`LatticeOp.apply`
excludes the self term, taken as the exact ``K̃_ii`` (1/D, 1/D or 1); :meth:`LatticeOp.self_weight` returns it so a
DenseCRF can add it back.

How it is computed: ``build`` does everything that depends on the features only once — elevation, enclosing simplex
and barycentric weights by tensor ops over all pixels; a hash of the vertices by one sort of integer keys packed into
int64; neighbour tables for the blur by binary search in the sorted keys. ``apply`` is then three kinds of weighted
gather-sum (``embedding_bag``) on rows of ``q`` laid out as ``(B·H·W, C)``; normalisation and kernel weights are
folded into the splat and slice weights. A channels-last ``q`` needs no transposes. Gradients with respect to ``q``
(and the kernel weights) flow through a custom autograd function whose backward is the transposed filter: the same
splat/slice with the roles of their weights exchanged, and the blur directions in reverse order. The features are
constants: ``build`` is not differentiable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LatticeBackend", "LatticeOp", "Lattice", "build_lattice"]

Normalization = Literal["symmetric", "per_pixel", "none"]
NORMALIZATIONS = ("symmetric", "per_pixel", "none")
_KEY_BITS = 62  # packed vertex keys must stay below 2**_KEY_BITS to be exact in int64


@dataclass(frozen=True)
class Lattice:
    """The index tables of one feature set, ``P = B·H·W`` pixels, ``d`` dimensions, ``M`` occupied vertices.

    Attributes:
        bary: ``(P·(d+1),)`` barycentric weights, pixel-major (pixel p's weights at ``p·(d+1) … p·(d+1)+d``).
        vertex: ``(P·(d+1),)`` vertex index 0..M-1 of each weight (the slice's gather indices).
        order: ``(P·(d+1),)`` permutation grouping the entries by vertex (the splat's order).
        splat_pixel: ``(P·(d+1),)`` pixel of each entry in ``order``; ``splat_offsets``: ``(M,)`` first entry per vertex.
        blur_index: ``(d+1, M, 3)`` self, previous and next vertex along each direction (self where absent).
        blur_weight: ``(d+1, M, 3)`` ``(1, ½, ½)``, 0 where the neighbour is absent.
    """

    dims: int
    num_points: int
    bary: Tensor
    vertex: Tensor
    order: Tensor
    splat_pixel: Tensor
    splat_offsets: Tensor
    slice_offsets: Tensor
    blur_index: Tensor
    blur_weight: Tensor

    @property
    def alpha(self) -> float:
        """The constant that makes the blurred kernel's peak 1 (Adams et al. 2010; Krähenbühl's code)."""
        return 1.0 / (1.0 + 2.0 ** -self.dims)

    def filter(self, x: Tensor, splat_weight: Tensor, slice_weight: Tensor, *, reverse: bool = False) -> Tensor:
        """``(P, C)`` → ``(P, C)``: slice(blur(splat(x))), with per-entry weights in pixel-major order.

        ``splat_weight`` is indexed like :attr:`order` (vertex-major), ``slice_weight`` like :attr:`bary`.
        """
        values = F.embedding_bag(self.splat_pixel, x, self.splat_offsets, mode="sum",
                                 per_sample_weights=splat_weight)
        directions = range(self.dims, -1, -1) if reverse else range(self.dims + 1)
        for j in directions:
            values = F.embedding_bag(self.blur_index[j], values, mode="sum", per_sample_weights=self.blur_weight[j])
        return F.embedding_bag(self.vertex, values, self.slice_offsets, mode="sum", per_sample_weights=slice_weight)


def build_lattice(features: Tensor) -> Lattice:
    """Index tables for features ``(B, d, H, W)`` (divided by θ); pixels are taken in ``(b, y, x)`` order."""
    b, d, h, w = features.shape
    points = h * w
    f = features.detach().permute(1, 0, 2, 3).reshape(d, b * points)
    elevated = _elevate(f)
    base, rank = _enclosing_simplex(elevated)
    bary = _barycentric(elevated, base, rank)
    batch = torch.arange(b, device=f.device).repeat_interleave(points)
    keys, radix = _vertex_keys(base, rank, batch)
    total = keys.numel() // (d + 1)
    sorted_keys, order = torch.sort(keys)
    new = torch.ones_like(sorted_keys, dtype=torch.bool)
    new[1:] = sorted_keys[1:] != sorted_keys[:-1]
    starts = new.nonzero().squeeze(1)
    unique = sorted_keys[starts]
    vertex = torch.empty_like(order)
    vertex[order] = new.cumsum(0) - 1
    # keys/order are remainder-major (r·P + p); the slice wants pixel-major (p·(d+1) + r)
    vertex = vertex.view(d + 1, total).t().reshape(-1)
    pixel = order % total
    order = pixel * (d + 1) + order // total
    blur_index, blur_weight = _blur_tables(unique, radix, d, f.dtype)
    slice_offsets = torch.arange(0, total * (d + 1), d + 1, device=f.device)
    return Lattice(d, unique.numel(), bary.t().reshape(-1), vertex, order, pixel, starts, slice_offsets,
                   blur_index, blur_weight)


def _elevate(f: Tensor) -> Tensor:
    """``(d, P)`` features → ``(d+1, P)`` points on the hyperplane Σx = 0, scaled so that the lattice blur is a
    Gaussian of unit standard deviation in the features (Adams et al. 2010, §3.1)."""
    d = f.shape[0]
    j = torch.arange(1, d + 1, dtype=torch.float64)
    scale = math.sqrt(2.0 / 3.0) * (d + 1) / torch.sqrt(j * (j + 1))
    lift = torch.zeros(d + 1, d, dtype=torch.float64)
    lift[0] = 1.0
    for row in range(1, d + 1):
        lift[row, row - 1] = -row
        lift[row, row:] = 1.0
    return (lift * scale).to(f.dtype).to(f.device) @ f


def _enclosing_simplex(elevated: Tensor) -> tuple[Tensor, Tensor]:
    """The simplex holding each point: ``base`` (d+1, P) int64 (the nearest remainder-0 vertex, in units of d+1)
    and ``rank`` (d+1, P) int64 (the order of each coordinate's offset from it, 0 = largest)."""
    d1 = elevated.shape[0]
    base = torch.round(elevated / d1)
    offset = elevated - base * d1
    rank = torch.zeros(elevated.shape, dtype=torch.long, device=elevated.device)
    for i in range(d1):
        for j in range(i + 1, d1):
            smaller = (offset[i] < offset[j]).long()
            rank[i] += smaller
            rank[j] += 1 - smaller
    rank += base.sum(0).long()  # the rounded point is off the hyperplane by this many steps: move it back
    under, over = rank < 0, rank >= d1
    rank += d1 * under.long() - d1 * over.long()
    base = base.long() + under.long() - over.long()
    return base, rank


def _barycentric(elevated: Tensor, base: Tensor, rank: Tensor) -> Tensor:
    """``(d+1, P)`` barycentric weights of the simplex vertices, remainder 0..d (Adams et al. 2010, §3.1)."""
    d1 = elevated.shape[0]
    v = (elevated - base.to(elevated.dtype) * d1) / d1
    bary = torch.zeros(d1 + 1, elevated.shape[1], dtype=elevated.dtype, device=elevated.device)
    bary.scatter_add_(0, d1 - 1 - rank, v)
    bary.scatter_add_(0, d1 - rank, -v)
    bary[0] += 1.0 + bary[d1]
    return bary[:d1]


def _vertex_keys(base: Tensor, rank: Tensor, batch: Tensor) -> tuple[Tensor, list[int]]:
    """Packed int64 keys ``(d+1)·P`` (remainder-major) of the d+1 vertices of each pixel's simplex.

    Vertex r has coordinates ``(d+1)·a + r`` with ``a_i = base_i - [rank_i > d - r]``; the first d coordinates
    determine it (they sum to zero). The key is ``r + (d+1)·(b·R_d + Σ_i (a_i - lo_i)·R_i)`` with mixed radices R
    that leave one step of margin on every side, so a neighbour's key is the key plus a constant.
    """
    d = base.shape[0] - 1
    low = base[:d].amin(1) - 2
    span = (base[:d].amax(1) - low + 2).tolist()
    radix = [1]
    for s in span:
        radix.append(radix[-1] * int(s))
    if (d + 1) * radix[-1] * (int(batch[-1]) + 1) >= 2 ** _KEY_BITS:
        raise ValueError(f"the {d}-dimensional features span too wide a range for the lattice's 64-bit vertex "
                         f"keys (per-dimension spans {span} lattice steps); use larger θ's (features divided by "
                         f"larger ranges) or fewer feature dimensions.")
    radix_t = torch.tensor(radix[:d] + [0], dtype=torch.long, device=base.device)
    anchor = ((base[:d] - low[:, None]) * radix_t[:d, None]).sum(0) + batch * radix[d]
    by_rank = torch.zeros_like(rank).scatter_(0, rank, radix_t[:, None].expand_as(rank).contiguous())
    keys = [anchor * (d + 1)]
    for r in range(1, d + 1):
        anchor = anchor - by_rank[d + 1 - r]
        keys.append(anchor * (d + 1) + r)
    return torch.cat(keys), radix


def _blur_tables(unique: Tensor, radix: list[int], d: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Neighbour tables ``(d+1, M, 3)`` of the blur along each lattice direction (Adams et al. 2010, §3.2).

    Along direction j the neighbours of vertex x are ``x ∓ 1`` in every coordinate except j, where they are
    ``x ± d``. In packed keys ``r + (d+1)·A``, the previous neighbour has remainder r-1 and ``A + R_j`` (``A`` when
    j = d); from r = 0 it wraps to remainder d with every other ``a_i`` one lower. The next is the inverse.
    """
    m = unique.numel()
    d1 = d + 1
    rem = unique % d1
    spine = unique // d1
    total = sum(radix[:d])
    self_index = torch.arange(m, device=unique.device)
    index, weight = [], []
    for j in range(d1):
        step = radix[j] if j < d else 0
        prev = torch.where(rem == 0, (spine + step - total) * d1 + d, (spine + step) * d1 + rem - 1)
        nxt = torch.where(rem == d, (spine - step + total) * d1, (spine - step) * d1 + rem + 1)
        cols, wts = [self_index], [torch.ones(m, dtype=dtype, device=unique.device)]
        for target in (prev, nxt):
            pos = torch.searchsorted(unique, target).clamp_(max=m - 1)
            found = unique[pos] == target
            cols.append(torch.where(found, pos, self_index))
            wts.append(found.to(dtype) * 0.5)
        index.append(torch.stack(cols, 1))
        weight.append(torch.stack(wts, 1))
    return torch.stack(index), torch.stack(weight)


class _LatticeFilter(torch.autograd.Function):
    """``y = L x`` with ``L = slice·blur·splat``; the backward applies ``Lᵀ`` (weights exchanged, blur reversed)."""

    @staticmethod
    def forward(ctx, x: Tensor, lattice: Lattice, splat_weight: Tensor, slice_weight: Tensor) -> Tensor:
        ctx.lattice = lattice
        ctx.save_for_backward(splat_weight, slice_weight)
        return lattice.filter(x, splat_weight, slice_weight)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
        splat_weight, slice_weight = ctx.saved_tensors
        lattice: Lattice = ctx.lattice
        inverse = torch.empty_like(lattice.order)
        inverse[lattice.order] = torch.arange(lattice.order.numel(), device=grad.device)
        out = lattice.filter(grad.contiguous(), slice_weight[lattice.order], splat_weight[inverse], reverse=True)
        return out, None, None, None


@dataclass(frozen=True)
class _Kernel:
    """One lattice with its normalisation: ``K̃ = diag(n_out) L diag(n_in)``, self weight ``K̃_ii``, all ``(P,)``."""

    lattice: Lattice
    n_in: Tensor
    n_out: Tensor
    self_weight: Tensor

    @classmethod
    def build(cls, features: Tensor, normalization: Normalization) -> "_Kernel":
        lattice = build_lattice(features)
        rows = lattice.bary.numel() // (lattice.dims + 1)
        ones = torch.ones(rows, dtype=features.dtype, device=features.device)
        if normalization == "none":
            return cls(lattice, ones, ones, ones)
        weights = lattice.bary * lattice.alpha
        degree = lattice.filter(ones[:, None], lattice.bary[lattice.order], weights)[:, 0]
        inv_degree = 1.0 / degree.clamp_min(torch.finfo(degree.dtype).tiny)
        if normalization == "symmetric":
            root = inv_degree.sqrt()
            return cls(lattice, root, root, inv_degree)
        return cls(lattice, ones, inv_degree, inv_degree)

    def weights(self, scale: float = 1.0) -> tuple[Tensor, Tensor]:
        """Splat weights (vertex-major) and slice weights (pixel-major, times α and ``scale``)."""
        d1 = self.lattice.dims + 1
        splat = (self.lattice.bary * self.n_in.repeat_interleave(d1))[self.lattice.order]
        slice_ = self.lattice.bary * (self.n_out * (self.lattice.alpha * scale)).repeat_interleave(d1)
        return splat, slice_


@dataclass(frozen=True)
class LatticeBackend:
    """Builds :class:`LatticeOp`: one permutohedral lattice per kernel.

    Args:
        normalization: ``"symmetric"`` (``D^-1/2 K D^-1/2``, the classic DenseCRF), ``"per_pixel"`` (``D^-1 K``) or
            ``"none"``; ``D = K·1`` includes the self term.
    """

    normalization: Normalization = "symmetric"

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            valid = ", ".join(repr(n) for n in NORMALIZATIONS)
            raise ValueError(f"{self.normalization!r} is not a valid normalization. Valid values are {valid}.")

    def build(self, features: Sequence[Tensor]) -> "LatticeOp":
        """One ``(B, D_m, H, W)`` feature tensor per kernel m (divided by θ, any D_m ≥ 1); all share B, H, W,
        dtype and device. Features are treated as constants (no gradient flows to them).

        Raises:
            ValueError: an empty list, mismatched shapes, non-float or non-finite features.
        """
        features = list(features)
        if not features or any(not isinstance(f, Tensor) or f.ndim != 4 for f in features):
            raise ValueError(f"features must be a non-empty list of (B, D, H, W) tensors, got "
                             f"{[tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__ for f in features]}.")
        shapes = {(f.shape[0], *f.shape[2:]) for f in features}
        if len(shapes) != 1 or 0 in next(iter(shapes)) or any(f.shape[1] == 0 for f in features):
            raise ValueError(f"features must share a non-empty batch and size (B, H, W) and have D ≥ 1; got shapes "
                             f"{[tuple(f.shape) for f in features]}.")
        kinds = {(f.dtype, f.device) for f in features}
        if len(kinds) != 1 or not features[0].is_floating_point():
            raise ValueError(f"features must all be floating point with one dtype and device, got "
                             f"{sorted(str(k) for k in kinds)}.")
        for m, f in enumerate(features):
            if not torch.isfinite(f).all():
                raise ValueError(f"features[{m}] has NaN or infinite values; check the image and the θ's (> 0).")
        b, _, h, w = features[0].shape
        return LatticeOp([_Kernel.build(f, self.normalization) for f in features], (b, h, w))


class LatticeOp:
    """The built operator of :class:`LatticeBackend`; ``apply`` reuses every table that ``build`` made."""

    def __init__(self, kernels: list[_Kernel], shape: tuple[int, int, int], weights: Tensor | None = None) -> None:
        self.kernels = kernels
        self.shape = shape
        ref = kernels[0].n_in
        self.weights = weights if weights is not None else torch.ones(len(kernels), dtype=ref.dtype,
                                                                      device=ref.device)
        self._folded: list[tuple[Tensor, Tensor]] | None = None
        self._unit: list[tuple[Tensor, Tensor]] | None = None

    @property
    def dtype(self) -> torch.dtype:
        return self.kernels[0].n_in.dtype

    def weighted(self, weights: Tensor) -> "LatticeOp":
        """The same lattices with per-kernel weights ``(M,)`` (differentiable)."""
        weights = torch.as_tensor(weights, dtype=self.weights.dtype, device=self.weights.device)
        if weights.shape != self.weights.shape:
            raise ValueError(f"weights must have shape {tuple(self.weights.shape)} (one per kernel), "
                             f"got {tuple(weights.shape)}.")
        return LatticeOp(self.kernels, self.shape, weights)

    def self_weight(self) -> Tensor:
        """``(B, 1, H, W)``: ``Σ_m w_m K̃_m,ii``, the self term that :meth:`apply` leaves out."""
        b, h, w = self.shape
        total = sum(wm * k.self_weight for wm, k in zip(self.weights, self.kernels))
        return total.view(b, h, w, 1).permute(0, 3, 1, 2)

    def apply(self, q: Tensor) -> Tensor:
        """``(B, C, H, W)`` → ``(B, C, H, W)``: ``Σ_m w_m K̃_m q`` minus the self term.

        Fastest with ``q`` in channels-last memory; the result is channels-last.
        """
        b, h, w = self.shape
        if q.ndim != 4 or (q.shape[0], *q.shape[2:]) != (b, h, w):
            raise ValueError(f"q has shape {tuple(q.shape)}, but the operator was built for batch {b} and size "
                             f"{h}×{w}; expected (B, C, H, W) = ({b}, C, {h}, {w}).")
        if q.dtype != self.dtype:
            raise ValueError(f"q is {q.dtype} but the operator was built from {self.dtype} features; build it "
                             f"from features of the same dtype.")
        c = q.shape[1]
        x = q.permute(0, 2, 3, 1).reshape(b * h * w, c)
        if torch.is_grad_enabled() and self.weights.requires_grad:
            parts = [wm * _LatticeFilter.apply(x, k.lattice, *unit) for wm, k, unit in
                     zip(self.weights, self.kernels, self._unit_weights())]
            self_weight = sum(wm * k.self_weight for wm, k in zip(self.weights, self.kernels))
        else:
            parts = [_LatticeFilter.apply(x, k.lattice, *folded) for k, folded in
                     zip(self.kernels, self._folded_weights())]
            self_weight = sum(float(wm) * k.self_weight for wm, k in zip(self.weights, self.kernels))
        out = parts[0]
        for part in parts[1:]:
            out = out + part
        out = torch.addcmul(out, self_weight[:, None], x, value=-1.0)
        return out.view(b, h, w, c).permute(0, 3, 1, 2)

    def _unit_weights(self) -> list[tuple[Tensor, Tensor]]:
        if self._unit is None:
            self._unit = [k.weights() for k in self.kernels]
        return self._unit

    def _folded_weights(self) -> list[tuple[Tensor, Tensor]]:
        if self._folded is None:
            self._folded = [k.weights(float(wm)) for wm, k in zip(self.weights, self.kernels)]
        return self._folded
