"""The k×k window operator of an unblurred :class:`~crfcore.affinity.LocalOp` as a sparse matrix.

``K`` (n×n for the n pixels of the grid, ``K_{i, i+d} = G_d(i)`` for the k²−1 taps d of the window that stay on the
grid) is stored once in compressed sparse rows and applied to all classes at once as one sparse × dense product
(MKL on CPU, cuSPARSE on CUDA), ``(n, C)`` in and out. A solver that applies the same K many times to many classes
(the Gaussian CRF on its pooled grid) gains from this over the window's tap-by-tap multiply-adds: one pass over
the kernel values per application instead of one pass over the classes per tap (0.5 MP image at b = 4, k = 11,
21 classes, one thread: 5–7 ms against 11–15 ms per application). The values are the window's own, so K stays
exactly symmetric; sums run in another order, so results differ from ``LocalOp.apply`` by float rounding only.

Every row holds all k² taps of its pixel, in tap order: the centre and the taps off the grid are explicit zeros
(at columns that keep each row's sorted, :func:`~crfcore.affinity.local.window_index`). So
the values are the gather's weighted taps ``(B, n, k²)`` themselves, the matrix costs no copy to build, and it is
applied to the ``(n, C)`` rows of the data as they are (no zero-padded copy); the zeros cost 1–8 % more
multiply-adds at k = 11.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .local import LocalOp, window_index

__all__ = ["SPARSE_BYTES", "WindowMatrix", "csr_matrix", "dense_columns", "from_rows", "sorted_columns", "spmm",
           "to_rows"]

SPARSE_BYTES = 1 << 28
"""Most bytes the sparse copy of a window may take (values and column indices, 8 bytes per entry): about 280k grid
pixels at k = 11; larger operators keep their banded apply."""


class WindowMatrix:
    """A per-pixel k×k stencil (K of an unblurred :class:`~crfcore.affinity.LocalOp`, or any other) in compressed
    sparse rows, one matrix per batch item; see the module docstring for the layout.

    Build with :meth:`of` (None when the op is blurred, its filters are not kept, or the matrix would exceed
    :data:`SPARSE_BYTES`) or :meth:`stencil`; then :meth:`apply` as the op's ``apply`` on grid-sized tensors, or
    :meth:`apply_rows` on the ``(B, n, P)`` rows of :func:`to_rows`. Forward only (no autograd through the values).
    """

    def __init__(self, matrices: list[Tensor], size: tuple[int, int]) -> None:
        self.matrices = matrices
        self.size = size

    @classmethod
    def of(cls, op: LocalOp) -> "WindowMatrix | None":
        """The sparse K of ``op``, or None where it does not apply (see the class docstring)."""
        if op.blur != 1:
            return None
        h, w = op.grid_size
        k = op.filter_size
        if op.features[0].shape[0] * k * k * h * w * 8 > SPARSE_BYTES:
            return None
        rows = op.tap_rows()
        if rows is None:
            return None
        index = window_index(h, w, k, rows.device)[0].reshape(-1)
        return cls([_csr(r.detach(), index) for r in rows], (h, w))

    @classmethod
    def stencil(cls, taps: Tensor) -> "WindowMatrix":
        """The matrix of a per-pixel stencil ``(B, k², h, w)``, tap ``(dy + k//2)·k + dx + k//2`` the weight of pixel
        ``(y + dy, x + dx)`` in row ``(y, x)``, centre included (taps off the grid are dropped, as if they met zero
        padding)."""
        k = round(taps.shape[1] ** 0.5)
        if k * k != taps.shape[1] or k % 2 == 0:
            raise ValueError(f"taps has {taps.shape[1]} per pixel; expected k² for an odd k.")
        b, k2, h, w = taps.shape
        index, off_y, off_x = window_index(h, w, k, taps.device)
        off = _off_grid(off_y, off_x)
        rows = taps.detach().flatten(2).transpose(1, 2).masked_fill(off, 0.0)
        return cls([_csr(r, index.reshape(-1)) for r in rows], (h, w))

    def apply(self, q: Tensor) -> Tensor:
        """``(B, C, h, w)`` → ``(B, C, h, w)``: ``Σ_{d≠0} G_d(i) q_{i+d}``, as ``LocalOp.apply`` (no self term; with
        the centre for a :meth:`stencil`)."""
        if q.shape[0] != len(self.matrices) or tuple(q.shape[-2:]) != self.size:
            raise ValueError(f"q has shape {tuple(q.shape)}, but the matrix was built for batch "
                             f"{len(self.matrices)} and size {self.size}.")
        return from_rows(self.apply_rows(to_rows(q)), self.size, q.shape[1]).contiguous()

    def apply_rows(self, x: Tensor) -> Tensor:
        """``(B, n, P)`` → ``(B, n, P)``: the product with each item's rows of data (contiguous, e.g.
        :func:`to_rows`)."""
        if len(self.matrices) == 1:
            return spmm(self.matrices[0], x[0])[None]
        return torch.stack([spmm(m, x[i]) for i, m in enumerate(self.matrices)])


def spmm(matrix: Tensor, dense: Tensor) -> Tensor:
    """``matrix @ dense`` for a sparse CSR ``(m, n)`` and a dense ``(n, P)``: into a fresh ``(m, P)`` given as the
    product's output, which spares the zero fill and the copy of ``@`` (two passes over the result per product)."""
    out = dense.new_empty(matrix.shape[0], dense.shape[1])
    return torch.addmm(out, matrix, dense, beta=0, out=out)


