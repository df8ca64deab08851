"""The refiners: features × affinity backend × inference (DESIGN.md §2), and a registry by name.

Each refiner is an ``nn.Module`` whose learnable parameters are the kernel weights, the θ's (log-parametrised, so they
stay positive under gradient steps), optionally a C×C compatibility ("+C") and feature transforms ("+T").
``build(image)`` makes the affinity operator once; ``forward(image, probs, op=...)`` reuses it, which is what makes
weight, compatibility and iteration changes cheap.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import torch
from torch import Tensor, nn

from . import params as P
from .affinity import AffinityOp, LocalBackend
from .features import FeatureTransform, appearance_features, smoothness_features
from .inference import ProgressCallback, hard_pixels, mean_field, unary_energy
from .affinity import PooledBackend
from .affinity.lattice import LatticeBackend, LatticeOp
from .affinity.local import BandRunner, downsample
from .inference.gaussian import gaussian_crf, unary_scores

__all__ = ["GaussianKernels", "MeanFieldCRF", "ConvCRF", "DenseCRF", "GaussianCRF", "register", "get", "names",
           "REGISTRY"]

REGISTRY: dict[str, type[nn.Module]] = {}


def register(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding a refiner to the registry under ``name``."""

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        REGISTRY[name] = cls
        cls.method = name
        return cls

    return add


def names() -> list[str]:
    """Registered refiner names."""
    return list(REGISTRY)


def get(name: str, params: Any = None, **kwargs: Any) -> nn.Module:
    """A new refiner module by name, e.g. ``get("convcrf", filter_size=7)``.

    ``params`` is that refiner's params dataclass (defaults if None); ``kwargs`` are parameter overrides by name,
    or the constructor's keywords (``num_classes``, ``learn_compat``, ``learn_features``).
    """
    try:
        cls = REGISTRY[name]
    except KeyError:
        valid = ", ".join(repr(n) for n in REGISTRY)
        raise ValueError(f"{name!r} is not a valid method. Valid methods are {valid}.") from None
    ctor_keys = {"num_classes", "learn_compat", "learn_features"}
    ctor = {k: kwargs.pop(k) for k in list(kwargs) if k in ctor_keys}
    params = P.with_overrides(params if params is not None else cls.params_cls(), **kwargs)
    return cls(params, **ctor)


class GaussianKernels(nn.Module):
    """The appearance and smoothness kernels' learnable parameters (Krähenbühl & Koltun 2011, eq. 3).

    ``k(i,j) = w1·exp(−|p_i−p_j|²/2θα² − |I_i−I_j|²/2θβ²) + w2·exp(−|p_i−p_j|²/2θγ²)``; with ``learn_features`` each
    kernel's features pass through a learnable linear map (identity at start, or ``params.feature_transforms`` when a
    tuned preset sets them; they then apply even without ``learn_features``).
    """

    def __init__(self, params: Any, *, learn_features: bool = False) -> None:
        super().__init__()
        self.w_appearance = nn.Parameter(torch.tensor(float(params.w_appearance)))
        self.w_smoothness = nn.Parameter(torch.tensor(float(params.w_smoothness)))
        self.log_theta_alpha = nn.Parameter(torch.tensor(math.log(params.theta_alpha)))
        self.log_theta_beta = nn.Parameter(torch.tensor(math.log(params.theta_beta)))
        self.log_theta_gamma = nn.Parameter(torch.tensor(math.log(params.theta_gamma)))
        preset = getattr(params, "feature_transforms", "identity")
        self.transforms = None
        if learn_features or preset != "identity":  # a tuned preset's "+T" matrices run with or without learning
            self.transforms = nn.ModuleList([FeatureTransform(5), FeatureTransform(2)])
            if preset != "identity":
                shapes = [(len(m), len(m[0])) for m in preset]
                if shapes != [(5, 5), (2, 2)]:
                    raise ValueError(f"feature_transforms must be a 5×5 appearance and a 2×2 smoothness matrix, "
                                     f"got shapes {shapes}; use 'identity' or a preset written by crfcore tune.")
                for transform, matrix in zip(self.transforms, preset):
                    transform.matrix.data.copy_(torch.tensor(matrix))
            self.transforms.requires_grad_(learn_features)

    def features(self, image: Tensor) -> list[Tensor]:
        """``[(B, 5, H, W) appearance, (B, 2, H, W) smoothness]`` for an image ``(B, 3, H, W)`` in 0..255."""
        dtype = image.dtype
        feats = [appearance_features(image, self.log_theta_alpha.exp().to(dtype), self.log_theta_beta.exp().to(dtype)),
                 smoothness_features(image, self.log_theta_gamma.exp().to(dtype))]
        if self.transforms is not None:
            feats = [t(f) for t, f in zip(self.transforms, feats)]
        return feats

    def weights(self) -> Tensor:
        """``(2,)``: (w1, w2)."""
        return torch.stack([self.w_appearance, self.w_smoothness])

    def values(self) -> dict[str, float]:
        """Current values under their params.py names."""
        return {"w_appearance": self.w_appearance.item(), "w_smoothness": self.w_smoothness.item(),
                "theta_alpha": self.log_theta_alpha.exp().item(), "theta_beta": self.log_theta_beta.exp().item(),
                "theta_gamma": self.log_theta_gamma.exp().item()}


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

    params_cls: type = P.ConvCRFParams
    method: str = ""

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
                callback: ProgressCallback | None = None) -> Tensor:
        op = op if op is not None else self.build(image)
        steps = self.config.iterations if iterations is None else iterations
        return mean_field(unary_energy(probs), op.weighted(self.kernels.weights()), iterations=steps,
                          compat=self.compat, callback=callback, fixed=hard_pixels(probs))

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


