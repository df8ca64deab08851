"""Mean-field refiners: Gaussian kernels × a backend × mean field (DESIGN.md §2): ConvCRF and DenseCRF.

Each is an ``nn.Module`` whose learnable parameters are the kernel weights, the θ's (log-parametrised, so they stay
positive under gradient steps), optionally a C×C compatibility ("+C") and feature transforms ("+T").
``build(image)`` makes the affinity operator once; ``forward(image, probs, op=...)`` reuses it, which is what makes
weight, compatibility and iteration changes cheap.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from .. import params as P
from ..affinity import AffinityOp, LocalBackend
from ..affinity.lattice import LatticeBackend, LatticeOp
from ..inference import ProgressCallback, held_pixels, mean_field, to_memory_format, unary_energy
from .kernels import GaussianKernels

__all__ = ["MeanFieldCRF", "ConvCRF", "DenseCRF"]


class MeanFieldCRF(nn.Module):
    """Gaussian kernels × a backend × mean field. Subclasses choose the backend (:meth:`backend`).

    Args:
        params: the refiner's params dataclass (defaults if None).
        num_classes: needed when ``learn_compat`` is set and ``params.compat`` is ``"potts"``.
        learn_compat: make the compatibility a learnable C×C matrix, initialised to Potts ("+C").
        learn_features: learnable feature transforms ("+T").

    Shape:
        - image: ``(B, 3, H, W)`` float, 0..255
        - probs: ``(B, C, H, W)`` unary probabilities, sum 1 over C
        - output: ``(B, C, H, W)`` marginals Q, sum 1 over C
    """

    method: str = ""  # the registered name, set by each subclass
    params_cls: type = P.ConvCRFParams

    def __init__(self, params: Any = None, *, num_classes: int | None = None, learn_compat: bool = False,
                 learn_features: bool = False) -> None:
        super().__init__()
        params = params if params is not None else self.params_cls()
        if not isinstance(params, self.params_cls):
            raise TypeError(f"{type(self).__name__} takes {self.params_cls.__name__}, got {type(params).__name__}.")
        self.config = params
        self.kernels = GaussianKernels(params, learn_features=learn_features)
        compat = None
        if params.compat != "potts":
            compat = torch.tensor(params.compat, dtype=torch.float32)
        elif learn_compat:
            if num_classes is None:
                raise ValueError("learn_compat=True needs num_classes (the compatibility is C×C).")
            compat = 1.0 - torch.eye(num_classes)
        self.compat = nn.Parameter(compat) if compat is not None else None
        if self.compat is not None and not learn_compat:
            self.compat.requires_grad_(False)

    def backend(self) -> Any:
        raise NotImplementedError

    def build(self, image: Tensor) -> AffinityOp:
        """The unweighted affinity operator for ``image`` ``(B, 3, H, W)``; reuse it while θ's are unchanged."""
        return self.backend().build(self.kernels.features(image))

    def forward(self, image: Tensor, probs: Tensor, *, op: AffinityOp | None = None, iterations: int | None = None,
                callback: ProgressCallback | None = None, fixed: Tensor | str | None = "auto") -> Tensor:
        """Marginals Q; ``fixed``: pixels held at their unary, ``(B, 1, H, W)`` bool, None, or ``"auto"`` (the
        one-hot ones, :func:`~crfcore.inference.hard_pixels`)."""
        op = op if op is not None else self.build(image)
        steps = self.config.iterations if iterations is None else iterations
        # the op says which layout its messages are fastest in (LocalOp: channels-last at blur 1)
        energy = to_memory_format(unary_energy(probs), getattr(op, "memory_format", torch.contiguous_format))
        q = mean_field(energy, op.weighted(self.kernels.weights()), iterations=steps, compat=self.compat,
                       callback=callback, fixed=held_pixels(probs, fixed))
        return to_memory_format(q, torch.contiguous_format)

    def current_params(self) -> Any:
        """The params dataclass with the current (possibly learned) values, ready for ``params.save_preset``."""
        values = self.kernels.values()
        if self.compat is not None:
            values["compat"] = tuple(tuple(float(v) for v in row) for row in self.compat.detach().cpu().tolist())
        if self.kernels.transforms is not None:
            values["feature_transforms"] = tuple(tuple(tuple(float(v) for v in row) for row in t.matrix.tolist())
                                                 for t in self.kernels.transforms)
        known = {f.name for f in dataclasses.fields(self.config)}
        return dataclasses.replace(self.config, **{k: v for k, v in values.items() if k in known})


