"""``crfcore tune --data DIR -o P.json``: learn a refiner's parameters on held-out images, write a preset and curves.

Methods with mean-field or G-CRF inference are fine-tuned through inference (ConvCRF §5.2, ``--learn-compat`` "+C",
``--learn-features`` "+T"); ``--method piecewise`` trains range-box potentials piecewise (Lin et al. 2016). The
unaries are the synthetic noise of ``crfcore eval`` (``--protocol noise``) or rough annotations drawn from the ground
truth (``--protocol polygon|strokes``, :mod:`crfcore.learn.rough`): the CRF and refine_mask's unary settings are
learned together; ``--method piecewise`` there trains its potentials piecewise first, then the unary's settings
through inference with them. Each training flag goes to every stage that declares it (piecewise on rough
annotations: ``--steps``, ``--lr`` and ``--crop`` to both the piecewise training and the unary's fine-tuning).

With ``--scale auto`` (the default) every image is resampled to the 500-px reference long side (``--max-side M``:
to M, the learned spatial values then converted to 500 px), so the preset holds reference-size values whatever the
images' sizes (issue 20); ``--scale F`` trains on the images as they are with spatial values multiplied by F.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any

from .. import params as P
from ..labels import VOID
from .common import add_method_args, add_scale_arg, params_from_args

__all__ = ["add_parser", "run"]

_FINETUNE_FLAGS = ("steps", "lr", "batch_size", "crop", "val_every", "patience", "checkpoint_every")
_PIECEWISE_FLAGS = ("steps", "lr", "edges", "weight_decay", "crop")
_TYPES = {"int": int, "float": float}


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..learn.rough import GRID, PROTOCOLS, RoughRecipe
    from ..learn.settings import FINETUNE, PIECEWISE, SEED, VAL_FRAC

    p = sub.add_parser("tune", help="learn CRF parameters on held-out images (decoupled or piecewise training)",
                       description="Split DIR's images into training and validation sets by a seeded hash, train "
                                   "the refiner's parameters on the training crops with fixed synthetic-noise "
                                   "unaries, keep the best on validation, and write a preset, a curves CSV and a "
                                   "PNG plot.")
    p.add_argument("--data", type=Path, required=True, help="folder with images/ and masks/")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="P.json", help="preset to write")
    p.add_argument("--learn-compat", action="store_true", help="learn a C×C compatibility ('+C')")
    p.add_argument("--learn-features", action="store_true", help="learn feature transforms ('+T')")
    for spec in (VAL_FRAC, SEED):
        p.add_argument(f"--{spec.name.replace('_', '-')}", type=_TYPES[spec.kind], default=spec.default,
                       help=spec.help[0].lower() + spec.help[1:].rstrip("."))
    p.add_argument("--num-classes", type=int, help="C (default: largest label + 1)")
    p.add_argument("--void", type=int, default=VOID, help="void label, ignored (CamVid: 11)")
    p.add_argument("--max-side", type=int, help="downscale images so the longer side is at most this (faster); with "
                                                 "--scale auto, resample every image to this long side")
    add_scale_arg(p)
    p.add_argument("--limit", type=int, help="only the first N pairs")
    p.add_argument("--checkpoint", type=Path, help="checkpoint file; an existing one is resumed (--protocol noise)")
    rough = p.add_argument_group("rough annotations (--protocol polygon / strokes; see crfcore eval)")
    rough.add_argument("--protocol", choices=PROTOCOLS, default="noise",
                       help="training unaries: noise (synthetic, default), polygon (ground truth simplified to "
                            "polygons, refine_mask's colour-model unary) or strokes (simulated brush strokes)")
    rough.add_argument("--tolerance", type=float, default=RoughRecipe.tolerance,
                       help=f"polygon: simplification tolerance [px at the training size] (default "
                            f"{RoughRecipe.tolerance:g})")
    rough.add_argument("--background", metavar="CLASS|none", default="0",
                       help="polygon: class of pixels no polygon covers, or 'none' to leave them unknown (CamVid); "
                            "default 0")
    rough.add_argument("--strokes", type=int, default=RoughRecipe.strokes,
                       help=f"strokes: strokes of the simulated annotator per image (default {RoughRecipe.strokes})")
    rough.add_argument("--roughness-scales", metavar="F,F,...", default=",".join(f"{g:g}" for g in GRID),
                       help="polygon: multipliers of the starting roughness_scale tried, the CRF fine-tuned at "
                            "each (default %(default)s)")
    p.add_argument("--curves", type=Path, help="curves CSV (default: the preset's name with .csv)")
    p.add_argument("--plot", type=Path, help="curves PNG (default: the preset's name with .png)")
    group = p.add_argument_group("training settings (defaults: fine-tuning / piecewise training; piecewise on rough "
                                 "annotations: each flag to every stage that declares it)")
    tables = {"finetune": FINETUNE, "piecewise": PIECEWISE}
    for name in dict.fromkeys(_FINETUNE_FLAGS + _PIECEWISE_FLAGS):
        specs = {kind: table[name] for kind, table in tables.items() if name in table}
        spec = next(iter(specs.values()))
        defaults = ", ".join(f"{kind} {s.default}" for kind, s in sorted(specs.items()))
        group.add_argument(f"--{name.replace('_', '-')}", dest=f"cfg_{name}", type=_TYPES[spec.kind],
                           help=f"{spec.help} Default: {defaults}.")
    add_method_args(p)
    p.set_defaults(func=run)


def _progress(label: str) -> Any:
    start = time.perf_counter()

    def show(step: int, total: int, values: dict[str, float]) -> None:
        filled = int(24 * step / max(total, 1))
        parts = [f"loss {values['train_loss']:.4f}"]
        parts += [f"{k.split('_')[0]} {values[k]:.1f}" for k in ("train_miou", "val_miou")
                  if not math.isnan(values.get(k, math.nan))]
        print(f"\r{label} [{'#' * filled}{'.' * (24 - filled)}] {step}/{total} {' '.join(parts)} "
              f"{time.perf_counter() - start:.0f}s ", end="" if step < total else "\n", file=sys.stderr, flush=True)

    return show


def _to_reference(learned: Any, reference: Any, factor: float) -> Any:
    """Learned values at the training size back at the reference size: lengths divided by ``factor``; the window
    (``blur``, ``filter_size``), which is not learned, as the reference params had it (no double rounding)."""
    out = P.scaled(learned, 1.0 / factor, floor=False)
    windows = {s.name: getattr(reference, s.name) for s in P.specs(reference) if s.spatial in ("blur", "window")}
    return dataclasses.replace(out, **windows)


def _background(value: str) -> int | None:
    if value == "none":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"--background must be a class index or 'none', got {value!r}.") from None


def _grid(value: str) -> tuple[float, ...]:
    try:
        grid = tuple(float(v) for v in value.split(","))
    except ValueError:
        grid = ()
    if not grid or not all(0 < g < math.inf for g in grid):
        raise ValueError(f"--roughness-scales must be numbers > 0 separated by commas (e.g. 1,0.5,2), got {value!r}.")
    return grid


def run(args: argparse.Namespace) -> int:
    from .. import refiners
    from ..learn import (FinetuneConfig, LearnData, PiecewiseConfig, fine_tune, plot_png, prefer_unary, save_result,
                         train_piecewise, write_csv)

    method, params = params_from_args(args)
    entry = refiners.method(method)
    piecewise = entry.training == "piecewise"
    if piecewise and (args.learn_compat or args.learn_features):
        raise ValueError(f"--method {method} learns its potentials (its compatibilities) by itself; drop "
                         f"--learn-compat / --learn-features.")
    for flag, wanted, able in (("--learn-compat", args.learn_compat, "learns_compat"),
                               ("--learn-features", args.learn_features, "learns_features")):
        if wanted and not getattr(entry, able):
            others = [m.name for m in refiners.REGISTRY.values() if getattr(m, able)]
            raise ValueError(f"{flag} is not for {method!r}, which cannot learn it; use --method "
                             f"{' or '.join(others)}.")
    if piecewise and args.checkpoint is not None:
        raise ValueError("--checkpoint applies to fine-tuning; piecewise training runs without inference and "
                         "takes seconds, so it has no checkpoints.")
    if args.protocol != "noise":
        return _run_rough(args, method)
    reference = params
    factor, sides = _sides(args)
    params = P.scaled(params, factor, floor=False)  # exact, so that the learned values convert back exactly
    data = LearnData(args.data, num_classes=args.num_classes, val_frac=args.val_frac, seed=args.seed,
                     void=args.void, limit=args.limit, **sides)
    names = _PIECEWISE_FLAGS if piecewise else _FINETUNE_FLAGS
    given = {n: getattr(args, f"cfg_{n}") for n in names if getattr(args, f"cfg_{n}") is not None}
    foreign = [n for n in set(_FINETUNE_FLAGS + _PIECEWISE_FLAGS) - set(names) if getattr(args, f"cfg_{n}") is not None]
    if foreign:
        raise ValueError(f"--{foreign[0].replace('_', '-')} does not apply to method {method!r}; its settings are "
                         f"{', '.join('--' + n.replace('_', '-') for n in names)}.")
    print(f"tune {method}: {len(data.train_stems)} training, {len(data.val_stems)} validation images, "
          f"{data.num_classes} classes ({args.data})", file=sys.stderr)
    if piecewise:
        model = refiners.get(method, params, num_classes=data.num_classes)
        result = train_piecewise(model, data, config=PiecewiseConfig(seed=args.seed, **given),
                                 callback=_progress(f"tune {method}"))
    else:
        extra = {"learn_compat": args.learn_compat, "learn_features": args.learn_features}
        model = refiners.get(method, params, num_classes=data.num_classes, **{k: v for k, v in extra.items() if v})
        result = fine_tune(model, data, config=FinetuneConfig(seed=args.seed, **given), checkpoint=args.checkpoint,
                          callback=_progress(f"tune {method}"))
    result = prefer_unary(result)  # never a refiner that makes the unary worse on validation
    result = dataclasses.replace(result, params=_to_reference(result.params, reference, factor))
    save_result(result, args.output)
    curves = args.curves or args.output.with_suffix(".csv")
    plot = args.plot or args.output.with_suffix(".png")
    write_csv(result.history, curves)
    plot_png(result.history, plot, title=f"{method} on {args.data.name}: validation mIoU {result.val_miou:.1f}")
    which = result.choice or (f"step {result.best_step} of {result.steps}"
                              f"{', stopped early' if result.stopped_early else ''}")
    print(f"validation mIoU   unary {result.val_unary_miou:.2f}   before {result.val_initial_miou:.2f}   "
          f"tuned {result.val_miou:.2f} ({which}, {result.wall_s:.0f} s)")
    print(f"wrote {args.output}, {curves}, {plot}")
    return 0


def _sides(args: argparse.Namespace) -> tuple[float, dict[str, int | None]]:
    """The factor from reference values to the training size, and LearnData's size keywords."""
    if args.scale == "auto":  # train at one long side; the factor takes reference values to it and back
        side = args.max_side or P.REFERENCE_SIZE
        return side / P.REFERENCE_SIZE, {"long_side": side}
    return float(args.scale), {"max_side": args.max_side}


