"""Argument helpers shared by subcommands: refiner parameter flags generated from ``crfcore.params``."""

from __future__ import annotations

import argparse
from typing import Any

from .. import params as P
from ..errors import InputError

__all__ = ["add_method_args", "add_scale_arg", "parse_scale", "params_from_args"]


def add_method_args(parser: argparse.ArgumentParser, *, default: str = "convcrf") -> None:
    """``--method``, ``--preset`` and one ``--NAME`` flag per parameter of any refiner (from params.py)."""
    parser.add_argument("--method", default=default, choices=list(P.PARAMS_BY_METHOD), help="refiner")
    parser.add_argument("--preset", metavar="P.json", help="preset file (from `crfcore tune` or the app)")
    group = parser.add_argument_group("refiner parameters (override the preset; see params.py)")
    seen: set[str] = set()
    for cls in P.PARAMS_BY_METHOD.values():
        for spec in P.specs(cls):
            if spec.name in seen or spec.name == "compat" or spec.matrices:  # matrices come from presets
                continue
            seen.add(spec.name)
            kind = {"int": int, "float": float}.get(spec.kind, str)
            unit = f" [{spec.unit}]" if spec.unit else ""
            group.add_argument(f"--{spec.name.replace('_', '-')}", dest=f"param_{spec.name}", type=kind,
                               metavar=spec.name.upper(), help=f"{spec.help}{unit} (default {spec.default})")


def parse_scale(text: str) -> str | float:
    """``--scale`` value: ``"auto"`` or a number > 0 (argparse type; errors name the flag)."""
    if text == "auto":
        return text
    try:
        return P.scale_factor(1, 1, float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--scale must be 'auto' or a number > 0 (1.0 keeps pixel values as "
                                         f"given), got {text!r}") from None


def add_scale_arg(parser: argparse.ArgumentParser) -> None:
    """``--scale auto|F``: how spatial parameters (θα, θγ, windows, a mask's band) follow the image size."""
    parser.add_argument("--scale", type=parse_scale, default="auto", metavar="auto|F",
                        help=f"auto (default): spatial parameters and --band are given at a "
                             f"{P.REFERENCE_SIZE}-px long side and scaled to each image (long side / "
                             f"{P.REFERENCE_SIZE}); a number multiplies them by it, 1.0 keeps pixels as given")


def params_from_args(args: argparse.Namespace) -> tuple[str, Any]:
    """``(method, params)`` from ``--method``, ``--preset`` and the parameter flags; flags override the preset."""
    from ..api import resolve_params

    overrides = {k.removeprefix("param_"): v for k, v in vars(args).items()
                 if k.startswith("param_") and v is not None}
    valid = {s.name for s in P.specs(P.params_for(args.method))}
    foreign = sorted(set(overrides) - valid)
    if foreign:
        raise InputError(f"--{foreign[0].replace('_', '-')} is not a parameter of {args.method}; its parameters "
                         f"are {', '.join(sorted(valid))}.")
    return args.method, resolve_params(args.method, args.preset, **overrides)


def unary_options(args: argparse.Namespace) -> dict[str, float]:
    """How a mask becomes a unary (``crfcore.unary.from_labels`` keyword arguments): the preset's ``"unary"``
    settings, overridden by ``--confidence`` and ``--band`` where given."""
    import crfcore.presets

    options = dict(crfcore.presets.read(args.preset).unary) if args.preset else {}
    options.update({k: v for k, v in (("confidence", args.confidence), ("band", args.band)) if v is not None})
    return options
