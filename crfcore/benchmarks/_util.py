"""Shared measuring tools for the benchmarks: median timing, peak memory in a fresh process, streaming bandwidth."""

from __future__ import annotations

import multiprocessing as mp
import resource
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["median_ms", "sync", "bandwidth_gbs", "in_subprocess", "reset_peak_rss", "peak_rss_growth_mb",
           "sample_case"]

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def median_ms(fn: Callable[[], Any], *, repeat: int = 3, warmup: int = 1, device: str = "cpu") -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def bandwidth_gbs(numel: int, *, device: str = "cpu", repeat: int = 5) -> float:
    """Streaming bandwidth (GB/s) of copying a float32 tensor of ``numel`` elements: 2·4·numel bytes moved."""
    src = torch.rand(numel, device=device)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), repeat=repeat, device=device)
    return 2 * 4 * numel / (ms * 1e-3) / 1e9


def _status_mb(field: str) -> float:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak_rss() -> float:
    """Reset this process's peak resident size to the current one (Linux ``clear_refs``); returns it in MiB.

    Where the reset is unavailable, returns the peak so far (``ru_maxrss``), which a child process inherits from its
    parent's high-water mark, so growth may then read low.
    """
    try:
        _CLEAR_REFS.write_text("5")
        return _status_mb("VmRSS")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_growth_mb(start: float) -> float:
    """Peak resident size since :func:`reset_peak_rss` returned ``start``, minus ``start``, MiB."""
    try:
        peak = _status_mb("VmHWM")
    except (OSError, KeyError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return peak - start


def _child(conn: Any, fn: Callable[..., Any], args: tuple) -> None:
    try:
        start = reset_peak_rss()
        result = fn(*args)
        conn.send(("ok", result, peak_rss_growth_mb(start)))
    except BaseException as exc:  # reported to the parent, which raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}", 0.0))
    finally:
        conn.close()


def in_subprocess(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """Run ``fn(*args)`` in a fresh process; returns ``(result, peak memory growth in MiB)``.

    Peak growth is the high-water mark of resident memory during ``fn`` minus that before it, so each configuration's
    peak is measured alone, not hidden by an earlier, larger one.
    """
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn, args))
    proc.start()
    child.close()
    status, result, peak = parent.recv()
    proc.join()
    if status != "ok":
        raise RuntimeError(result)
    return result, peak


def sample_case(height: int, width: int, num_classes: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A real photo and a noisy unary at ``height×width``: VOC 2007_000346 from ../shared when present, resized;
    otherwise a bundled sample; otherwise a seeded synthetic scene. Returns ``((H,W,3) uint8, (C,H,W) float32)``."""
    from PIL import Image

    from ..synthetic import noisy_unary

    root = Path(__file__).resolve().parents[2]
    candidates = [root.parent / "shared/data/voc/images/2007_000346.png"]
    masks = [root.parent / "shared/data/voc/masks/2007_000346.png"]
    for img_path, mask_path in zip(candidates, masks):
        if img_path.exists() and mask_path.exists():
            img = Image.open(img_path).convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
            mask = Image.open(mask_path).resize((width, height), Image.Resampling.NEAREST)
            labels = np.minimum(np.asarray(mask).astype(np.int64), num_classes - 1)
            return np.array(img), noisy_unary(labels, num_classes, image_id=f"bench{seed}")
    rng = np.random.default_rng(seed)
    labels = np.zeros((height, width), np.int64)
    yy, xx = np.mgrid[:height, :width]
    for c in range(1, num_classes):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(0.05, 0.25) * min(height, width)
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = c
    palette = rng.integers(0, 256, size=(num_classes, 3))
    img = np.clip(palette[labels] + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
    return img, noisy_unary(labels, num_classes, image_id=f"bench{seed}")