@register("convcrf")
class ConvCRF(MeanFieldCRF):
    """ConvCRF (Teichmann & Cipolla 2018, "Convolutional CRFs for Semantic Segmentation", arXiv:1805.04777).

    The fully connected CRF with its kernel truncated to a k×k window (``filter_size``) on a grid blurred by
    ``blur``; messages computed exactly by a locally varying convolution (:mod:`crfcore.affinity.local`).
    """

    params_cls = P.ConvCRFParams

    def backend(self) -> LocalBackend:
        return LocalBackend(self.config.filter_size, self.config.blur)

    # Without autograd, build and inference run their full-resolution steps as single-threaded ops and their band
    # loops on a BandRunner's workers (crfcore.affinity.local), which keeps a loaded machine's thread barriers out.
    def build(self, image: Tensor) -> AffinityOp:
        if torch.is_grad_enabled():
            return super().build(image)
        with BandRunner():
            return super().build(image)

    def forward(self, image: Tensor, probs: Tensor, *, op: AffinityOp | None = None, iterations: int | None = None,
                callback: ProgressCallback | None = None) -> Tensor:
        if torch.is_grad_enabled():
            return super().forward(image, probs, op=op, iterations=iterations, callback=callback)
        with BandRunner():
            return super().forward(image, probs, op=op, iterations=iterations, callback=callback)


@register("gaussian")
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

    params_cls = P.GaussianCRFParams
    method: str = ""

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
        reuse it while the θ's are unchanged. Without autograd its ops run on one thread each (as ConvCRF's)."""
        if torch.is_grad_enabled():
            return self._build(image)
        with BandRunner():
            return self._build(image)

    def _build(self, image: Tensor) -> AffinityOp | tuple[AffinityOp, ...]:
        features = self.kernels.features(image)
        backend = self.backend()
        ops = [backend.build(features)]
        for _ in range(self.config.scales - 1):
            features = [downsample(f, 2) for f in features]
            ops.append(backend.build(features))
        return ops[0] if len(ops) == 1 else tuple(ops)

    def scores(self, image: Tensor, probs: Tensor, *, op: Any = None, iterations: int | None = None,
               callback: ProgressCallback | None = None, x0: Tensor | None = None) -> Tensor:
        """The solution X ``(B, C, H, W)`` before the softmax; pass it back as ``x0`` to warm-start a solve for
        nearby parameters (a slider move). ``iterations`` overrides ``max_iter``. ``callback(k, max_iter, q)`` gets
        the softmax of iterate k; ``max_iter`` is an upper bound, the solve usually stops earlier at ``tol``."""
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
                callback: ProgressCallback | None = None, x0: Tensor | None = None) -> Tensor:
        return torch.softmax(self.scores(image, probs, op=op, iterations=iterations, callback=callback, x0=x0),
                             dim=1)

    def current_params(self) -> Any:
        """The params dataclass with the current (possibly learned) values, ready for ``params.save_preset``."""
        values = dict(self.kernels.values(), lam=self.log_lam.exp().item())
        return dataclasses.replace(self.config, **values)


@register("densecrf")
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
                callback: ProgressCallback | None = None) -> Tensor:
        op = op if op is not None else self.build(image)
        if self.self_term and not isinstance(op, LatticeOp):
            raise TypeError(f"op is a {type(op).__name__}; DenseCRF with self_term=True needs the LatticeOp from "
                            f"DenseCRF.build(image) (or construct it with self_term=False).")
        steps = self.config.iterations if iterations is None else iterations
        weighted = op.weighted(self.kernels.weights())
        if self.self_term:  # the lattice's own output: cheaper than adding self_weight() back every iteration
            weighted = weighted.with_self_term()
        # channels-last keeps each pixel's classes together: the lattice then gathers rows with no transposes
        energy = unary_energy(probs).contiguous(memory_format=torch.channels_last)
        q = mean_field(energy, weighted, iterations=steps, compat=self.compat, callback=callback,
                       fixed=hard_pixels(probs))
        return q.contiguous()
