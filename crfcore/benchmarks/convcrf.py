"""ConvCRF speed and memory against the reference code's computation and a naive unfold, in one run.

Peers, each on the same image and unary at the same window k and blur b:

- "reference": :class:`ReferenceStyleConvCRF`, a re-implementation of what the ConvCRF authors' PyTorch code
  (``convcrf.py`` with its ``default_conf``) computes, in the same layout and at the same resolutions (their code is
  not on a package registry). It runs its own model (their kernel parameters and update rule), so only its time and
  memory are compared.
- "naive": our model as the paper describes the method: unfold each k×k neighbourhood of the features into a
  ``(B, k², h, w)`` Gaussian once, then per iteration unfold Q into ``(B, C, k², h, w)``, multiply and sum. Same
  model as ours, so the table also gives the max |ΔQ| between the two.

And the machine's limit (DESIGN.md §7): ours ÷ (bytes one iteration must move ÷ the copy bandwidth measured in the
same process), "× bound". Times are build + iterations, the median of ``--repeat`` runs, each configuration in a fresh
process whose peak resident memory growth is the MiB column.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from ..affinity.grid import downsample, upsample
from ..inference import mean_field, unary_energy
from ..refiners import ConvCRF
from ._util import bandwidth_gbs, in_subprocess, sample_case, sync

__all__ = ["add_arguments", "run", "naive_convcrf", "ReferenceStyleConvCRF"]

PEERS = ("reference", "naive")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", default="500x375", help="W×H of the test image (default 500x375)")
    p.add_argument("--classes", type=int, default=21)
    p.add_argument("--filter-sizes", default="7,11")
    p.add_argument("--blurs", default="4,1")
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--peers", default=",".join(PEERS),
                   help=f"comma-separated peers to run, of {', '.join(PEERS)} (default all; '' for none, e.g. "
                        f"at 4096×4096)")
    p.add_argument("--repeat", type=int, default=1, help="timed runs per configuration; the median is shown")
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


def _measure(impl: str, w: int, h: int, classes: int, k: int, blur: int, iterations: int, device: str,
             threads: int | None, repeat: int) -> dict:
    """Median build and iteration times (ms) of ``impl`` over ``repeat`` runs, and Q subsampled 4× for ΔQ."""
    torch.set_grad_enabled(False)
    if threads:
        torch.set_num_threads(threads)
    image, unary = sample_case(h, w, classes)
    img = torch.from_numpy(image).permute(2, 0, 1)[None].float().to(device)
    probs = torch.from_numpy(unary)[None].to(device)
    model = ConvCRF(ConvCRF.params_cls(filter_size=k, blur=blur, iterations=iterations)).to(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    builds, iters = [], []
    for _ in range(max(1, repeat)):
        op = ref = q = None  # the previous run's operator and result do not add to this run's peak
        sync(device)
        t0 = time.perf_counter()
        if impl == "ours":
            op = model.build(img)
            sync(device)
            t1 = time.perf_counter()
            q = model(img, probs, op=op)
        elif impl == "naive":
            op = _NaiveOp(model.kernels.features(img), model.kernels.weights(), k, blur, (h, w))
            sync(device)
            t1 = time.perf_counter()
            q = mean_field(unary_energy(probs), op, iterations=iterations)
        else:
            ref = ReferenceStyleConvCRF(img, classes, k, blur)
            sync(device)
            t1 = time.perf_counter()
            q = ref(torch.log(probs.clamp_min(1e-5)), iterations)
        sync(device)
        t2 = time.perf_counter()
        builds.append((t1 - t0) * 1e3)
        iters.append((t2 - t1) * 1e3)
    cuda_peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    return {"build_ms": statistics.median(builds), "iter_ms": statistics.median(iters),
            "q": q[:, :, ::4, ::4].cpu().numpy(), "cuda_peak_mb": cuda_peak}


def run(args: argparse.Namespace) -> int:
    w, h = (int(v) for v in args.size.lower().split("x"))
    ks = [int(v) for v in args.filter_sizes.split(",")]
    blurs = [int(v) for v in args.blurs.split(",")]
    peers = [p for p in args.peers.split(",") if p]
    unknown = set(peers) - set(PEERS)
    if unknown:
        raise SystemExit(f"--peers: unknown {', '.join(sorted(unknown))}; choose from {', '.join(PEERS)}.")
    n_q = args.classes * w * h
    if args.threads:
        torch.set_num_threads(args.threads)  # the bound at the thread count the configurations run with
    bw = bandwidth_gbs(n_q, device=args.device)
    print(f"ConvCRF bench: {w}×{h}, {args.classes} classes, {args.iterations} iterations, device {args.device}, "
          f"torch {torch.__version__}, {args.threads or torch.get_num_threads()} threads, median of "
          f"{args.repeat}; copy bandwidth on a Q-sized tensor {bw:.1f} GB/s")
    print("ms = build + iterations; ×ours = peer's ms ÷ ours; × bound = our iterations ÷ the bandwidth bound")
    head = f"{'k':>3} {'b':>2} | {'build':>7} {'iter':>7} {'MiB':>6}"
    for peer in peers:
        head += f" | {peer + ' ms':>12} {'MiB':>6} {'×ours':>6}"
    print(head + (f" {'max|ΔQ|':>8}" if "naive" in peers else "") + f" | {'× bound':>7}")
    for k in ks:
        for blur in blurs:
            common = (w, h, args.classes, k, blur, args.iterations, args.device, args.threads, args.repeat)
            ours, mem = in_subprocess(_measure, "ours", *common)
            mem = ours["cuda_peak_mb"] or mem
            total = ours["build_ms"] + ours["iter_ms"]
            gh, gw = -(-h // blur), -(-w // blur)
            bytes_per_iter = 4 * (2 * n_q + k * k * gh * gw)
            bound = args.iterations * bytes_per_iter / (bw * 1e9) * 1e3
            line = f"{k:>3} {blur:>2} | {ours['build_ms']:>7.1f} {ours['iter_ms']:>7.1f} {mem:>6.0f}"
            diff = None
            for peer in peers:
                res, pmem = in_subprocess(_measure, peer, *common)
                pmem = res["cuda_peak_mb"] or pmem
                ptotal = res["build_ms"] + res["iter_ms"]
                line += f" | {ptotal:>12.1f} {pmem:>6.0f} {ptotal / total:>5.2f}x"
                if peer == "naive":
                    diff = float(abs(ours["q"] - res["q"]).max())
            if diff is not None:
                line += f" {diff:>8.1e}"
            print(line + f" | {ours['iter_ms'] / bound:>6.1f}x", flush=True)
    return 0


class ReferenceStyleConvCRF:
    """A re-implementation of the computation of the ConvCRF authors' code (``convcrf.py``, ``default_conf``),
    written from its description, for timing: what runs at which resolution and in which layout.

    Model: two kernels merged into one filter, ``3·exp(−|p_i−p_j|²/2·3²) + 10·exp(−|p_i−p_j|²/2·80² −
    |I_i−I_j|²/2·13²)`` (position sdims 3, compat 3; colour sdims 80, schan 13, compat 10), no normalisation, the
    centre tap kept; per-class weight vector w = 0.2 with unary weight 1, so one iteration is
    ``pred ← (1 − w)·log_softmax(unary) + w·message(softmax(pred))``. Layout (B, C, H, W) throughout.

    Build: features at full resolution, average-pooled ``blur`` times (blocks cut by the edge average what they
    hold), then one Gaussian per window offset from shifted differences on the pooled grid, ``(B, 1, k², h, w)``.
    Message: average-pool the prediction, ``unfold`` it into ``(B, C, k², h, w)``, multiply by the Gaussian, sum
    over the window, upsample bilinearly by ``blur`` and crop to H×W. The log-softmax of the unary and the softmax
    run at full resolution; the first message reads the log-softmax itself and the last iteration ends without
    softmax, as the reference's defaults do (``softmax`` on, ``final_softmax`` off).
    """

    POS_SDIMS, POS_COMPAT = 3.0, 3.0
    COL_SDIMS, COL_SCHAN, COL_COMPAT = 80.0, 13.0, 10.0
    WEIGHT_INIT, UNARY_WEIGHT = 0.2, 1.0

    def __init__(self, image: torch.Tensor, num_classes: int, filter_size: int = 11, blur: int = 4) -> None:
        """``image`` ``(B, 3, H, W)`` in 0..255; builds the merged Gaussian filter."""
        self.k, self.blur, self.size = filter_size, blur, tuple(image.shape[-2:])
        b, _, h, w = image.shape
        ys = torch.arange(h, dtype=image.dtype, device=image.device).view(1, 1, h, 1).expand(b, 1, h, w)
        xs = torch.arange(w, dtype=image.dtype, device=image.device).view(1, 1, 1, w).expand(b, 1, h, w)
        pos = torch.cat([ys, xs], dim=1)
        gauss = self.POS_COMPAT * self._gaussian(pos / self.POS_SDIMS)
        gauss += self.COL_COMPAT * self._gaussian(torch.cat([pos / self.COL_SDIMS, image / self.COL_SCHAN], dim=1))
        self.gauss = gauss.view(b, 1, filter_size * filter_size, *gauss.shape[-2:])
        self.weight = torch.full((1, num_classes, 1, 1), self.WEIGHT_INIT, dtype=image.dtype, device=image.device)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.blur == 1:
            return x
        return F.avg_pool2d(x, self.blur, ceil_mode=True, count_include_pad=False)

    def _gaussian(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, k, k, h, w)``: exp(−|f_i − f_{i+d}|²/2) per offset d on the pooled grid, 0 off the grid."""
        f = self._pool(features)
        b, _, h, w = f.shape
        r = self.k // 2
        out = f.new_zeros(b, self.k, self.k, h, w)
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                ys, yd = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h - max(0, -dy))
                xs, xd = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
                diff = f[:, :, ys, xs] - f[:, :, yd, xd]
                out[:, dy + r, dx + r, ys, xs] = torch.exp(-0.5 * (diff * diff).sum(1))
        return out

    def _message(self, pred: torch.Tensor) -> torch.Tensor:
        small = self._pool(pred)
        b, c, h, w = small.shape
        cols = F.unfold(small, self.k, padding=self.k // 2).view(b, c, self.k * self.k, h, w)
        message = (cols * self.gauss).sum(2)
        if self.blur > 1:
            message = F.interpolate(message, scale_factor=self.blur, mode="bilinear", align_corners=False)
            message = message[:, :, :self.size[0], :self.size[1]].contiguous()
        return message

    def __call__(self, unary: torch.Tensor, iterations: int = 5) -> torch.Tensor:
        """``unary`` ``(B, C, H, W)`` scores (log-probabilities); returns the last iteration's scores."""
        lg_unary = F.log_softmax(unary, dim=1)
        pred = lg_unary
        for t in range(iterations):
            message = self._message(pred)
            pred = (self.UNARY_WEIGHT - self.weight) * lg_unary + self.weight * message
            if t < iterations - 1:
                e = torch.exp(pred - pred.max(dim=1, keepdim=True)[0])
                pred = e / e.sum(dim=1, keepdim=True)
        return pred


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
