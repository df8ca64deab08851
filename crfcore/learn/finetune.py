"""Decoupled fine-tuning of CRF parameters on held-out data (Teichmann & Cipolla 2018, "Convolutional CRFs for
Semantic Segmentation", arXiv:1805.04777, §5.2).

The unary is fixed (a network's output, or the synthetic noise of ``crfcore eval``); the CRF's parameters — kernel
weights w, ranges θ, with ``learn_compat`` a C×C compatibility μ ("+C"), with ``learn_features`` linear feature
transforms ("+T") — are trained by backpropagation through mean field (or the G-CRF's implicit gradient) on random
crops of the training images, with Adam and the loss

    L = −(1/|V|) Σ_{i ∈ V} log Q_i(y_i),     V = the pixels whose ground truth is not void,

and early stopping on the mIoU of the validation images at full size. By default that mIoU averages over the classes
present in each set's ground truth (``classes="gt"``): on a small held-out set most classes never occur, and the
PASCAL rule (``"any"``) then scores a few stray pixels of an absent class as a whole class at IoU 0, which rewards
over-smoothing rather than accuracy. Checkpoints hold the model, the optimizer,
the step, the crop sampler's random state and the early-stopping record, so a resumed run ends exactly where an
uninterrupted one would.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import metrics
from .. import params as P
from ..inference import Cancelled
from ..labels import VOID
from .data import LearnData, Sample
from .settings import CLASSES, FINETUNE, SEED, setting

__all__ = ["FinetuneConfig", "TuneResult", "TuneCallback", "crf_loss", "validate", "unary_miou", "batch_miou",
           "fine_tune", "zero_pairwise", "prefer_unary", "save_result"]

log = logging.getLogger(__name__)

TuneCallback = Callable[[int, int, dict[str, float]], None]
"""``callback(step, total, {"train_loss", "train_miou", "val_miou"})`` after every step (mIoU in %, ``val_miou`` the
latest validation, NaN where there is none); raise :class:`crfcore.Cancelled` to stop."""


@dataclass(frozen=True)
class FinetuneConfig:
    """Optimisation settings of :func:`finetune` (not CRF parameters: those live in ``crfcore.params``).

    Attributes:
        steps: at most this many Adam steps.
        lr: Adam learning rate (θ's are log-parametrised, so it is a relative step for them).
        batch_size: crops per step; crop: their side in pixels (smaller images are cropped to their own size).
        val_every: validate every this many steps (and after the last).
        patience: stop after this many validations without a better validation mIoU.
        checkpoint_every: write the checkpoint every this many steps (when a checkpoint path is given).
        seed: seeds the crop sampler.
        classes: the mIoU rule of validation and early stopping, ``"gt"`` or ``"any"`` (see
            :func:`crfcore.metrics.miou` and the module docstring).
    """

    steps: int = setting(FINETUNE["steps"])
    lr: float = setting(FINETUNE["lr"])
    batch_size: int = setting(FINETUNE["batch_size"])
    crop: int = setting(FINETUNE["crop"])
    val_every: int = setting(FINETUNE["val_every"])
    patience: int = setting(FINETUNE["patience"])
    checkpoint_every: int = setting(FINETUNE["checkpoint_every"])
    seed: int = setting(SEED)
    classes: str = setting(CLASSES)

    def __post_init__(self) -> None:
        if self.classes not in ("gt", "any"):
            raise ValueError(f"{self.classes!r} is not a valid classes rule. Valid values are 'gt', 'any'.")
        for name in ("steps", "batch_size", "crop", "val_every", "patience", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}.")


@dataclass
class TuneResult:
    """What a tuning run produced.

    Attributes:
        method: the refiner's registry name; params: its params dataclass with the learned values (best on
            validation), ready for :func:`save_result`.
        val_unary_miou, val_initial_miou, val_miou: validation mIoU (%) of the unary's argmax, of the model
            before training, and of the returned parameters.
        best_step: the step of the returned parameters (0 = the initial ones); steps: steps run.
        stopped_early: early stopping ended the run.
        history: one row per step, ``{"step", "train_loss", "train_miou"?, "val_miou"}`` (NaN where not measured).
        wall_s: wall-clock seconds of the run (this process's part of it when resumed).
        unary: the unary settings tuned with the parameters (:func:`crfcore.learn.rough.tune_rough`), written into
            the preset's ``"unary"`` entry for :func:`crfcore.refine_mask`; None when the unary was fixed.
        kind: the preset kind the unary is of (``"rough_annotation"``, ``"scribbles"``), or None.
        choice: which candidate was kept on validation, in words (rough protocols); empty otherwise.
    """

    method: str
    params: Any
    val_unary_miou: float
    val_initial_miou: float
    val_miou: float
    best_step: int
    steps: int
    stopped_early: bool
    history: list[dict[str, float]] = field(default_factory=list)
    wall_s: float = 0.0
    unary: P.UnaryParams | None = None
    kind: str | None = None
    choice: str = ""


def crf_loss(q: Tensor, labels: Tensor, *, void: int | None = VOID) -> Tensor:
    """Cross-entropy of marginals ``q`` ``(B, C, H, W)`` against ``labels`` ``(B, H, W)``, void pixels ignored.

    Returns a 0-d tensor; 0 (with a zero gradient) when every pixel is void.
    """
    log_q = torch.log(q.clamp_min(1e-12))
    keep = torch.ones_like(labels, dtype=torch.bool) if void is None else labels != void
    if not bool(keep.any()):
        return (log_q * 0).sum()
    return F.nll_loss(log_q, torch.where(keep, labels, 0), reduction="none")[keep].mean()


def _score(preds: list[Tensor], samples: list[Sample], num_classes: int, void: int | None, classes: str) -> float:
    conf = np.zeros((num_classes, num_classes), np.int64)
    for pred, sample in zip(preds, samples):
        conf += metrics.confusion(pred, sample.labels, num_classes, void)
    return 100.0 * metrics.miou(conf, classes=classes)


@torch.no_grad()
def validate(model: nn.Module, samples: list[Sample], num_classes: int, *, void: int | None = VOID,
             classes: str = "gt", transform: Callable[[Tensor], Tensor] | None = None) -> float:
    """mIoU (%) of ``model``'s labels over ``samples`` at full size (confusion summed over the images; ``classes``
    as in :func:`crfcore.metrics.miou`); ``transform`` maps a stored ``(1, K, H, W)`` unary to the ``(1, C, H, W)``
    probabilities ``model`` takes (as in :func:`unary_miou`), None: as stored."""
    device = next(model.parameters()).device
    preds = []
    for s in samples:
        unary = s.unary[None].to(device)
        unary = unary if transform is None else transform(unary)
        preds.append(model(s.image[None].to(device), unary).max(1).indices[0].cpu())
    return _score(preds, samples, num_classes, void, classes)


@torch.no_grad()
def unary_miou(samples: list[Sample], num_classes: int, *, void: int | None = VOID, classes: str = "gt",
               transform: Callable[[Tensor], Tensor] | None = None) -> float:
    """mIoU (%) of the unaries' argmax over ``samples``; ``transform`` maps a stored ``(1, K, H, W)`` unary to
    ``(1, C, H, W)`` probabilities first (the learnable unary of :mod:`crfcore.learn.rough`), None: as stored."""
    preds = [(s.unary if transform is None else transform(s.unary[None])[0]).argmax(0) for s in samples]
    return _score(preds, samples, num_classes, void, classes)


def batch_miou(q: Tensor, labels: Tensor, num_classes: int, void: int | None, classes: str = "gt") -> float:
    """mIoU (%) of the argmax of ``q`` ``(B, C, H, W)`` against ``labels`` ``(B, H, W)``, void ignored."""
    conf = metrics.confusion(q.detach().max(1).indices, labels, num_classes, void)
    return 100.0 * metrics.miou(conf, classes=classes)


def fine_tune(model: nn.Module, data: LearnData, *, config: FinetuneConfig = FinetuneConfig(),
             checkpoint: str | os.PathLike | None = None, callback: TuneCallback | None = None,
             unary_transform: Callable[[Tensor], Tensor] | None = None) -> TuneResult:
    """Train ``model``'s learnable parameters on ``data``'s training crops; early stopping on its validation images.

    Args:
        model: a refiner from ``crfcore.refiners.get(method, ...)`` (``forward(image, probs)`` returning Q and a
            ``current_params()``); only parameters with ``requires_grad`` are trained.
        data: the training and validation images with their fixed unaries.
        config: optimisation settings.
        checkpoint: a file written every ``config.checkpoint_every`` steps and when the callback cancels; if it
            exists when called, the run resumes from it (same model structure and config required).
        callback: progress, see :data:`TuneCallback`; raising :class:`crfcore.Cancelled` stops the run after
            writing the checkpoint, and the exception propagates.
        unary_transform: how the unary mIoU reads the samples' stored unaries (see :func:`unary_miou`).

    Returns:
        :class:`TuneResult`; ``model`` is left holding the best parameters on validation.

    Raises:
        ValueError: no trainable parameter, or a checkpoint from another model or config.
        crfcore.Cancelled: from the callback.
    """
    start = time.perf_counter()
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(f"{type(model).__name__} has no trainable parameter; build it with "
                         f"crfcore.refiners.get(method, ...) and keep requires_grad on what should learn.")
    optimizer = torch.optim.Adam(trainable, lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    path = Path(checkpoint) if checkpoint is not None else None
    val = data.val()
    c, void = data.num_classes, data.void
    if path is not None and path.exists():
        state = _load_checkpoint(path, model, optimizer, generator, config)
        log.info("resumed %s from step %d", path, state["step"])
    else:
        initial = validate(model, val, c, void=void, classes=config.classes)
        state = {"step": 0, "history": [{"step": 0, "train_loss": math.nan, "train_miou": math.nan,
                                         "val_miou": initial}],
                 "best_miou": initial, "best_step": 0, "best_state": copy.deepcopy(model.state_dict()), "bad": 0,
                 "stopped": False, "val_unary": unary_miou(val, c, void=void, classes=config.classes, transform=unary_transform),
                 "val_initial": initial}
    while state["step"] < config.steps and not state["stopped"]:
        row = _train_step(model, optimizer, data, config, generator, state["step"] + 1)
        state["step"] = step = row["step"]
        if step % config.val_every == 0 or step == config.steps:
            row["val_miou"] = validate(model, val, c, void=void, classes=config.classes)
            _early_stopping(state, model, row["val_miou"], step, config.patience)
        state["history"].append(row)
        if path is not None and (step % config.checkpoint_every == 0 or step == config.steps or state["stopped"]):
            _save_checkpoint(path, model, optimizer, generator, config, state)
        if callback is not None:
            latest = next(r["val_miou"] for r in reversed(state["history"]) if not math.isnan(r["val_miou"]))
            try:
                callback(step, config.steps, {"train_loss": row["train_loss"], "train_miou": row["train_miou"],
                                              "val_miou": latest})
            except Cancelled:
                if path is not None:
                    _save_checkpoint(path, model, optimizer, generator, config, state)
                raise
    model.load_state_dict(state["best_state"])
    return TuneResult(model.method, model.current_params(), state["val_unary"], state["val_initial"],
                      state["best_miou"], state["best_step"], state["step"], state["stopped"], state["history"],
                      time.perf_counter() - start)


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, data: LearnData, config: FinetuneConfig,
                generator: torch.Generator, step: int) -> dict[str, float]:
    """One Adam step on a fresh batch of crops; returns the history row (no validation yet)."""
    device = next(model.parameters()).device
    batch = data.crops(config.batch_size, config.crop, generator)
    labels = batch.labels.to(device)
    model.train()
    q = model(batch.image.to(device), batch.unary.to(device))
    loss = crf_loss(q, labels, void=data.void)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    model.eval()
    return {"step": step, "train_loss": float(loss.detach()),
            "train_miou": batch_miou(q, labels, data.num_classes, data.void, config.classes), "val_miou": math.nan}


def _early_stopping(state: dict[str, Any], model: nn.Module, miou: float, step: int, patience: int) -> None:
    """Keep the best parameters; count validations without improvement and stop after ``patience`` of them."""
    if miou > state["best_miou"]:
        state.update(best_miou=miou, best_step=step, best_state=copy.deepcopy(model.state_dict()), bad=0)
        return
    state["bad"] += 1
    if state["bad"] >= patience:
        state["stopped"] = True
        log.info("early stopping at step %d: no better validation mIoU than %.2f (step %d) in %d validations",
                 step, state["best_miou"], state["best_step"], patience)


def _comparable(config: FinetuneConfig) -> dict[str, Any]:
    """The config fields a resumed run must share (more steps or other checkpoint spacing are fine)."""
    values = dataclasses.asdict(config)
    values.pop("steps")
    values.pop("checkpoint_every")
    return values


def _save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator,
                     config: FinetuneConfig, state: dict[str, Any]) -> None:
    """Write the checkpoint atomically (``crfcore.io.atomic_write``)."""
    from ..io import atomic_write

    payload = {"format": "crfcore-finetune-1", "method": model.method, "config": _comparable(config),
               "model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": generator.get_state(),
               **state}
    with atomic_write(path) as tmp, open(tmp, "wb") as handle:
        torch.save(payload, handle)


def _load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator,
                     config: FinetuneConfig) -> dict[str, Any]:
    """Restore model, optimizer and sampler from ``path``; returns the training state."""
    try:
        payload = torch.load(path, map_location=next(model.parameters()).device, weights_only=True)
    except Exception as exc:
        raise ValueError(f"checkpoint {path} cannot be read ({exc}); delete it to start afresh.") from None
    if not isinstance(payload, dict) or payload.get("format") != "crfcore-finetune-1":
        raise ValueError(f"{path} is not a crfcore fine-tuning checkpoint; delete it or pass another path.")
    if payload["method"] != model.method or payload["config"] != _comparable(config):
        raise ValueError(f"checkpoint {path} is from method {payload['method']!r} with settings {payload['config']}, "
                         f"not {model.method!r} with {_comparable(config)}; resume with the same settings or delete "
                         f"it.")
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise ValueError(f"checkpoint {path} holds other parameters than this model ({exc}); build the model with "
                         f"the same learn_compat / learn_features / num_classes, or delete the checkpoint.") from None
    optimizer.load_state_dict(payload["optimizer"])
    generator.set_state(payload["rng"])
    keys = ("step", "history", "best_miou", "best_step", "best_state", "bad", "stopped", "val_unary", "val_initial")
    return {k: payload[k] for k in keys}


def zero_pairwise(params: Any) -> Any | None:
    """``params`` with every pairwise weight (``w_*``) at 0 and every learned matrix (``potentials``,
    ``feature_transforms``) at its default, or None when the refiner has no weight. Mean field (and the G-CRF) then
    return the unary itself, so the refiner's labels are the unary's argmax. The matrices are reset because the
    piecewise refiner's box-kernel energies carry no weight to zero."""
    fields = P.specs(params)
    names = [s.name for s in fields if s.name.startswith("w_")]
    if not names:
        return None
    return P.with_overrides(params, **{n: 0.0 for n in names}, **{s.name: s.default for s in fields if s.matrices})


