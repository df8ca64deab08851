"""Segmentation backbones: ms per image for each architecture (median of runs), against its bare forward pass.

Each architecture runs in a fresh process (so its peak memory is its own) with weights filled deterministically:
the oracle's rule from ``../shared/oracles/backbones/fill.py`` when that folder exists, else :func:`fill_weights`.
The peer, measured in the same process on the same image, is the bare ``model(x)`` on a pre-normalised tensor;
``predict_probs`` adds ImageNet normalisation, the output handling and the softmax, so the ratio is its overhead.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
from collections.abc import Callable
from pathlib import Path

import torch

from ._util import in_subprocess, median_ms, sample_case

__all__ = ["add_arguments", "run", "fill_weights"]

_ORACLE_FILL = Path(__file__).resolve().parents[2].parent / "shared/oracles/backbones/fill.py"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..backbones import names

    p.add_argument("--size", default="500x375", help="W×H of the test image (default 500x375)")
    p.add_argument("--archs", default=",".join(names()), help="comma-separated architectures (default: all)")
    p.add_argument("--classes", type=int, default=21)
    p.add_argument("--repeat", type=int, default=3, help="timed runs per measurement; the median is shown")
    p.add_argument("--device", default="cpu")


def fill_weights(state_dict: dict[str, torch.Tensor], *, seed: int = 0) -> None:
    """Fill a segmentation state_dict in place with seeded values that keep activations in a sane range.

    Conv weights uniform in ±sqrt(5/fan_in); BatchNorm weight 1 ± 0.1, bias and running mean ±0.1, running variance
    1..1.5; conv biases ±0.1; ``num_batches_tracked`` 0. Used when the oracle's fill rule is not available.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in state_dict.items():
            leaf = key.rsplit(".", 1)[-1]
            if leaf == "num_batches_tracked":
                t.zero_()
                continue
            u = torch.rand(t.shape, generator=gen, dtype=torch.float32) * 2 - 1
            if t.ndim >= 2:
                t.copy_(u * math.sqrt(5.0 / (t.numel() // t.shape[0])))
            elif leaf == "running_var":
                t.copy_(1.25 + 0.25 * u)
            elif leaf == "weight":
                t.copy_(1.0 + 0.1 * u)
            else:
                t.copy_(0.1 * u)


def _filler() -> tuple[str, Callable[[dict[str, torch.Tensor]], None]]:
    if _ORACLE_FILL.is_file():
        spec = importlib.util.spec_from_file_location("_oracle_fill", _ORACLE_FILL)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return "../shared/oracles/backbones/fill.py", module.fill_
    return "crfcore.benchmarks.backbone.fill_weights", fill_weights


def _measure(name: str, w: int, h: int, classes: int, repeat: int, device: str) -> dict:
    from ..backbones import get, normalize, predict_probs

    torch.set_grad_enabled(False)
    image, _ = sample_case(h, w, classes)
    with torch.device("meta"):
        model = get(name, num_classes=classes)
    model = model.to_empty(device=device).eval()
    _filler()[1](model.state_dict())
    x = normalize(image).to(device)
    forward = median_ms(lambda: model(x), repeat=repeat, device=device)
    probs = predict_probs(model, image, mode="full")
    full = median_ms(lambda: predict_probs(model, image, mode="full"), repeat=repeat, device=device)
    return {"params": sum(p.numel() for p in model.parameters()), "forward_ms": forward, "predict_ms": full,
            "sum_error": float(abs(probs.sum(0) - 1).max())}


def run(args: argparse.Namespace) -> int:
    from ..backbones import names

    w, h = (int(v) for v in args.size.lower().split("x"))
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    unknown = sorted(set(archs) - set(names()))
    if unknown:
        raise ValueError(f"--archs has unknown names {unknown}; valid names are {', '.join(names())}.")
    print(f"Backbone bench: {w}×{h} image, {args.classes} classes, device {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.repeat} after 1 warm-up; weights: {_filler()[0]}")
    print(f"{'architecture':<30} {'params M':>8} | {'forward ms':>10} | {'predict_probs ms':>16} {'overhead':>8} "
          f"{'peak MiB':>8}")
    for name in archs:
        r, mem = in_subprocess(_measure, name, w, h, args.classes, args.repeat, args.device)
        overhead = r["predict_ms"] / r["forward_ms"] - 1
        print(f"{name:<30} {r['params'] / 1e6:>8.1f} | {r['forward_ms']:>10.0f} | {r['predict_ms']:>16.0f} "
              f"{overhead:>+8.0%} {mem:>8.0f}", flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
