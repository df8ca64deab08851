"""DenseCRF speed and memory against pydensecrf (Krähenbühl's C++ lattice), in one run.

Both run the classic model (DESIGN.md §3 defaults: w1=10, θα=80, θβ=13, w2=3, θγ=3, Potts, symmetric normalisation,
self term included) on the same real photo and noisy unary, taking turns in this process (so load changes hit both):
the median wall time of ``--repeat`` rounds (after a warm-up round) of build and of iterations, and the label agreement
and max |ΔQ| between their marginals. Peak memory is the growth of resident memory during one run of each side alone,
in a fresh process. pydensecrf is single-threaded; ours runs with ``--threads`` torch threads (default 1: like for
like).

It also times one application of the smoothness kernel alone both ways considered for it: the lattice (what we use)
and the exact separable Gaussian (a depthwise convolution with ±3θγ taps per axis, channels-last), which is exact but
costs 2·(6θγ+1) multiply-adds per value against the lattice's 2·(d+1) plus a blur over far fewer vertices than pixels.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..affinity import LatticeBackend
from ..features import smoothness_features
from ..params import DenseCRFParams
from ..refiners import DenseCRF
from ._util import in_subprocess, median_ms, sample_case, sync

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", default="500x375", help="W×H of the test image (default 500x375)")
    p.add_argument("--classes", type=int, default=21)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--repeat", type=int, default=5, help="timed runs per side; the median is reported")
    p.add_argument("--threads", type=int, default=1, help="torch threads for ours (pydensecrf uses one)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-peer", action="store_true", help="skip pydensecrf")


class _Ours:
    """One run of our DenseCRF on the bench case: ``(build ms, iterations ms, Q (C, H, W))``."""

    def __init__(self, w: int, h: int, classes: int, iterations: int, device: str) -> None:
        image, unary = sample_case(h, w, classes)
        self.img = torch.from_numpy(image).permute(2, 0, 1)[None].float().to(device)
        self.probs = torch.from_numpy(unary)[None].to(device)
        self.model = DenseCRF(DenseCRFParams(iterations=iterations)).to(device)
        self.device = device
        self.vertices: list[int] = []

    def __call__(self) -> tuple[float, float, np.ndarray]:
        with torch.no_grad():
            t0 = time.perf_counter()
            op = self.model.build(self.img)
            sync(self.device)
            t1 = time.perf_counter()
            q = self.model(self.img, self.probs, op=op)
            sync(self.device)
            t2 = time.perf_counter()
        self.vertices = [k.lattice.num_points for k in op.kernels]
        return (t1 - t0) * 1e3, (t2 - t1) * 1e3, q[0].cpu().numpy()


class _Peer:
    """One run of pydensecrf's ``DenseCRF2D`` with the same parameters: ``(build ms, iterations ms, Q)``."""

    def __init__(self, w: int, h: int, classes: int, iterations: int) -> None:
        from pydensecrf.utils import unary_from_softmax

        self.image, unary = sample_case(h, w, classes)
        self.energy = np.ascontiguousarray(unary_from_softmax(unary))
        self.shape, self.iterations = (classes, h, w), iterations

    def __call__(self) -> tuple[float, float, np.ndarray]:
        import pydensecrf.densecrf as dcrf

        p, (c, h, w) = DenseCRFParams(), self.shape
        t0 = time.perf_counter()
        crf = dcrf.DenseCRF2D(w, h, c)
        crf.setUnaryEnergy(self.energy)
        crf.addPairwiseGaussian(sxy=p.theta_gamma, compat=p.w_smoothness)
        crf.addPairwiseBilateral(sxy=p.theta_alpha, srgb=p.theta_beta, rgbim=self.image, compat=p.w_appearance)
        t1 = time.perf_counter()
        q = np.array(crf.inference(self.iterations), dtype=np.float32).reshape(c, h, w)
        return (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3, q


def _one_run(side: str, w: int, h: int, classes: int, iterations: int, threads: int, device: str) -> None:
    """One run of ``side`` in a fresh process, for its peak memory."""
    torch.set_num_threads(threads)
    (_Ours(w, h, classes, iterations, device) if side == "ours" else _Peer(w, h, classes, iterations))()


@torch.no_grad()
def _smoothness_choice(w: int, h: int, classes: int, device: str) -> tuple[float, float]:
    """ms per application of the smoothness kernel: (lattice, exact separable Gaussian)."""
    theta = DenseCRFParams().theta_gamma
    q = torch.softmax(torch.randn(1, classes, h, w, device=device), 1).contiguous(memory_format=torch.channels_last)
    feats = smoothness_features(torch.zeros(1, 3, h, w, device=device), theta)
    op = LatticeBackend().build([feats]).with_self_term()
    radius = math.ceil(3 * theta)
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, device=device) / theta) ** 2)
    ky = taps.view(1, 1, -1, 1).expand(classes, 1, -1, 1).contiguous()
    kx = taps.view(1, 1, 1, -1).expand(classes, 1, 1, -1).contiguous()

    def separable() -> torch.Tensor:
        rows = F.conv2d(q, ky, padding=(radius, 0), groups=classes)
        return F.conv2d(rows, kx, padding=(0, radius), groups=classes)

    return (median_ms(lambda: op.apply(q), repeat=5, device=device),
            median_ms(separable, repeat=5, device=device))


