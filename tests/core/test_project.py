"""crfcore.project: the SQLite catalog, mask revisions, recovery on open, and a SIGKILL crash test.

Expected masks are the arrays the tests themselves saved; files are decoded independently with Pillow and digests
recomputed with hashlib by the recipe in ``mask_digest``'s docstring.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crfcore.params import ConvCRFParams
from crfcore.project import CATALOG_DIR, SCHEMA_VERSION, Project, ProjectError, mask_digest

H, W = 24, 32


def _images(folder: Path, n: int = 2) -> list[Path]:
    paths = []
    for k in range(n):
        path = folder / f"img{k}.png"
        Image.fromarray(np.full((H, W, 3), 40 * k, np.uint8)).save(path)
        paths.append(path)
    return paths


def _labels(value: int = 3) -> np.ndarray:
    labels = np.zeros((H, W), np.int64)
    labels[4:12, 6:20] = value
    return labels


def _independent_digest(png: Path) -> str:
    arr = np.asarray(Image.open(png))
    return hashlib.sha256(f"{arr.shape[0]}x{arr.shape[1]};".encode() + arr.astype("<u2").tobytes()).hexdigest()


@pytest.fixture
def project(tmp_path):
    _images(tmp_path)
    with Project.open(tmp_path) as p:
        p.add_images(sorted(tmp_path.glob("img*.png")))
        yield p


def test_open_creates_wal_catalog_with_foreign_keys_and_schema_version(tmp_path):
    Project.open(tmp_path).close()
    db = sqlite3.connect(tmp_path / CATALOG_DIR / "catalog.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("INSERT INTO revisions (image_id, file, digest, created) VALUES (99, 'x', 'd', 0)")


def test_open_refuses_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Project.open(tmp_path / "nope")


def test_add_images_reads_upright_size_and_keeps_ids(project, tmp_path):
    records = project.images()
    assert [r.path.name for r in records] == ["img0.png", "img1.png"]
    assert (records[0].width, records[0].height) == (W, H)
    assert project.add_images([tmp_path / "img1.png", "img0.png"]) == [records[1].id, records[0].id]
    outside = _images(tmp_path / "..", 1)[0]
    (new_id,) = project.add_images([outside])
    assert project.image(outside.resolve()).id == new_id and project.image(new_id).path == outside.resolve()


def test_add_images_rejects_a_broken_file_and_adds_nothing(project, tmp_path):
    (tmp_path / "bad.png").write_text("not a png")
    _images(tmp_path / "..", 1)
    with pytest.raises(ValueError, match="bad.png"):
        project.add_images([tmp_path / ".." / "img0.png", tmp_path / "bad.png"])
    assert len(project.images()) == 2


def test_save_mask_roundtrips_and_chains_revisions(project):
    first = project.save_mask("img0.png", _labels(3), note="brush")
    second = project.save_mask(1, _labels(300), preset=ConvCRFParams(iterations=7))
    history = project.revisions(1)
    assert [r.id for r in history] == [first, second]
    assert history[0].parent is None and history[1].parent == first and history[0].note == "brush"
    assert history[1].method == "convcrf" and history[1].preset["params"]["iterations"] == 7
    np.testing.assert_array_equal(project.latest_mask(1), _labels(300))
    assert _independent_digest(history[1].file) == history[1].digest == mask_digest(_labels(300))
    assert project.latest_mask(2) is None and project.revisions(2) == []


def test_revert_appends_a_revision_with_the_old_labels(project):
    old = project.save_mask(1, _labels(3), preset={"method": "densecrf", "params": {"iterations": 2}})
    project.save_mask(1, _labels(5))
    new = project.revert(1, old)
    rev = project.revision(new)
    assert rev.note == f"revert to {old}" and rev.method == "densecrf" and rev.parent == new - 1
    np.testing.assert_array_equal(project.latest_mask(1), _labels(3))
    with pytest.raises(ProjectError, match="belongs to image 1"):
        project.revert(2, old)


def test_save_mask_rejects_bad_labels_and_leaves_no_row_or_file(project):
    with pytest.raises(ValueError, match=r"shape \(3, 3\) but image img0.png is 24×32"):
        project.save_mask(1, np.zeros((3, 3), np.int64))
    with pytest.raises(ValueError, match="0..65535"):
        project.save_mask(1, np.full((H, W), 70000))
    with pytest.raises(ValueError, match="integer"):
        project.save_mask(1, np.zeros((H, W), np.float32))
    with pytest.raises(ProjectError, match="not in the project"):
        project.save_mask("missing.png", _labels())
    assert project.revisions(1) == []
    assert list((project.folder / CATALOG_DIR / "revisions").iterdir()) == []


def test_open_removes_orphan_revision_files_and_keeps_committed_ones(project):
    rid = project.save_mask(1, _labels())
    project.close()
    revisions = project.folder / CATALOG_DIR / "revisions"
    Image.fromarray(_labels(4).astype(np.uint8)).save(revisions / "r000099.png")
    (revisions / ".r000100.png.0123abcd.tmp").write_bytes(b"partial")
    (revisions / "notes.txt").write_text("not ours")
    with Project.open(project.folder) as again:
        assert sorted(f.name for f in revisions.iterdir()) == ["notes.txt", f"r{rid:06d}.png"]
        assert again.verify() == []


def test_load_revision_detects_a_file_changed_outside(project):
    rid = project.save_mask(1, _labels(3))
    Image.fromarray(_labels(4).astype(np.uint8)).save(project.revision(rid).file)
    with pytest.raises(ProjectError, match="checksum mismatch.*revert"):
        project.latest_mask(1)
    assert len(project.verify()) == 1


def test_open_reports_a_damaged_catalog_with_the_fix(tmp_path):
    Project.open(tmp_path).close()
    catalog = tmp_path / CATALOG_DIR / "catalog.sqlite"
    catalog.write_bytes(b"garbage" * 1000)
    with pytest.raises(ProjectError, match=r"damaged.*\.recover.*move it aside"):
        Project.open(tmp_path)


def test_open_reports_a_corrupt_page_found_by_integrity_check(project):
    for k in range(40):
        project.save_mask(1 + k % 2, _labels(k))
    project.close()
    catalog = project.folder / CATALOG_DIR / "catalog.sqlite"
    db = sqlite3.connect(catalog)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    data = bytearray(catalog.read_bytes())
    data[-page_size:] = bytes(range(256)) * (page_size // 256)  # the last b-tree page becomes noise
    catalog.write_bytes(bytes(data))
    with pytest.raises(ProjectError, match="damaged"):
        Project.open(project.folder)


def test_open_refuses_a_newer_schema(tmp_path):
    Project.open(tmp_path).close()
    db = sqlite3.connect(tmp_path / CATALOG_DIR / "catalog.sqlite")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(ProjectError, match="newer than this CRF Studio"):
        Project.open(tmp_path)


def test_classes_roundtrip_and_validation(project):
    assert project.classes == []
    project.classes = ["background", "horse"]
    assert project.classes == ["background", "horse"]
    with pytest.raises(ValueError, match="unique"):
        project.classes = ["a", "a"]
    with pytest.raises(ValueError, match="non-empty"):
        project.classes = ["a", ""]
    assert project.classes == ["background", "horse"]


def test_add_unary_registers_and_updates_kind(project, tmp_path):
    mask = tmp_path / "img0_mask.png"
    Image.fromarray(_labels().astype(np.uint8)).save(mask)
    uid = project.add_unary(1, mask)
    assert project.add_unary("img0.png", mask, kind="labels") == uid
    (source,) = project.unaries(1)
    assert source.path == mask and source.kind == "labels"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        project.add_unary(1, tmp_path / "none.npy")


def test_closed_project_says_how_to_reopen(project):
    project.close()
    with pytest.raises(ProjectError, match="closed; open it again"):
        project.images()


@pytest.mark.slow
def test_sigkill_during_autosave_loses_no_committed_revision(tmp_path):
    """100 SIGKILLs at seeded random moments of a process saving masks; after each the catalog must be sound."""
    rng = random.Random(9)
    _images(tmp_path, 3)
    with Project.open(tmp_path) as p:
        p.add_images(sorted(tmp_path.glob("img*.png")))
    worker = subprocess.Popen([sys.executable, str(Path(__file__).with_name("crash_worker.py")), str(tmp_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    reported: dict[int, str] = {}
    orphans_removed = mid_save = 0
    revisions = tmp_path / CATALOG_DIR / "revisions"
    start = time.perf_counter()
    try:
        for kill in range(100):
            worker.stdin.write(f"{kill}\n")
            worker.stdin.flush()
            lines = [worker.stdout.readline()]
            while not lines[-1].startswith("child"):
                lines.append(worker.stdout.readline())
            time.sleep(rng.uniform(0.0, 0.2))
            os.kill(int(lines[-1].split()[1]), signal.SIGKILL)
            while not lines[-1].startswith("exit"):
                lines.append(worker.stdout.readline())
                assert lines[-1], "the crash worker died; run tests/core/crash_worker.py by hand to see why"
            assert lines[-1].split()[1] == str(int(signal.SIGKILL)), f"the child was not killed by us: {lines[-5:]}"
            reported.update({int(f[1]): f[2] for f in (line.split() for line in lines) if f[0] == "saved"})

            db = sqlite3.connect(tmp_path / CATALOG_DIR / "catalog.sqlite")
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            referenced = {row[0] for row in db.execute("SELECT file FROM revisions")}
            db.close()
            unreferenced = {f.name for f in revisions.iterdir()} - referenced
            orphans_removed += len(unreferenced)
            mid_save += bool(unreferenced)
            with Project.open(tmp_path) as p:
                assert {f.name for f in revisions.iterdir()} == referenced, "orphans survived the open"
                assert p.verify() == []
                for rid, digest in reported.items():
                    rev = p.revision(rid)
                    assert rev.digest == digest and _independent_digest(rev.file) == digest
    finally:
        worker.kill()
        worker.wait()
    elapsed = time.perf_counter() - start
    print(f"\n100/100 kills survived in {elapsed:.1f} s: {len(reported)} committed revisions reported and found, "
          f"{mid_save} kills between a file write and its commit ({orphans_removed} orphan files removed)")
    assert len(reported) > 100