class ConvCRF(MeanFieldCRF):
    """ConvCRF (Teichmann & Cipolla 2018, "Convolutional CRFs for Semantic Segmentation", arXiv:1805.04777).

    The fully connected CRF with its kernel truncated to a k×k window (``filter_size``) on a grid blurred by
    ``blur``; messages computed exactly by a locally varying convolution (:mod:`crfcore.affinity.local`).
    """

    method = "convcrf"
    params_cls = P.ConvCRFParams

    def backend(self) -> LocalBackend:
        return LocalBackend(self.config.filter_size, self.config.blur)


class DenseCRF(MeanFieldCRF):
    """DenseCRF (Krähenbühl & Koltun 2011, "Efficient Inference in Fully Connected CRFs with Gaussian Edge
    Potentials", NIPS, arXiv:1210.5644).

    Both Gaussian kernels over all pixel pairs, applied on the permutohedral lattice
    (:mod:`crfcore.affinity.lattice`) with ``normalization`` (symmetric by default), and mean field with the self
    term ``k_ii = 1`` in each pixel's message, as the classic model and pydensecrf have it:
    ``Q ← softmax(−ψu + Σ_m w_m K̃_m Q)`` for Potts, ``K̃ = D^-1/2 K D^-1/2``, ``D = K·1``.
    Learnable: w1, w2 and the compatibility ("+C"). The lattice is built without gradients, so the θ's are frozen
    (``requires_grad`` False) and feature transforms cannot be learned here. The smoothness kernel runs on the
    lattice too: the exact separable Gaussian (±3θγ taps) measured slower per application at 500×375 (``crfcore
    bench densecrf``: 21 against 15 ms) and would no longer match pydensecrf.

    Args:
        params: :class:`~crfcore.params.DenseCRFParams` (defaults if None).
        num_classes, learn_compat: as :class:`MeanFieldCRF`.
        learn_features: must be False (see above; ConvCRF learns "+T").
        self_term: add the self term (default); False leaves it out, as the backend interface does.

    Shape:
        - image: ``(B, 3, H, W)`` float, 0..255
        - probs: ``(B, C, H, W)`` unary probabilities, sum 1 over C
        - output: ``(B, C, H, W)`` marginals Q, sum 1 over C
    """

    method = "densecrf"
    params_cls = P.DenseCRFParams

    def __init__(self, params: Any = None, *, num_classes: int | None = None, learn_compat: bool = False,
                 learn_features: bool = False, self_term: bool = True) -> None:
        if learn_features:
            raise ValueError("DenseCRF cannot learn feature transforms: its lattice is built without gradients. "
                             "Pass learn_features=False, or learn them with method 'convcrf'.")
        super().__init__(params, num_classes=num_classes, learn_compat=learn_compat)
        for theta in (self.kernels.log_theta_alpha, self.kernels.log_theta_beta, self.kernels.log_theta_gamma):
            theta.requires_grad_(False)
        self.self_term = self_term

    def backend(self) -> LatticeBackend:
        return LatticeBackend(self.config.normalization)

    def forward(self, image: Tensor, probs: Tensor, *, op: LatticeOp | None = None, iterations: int | None = None,
                callback: ProgressCallback | None = None, fixed: Tensor | str | None = "auto") -> Tensor:
        """Marginals Q; ``fixed`` as :meth:`MeanFieldCRF.forward`."""
        op = op if op is not None else self.build(image)
        if self.self_term and not isinstance(op, LatticeOp):
            raise TypeError(f"op is a {type(op).__name__}; DenseCRF with self_term=True needs the LatticeOp from "
                            f"DenseCRF.build(image) (or construct it with self_term=False).")
        steps = self.config.iterations if iterations is None else iterations
        weighted = op.weighted(self.kernels.weights())
        if self.self_term:  # the lattice's own output: cheaper than adding self_weight() back every iteration
            weighted = weighted.with_self_term()
        # channels-last keeps each pixel's classes together: the lattice then gathers rows with no transposes
        energy = to_memory_format(unary_energy(probs), torch.channels_last)
        q = mean_field(energy, weighted, iterations=steps, compat=self.compat, callback=callback,
                       fixed=held_pixels(probs, fixed))
        return to_memory_format(q, torch.contiguous_format)  # a quarter of q.contiguous()'s time (500×375×21)