def _peer_available() -> bool:
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


def run(args: argparse.Namespace) -> int:
    w, h = (int(v) for v in args.size.lower().split("x"))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    peer = not args.no_peer and _peer_available()
    print(f"DenseCRF bench: {w}×{h}, {args.classes} classes, {args.iterations} iterations, device {args.device}, "
          f"torch {torch.__version__}, ours on {args.threads} thread(s); median of {args.repeat} runs, alternating "
          f"with the peer in this process; {os.cpu_count()} CPUs, load average {load:.1f} (timings are noisy when "
          f"it exceeds the CPU count)")
    names = ["ours", "pydensecrf"] if peer else ["ours"]
    # memory first, while this process is small: a child's ru_maxrss starts at its parent's high-water mark
    memory = {name: in_subprocess(_one_run, name, w, h, args.classes, args.iterations, args.threads, args.device)[1]
              for name in names}
    torch.set_num_threads(args.threads)
    sides = {"ours": _Ours(w, h, args.classes, args.iterations, args.device)}
    if peer:
        sides["pydensecrf"] = _Peer(w, h, args.classes, args.iterations)
    runs: dict[str, list] = {name: [] for name in sides}
    for _ in range(args.repeat + 1):  # the first round warms up and is dropped
        for name, side in sides.items():
            runs[name].append(side())
    print(f"{'':>10} | {'build ms':>9} {'iter ms':>9} {'total ms':>9} {'peak MiB':>9}")
    totals = {}
    for name in sides:
        build, iters = (statistics.median(r[i] for r in runs[name][1:]) for i in (0, 1))
        totals[name] = (build, iters)
        extra = f"   (lattice vertices per kernel: {', '.join(map(str, sides['ours'].vertices))})" \
            if name == "ours" else ""
        print(f"{name:>10} | {build:>9.1f} {iters:>9.1f} {build + iters:>9.1f} {memory[name]:>9.0f}{extra}")
    if peer:
        (ob, oi), (pb, pi) = totals["ours"], totals["pydensecrf"]
        q_ours, q_peer = runs["ours"][-1][2], runs["pydensecrf"][-1][2]
        agree = float((q_ours.argmax(0) == q_peer.argmax(0)).mean())
        diff = np.abs(q_ours - q_peer)
        print(f"ours / pydensecrf: total {(ob + oi) / (pb + pi):.2f}x, build {ob / pb:.2f}x, iterations "
              f"{oi / pi:.2f}x; label agreement {100 * agree:.3f}%, max |ΔQ| {diff.max():.1e}, "
              f"mean |ΔQ| {diff.mean():.1e}")
    else:
        why = "skipped (--no-peer)" if args.no_peer else "not importable here (pip install pydensecrf2 to compare)"
        print(f"{'pydensecrf':>10} | {why}: no peer measured")
    lattice_ms, separable_ms = _smoothness_choice(w, h, args.classes, args.device)
    print(f"smoothness kernel, one application: lattice {lattice_ms:.1f} ms, exact separable Gaussian "
          f"(±{math.ceil(3 * DenseCRFParams().theta_gamma)} taps) {separable_ms:.1f} ms")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
