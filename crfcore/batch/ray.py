"""The ``"ray"`` batch engine (issue 12): refine a folder on a Ray cluster, with the outputs of the local engine.

This module imports Ray only when the engine runs, so ``import crfcore`` never imports Ray; without Ray the engine
raises an :class:`~crfcore.errors.InputError` saying ``pip install 'crf-studio[cluster]'``.

Where it runs: the cluster at ``address`` (or ``RAY_ADDRESS``); without either, a Ray instance on this machine that
listens on 127.0.0.1 only and starts no dashboard (Ray's job API runs code for whoever reaches it). Ray chooses the
address it binds from its node address, which it would otherwise take from the machine's network interface; it is
set to 127.0.0.1 with Ray's own single-machine switch (``ENABLE_RAY_CLUSTER``, off by default on Windows and macOS),
and checked after start: a Ray that did not take it is shut down and refused.

How it runs:

* The tasks are cut into chunks, one Ray task each: about four chunks per slot of the cluster, at most
  :data:`CHUNK_MAX` images each, so progress arrives every few images and a lost worker costs little.
* A slot is one CPU (``num_cpus=1``, one torch thread unless ``RefineSpec.threads`` says more), or one GPU
  (``num_gpus=1``) for ``device="cuda"``, which needs a cluster with GPUs.
* Each worker process builds one :class:`~crfcore.batch.Refiner` per batch (a module-level cache keyed by a batch
  token) and calls :func:`~crfcore.batch.refine_file` on its images, which writes each output atomically.
* Paths are made absolute and must name the same files on every node (a shared filesystem); crfcore must be
  installed on every node.
* A worker that dies (SIGKILL, out of memory, node lost) has its chunk rerun by Ray, up to :data:`MAX_RETRIES`
  times; images of the chunk already written are then reported done without being refined again. A chunk that
  still fails reports each of its images failed with the reason; a rerun of the batch resumes.
* Outcomes reach ``emit`` in the calling process chunk by chunk. On an exception there (Ctrl-C), chunks not yet
  finished are cancelled and waited for, so nothing writes after the engine returns.
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import ModuleType
from typing import Any

from ..errors import InputError
from .tasks import Outcome, Refiner, RefineSpec, Task, output_ok, refine_file

__all__ = ["CHUNK_MAX", "MAX_RETRIES", "LOOPBACK", "import_ray", "connect", "ray_engine"]

log = logging.getLogger(__name__)

CHUNK_MAX = 8
"""Most images in one Ray task."""

MAX_RETRIES = 3
"""Times Ray reruns a chunk whose worker process died (``max_retries`` of the task)."""

LOOPBACK = "127.0.0.1"
"""The only address a Ray instance started here (no address given) listens on."""

_CANCEL_WAIT_S = 30.0  # how long an interrupted engine waits for its cancelled chunks to stop

_CACHE: tuple[str, Refiner] | None = None  # in a worker process: (batch token, the batch's Refiner)


def import_ray() -> ModuleType:
    """The ``ray`` module.

    Raises:
        InputError: Ray is not installed; the message names the extra that installs it.
    """
    try:
        import ray
    except ImportError:
        raise InputError("the ray engine needs Ray, which is not installed: pip install 'crf-studio[cluster]'") \
            from None
    return ray


def connect(address: str | None = None) -> bool:
    """Connect this process to a Ray cluster unless it already is; returns True when this call connected it.

    Args:
        address: the cluster's address (``HOST:PORT`` of the head node, ``"auto"`` for the one started on this
            machine by ``ray start``, ``ray://HOST:10001`` for Ray Client); None uses ``RAY_ADDRESS`` when set,
            else starts a Ray instance on this machine, on 127.0.0.1 only and without a dashboard, for the life of
            the process (or until ``ray.shutdown()``).

    Raises:
        InputError: Ray is not installed; ``address`` is given but this process is already connected (to a cluster
            it cannot check); a local Ray that would not stay on 127.0.0.1.
    """
    ray = import_ray()
    if ray.is_initialized():
        if address is not None:
            raise InputError(f"address {address!r} was given but this process is already connected to Ray; call "
                             f"ray.shutdown() first, or pass address=None to use the connected cluster.")
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is not None:
        ray.init(address=address)
        return True
    _start_on_loopback(ray)
    return True


def _start_on_loopback(ray: ModuleType) -> None:
    """Start a Ray instance whose every server listens on :data:`LOOPBACK`, without a dashboard."""
    from ray._private import ray_constants, services

    if not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):
        raise InputError(f"this Ray version ({ray.__version__}) offers no way to keep a local instance on "
                         f"{LOOPBACK}; start one yourself (ray start --head --node-ip-address {LOOPBACK} "
                         f"--include-dashboard false) and pass --address auto.")
    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False  # Ray's single-machine mode: its node address becomes the loopback
    try:
        ray.init(include_dashboard=False, _node_ip_address=LOOPBACK)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
    node = services.get_node_ip_address()
    if node != LOOPBACK:
        ray.shutdown()
        raise InputError(f"the local Ray instance took node address {node}, not {LOOPBACK}, so it would listen on "
                         f"the network; it was shut down. Start one yourself (ray start --head --node-ip-address "
                         f"{LOOPBACK}) and pass --address auto.")
    log.info("ray engine: started a local Ray instance on %s (no dashboard)", LOOPBACK)


def _refine_chunk(token: str, spec: RefineSpec, tasks: list[Task]) -> list[Outcome]:
    """In a Ray worker: refine ``tasks`` with this worker's Refiner for batch ``token`` (built on first use)."""
    global _CACHE
    if _CACHE is None or _CACHE[0] != token:
        _CACHE = (token, Refiner(spec))
    refiner = _CACHE[1]
    # an output that exists was written by an earlier attempt of this chunk (run_batch only sends missing ones)
    return [Outcome(task, "done") if output_ok(task.out) else refine_file(task, refiner) for task in tasks]


