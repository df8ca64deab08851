"""Gaussian filtering on the permutohedral lattice: DenseCRF message passing.

Adams, Baek & Davis, "Fast High-Dimensional Filtering Using the Permutohedral Lattice", Eurographics 2010, §3–4;
used for mean field by Krähenbühl & Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge
Potentials", NIPS 2011, §4.

For features f (already divided by θ) the kernel ``k(i, j) = exp(-|f_i - f_j|² / 2)`` is applied as
``L = α · Sᵀ B S``: each pixel's feature vector, scaled and lifted onto the hyperplane ``Σ x = 0`` of R^{d+1}, falls
in one simplex of the permutohedral lattice; **splat** S spreads its value to the d+1 vertices with barycentric
weights; **blur** B = B_d ⋯ B_0 convolves the occupied vertices with [½, 1, ½] along each of the d+1 lattice
directions; **slice** Sᵀ reads the result back with the same weights; ``α = 1 / (1 + 2^-d)``. This is pydensecrf's
lattice, so the self term is included (``L_ii ≈ 1``).

Normalisation (per kernel, ``D = K·1``, self term included): ``"symmetric"`` ``D^-1/2 K D^-1/2`` (pydensecrf's
NORMALIZE_SYMMETRIC), ``"per_pixel"`` ``D^-1 K``, ``"none"`` ``K``. Per the backend interface, :meth:`LatticeOp.apply`
leaves out the self term, taken as the exact ``K̃_ii`` (``k_ii = 1``: 1/D, 1/D or 1); :meth:`LatticeOp.self_weight`
returns it so that DenseCRF can add it back. That share, and ``"none"``'s scale, need the lattice's amplitude
relative to the exact kernel: measured from exact row sums at 16 pixels (at build for ``"none"``, else on first use).

How it is computed: ``build`` does everything that depends on the features once — elevation, enclosing simplex and
barycentric weights as tensor ops over all pixels (the weights by a sorting network of elementwise min/max); the hash
of the vertices as two sorts of integer keys, one key per pixel for its simplex, then the vertices of the distinct
simplices only (about a quarter as many as pixels); the splat's tables from those two groupings (no ordering of all
P·(d+1) entries by vertex); the blur's neighbour tables by a key-to-vertex table when the keys are dense, else by
binary search in the sorted keys. ``apply`` is then weighted gather-sums (``embedding_bag``) over rows of ``q`` laid
out ``(B·H·W, C)``: a splat in two stages (simplex corners, then vertices) and d+1 blurs per kernel, and one slice
for all kernels together, with the normalisation and kernel weights folded into the splat and slice weights. A
channels-last ``q`` needs no transposes. Gradients with respect to ``q`` and the weights flow through an autograd
function whose backward is the transposed filter (splat and slice weights exchanged, blur directions reversed); the
features are constants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["LatticeBackend", "LatticeOp", "Lattice", "build_lattice"]

Normalization = Literal["symmetric", "per_pixel", "none"]
NORMALIZATIONS = ("symmetric", "per_pixel", "none")
_KEY_BITS = 62  # packed vertex keys must stay below 2**_KEY_BITS to be exact in int64
_LOOKUP_PER_VERTEX = 16  # blur neighbours by a dense key → vertex table of at most this many entries per vertex
_GAIN_SAMPLES = 16  # pixels per image, on a square grid, whose exact kernel row sums calibrate "none"
_GAIN_CHUNK = 1 << 18  # pixels per block when summing those rows


def _index_dtype(count: int) -> torch.dtype:
    """int32 indices (half the memory traffic in ``apply``) when ``count`` fits."""
    return torch.int32 if count < 2 ** 31 else torch.int64


@dataclass(frozen=True)
class Lattice:
    """The tables of one feature set: ``P = B·H·W`` pixels, ``d`` dimensions, ``M`` occupied vertices.

    Attributes:
        bary: ``(P, d+1)`` barycentric weights of each pixel's simplex vertices.
        vertex: ``(P·(d+1),)`` their vertex indices 0..M-1, pixel-major (the slice's gather indices).
        splat_pixel, splat_bags: the splat's first stage, ``(P·(d+1),)`` and ``(S·(d+1),)`` for the S occupied
            simplices: for each simplex s and corner r, the pixels of s (run ``s·(d+1) + r`` from
            ``splat_bags[s·(d+1) + r]``). ``by_simplex`` ``(P,)`` int64: the pixels simplex by simplex;
            ``position`` ``(P·(d+1),)``: where entry ``j·(d+1) + r``, corner r of pixel ``by_simplex[j]``, is in
            that list (see :meth:`splat_layout`).
        corners, splat_offsets: its second stage, ``(S·(d+1),)`` and ``(M,)``: the runs ``s·(d+1) + r`` grouped by
            the vertex at corner r of s, vertex v from ``splat_offsets[v]``.
        slice_offsets: ``(P,)`` ``0, d+1, 2(d+1), …``: each pixel's entries in :attr:`vertex`.
        blur_index, blur_weight: ``(d+1, M, 3)`` self, previous and next vertex along each direction with weights
            ``(1, ½, ½)``; an absent neighbour points at the vertex itself with weight 0.
        Indices are int32 when ``P·(d+1) < 2³¹`` (less traffic in ``apply``), else int64.
    """

    dims: int
    num_points: int
    bary: Tensor
    vertex: Tensor
    by_simplex: Tensor
    position: Tensor
    splat_pixel: Tensor
    splat_bags: Tensor
    corners: Tensor
    splat_offsets: Tensor
    slice_offsets: Tensor
    blur_index: Tensor
    blur_weight: Tensor

    @property
    def alpha(self) -> float:
        """``1 / (1 + 2^-d)``: the blur returns ``1 + 2^-d`` of a value to its own vertex; this makes it 1."""
        return 1.0 / (1.0 + 2.0 ** -self.dims)

    def splat(self, x: Tensor, weight: Tensor) -> Tensor:
        """``(P, C)`` → ``(M, C)``; ``weight`` ``(P·(d+1),)`` in :attr:`splat_pixel`'s order (:meth:`splat_layout`).

        In two stages: the weighted sum over each simplex's pixels for each of its corners (each pixel's row read
        d+1 times in a row, from cache), then the sum over each vertex's corners (S·(d+1) rows, about a quarter of
        the P·(d+1) entries). It runs as fast as one weighted sum per vertex over its pixels (measured at 500×375),
        and its tables need no ordering of the P·(d+1) entries by vertex, which the build saves.
        """
        per_corner = F.embedding_bag(self.splat_pixel, x, self.splat_bags, mode="sum", per_sample_weights=weight)
        return F.embedding_bag(self.corners, per_corner, self.splat_offsets, mode="sum")

    def splat_layout(self, weight: Tensor) -> Tensor:
        """Pixel-major splat weights ``(P·(d+1),)`` → the order :meth:`splat` takes them in (the pixels' rows
        gathered simplex by simplex, then scattered to places that advance with them: no random writes)."""
        rows = weight.view(self.by_simplex.numel(), -1).index_select(0, self.by_simplex).view(-1)
        return torch.empty_like(weight).scatter_(0, self.position, rows)

    def pixel_layout(self, weight: Tensor) -> Tensor:
        """The inverse of :meth:`splat_layout`."""
        rows = weight.index_select(0, self.position).view(self.by_simplex.numel(), -1)
        return torch.empty_like(rows).index_copy_(0, self.by_simplex, rows).view(-1)

    def blur(self, values: Tensor, *, reverse: bool = False) -> Tensor:
        """``(M, C)`` → ``(M, C)``, directions 0..d (``reverse``: d..0, the transpose)."""
        for j in (range(self.dims, -1, -1) if reverse else range(self.dims + 1)):
            values = F.embedding_bag(self.blur_index[j], values, mode="sum", per_sample_weights=self.blur_weight[j])
        return values

    def slice(self, values: Tensor, weight: Tensor) -> Tensor:
        """``(M, C)`` → ``(P, C)``; ``weight`` ``(P·(d+1),)`` pixel-major."""
        return F.embedding_bag(self.vertex, values, self.slice_offsets, mode="sum", per_sample_weights=weight)


def build_lattice(features: Tensor) -> Lattice:
    """The tables for features ``(B, d, H, W)`` float (divided by θ); pixels are numbered in ``(b, y, x)`` order.

    Raises:
        ValueError: not a non-empty 4-D float tensor, NaN or infinite values, or values too large for the lattice.
    """
    _check_features(features, "features")
    return _build_lattice(features)


def _check_features(features: Tensor, name: str) -> None:
    if not isinstance(features, Tensor) or features.ndim != 4 or 0 in features.shape:
        got = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"{name} must be a (B, D, H, W) tensor with no empty axis (D ≥ 1 feature channels), "
                         f"got {got}.")
    if not features.is_floating_point():
        raise ValueError(f"{name} must be floating point (features divided by θ), got {features.dtype}.")
    # a finite sum means finite values (NaN and ±inf propagate); only a sum that is not (NaN, ±inf or an overflow)
    # takes the exact test, which cost 13 ms of a 0.2 MP build
    if not math.isfinite(float(features.sum())) and not torch.isfinite(features).all():
        raise ValueError(f"{name} has NaN or infinite values; check the image and that every θ > 0.")


def _build_lattice(features: Tensor) -> Lattice:
    b, d, h, w = features.shape
    total, d1 = b * h * w, d + 1
    f = features.detach().permute(1, 0, 2, 3).reshape(d, total)
    elevated = _elevate(f)
    reach = max(-float(elevated.min()), float(elevated.max())) / d1
    if reach * torch.finfo(f.dtype).eps >= 1.0 / 16:  # rounding to the lattice needs ~4 bits below the unit
        raise ValueError(f"features reach {reach:.3g} lattice steps from the origin, more than {f.dtype} resolves; "
                         f"features are divided by their θ's, so use larger θ's, or float64 features.")
    base, slot = _enclosing_simplex(elevated)
    bary = _barycentric(elevated, base)
    anchor, radix, layer = _anchor_keys(base, b)
    index = _index_dtype(total * d1)
    # the distinct simplices (far fewer than pixels) and each pixel's: one sort of P keys
    pixels, first, simplex, by_place = _group(_simplex_keys(anchor, slot, layer), index)
    rep = pixels.index_select(0, first)  # one pixel of each simplex
    # their vertices: one sort of S·(d+1) keys; the sorted unique keys number the vertices
    rep_slot = torch.empty((rep.numel(), d1), dtype=torch.long, device=f.device).copy_(slot.index_select(1, rep).t())
    keys = _vertex_keys(anchor.index_select(0, rep), rep_slot, radix)
    if int(keys.max()) < 2 ** 31:
        keys = keys.int()  # a narrower radix sort
    corners, starts, corner_vertex, _ = _group(keys, index)
    unique = keys.index_select(0, corners.index_select(0, starts)).long()
    vertex = corner_vertex.view(-1, d1).index_select(0, simplex).view(-1)
    position, splat_pixel, splat_bags = _splat_tables(pixels, first, by_place, d1, index)
    blur_index, blur_weight = _blur_tables(unique, radix, layer, d, f.dtype, index)
    slice_offsets = torch.arange(0, total * d1, d1, dtype=index, device=f.device)
    return Lattice(d, unique.numel(), bary, vertex, pixels, position, splat_pixel, splat_bags, corners.to(index),
                   starts, slice_offsets, blur_index, blur_weight)


def _group(keys: Tensor, index: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sorts ``keys`` ``(N,)``: ``order`` ``(N,)`` int64 (positions by key), ``starts`` ``(U,)`` (each distinct key's
    first place in ``order``, ascending key), ``group`` ``(N,)`` (each position's distinct key, 0..U-1) and
    ``by_place`` ``(N,)`` (the same for each place in ``order``, ascending)."""
    sorted_keys, order = torch.sort(keys, stable=True)  # stable: a radix sort, faster than the default for int64
    new = torch.ones_like(sorted_keys, dtype=torch.bool)
    torch.ne(sorted_keys[1:], sorted_keys[:-1], out=new[1:])
    starts = new.nonzero().squeeze(1).to(index)
    by_place = new.cumsum(0, dtype=index).sub_(1)
    group = torch.empty(keys.numel(), dtype=index, device=keys.device).scatter_(0, order, by_place)
    return order, starts, group, by_place


