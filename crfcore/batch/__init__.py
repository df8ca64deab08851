"""Refine a whole folder: one task per image, a pure per-image function, and interchangeable engines to run them.

* :mod:`crfcore.batch.tasks`: :func:`find_tasks` pairs each image with its unary and output ``OUT_DIR/<stem>.png``;
  :class:`Refiner` is built once per worker from a picklable :class:`RefineSpec`; :func:`refine_file` does one image
  and returns its :class:`Outcome` (it never raises for a bad input).
* :mod:`crfcore.batch.engine`: the engine interface, :data:`ENGINES` and :func:`run_batch`, which skips complete
  outputs, redoes damaged ones and starts an engine only when there is work.
* :mod:`crfcore.batch.local`: worker processes on this machine that end when their parent dies; a worker that dies
  fails only the image it held, and a fresh worker takes over.
* :mod:`crfcore.batch.ray`: a Ray cluster; without an address, a Ray instance on 127.0.0.1 with no dashboard.

The modules import in one direction (tasks ← local, ray ← engine ← this package): no cycle.
"""

from __future__ import annotations

from .engine import ENGINES, Engine, run_batch
from .tasks import (DEFAULT_VOID, UNARY_SUFFIXES, Outcome, RefineSpec, Refiner, Task, find_tasks, output_ok,
                    quiet_per_image_logs, refine_file)

__all__ = ["Task", "RefineSpec", "Outcome", "Refiner", "Engine", "ENGINES", "UNARY_SUFFIXES", "DEFAULT_VOID",
           "find_tasks", "refine_file", "output_ok", "run_batch", "quiet_per_image_logs"]
