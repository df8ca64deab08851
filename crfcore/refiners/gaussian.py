"""The Gaussian CRF refiner: Gaussian kernels × a backend × conjugate gradient (DESIGN.md §2, §3)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor, nn

from .. import params as P
from ..affinity import AffinityOp, LocalBackend, PooledBackend
from ..affinity.grid import downsample
from ..inference import ProgressCallback
from ..inference.gaussian import gaussian_crf, unary_scores
from .kernels import GaussianKernels

__all__ = ["GaussianCRF"]


class GaussianCRF(nn.Module):
    """Gaussian CRF (Chandra & Kokkinos 2016, "Fast, Exact and Multi-Scale Inference for Semantic Image
    Segmentation with Deep Gaussian CRFs", ECCV, arXiv:1603.08358).

    The quadratic energy of DESIGN.md §3, ``λ/2 Σ|x_i − b_i|² + 1/2 Σ W_ij |x_i − x_j|²``, minimised exactly by
    conjugate gradient (:func:`crfcore.inference.gaussian_crf`) to ``tol``; unary scores ``b = log clip(P, 1e-5, 1)``;
    the output is ``softmax(X)`` over classes. W is the two Gaussian kernels (w1, θα, θβ; w2, θγ) on a k×k window
    (``filter_size``) of a grid pooled ``blur`` times, made symmetric (:class:`~crfcore.affinity.PooledBackend`
    around ``LocalBackend(k, 1)``), or any backend passed in. With ``scales`` > 1, one solution per pyramid level
    (features and scores 2×2 average-pooled per level), coupled with weight μ = λ and solved jointly.
    Learnable: w1, w2, the θ's and λ (log-parametrised), and feature transforms with ``learn_features``.
    Gradients come in closed form from one more solve, so memory does not grow with the iteration count.

    Args:
        params: :class:`~crfcore.params.GaussianCRFParams` (defaults if None).
        backend: a backend of symmetric affinities (``LocalBackend(k, 1)``, ``ExactBackend()``, the lattice) to
            use instead of the pooled local window; ``filter_size`` and ``blur`` then do not apply.
        learn_features: learnable feature transforms ("+T").
        num_classes: accepted for a constructor uniform with :class:`MeanFieldCRF`; the G-CRF's pairwise term is
            the same for every class, so it needs no class count.
        learn_compat: must be False: the G-CRF has no label compatibility matrix.

    Shape:
        - image: ``(B, 3, H, W)`` float, 0..255
        - probs: ``(B, C, H, W)`` unary probabilities, sum 1 over C
        - output: ``(B, C, H, W)`` refined probabilities, sum 1 over C
    """

    method = "gaussian"
    params_cls = P.GaussianCRFParams

    def __init__(self, params: Any = None, *, backend: Any = None, learn_features: bool = False,
                 num_classes: int | None = None, learn_compat: bool = False) -> None:
        super().__init__()
        params = params if params is not None else self.params_cls()
        if not isinstance(params, self.params_cls):
            raise TypeError(f"{type(self).__name__} takes {self.params_cls.__name__}, got {type(params).__name__}.")
        if learn_compat:
            raise ValueError("learn_compat=True, but the Gaussian CRF has no label compatibility (its pairwise "
                             "term is the same for every class); use method 'convcrf' or 'densecrf' for one.")
        self.config = params
        self.num_classes = num_classes
        self.kernels = GaussianKernels(params, learn_features=learn_features)
        self.log_lam = nn.Parameter(torch.tensor(math.log(params.lam)))
        self._backend = backend

    def backend(self) -> Any:
        """The backend each pyramid level is built with."""
        if self._backend is not None:
            return self._backend
        local = LocalBackend(self.config.filter_size, 1)
        return local if self.config.blur == 1 else PooledBackend(local, self.config.blur)

    def build(self, image: Tensor) -> AffinityOp | tuple[AffinityOp, ...]:
        """The unweighted operator for ``image`` ``(B, 3, H, W)``, or one per level (a tuple) when ``scales`` > 1;
        reuse it while the θ's are unchanged."""
        features = self.kernels.features(image)
        backend = self.backend()
        ops = [backend.build(features)]
        for _ in range(self.config.scales - 1):
            features = [downsample(f, 2) for f in features]
            ops.append(backend.build(features))
        return ops[0] if len(ops) == 1 else tuple(ops)

    def scores(self, image: Tensor, probs: Tensor, *, op: Any = None, iterations: int | None = None,
               callback: ProgressCallback | None = None, x0: Tensor | None = None,
               fixed: str | None = "auto") -> Tensor:
        """The solution X ``(B, C, H, W)`` before the softmax; pass it back as ``x0`` to warm-start a solve for
        nearby parameters (a slider move). ``iterations`` overrides ``max_iter``. ``callback(k, max_iter, q)`` gets
        the softmax of iterate k; ``max_iter`` is an upper bound, the solve usually stops earlier at ``tol``.
        ``fixed``: ``"auto"`` or None, both holding no pixel (the joint solve has no per-pixel clamp)."""
        if not (fixed is None or (isinstance(fixed, str) and fixed == "auto")):
            raise ValueError("the Gaussian CRF solves every pixel jointly and cannot hold pixels fixed; pass "
                             "fixed='auto' or None, or use a mean-field method ('convcrf', 'densecrf').")
        op = op if op is not None else self.build(image)
        ops = list(op) if isinstance(op, (tuple, list)) else [op]
        if len(ops) != self.config.scales:
            raise ValueError(f"op has {len(ops)} pyramid level(s) but scales={self.config.scales}; pass "
                             f"op=model.build(image) from a model with the same scales.")
        weights = self.kernels.weights()
        if bool((weights.detach() < 0).any()):
            raise ValueError(f"w_appearance and w_smoothness must be >= 0 for the Gaussian CRF (a negative weight "
                             f"makes the system indefinite), got {weights.detach().tolist()}.")
        hook = None
        if callback is not None:
            def hook(k: int, total: int, x: Tensor) -> None:
                callback(k, total, torch.softmax(x, dim=1))
        return gaussian_crf([o.weighted(weights) for o in ops], unary_scores(probs), lam=self.log_lam.exp(),
                            tol=self.config.tol, max_iter=self.config.max_iter if iterations is None else iterations,
                            x0=x0, callback=hook)

    def forward(self, image: Tensor, probs: Tensor, *, op: Any = None, iterations: int | None = None,
                callback: ProgressCallback | None = None, x0: Tensor | None = None,
                fixed: str | None = "auto") -> Tensor:
        return torch.softmax(self.scores(image, probs, op=op, iterations=iterations, callback=callback, x0=x0,
                                         fixed=fixed), dim=1)

    def current_params(self) -> Any:
        """The params dataclass with the current (possibly learned) values, ready for ``params.save_preset``."""
        values = dict(self.kernels.values(), lam=self.log_lam.exp().item())
        return dataclasses.replace(self.config, **values)
