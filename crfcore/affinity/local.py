"""Truncated k×k message passing (ConvCRF, Teichmann & Cipolla 2018, §4).

The fully connected kernel is truncated to ``|dx|, |dy| ≤ k//2`` and computed exactly per pixel: a convolution whose
filter varies with the pixel and is shared by all classes,

    M_i = Σ_{d ∈ window, d ≠ 0} G_d(i) · q_{i+d},   G_d(i) = Σ_m w_m exp(-|f_i - f_{i+d}|² / 2).

With a blur factor b > 1 the pairwise step runs on a grid downsampled b times (features and q averaged over b×b
blocks) and the message is upsampled back bilinearly, so the window reaches k·b pixels for 1/b² of the work.

How it is computed: the k²−1 shifted multiply-adds run over bands of rows small enough to stay in cache, so memory
traffic per iteration is close to one read of q and G and one write of M. The per-pixel filters G are built once
(``build``) and cached when they fit ``cache_bytes``; larger images recompute them band by band in ``apply``, so
memory stays bounded (a 4096×4096 image with 21 classes at k=11 needs a few GiB, never the k²·C·N of an unfold).

Without autograd, ``message_rows`` computes the message of a band of rows in channels-last order ``(B, h, w, C)``:
k²−1 multiply-adds per band, each small enough to run on one thread out of cache (measured on a 2-core machine:
bands of ~32K elements ran the k = 7 message on 375×500×21 ~2x faster than 128K-element bands and ~10x faster
than 512K, where the ops split over threads; the (B, C, h, w) order ran as fast as channels-last, and an unfold
into a ``(C, k², N)`` tensor with a batched product 10–30x slower). Mean field on this operator
(:func:`crfcore.inference.mean_field`) runs its softmax, unary and resampling in the same bands and order.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .grid import downsample, upsample

__all__ = ["LocalBackend", "LocalOp", "BandRunner", "check_features", "band_rows"]

_BAND_ELEMENTS = 1 << 17  # elements of q per band in ``apply`` with autograd: ~512 KiB in float32, one core's L2
BAND_ELEMENTS = 1 << 15  # elements per op in the no-grad band loops: torch runs ops under 32768 on one thread


def band_rows(row_elements: int, multiple: int = 1) -> int:
    """Rows per band so that a band holds about :data:`BAND_ELEMENTS` elements, a positive multiple of
    ``multiple``, for rows of ``row_elements`` elements."""
    return multiple * max(1, BAND_ELEMENTS // max(1, row_elements * multiple))


_RUNNING = threading.local()  # .threads: the thread count of the innermost active BandRunner in this thread


class BandRunner:
    """Runs independent bands of small ops on ``torch.get_num_threads()`` Python threads, each op on one thread.

    torch splits an op over its threads at a barrier; for the many small ops of a band loop that costs more than
    it gains, and on a loaded machine each barrier waits for a descheduled thread (measured: a 42K-element
    softmax 11 ms instead of ~0.1 ms). Inside ``with BandRunner() as run:`` torch runs ops on one thread in the
    calling thread and the workers (``torch.set_num_threads(1)``, restored on exit), and ``run(fn, n)`` calls
    ``fn(i)`` for ``i < n`` spread over the workers; the ops release the interpreter lock while they compute.
    The calling thread and the workers flush subnormal floats to zero (``torch.set_flush_denormal``; turned off
    again on exit): a softmax whose classes differ by more than ~87 in log space makes subnormal exponentials,
    ~2.5x slower to compute, and values under 1.2e-38 of the largest class are invisible to a float32 sum anyway.
    """

    def __init__(self) -> None:
        outer = getattr(_RUNNING, "threads", None)  # inside another runner: its thread count, torch's is now 1
        self.threads = outer if outer is not None else torch.get_num_threads()
        self._outer = outer
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> Callable[[Callable[[int], object], int], None]:
        torch.set_flush_denormal(True)
        if self.threads > 1:
            torch.set_num_threads(1)
            _RUNNING.threads = self.threads
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="crfcore-band",
                                            initializer=torch.set_flush_denormal, initargs=(True,))
        return self.run

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
            _RUNNING.threads = self._outer
            if self._outer is None:
                torch.set_num_threads(self.threads)
        if self._outer is None:
            torch.set_flush_denormal(False)

    def run(self, fn: Callable[[int], object], count: int) -> None:
        """``fn(i)`` for every ``i < count``, in parallel when there are workers; re-raises the first error."""
        if self._pool is None or count == 1:
            for i in range(count):
                fn(i)
            return
        for future in [self._pool.submit(fn, i) for i in range(count)]:
            future.result()


def check_features(features: Sequence[Tensor]) -> list[Tensor]:
    """The per-kernel features as a list; raises ``ValueError`` unless they are ``(B, D_m, H, W)`` sharing B, H, W."""
    features = list(features)
    shapes = {(f.shape[0], *f.shape[2:]) for f in features}
    if not features or len(shapes) != 1 or any(f.ndim != 4 for f in features):
        raise ValueError(f"features must be a non-empty list of (B, D, H, W) tensors sharing B, H, W; "
                         f"got shapes {[tuple(f.shape) for f in features]}.")
    return features


@dataclass(frozen=True)
class LocalBackend:
    """Builds :class:`LocalOp` for a k×k window on a grid blurred by ``blur``.

    Args:
        filter_size: window k, odd, in pixels of the blurred grid.
        blur: downsampling factor b ≥ 1.
        cache_bytes: the per-pixel filters are kept from ``build`` to ``apply`` when they fit this budget;
            otherwise they are recomputed band by band on every ``apply`` (bounded memory, more compute).
    """

    filter_size: int = 11
    blur: int = 1
    cache_bytes: int = 1 << 30

    def __post_init__(self) -> None:
        if self.filter_size < 1 or self.filter_size % 2 == 0:
            raise ValueError(f"filter_size must be a positive odd number, got {self.filter_size}.")
        if self.blur < 1:
            raise ValueError(f"blur must be >= 1, got {self.blur}.")

    def build(self, features: Sequence[Tensor]) -> "LocalOp":
        """One ``(B, D_m, H, W)`` feature tensor per kernel (divided by θ); all share B, H, W."""
        features = check_features(features)
        size = tuple(features[0].shape[-2:])
        pooled = [downsample(f, self.blur) for f in features]
        return LocalOp(pooled, self.filter_size, self.blur, size, cache_bytes=self.cache_bytes)


class LocalOp:
    """The built operator of :class:`LocalBackend`; see the module docstring for the math."""

    def __init__(self, features: list[Tensor], filter_size: int, blur: int, size: tuple[int, int], *,
                 cache_bytes: int = 1 << 30, weights: Tensor | None = None,
                 filters: list[Tensor] | None = None) -> None:
        self.features = features
        self.filter_size = filter_size
        self.blur = blur
        self.size = size
        self.cache_bytes = cache_bytes
        ref = features[0]
        self.weights = weights if weights is not None else torch.ones(len(features), dtype=ref.dtype,
                                                                      device=ref.device)
        b, _, h, w = ref.shape
        k2 = filter_size * filter_size
        # Taps off the image see features padded with this value, far from every real feature (_kernel_filters).
        self._far = [float(f.detach().abs().max()) * 2 + 1e3 for f in features]
        if filters is None and (len(features) + 1) * b * k2 * h * w * ref.element_size() <= cache_bytes:
            filters = self._build_filters()  # per kernel (B, k², h, w), unweighted
        self._filters = filters
        self._combined: Tensor | None = None

    def weighted(self, weights: Tensor) -> "LocalOp":
        weights = torch.as_tensor(weights, dtype=self.weights.dtype, device=self.weights.device)
        if weights.shape != self.weights.shape:
            raise ValueError(f"weights must have shape {tuple(self.weights.shape)} (one per kernel), "
                             f"got {tuple(weights.shape)}.")
        return LocalOp(self.features, self.filter_size, self.blur, self.size, cache_bytes=self.cache_bytes,
                       weights=weights, filters=self._filters)

    @property
    def grid_size(self) -> tuple[int, int]:
        """``(h, w)`` of the blurred grid the messages are computed on."""
        return tuple(self.features[0].shape[-2:])

    def apply(self, q: Tensor) -> Tensor:
        """``(B, C, H, W)`` → ``(B, C, H, W)``: Σ_{d≠0} G_d(i) q_{i+d} on the blurred grid, upsampled back.

        Without autograd the result is in channels-last memory (the band loop of :meth:`message_rows`)."""
        if tuple(q.shape[-2:]) != self.size or q.shape[0] != self.features[0].shape[0]:
            raise ValueError(f"q has shape {tuple(q.shape)}, but the operator was built for batch "
                             f"{self.features[0].shape[0]} and size {self.size}.")
        h, w = self.grid_size
        if not self.needs_grad() and not q.requires_grad:
            small = downsample(q, self.blur).permute(0, 2, 3, 1).contiguous()  # (B, h, w, C)
            message = torch.empty_like(small)
            with BandRunner() as run:
                self.message_grid(small, message, run)
            return upsample(message.permute(0, 3, 1, 2), self.size)
        q_small = downsample(q, self.blur)
        r = self.filter_size // 2
        q_pad = F.pad(q_small, (r, r, r, r))
        rows = max(1, _BAND_ELEMENTS // max(1, q.shape[0] * q.shape[1] * w))
        combined = self._full_combined(rows)
        bands = [self._band(q_pad, y0, min(h, y0 + rows), combined) for y0 in range(0, h, rows)]
        message = bands[0] if len(bands) == 1 else torch.cat(bands, dim=2)
        return upsample(message, self.size)

    def message_grid(self, q: Tensor, out: Tensor, run: Callable[[Callable[[int], object], int], None]) -> None:
        """:meth:`message_rows` for the whole grid into ``out`` ``(B, h, w, C)``, bands spread by ``run``
        (a :class:`BandRunner`'s)."""
        h = self.grid_size[0]
        rows = band_rows(q.shape[0] * q.shape[2] * q.shape[3])
        self._full_combined(rows)  # made once, before the workers read it

        def band(i: int) -> None:
            y0 = i * rows
            out[:, y0:min(h, y0 + rows)] = self.message_rows(q, y0, min(h, y0 + rows))

        run(band, -(-h // rows))

    def prepare(self, row_elements: int) -> None:
        """Make the weighted filters now (once), before band workers read them; ``row_elements`` = B·w·C."""
        self._full_combined(band_rows(row_elements))

    def message_rows(self, q: Tensor, y0: int, y1: int) -> Tensor:
        """The message of grid rows ``[y0, y1)`` in channels-last order, no autograd.

        Args:
            q: ``(B, h, w, C)`` contiguous, the label distribution on the operator's (blurred) grid.
            y0, y1: the band of grid rows, ``0 <= y0 < y1 <= h``.

        Returns:
            ``(B, y1 - y0, w, C)``: Σ_{d≠0} G_d(i) q_{i+d} (taps off the grid add nothing).
        """
        h, w = self.grid_size
        k = self.filter_size
        r = k // 2
        combined = self._full_combined(band_rows(q.shape[0] * w * q.shape[-1]))
        if combined is not None:
            filters = combined[:, :, y0:y1]
        else:
            filters = _weighted_sum(self.weights, self._kernel_filters(y0, y1))
        filters = filters.unsqueeze(-1)  # (B, k², rows, w, 1): one weight per pixel for all classes
        acc = q.new_zeros(q.shape[0], y1 - y0, w, q.shape[-1])
        for idx in range(k * k):
            dy, dx = idx // k - r, idx % k - r
            if dy == 0 and dx == 0:
                continue
            ya, yb = max(y0, -dy), min(y1, h - dy)  # output rows whose neighbour row y + dy is on the grid
            xa, xb = max(0, -dx), min(w, w - dx)
            if ya >= yb or xa >= xb:
                continue
            acc[:, ya - y0:yb - y0, xa:xb].addcmul_(filters[:, idx, ya - y0:yb - y0, xa:xb],
                                                    q[:, ya + dy:yb + dy, xa + dx:xb + dx])
        return acc

    def needs_grad(self) -> bool:
        """Whether applying needs autograd: grad mode on and the weights or features require gradients."""
        return torch.is_grad_enabled() and (self.weights.requires_grad
                                            or any(f.requires_grad for f in self.features))

    def _band(self, q_pad: Tensor, y0: int, y1: int, combined: Tensor | None) -> Tensor:
        k = self.filter_size
        w = self.grid_size[1]
        if combined is not None:
            filters = combined[:, :, y0:y1]
        else:
            filters = _weighted_sum(self.weights, self._kernel_filters(y0, y1))
        acc = torch.zeros(q_pad.shape[0], q_pad.shape[1], y1 - y0, w, dtype=q_pad.dtype, device=q_pad.device)
        centre = (k * k) // 2
        for idx in range(k * k):
            if idx == centre:
                continue
            dy, dx = divmod(idx, k)
            acc.addcmul_(filters[:, idx:idx + 1], q_pad[:, :, y0 + dy:y1 + dy, dx:dx + w])
        return acc

    def _full_combined(self, rows: int) -> Tensor | None:
        """Weighted filters ``(B, k², h, w)`` for the whole grid, kept while weights and features are fixed;
        None when they exceed ``cache_bytes`` and must be made band by band in every ``apply``."""
        needs_grad = self.needs_grad()
        if self._combined is not None and not needs_grad:
            return self._combined
        if self._filters is not None:
            combined = _weighted_sum(self.weights, self._filters)
        else:
            b, _, h, w = self.features[0].shape
            if b * self.filter_size ** 2 * h * w * self.features[0].element_size() > self.cache_bytes:
                return None
            combined = torch.cat([_weighted_sum(self.weights, self._kernel_filters(y0, min(h, y0 + rows)))
                                  for y0 in range(0, h, rows)], dim=2)
        if not needs_grad:
            self._combined = combined
        return combined

    def _build_filters(self) -> list[Tensor]:
        """:meth:`_kernel_filters` for the whole grid; without autograd in bands of single-threaded ops."""
        h = self.grid_size[0]
        if torch.is_grad_enabled() and any(f.requires_grad for f in self.features):
            return self._kernel_filters(0, h)
        ref = self.features[0]
        out = [ref.new_empty(ref.shape[0], self.filter_size ** 2, *self.grid_size) for _ in self.features]
        rows = band_rows(ref.shape[0] * max(f.shape[1] for f in self.features) * ref.shape[-1])

        def band(i: int) -> None:
            y0, y1 = i * rows, min(h, (i + 1) * rows)
            for full, part in zip(out, self._kernel_filters(y0, y1)):
                full[:, :, y0:y1] = part

        with BandRunner() as run:
            run(band, -(-h // rows))
        return out

    def _kernel_filters(self, y0: int, y1: int) -> list[Tensor]:
        """Unweighted filters ``(B, k², y1-y0, w)`` per kernel; the centre tap and taps off the image are 0.

        Taps off the image see features padded with a value far from every real feature, so their Gaussian
        underflows to exactly 0 (with a zero gradient), which spares a separate validity mask.
        """
        k = self.filter_size
        r = k // 2
        h, w = self.grid_size
        centre_idx = (k * k) // 2
        out = []
        for feats, far in zip(self.features, self._far):
            padded = F.pad(feats[:, :, max(0, y0 - r):min(h, y1 + r)],
                           (r, r, r - min(r, y0), r - min(r, h - y1)), value=far)
            centre = feats[:, :, y0:y1]
            taps = []
            for idx in range(k * k):
                dy, dx = divmod(idx, k)
                if idx == centre_idx:
                    taps.append(torch.full_like(centre[:, 0], far * far))
                    continue
                taps.append((padded[:, :, dy:dy + y1 - y0, dx:dx + w] - centre).square().sum(1))
            out.append(torch.exp(torch.stack(taps, dim=1).mul_(-0.5)))
        return out


def _weighted_sum(weights: Tensor, filters: list[Tensor]) -> Tensor:
    """``Σ_m w_m G_m`` over per-kernel filters; differentiable in both."""
    if torch.is_grad_enabled() and (weights.requires_grad or any(f.requires_grad for f in filters)):
        return sum(w * f for w, f in zip(weights, filters))
    total = filters[0] * weights[0]
    for w, f in zip(weights[1:], filters[1:]):
        total.add_(f, alpha=float(w))
    return total