def _splat_tables(pixels: Tensor, first: Tensor, group: Tensor, d1: int,
                  index: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """The splat's first stage from the grouping of the pixels by simplex, with no sort of the P·(d+1) entries.

    ``pixels`` ``(P,)`` lists the pixels simplex by simplex, simplex s from ``first[s]``; ``group`` ``(P,)`` is the
    simplex of each place in that list. Simplex s takes ``(d+1)·n_s`` places from ``(d+1)·first[s]``, ``n_s`` its
    pixel count: corner r's run from ``(d+1)·first[s] + r·n_s``, where the pixel ``pixels[j]`` is at place
    ``j - first[s]``. Returns
    ``position`` ``(P·(d+1),)`` (entry ``j·(d+1) + r`` → place), ``splat_pixel`` ``(P·(d+1),)`` and ``splat_bags``
    ``(S·(d+1),)``.
    """
    points = pixels.numel()
    count = torch.diff(first, append=first.new_tensor([points]))  # pixels per simplex
    corner = torch.arange(d1, dtype=index, device=pixels.device)
    bags = torch.addcmul(first[:, None] * d1, count[:, None], corner).view(-1)
    start = torch.arange(points, dtype=index, device=pixels.device).add_(first.index_select(0, group), alpha=d1 - 1)
    position = torch.addcmul(start[:, None], count.index_select(0, group)[:, None], corner).view(-1)
    splat_pixel = torch.empty(points * d1, dtype=index, device=pixels.device)
    splat_pixel.scatter_(0, position, pixels.to(index)[:, None].expand(-1, d1).reshape(-1))
    return position, splat_pixel, bags


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
    """The simplex holding each point: ``base`` (d+1, P), float with integer values (the nearest remainder-0 vertex,
    in units of d+1), and ``slot`` (d+1, P) int8: ``d - rank``, where ``rank`` orders each coordinate's offset from
    ``base`` (0 = largest; ties by index)."""
    d1 = elevated.shape[0]
    base = torch.round(elevated * (1.0 / d1))
    offset = torch.add(elevated, base, alpha=-d1)
    # rank_j = #{i < j: offset_i >= offset_j} + #{k > j: offset_k > offset_j}, counted in int8 (no casts: a bool
    # tensor is viewed as int8) as j - Σ_{i<j} [offset_i < offset_j] + Σ_{k>j} [offset_j < offset_k]
    rank = torch.arange(d1, dtype=torch.int8, device=elevated.device)[:, None].repeat(1, elevated.shape[1])
    for i in range(d1):
        for j in range(i + 1, d1):
            smaller = torch.lt(offset[i], offset[j]).view(torch.int8)
            rank[i] += smaller
            rank[j] -= smaller
    rank += base.sum(0).to(torch.int8)  # the rounded point is off the hyperplane by this many steps: move it back
    wrap = (rank < 0).view(torch.int8) - (rank >= d1).view(torch.int8)
    rank += wrap * d1
    base += wrap
    return base, rank.neg_().add_(d1 - 1)  # d - rank; rows stay contiguous (no pixel-major int64 copy)


def _sorting_network(n: int) -> list[tuple[int, int]]:
    """Batcher's odd–even merge sort on ``n`` wires: compare-exchange pairs ``(a, b)``, ``a < b``, in order (the
    network for the next power of two, less the comparators that touch a wire ≥ n: those wires would hold +∞)."""
    pairs = []
    size = 1 << max(n - 1, 0).bit_length()
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p) and i + j + k < n:
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


