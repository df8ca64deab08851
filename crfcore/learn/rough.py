"""Learning on the unaries users have: rough polygon masks and brush strokes, through :func:`crfcore.refine_mask`'s
colour-model unary, with the CRF and the unary's settings trained together.

Protocols (``crfcore tune --protocol``; ``"noise"``, the synthetic noise of :mod:`crfcore.learn.data`, is the
default and does not come here):

* ``"polygon"``: each training image's annotation is its ground truth simplified to polygons at ``tolerance`` px
  (:func:`crfcore.protocols.polygon_annotation`, the annotator of ``crfcore eval --protocol polygon``), drawn at the
  training size (``--max-side``), so the tolerance is in pixels at that size.
* ``"strokes"``: the first ``strokes`` strokes of the simulated annotator of ``crfcore eval --protocol strokes``
  (:func:`crfcore.protocols.next_stroke`, disks of ``radius`` px) starting from an empty mask (every pixel wrong).
  Between strokes the prediction it corrects is the nearest-stroke fill of the strokes so far
  (:func:`crfcore.protocols.fill_nearest`), a parameter-free stand-in for the refiner, so the annotation does not
  depend on the parameters being learned and each stroke goes to the largest region that fill gets wrong.

The unary of an image is what :func:`crfcore.refine_mask` builds in its first round (:mod:`crfcore.appearance`):
roughness ``"auto"`` × ``roughness_scale`` (strokes alone: an eighth of the longer side), colour models fitted on the
confident pixels, and in the uncertain zone

    n = softmax over the candidates of  −d²/(2(σρ)²) + w · ratio,      p = r + (confidence − r) · n

Only the last step depends on ``confidence``, ``colour_weight`` w and ``prior_width`` σ, so each image stores
``A`` = log n at (w = 0, σ = 1) and ``B`` = log n at (w = 1, σ → ∞) from :func:`crfcore.appearance.appearance_probs`
itself; softmax ignores a per-pixel constant, so ``A/σ² + w·B`` is the score up to one, and :class:`RoughUnary`
computes p from (A, B) in torch with gradients: the three settings are learned with the CRF through inference
(:func:`crfcore.learn.fine_tune`). Strokes alone (:mod:`crfcore.stroke_unary`) store A = γσ₀² · (−log(D + δ)) and
B = the colour ratio, so σ scales the geodesic prior, written back as ``stroke_prior`` = γ(σ₀/σ)².
``roughness_scale`` moves the zone (not differentiable): a small grid of it, the CRF fine-tuned at each point.

The ``"piecewise"`` refiner (Lin et al. 2016) learns its potentials without inference, from ground-truth label
pairs alone, so they do not depend on the unary: :func:`~crfcore.learn.train_piecewise` trains them on the training
images' ground truth first (its calibration fits their scale against the starting unary), then they are held fixed
while the unary's settings are fine-tuned through mean field with them, over the same grid.

The choice is made on the validation images among: the starting preset (the method's shipped ``rough_annotation``
or ``scribbles`` preset, or ``--preset``), the unary alone (the starting unary with every pairwise weight ``w_*`` at
0 and learned matrices at their defaults, :func:`~crfcore.learn.finetune.zero_pairwise`, so the CRF returns the
unary's argmax), and each grid point's best; so the tuned result is never below the unary
or the starting preset on validation. GrabCut's later rounds (``rounds`` > 1: refit on the refined labels) are not
trained through; the written preset keeps the starting ``rounds``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import params as P
from ..appearance import appearance_probs, fit_colour_models
from ..mask_refine import rough_mask
from ..stroke_unary import stroke_scores
from ..labels import VOID
from ..protocols import StrokeRecipe, fill_nearest, next_stroke, polygon_annotation
from .data import LearnData, Sample
from .finetune import FinetuneConfig, TuneCallback, TuneResult, fine_tune, unary_miou, validate, zero_pairwise
from .piecewise_train import PiecewiseConfig, train_piecewise

__all__ = ["PROTOCOLS", "GRID", "RoughRecipe", "annotate", "unary_parts", "RoughUnary", "UnaryCRF", "RoughData",
           "tune_rough"]

log = logging.getLogger(__name__)

PROTOCOLS = ("noise", "polygon", "strokes")
"""``crfcore tune --protocol`` values: synthetic noise (the default), polygon masks, brush strokes."""

GRID = (1.0, 0.5, 2.0)
"""Multipliers of the starting ``roughness_scale`` tried by :func:`tune_rough` (polygon protocol)."""

_FLAT = 1e6  # a prior width at which the mask prior is flat (below float32 resolution)


@dataclass(frozen=True)
class RoughRecipe:
    """How training annotations are drawn from the ground truth.

    Attributes:
        protocol: ``"polygon"`` or ``"strokes"``.
        tolerance: polygon: Douglas–Peucker tolerance, pixels ≥ 0 at the training size.
        background: polygon: class of pixels no polygon covers; None leaves them unknown (CamVid).
        strokes: strokes: how many strokes of the simulated annotator, ≥ 1.
        radius: strokes: brush radius, pixels ≥ 0.
    """

    protocol: str = "polygon"
    tolerance: float = 4.0
    background: int | None = 0
    strokes: int = 5
    radius: float = StrokeRecipe.radius

    def __post_init__(self) -> None:
        if self.protocol not in ("polygon", "strokes"):
            raise ValueError(f"{self.protocol!r} is not a rough-annotation protocol; use 'polygon' or 'strokes' "
                             f"('noise' trains on the synthetic unaries of crfcore.learn.LearnData).")
        if not self.tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0 pixels, got {self.tolerance}.")
        if isinstance(self.strokes, bool) or not isinstance(self.strokes, int) or self.strokes < 1:
            raise ValueError(f"strokes must be a whole number >= 1, got {self.strokes!r}.")
        if not self.radius >= 0:
            raise ValueError(f"radius must be >= 0 pixels, got {self.radius}.")

    @property
    def kind(self) -> str:
        """The preset kind of this unary: ``"rough_annotation"`` (polygon) or ``"scribbles"`` (strokes)."""
        return "rough_annotation" if self.protocol == "polygon" else "scribbles"


def annotate(gt: np.ndarray, recipe: RoughRecipe, *, void: int | None = VOID) -> tuple[np.ndarray | None,
                                                                                      np.ndarray | None]:
    """``(mask, strokes)`` the recipe's annotator draws on ``(H, W)`` ground truth ``gt``.

    Returns:
        polygon: ``((H, W) int64 mask with -1 where unknown, None)``; strokes: ``(None, (H, W) int64 strokes, -1
        unpainted)``.
    """
    if recipe.protocol == "polygon":
        return polygon_annotation(gt, tolerance=recipe.tolerance, background=recipe.background, void=void), None
    painted = np.full(gt.shape, -1, np.int64)
    for _ in range(recipe.strokes):
        pred = None if (painted < 0).all() else fill_nearest(painted, -1)
        stroke = next_stroke(pred, gt, radius=recipe.radius, void=void)
        if stroke is None:
            break
        cls, disk = stroke
        painted[disk] = cls
    return None, painted


def unary_parts(image: np.ndarray, mask: np.ndarray | None, strokes: np.ndarray | None, num_classes: int,
                settings: P.UnaryParams) -> Tensor:
    """The stored form of :func:`crfcore.refine_mask`'s first-round unary, ``(3C + 1, H, W)`` float32: ``A``, ``B``
    (C each, 0 off the candidates), the candidates (C, 1/0) and the stroke class (-1 unpainted); see the module
    docstring. :class:`RoughUnary` turns it into probabilities.

    Args:
        image: ``(H, W, 3)`` uint8.
        mask: ``(H, W)`` int labels, -1 unknown; None: strokes only.
        strokes: ``(H, W)`` int, -1 unpainted; None: none.
        settings: the unary settings (``roughness_scale``, ``thin_fraction``, ``components``, ``position_weight``,
            ``colour_smoothing`` are used here; the other three are :class:`RoughUnary`'s).
    """
    h, w = image.shape[:2]
    rough = rough_mask(image, mask, num_classes=num_classes, strokes=strokes, void=-1, device="cpu",
                       settings=settings)
    painted = torch.full((1, h, w), -1.0) if strokes is None else torch.from_numpy(strokes).float()[None]
    if rough.distances is not None:  # strokes alone (crfcore.stroke_unary): A = γσ²·(−log(D + δ)), B = the ratio
        log_distance, ratio, present = stroke_scores(rough.image, rough.strokes, rough.stroke_models(),
                                                     rough.distances)
        cand = present.unsqueeze(1).expand_as(ratio)
        a = settings.stroke_prior * settings.prior_width ** 2 * log_distance
        parts = [torch.where(cand, t, torch.zeros_like(t)).reshape(num_classes, h, w) for t in (a, ratio)]
        return torch.cat([*parts, cand.float().reshape(num_classes, h, w), painted]).contiguous()
    common = {"labels": rough.labels, "strokes": rough.strokes, "smoothing": settings.colour_smoothing,
              "calibrate": settings.calibrate}
    models = fit_colour_models(rough.image, torch.from_numpy(rough.geometry.confident), num_classes,
                               components=settings.components, position_weight=settings.position_weight)
    geometry = rough.geometry
    n0 = appearance_probs(rough.image, geometry, models, confidence=1.0, colour_weight=0.0, prior_width=1.0,
                          **common)
    n1 = appearance_probs(rough.image, geometry, models, confidence=1.0, colour_weight=1.0, prior_width=_FLAT,
                          **common)
    cand = n0 > 0
    zero = torch.zeros_like(n0)
    a = torch.where(cand, torch.log(n0.clamp_min(1e-30)), zero)
    b = torch.where(cand, torch.log(n1.clamp_min(1e-30)), zero)
    return torch.cat([a, b, cand.float(), painted]).contiguous()


def _logit(x: float) -> float:
    x = min(max(x, 1e-4), 1 - 1e-4)
    return math.log(x / (1 - x))


class RoughUnary(nn.Module):
    """The learnable last step of the colour-model unary: ``(B, 3C + 1, H, W)`` parts → ``(B, C, H, W)``
    probabilities, with ``confidence`` ∈ (0.51, 1), ``colour_weight`` ∈ (0, 10) and ``prior_width`` ∈ (0.1, 10)
    (sigmoid-parametrised inside :class:`crfcore.params.UnaryParams`' ranges). With ``strokes`` (parts of strokes
    alone, :func:`unary_parts`) the learned width σ scales the geodesic prior instead: its strength is
    ``stroke_prior`` · (σ₀/σ)², σ₀ the starting ``prior_width``, and :meth:`settings` writes it as ``stroke_prior``."""

    def __init__(self, settings: P.UnaryParams, num_classes: int, *, strokes: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.base = settings
        self.strokes = strokes
        self.conf_logit = nn.Parameter(torch.tensor(_logit((settings.confidence - 0.51) / 0.49)))
        self.weight_logit = nn.Parameter(torch.tensor(_logit(settings.colour_weight / 10.0)))
        self.width_logit = nn.Parameter(torch.tensor(_logit(math.log(settings.prior_width / 0.1) / math.log(100.0))))

    def values(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(confidence, colour_weight, prior_width)`` as 0-d tensors."""
        return (0.51 + 0.49 * torch.sigmoid(self.conf_logit), 10.0 * torch.sigmoid(self.weight_logit),
                0.1 * 100.0 ** torch.sigmoid(self.width_logit))

    def settings(self) -> P.UnaryParams:
        """The starting settings with the three learned values (rounded to 4 decimals, kept in range)."""
        conf, weight, width = (float(v.detach()) for v in self.values())
        if self.strokes:
            spec = {s.name: s for s in P.specs(P.UnaryParams)}["stroke_prior"]
            gamma = self.base.stroke_prior * (self.base.prior_width / width) ** 2
            return dataclasses.replace(self.base, confidence=min(1.0, max(0.51, round(conf, 4))),
                                       colour_weight=min(10.0, round(weight, 4)),
                                       stroke_prior=min(spec.high, max(spec.low, round(gamma, 4))))
        return dataclasses.replace(self.base, confidence=min(1.0, max(0.51, round(conf, 4))),
                                   colour_weight=min(10.0, round(weight, 4)),
                                   prior_width=min(10.0, max(0.1, round(width, 4))))

    def forward(self, parts: Tensor) -> Tensor:
        c = self.num_classes
        a, b, cand, painted = parts[:, :c], parts[:, c:2 * c], parts[:, 2 * c:3 * c] > 0.5, parts[:, 3 * c:]
        conf, weight, width = self.values()
        cand = cand | ~cand.any(1, keepdim=True)  # no candidate (cannot happen for refine_mask's maps): uniform
        score = torch.where(cand, a / (width * width) + weight * b, torch.full_like(a, -math.inf))
        n = torch.softmax(score, 1)
        rest = (1.0 - conf) / (c - 1)
        probs = rest + (conf - rest) * n
        hard = torch.nn.functional.one_hot(painted[:, 0].clamp_min(0).long(), c).permute(0, 3, 1, 2).to(probs).contiguous()
        return torch.where(painted >= 0, hard, probs).contiguous()


class UnaryCRF(nn.Module):
    """A refiner fed by a :class:`RoughUnary`: ``forward(image, parts)`` → Q, trained as one model by
    :func:`crfcore.learn.fine_tune`; ``method`` and ``current_params()`` are the refiner's."""

    def __init__(self, unary: RoughUnary, crf: nn.Module, *, learn_unary: bool = True) -> None:
        super().__init__()
        self.unary, self.crf = unary, crf
        self.method = crf.method
        for p in unary.parameters():
            p.requires_grad_(learn_unary)

    def forward(self, image: Tensor, parts: Tensor) -> Tensor:
        return self.crf(image, self.unary(parts))

    def current_params(self) -> Any:
        return self.crf.current_params()


class RoughData(LearnData):
    """:class:`~crfcore.learn.LearnData` whose unaries are :func:`unary_parts` of the recipe's annotation, drawn and
    built at the training size (after ``max_side`` / ``long_side``). Takes LearnData's keywords except ``recipe``
    and ``unary_fn``.

    Args:
        rough: the annotator.
        settings: the unary settings the parts are built with (``roughness_scale`` and the fixed ones).
    """

    def __init__(self, folder: str | os.PathLike, rough: RoughRecipe, settings: P.UnaryParams,
                 **kwargs: Any) -> None:
        super().__init__(folder, **kwargs)
        self.rough, self.settings = rough, settings

    def with_settings(self, settings: P.UnaryParams) -> "RoughData":
        """The same images and split with parts built at ``settings`` (nothing loaded yet)."""
        other = RoughData.__new__(RoughData)
        other.__dict__.update(self.__dict__)
        other.settings = settings
        other._cache = type(self._cache)()
        return other

    def _load(self, stem: str) -> Sample:
        image, labels = self._read(stem)
        image_t, labels_t, _ = self._resample(image, labels)
        gt = labels_t.numpy()
        mask, strokes = annotate(gt, self.rough, void=self.void)
        image8 = image_t.permute(1, 2, 0).to(torch.uint8).numpy()
        parts = unary_parts(image8, mask, strokes, self.num_classes, self.settings)
        return Sample(stem, image_t, parts, labels_t)


def tune_rough(method: str, params: Any, data: RoughData, *, config: FinetuneConfig = FinetuneConfig(),
               grid: tuple[float, ...] | None = None, callback: TuneCallback | None = None,
               piecewise: PiecewiseConfig | None = None, **model_options: Any) -> TuneResult:
    """Train ``method``'s CRF and the unary's settings on ``data``'s rough annotations; keep the best on validation.

    The ``"piecewise"`` refiner learns its potentials piecewise, without inference (Lin et al. 2016), so from the
    training images' ground truth alone: they are trained first (:func:`~crfcore.learn.train_piecewise`, calibrated
    on the starting unary), then held fixed while the unary's settings are fine-tuned through inference with them at
    each grid point, as for the other methods.

    Args:
        method: a registered refiner.
        params: its starting params dataclass, at the training size.
        data: the images with parts built at the starting unary settings (``data.settings``).
        config: fine-tuning settings of each grid point (piecewise: of the unary's settings alone).
        grid: multipliers of the starting ``roughness_scale`` (default :data:`GRID` for polygons; strokes alone
            have no roughness to scale, so one point).
        callback: progress over the whole run (steps numbered across the piecewise training and the points).
        piecewise: piecewise-training settings (method ``"piecewise"`` only; default :class:`PiecewiseConfig` with
            ``config``'s seed and classes rule).
        **model_options: ``crfcore.refiners.get`` keywords (``learn_compat``, ``learn_features``).

    Returns:
        :class:`~crfcore.learn.TuneResult` with ``params`` at the training size, ``unary`` the chosen settings,
        ``kind`` the preset kind, ``choice`` what was kept; ``val_unary_miou`` is the starting unary's argmax,
        ``val_initial_miou`` the starting preset, ``val_miou`` the chosen one (≥ both).

    Raises:
        ValueError: piecewise settings for another method, or a grid value out of range.
        crfcore.Cancelled: from the callback.
    """
    from .. import refiners

    by_parts = refiners.method(method).training == "piecewise"
    if piecewise is not None and not by_parts:
        raise ValueError(f"piecewise settings were given for method {method!r}, which is fine-tuned through "
                         f"inference; pass them only with method 'piecewise' (config holds {method}'s settings).")
    start_time = time.perf_counter()
    start = data.settings
    points = (1.0,) if data.rough.protocol == "strokes" else (grid or GRID)
    c, void, classes = data.num_classes, data.void, config.classes
    strokes = data.rough.protocol == "strokes"
    head0 = RoughUnary(start, c, strokes=strokes)
    val0 = data.val()
    unary0 = unary_miou(val0, c, void=void, classes=classes, transform=head0)
    shipped = validate(refiners.get(method, params, num_classes=c), val0, c, void=void, classes=classes,
                       transform=head0)
    best = {"miou": shipped, "params": params, "unary": start, "choice": "the starting preset", "run": None}
    zero = zero_pairwise(params)
    if zero is not None:
        alone = validate(refiners.get(method, zero, num_classes=c), val0, c, void=void, classes=classes,
                         transform=head0)
        if alone > best["miou"]:
            best = {"miou": alone, "params": zero, "unary": start, "choice": "the unary alone (no pairwise term)",
                    "run": None}
    history: list[dict[str, float]] = []
    piecewise = (piecewise or PiecewiseConfig(seed=config.seed, classes=classes)) if by_parts else None
    offset = 0 if piecewise is None else piecewise.steps
    total = offset + config.steps * len(points)
    steps_run, label = 0, ""
    crf = refiners.get(method, params, num_classes=c, **model_options)
    if piecewise is not None:
        def trained(step: int, _total: int, values: dict[str, float]) -> None:
            if callback is not None:
                callback(step, total, values)

        run = train_piecewise(crf, data, config=piecewise, callback=trained, unary_transform=head0)
        crf.requires_grad_(False)  # the potentials stay as trained; the unary's settings learn through them
        history += [{**row, "roughness_scale": start.roughness_scale} for row in run.history]
        steps_run, label = run.steps, "piecewise potentials, unary "
    for k, factor in enumerate(points):
        scale = start.roughness_scale * factor
        settings = P.with_overrides(start, roughness_scale=scale)  # validates the range
        point = data if factor == 1.0 else data.with_settings(settings)
        model = UnaryCRF(RoughUnary(settings, c, strokes=strokes), copy.deepcopy(crf))
        first = offset + k * config.steps

        def report(step: int, _total: int, values: dict[str, float], first: int = first) -> None:
            if callback is not None:
                callback(first + step, total, values)

        run = fine_tune(model, point, config=config, callback=report, unary_transform=model.unary)
        steps_run += run.steps
        history += [{**row, "step": row["step"] + first, "roughness_scale": scale} for row in run.history]
        log.debug("roughness_scale %.3g: validation mIoU %.2f (step %d)", scale, run.val_miou, run.best_step)
        if run.val_miou > best["miou"]:
            best = {"miou": run.val_miou, "params": run.params, "unary": model.unary.settings(), "run": run,
                    "choice": f"{label}tuned at roughness_scale {scale:.3g} (step {run.best_step})"}
    run = best["run"]
    return TuneResult(method, best["params"], unary0, shipped, best["miou"],
                      run.best_step if run is not None else 0, steps_run,
                      bool(run.stopped_early) if run is not None else False, history,
                      time.perf_counter() - start_time, best["unary"], data.rough.kind, best["choice"])
