"""The engine interface and :func:`run_batch`, which decides what an engine runs.

An engine is a callable ``engine(tasks, spec, jobs, emit, **options)`` that calls
:func:`~crfcore.batch.tasks.refine_file` on every task somewhere (a worker process, a Ray cluster) and ``emit``\\ s
each :class:`~crfcore.batch.tasks.Outcome` in the calling process, exactly once per task, in any order.
:data:`ENGINES` maps names to engines: ``"local"`` (:mod:`crfcore.batch.local`) and ``"ray"``
(:mod:`crfcore.batch.ray`, which imports Ray only when it runs).

:func:`run_batch` fails tasks known to be broken, skips tasks whose output is complete, redoes outputs that are empty
or do not decode, and starts the engine only when something is left to do (a rerun with every output present starts
no workers and no Ray).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..errors import InputError
from . import local, ray
from .tasks import Outcome, RefineSpec, Task, output_ok

__all__ = ["Engine", "ENGINES", "run_batch"]

log = logging.getLogger(__name__)


class Engine(Protocol):
    """What :data:`ENGINES` holds: run ``tasks`` with ``jobs`` workers, ``emit`` each outcome in this process."""

    def __call__(self, tasks: Sequence[Task], spec: RefineSpec, jobs: int, emit: Callable[[Outcome], None],
                 **options: Any) -> None: ...


ENGINES: dict[str, Engine] = {"local": local.local_engine, "ray": ray.ray_engine}


def run_batch(tasks: Sequence[Task], spec: RefineSpec, *, engine: str = "local", jobs: int = 1,
              on_outcome: Callable[[Outcome], None] | None = None,
              engine_options: Mapping[str, Any] | None = None) -> list[Outcome]:
    """Run ``tasks`` on an engine; returns their outcomes in task order.

    Args:
        tasks: from :func:`~crfcore.batch.tasks.find_tasks` (or built by hand).
        spec: the refiner every worker builds.
        engine: a name in :data:`ENGINES`.
        jobs: worker processes, ≥ 1.
        on_outcome: called in this process with each outcome as it arrives (known failures and skipped
            tasks first).
        engine_options: keyword arguments for the engine (``"ray"``: ``address``).

    Raises:
        InputError: unknown engine, ``jobs`` < 1, two tasks with one output, or a spec that cannot build a
            refiner (bad preset, no CUDA).
    """
    if engine not in ENGINES:
        raise InputError(f"{engine!r} is not a valid engine. Valid engines are {', '.join(map(repr, ENGINES))}.")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InputError(f"jobs must be an integer ≥ 1, got {jobs!r}.")
    results: list[Outcome | None] = [None] * len(tasks)
    todo: dict[Path, int] = {}  # output path → task index, for the tasks the engine runs

    def record(k: int, outcome: Outcome) -> None:
        results[k] = outcome
        if on_outcome is not None:
            on_outcome(outcome)

    for k, task in enumerate(tasks):
        if task.problem is not None:
            record(k, Outcome(task, "failed", task.problem))
        elif task.out in todo:
            raise InputError(f"tasks {todo[task.out]} and {k} both write {task.out}; give each its own output.")
        elif task.out.exists() and output_ok(task.out):
            record(k, Outcome(task, "skipped"))
        else:
            if task.out.exists():
                log.warning("%s exists but is empty or does not decode; refining it again", task.out)
            todo[task.out] = k
            task.out.parent.mkdir(parents=True, exist_ok=True)
    if todo:
        run = functools.partial(ENGINES[engine], **engine_options) if engine_options else ENGINES[engine]
        run([tasks[k] for k in todo.values()], spec, jobs, lambda o: record(todo[o.task.out], o))
    missing = [tasks[k].image.name for k, r in enumerate(results) if r is None]
    if missing:
        raise RuntimeError(f"engine {engine!r} reported no outcome for {len(missing)} task(s) ({missing[0]}, ...).")
    return results  # type: ignore[return-value]  (every entry is set)
