"""Mean-field inference for a fully connected CRF (Krähenbühl & Koltun 2011, Algorithm 1).

With unary energy ψu = −log P and a weighted kernel operator K (no self term):

    Q ← softmax(−ψu);   repeat T times:   M = K Q;   Q ← softmax(−ψu − μ M)

where μ is the label compatibility: Potts ``μ(l, l') = [l ≠ l']``, for which ``−μM = M − ΣM`` and the per-pixel
constant ΣM drops out of the softmax, or a C×C matrix (a learnable 1×1 convolution, ConvCRF "+C").
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..affinity import AffinityOp
from ..affinity.fused import FusedWindowUpdate, fused_softmax
from ..layout import to_memory_format

__all__ = ["Cancelled", "ProgressCallback", "unary_energy", "hard_pixels", "held_pixels", "compatibility_transform",
           "mean_field", "to_memory_format"]

UNARY_CLIP = 1e-5  # probabilities are clipped to [1e-5, 1] before the log, as pydensecrf's unary_from_softmax

ProgressCallback = Callable[[int, int, Tensor], None]
"""Called as ``callback(done, total, q)`` after each iteration; raise :class:`Cancelled` to stop."""


class Cancelled(Exception):
    """Raised by a progress callback to stop a computation; the caller keeps its previous result."""


def unary_energy(probs: Tensor) -> Tensor:
    """ψu = −log(clip(P, 1e-5, 1)), ``(B, C, H, W)``."""
    return probs.clamp(UNARY_CLIP, 1.0).log_().neg_()


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
    compat = compat.to(message.dtype)
    if message.is_contiguous(memory_format=torch.channels_last) and not message.is_contiguous():
        return torch.matmul(message.permute(0, 2, 3, 1), compat.T).permute(0, 3, 1, 2)  # stays channels-last
    return torch.einsum("lk,bkhw->blhw", compat, message)


def mean_field(energy: Tensor, op: AffinityOp, *, iterations: int, compat: Tensor | None = None,
               callback: ProgressCallback | None = None, fixed: Tensor | None = None) -> Tensor:
    """Run mean field; returns the marginals Q, ``(B, C, H, W)``, summing to 1 over C.

    Args:
        energy: unary energy ψu ``(B, C, H, W)`` (see :func:`unary_energy`).
        op: weighted kernel operator; ``op.apply(Q)`` is the message ``Σ_j k(f_i, f_j) Q_j``. An operator with a
            ``fused_update(energy, compat)`` that returns an update (``LocalOp`` at blur 1 on CPU, without autograd)
            runs each iteration as that one compiled pass instead; with the others, a channels-last energy and
            message on CPU without autograd take the rest of the iteration as one compiled pass
            (:func:`~crfcore.affinity.fused.fused_softmax`).
        iterations: T ≥ 0; 0 returns softmax(−ψu).
        compat: ``(C, C)`` compatibility, or None for Potts.
        callback: ``callback(t, T, Q)`` after every iteration, Q the live iterate (copy it to keep it); may raise
            :class:`Cancelled`.
        fixed: optional ``(B, 1, H, W)`` bool; these pixels keep softmax(−ψu) (see :func:`hard_pixels`) and pass
            it to their neighbours.
    """
    make_update = getattr(op, "fused_update", None)
    update = make_update(energy, compat) if make_update is not None else None
    if update is not None:
        return _fused_mean_field(update, iterations, callback, fixed)
    # the compatibility, the unary and the softmax in one compiled pass where that applies (channels-last, CPU,
    # no autograd: fused_softmax), otherwise PyTorch's steps
    neg_energy = None
    q = fused_softmax(None, energy)
    if q is None:
        neg_energy = -energy
        q = _softmax(neg_energy)
    q_fixed = q if fixed is not None else None
    for t in range(iterations):
        message = op.apply(q)
        fused = fused_softmax(message, energy, compat)
        if fused is not None:
            q = fused if q_fixed is None else torch.where(fixed, q_fixed, fused, out=fused)
        else:
            neg_energy = -energy if neg_energy is None else neg_energy
            # without autograd each full-resolution step runs in place on the fresh message: on CPU a new tensor
            # the size of Q costs more in page faults than the arithmetic that fills it
            in_place = not (torch.is_grad_enabled() and (message.requires_grad or neg_energy.requires_grad))
            if compat is not None:
                pair = compatibility_transform(message, compat)
                message = pair.neg_() if in_place else -pair
            logits = message.add_(neg_energy) if in_place else neg_energy + message
            q = _softmax(logits, in_place=in_place)
            if q_fixed is not None:
                q = torch.where(fixed, q_fixed, q, out=q) if in_place else torch.where(fixed, q_fixed, q)
        if callback is not None:
            callback(t + 1, iterations, q)
    return q


def _fused_mean_field(update: FusedWindowUpdate, iterations: int, callback: ProgressCallback | None,
                      fixed: Tensor | None) -> Tensor:
    """:func:`mean_field` through an operator's compiled update (``op.fused_update``), the same steps in one pass
    each; Q is returned in (B, C, H, W)-contiguous memory."""
    q = update.initial(planes=iterations == 0)
    q_fixed = q.clone() if fixed is not None else None  # the update's buffers are reused
    for t in range(iterations):
        q = update(q, planes=t + 1 == iterations)  # the result in the (B, C, H, W) memory callers keep
        if q_fixed is not None:
            torch.where(fixed, q_fixed, q, out=q)
        if callback is not None:
            callback(t + 1, iterations, q)
    return q


def _softmax(logits: Tensor, *, in_place: bool = False) -> Tensor:
    """Softmax over C of ``(B, C, H, W)``, in ``logits``' memory format; ``in_place`` may overwrite ``logits``.

    In channels-last memory the class axis is innermost and ``torch.softmax`` runs its fused last-axis kernel (one
    read and one write of Q; 1.3–2.5× faster than the steps below, measured on a 500×375×21 Q with logits spread
    over hundreds). In (B, C, H, W) memory without autograd the logits are shifted by their pixel's maximum and
    clamped at −80 before ``exp``: a CRF's messages put most logits 87 or more below the maximum, where ``exp``
    leaves its fast path (``torch.softmax`` over the strided class axis runs several times slower on them), and
    below −80 the result is < 2e-35 of the largest class, so the clamp changes nothing a float32 sum can see.
    """
    channels_last = logits.is_contiguous(memory_format=torch.channels_last) and not logits.is_contiguous()
    dim = 1
    if channels_last:
        logits, dim = logits.permute(0, 2, 3, 1), -1
    if channels_last or (torch.is_grad_enabled() and logits.requires_grad):
        out = torch.softmax(logits, dim=dim)
    else:
        peak = logits.amax(dim=dim, keepdim=True)
        out = logits.sub_(peak) if in_place else logits - peak
        out.clamp_min_(-80.0).exp_()
        out = out.div_(out.sum(dim=dim, keepdim=True))
    return out.permute(0, 3, 1, 2) if channels_last else out