def _run_rough(args: argparse.Namespace, method: str) -> int:
    """``--protocol polygon|strokes``: the CRF and the unary's settings on rough annotations (crfcore.learn.rough)."""
    from .. import refiners
    from ..learn import (FinetuneConfig, PiecewiseConfig, RoughData, RoughRecipe, plot_png, save_result, tune_rough,
                         write_csv)
    from ..mask_refine import resolve_settings

    if args.checkpoint is not None:
        raise ValueError("--checkpoint applies to --protocol noise; a rough-annotation run trains several short "
                         "fine-tunings (one per roughness scale) and has no checkpoint.")
    recipe = RoughRecipe(args.protocol, tolerance=args.tolerance, background=_background(args.background),
                         strokes=args.strokes)
    overrides = {k.removeprefix("param_"): v for k, v in vars(args).items() if k.startswith("param_") and v is not None}
    reference, settings = resolve_settings(method, args.preset, recipe.kind, **overrides)
    factor, sides = _sides(args)
    params = P.scaled(reference, factor, floor=False)
    given = {n: getattr(args, f"cfg_{n}") for n in _FINETUNE_FLAGS if getattr(args, f"cfg_{n}") is not None}
    piecewise = None
    if refiners.method(method).training == "piecewise":  # potentials piecewise, then the unary's settings
        piecewise = PiecewiseConfig(seed=args.seed, **{n: getattr(args, f"cfg_{n}") for n in _PIECEWISE_FLAGS
                                                       if getattr(args, f"cfg_{n}") is not None})
    else:
        foreign = [n for n in _PIECEWISE_FLAGS if n not in _FINETUNE_FLAGS and getattr(args, f"cfg_{n}") is not None]
        if foreign:
            raise ValueError(f"--{foreign[0].replace('_', '-')} is a piecewise-training setting; fine-tuning "
                             f"{method} on rough annotations takes "
                             f"{', '.join('--' + n.replace('_', '-') for n in _FINETUNE_FLAGS)}.")
    data = RoughData(args.data, recipe, settings, num_classes=args.num_classes, val_frac=args.val_frac,
                     seed=args.seed, void=args.void, limit=args.limit, **sides)
    start = args.preset or f"shipped {recipe.kind}"
    print(f"tune {method} on {args.protocol} annotations: {len(data.train_stems)} training, {len(data.val_stems)} "
          f"validation images, {data.num_classes} classes ({args.data}); starting from the {start} preset",
          file=sys.stderr)
    extra = {k: True for k in ("learn_compat", "learn_features") if getattr(args, k)}
    result = tune_rough(method, params, data, config=FinetuneConfig(seed=args.seed, **given),
                        grid=_grid(args.roughness_scales), callback=_progress(f"tune {method}"), piecewise=piecewise,
                        **extra)
    result = dataclasses.replace(result, params=_to_reference(result.params, reference, factor))
    save_result(result, args.output)
    curves = args.curves or args.output.with_suffix(".csv")
    plot = args.plot or args.output.with_suffix(".png")
    write_csv(result.history, curves)
    plot_png(result.history, plot, title=f"{method} on {args.data.name} ({args.protocol}): validation mIoU "
                                         f"{result.val_miou:.1f}")
    u = result.unary
    print(f"validation mIoU   unary {result.val_unary_miou:.2f}   {'preset' if args.preset else 'shipped'} "
          f"{result.val_initial_miou:.2f}   tuned {result.val_miou:.2f} ({result.choice}; {result.wall_s:.0f} s)")
    print(f"unary settings: confidence {u.confidence:g}, colour_weight {u.colour_weight:g}, prior_width "
          f"{u.prior_width:g}, roughness_scale {u.roughness_scale:g}")
    print(f"wrote {args.output}, {curves}, {plot}")
    return 0
