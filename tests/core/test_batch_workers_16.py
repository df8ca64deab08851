"""Issue 16: batch workers never outlive their parent, a dead worker fails only its image, the engine starts only
when there is work, and ``--void``.

Processes are found through ``/proc`` (Linux); those tests skip elsewhere.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import crfcore
from crfcore import io
from crfcore.batch import ENGINES, RefineSpec, find_tasks, run_batch
from crfcore.cli import main
from crfcore.params import ConvCRFParams

H, W = 24, 32
ROOT = Path(__file__).resolve().parents[2]
needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds processes through /proc (Linux)")


def _folder(root: Path, count: int, size: tuple[int, int] = (H, W)) -> Path:
    rng = np.random.default_rng(0)
    for k in range(count):
        labels = np.zeros(size, np.int64)
        labels[:, size[1] // 2 + k % 5:] = 1
        image = np.clip(np.array([[40, 40, 40], [190, 80, 60]])[labels] + rng.normal(0, 10, (*size, 3)), 0, 255)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        io.save_image(root / "images" / f"im{k:02d}.png", image.astype(np.uint8))
        io.save_mask(root / "masks" / f"im{k:02d}.png", labels)
    return root


def _children(pid: int) -> dict[int, str]:
    """Live (not zombie) processes whose parent is ``pid``: ``{pid: command line}``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry.name)] = cmdline
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@needs_proc
@pytest.mark.slow
def test_sigkill_of_the_batch_parent_leaves_no_worker_alive_after_5_s_16(tmp_path):
    # images that take a worker well over 5 s each (a 31×31 window at full resolution, 50 iterations), so a worker
    # busy refining when the parent dies would still be alive 5 s later unless something ends it
    data = _folder(tmp_path / "in", 4, (160, 160))
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    parent = subprocess.Popen([sys.executable, "-m", "crfcore.cli", "batch", str(data), "-o", str(tmp_path / "out"),
                               "--jobs", "2", "--iterations", "50", "--filter-size", "31", "--blur", "1"], env=env,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not any((tmp_path / "out").glob("im*.png")):  # workers are refining their second images
            assert parent.poll() is None, "the batch ended before any worker could be seen"
            assert time.monotonic() < deadline, "no output within 240 s"
            time.sleep(0.2)
        helpers = _children(parent.pid)
        workers = [p for p, cmd in helpers.items() if "spawn_main" in cmd]
        assert len(workers) == 2, helpers
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    time.sleep(5)
    survivors = {p: cmd for p, cmd in helpers.items() if _alive(p)}
    assert not survivors, f"alive 5 s after the parent's SIGKILL: {survivors}"


@needs_proc
@pytest.mark.slow
def test_a_killed_worker_fails_only_its_image_and_the_run_goes_on_16(tmp_path):
    data = _folder(tmp_path / "in", 6)
    stop, killed = threading.Event(), []

    def kill_first_worker() -> None:
        while not stop.is_set() and not killed:
            for pid, cmd in _children(os.getpid()).items():
                if "spawn_main" in cmd:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    break
            stop.wait(0.02)

    killer = threading.Thread(target=kill_first_worker)
    killer.start()
    try:
        outcomes = run_batch(find_tasks(data, tmp_path / "out"), RefineSpec("convcrf", ConvCRFParams(iterations=2)),
                             jobs=2)
    finally:
        stop.set()
        killer.join()
    assert len(killed) == 1
    failed = [o for o in outcomes if o.status == "failed"]
    assert len(failed) == 1 and [o.status for o in outcomes].count("done") == 5
    assert "the worker process refining it died (killed by SIGKILL" in failed[0].error
    assert not failed[0].task.out.exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        o.task.out.name for o in outcomes if o.status == "done")


def test_a_rerun_with_every_output_present_starts_no_engine_16(tmp_path, capsys, monkeypatch):
    data = _folder(tmp_path / "in", 2)
    assert main(["batch", str(data), "-o", str(tmp_path / "out"), "--jobs", "1", "--iterations", "1"]) == 0

    def must_not_start(*args, **kwargs):
        raise AssertionError("the engine was started although every output is present")

    monkeypatch.setitem(ENGINES, "ray", must_not_start)
    capsys.readouterr()
    assert main(["batch", str(data), "-o", str(tmp_path / "out"), "--engine", "ray"]) == 0
    assert "0 refined, 2 skipped (output exists), 0 failed" in capsys.readouterr().err


def test_batch_void_option_marks_that_label_unannotated_16(tmp_path):
    data = _folder(tmp_path / "in", 1)
    mask = io.load_mask(data / "masks" / "im00.png")
    mask[:6] = 7
    io.save_mask(data / "masks" / "im00.png", mask)
    assert main(["batch", str(data), "-o", str(tmp_path / "out"), "--jobs", "1", "--void", "7",
                 "--iterations", "2"]) == 0
    image = io.load_image(data / "images" / "im00.png")
    expected = crfcore.refine_mask(image, mask, method="convcrf", void=7, iterations=2, device="cpu").labels
    np.testing.assert_array_equal(io.load_mask(tmp_path / "out" / "im00.png"), expected)
