"""crfcore.batch.ray: the Ray engine writes the local engine's masks, resumes, and survives a killed worker.

Expected masks come from the local engine (``jobs=1``, in this process) on the same five CamVid pairs; the Ray tests
run on a local Ray instance of 2 CPUs, started once for the module, and skip when Ray is not installed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from crfcore import io
from crfcore.batch import RefineSpec, find_tasks, run_batch
from crfcore.cli import main
from crfcore.params import ConvCRFParams
from tests.conftest import require_shared

SPEC = RefineSpec("convcrf", ConvCRFParams(iterations=2), threads=1)
IMAGES = 5


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="the ray engine needs Ray (pip install 'crf-studio[cluster]')")
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def camvid(tmp_path_factory) -> Path:
    """The first IMAGES CamVid pairs, linked as ``images/`` and ``masks/`` of a fresh folder."""
    pairs = io.find_pairs(require_shared("data", "camvid"))[:IMAGES]
    root = tmp_path_factory.mktemp("camvid")
    for sub in ("images", "masks"):
        (root / sub).mkdir()
    for image, mask in pairs:
        (root / "images" / image.name).symlink_to(image.resolve())
        (root / "masks" / mask.name).symlink_to(mask.resolve())
    return root


@pytest.fixture(scope="module")
def expected(camvid, tmp_path_factory) -> dict[str, bytes]:
    """The local engine's output PNG of each image, by file name."""
    out = tmp_path_factory.mktemp("local")
    outcomes = run_batch(find_tasks(camvid, out), SPEC, engine="local", jobs=1)
    assert [o.status for o in outcomes] == ["done"] * IMAGES
    return {p.name: p.read_bytes() for p in out.iterdir()}


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}


def test_ray_engine_writes_the_local_engines_masks_byte_for_byte(ray_local, camvid, expected, tmp_path):
    seen = []
    outcomes = run_batch(find_tasks(camvid, tmp_path), SPEC, engine="ray", on_outcome=seen.append)
    assert [o.status for o in outcomes] == ["done"] * IMAGES
    assert sorted(o.task.out for o in seen) == sorted(tmp_path / name for name in expected)
    assert _outputs(tmp_path) == expected


def test_ray_engine_resumes_an_interrupted_batch_redoing_only_missing_images(ray_local, camvid, expected, tmp_path):
    def interrupt(outcome) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(find_tasks(camvid, tmp_path), SPEC, engine="ray", on_outcome=interrupt)
    kept = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.png")}
    assert 1 <= len(kept) < IMAGES
    outcomes = run_batch(find_tasks(camvid, tmp_path), SPEC, engine="ray")
    assert {o.task.out.name: o.status for o in outcomes} == {
        name: "skipped" if name in kept else "done" for name in expected}
    assert {name: (tmp_path / name).stat().st_mtime_ns for name in kept} == kept
    assert _outputs(tmp_path) == expected


def _started_by_this_process(pid: int) -> bool:
    """Whether ``pid`` descends from this process (the Ray instance the fixture started, not another one)."""
    while pid > 1:
        if pid == os.getpid():
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


def _kill_first_chunk_worker(stop: threading.Event, killed: list[int]) -> None:
    """Poll for a Ray worker of this test whose process title says it runs a chunk; SIGKILL the first one found."""
    while not stop.is_set():
        for entry in Path("/proc").iterdir():
            try:
                title = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
            except OSError:  # the process has exited
                continue
            if title.startswith(b"ray::_refine_chunk") and _started_by_this_process(int(entry.name)):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
                return
        stop.wait(0.05)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the Ray worker's process through /proc (Linux)")
