"""Mean-field inference for a fully connected CRF (Krähenbühl & Koltun 2011, Algorithm 1).

With unary energy ψu = −log P and a weighted kernel operator K (no self term):

    Q ← softmax(−ψu);   repeat T times:   M = K Q;   Q ← softmax(−ψu − μ M)

where μ is the label compatibility: Potts ``μ(l, l') = [l ≠ l']``, for which ``−μM = M − ΣM`` and the per-pixel
constant ΣM drops out of the softmax, or a C×C matrix (a learnable 1×1 convolution, ConvCRF "+C").

On an operator with a banded message (:class:`~crfcore.affinity.LocalOp`: ``message_rows``, ``blur``) and without
autograd, each iteration is one pass over bands of rows in channels-last order (B, H, W, C), the class axis
innermost: per band the message (b = 1) or the bilinear upsampling of the blurred grid's message (b > 1), the unary
add, the softmax, the fixed pixels and, for b > 1, the average pooling back onto the blurred grid, all while the
band is in cache. At b > 1 the message, its compatibility transform and the upsampling along rows run on the
blurred grid; the full-resolution Q is written only when it is returned or passed to ``callback``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..affinity import AffinityOp
from ..affinity.grid import downsample
from ..affinity.local import BandRunner, band_rows

__all__ = ["Cancelled", "ProgressCallback", "unary_energy", "hard_pixels", "held_pixels", "compatibility_transform",
           "mean_field"]

UNARY_CLIP = 1e-5  # probabilities are clipped to [1e-5, 1] before the log, as pydensecrf's unary_from_softmax

ProgressCallback = Callable[[int, int, Tensor], None]
"""Called as ``callback(done, total, q)`` after each iteration; raise :class:`Cancelled` to stop."""


class Cancelled(Exception):
    """Raised by a progress callback to stop a computation; the caller keeps its previous result."""


def unary_energy(probs: Tensor) -> Tensor:
    """ψu = −log(clip(P, 1e-5, 1)), ``(B, C, H, W)``."""
    return -torch.log(probs.clamp(UNARY_CLIP, 1.0))


def hard_pixels(probs: Tensor) -> Tensor | None:
    """``(B, 1, H, W)`` bool: pixels whose unary is one-hot (a brush stroke, a label given with confidence 1).

    A probability of exactly 1 is an infinite energy for every other label; the clip in :func:`unary_energy` keeps
    it finite (≈ 11.5), which a strong pairwise term can outweigh, so mean field holds these pixels fixed instead.
    None when there are none.
    """
    hard = probs.detach().amax(dim=1, keepdim=True) >= 1.0 - 1e-6
    return hard if bool(hard.any()) else None


def held_pixels(probs: Tensor, fixed: Tensor | str | None) -> Tensor | None:
    """The ``fixed`` argument of the refiners' ``forward`` as :func:`mean_field` takes it: ``"auto"`` is
    :func:`hard_pixels` of ``probs``, None holds nothing, a ``(B, 1, H, W)`` bool tensor is returned as given."""
    if isinstance(fixed, str):
        if fixed != "auto":
            raise ValueError(f"fixed must be 'auto', None or a (B, 1, H, W) bool tensor, got {fixed!r}.")
        return hard_pixels(probs)
    if fixed is not None and (fixed.dtype != torch.bool or fixed.shape != (probs.shape[0], 1, *probs.shape[-2:])):
        raise ValueError(f"fixed must be a (B, 1, H, W) = {(probs.shape[0], 1, *probs.shape[-2:])} bool tensor, got "
                         f"{fixed.dtype} {tuple(fixed.shape)}.")
    return fixed


def compatibility_transform(message: Tensor, compat: Tensor | None) -> Tensor:
    """The pairwise energy ``μ M`` up to a per-pixel constant, ``(B, C, H, W)``.

    ``compat=None`` is Potts (returns −M, equal to μM − ΣM); otherwise ``compat`` is ``(C, C)`` and
    ``(μM)_l = Σ_l' μ(l, l') M_l'``.
    """
    if compat is None:
        return -message
    if compat.shape != (message.shape[1], message.shape[1]):
        raise ValueError(f"unary has {message.shape[1]} classes, compat is "
                         f"{'×'.join(map(str, compat.shape))}.")
    return torch.einsum("lk,bkhw->blhw", compat.to(message.dtype), message)


def mean_field(energy: Tensor, op: AffinityOp, *, iterations: int, compat: Tensor | None = None,
               callback: ProgressCallback | None = None, fixed: Tensor | None = None) -> Tensor:
    """Run mean field; returns the marginals Q, ``(B, C, H, W)``, summing to 1 over C (in channels-last memory
    on the banded path, see the module docstring; the values do not depend on the path).

    Args:
        energy: unary energy ψu ``(B, C, H, W)`` (see :func:`unary_energy`).
        op: weighted kernel operator; ``op.apply(Q)`` is the message ``Σ_j k(f_i, f_j) Q_j``.
        iterations: T ≥ 0; 0 returns softmax(−ψu).
        compat: ``(C, C)`` compatibility, or None for Potts.
        callback: ``callback(t, T, Q)`` after every iteration; may raise :class:`Cancelled`.
        fixed: optional ``(B, 1, H, W)`` bool; these pixels keep softmax(−ψu) (see :func:`hard_pixels`) and pass
            it to their neighbours.
    """
    if _banded(energy, op, compat):
        return _banded_mean_field(energy, op, iterations, compat, callback, fixed)
    neg_energy = -energy
    q = _softmax(neg_energy)
    q_fixed = q if fixed is not None else None
    for t in range(iterations):
        message = op.apply(q)
        logits = neg_energy + message if compat is None else neg_energy - compatibility_transform(message, compat)
        q = _softmax(logits)
        if q_fixed is not None:
            q = torch.where(fixed, q_fixed, q)
        if callback is not None:
            callback(t + 1, iterations, q)
    return q


def _banded(energy: Tensor, op: AffinityOp, compat: Tensor | None) -> bool:
    """Whether :func:`_banded_mean_field` applies: a banded operator and nothing needing gradients."""
    if not hasattr(op, "message_rows"):
        return False
    if torch.is_grad_enabled() and (energy.requires_grad or (compat is not None and compat.requires_grad)
                                    or op.needs_grad()):
        return False
    return True


def _upsample_rows(size: int, grid: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Row indices ``i0, i1`` ``(size,)`` of the grid and weights ``λ`` ``(size,)`` of ``F.interpolate``'s bilinear,
    ``align_corners=False`` resize from ``grid`` to ``size`` rows: row y = (1 − λ)·grid[i0] + λ·grid[i1]."""
    src = ((torch.arange(size, dtype=torch.float32) + 0.5) * torch.tensor(grid / size, dtype=torch.float32)
           - 0.5).clamp_min(0.0)  # in float32, as torch's kernel computes it
    i0 = src.floor().long().clamp_max(grid - 1)
    i1 = (i0 + 1).clamp_max(grid - 1)
    return i0.to(device), i1.to(device), (src - i0).to(device)


