"""Piecewise training of the range-box potentials (Lin et al. 2016, arXiv:1504.01013, §5), then a calibration.

Each step samples edges of each potential from the ground truth of random training images, on the grid the model
runs on (images and positions averaged over b×b blocks, each block labelled by its majority class, void blocks
skipped), and takes an Adam step on the sum of the potentials' own likelihoods (:func:`piecewise_nll`, each edge's
softmax over its K² label pairs of :func:`edge_energies`); no inference runs in the loop, and the unary is not
involved. Two choices keep what is learned usable next to a fixed unary:

* each pair likelihood carries label-frequency energies a(l) + b(l') that are learned with it and left out of
  inference, since the unary already says how likely each label is (otherwise the prior would be counted once per
  edge, ~3k² times per pixel);
* the class-pair deviations Δ learn only pairs of classes that occur in the training images and are L2-regularised;
  the shared Potts weights α carry over to every class.

Trained pieces are each normalised over their own K² pairs, so their sum in mean field is not calibrated against the
unary. Lin et al. learn the unary jointly; with a fixed unary we fit one scale per potential instead, by mean field on
random training crops (:func:`calibrate`), and fold the scales into the stored potentials.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..affinity.boxes import range_box
from ..affinity.grid import downsample
from ..features import position_grid
from ..refiners.piecewise import POTENTIALS, PiecewiseCRF
from .data import LearnData
from .finetune import TuneCallback, TuneResult, batch_miou, crf_loss, unary_miou, validate
from .settings import CLASSES, PIECEWISE, SEED, setting

__all__ = ["PiecewiseConfig", "CALIBRATION_SCALES", "GridSample", "grid_sample", "pool_labels", "sample_edges",
           "edge_kernels", "edge_energies", "piecewise_nll", "train_piecewise", "calibrate"]

log = logging.getLogger(__name__)

CALIBRATION_SCALES = tuple(2.0 ** k for k in range(-8, 3))
"""Scales s of the learned energies tried by the calibration, 1/256 … 4."""

_FIRST_BOX = {"surrounding": "surrounding", "above_below": "above"}  # j lies in this box of i


@dataclass(frozen=True)
class PiecewiseConfig:
    """Settings of :func:`train_piecewise`.

    Attributes:
        steps: Adam steps; lr: learning rate.
        edges: candidate edges drawn per potential, image and step (void and off-image ones are dropped).
        images_per_step: training images sampled per step.
        weight_decay: L2 weight on the potentials (keeps the energies of unseen label pairs bounded).
        calibration_crops: training crops of side ``crop`` used to fit the scale; seed: seeds all sampling.
        classes: the mIoU rule of calibration and validation (as :class:`~crfcore.learn.FinetuneConfig`).
    """

    steps: int = setting(PIECEWISE["steps"])
    lr: float = setting(PIECEWISE["lr"])
    edges: int = setting(PIECEWISE["edges"])
    images_per_step: int = setting(PIECEWISE["images_per_step"])
    weight_decay: float = setting(PIECEWISE["weight_decay"])
    calibration_crops: int = setting(PIECEWISE["calibration_crops"])
    crop: int = setting(PIECEWISE["crop"])
    seed: int = setting(SEED)
    classes: str = setting(CLASSES)

    def __post_init__(self) -> None:
        if self.classes not in ("gt", "any"):
            raise ValueError(f"{self.classes!r} is not a valid classes rule. Valid values are 'gt', 'any'.")
        for name in ("steps", "edges", "images_per_step", "calibration_crops", "crop"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be > 0 and weight_decay >= 0, got {self.lr} and {self.weight_decay}.")


@dataclass(frozen=True)
class GridSample:
    """One image on the model's grid: ``position (2, h, w)`` px, ``colour (3, h, w)`` 0..255, ``labels (h, w)``."""

    position: Tensor
    colour: Tensor
    labels: Tensor