def _failure(ray: ModuleType, exc: Exception) -> str:
    """The reason, for the summary, that a chunk failed as a whole."""
    if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause is not None:
        cause = exc.cause
        return f"the Ray worker could not refine it: {type(cause).__name__}: {cause}"
    return (f"the Ray worker running it was lost {MAX_RETRIES + 1} times ({type(exc).__name__}: out of memory? a "
            f"node lost?); run the batch again to resume")


def _slots(ray: ModuleType, spec: RefineSpec) -> int:
    """How many chunks the cluster runs at once: its GPUs for ``device="cuda"``, else its CPUs."""
    resources: dict[str, Any] = ray.cluster_resources()
    if spec.device == "cuda":
        gpus = int(resources.get("GPU", 0))
        if gpus < 1:
            raise InputError("device 'cuda' was asked for but the Ray cluster has no GPU; use --device cpu, or "
                             "start the workers on GPU nodes.")
        return gpus
    return max(1, int(resources.get("CPU", 1)) // max(1, spec.threads or 1))


def ray_engine(tasks: Sequence[Task], spec: RefineSpec, jobs: int, emit: Callable[[Outcome], None], *,
               address: str | None = None) -> None:
    """The ``"ray"`` engine of :data:`crfcore.batch.ENGINES`: run ``tasks`` on a Ray cluster.

    Connects with :func:`connect` (``address``, else ``RAY_ADDRESS``, else a Ray instance on 127.0.0.1, shut down
    at the end) when this process is not connected yet. ``jobs`` is not used: the cluster's slots set the
    parallelism.

    Raises:
        InputError: Ray is not installed; the spec cannot build a refiner (bad preset); ``device="cuda"`` on a
            cluster without GPUs.
    """
    ray = import_ray()
    Refiner(replace(spec, device="cpu", threads=None))  # a bad preset fails here; this process may have no GPU
    started = connect(address)
    try:
        _run(ray, tasks, spec, emit)
    finally:
        if started:
            ray.shutdown()


def _run(ray: ModuleType, tasks: Sequence[Task], spec: RefineSpec, emit: Callable[[Outcome], None]) -> None:
    slots = _slots(ray, spec)
    size = max(1, min(CHUNK_MAX, math.ceil(len(tasks) / (4 * slots))))
    if spec.device == "cuda":
        options: dict[str, Any] = {"num_gpus": 1}
    else:
        threads = spec.threads or 1
        options, spec = {"num_cpus": threads}, replace(spec, threads=threads)
    remote = ray.remote(max_retries=MAX_RETRIES, **options)(_refine_chunk)
    token = uuid.uuid4().hex
    log.info("ray engine: %d images in chunks of %d on %d %s slot(s)", len(tasks), size, slots,
             "GPU" if spec.device == "cuda" else "CPU")
    pending: dict[Any, Sequence[Task]] = {}
    for start in range(0, len(tasks), size):
        chunk = tasks[start:start + size]
        shared = [replace(t, image=t.image.absolute(), out=t.out.absolute(),
                          unary=None if t.unary is None else t.unary.absolute()) for t in chunk]
        pending[remote.remote(token, spec, shared)] = chunk
    try:
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            chunk = pending.pop(ref)
            try:
                outcomes = [replace(o, task=t) for o, t in zip(ray.get(ref), chunk, strict=True)]
            except ray.exceptions.RayError as exc:
                reason = _failure(ray, exc)
                outcomes = [Outcome(t, "failed", reason) for t in chunk]
            for outcome in outcomes:
                emit(outcome)
    finally:  # Ctrl-C or an error in emit: stop the rest before returning, so nothing writes afterwards
        for ref in pending:
            ray.cancel(ref)
        if pending:
            ray.wait(list(pending), num_returns=len(pending), timeout=_CANCEL_WAIT_S)
