"""Gaussian CRF: conjugate-gradient cost per backend, and backward-pass memory against unrolled mean field.

Speed: iterations and milliseconds for conjugate gradient to reach ``--tol`` (relative residual) on one image, for
every backend available — the pooled local window (the refiner's default), learned-style low-rank embeddings, and the
permutohedral lattice when ``crfcore.affinity`` has ``LatticeBackend`` — next to five ConvCRF mean-field iterations
on the same input (the peer). The pooled window is solved two ways on the same operator, alternating, median of
``--repeat``: Jacobi-preconditioned CG on the full-resolution system (before) and the exact reduction to the pooled
grid (:class:`~crfcore.inference.gaussian.GridReduction`, after). Then both refiners with default parameters end to
end (build and solve, as ``model(image, probs)``), alternating in one process, median of ``--repeat``: their ratio is
the figure of issue 17 (≤ 1.5×). Wall times on a shared machine are noisy; iteration counts are not. The lattice's W is not symmetric (its blur runs the lattice directions in one order),
which the G-CRF rejects; it is measured symmetrised, ``½(W + Wᵀ)``, with ``Wᵀ`` from autograd.

Memory: forward plus backward, each configuration in a fresh process: the G-CRF with exactly 5, 20, 80 CG iterations
(a tolerance it cannot reach, so the count is fixed; the backward solve runs as many) and ConvCRF mean field unrolled
through autograd for 5, 20, 80 iterations. The figure is the growth of the process's peak resident memory during
that call (``/proc/self/clear_refs`` resets the peak to the current resident size first; where that is not
available, ``ru_maxrss`` growth since the child started). CPU allocations are invisible to ``tracemalloc``, so this
reads the kernel's own counters. The G-CRF stores no iterate, so its figure should stay flat as the count grows.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import warnings
from typing import Any

import torch

from ..inference.gaussian import ConvergenceWarning, GaussianSystem, GridReduction, conjugate_gradient, unary_scores
from ..params import ConvCRFParams, GaussianCRFParams, specs
from ..refiners import ConvCRF, GaussianCRF
from ._util import in_subprocess, peak_rss_growth_mb, reset_peak_rss, sample_case, sync

__all__ = ["add_arguments", "run", "colour_embeddings"]

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", default="500x375", help="W×H of the test image (default 500x375)")
    p.add_argument("--classes", type=int, default=21)
    p.add_argument("--tol", type=float, default=1e-4, help="relative residual to reach (default 1e-4)")
    p.add_argument("--max-iter", type=int, default=1000, help="iteration guard of the speed runs")
    p.add_argument("--embedding-dims", type=int, default=16, help="D of the low-rank embeddings")
    p.add_argument("--counts", default="5,20,80", help="iteration counts of the memory runs")
    p.add_argument("--memory-size", default=None, help="W×H of the memory runs (default: --size)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads in every run (default: torch's)")
    p.add_argument("--repeat", type=int, default=3, help="alternating repeats of the timed comparisons (median)")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: speed, memory")


def colour_embeddings(image: torch.Tensor, dims: int, theta_beta: float, *, seed: int = 0) -> torch.Tensor:
    """Non-negative embeddings ``(B, D, H, W)`` standing in for a learned embedding network: the Gaussian similarity
    of each pixel's colour to D colours drawn from the image (seeded), scaled by 1/√N so that row sums of ``EEᵀ``
    stay of order D whatever the image size."""
    b, _, h, w = image.shape
    gen = torch.Generator().manual_seed(seed)
    flat = image.flatten(2)  # (B, 3, N)
    picks = torch.randint(0, h * w, (dims,), generator=gen).to(image.device)
    centres = flat[:, :, picks]  # (B, 3, D)
    dist = (flat.unsqueeze(2) - centres.unsqueeze(3)).square().sum(1)  # (B, D, N)
    return torch.exp(-dist / (2 * theta_beta ** 2)).view(b, dims, h, w) / (h * w) ** 0.5


class _Symmetrized:
    """``½(W + Wᵀ)`` of a linear op, ``Wᵀ`` by a vector-Jacobian product: a measuring device for a backend that is
    not symmetric (the lattice), forward only."""

    def __init__(self, op: Any) -> None:
        self.op = op

    def weighted(self, weights: torch.Tensor) -> "_Symmetrized":
        return _Symmetrized(self.op.weighted(weights))

    def apply(self, q: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            z = q.detach().requires_grad_(True)
            out = self.op.apply(z)
            (transposed,) = torch.autograd.grad(out, z, q)
        return 0.5 * (out.detach() + transposed)


def _inputs(w: int, h: int, classes: int, device: str, threads: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    if threads:
        torch.set_num_threads(threads)
    image, unary = sample_case(h, w, classes)
    img = torch.from_numpy(image).permute(2, 0, 1)[None].float().to(device)
    return img, torch.from_numpy(unary)[None].to(device)


def _speed(backend: str, w: int, h: int, classes: int, tol: float, max_iter: int, dims: int, device: str,
           threads: int | None) -> dict:
    """Build and solve once with ``backend`` ("lowrank" or "lattice") by full-grid Jacobi CG; times in ms."""
    from .. import affinity
    from ..affinity import LowRankBackend

    torch.set_grad_enabled(False)
    img, probs = _inputs(w, h, classes, device, threads)
    model = GaussianCRF(GaussianCRFParams()).to(device)
    params = model.config
    sync(device)
    t0 = time.perf_counter()
    if backend == "lowrank":
        emb = colour_embeddings(img, dims, params.theta_beta)
        op = LowRankBackend().build([emb]).weighted(torch.tensor([params.w_appearance], device=device))
    else:
        lattice = affinity.LatticeBackend(normalization="none")
        op = _Symmetrized(lattice.build(model.kernels.features(img)).weighted(model.kernels.weights()))
    scores = unary_scores(probs)
    system = GaussianSystem([op], (h, w), 1, lam=params.lam, mu=params.lam, like=scores)
    diag = system.diagonal()
    sync(device)
    t1 = time.perf_counter()
    result = conjugate_gradient(system.matvec, params.lam * scores.flatten(2), diag, tol=tol, max_iter=max_iter)
    sync(device)
    t2 = time.perf_counter()
    return {"build_ms": (t1 - t0) * 1e3, "solve_ms": (t2 - t1) * 1e3, "iterations": result.iterations,
            "residual": result.residual}


def _meanfield_ms(w: int, h: int, classes: int, device: str, threads: int | None) -> dict:
    torch.set_grad_enabled(False)
    img, probs = _inputs(w, h, classes, device, threads)
    model = ConvCRF(ConvCRFParams()).to(device)
    sync(device)
    t0 = time.perf_counter()
    op = model.build(img)
    sync(device)
    t1 = time.perf_counter()
    model(img, probs, op=op)
    sync(device)
    return {"build_ms": (t1 - t0) * 1e3, "solve_ms": (time.perf_counter() - t1) * 1e3,
            "iterations": model.config.iterations}


def _local_solvers(w: int, h: int, classes: int, tol: float, max_iter: int, device: str, threads: int | None,
                   repeat: int) -> dict:
    """The default pooled local operator solved by full-grid Jacobi CG and by the grid reduction, alternating;
    medians over ``repeat`` of each solve (and of the reduction's set-up, its stencil)."""
    torch.set_grad_enabled(False)
    img, probs = _inputs(w, h, classes, device, threads)
    model = GaussianCRF(GaussianCRFParams()).to(device)
    lam = model.config.lam
    t0 = time.perf_counter()
    op = model.build(img).weighted(model.kernels.weights())
    scores = unary_scores(probs)
    system = GaussianSystem([op], (h, w), 1, lam=lam, mu=lam, like=scores)
    diag = system.diagonal()
    sync(device)
    build_ms = (time.perf_counter() - t0) * 1e3
    rhs = lam * scores
    times: dict[str, list[float]] = {"jacobi": [], "setup": [], "reduced": []}
    out: dict[str, dict] = {}
    for _ in range(repeat):
        t0 = time.perf_counter()
        full = conjugate_gradient(system.matvec, rhs.flatten(2), diag, tol=tol, max_iter=max_iter)
        sync(device)
        t1 = time.perf_counter()
        reduction = GridReduction(op, diag.view(1, 1, h, w))
        sync(device)
        t2 = time.perf_counter()
        reduced = reduction.solve(rhs, tol=tol, max_iter=max_iter)
        sync(device)
        t3 = time.perf_counter()
        times["jacobi"].append((t1 - t0) * 1e3)
        times["setup"].append((t2 - t1) * 1e3)
        times["reduced"].append((t3 - t2) * 1e3)
        out = {"jacobi": full, "reduced": reduced}
    gap = float((out["reduced"].x.flatten(2) - out["jacobi"].x).norm() / out["jacobi"].x.norm())
    return {name: {"build_ms": build_ms + (statistics.median(times["setup"]) if name == "reduced" else 0.0),
                   "solve_ms": statistics.median(times[name]), "iterations": out[name].iterations,
                   "residual": out[name].residual} for name in ("jacobi", "reduced")} | {"gap": gap}


def _defaults_end_to_end(w: int, h: int, classes: int, device: str, threads: int | None, repeat: int) -> dict:
    """``model(image, probs)`` of GaussianCRF and ConvCRF with default parameters, alternating; medians in ms."""
    torch.set_grad_enabled(False)
    img, probs = _inputs(w, h, classes, device, threads)
    models = {"gaussian": GaussianCRF(GaussianCRFParams()).to(device), "convcrf": ConvCRF(ConvCRFParams()).to(device)}
    times: dict[str, list[float]] = {name: [] for name in models}
    for name, model in models.items():  # warm-up
        model(img, probs)
    for _ in range(repeat):
        for name, model in models.items():
            sync(device)
            t0 = time.perf_counter()
            model(img, probs)
            sync(device)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def _memory(method: str, count: int, w: int, h: int, classes: int, device: str, threads: int | None) -> dict:
    """Peak memory growth (MiB) and time of build + forward + backward with ``count`` iterations."""
    img, probs = _inputs(w, h, classes, device, threads)
    probs.requires_grad_(True)
    if method == "gaussian":
        lowest_tol = next(s.low for s in specs(GaussianCRFParams) if s.name == "tol")
        model = GaussianCRF(GaussianCRFParams(tol=lowest_tol))
    else:
        model = ConvCRF(ConvCRFParams(iterations=count))
    model = model.to(device)
    target = torch.rand_like(probs)
    gc.collect()
    start, source = reset_peak_rss(), "VmHWM"
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the fixed count is meant to stop short of tol
        q = model(img, probs, iterations=count) if method == "gaussian" else model(img, probs)
        (q * target).sum().backward()
    sync(device)
    ms = (time.perf_counter() - t0) * 1e3
    peak = peak_rss_growth_mb(start)
    if device.startswith("cuda"):
        peak, source = torch.cuda.max_memory_allocated() / 2**20, "cuda allocator"
    grads_ok = all(p.grad is not None for p in model.kernels.parameters() if p.requires_grad)
    return {"ms": ms, "peak_mb": peak, "source": source, "grads": grads_ok and probs.grad is not None}


def _size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def run(args: argparse.Namespace) -> int:
    from .. import affinity

    w, h = _size(args.size)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    defaults = GaussianCRFParams()
    print(f"Gaussian CRF bench: {w}×{h}, {args.classes} classes, device {args.device}, torch {torch.__version__}, "
          f"{args.threads or torch.get_num_threads()} threads; default GaussianCRFParams (λ={defaults.lam:g}, "
          f"k={defaults.filter_size}, b={defaults.blur})")
    if "speed" not in skip:
        backends = ["lowrank"] + (["lattice"] if hasattr(affinity, "LatticeBackend") else [])
        print(f"\nCG to tol {args.tol:g} (relative residual of the full system), single scale; the pooled window "
              f"solved both ways alternating, median of {args.repeat}")
        print(f"{'backend':<36} {'build ms':>9} {'iters':>6} {'solve ms':>9} {'ms/iter':>8} {'residual':>9}")
        labels = {"jacobi": "local k×k pooled b, full grid Jacobi", "reduced": "local k×k pooled b, grid reduction",
                  "lowrank": f"low-rank D={args.embedding_dims}", "lattice": "lattice, ½(W+Wᵀ) by autograd"}
        rows, _ = in_subprocess(_local_solvers, w, h, args.classes, args.tol, args.max_iter, args.device,
                                args.threads, args.repeat)
        for name in ("jacobi", "reduced"):
            r = rows[name]
            print(f"{labels[name]:<36} {r['build_ms']:>9.0f} {r['iterations']:>6} {r['solve_ms']:>9.0f} "
                  f"{r['solve_ms'] / max(1, r['iterations']):>8.1f} {r['residual']:>9.1e}", flush=True)
        print(f"CG iterations before/after (default pooled window): {rows['jacobi']['iterations']} / "
              f"{rows['reduced']['iterations']}; relative gap between the two solutions {rows['gap']:.1e}")
        for name in backends:
            try:
                r, _ = in_subprocess(_speed, name, w, h, args.classes, args.tol, args.max_iter, args.embedding_dims,
                                     args.device, args.threads)
            except RuntimeError as exc:
                print(f"{labels[name]:<36} failed: {exc}")
                continue
            print(f"{labels[name]:<36} {r['build_ms']:>9.0f} {r['iterations']:>6} {r['solve_ms']:>9.0f} "
                  f"{r['solve_ms'] / max(1, r['iterations']):>8.1f} {r['residual']:>9.1e}", flush=True)
        peer, _ = in_subprocess(_meanfield_ms, w, h, args.classes, args.device, args.threads)
        print(f"{'peer: ConvCRF mean field':<36} {peer['build_ms']:>9.0f} {peer['iterations']:>6} "
              f"{peer['solve_ms']:>9.0f} {peer['solve_ms'] / peer['iterations']:>8.1f} {'-':>9}")
        ends, _ = in_subprocess(_defaults_end_to_end, w, h, args.classes, args.device, args.threads, args.repeat)
        print(f"\ndefaults end to end (build + solve, alternating, median of {args.repeat}): Gaussian CRF "
              f"{ends['gaussian']:.0f} ms, ConvCRF {ends['convcrf']:.0f} ms, ratio "
              f"{ends['gaussian'] / ends['convcrf']:.2f}× (issue 17: ≤ 1.5×)", flush=True)
    if "memory" not in skip:
        mw, mh = _size(args.memory_size) if args.memory_size else (w, h)
        counts = [int(c) for c in args.counts.split(",")]
        print(f"\nforward + backward at {mw}×{mh}×{args.classes}: peak memory growth (fresh process each)")
        print(f"{'method':<34} {'iters':>6} {'peak MiB':>9} {'ms':>9}  grads  (peak from)")
        for method, label in (("gaussian", "G-CRF, closed-form gradient"),
                              ("convcrf", "ConvCRF mean field, unrolled")):
            for count in counts:
                r, growth = in_subprocess(_memory, method, count, mw, mh, args.classes, args.device, args.threads)
                peak = r["peak_mb"] if r["peak_mb"] is not None else growth
                print(f"{label:<34} {count:>6} {peak:>9.0f} {r['ms']:>9.0f}  {'ok' if r['grads'] else 'MISSING'}"
                      f"  ({r['source']})", flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
