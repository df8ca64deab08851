"""Helper process for the crash test in test_project.py: saves edited masks in a loop until it is killed.

Run as ``python crash_worker.py FOLDER``. Importing crfcore takes seconds, too long to pay a hundred times, so this
process imports it once and then, for each line ``SEED`` read from stdin, forks a child that opens the project in
FOLDER afresh and saves masks forever: each round edits one of the project's images (a random rectangle of a random
class, or now and then a revert to an earlier revision) and, after ``save_mask``/``revert`` returns (committed),
writes ``saved <revision id> <digest of the labels it saved>`` to stdout, flushed, in one ``write``. The test kills the
child with SIGKILL; this process then writes ``exit <status>`` and waits for the next seed. Before forking it writes
``child <pid>``.
"""

from __future__ import annotations

import os
import sys
import traceback

import numpy as np

import crfcore.refiners  # noqa: F401  the method registry Project.save_mask checks: imported once, before the forks
from crfcore.project import Project, mask_digest


def _say(line: str) -> None:
    os.write(sys.stdout.fileno(), (line + "\n").encode())


def _save_forever(folder: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    project = Project.open(folder)
    images = project.images()
    while True:
        record = images[int(rng.integers(len(images)))]
        history = project.revisions(record.id)
        if history and rng.random() < 0.1:
            target = history[int(rng.integers(len(history)))]
            rid = project.revert(record.id, target.id)
            labels = project.load_revision(target.id)
        else:
            labels = project.latest_mask(record.id)
            labels = np.zeros((record.height, record.width), np.int64) if labels is None else labels
            y, x = rng.integers(0, record.height), rng.integers(0, record.width)
            h, w = rng.integers(1, record.height // 2), rng.integers(1, record.width // 2)
            labels[y:y + h, x:x + w] = rng.integers(0, 21)
            rid = project.save_mask(record.id, labels, method="convcrf", note=f"seed {seed}")
        _say(f"saved {rid} {mask_digest(labels)}")


def main() -> None:
    folder = sys.argv[1]
    for line in sys.stdin:
        seed = int(line)
        pid = os.fork()
        if pid == 0:
            try:
                _save_forever(folder, seed)
            except BaseException:
                traceback.print_exc()
            os._exit(1)
        _say(f"child {pid}")
        _, status = os.waitpid(pid, 0)
        _say(f"exit {status}")


if __name__ == "__main__":
    main()
