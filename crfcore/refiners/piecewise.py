"""Piecewise-trained CRF over range boxes (Lin, Shen, van den Hengel & Reid 2016, "Efficient piecewise training of
deep structured models for semantic segmentation", CVPR, arXiv:1504.01013, §3–§5).

Two pairwise potentials, each over the edges of a range box (:mod:`crfcore.affinity.boxes`):

* **surrounding**: edges (i, j) with j in the k×k window around i; its energies are symmetric, ``U = Uᵀ``;
* **above/below**: edges (i, j) with j in the box above i; ``U(l, l')`` is the energy of label l at the lower node
  and l' at the upper one, so it can learn that one class sits above another.

Each potential scores the K² label pairs of an edge from the two nodes' features with a small network: a hidden
layer of three radial units of the edge — appearance ``h_a = exp(−|Δp|²/2θα² − |ΔI|²/2θβ²)``, smoothness
``h_s = exp(−|Δp|²/2θγ²)`` and box ``h_b = 1`` (Δp offset in pixels, ΔI colour difference) — and a linear output
layer, ``E(l, l') = Σ_m w_m h_m U_m(l, l')`` with ``w = (w_appearance, w_smoothness, 1)``. Each output matrix is a
shared Potts part plus class-pair deviations, ``U_m = α_m [l ≠ l'] + Δ_m(l, l')``: α is learned from every edge and
carries over to classes the training images lack, Δ (L2-regularised in training) from the pairs that occur. This
form is what lets inference use the range-box operators: the mean-field update (DESIGN.md §3 notation) is

    Q ← softmax(−ψu − Σ_m w_m [U^s_m (K^s_m Q) + U^ab_m (K^above_m Q) + U^abᵀ_m (K^below_m Q)]),

run by the shared :func:`crfcore.inference.mean_field` (pixels held fixed as under the other refiners), with the
bracket as its message (:class:`PiecewiseMessages`).

**Piecewise training** (Lin et al. §5): the unary is fixed; each potential is trained by its own likelihood, the
softmax over the K² label pairs of each sampled edge, ``P(l, l') = exp(−E(l, l'))/Σ exp(−E)``, with no inference in
the loop (:mod:`crfcore.learn.piecewise_train`). Untrained (``potentials='potts'``)
the surrounding potential is Potts on the appearance and smoothness kernels and the above/below one is zero, which is
ConvCRF with a k×k window.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .. import params as P
from ..affinity.boxes import BoxOp, build_box
from ..features import appearance_features, smoothness_features
from ..inference import ProgressCallback, held_pixels, mean_field, unary_energy

__all__ = ["POTENTIALS", "KERNELS", "PiecewiseOp", "PiecewiseMessages", "PiecewiseCRF"]

POTENTIALS = ("surrounding", "above_below")
KERNELS = ("appearance", "smoothness", "box")


@dataclass(frozen=True)
class PiecewiseOp:
    """The built range boxes of one image; ``above``/``below`` are None for an untrained model (zero energies)."""

    surrounding: BoxOp
    above: BoxOp | None
    below: BoxOp | None


class PiecewiseMessages:
    """The weighted range-box operator: ``apply(Q)`` is minus the pairwise energy of the update above, so that
    :func:`~crfcore.inference.mean_field` with Potts (``compat=None``) runs exactly that update.

    Args:
        op: the built boxes.
        surrounding: ``(3, C, C)`` energies U^s per kernel (symmetric); above_below: ``(3, C, C)`` U^ab or None.
        weights: ``(3,)`` kernel weights ``(w_appearance, w_smoothness, 1)``.

    Shape:
        - apply: ``(B, C, H, W)`` → ``(B, C, H, W)``
    """

    def __init__(self, op: PiecewiseOp, surrounding: Tensor, above_below: Tensor | None, weights: Tensor) -> None:
        self.op = op
        self.u_s = weights[:, None, None] * surrounding
        self.u_ab = None if above_below is None else weights[:, None, None] * above_below
        if self.u_ab is not None and op.above is None:
            raise ValueError("the potentials are trained but op holds only the surrounding box (built for "
                             "potentials='potts'); build it again with this model.")

    def apply(self, q: Tensor) -> Tensor:
        """``−Σ_m w_m [U^s_m (K^s_m Q) + U^ab_m (K^above_m Q) + U^abᵀ_m (K^below_m Q)]``, ``(B, C, H, W)``."""
        u_s = self.u_s.to(q.dtype)
        pair = torch.einsum("mlk,bmkhw->blhw", u_s, self.op.surrounding.apply(q))
        if self.u_ab is not None:
            u_ab = self.u_ab.to(q.dtype)
            pair = pair + torch.einsum("mlk,bmkhw->blhw", u_ab, self.op.above.apply(q))
            pair = pair + torch.einsum("mkl,bmkhw->blhw", u_ab, self.op.below.apply(q))
        return -pair


class PiecewiseCRF(nn.Module):
    """Range-box potentials trained piecewise, run in mean field (see the module docstring).

    Learnable: θα, θβ, θγ (log-parametrised, shared by both potentials), the Potts weights α ``(2, 3)`` and the
    ``(3, K, K)`` deviations Δ of each potential, which exist as parameters once K is known (``num_classes``, or a
    tuned preset's ``potentials``, loaded as Δ with α = 0).

    Args:
        params: :class:`~crfcore.params.PiecewiseParams` (defaults if None).
        num_classes: K, to create trainable Potts-initialised potentials.
        learn_compat: accepted for a constructor uniform with the other refiners; the potentials are the
            compatibilities and are learnable whenever they exist.
        learn_features: must be False (the features of the network are the fixed radial units).

    Shape:
        - image: ``(B, 3, H, W)`` float, 0..255
        - probs: ``(B, C, H, W)`` unary probabilities, sum 1 over C
        - output: ``(B, C, H, W)`` marginals Q, sum 1 over C
    """

    method = "piecewise"
    params_cls = P.PiecewiseParams

    def __init__(self, params: Any = None, *, num_classes: int | None = None, learn_compat: bool = False,
                 learn_features: bool = False) -> None:
        super().__init__()
        params = params if params is not None else self.params_cls()
        if not isinstance(params, self.params_cls):
            raise TypeError(f"{type(self).__name__} takes {self.params_cls.__name__}, got {type(params).__name__}.")
        if learn_features:
            raise ValueError("learn_features=True, but the piecewise CRF has no feature transforms; its learnable "
                             "parts are the potentials and θ's. Use method 'convcrf' for '+T'.")
        self.config = params
        self.log_theta_alpha = nn.Parameter(torch.tensor(math.log(params.theta_alpha)))
        self.log_theta_beta = nn.Parameter(torch.tensor(math.log(params.theta_beta)))
        self.log_theta_gamma = nn.Parameter(torch.tensor(math.log(params.theta_gamma)))
        self.register_buffer("weights", torch.tensor([params.w_appearance, params.w_smoothness, 1.0]))
        initial = _initial_potentials(params.potentials, num_classes)
        self.potts = None if initial is None else nn.Parameter(initial[0])
        self.surrounding = None if initial is None else nn.Parameter(initial[1])
        self.above_below = None if initial is None else nn.Parameter(initial[2])

    def features(self, image: Tensor) -> list[Tensor]:
        """``[(B, 5, H, W) appearance, (B, 2, H, W) smoothness, (B, 1, H, W) zeros (box)]`` for ``(B, 3, H, W)``."""
        dtype = image.dtype
        return [appearance_features(image, self.log_theta_alpha.exp().to(dtype), self.log_theta_beta.exp().to(dtype)),
                smoothness_features(image, self.log_theta_gamma.exp().to(dtype)),
                image.new_zeros(image.shape[0], 1, *image.shape[-2:])]

    def potentials(self, num_classes: int) -> tuple[Tensor, Tensor | None]:
        """``(U^s, U^ab)``, each ``(3, K, K)`` (U^s symmetrised); untrained: Potts on (appearance, smoothness), None."""
        potts = 1.0 - torch.eye(num_classes, device=self.weights.device)
        if self.surrounding is None:
            return torch.stack([potts, potts, torch.zeros_like(potts)]), None
        k = self.surrounding.shape[-1]
        if k != num_classes:
            raise ValueError(f"unary has {num_classes} classes, the piecewise potentials are {k}×{k}; use a preset "
                             f"tuned on {num_classes} classes or potentials='potts'.")
        shared = self.potts[:, :, None, None] * potts
        surrounding = shared[0] + 0.5 * (self.surrounding + self.surrounding.transpose(1, 2))
        return surrounding, shared[1] + self.above_below

    def build(self, image: Tensor) -> PiecewiseOp:
        """The range boxes of ``image`` ``(B, 3, H, W)``; reuse them while the θ's are unchanged."""
        feats = self.features(image)
        k, b = self.config.filter_size, self.config.blur
        if self.surrounding is None:
            return PiecewiseOp(build_box("surrounding", feats, k, b), None, None)
        return PiecewiseOp(*(build_box(name, feats, k, b) for name in ("surrounding", "above", "below")))

    def forward(self, image: Tensor, probs: Tensor, *, op: PiecewiseOp | None = None, iterations: int | None = None,
                callback: ProgressCallback | None = None, fixed: Tensor | str | None = "auto") -> Tensor:
        """Marginals Q; ``fixed``: pixels held at their unary, ``(B, 1, H, W)`` bool, None, or ``"auto"`` (the
        one-hot ones, :func:`~crfcore.inference.hard_pixels`)."""
        op = op if op is not None else self.build(image)
        surrounding, above_below = self.potentials(probs.shape[1])
        steps = self.config.iterations if iterations is None else iterations
        return mean_field(unary_energy(probs), PiecewiseMessages(op, surrounding, above_below, self.weights),
                          iterations=steps, callback=callback, fixed=held_pixels(probs, fixed))

    def current_params(self) -> Any:
        """The params dataclass with the current (possibly learned) values, ready for ``params.save_preset``."""
        values: dict[str, Any] = {"theta_alpha": self.log_theta_alpha.exp().item(),
                                  "theta_beta": self.log_theta_beta.exp().item(),
                                  "theta_gamma": self.log_theta_gamma.exp().item()}
        if self.surrounding is not None:
            surrounding, above_below = self.potentials(self.surrounding.shape[-1])
            values["potentials"] = tuple(tuple(tuple(float(v) for v in row) for row in m.tolist())
                                         for m in (*surrounding.detach(), *above_below.detach()))
        return dataclasses.replace(self.config, **values)


def _initial_potentials(preset: Any, num_classes: int | None) -> tuple[Tensor, Tensor, Tensor] | None:
    """``(α, Δ^s, Δ^ab)`` from a preset's matrices (α = 0), Potts-initialised for ``num_classes`` (α^s = (1, 1, 0),
    the rest 0), or None (untrained, any K)."""
    if preset == "potts":
        if num_classes is None:
            return None
        alpha = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
        return alpha, torch.zeros(3, num_classes, num_classes), torch.zeros(3, num_classes, num_classes)
    mats = torch.tensor(preset, dtype=torch.float32)
    if mats.shape[0] != 2 * len(KERNELS):
        raise ValueError(f"potentials must hold {2 * len(KERNELS)} K×K matrices (3 kernels × surrounding, "
                         f"above/below), got {mats.shape[0]}; use a preset written by crfcore tune --method piecewise.")
    if num_classes is not None and mats.shape[-1] != num_classes:
        raise ValueError(f"num_classes={num_classes}, but the preset's potentials are {mats.shape[-1]}×"
                         f"{mats.shape[-1]}; tune again on {num_classes} classes or leave num_classes unset.")
    return torch.zeros(2, 3), mats[:3].clone(), mats[3:].clone()