def _banded_mean_field(energy: Tensor, op: AffinityOp, iterations: int, compat: Tensor | None,
                       callback: ProgressCallback | None, fixed: Tensor | None) -> Tensor:
    """:func:`mean_field` as band passes in channels-last order (see the module docstring); same arguments."""
    batch, classes, height, width = energy.shape
    if (height, width) != tuple(op.size) or batch != op.features[0].shape[0]:
        raise ValueError(f"energy has shape {tuple(energy.shape)}, but the operator was built for batch "
                         f"{op.features[0].shape[0]} and size {op.size}.")
    blur = op.blur
    gh, gw = op.grid_size
    rows = band_rows(batch * width * classes, blur)
    bands = [(y0, min(height, y0 + rows)) for y0 in range(0, height, rows)]
    mix = None if compat is None else -compat.detach().to(energy.dtype).t()  # logits += message @ (−μ)ᵀ
    pinned: list[tuple[Tensor, Tensor | None] | None] = [None] * len(bands)  # fixed pixels' flat index and Q
    if fixed is not None:
        flat = fixed.detach().reshape(batch, height, width)
        for b, (y0, y1) in enumerate(bands):
            idx = flat[:, y0:y1].reshape(-1).nonzero().squeeze(1)
            pinned[b] = (idx, None) if idx.numel() else None
    neg = torch.empty(batch, height, width, classes, dtype=energy.dtype, device=energy.device)
    out = torch.empty_like(neg) if iterations == 0 or callback is not None else None
    grid = [torch.empty(batch, gh, gw, classes, dtype=neg.dtype, device=neg.device)]  # Q on the grid
    message = torch.empty_like(grid[0]) if blur > 1 else None
    state = {"nxt": grid[0], "last": iterations == 0, "wide": None}
    if blur > 1:
        i0, i1, lam = _upsample_rows(height, gh, neg.device)
        lam = lam.to(neg.dtype)

    def finish(b: int, logits: Tensor) -> None:
        """Softmax of band b's logits ``(B, rows, W, C)``, fixed pixels, then into Q and the next grid Q."""
        y0, y1 = bands[b]
        q = torch.softmax(logits, dim=-1)
        if pinned[b] is not None:
            idx, values = pinned[b]
            if values is None:
                pinned[b] = (idx, q.view(-1, classes).index_select(0, idx))
            else:
                q.view(-1, classes).index_copy_(0, idx, values)
        if out is not None and (state["last"] or callback is not None):
            out[:, y0:y1] = q
        if not state["last"]:
            if blur == 1:
                state["nxt"][:, y0:y1] = q
            else:
                small = downsample(q.permute(0, 3, 1, 2), blur).permute(0, 2, 3, 1)
                state["nxt"][:, y0 // blur:y0 // blur + small.shape[1]] = small

    def start(b: int) -> None:
        y0, y1 = bands[b]
        torch.neg(energy[:, :, y0:y1].detach().permute(0, 2, 3, 1), out=neg[:, y0:y1])
        finish(b, neg[:, y0:y1])

    def step(b: int) -> None:
        y0, y1 = bands[b]
        if blur == 1:
            logits = op.message_rows(grid[0], y0, y1)
            if mix is not None:
                logits = logits @ mix
        else:
            wide = state["wide"]
            weight = lam[y0:y1].view(1, -1, 1, 1)  # (1 − λ)·row i0 + λ·row i1, in the order torch's kernel sums
            logits = wide.index_select(1, i0[y0:y1]).mul_(1 - weight).addcmul_(wide.index_select(1, i1[y0:y1]), weight)
        finish(b, logits.add_(neg[:, y0:y1]))

    with BandRunner() as run:
        run(start, len(bands))
        op.prepare(batch * gw * classes)  # the filters, made once before the workers read them
        for t in range(iterations):
            state["last"] = t == iterations - 1
            if out is None and state["last"]:
                out = torch.empty_like(neg)
            if blur > 1:
                op.message_grid(grid[0], message, run)
                pairwise = message if mix is None else message @ mix
                # Bilinear along columns on the grid's rows, (B, gh, W, C); along rows per band in step().
                state["wide"] = torch.nn.functional.interpolate(
                    pairwise.permute(0, 3, 1, 2), size=(gh, width), mode="bilinear",
                    align_corners=False).permute(0, 2, 3, 1)
            state["nxt"] = grid[0] if blur > 1 else torch.empty_like(grid[0])
            run(step, len(bands))
            grid[0] = state["nxt"]
            if callback is not None:
                callback(t + 1, iterations, out.permute(0, 3, 1, 2))
    return out.permute(0, 3, 1, 2)


def _softmax(logits: Tensor) -> Tensor:
    """Softmax over C of ``(B, C, H, W)``. Without autograd it runs in place on ``logits`` (a fresh temporary),
    which is over twice as fast on CPU as ``torch.softmax`` over a strided class axis. In channels-last memory the
    class axis is innermost, so torch's fused softmax over the last axis of the ``(B, H, W, C)`` view wins."""
    if logits.is_contiguous(memory_format=torch.channels_last) and not logits.is_contiguous():
        return torch.softmax(logits.permute(0, 2, 3, 1), dim=-1).permute(0, 3, 1, 2)
    if torch.is_grad_enabled() and logits.requires_grad:
        return torch.softmax(logits, dim=1)
    logits = logits - logits.amax(dim=1, keepdim=True)
    # exp of very negative numbers yields subnormals, which CPUs compute ~6x slower; below -80 the result is < 2e-35
    # of the largest class, so clamping changes nothing a float32 sum can see.
    logits.clamp_min_(-80.0).exp_()
    return logits.div_(logits.sum(dim=1, keepdim=True))