def prefer_unary(result: TuneResult) -> TuneResult:
    """``result``, or, when the unary alone scored higher on validation than the returned parameters, those
    parameters with every pairwise weight at 0 (:func:`zero_pairwise`: the refiner then returns the unary's argmax,
    so ``val_miou`` becomes ``val_unary_miou``): tuning never hands back a refiner that makes the unary worse."""
    zero = zero_pairwise(result.params)
    if zero is None or not result.val_unary_miou > result.val_miou:
        return result
    return dataclasses.replace(result, params=zero, val_miou=result.val_unary_miou,
                               choice="the unary alone (no pairwise term): no tuned refiner beat it on validation")


def save_result(result: TuneResult, path: str | os.PathLike) -> None:
    """Write the learned parameters as a preset (``crfcore.params.save_preset``); learned compatibility, feature
    transforms and piecewise potentials are matrices inside it, so the preset alone reproduces the tuned refiner
    through ``crfcore.refine(..., params=path)``. Tuned unary settings (``result.unary``) go into its ``"unary"``
    entry and ``result.kind`` into ``"kind"``, so ``crfcore.refine_mask(..., params=path)`` uses them."""
    import json

    from ..io import atomic_write

    unary = None if result.unary is None else dataclasses.asdict(result.unary)
    P.save_preset(path, result.method, result.params, unary=unary)
    if result.kind is not None:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        data["kind"] = result.kind
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
