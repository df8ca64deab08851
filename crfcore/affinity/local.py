"""Truncated k×k message passing (ConvCRF, Teichmann & Cipolla 2018, §4).

The fully connected kernel is truncated to ``|dx|, |dy| ≤ k//2`` and computed exactly per pixel: a convolution whose
filter varies with the pixel and is shared by all classes,

    M_i = Σ_{d ∈ window, d ≠ 0} G_d(i) · q_{i+d},   G_d(i) = Σ_m w_m exp(-|f_i - f_{i+d}|² / 2).

With a blur factor b > 1 the pairwise step runs on a grid downsampled b times (features and q averaged over b×b
blocks) and the message is upsampled back bilinearly, so the window reaches k·b pixels for 1/b² of the work.

How it is computed, chosen by memory (``cache_bytes``):

- gather (the per-pixel taps fit): the taps are built once (``build``) as rows ``(B, h·w, k²)`` with a tap index
  of the same shape, and each ``apply`` is one ``embedding_bag`` in ``"sum"`` mode with per-sample weights over q
  in channels-last layout ``(h·w, C)``: its CPU kernel (fbgemm) reduces a pixel's k² neighbour rows (the centre
  with weight 0) in registers, so an iteration streams the taps and q once and writes M once. Measured at 500×375,
  21 classes, one thread (thread CPU time, loaded machine): about 2× (k = 7) and 1.7× (k = 11) faster than the
  band loop below, whose k²−1 multiply-adds each read and write the accumulator (~4.4 G multiply-adds/s, bound by
  the cache's bandwidth).
- bands (otherwise): the k²−1 shifted multiply-adds run over bands of rows small enough to stay in cache; the
  weighted filters are kept while one ``(B, k², h, w)`` tensor fits, otherwise recomputed band by band in
  ``apply``, so memory stays bounded (a 4096×4096 image with 21 classes at k=11 needs a few GiB, never the k²·C·N
  of an unfold).

Both give the same sums up to float32 rounding order; the tests hold each to the exact truncated affinity.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .fused import FusedWindowUpdate, fused_available, fused_max_classes
from .grid import downsample, upsample

__all__ = ["LocalBackend", "LocalOp", "check_features"]

_BAND_ELEMENTS = 1 << 17  # elements of q per band: ~512 KiB in float32, about one core's L2
_LOG_FLOOR = -87.0
"""Kernel values are ``exp(max(−|Δf|²/2, −87))``: below ``exp(−87) ≈ 1.6e-38``, just above the smallest normal
float32, ``exp`` underflows into denormals and zero on a slow path (500k such arguments: 16-20 ms against 0.8 ms,
one thread), and most taps of the 5-D appearance kernel land there; a weight of 1.6e-38 instead of a smaller one
changes no sum."""


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
                 gather: "_Gather | None" = None) -> None:
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
        fits = (len(features) + 1) * b * k2 * h * w * ref.element_size() <= cache_bytes
        if gather is None and fits:
            gather = _Gather.build(self._kernel_filters(0, h), filter_size)
        self._gather = gather
        self._combined: Tensor | None = None

    def weighted(self, weights: Tensor) -> "LocalOp":
        weights = torch.as_tensor(weights, dtype=self.weights.dtype, device=self.weights.device)
        if weights.shape != self.weights.shape:
            raise ValueError(f"weights must have shape {tuple(self.weights.shape)} (one per kernel), "
                             f"got {tuple(weights.shape)}.")
        return LocalOp(self.features, self.filter_size, self.blur, self.size, cache_bytes=self.cache_bytes,
                       weights=weights, gather=self._gather)

    @property
    def memory_format(self) -> torch.memory_format:
        """The layout mean field should keep Q in: channels-last when the message is gathered at full resolution,
        whose rows of classes it reads and writes; (B, C, H, W) on a blurred grid, where the full-resolution
        softmax, pooling and upsampling measured faster along rows of pixels, and where the compiled update
        (:meth:`fused_update`) will run: it reads the energy and writes the result in (B, C, H, W) memory itself."""
        if self._gather is not None and self.blur == 1 and not self._fused_possible():
            return torch.channels_last
        return torch.contiguous_format

    @property
    def grid_size(self) -> tuple[int, int]:
        """``(h, w)`` of the blurred grid the messages are computed on."""
        return tuple(self.features[0].shape[-2:])

    def filters(self) -> Tensor | None:
        """The weighted per-pixel filters ``(B, k², h, w)`` on the blurred grid (tap ``(dy + k//2)·k + dx + k//2``,
        centre 0), or None when they exceed ``cache_bytes`` (then :meth:`apply` makes them band by band)."""
        if self._gather is None:
            return self._full_combined(self.grid_size[0])
        b, _, h, w = self.features[0].shape
        return self._gather.weighted_taps(self.weights).transpose(1, 2).reshape(b, -1, h, w)

    def fused_update(self, energy: Tensor, compat: Tensor | None = None) -> FusedWindowUpdate | None:
        """Mean field's updates for this operator and ``energy`` ``(B, C, H, W)`` as one compiled pass each
        (:class:`~crfcore.affinity.fused.FusedWindowUpdate`), or None where they do not apply: a blurred grid,
        filters not kept, CUDA or float64, more classes than the kernel takes, autograd, or the extension missing."""
        if (not self._fused_possible() or energy.device.type != "cpu" or energy.dtype != torch.float32
                or energy.shape[1] > fused_max_classes()
                or (torch.is_grad_enabled() and (energy.requires_grad
                                                 or (compat is not None and compat.requires_grad)))):
            return None
        return FusedWindowUpdate(self._gather.weighted_taps(self.weights), self.filter_size, energy, compat)

    def _fused_possible(self) -> bool:
        """Whether :meth:`fused_update` can run for this operator (the energy may still rule it out)."""
        ref = self.features[0]
        return (self._gather is not None and self.blur == 1 and fused_available() and ref.device.type == "cpu"
                and ref.dtype == torch.float32 and self.weights.dtype == torch.float32 and not self._needs_grad())

    def tap_rows(self) -> Tensor | None:
        """The weighted filters as rows ``(B, h·w, k²)`` (tap order of :meth:`filters`), 0 for the centre and for
        taps off the grid, or None when they exceed ``cache_bytes``. With the gather this is its kept weighted sum
        itself (no copy: do not write to it)."""
        if self._gather is not None:
            return self._gather.weighted_taps(self.weights)
        filters = self._full_combined(self.grid_size[0])
        if filters is None:
            return None
        b, k2, h, w = filters.shape
        _, off_y, off_x = window_index(h, w, self.filter_size, filters.device)
        rows = filters.flatten(2).transpose(1, 2).reshape(b, h, w, k2)  # a copy: filters stay as they are
        _zero_off_image(rows, off_y, off_x, self.filter_size // 2)
        return rows.view(b, h * w, k2)

    def apply(self, q: Tensor) -> Tensor:
        """``(B, C, H, W)`` → ``(B, C, H, W)``: Σ_{d≠0} G_d(i) q_{i+d} on the blurred grid, upsampled back.

        The result has ``q``'s memory format: channels-last in, channels-last out (mean field keeps Q so)."""
        if tuple(q.shape[-2:]) != self.size or q.shape[0] != self.features[0].shape[0]:
            raise ValueError(f"q has shape {tuple(q.shape)}, but the operator was built for batch "
                             f"{self.features[0].shape[0]} and size {self.size}.")
        channels_last = q.is_contiguous(memory_format=torch.channels_last) and not q.is_contiguous()
        q_small = downsample(q, self.blur)
        if self._gather is not None:
            message = self._gather.apply(q_small, self._gather.weighted_taps(self.weights))
        else:
            message = self._apply_bands(q_small)
        # the layout changes on the grid, b² times cheaper than at full resolution
        message = message.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        return upsample(message, self.size)

    def _apply_bands(self, q_small: Tensor) -> Tensor:
        """The message on the grid by k²−1 shifted multiply-adds over bands of rows, ``(B, C, h, w)``."""
        q_small = q_small.contiguous()
        h, w = self.grid_size
        r = self.filter_size // 2
        q_pad = F.pad(q_small, (r, r, r, r))
        rows = max(1, _BAND_ELEMENTS // max(1, q_small.shape[0] * q_small.shape[1] * w))
        combined = self._full_combined(rows)
        bands = [self._band(q_pad, y0, min(h, y0 + rows), combined) for y0 in range(0, h, rows)]
        return bands[0] if len(bands) == 1 else torch.cat(bands, dim=2)

    def _needs_grad(self) -> bool:
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
        # one view per tap through as_strided and unbind: on a preview-sized grid, slicing cost as much as the
        # multiply-adds themselves
        size, strides = acc.shape, q_pad.stride()
        start = q_pad.storage_offset() + y0 * strides[2]
        for idx, tap in enumerate(filters.unsqueeze(2).unbind(1)):  # tap: (B, 1, rows, w)
            if idx == centre:
                continue
            dy, dx = divmod(idx, k)
            acc.addcmul_(tap, q_pad.as_strided(size, strides, start + dy * strides[2] + dx * strides[3]))
        return acc

    def _full_combined(self, rows: int) -> Tensor | None:
        """Weighted filters ``(B, k², h, w)`` for the whole grid of the band path, kept while weights and features
        are fixed; None when they exceed ``cache_bytes`` and must be made band by band in every ``apply``."""
        needs_grad = self._needs_grad()
        if self._combined is not None and not needs_grad:
            return self._combined
        b, _, h, w = self.features[0].shape
        if b * self.filter_size ** 2 * h * w * self.features[0].element_size() > self.cache_bytes:
            return None
        combined = torch.cat([_weighted_sum(self.weights, self._kernel_filters(y0, min(h, y0 + rows)))
                              for y0 in range(0, h, rows)], dim=2)
        if not needs_grad:
            self._combined = combined
        return combined

    def _kernel_filters(self, y0: int, y1: int) -> list[Tensor]:
        """Unweighted filters ``(B, k², y1-y0, w)`` per kernel; the centre tap is 0, every other tap at least
        ``exp(−87)`` (see :data:`_LOG_FLOOR`).

        Only the taps after the centre (row-major: below it, or right of it on its row) are evaluated, for rows
        ``max(0, y0 − r) .. y1``, a row of taps and a feature dimension at a time through strided views of the
        features. The kernel is symmetric, so the tap before the centre at offset −d of pixel i is the tap at +d
        of pixel i − d, copied (the same floats: W is exactly symmetric). Taps off the image see features padded
        with a value far from every real feature, so their Gaussian is the floor (with a zero gradient); they meet
        q's zero padding in :meth:`apply`, so they add nothing.
        """
        k = self.filter_size
        r = k // 2
        h, w = self.grid_size
        centre = (k * k) // 2
        top = max(0, y0 - r)  # the mirrored taps of rows y0.. reach back r rows
        bottom = min(h, y1 + r)
        out = []
        for feats in self.features:
            far = float(feats.detach().abs().max()) * 2 + 1e3
            padded = F.pad(feats[:, :, top:bottom], (r, r, 0, r - (bottom - y1)), value=far)
            if torch.is_grad_enabled() and padded.requires_grad:
                after = torch.cat(_taps_after_centre(padded, r, y1 - top, w), dim=1)
                filters = after.new_zeros(after.shape[0], k * k, y1 - y0, w)
                filters[:, centre + 1:] = after[:, :, y0 - top:]
            else:
                filters = padded.new_empty(padded.shape[0], k * k, y1 - y0, w)
                filters[:, :centre + 1].zero_()
                after = filters[:, centre + 1:] if top == y0 else padded.new_empty(padded.shape[0], centre,
                                                                                  y1 - top, w)
                _taps_after_centre(padded, r, y1 - top, w, out=after)
                if top != y0:
                    filters[:, centre + 1:] = after[:, :, y0 - top:]
            for tap in range(centre):  # tap centre+1+tap at +(dy, dx) mirrors into tap centre−1−tap at −(dy, dx)
                dy, dx = divmod(centre + 1 + tap, k)
                dy, dx = dy - r, dx - r
                first = max(y0, dy)  # pixel (y, x) takes the tap of (y − dy, x − dx), which must be on the image
                x0, x1 = max(0, dx), min(w, w + dx)
                if first >= y1 or x0 >= x1:
                    continue
                filters[:, centre - 1 - tap, first - y0:, x0:x1] = after[:, tap, first - dy - top:y1 - dy - top,
                                                                         x0 - dx:x1 - dx]
            out.append(filters)
        return out


class _Gather:
    """The message as one gather-multiply-reduce: ``torch.nn.functional.embedding_bag`` in ``"sum"`` mode with
    per-sample weights, whose CPU kernel (fbgemm) adds ``Σ_d G_d(i) · q_{i+d}`` for each pixel i in registers,
    reading each neighbour's C class values as one contiguous row of q in channels-last layout ``(h·w, C)``.

    Built once per operator: ``index`` ``(h·w, k²)`` (the row of each tap's pixel, clamped onto the image) and
    ``taps``, per kernel ``(B, h·w, k²)``, the unweighted tap values, 0 for the centre and for taps off the image
    (their clamped index then reads a real pixel times 0).
    """

    def __init__(self, index: Tensor, taps: list[Tensor]) -> None:
        self.index = index
        self.taps = taps
        self._weighted: tuple[Tensor, Tensor] | None = None  # (weights, Σ_m w_m taps_m) of the last no-grad call

    @classmethod
    def build(cls, filters: list[Tensor], filter_size: int) -> "_Gather":
        """From the per-kernel filters ``(B, k², h, w)`` of :meth:`LocalOp._kernel_filters` (centre tap 0, kept so
        that the rows are one 2-D transpose of them)."""
        b, k2, h, w = filters[0].shape
        r = filter_size // 2
        index, off_y, off_x = window_index(h, w, filter_size, filters[0].device)
        taps = []
        for f in filters:
            if torch.is_grad_enabled() and f.requires_grad:
                rows = f.flatten(2).transpose(1, 2).view(b, h, w, k2)
                rows = rows.masked_fill(off_y.view(1, h, 1, -1) | off_x.view(1, 1, w, -1), 0.0)
            else:
                rows = f.new_empty(b, h * w, k2)
                for i in range(b):  # a 2-D transpose: torch's blocked kernel, several times faster than a 4-D one
                    rows[i].copy_(f[i].view(k2, h * w).t())
                rows = rows.view(b, h, w, k2)
                _zero_off_image(rows, off_y, off_x, r)
            taps.append(rows.reshape(b, h * w, k2))
        return cls(index, taps)

    def weighted_taps(self, weights: Tensor) -> Tensor:
        """``Σ_m w_m taps_m`` ``(B, h·w, k²)``; without autograd kept for the next call with equal weights (one
        pass over taps the size of k² images, as much as an iteration's message: not to be redone per refine)."""
        if torch.is_grad_enabled() and (weights.requires_grad or any(t.requires_grad for t in self.taps)):
            return _weighted_sum(weights, self.taps)
        if self._weighted is None or not torch.equal(self._weighted[0], weights):
            self._weighted = None  # free the previous sum first
            self._weighted = (weights.detach().clone(), _weighted_sum(weights, self.taps))
        return self._weighted[1]

    def apply(self, q: Tensor, weights: Tensor) -> Tensor:
        """``q`` ``(B, C, h, w)``, weighted taps ``(B, h·w, k²)`` → the message ``(B, C, h, w)`` in channels-last
        memory (no copy of ``q`` when it is channels-last already)."""
        b, c, h, w = q.shape
        rows = q.permute(0, 2, 3, 1).contiguous().view(b, h * w, c)
        out = [F.embedding_bag(self.index, rows[i], mode="sum", per_sample_weights=weights[i]) for i in range(b)]
        message = out[0].unsqueeze(0) if b == 1 else torch.stack(out)
        return message.view(b, h, w, c).permute(0, 3, 1, 2)


@functools.lru_cache(maxsize=4)
def window_index(h: int, w: int, k: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """The taps of a k×k window on an ``h×w`` grid, tap ``(dy + k//2)·k + dx + k//2``: ``index`` ``(h·w, k²)``, the
    row-major pixel each tap of each pixel reads (int32 below 2³¹ pixels, which fbgemm and MKL read faster), and
    which taps fall off the grid, ``off_y`` ``(h, k²)`` and ``off_x`` ``(w, k²)`` (a tap is off when either is set).

    A tap off the grid reads a pixel on it, chosen so that every row of ``index`` is non-decreasing (sorted columns
    of a sparse matrix whose off-grid entries are zeros): its column clamped onto the grid in a window row on the
    grid, the first tap on the grid for window rows above it, the last one for window rows below it. Kept for the
    last few sizes (an image's operator is rebuilt for every θ; the gather and the sparse K share one): read only."""
    dtype = torch.int32 if h * w < 2 ** 31 else torch.int64
    r = k // 2
    offsets = torch.arange(-r, r + 1, device=device, dtype=dtype)
    dy, dx = offsets.repeat_interleave(k), offsets.repeat(k)
    ys = torch.arange(h, device=device, dtype=dtype).view(h, 1) + dy  # (h, k²): the row each tap reads
    cols = torch.arange(w, device=device, dtype=dtype).view(w, 1)
    xs = cols + dx
    above, below = (ys < 0).view(h, 1, -1), (ys >= h).view(h, 1, -1)
    column = torch.where(above, (cols - r).clamp_min(0).view(1, w, 1),
                         torch.where(below, (cols + r).clamp_max(w - 1).view(1, w, 1), xs.clamp(0, w - 1).view(1, w, -1)))
    index = ((ys.clamp(0, h - 1) * w).view(h, 1, -1) + column).view(h * w, -1)
    return index, (ys < 0) | (ys >= h), (xs < 0) | (xs >= w)


def _zero_off_image(rows: Tensor, off_y: Tensor, off_x: Tensor, r: int) -> None:
    """Zero, in place, the taps of ``rows`` ``(B, h, w, T)`` that fall off the image: ``off_y`` ``(h, T)`` and
    ``off_x`` ``(w, T)`` say which, and only the r rows and columns along each edge have any."""
    h, w = rows.shape[1:3]
    for lo, hi in ((0, min(r, h)), (max(h - r, min(r, h)), h)):
        if lo < hi:
            rows[:, lo:hi].masked_fill_(off_y[lo:hi].view(1, hi - lo, 1, -1), 0.0)
    for lo, hi in ((0, min(r, w)), (max(w - r, min(r, w)), w)):
        if lo < hi:
            rows[:, :, lo:hi].masked_fill_(off_x[lo:hi].view(1, 1, hi - lo, -1), 0.0)


def _taps_after_centre(padded: Tensor, r: int, rows: int, w: int, *, out: Tensor | None = None) -> list[Tensor]:
    """Kernel values ``exp(max(−|f_i − f_{i+d}|²/2, −87))`` of each pixel's taps d after the centre of a k×k window
    (k = 2r + 1; row-major: r taps to its right, then r full rows below), from features ``padded``
    ``(B, D, rows + r, w + 2r)`` (pixel (y, x) at ``[y, x + r]``): one ``(B, taps, rows, w)`` tensor per row of taps.

    With ``out`` ``(B, (k²−1)/2, rows, w)`` (no autograd) they are written there, row of taps by row of taps, each
    difference into one reused contiguous buffer (an output torch allocates for these overlapping views is laid
    out tap-innermost, and every op on it runs several times slower); the tensors returned are views of ``out``.
    """
    b, d, _, wp = padded.shape
    padded = padded.contiguous()
    sb, sd = padded.stride(0), padded.stride(1)
    k = 2 * r + 1
    rows_of_taps = [(r, r + 1)] + [(k, dy * wp) for dy in range(1, r + 1)]  # (taps, offset of the first one)
    scratch = None if out is None else padded.new_empty(b, k, rows, w)
    results, first = [], 0
    for taps, start in rows_of_taps:
        shape, strides = (b, taps, rows, w), (sb, 1, wp, 1)
        total = None if out is None else out[:, first:first + taps]
        for c in range(d):
            centre = padded[:, c:c + 1, :rows, r:r + w]
            view = padded.as_strided(shape, strides, padded.storage_offset() + c * sd + start)
            if out is None:
                diff = view - centre
                total = diff * diff if total is None else total + diff * diff
            elif c == 0:
                torch.sub(view, centre, out=total).square_()
            else:
                part = scratch[:, :taps]
                total.addcmul_(torch.sub(view, centre, out=part), part)
        if out is None:
            total = torch.exp((total * -0.5).clamp(min=_LOG_FLOOR))
        else:
            total.mul_(-0.5).clamp_(min=_LOG_FLOOR).exp_()
        results.append(total)
        first += taps
    return results


def _weighted_sum(weights: Tensor, filters: list[Tensor]) -> Tensor:
    """``Σ_m w_m G_m`` over per-kernel filters; differentiable in both."""
    if torch.is_grad_enabled() and (weights.requires_grad or any(f.requires_grad for f in filters)):
        return sum(w * f for w, f in zip(weights, filters))
    total = filters[0] * weights[0]
    for w, f in zip(weights[1:], filters[1:]):
        total.add_(f, alpha=float(w))
    return total
