"""ConvCRF speed and memory against a naive implementation of the paper's method, in one run.

The peer ("naive") is the method as the ConvCRF paper describes it: unfold each k×k neighbourhood of the features into
a ``(B, k², H, W)`` Gaussian tensor once, then per iteration unfold Q into ``(B, C, k², H, W)``, multiply and sum.
Both run the same model on the same input; the table gives ms, peak memory, the speed ratio, the max |ΔQ| between
the two, and ours against the bandwidth bound (DESIGN.md §7): time ÷ (bytes one iteration must move ÷ bandwidth).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from ..affinity.grid import downsample, upsample
from ..inference import mean_field, unary_energy
from ..refiners import ConvCRF
from ._util import bandwidth_gbs, in_subprocess, sample_case, sync

__all__ = ["add_arguments", "run", "naive_convcrf"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", default="500x375", help="W×H of the test image (default 500x375)")
    p.add_argument("--classes", type=int, default=21)
    p.add_argument("--filter-sizes", default="5,7,11")
    p.add_argument("--blurs", default="1,2")
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-peer", action="store_true", help="skip the naive peer (e.g. for 4096×4096)")
    p.add_argument("--threads", type=int, help="torch threads for both (default: torch's choice)")


class _NaiveOp:
    """The paper's unfold formulation, with the same blur, window, zero padding and no self term."""

    def __init__(self, features: list, weights: torch.Tensor, k: int, blur: int, size: tuple[int, int]) -> None:
        self.k, self.blur, self.size = k, blur, size
        gauss = 0
        for w, f in zip(weights, features):
            f = downsample(f, blur)
            b, d, h, wd = f.shape
            cols = F.unfold(f, k, padding=k // 2).view(b, d, k * k, h, wd)
            valid = F.unfold(torch.ones(1, 1, h, wd, dtype=f.dtype, device=f.device), k, padding=k // 2)
            g = torch.exp(-0.5 * (cols - f.unsqueeze(2)).square().sum(1)) * valid.view(1, k * k, h, wd)
            gauss = gauss + w * g
        gauss[:, (k * k) // 2] = 0
        self.gauss = gauss

    def weighted(self, weights: torch.Tensor) -> "_NaiveOp":
        return self

    def apply(self, q: torch.Tensor) -> torch.Tensor:
        small = downsample(q, self.blur)
        b, c, h, w = small.shape
        cols = F.unfold(small, self.k, padding=self.k // 2).view(b, c, self.k * self.k, h, w)
        return upsample((cols * self.gauss.unsqueeze(1)).sum(2), self.size)


def naive_convcrf(model: ConvCRF, image: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Mean field with the naive operator; same model and parameters as ``model``."""
    cfg = model.config
    op = _NaiveOp(model.kernels.features(image), model.kernels.weights(), cfg.filter_size, cfg.blur,
                  tuple(image.shape[-2:]))
    return mean_field(unary_energy(probs), op, iterations=cfg.iterations, compat=model.compat)


def _measure(impl: str, w: int, h: int, classes: int, k: int, blur: int, iterations: int,
             device: str, threads: int | None) -> dict:
    torch.set_grad_enabled(False)
    if threads:
        torch.set_num_threads(threads)
    image, unary = sample_case(h, w, classes)
    img = torch.from_numpy(image).permute(2, 0, 1)[None].float().to(device)
    probs = torch.from_numpy(unary)[None].to(device)
    model = ConvCRF(ConvCRF.params_cls(filter_size=k, blur=blur, iterations=iterations)).to(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    t0 = time.perf_counter()
    if impl == "ours":
        op = model.build(img)
        sync(device)
        t1 = time.perf_counter()
        q = model(img, probs, op=op)
    else:
        op = _NaiveOp(model.kernels.features(img), model.kernels.weights(), k, blur, (h, w))
        sync(device)
        t1 = time.perf_counter()
        q = mean_field(unary_energy(probs), op, iterations=iterations)
    sync(device)
    t2 = time.perf_counter()
    cuda_peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    return {"build_ms": (t1 - t0) * 1e3, "iter_ms": (t2 - t1) * 1e3, "q": q[:, :, ::4, ::4].cpu().numpy(),
            "cuda_peak_mb": cuda_peak}


def run(args: argparse.Namespace) -> int:
    w, h = (int(v) for v in args.size.lower().split("x"))
    ks = [int(v) for v in args.filter_sizes.split(",")]
    blurs = [int(v) for v in args.blurs.split(",")]
    n_q = args.classes * w * h
    bw = bandwidth_gbs(n_q, device=args.device)
    print(f"ConvCRF bench: {w}×{h}, {args.classes} classes, {args.iterations} iterations, device {args.device}, "
          f"torch {torch.__version__}, {args.threads or torch.get_num_threads()} threads; copy bandwidth on a Q-sized tensor "
          f"{bw:.1f} GB/s")
    print(f"{'k':>3} {'b':>2} | {'build ms':>9} {'iter ms':>9} {'peak MiB':>9} | {'naive build':>11} "
          f"{'naive iter':>10} {'naive MiB':>9} | {'speed-up':>8} {'max|ΔQ|':>9} | {'× bound':>7}")
    for k in ks:
        for blur in blurs:
            ours, mem = in_subprocess(_measure, "ours", w, h, args.classes, k, blur, args.iterations, args.device,
                                      args.threads)
            mem = ours["cuda_peak_mb"] or mem
            gh, gw = -(-h // blur), -(-w // blur)
            bytes_per_iter = 4 * (2 * n_q + k * k * gh * gw)
            bound = args.iterations * bytes_per_iter / (bw * 1e9) * 1e3
            line = f"{k:>3} {blur:>2} | {ours['build_ms']:>9.1f} {ours['iter_ms']:>9.1f} {mem:>9.0f} | "
            if args.no_peer:
                line += f"{'-':>11} {'-':>10} {'-':>9} | {'-':>8} {'-':>9} | "
            else:
                naive, nmem = in_subprocess(_measure, "naive", w, h, args.classes, k, blur, args.iterations,
                                            args.device, args.threads)
                nmem = naive["cuda_peak_mb"] or nmem
                speed = (naive["build_ms"] + naive["iter_ms"]) / (ours["build_ms"] + ours["iter_ms"])
                diff = float(abs(ours["q"] - naive["q"]).max())
                line += (f"{naive['build_ms']:>11.1f} {naive['iter_ms']:>10.1f} {nmem:>9.0f} | {speed:>7.1f}x "
                         f"{diff:>9.1e} | ")
            print(line + f"{ours['iter_ms'] / bound:>6.1f}x", flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
