"""Fused mean-field updates of an unblurred k×k window CRF on CPU, through the compiled ``crfcore.affinity._window``.

One update ``Q ← softmax(ψ + M(Q))`` (Potts; ``softmax(ψ − μ M(Q))`` with a C×C compatibility μ), ψ the negative
unary energy and ``M(Q)_i = Σ_d G_d(i) q_{i+d}`` the window's message, runs as one pass over the pixels: a pixel's
message is summed in registers from its neighbours' rows of Q, and the compatibility, the unary and the softmax
follow before the next pixel. PyTorch runs the same update as four passes (gather, add, softmax, and the exp's slow
path on logits far below their maximum), so the fused update takes about half their time
(DESIGN.md §7, ``crfcore bench convcrf``). Bands of rows run on ``torch.get_num_threads()`` threads.

The extension is built with the package (``setup.py``, optional): where it is missing (no C compiler at install
time) or a case is outside it (autograd, CUDA, float64, more than 64 classes), mean field runs the PyTorch
operations instead. ``CRFCORE_FUSED=0`` in the environment turns the fused update off (to compare the two).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch
from torch import Tensor

from ..layout import to_memory_format

try:
    from . import _window
except ImportError:  # built without a C compiler: mean field uses PyTorch's operations
    _window = None

__all__ = ["FusedWindowUpdate", "fused_available", "fused_kernel", "fused_max_classes", "fused_softmax"]

_SLACK = 8  # floats readable past the last row: the kernel loads whole vectors of 8 classes


def fused_available() -> bool:
    """Whether the compiled update is present and not turned off by ``CRFCORE_FUSED=0``."""
    return _window is not None and os.environ.get("CRFCORE_FUSED", "1") != "0"


def fused_kernel() -> str:
    """What runs the fused update: ``"avx2"`` or ``"portable"`` (the compiled code chosen for this CPU), ``"off"``
    (``CRFCORE_FUSED=0``) or ``"not built"``."""
    if _window is None:
        return "not built"
    return _window.INSTRUCTION_SET if fused_available() else "off"


def fused_max_classes() -> int:
    """The most classes the compiled update takes (0 without it)."""
    return 0 if _window is None else int(_window.MAX_CLASSES)


class FusedWindowUpdate:
    """Mean-field updates for one unblurred window operator and one unary; see the module docstring.

    Args:
        taps: the window's weighted taps ``(B, h·w, k²)`` float32, tap ``(dy + k//2)·k + dx + k//2``, centre 0
            (``LocalOp.tap_rows``).
        filter_size: k.
        energy: the unary energy ψu ``(B, C, h, w)`` float32 on CPU; read as it is when it is in channels-last
            memory (keep it unchanged while updating), otherwise copied so.
        compat: ``(C, C)`` compatibility, or None for Potts.

    Between updates Q lives in two channels-last buffers used in turn (an update's result is overwritten two
    updates later); an update asked for ``planes`` returns a new (B, C, H, W)-contiguous tensor instead.
    """

    def __init__(self, taps: Tensor, filter_size: int, energy: Tensor, compat: Tensor | None = None) -> None:
        if _window is None:
            raise RuntimeError("crfcore.affinity._window is not built (no C compiler at install time).")
        b, c, h, w = energy.shape
        if c > _window.MAX_CLASSES:
            raise ValueError(f"the fused update takes at most {_window.MAX_CLASSES} classes, got {c}.")
        if taps.shape != (b, h * w, filter_size ** 2) or taps.dtype != torch.float32 or energy.dtype != torch.float32:
            raise ValueError(f"taps must be float32 ({b}, {h * w}, {filter_size ** 2}) for a float32 energy of "
                             f"shape {tuple(energy.shape)}; got {taps.dtype} {tuple(taps.shape)} and {energy.dtype}.")
        self.shape = (b, c, h, w)
        self.filter_size = filter_size
        self.taps = taps.detach().contiguous()
        self.compat = None if compat is None else compat.detach().to(torch.float32).contiguous()
        # read as channels-last rows: the kernel reads (C, n) planes too, but 2.5× slower than one copy costs
        self.energy = to_memory_format(energy.detach(), torch.channels_last)
        n = b * h * w * c
        self._q = [torch.empty(n + _SLACK), torch.empty(n + _SLACK)]
        for buffer in self._q:
            buffer[n:].zero_()  # the slack's lanes are masked out, but never NaN
        self._next = 0

    def initial(self, *, planes: bool = False) -> Tensor:
        """``softmax(−ψu)``, ``(B, C, h, w)``: channels-last, or (B, C, H, W)-contiguous with ``planes``."""
        return self._run(None, planes)

    def __call__(self, q: Tensor, *, planes: bool = False) -> Tensor:
        """One update of ``q``, the tensor :meth:`initial` or the previous call returned without ``planes`` (or that
        tensor written in place, e.g. by ``torch.where(..., out=q)``)."""
        if q.data_ptr() != self._q[1 - self._next].data_ptr():
            raise ValueError("q must be the tensor the previous update returned.")
        return self._run(q, planes)

    def _run(self, q: Tensor | None, planes: bool) -> Tensor:
        b, c, h, w = self.shape
        if planes:
            out = torch.empty(b, c, h, w)
        else:
            out = self._q[self._next]
            self._next = 1 - self._next
        item, taps_item = 4 * h * w * c, 4 * h * w * self.filter_size ** 2  # bytes per image
        src, dst = (0 if q is None else q.data_ptr()), out.data_ptr()
        taps, energy = self.taps.data_ptr(), self.energy.data_ptr()
        compat = 0 if self.compat is None else self.compat.data_ptr()
        _in_bands(b, h, lambda i, y0, y1: _window.update(
            src + i * item if src else 0, 0, taps + i * taps_item, energy + i * item, False, compat, dst + i * item,
            planes, h, w, c, self.filter_size, y0, y1))
        return out if planes else out[:b * h * w * c].view(b, h, w, c).permute(0, 3, 1, 2)


def fused_softmax(message: Tensor | None, energy: Tensor, compat: Tensor | None = None) -> Tensor | None:
    """``softmax(−ψu + M)`` (Potts) or ``softmax(−ψu − μ M)`` over C for a message M computed elsewhere (the
    lattice's), in one compiled pass: the epilogue of :class:`FusedWindowUpdate`'s update; ``softmax(−ψu)`` without
    a message.

    ``message`` and ``energy`` ψu are ``(B, C, H, W)`` float32 in channels-last memory on CPU; the result is a new
    tensor like them. None where this does not apply (another layout or device, float64, more than 64 classes,
    autograd, the extension missing): the caller then takes PyTorch's steps.
    """
    b, c, h, w = energy.shape
    given = [t for t in (message, energy) if t is not None]
    if (not fused_available() or c > fused_max_classes() or (message is not None and message.shape != energy.shape)
            or any(t.device.type != "cpu" or t.dtype != torch.float32 or t.is_contiguous()
                   or not t.is_contiguous(memory_format=torch.channels_last) for t in given)
            or (compat is not None and (compat.device.type != "cpu" or compat.shape != (c, c)))
            or (torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                                for t in (message, energy, compat)))):
        return None
    out = torch.empty_like(energy, memory_format=torch.channels_last)
    compat = None if compat is None else compat.detach().to(torch.float32).contiguous()
    item = 4 * h * w * c
    src, psi, dst = (0 if message is None else message.data_ptr()), energy.data_ptr(), out.data_ptr()
    mu = 0 if compat is None else compat.data_ptr()
    _in_bands(b, h, lambda i, y0, y1: _window.update(
        0, src + i * item if src else 0, 0, psi + i * item, False, mu, dst + i * item, False, h, w, c, 1, y0, y1))
    return out


def _in_bands(batch: int, height: int, band: Callable[[int, int, int], None]) -> None:
    """``band(image, y0, y1)`` over every image's rows, cut into ``torch.get_num_threads()`` bands run at once."""
    threads = max(1, torch.get_num_threads())
    rows = -(-height // threads)
    jobs = [(i, y0, min(height, y0 + rows)) for i in range(batch) for y0 in range(0, height, rows)]
    if threads == 1 or len(jobs) == 1:
        for job in jobs:
            band(*job)
    else:
        list(_pool(threads).map(lambda job: band(*job), jobs))


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    """The process-wide pool of ``threads`` workers (one per thread count torch has been set to)."""
    with _POOLS_LOCK:
        if threads not in _POOLS:
            _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="crfcore-window")
        return _POOLS[threads]