def _barycentric(elevated: Tensor, base: Tensor) -> Tensor:
    """``(P, d+1)`` barycentric weights of the simplex vertices, remainder 0..d (Adams et al. 2010, §3.1):
    with ``v_(k)`` the offset ranked k, vertex m ≥ 1 gets ``v_(d-m) - v_(d-m+1)`` and vertex 0 the rest.

    ``v_(d-m)`` is the m-th smallest offset (the ranks of :func:`_enclosing_simplex` order them, ties having equal
    values), so the offsets are sorted by a sorting network of elementwise min/max over the d+1 rows.
    """
    d1 = elevated.shape[0]
    rows = list(torch.add(elevated, base, alpha=-d1).div_(d1).unbind(0))
    for a, b in _sorting_network(d1):
        rows[a], rows[b] = torch.minimum(rows[a], rows[b]), torch.maximum(rows[a], rows[b])
    bary = torch.empty((elevated.shape[1], d1), dtype=elevated.dtype, device=elevated.device)
    for m in range(1, d1):
        torch.sub(rows[m], rows[m - 1], out=bary[:, m])
    torch.sub(rows[0] + 1.0, rows[-1], out=bary[:, 0])
    return bary


def _anchor_keys(base: Tensor, batches: int) -> tuple[Tensor, list[int], int]:
    """Packed int64 keys ``(P,)`` of each pixel's remainder-0 vertex, and the radices of the packing.

    Vertex r has coordinates ``(d+1)·a + r``; the first d coordinates determine it (they sum to zero). The key of
    its ``a`` is ``Σ_i (a_i - lo_i)·R_i + b·R_d`` (b the image) with mixed radices R that leave one step of margin on
    every side, so a neighbour's key is the key plus a constant; :func:`_vertex_keys` appends the remainder as the
    lowest digit. Returns the keys (``a = base``), R and ``layer = B·R_d``, the number of such keys.
    """
    d = base.shape[0] - 1
    low = base[:d].amin(1) - 2
    span = (base[:d].amax(1) - low + 2).long().tolist()
    low = low.long().tolist()
    radix = [1]
    for s in span:
        radix.append(radix[-1] * int(s))
    layer = radix[d] * batches
    if (d + 1) * layer >= 2 ** _KEY_BITS:
        raise ValueError(f"the {d}-dimensional features span too wide a range for the lattice's 64-bit vertex "
                         f"keys (per-dimension spans {span} lattice steps); use larger θ's (features divided by "
                         f"larger ranges) or fewer feature dimensions.")
    points = base.shape[1]
    # one float64 matrix-vector product when it is exact: every partial sum an integer below 2^53 in magnitude
    if sum(max(abs(lo), abs(lo + s)) * r for lo, s, r in zip(low, span, radix)) < 2 ** 53:
        weights = torch.tensor(radix[:d], dtype=torch.float64, device=base.device)
        anchor = torch.mv(base[:d].t().double(), weights).long().sub_(sum(lo * r for lo, r in zip(low, radix)))
    else:
        anchor = base[0].long().sub_(low[0])
        for i in range(1, d):
            anchor.add_(base[i].long().sub_(low[i]).mul_(radix[i]))
    if batches > 1:  # pixels are numbered image by image
        anchor += torch.arange(batches, device=base.device).repeat_interleave(points // batches) * radix[d]
    return anchor, radix, layer


def _simplex_keys(anchor: Tensor, slot: Tensor, layer: int) -> Tensor:
    """``(P,)`` integer keys equal exactly when two pixels share a simplex: its remainder-0 vertex (``anchor`` <
    layer) and the order of its coordinates (``slot`` ``(d+1, P)``, of which the first d rows determine it); int32
    when they fit (a narrower radix sort)."""
    d1 = slot.shape[0]
    orders = d1 ** (d1 - 1)
    if layer * orders >= 2 ** 63:  # too many dimensions or too wide a range to pack: number the distinct rows
        return torch.unique(torch.cat([anchor[None], slot[:-1].long()]).t(), dim=0, return_inverse=True)[1]
    keys = anchor * orders
    for k in range(d1 - 1):
        keys.add_(slot[k], alpha=d1 ** k)
    return keys.int() if layer * orders <= 2 ** 31 else keys


def _vertex_keys(anchor: Tensor, slot: Tensor, radix: list[int]) -> Tensor:
    """Packed keys ``(N·(d+1),)``, simplex-major, of the vertices of N simplices given by their remainder-0 vertex
    keys ``anchor`` ``(N,)`` and ``slot`` ``(N, d+1)`` int64 (:func:`_enclosing_simplex`'s, transposed): vertex r has
    ``a_i = base_i - [rank_i > d - r]``: the anchor less the radices of those i, packed as ``(that)·(d+1) + r``.

    The remainder is the lowest digit, so a simplex's d+1 vertices get nearby keys: numbered in key order, the
    vertices sit close to the simplices around them, and the splat's second stage and the slice read rows near
    each other (with the remainder as the highest digit, the second stage swept its input d+1 times)."""
    d = slot.shape[1] - 1
    keys = torch.empty(slot.shape, dtype=torch.long, device=slot.device)
    keys[:, 0] = anchor
    radix_t = torch.tensor(radix[:d] + [0], dtype=torch.long, device=slot.device)
    by_slot = torch.empty_like(slot).scatter_(1, slot, radix_t.expand_as(slot))  # R of the coordinate ranked d-m
    torch.sub(anchor[:, None], by_slot[:, :d].cumsum(1), out=keys[:, 1:])
    return keys.mul_(d + 1).add_(torch.arange(d + 1, device=slot.device)).view(-1)


def _blur_tables(unique: Tensor, radix: list[int], layer: int, d: int, dtype: torch.dtype,
                 index: torch.dtype) -> tuple[Tensor, Tensor]:
    """Neighbour tables ``(d+1, M, 3)`` of the blur along each lattice direction (Adams et al. 2010, §3.2).

    Along direction j the neighbours of vertex x are ``x ∓ 1`` in every coordinate except j, where they are
    ``x ± d``. In packed keys (:func:`_vertex_keys`) the previous neighbour has remainder r-1 and ``a + R_j`` (``a``
    when j = d); from r = 0 it wraps to remainder d with every other ``a_i`` one lower. The next is the inverse.
    """
    m = unique.numel()
    rem = unique % (d + 1)
    step = torch.tensor(radix[:d] + [0], device=unique.device)[:, None]  # (d+1, 1): R_j, 0 for j = d
    total = sum(radix[:d])
    prev = torch.where(rem == 0, unique + (step - total) * (d + 1) + d, unique + step * (d + 1) - 1)  # (d+1, M)
    own = torch.arange(m, device=unique.device).expand(d + 1, m)
    if (d + 1) * layer <= _LOOKUP_PER_VERTEX * m:  # keys few enough for a table from key to vertex
        # targets stay in [0, (d+1)·layer): the radices leave a margin of one step around every vertex
        table = torch.full(((d + 1) * layer,), -1, dtype=torch.long, device=unique.device)
        pos = table.index_copy_(0, unique, own[0]).index_select(0, prev.reshape(-1)).view_as(prev)
        found = pos >= 0
    else:
        pos = torch.searchsorted(unique, prev.reshape(-1)).clamp_(max=m - 1).view_as(prev)
        found = unique.index_select(0, pos.reshape(-1)).view_as(pos) == prev
    before = torch.where(found, pos, own)
    # y is x's previous neighbour along j exactly when x is y's next one: the next table is the previous one
    # inverted (one search per direction, not two); vertices without a previous neighbour write to a spare column
    after = torch.cat([own, own.new_zeros(d + 1, 1)], 1).scatter_(1, torch.where(found, pos, m), own)[:, :m]
    cols = torch.stack([own, before, after], 2)
    weights = torch.stack([torch.ones_like(found), found, after != own], 2).to(dtype)
    weights *= torch.tensor([1.0, 0.5, 0.5], dtype=dtype, device=unique.device)
    return cols.to(index), weights


def _degree(lat: Lattice) -> Tensor:
    """``(P,)``: ``D = L·1``, the lattice's row sums (self term included), by the same splat, blur and slice as
    :meth:`Lattice.splat` etc. but as scatter-add and gathers over one channel, which cost far less than
    ``embedding_bag``'s per-bag work when C = 1."""
    values = torch.zeros(lat.num_points, dtype=lat.bary.dtype, device=lat.bary.device)
    values.index_add_(0, lat.vertex, lat.bary.reshape(-1))
    # the sums over each row's 3 or d+1 products as matrix-vector products: a reduction over so short an inner
    # axis runs at a fraction of mv's speed
    ones = torch.ones(max(3, lat.dims + 1), dtype=values.dtype, device=values.device)
    for j in range(lat.dims + 1):
        values = torch.mv(values.index_select(0, lat.blur_index[j].view(-1)).view_as(lat.blur_weight[j])
                          .mul_(lat.blur_weight[j]), ones[:3])
    sliced = values.index_select(0, lat.vertex).view_as(lat.bary).mul_(lat.bary)
    return torch.mv(sliced, ones[:lat.dims + 1]).mul_(lat.alpha)


def _gain(features: Tensor, degree: Tensor) -> Tensor:
    """``(P,)``: per image, the exact kernel's row sums over the lattice's, at a grid of ``_GAIN_SAMPLES`` pixels.

    The lattice's amplitude is not the kernel's: ≈1.13 times too small for position features (which fill their
    plane), 1.6–1.8 for colour and position (a 2-D sheet in R^5: the blur loses the mass it would carry to unoccupied
    vertices). Normalisation cancels it from the message but not from the self term's share ``k_ii / D``.
    """
    b, d, h, w = features.shape
    flat = features.reshape(b, d, h * w).transpose(1, 2)
    side = math.isqrt(_GAIN_SAMPLES)
    ys = ((torch.arange(side, device=features.device) + 0.5) * (h / side)).long()
    xs = ((torch.arange(side, device=features.device) + 0.5) * (w / side)).long()
    picks = (ys[:, None] * w + xs[None, :]).reshape(-1)
    ratios = []
    for i in range(b):
        rows = flat[i, picks]
        # −|f_i − f_j|²/2 as one product: [f_i, −|f_i|²/2, 1]·[f_j, 1, −|f_j|²/2]
        left = torch.cat([rows, -0.5 * rows.square().sum(1, keepdim=True), torch.ones_like(rows[:, :1])], 1)
        exact = sum((left @ torch.cat([cols, torch.ones_like(cols[:, :1]), -0.5 * cols.square().sum(1, keepdim=True)],
                                      1).t()).clamp_(max=0.0).exp_().sum()
                    for cols in flat[i].split(_GAIN_CHUNK))
        ratios.append(exact / degree.view(b, h * w)[i, picks].sum())
    return torch.stack(ratios).repeat_interleave(h * w)


class _Kernel:
    """One lattice L with its normalisation ``K̃ = diag(n_out)·L·diag(n_in)`` as splat weights (vertex-major, with
    ``n_in``) and slice weights (``(P, d+1)``, with ``α·n_out``): ``D^-1/2, D^-1/2`` (symmetric, pydensecrf's),
    ``1, D^-1`` (per pixel), ``1, g`` (none, g = :func:`_gain`), with ``D = L·1``."""

    def __init__(self, features: Tensor, normalization: Normalization) -> None:
        self.features = features.detach()
        self.normalization = normalization
        self.lattice = lat = _build_lattice(self.features)
        self.degree = _degree(lat)
        n_in = n_out = torch.ones_like(self.degree)
        if normalization == "none":
            n_out = _gain(self.features, self.degree)
        elif normalization == "symmetric":
            n_in = n_out = self.degree.clamp_min(torch.finfo(self.degree.dtype).tiny).rsqrt()
        else:
            n_out = 1.0 / self.degree.clamp_min(torch.finfo(self.degree.dtype).tiny)
        self.splat_weight = lat.splat_layout((lat.bary * n_in[:, None]).reshape(-1))
        self.slice_weight = lat.bary * (n_out * lat.alpha)[:, None]
        self._self_weight: Tensor | None = None

    @property
    def self_weight(self) -> Tensor:
        """``(P,)``: ``K̃_ii`` for the exact ``k_ii = 1``: 1 (none), else ``1 / (g·D)`` (computed on first use)."""
        if self._self_weight is None:
            if self.normalization == "none":
                self._self_weight = torch.ones_like(self.degree)
            else:
                self._self_weight = 1.0 / (_gain(self.features, self.degree) * self.degree)
        return self._self_weight

    def filter(self, x: Tensor) -> Tensor:
        """``K̃ x`` (self term included), ``(P, C)``."""
        lat = self.lattice
        return lat.slice(lat.blur(lat.splat(x, self.splat_weight)), self.slice_weight.reshape(-1))

    def filter_transposed(self, x: Tensor) -> Tensor:
        """``K̃ᵀ x``: splat with the slice weights, blur in reverse, slice with the splat weights."""
        lat = self.lattice
        blurred = lat.blur(lat.splat(x, lat.splat_layout(self.slice_weight.reshape(-1))), reverse=True)
        return lat.slice(blurred, lat.pixel_layout(self.splat_weight))


class _Message(torch.autograd.Function):
    """``Σ_m w_m K̃_m x`` for ``x`` ``(P, C)``; backward ``Σ_m w_m K̃_mᵀ g`` and ``∂/∂w_m = ⟨g, K̃_m x⟩``."""

    @staticmethod
    def forward(ctx, x: Tensor, weights: Tensor, op: "LatticeOp") -> Tensor:
        ctx.op = op
        ctx.save_for_backward(x, weights)
        return op._merged_message(x)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x, weights = ctx.saved_tensors
        kernels = ctx.op.kernels
        grad = grad.contiguous()
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = sum(wm * k.filter_transposed(grad) for wm, k in zip(weights, kernels))
        if ctx.needs_input_grad[1]:
            grad_w = torch.stack([(grad * k.filter(x)).sum() for k in kernels])
        return grad_x, grad_w, None


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
        """One ``(B, D_m, H, W)`` feature tensor per kernel m (divided by θ, any D_m ≥ 1), sharing B, H, W, dtype
        and device. The features are constants: no gradient flows to them.

        Raises:
            ValueError: an empty list, mismatched shapes, non-float or non-finite features.
        """
        features = list(features)
        if not features:
            raise ValueError("features is empty; pass one (B, D, H, W) tensor per kernel.")
        for m, f in enumerate(features):
            _check_features(f, f"features[{m}]")
        if len({(f.shape[0], *f.shape[2:]) for f in features}) != 1:
            raise ValueError(f"features must share B, H and W; got shapes {[tuple(f.shape) for f in features]}.")
        kinds = {(f.dtype, f.device) for f in features}
        if len(kinds) != 1:
            raise ValueError(f"features must all have one dtype and device; got "
                             f"{sorted(f'{k[0]} on {k[1]}' for k in kinds)}.")
        b, _, h, w = features[0].shape
        return LatticeOp([_Kernel(f, self.normalization) for f in features], (b, h, w))


class LatticeOp:
    """The built operator of :class:`LatticeBackend`; ``apply`` reuses every table that ``build`` made.

    ``include_self`` (see :meth:`with_self_term`) puts the self term into ``apply``, which then needs no subtraction.
    """

    def __init__(self, kernels: list[_Kernel], shape: tuple[int, int, int], weights: Tensor | None = None, *,
                 include_self: bool = False, slice_tables: tuple[Tensor, Tensor] | None = None) -> None:
        self.kernels = kernels
        self.shape = shape
        self.include_self = include_self
        ref = kernels[0].degree
        self.weights = weights if weights is not None else torch.ones(len(kernels), dtype=ref.dtype,
                                                                      device=ref.device)
        if slice_tables is None:  # every kernel's vertices in one table: one slice gives the weighted sum
            shifts = [0]
            for k in kernels[:-1]:
                shifts.append(shifts[-1] + k.lattice.num_points)
            rows = ref.numel()
            first = kernels[0].lattice.vertex
            width = sum(k.lattice.dims + 1 for k in kernels)
            index = torch.empty((rows, width), dtype=first.dtype, device=first.device)
            col = 0
            for k, s in zip(kernels, shifts):
                torch.add(k.lattice.vertex.view(rows, -1), s, out=index[:, col:col + k.lattice.dims + 1])
                col += k.lattice.dims + 1
            index = index.view(-1)
            slice_tables = index, torch.arange(0, index.numel(), index.numel() // rows, dtype=index.dtype,
                                               device=index.device)
        self._slice_tables = slice_tables
        self._slice_weight: Tensor | None = None

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the features it was built from; ``apply`` takes ``q`` of this dtype."""
        return self.weights.dtype

    def weighted(self, weights: Tensor) -> "LatticeOp":
        """The same lattices with per-kernel weights ``(M,)`` (differentiable)."""
        weights = torch.as_tensor(weights, dtype=self.weights.dtype, device=self.weights.device)
        if weights.shape != self.weights.shape:
            raise ValueError(f"weights must have shape {tuple(self.weights.shape)} (one per kernel), "
                             f"got {tuple(weights.shape)}.")
        return LatticeOp(self.kernels, self.shape, weights, include_self=self.include_self,
                         slice_tables=self._slice_tables)

    def with_self_term(self) -> "LatticeOp":
        """The same operator with ``apply`` returning ``Σ_m w_m K̃_m q`` self term included: the classic DenseCRF
        message, and the lattice's own output, so one subtraction and one addition per iteration fewer than
        :meth:`apply` + :meth:`self_weight`."""
        return LatticeOp(self.kernels, self.shape, self.weights, include_self=True, slice_tables=self._slice_tables)

    def self_weight(self) -> Tensor:
        """``(B, 1, H, W)``: the self term that :meth:`apply` leaves out, ``Σ_m w_m K̃_m,ii`` (0 with
        ``include_self``)."""
        b, h, w = self.shape
        rows = torch.zeros_like(self.kernels[0].degree) if self.include_self else self._self_rows()
        return rows.view(b, h, w, 1).permute(0, 3, 1, 2)

    def apply(self, q: Tensor) -> Tensor:
        """``(B, C, H, W)`` → ``(B, C, H, W)``: ``Σ_m w_m K̃_m q`` without the self term (unless ``include_self``).

        Fastest with ``q`` in channels-last memory; the result is channels-last.
        """
        b, h, w = self.shape
        if q.ndim != 4 or (q.shape[0], *q.shape[2:]) != (b, h, w):
            raise ValueError(f"q has shape {tuple(q.shape)}, but the operator was built for batch {b} and size "
                             f"{h}×{w}; expected (B, C, H, W) = ({b}, C, {h}, {w}).")
        if q.dtype != self.dtype or q.device != self.weights.device:
            raise ValueError(f"q is {q.dtype} on {q.device} but the operator was built from {self.dtype} features "
                             f"on {self.weights.device}; build it from features of the same dtype and device.")
        c = q.shape[1]
        x = q.permute(0, 2, 3, 1).reshape(b * h * w, c)
        out = _Message.apply(x, self.weights, self)
        if not self.include_self:
            out = torch.addcmul(out, self._self_rows()[:, None], x, value=-1.0)
        return out.view(b, h, w, c).permute(0, 3, 1, 2)

    def _self_rows(self) -> Tensor:
        """``(P,)``: ``Σ_m w_m K̃_m,ii`` (differentiable in the weights)."""
        return sum(wm * k.self_weight for wm, k in zip(self.weights, self.kernels))

    def _merged_message(self, x: Tensor) -> Tensor:
        """``Σ_m w_m K̃_m x`` (self term included) for ``x`` ``(P, C)``, with the weights' current values."""
        values = [k.lattice.blur(k.lattice.splat(x, k.splat_weight)) for k in self.kernels]
        weight = self._slice_weight
        if weight is None:
            w = self.weights.detach()
            weight = x.new_empty((x.shape[0], sum(k.slice_weight.shape[1] for k in self.kernels)))
            col = 0
            for m, k in enumerate(self.kernels):  # written in place: no per-kernel products to concatenate
                torch.mul(k.slice_weight, w[m], out=weight[:, col:col + k.slice_weight.shape[1]])
                col += k.slice_weight.shape[1]
            weight = weight.view(-1)
            if not self.weights.requires_grad:  # trainable weights change in place: recompute them each time
                self._slice_weight = weight
        index, offsets = self._slice_tables
        table = values[0] if len(values) == 1 else torch.cat(values)
        return F.embedding_bag(index, table, offsets, mode="sum", per_sample_weights=weight)