def test_a_worker_killed_mid_chunk_is_rerun_and_leaves_no_partial_mask(ray_local, camvid, expected, tmp_path):
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_first_chunk_worker, args=(stop, killed))
    killer.start()
    try:
        outcomes = run_batch(find_tasks(camvid, tmp_path), SPEC, engine="ray")
    finally:
        stop.set()
        killer.join()
    assert len(killed) == 1, "no Ray worker was seen running a chunk, so none was killed"
    assert [o.status for o in outcomes] == ["done"] * IMAGES
    assert _outputs(tmp_path) == expected
    find_tasks(camvid, tmp_path)  # removes the killed write's temporary file, if the kill came during one
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(expected)


def test_engine_ray_without_ray_installed_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    (tmp_path / "in").mkdir()
    io.save_image(tmp_path / "in" / "a.png", np.zeros((8, 8, 3), np.uint8))
    io.save_mask(tmp_path / "in" / "a_mask.png", np.zeros((8, 8), np.int64))
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as it does where Ray is not installed
    assert main(["batch", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--engine", "ray"]) == 2
    assert "pip install 'crf-studio[cluster]'" in capsys.readouterr().err
    assert not (tmp_path / "out" / "a.png").exists()


def test_address_without_engine_ray_is_a_usage_error(tmp_path, capsys):
    assert main(["batch", str(tmp_path), "-o", str(tmp_path / "out"), "--address", "auto"]) == 2
    assert "--address is for --engine ray" in capsys.readouterr().err


def test_importing_crfcore_does_not_import_ray():
    code = "import sys, crfcore, crfcore.batch, crfcore.cli; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


_LISTENERS = r'''
import json, os, sys
from pathlib import Path
from crfcore.batch.ray import connect, import_ray

connect()
ray = import_ray()
assert ray.get(ray.remote(lambda: 1).remote()) == 1  # a worker process has started too
me = os.getpid()

def tree(root):
    kids = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            kids.setdefault(int(stat[stat.rindex(")") + 2:].split()[1]), []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += kids.get(pid, [])
    return found

sockets = {}
for pid in tree(me):
    for fd in Path(f"/proc/{pid}/fd").glob("*"):
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            sockets[target[8:-1]] = pid
listening = []
for table in ("tcp", "tcp6"):
    for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in sockets:  # state LISTEN, owned by this Ray
            cmd = Path(f"/proc/{sockets[fields[9]]}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            listening.append([table, fields[1], cmd])
commands = [Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode() for p in tree(me)
            if Path(f"/proc/{p}/cmdline").exists()]
print(json.dumps({"listening": listening, "commands": commands}))
ray.shutdown()
'''


def _loopback(table: str, address: str) -> bool:
    """True for a /proc/net listen address on 127.0.0.0/8 (IPv4, or IPv4-mapped IPv6) or ::1."""
    host = address.split(":")[0]
    if table == "tcp":
        return host[-2:] == "7F"  # little-endian: the first octet is the last byte
    return host == "00000000000000000000000001000000" or (host[:24] == "0000000000000000FFFF0000"
                                                          and host[-2:] == "7F")


@pytest.mark.skipif(not Path("/proc/net/tcp").is_file(), reason="reads listening sockets from /proc (Linux)")
@pytest.mark.slow
def test_a_local_ray_listens_on_127_0_0_1_only_and_starts_no_dashboard_16():
    pytest.importorskip("ray", reason="the ray engine needs Ray (pip install 'crf-studio[cluster]')")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-c", _LISTENERS], capture_output=True, text=True, timeout=300,
                            env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["listening"], "found no listening socket of the Ray processes: the check saw nothing"
    exposed = [entry for entry in report["listening"] if not _loopback(entry[0], entry[1])]
    assert not exposed, f"Ray listens beyond the loopback: {exposed}"
    # Ray always runs its head process (dashboard.py); without a dashboard it loads no web UI and no job API
    # (--minimal, only the usage-stats module) and listens on no port
    heads = [c for c in report["commands"] if "dashboard/dashboard.py" in c]
    assert all("--minimal" in c and "--disable-frontend" in c and "--modules-to-load=UsageStatsHead" in c
               for c in heads), heads
    assert not [e for e in report["listening"] if "dashboard/dashboard.py" in e[2]], report["listening"]