def grid_sample(image: Tensor, labels: Tensor, blur: int, num_classes: int, void: int | None) -> GridSample:
    """Block means of position and colour and block majority labels of ``image (3, H, W)``, ``labels (H, W)``.

    The appearance features are linear in position and colour, so dividing these by θ equals pooling the features
    as :meth:`PiecewiseCRF.build` does.
    """
    h, w = labels.shape
    position = downsample(position_grid(1, h, w, dtype=image.dtype), blur)[0]
    colour = downsample(image[None], blur)[0]
    return GridSample(position, colour, pool_labels(labels[None], blur, num_classes, void)[0])


def pool_labels(labels: Tensor, blur: int, num_classes: int, void: int | None) -> Tensor:
    """The majority label of each b×b block, ``(B, H, W)`` → ``(B, ⌈H/b⌉, ⌈W/b⌉)`` int64; blocks with only void
    pixels (or pixels ≥ C) are ``void`` (−1 when ``void`` is None)."""
    valid = (labels >= 0) & (labels < num_classes)
    if void is not None:
        valid &= labels != void
    one_hot = F.one_hot(torch.where(valid, labels, 0), num_classes).permute(0, 3, 1, 2).to(torch.float32)
    counts = downsample(one_hot * valid[:, None], blur)
    pooled = counts.argmax(1)
    return torch.where(counts.sum(1) > 0, pooled, -1 if void is None else void)


def sample_edges(grid: GridSample, offsets: tuple[tuple[int, int], ...], count: int, generator: torch.Generator,
                 void: int | None) -> tuple[Tensor, Tensor]:
    """``count`` candidate edges (i, j = i + d), d uniform in ``offsets``; returns the flat grid indices ``(i, j)``
    of those inside the grid with non-void labels at both ends."""
    h, w = grid.labels.shape
    ys = torch.randint(h, (count,), generator=generator)
    xs = torch.randint(w, (count,), generator=generator)
    d = torch.tensor(offsets)[torch.randint(len(offsets), (count,), generator=generator)]
    yj, xj = ys + d[:, 0], xs + d[:, 1]
    keep = (yj >= 0) & (yj < h) & (xj >= 0) & (xj < w)
    i, j = (ys * w + xs)[keep], (yj * w + xj)[keep]
    flat = grid.labels.reshape(-1)
    valid = (flat[i] >= 0) & (flat[j] >= 0)
    if void is not None:
        valid &= (flat[i] != void) & (flat[j] != void)
    return i[valid], j[valid]


def edge_kernels(model: PiecewiseCRF, grid: GridSample, i: Tensor, j: Tensor) -> Tensor:
    """Hidden units ``(E, 3)`` = (appearance, smoothness, box) of edges (i, j), differentiable in the θ's."""
    pos = grid.position.reshape(2, -1)
    col = grid.colour.reshape(3, -1)
    dp2 = (pos[:, i] - pos[:, j]).square().sum(0)
    dc2 = (col[:, i] - col[:, j]).square().sum(0)
    ta, tb, tg = model.log_theta_alpha.exp(), model.log_theta_beta.exp(), model.log_theta_gamma.exp()
    appearance = torch.exp(-0.5 * (dp2 / ta.square() + dc2 / tb.square()))
    smoothness = torch.exp(-0.5 * dp2 / tg.square())
    return torch.stack([appearance, smoothness, torch.ones_like(appearance)], dim=1)


def edge_energies(kernels: Tensor, potentials: Tensor, weights: Tensor) -> Tensor:
    """Energies of every label pair of E edges, ``E(l, l') = Σ_m w_m h_m U_m(l, l')``.

    Args:
        kernels: ``(E, 3)`` hidden units ``(h_a, h_s, h_b)`` of each edge.
        potentials: ``(3, K, K)`` output layer U.
        weights: ``(3,)``.

    Returns:
        ``(E, K, K)``.
    """
    return torch.einsum("em,mlk->elk", kernels * weights.to(kernels.dtype), potentials.to(kernels.dtype))


