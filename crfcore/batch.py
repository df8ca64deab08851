"""Refine a whole folder: one task per image, a pure per-image function, and interchangeable engines to run them.

The pieces, so that an engine (a Ray cluster, issue 12) is added without touching the per-image work:

* :func:`find_tasks` pairs each image with its unary and its output path (``OUT_DIR/<stem>.png``).
* :class:`Refiner` is built once per worker from a picklable :class:`RefineSpec` (method, parameters, device).
* :func:`refine_file` ``(task, refiner) -> Outcome`` does one image: load, refine, write the index PNG atomically.
  It never raises for a bad input; the failure and its reason are in the :class:`Outcome`.
* An engine ``engine(tasks, spec, jobs, emit)`` calls ``refine_file`` on every task somewhere and ``emit``\\ s each
  outcome in the calling process. :data:`ENGINES` maps names to engines; ``"local"`` is a process pool (spawn
  context, one :class:`Refiner` per worker built by the pool's initializer, one torch thread per worker), or the
  calling process itself for one job or a CUDA device (the GPU is shared by no one); ``"ray"`` is a Ray cluster
  (:mod:`crfcore.batch_ray`, imported on first use).
* :func:`run_batch` skips tasks whose output exists (so a batch resumes where it stopped: outputs are written
  atomically, so an existing output is a complete one), fails tasks known to be broken, and runs the rest.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from . import io
from . import params as P

__all__ = ["Task", "RefineSpec", "Outcome", "Refiner", "Engine", "ENGINES", "UNARY_SUFFIXES", "find_tasks",
           "refine_file", "run_batch", "quiet_per_image_logs"]

log = logging.getLogger(__name__)

UNARY_SUFFIXES = io.IMAGE_SUFFIXES + (".npy", ".npz", ".json")
"""Suffixes a unary file may have (masks, probability arrays, annotation JSON); a folder of class maps also counts."""

_TEMPORARY = re.compile(r"^\..+\.png\.[0-9a-f]{12}\.tmp$")  # crfcore.io.atomic_write's temporary files


@dataclass(frozen=True)
class Task:
    """One image to refine. ``problem`` is set when it is known to fail before running (no unary, ...)."""

    image: Path
    unary: Path | None
    out: Path
    problem: str | None = None


@dataclass(frozen=True)
class RefineSpec:
    """What every worker builds its :class:`Refiner` from (picklable).

    Attributes:
        method: refiner name ("convcrf", "densecrf", "gaussian").
        params: that refiner's params dataclass (``crfcore.params``), or None for defaults.
        device: "cpu" or "cuda".
        num_classes: C of every unary; None takes it from each file.
        confidence: probability of a mask's label in its unary, (1/C, 1]; None for the default.
        band: uncertain band along a mask's outlines in pixels (``crfcore.unary.from_labels``) at the reference
            size when ``scale`` is "auto" (scaled with each image, as the spatial params are); None for none.
        threads: torch threads per worker (set in the calling process too when it runs the tasks itself); None
            leaves torch's default (pool workers then use 1).
        resize: scale a unary of the image's aspect ratio but another size (a network's output) to the image.
        scale: how spatial parameters follow each image's size, as in :func:`crfcore.refine` ("auto" or a number).
    """

    method: str = "convcrf"
    params: Any = None
    device: str = "cpu"
    num_classes: int | None = None
    confidence: float | None = None
    band: float | None = None
    threads: int | None = None
    resize: bool = False
    scale: str | float = "auto"


@dataclass(frozen=True)
class Outcome:
    """The result of one task: ``status`` "done", "skipped" (output existed) or "failed" (``error`` says why)."""

    task: Task
    status: Literal["done", "skipped", "failed"]
    error: str = ""
    seconds: float = 0.0


class Refiner:
    """The per-worker state: parameters resolved (a preset read) once, torch threads set, device checked.

    Calling it refines one image with :func:`crfcore.refine` and returns ``(H, W)`` int64 labels.
    """

    def __init__(self, spec: RefineSpec) -> None:
        import torch

        from .api import resolve_params

        if spec.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {spec.device!r}.")
        if spec.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu, or install "
                             "the CUDA build of CRF Studio.")
        if spec.threads is not None:
            torch.set_num_threads(spec.threads)
        P.scale_factor(1, 1, spec.scale)  # a bad scale fails here, before any image
        self.spec = spec
        self.params = resolve_params(spec.method, spec.params)

    def __call__(self, image: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """``image`` (H, W, 3) uint8, ``probs`` (C, H, W) float32 → ``(H, W)`` int64 labels."""
        from .api import refine

        return refine(image, probs, self.spec.method, params=self.params, device=self.spec.device,
                      scale=self.spec.scale).labels


def refine_file(task: Task, refiner: Refiner) -> Outcome:
    """Refine one image and write its index PNG atomically; every failure is returned, not raised."""
    from .unary_io import load_unary

    start = time.perf_counter()
    if task.problem is not None:
        return Outcome(task, "failed", task.problem)
    try:
        image = io.load_image(task.image)
        band = refiner.spec.band
        if band is not None:
            band = P.scaled_length(band, P.scale_factor(*image.shape[:2], refiner.spec.scale))
        probs = load_unary(task.unary, num_classes=refiner.spec.num_classes, image_shape=image.shape[:2],
                           confidence=refiner.spec.confidence, band=band, resize=refiner.spec.resize)
        io.save_mask(task.out, refiner(image, probs))
    except Exception as exc:  # one bad image must not stop the batch; the reason goes in the summary
        return Outcome(task, "failed", f"{type(exc).__name__}: {exc}", time.perf_counter() - start)
    return Outcome(task, "done", "", time.perf_counter() - start)


Engine = Callable[[Sequence[Task], RefineSpec, int, Callable[[Outcome], None]], None]

_WORKER: Refiner | None = None


def _init_worker(spec: RefineSpec) -> None:
    global _WORKER
    _WORKER = Refiner(spec)


def _work(task: Task) -> Outcome:
    if _WORKER is None:
        raise RuntimeError("the batch worker was started without its initializer (_init_worker).")
    return refine_file(task, _WORKER)


def _local(tasks: Sequence[Task], spec: RefineSpec, jobs: int, emit: Callable[[Outcome], None]) -> None:
    """A spawn process pool of ``jobs`` workers; the calling process itself for one job or a CUDA device."""
    if jobs == 1 or spec.device == "cuda":
        if jobs > 1:
            log.info("device cuda: images run one at a time in this process (the GPU is not shared)")
        refiner = Refiner(spec)
        for task in tasks:
            emit(refine_file(task, refiner))
        return
    Refiner(replace(spec, threads=None))  # fail fast, here, on a bad preset or device rather than in every worker
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                               initargs=(replace(spec, threads=spec.threads or 1),))
    try:
        futures = {pool.submit(_work, task): task for task in tasks}
        for future in as_completed(futures):
            try:
                emit(future.result())
            except BrokenProcessPool:
                emit(Outcome(futures[future], "failed", "a worker process died (out of memory?) while this image "
                                                        "was running or queued; run the batch again to resume, "
                                                        "with --jobs 1 to find the image that kills it"))
    finally:  # on Ctrl-C, queued images are dropped: only the ones running finish
        pool.shutdown(wait=True, cancel_futures=True)


def _ray(tasks: Sequence[Task], spec: RefineSpec, jobs: int, emit: Callable[[Outcome], None]) -> None:
    """A Ray cluster (:func:`crfcore.batch_ray.ray_engine`), imported on first use so crfcore does not need Ray."""
    from .batch_ray import ray_engine

    ray_engine(tasks, spec, jobs, emit)


ENGINES: dict[str, Engine] = {"local": _local, "ray": _ray}


def find_tasks(in_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
               unary_dir: str | os.PathLike | None = None) -> list[Task]:
    """The tasks of a folder: every image with its unary and its output ``out_dir/<stem>.png``.

    Images are ``in_dir/images/*`` when that folder exists, else the images of ``in_dir`` (files ending in ``_mask``
    excluded). A unary is the file or folder named ``<stem>`` (any of :data:`UNARY_SUFFIXES`) in ``unary_dir``; without
    one, ``in_dir/masks/<stem>.*``, else ``in_dir/<stem>_mask.*``. Images without exactly one unary, and images
    sharing a stem, become tasks with a ``problem``. Left-over temporary files of interrupted writes in ``out_dir``
    are removed.

    Raises:
        FileNotFoundError: ``in_dir`` or ``unary_dir`` is not a folder.
        ValueError: ``out_dir`` is one of the input folders (outputs would overwrite inputs); no images.
    """
    root, out = Path(in_dir), Path(out_dir)
    for name, folder in (("IN_DIR", root), ("--unary-dir", unary_dir)):
        if folder is not None and not Path(folder).is_dir():
            raise FileNotFoundError(f"{name} {folder} does not exist or is not a folder.")
    flat = not (root / "images").is_dir()
    image_dir = root if flat else root / "images"
    inputs = [image_dir, root / "masks"] + ([Path(unary_dir)] if unary_dir is not None else [])
    if out.exists() and any(out.resolve() == p.resolve() for p in inputs if p.exists()):
        raise ValueError(f"output folder {out} is an input folder; outputs <stem>.png would overwrite inputs. Pick "
                         f"another -o.")
    images = sorted(f for f in image_dir.iterdir() if f.is_file() and not f.name.startswith(".")
                    and f.suffix.lower() in io.IMAGE_SUFFIXES and not (flat and f.stem.endswith("_mask")))
    if not images:
        raise ValueError(f"{image_dir} holds no images ({', '.join(io.IMAGE_SUFFIXES)}).")
    if out.is_dir():
        for leftover in (f for f in out.iterdir() if _TEMPORARY.match(f.name)):
            leftover.unlink(missing_ok=True)
    if unary_dir is not None:
        where, suffix = Path(unary_dir), ""
    else:
        where, suffix = (root, "_mask") if flat else (root / "masks", "")
    candidates: dict[str, list[Path]] = {}
    if where.is_dir():
        for f in where.iterdir():
            if not f.name.startswith(".") and (f.is_dir() or f.suffix.lower() in UNARY_SUFFIXES):
                candidates.setdefault(f.name if f.is_dir() else f.stem, []).append(f)
    stems = [f.stem for f in images]
    tasks = []
    for image in images:
        found = sorted(candidates.get(image.stem + suffix, []))
        problem = None
        if stems.count(image.stem) > 1:
            problem = f"another image has the stem {image.stem!r} (both would write {image.stem}.png); rename one"
        elif not found:
            problem = f"no unary found: expected {where / (image.stem + suffix)}.<png|npy|npz|tif|json>"
        elif len(found) > 1:
            problem = f"{len(found)} unaries match ({', '.join(f.name for f in found)}); keep one"
        tasks.append(Task(image, found[0] if len(found) == 1 else None, out / f"{image.stem}.png", problem))
    return tasks


def run_batch(tasks: Sequence[Task], spec: RefineSpec, *, engine: str = "local", jobs: int = 1,
              on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Run ``tasks`` on an engine; returns their outcomes in task order.

    Args:
        tasks: from :func:`find_tasks` (or built by hand).
        spec: the refiner every worker builds.
        engine: a name in :data:`ENGINES`.
        jobs: worker processes, ≥ 1.
        on_outcome: called in this process with each outcome as it arrives (known failures and skipped
            tasks first).

    Raises:
        ValueError: unknown engine, ``jobs`` < 1, two tasks with one output, or a spec that cannot build a
            refiner (bad preset, no CUDA).
    """
    if engine not in ENGINES:
        raise ValueError(f"{engine!r} is not a valid engine. Valid engines are {', '.join(map(repr, ENGINES))}.")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer ≥ 1, got {jobs!r}.")
    results: list[Outcome | None] = [None] * len(tasks)
    todo: dict[Path, int] = {}  # output path → task index, for the tasks the engine runs

    def record(k: int, outcome: Outcome) -> None:
        results[k] = outcome
        if on_outcome is not None:
            on_outcome(outcome)

    for k, task in enumerate(tasks):
        if task.problem is not None:
            record(k, Outcome(task, "failed", task.problem))
        elif task.out.exists():
            record(k, Outcome(task, "skipped"))
        elif task.out in todo:
            raise ValueError(f"tasks {todo[task.out]} and {k} both write {task.out}; give each its own output.")
        else:
            todo[task.out] = k
            task.out.parent.mkdir(parents=True, exist_ok=True)
    if todo:
        ENGINES[engine]([tasks[k] for k in todo.values()], spec, jobs, lambda o: record(todo[o.task.out], o))
    missing = [tasks[k].image.name for k, r in enumerate(results) if r is None]
    if missing:
        raise RuntimeError(f"engine {engine!r} reported no outcome for {len(missing)} task(s) ({missing[0]}, ...).")
    return results  # type: ignore[return-value]  (every entry is set)


@contextmanager
def quiet_per_image_logs() -> Iterator[None]:
    """Within the block, ``crfcore.unary_io`` logs warnings only: its INFO line per image would bury a progress bar."""
    logger = logging.getLogger("crfcore.unary_io")
    saved = logger.level
    logger.setLevel(max(saved, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(saved)
