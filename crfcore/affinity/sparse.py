"""The k×k window operator of an unblurred :class:`~crfcore.affinity.LocalOp` as a sparse matrix.

``K`` (n×n for the n pixels of the grid, ``K_{i, i+d} = G_d(i)`` for the k²−1 taps d of the window that stay on the
grid) is stored once in compressed sparse rows and applied to all classes at once as one sparse × dense product
(MKL on CPU, cuSPARSE on CUDA), ``(n, C)`` in and out. A solver that applies the same K many times to many classes
(the Gaussian CRF on its pooled grid) gains from this over the window's tap-by-tap multiply-adds: one pass over
the kernel values per application instead of one pass over the classes per tap (0.5 MP image at b = 4, k = 11,
21 classes, one thread: 5–7 ms against 11–15 ms per application). The values are the window's own, so K stays
exactly symmetric; sums run in another order, so results differ from ``LocalOp.apply`` by float rounding only.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from .local import LocalOp

__all__ = ["SPARSE_BYTES", "WindowMatrix", "csr_matrix", "dense_columns"]

SPARSE_BYTES = 1 << 28
"""Most bytes the sparse copy of a window may take (values and column indices, 8 bytes per entry): about 280k grid
pixels at k = 11; larger operators keep their banded apply."""


class WindowMatrix:
    """K of an unblurred :class:`~crfcore.affinity.LocalOp` in compressed sparse rows, one matrix per batch item.

    Row i holds all k²−1 taps of pixel i, their columns indexing the grid zero-padded by k//2 on every side (taps
    off the grid meet that zero padding, as in ``LocalOp.apply``), so every row has the same columns shifted and
    the matrix is built without a search (one copy of the filters). Build with :meth:`of` (None when the op is
    blurred, its filters are not kept, or the matrix would exceed :data:`SPARSE_BYTES`); then :meth:`apply` as the
    op's ``apply`` on grid-sized tensors. :meth:`stencil` makes one of any per-pixel k×k stencil, centre included
    (the Gaussian CRF's M). Forward only (no autograd through the values).
    """

    def __init__(self, matrices: list[Tensor], size: tuple[int, int], radius: int) -> None:
        self.matrices = matrices
        self.size = size
        self.radius = radius

    @classmethod
    def of(cls, op: LocalOp) -> "WindowMatrix | None":
        """The sparse K of ``op``, or None where it does not apply (see the class docstring)."""
        if op.blur != 1:
            return None
        h, w = op.grid_size
        k = op.filter_size
        if op.features[0].shape[0] * (k * k - 1) * h * w * 8 > SPARSE_BYTES:
            return None
        filters = op.filters()
        if filters is None:
            return None
        return cls([_csr(f.detach(), k, centre=False) for f in filters], (h, w), k // 2)

    @classmethod
    def stencil(cls, taps: Tensor) -> "WindowMatrix":
        """The matrix of a per-pixel stencil ``(B, k², h, w)``, tap ``(dy + k//2)·k + dx + k//2`` the weight of pixel
        ``(y + dy, x + dx)`` in row ``(y, x)``, centre included (taps off the grid meet zero padding)."""
        k = math.isqrt(taps.shape[1])
        if k * k != taps.shape[1] or k % 2 == 0:
            raise ValueError(f"taps has {taps.shape[1]} per pixel; expected k² for an odd k.")
        return cls([_csr(t.detach(), k, centre=True) for t in taps], tuple(taps.shape[-2:]), k // 2)

    def apply(self, q: Tensor) -> Tensor:
        """``(B, C, h, w)`` → ``(B, C, h, w)``: ``Σ_{d≠0} G_d(i) q_{i+d}``, as ``LocalOp.apply`` (no self term; with
        the centre for a :meth:`stencil`)."""
        if q.shape[0] != len(self.matrices) or tuple(q.shape[-2:]) != self.size:
            raise ValueError(f"q has shape {tuple(q.shape)}, but the matrix was built for batch "
                             f"{len(self.matrices)} and size {self.size}.")
        b, c, h, w = q.shape
        r = self.radius
        padded = q.new_zeros(b, h + 2 * r, w + 2 * r, dense_columns(c))  # (B, padded rows, columns, classes)
        padded[:, r:r + h, r:r + w, :c] = q.permute(0, 2, 3, 1)
        out = [(m @ padded[i].flatten(0, 1))[:, :c].t().contiguous().view(c, h, w)
               for i, m in enumerate(self.matrices)]
        return out[0][None] if b == 1 else torch.stack(out)


def _csr(filters: Tensor, k: int, *, centre: bool) -> Tensor:
    """CSR ``(n, n_padded)`` of one item's filters ``(k², h, w)`` (the centre tap left out unless ``centre``): row
    i's columns are the padded-grid indices of its taps, in tap order, which is increasing column order."""
    _, h, w = filters.shape
    r = k // 2
    wp = w + 2 * r
    device = filters.device
    kept = [t for t in range(k * k) if centre or t != (k * k) // 2]
    taps = torch.tensor(kept, device=device)
    offsets = (taps // k) * wp + taps % k  # tap t = k·ty + tx of pixel (y, x) reads padded pixel (y + ty, x + tx)
    corners = (torch.arange(h, device=device)[:, None] * wp + torch.arange(w, device=device)[None, :]).reshape(-1, 1)
    columns = (corners + offsets).reshape(-1).to(torch.int32)
    values = filters[taps].reshape(len(kept), h * w).t().reshape(-1)
    rows = torch.arange(0, len(kept) * h * w + 1, len(kept), dtype=torch.int32, device=device)
    return csr_matrix(rows, columns, values, (h * w, (h + 2 * r) * wp))


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
