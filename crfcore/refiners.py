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
from .inference import ProgressCallback, mean_field, unary_energy

__all__ = ["GaussianKernels", "MeanFieldCRF", "ConvCRF", "register", "get", "names", "REGISTRY"]

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
    kernel's features pass through a learnable linear map (identity at start).
    """

    def __init__(self, params: Any, *, learn_features: bool = False) -> None:
        super().__init__()
        self.w_appearance = nn.Parameter(torch.tensor(float(params.w_appearance)))
        self.w_smoothness = nn.Parameter(torch.tensor(float(params.w_smoothness)))
        self.log_theta_alpha = nn.Parameter(torch.tensor(math.log(params.theta_alpha)))
        self.log_theta_beta = nn.Parameter(torch.tensor(math.log(params.theta_beta)))
        self.log_theta_gamma = nn.Parameter(torch.tensor(math.log(params.theta_gamma)))
        self.transforms = nn.ModuleList([FeatureTransform(5), FeatureTransform(2)]) if learn_features else None

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
                          compat=self.compat, callback=callback)

    def current_params(self) -> Any:
        """The params dataclass with the current (possibly learned) values, ready for ``params.save_preset``."""
        values = self.kernels.values()
        if self.compat is not None:
            values["compat"] = tuple(tuple(float(v) for v in row) for row in self.compat.detach().cpu().tolist())
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
