"""Batch throughput (images per second) with 1 and N worker jobs, and the failure summary on broken inputs.

Each row runs ``crfcore.batch.run_batch`` on the dataset's ``images/`` with its ``masks/`` as unaries (label masks,
``from_labels`` confidence) into a fresh temporary folder, timed end to end: finding the tasks, starting the spawn
workers (each imports torch and crfcore), refining and writing every mask. "per image" is the median time of one
image inside a worker (load, refine, atomic write); the gap between ``images × per image / jobs`` and the wall time is
the pool's start-up and scheduling. Every worker uses ``--threads`` torch threads (default 1, so N jobs use N cores).
With ``--engine ray`` there is one row, on every CPU of the Ray cluster; connecting (starting a local Ray instance)
is timed apart, but the workers' start-up (importing torch and crfcore) is in the row, as for the local pool.

Then a folder seeded with broken files (a truncated PNG, a mask of another size, a text file named .png, an RGBA
colour mask, and an RGBA photo with transparency, which loads composited onto white) is run through the same batch,
and its failure summary printed as ``crfcore batch`` prints it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .. import io
from ..batch import RefineSpec, find_tasks, quiet_per_image_logs, run_batch

__all__ = ["add_arguments", "run"]

_DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "camvid"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=_DEFAULT_DATA, help="folder with images/ and masks/ "
                                                                    "(default ../shared/data/camvid)")
    p.add_argument("--method", default="convcrf", help="refiner (default convcrf, default parameters)")
    p.add_argument("--jobs", default="1,2", help="comma-separated worker counts to time (default 1,2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--engine", default="local", choices=("local", "ray"),
                   help="local: one row per --jobs; ray: one row on the Ray cluster of $RAY_ADDRESS, else on a Ray "
                        "instance started here (connected before the timing; jobs = the cluster's CPUs)")


def _subset(data: Path, folder: Path, limit: int | None) -> int:
    """Link (or copy) the first ``limit`` pairs of ``data`` into ``folder``; returns how many."""
    pairs = io.find_pairs(data)[:limit]
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True)
    for image, mask in pairs:
        for src, sub in ((image, "images"), (mask, "masks")):
            try:
                os.symlink(src.resolve(), folder / sub / src.name)
            except OSError:
                shutil.copy(src, folder / sub / src.name)
    return len(pairs)


def _broken(data: Path, folder: Path) -> None:
    """Two good pairs from ``data`` and one of each broken kind, as images/ and masks/."""
    (image, mask), (image2, mask2) = io.find_pairs(data)[:2]
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True)
    for stem, (img, msk) in {"good_a": (image, mask), "good_b": (image2, mask2), "truncated": (image, mask),
                             "mismatched": (image, mask), "text_file": (image, mask), "rgba_mask": (image, mask),
                             "rgba_photo": (image, mask)}.items():
        shutil.copy(img, folder / "images" / f"{stem}.png")
        shutil.copy(msk, folder / "masks" / f"{stem}.png")
    data_bytes = (folder / "images" / "truncated.png").read_bytes()
    (folder / "images" / "truncated.png").write_bytes(data_bytes[:len(data_bytes) // 3])
    labels = io.load_mask(mask)
    io.save_mask(folder / "masks" / "mismatched.png", labels[: labels.shape[0] // 2])
    (folder / "images" / "text_file.png").write_text("not an image, whatever the name says\n")
    colours = np.array([[128, 64, 128], [70, 70, 70], [0, 0, 142]], np.uint8)[labels % 3]
    Image.fromarray(np.dstack([colours, np.full(labels.shape, 255, np.uint8)])).save(folder / "masks" /
                                                                                      "rgba_mask.png")
    rgb = io.load_image(image)
    alpha = np.full(labels.shape, 255, np.uint8)
    alpha[: labels.shape[0] // 4] = 0
    Image.fromarray(np.dstack([rgb, alpha])).save(folder / "images" / "rgba_photo.png")


def _connect_ray() -> int:
    """Connect to Ray (printing how long it took); returns the cluster's CPUs."""
    from ..batch.ray import connect, import_ray

    start = time.perf_counter()
    connect()
    cpus = int(import_ray().cluster_resources().get("CPU", 1))
    print(f"ray: connected in {time.perf_counter() - start:.1f} s, {cpus} CPUs in the cluster")
    return cpus


def run(args: argparse.Namespace) -> int:
    with quiet_per_image_logs():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    jobs_list = [_connect_ray()] if args.engine == "ray" else [int(j) for j in args.jobs.split(",")]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with tempfile.TemporaryDirectory(prefix="crf-bench-batch-") as tmp:
        root = Path(tmp)
        count = _subset(args.data, root / "in", args.limit)
        print(f"batch bench: {count} images of {args.data}, {args.method} (default parameters), device "
              f"{args.device}, {args.threads} torch thread(s) per worker; {os.cpu_count()} CPUs, load average "
              f"{load:.1f} at the start (timings are noisy when it exceeds the CPU count)")
        print(f"{'jobs':>4} | {'wall s':>7} {'img/s':>6} {'per image s':>11} {'start-up s':>10} {'failed':>6}")
        spec = RefineSpec(args.method, device=args.device, threads=args.threads)
        for jobs in jobs_list:
            start = time.perf_counter()
            outcomes = run_batch(find_tasks(root / "in", root / f"out{jobs}"), spec, engine=args.engine, jobs=jobs)
            wall = time.perf_counter() - start
            per_image = statistics.median(o.seconds for o in outcomes)
            overhead = wall - sum(o.seconds for o in outcomes) / jobs
            failed = sum(o.status == "failed" for o in outcomes)
            print(f"{jobs:>4} | {wall:>7.1f} {count / wall:>6.2f} {per_image:>11.2f} {overhead:>10.1f} {failed:>6}")
        _broken(args.data, root / "broken")
        outcomes = run_batch(find_tasks(root / "broken", root / "broken_out"), spec, engine=args.engine, jobs=1)
        done = sorted(o.task.image.name for o in outcomes if o.status == "done")
        print(f"\nbroken-input folder: {len(done)} refined ({', '.join(done)}), "
              f"{sum(o.status == 'failed' for o in outcomes)} failed:")
        for outcome in outcomes:
            if outcome.status == "failed":
                print(f"  {outcome.task.image.name}: {outcome.error}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