def to_rows(q: Tensor) -> Tensor:
    """``(B, C, h, w)`` → rows ``(B, h·w, P)``, ``P = dense_columns(C)``, the columns past C zero."""
    b, c, h, w = q.shape
    p = dense_columns(c)
    out = q.new_zeros(b, h * w, p) if p != c else q.new_empty(b, h * w, p)
    out.view(b, h, w, p)[..., :c] = q.permute(0, 2, 3, 1)
    return out


def from_rows(x: Tensor, size: tuple[int, int], classes: int) -> Tensor:
    """Rows ``(B, h·w, P)`` → the ``(B, C, h, w)`` view of their first ``classes`` columns (not contiguous)."""
    return x.view(x.shape[0], *size, x.shape[-1])[..., :classes].permute(0, 3, 1, 2)


def sorted_columns(index: Tensor, off: Tensor) -> Tensor:
    """Column indices ``(n·T,)`` of a CSR with T entries per row from ``index`` ``(n, T)`` (increasing along each row
    where ``off`` is not set), whose entries where ``off`` is set hold zero values: each of those takes the column
    of the next entry of its row that is not off, or of the previous one after the last (every row needs one), so
    the columns are non-decreasing along each row whatever ``index`` holds there."""
    big = torch.iinfo(index.dtype).max
    following = index.masked_fill(off, big).flip(1).cummin(1).values.flip(1)
    preceding = index.masked_fill(off, -1).cummax(1).values
    return torch.where(following == big, preceding, following).reshape(-1)


def _off_grid(off_y: Tensor, off_x: Tensor) -> Tensor:
    """``(h·w, T)``: the taps off the grid, from :func:`~crfcore.affinity.local.window_index`'s per-axis flags."""
    h, t = off_y.shape
    w = off_x.shape[0]
    return (off_y.view(h, 1, t) | off_x.view(1, w, t)).view(h * w, t)


def _csr(rows: Tensor, index: Tensor) -> Tensor:
    """CSR ``(n, n)`` with the same number T of entries in every row: values ``rows`` ``(n, T)`` (a view when
    contiguous) at the columns ``index`` ``(n·T,)``, non-decreasing along each row."""
    n, t = rows.shape
    offsets = torch.arange(0, n * t + 1, t, dtype=index.dtype, device=rows.device)
    return csr_matrix(offsets, index, rows.reshape(-1), (n, n))


def dense_columns(classes: int) -> int:
    """Columns to give the dense side of a sparse product for ``classes`` columns of data: above 8, the next
    multiple of 8 (zero columns), which MKL's product runs faster than the odd count (K of the 0.5 MP default, one
    thread: 21 columns 6.5 ms, 24 columns 5.5 ms; 16 columns 4.0 ms, 3 columns 2.2 ms, 8 columns 2.6 ms)."""
    return classes if classes <= 8 else -(-classes // 8) * 8


def csr_matrix(rows: Tensor, columns: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    """``torch.sparse_csr_tensor`` from int32 row offsets and sorted column indices, without its invariant checks
    (the callers build them sorted and in range; tests check them) and without its "beta" warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(rows, columns, values, shape, check_invariants=False)
