"""``crfcore batch IN_DIR -o OUT_DIR``: refine every image of a folder, resumably, with a failure summary.

Label-mask images go through :func:`crfcore.refine_mask` with the options ``crfcore refine`` gives it
(``--roughness``, ``--confidence``, ``--void``, ``--scale``, ``--preset`` with its ``"unary"`` settings); with a band
(``--band`` or the preset's) masks become the plain outline-band unary instead; probabilities, logits and annotation
files go through :func:`crfcore.refine`.

Exit status 0 when every image is refined (or was already), 1 when some failed (each named, with the reason, at the
end), 2 for a usage error that stops the batch before it starts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import TextIO

from ..batch import DEFAULT_VOID, Outcome, RefineSpec, find_tasks, quiet_per_image_logs, run_batch
from ..errors import InputError
from .common import add_method_args, add_scale_arg, params_from_args, unary_options

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("batch", help="refine a whole folder (resumable, parallel, failure summary)",
                       description="Refine every image of IN_DIR (or IN_DIR/images) with its unary: the file of the "
                                   "same stem in --unary-dir, else IN_DIR/masks/<stem>.*, else <stem>_mask.* beside "
                                   "it. Writes OUT_DIR/<stem>.png index masks atomically and skips images whose "
                                   "output exists, so an interrupted batch resumes where it stopped.")
    p.add_argument("in_dir", type=Path, metavar="IN_DIR")
    p.add_argument("-o", "--out", type=Path, required=True, metavar="OUT_DIR", help="output folder (created)")
    p.add_argument("--unary-dir", type=Path, metavar="D", help="folder of unaries named like the images")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="worker processes of the local engine (default: one per CPU core; 1 runs in this "
                        "process); the ray engine uses every slot of the cluster")
    p.add_argument("--engine", default="local", choices=("local", "ray"),
                   help="local: processes on this machine; ray: a Ray cluster (pip install 'crf-studio[cluster]'; "
                        "IN_DIR and OUT_DIR must be paths every node sees)")
    p.add_argument("--address", metavar="ADDR",
                   help="the Ray cluster to use with --engine ray: HOST:PORT of its head, 'auto' for the one "
                        "`ray start` runs here, or ray://HOST:10001 (default: $RAY_ADDRESS, else a Ray instance "
                        "on this machine listening on 127.0.0.1 only, without a dashboard)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="cuda: the local engine runs every image on the GPU in this process (--jobs is then "
                        "ignored), the ray engine one chunk of images per GPU of the cluster")
    p.add_argument("--num-classes", type=int, help="C of every unary (default: from each file)")
    p.add_argument("--confidence", type=float,
                   help="probability given to a mask's label (masks only; default: the preset's, else 0.7)")
    p.add_argument("--band", type=float,
                   help="plain outline-band unary without colour models: uncertain band along a mask's outlines [px] "
                        "(masks only; default: the --preset file's band, else colour models via crfcore.refine_mask)")
    p.add_argument("--roughness", default="auto", type=roughness_arg,
                   help="masks: how far the outline may be off [px], or 'auto' to estimate it per image (default auto)")
    p.add_argument("--void", type=int, default=DEFAULT_VOID,
                   help=f"mask label of unannotated pixels, uniform in the unary (default {DEFAULT_VOID})")
    p.add_argument("--resize", action="store_true",
                   help="scale unaries of the image's aspect ratio but another size (network outputs) to the image")
    add_scale_arg(p)
    add_method_args(p)
    p.set_defaults(func=run)


def roughness_arg(value: str) -> float | str:
    """``--roughness`` value: ``"auto"`` or a number of pixels > 0 (argparse type)."""
    if value == "auto":
        return value
    try:
        px = float(value)
    except ValueError:
        px = float("nan")
    if not px > 0 or px == float("inf"):
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of pixels > 0, got {value!r}")
    return px


class _Progress:
    """A one-line progress bar on a terminal; on anything else a line per tenth of the batch."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.stream, self.tty = total, stream, stream.isatty()
        self.counts = {"done": 0, "skipped": 0, "failed": 0}
        self.start = time.perf_counter()
        self.last_tenth = -1

    def __call__(self, outcome: Outcome) -> None:
        self.counts[outcome.status] += 1
        seen = sum(self.counts.values())
        rate = self.counts["done"] / max(time.perf_counter() - self.start, 1e-9)
        width = 30
        bar = "#" * (width * seen // self.total) + "." * (width - width * seen // self.total)
        line = (f"{seen}/{self.total} [{bar}] {rate:.2f} img/s, {self.counts['skipped']} skipped, "
                f"{self.counts['failed']} failed")
        if self.tty:
            self.stream.write("\r" + line + ("\n" if seen == self.total else ""))
            self.stream.flush()
        elif 10 * seen // self.total > self.last_tenth:
            self.last_tenth = 10 * seen // self.total
            print(line, file=self.stream, flush=True)


def run(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise InputError(f"--jobs must be ≥ 1, got {args.jobs}.")
    if args.address is not None and args.engine != "ray":
        raise InputError(f"--address is for --engine ray, got --engine {args.engine}; add --engine ray.")
    if args.void < -1:
        raise InputError(f"--void must be a label ≥ 0, or -1 for none, got {args.void}.")
    method, _ = params_from_args(args)  # checks the parameter flags; workers resolve them with the preset
    tasks = find_tasks(args.in_dir, args.out, unary_dir=args.unary_dir)
    options = unary_options(args)
    overrides = tuple((k.removeprefix("param_"), v) for k, v in sorted(vars(args).items())
                      if k.startswith("param_") and v is not None)
    preset = None if args.preset is None else str(Path(args.preset).absolute())
    spec = RefineSpec(method, None, device=args.device, num_classes=args.num_classes,
                      confidence=options.get("confidence"), band=options.get("band"), resize=args.resize,
                      void=args.void, scale=args.scale, preset=preset, overrides=overrides,
                      roughness=args.roughness)
    engine_options = {"address": args.address} if args.engine == "ray" else None
    progress = _Progress(len(tasks), sys.stderr)
    with nullcontext() if args.verbose else quiet_per_image_logs():  # the engine starts only if there is work
        outcomes = run_batch(tasks, spec, engine=args.engine, jobs=args.jobs, on_outcome=progress,
                             engine_options=engine_options)
    elapsed = time.perf_counter() - progress.start
    failed = [o for o in outcomes if o.status == "failed"]
    counts = progress.counts
    print(f"crfcore batch: {counts['done']} refined, {counts['skipped']} skipped (output exists), {len(failed)} "
          f"failed, in {elapsed:.1f} s → {args.out}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} image(s) failed:", file=sys.stderr)
        for outcome in failed:
            print(f"  {outcome.task.image}: {outcome.error}", file=sys.stderr)
    return 1 if failed else 0