def piecewise_nll(energies: Tensor, first: Tensor, second: Tensor) -> Tensor:
    """Mean negative log-likelihood of the true label pairs, each edge's own softmax over its K² pairs.

    Args:
        energies: ``(E, K, K)`` from :func:`edge_energies`.
        first, second: ``(E,)`` int64 true labels of the edge's two nodes (first = i, second = j).

    Returns:
        A 0-d tensor, ``−mean_e log P_e(first_e, second_e)``.
    """
    e, k, _ = energies.shape
    log_p = F.log_softmax(-energies.reshape(e, k * k), dim=1)
    return -log_p.gather(1, (first * k + second)[:, None]).mean()


def _step_losses(model: PiecewiseCRF, grids: list[GridSample], config: PiecewiseConfig, generator: torch.Generator,
                 void: int | None, priors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Each potential's likelihood loss on freshly sampled edges of ``grids``; ``priors[name]`` ``(2, K)`` are the
    label-frequency energies a(l) + b(l') of the pair likelihood, which inference leaves out."""
    surrounding, above_below = model.potentials(model.surrounding.shape[-1])
    weights = {"surrounding": surrounding, "above_below": above_below}
    losses = {}
    for name in POTENTIALS:
        offsets = range_box(_FIRST_BOX[name], model.config.filter_size)
        kernels, first, second = [], [], []
        for grid in grids:
            i, j = sample_edges(grid, offsets, config.edges, generator, void)
            kernels.append(edge_kernels(model, grid, i, j))
            flat = grid.labels.reshape(-1)
            first.append(flat[i])
            second.append(flat[j])
        a, b = priors[name]
        energies = edge_energies(torch.cat(kernels), weights[name], model.weights) + a[:, None] + b[None, :]
        losses[name] = piecewise_nll(energies, torch.cat(first), torch.cat(second))
    return losses


def train_piecewise(model: PiecewiseCRF, data: LearnData, *, config: PiecewiseConfig = PiecewiseConfig(),
                    callback: TuneCallback | None = None,
                    unary_transform: Callable[[Tensor], Tensor] | None = None) -> TuneResult:
    """Train ``model``'s potentials and θ's piecewise on ``data``'s training images, calibrate, validate.

    Args:
        model: ``crfcore.refiners.get("piecewise", num_classes=C)`` (or from a tuned preset, to continue).
        data: training and validation images; the unaries serve the calibration and validation only.
        config: settings.
        callback: ``callback(step, total, {"train_loss", "val_miou"})`` after every step (``val_miou`` NaN until
            the final validation); raise :class:`crfcore.Cancelled` to stop.
        unary_transform: maps a stored ``(B, K, H, W)`` unary to the ``(B, C, H, W)`` probabilities the model
            takes, for calibration and validation (the colour-model unary of :mod:`crfcore.learn.rough`); None: the
            stored unaries are probabilities.

    Returns:
        :class:`TuneResult` with the calibrated parameters; ``model`` holds them.
    """
    if model.surrounding is None:
        raise ValueError("the piecewise model has no trainable potentials; build it with "
                         "crfcore.refiners.get('piecewise', num_classes=C).")
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(config.seed)
    val = data.val()
    c, void, blur = data.num_classes, data.void, model.config.blur
    scored = {"void": void, "classes": config.classes, "transform": unary_transform}
    val_unary = unary_miou(val, c, **scored)
    val_initial = validate(model, val, c, **scored)
    grids = [grid_sample(s.image, s.labels, blur, c, void) for s in data.train()]
    thetas = [model.log_theta_alpha, model.log_theta_beta, model.log_theta_gamma]
    k = model.surrounding.shape[-1]
    shared = torch.zeros(k, requires_grad=True)  # the surrounding potential is symmetric: a = b
    priors = {"surrounding": torch.stack([shared, shared]), "above_below": torch.zeros(2, k, requires_grad=True)}
    free = [shared, priors["above_below"], model.potts]
    seen = torch.zeros(k, dtype=torch.bool)
    for grid in grids:
        seen[grid.labels[(grid.labels >= 0) & (grid.labels < k)].unique()] = True
    evidence = (seen[:, None] & seen[None, :]).to(model.surrounding.dtype)  # Δ learns only pairs that can occur
    optimizer = torch.optim.Adam([{"params": thetas + free, "weight_decay": 0.0},
                                  {"params": [model.surrounding, model.above_below],
                                   "weight_decay": config.weight_decay}], lr=config.lr)
    history = [{"step": 0, "train_loss": math.nan, "val_miou": val_initial}]
    for step in range(1, config.steps + 1):
        picks = torch.randint(len(grids), (config.images_per_step,), generator=generator).tolist()
        priors["surrounding"] = torch.stack([shared, shared])
        losses = _step_losses(model, [grids[p] for p in picks], config, generator, void, priors)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        model.surrounding.grad.mul_(evidence)
        model.above_below.grad.mul_(evidence)
        optimizer.step()
        row = {"step": step, "train_loss": float(loss.detach()), "val_miou": math.nan,
               **{f"loss_{name}": float(v.detach()) for name, v in losses.items()}}
        history.append(row)
        if callback is not None:
            callback(step, config.steps, {"train_loss": row["train_loss"], "val_miou": math.nan})
    scales = calibrate(model, data, config, generator, unary_transform=unary_transform)
    final = validate(model, val, c, **scored)
    history[-1]["val_miou"] = final
    log.info("piecewise: scales %.4g (surrounding), %.4g (above/below), validation mIoU %.2f (untrained %.2f)",
             *scales, final, val_initial)
    if callback is not None:
        callback(config.steps, config.steps, {"train_loss": history[-1]["train_loss"], "val_miou": final})
    return TuneResult(model.method, model.current_params(), val_unary, val_initial, final, config.steps,
                      config.steps, False, history, time.perf_counter() - start)


@torch.no_grad()
def calibrate(model: PiecewiseCRF, data: LearnData, config: PiecewiseConfig, generator: torch.Generator, *,
              unary_transform: Callable[[Tensor], Tensor] | None = None) -> tuple[float, float]:
    """Fit the scales of the learned energies on training crops (see the module docstring); returns
    ``(s_surrounding, s_above_below)``, already folded into the model. ``unary_transform`` as in
    :func:`train_piecewise`.

    Coordinate search: s_surrounding over :data:`CALIBRATION_SCALES` with the above/below potential off, then
    s_above_below over 0 and the same scales. The boxes are built once and reused (only the energies change).
    """
    batch = data.crops(config.calibration_crops, config.crop, generator)
    unary = batch.unary if unary_transform is None else unary_transform(batch.unary)
    op = model.build(batch.image)
    original = [p.detach().clone() for p in (model.potts, model.surrounding, model.above_below)]

    def apply(s_sur: float, s_ab: float) -> None:
        model.potts.copy_(original[0] * torch.tensor([[s_sur], [s_ab]]))
        model.surrounding.copy_(original[1] * s_sur)
        model.above_below.copy_(original[2] * s_ab)

    def score(s_sur: float, s_ab: float) -> tuple[float, float]:
        apply(s_sur, s_ab)
        q = model(batch.image, unary, op=op)
        key = (batch_miou(q, batch.labels, data.num_classes, data.void, config.classes),
               -float(crf_loss(q, batch.labels, void=data.void)))
        log.debug("calibration s=(%.4g, %.4g): mIoU %.2f, loss %.4f", s_sur, s_ab, key[0], -key[1])
        return key

    s_sur = max(CALIBRATION_SCALES, key=lambda s: score(s, 0.0))
    s_ab = max((0.0, *CALIBRATION_SCALES), key=lambda s: score(s_sur, s))
    apply(s_sur, s_ab)
    return s_sur, s_ab
