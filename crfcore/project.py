"""The project catalog: images, unary sources, masks and their revisions, in SQLite beside the user's files.

A project is a folder of the user's images with a ``.crfstudio/`` folder in it::

    <folder>/.crfstudio/catalog.sqlite        the catalog (stdlib sqlite3, WAL journal, foreign keys on)
    <folder>/.crfstudio/revisions/r<id>.png   one index PNG per mask revision (crfcore.io.save_mask)

Every accepted edit is one :meth:`Project.save_mask` call and one transaction: under the catalog's write lock, the
revision's PNG is written atomically (temporary file, fsync, ``os.replace``, fsync of the folder) and only then is the
row that points to it committed (``synchronous=FULL``). A crash at any moment therefore leaves either the old state
or the new one; never a row without its file. Each row stores the SHA-256 of the labels (:func:`mask_digest`), so a
file that no longer decodes to the committed mask is detected when it is read.

Recovery when a project is opened:

* ``PRAGMA integrity_check`` must pass, else :class:`ProjectError` says how to salvage the catalog.
* Orphan revision files (written by a save whose transaction never committed, and temporary files of interrupted
  writes) are **removed**, not adopted: the edit they hold was never accepted (``save_mask`` had not returned), so
  the catalog without them is the last state the user saw. The sweep runs under the write lock, so it cannot race
  another process's save, which holds that lock from before writing its file until its commit.
* Rows whose file is missing (deleted by hand) are logged as warnings; :meth:`Project.verify` checks every file.

Revisions are append-only: :meth:`Project.revert` adds a new revision with an old one's labels, so history is linear
and a revert can itself be reverted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import io
from . import params as P
from .errors import InputError

__all__ = ["SCHEMA_VERSION", "CATALOG_DIR", "ProjectError", "ImageRecord", "UnarySource", "Revision", "Project",
           "mask_digest"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
CATALOG_DIR = ".crfstudio"
_CATALOG = "catalog.sqlite"
_REVISIONS = "revisions"
_REVISION = re.compile(r"^r\d+\.png$")  # revision files (atomic_write's temporaries: io.is_temporary)

# _MIGRATIONS[v] takes a catalog from schema version v to v + 1, in one transaction.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE images (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, width INTEGER NOT NULL, "
        "height INTEGER NOT NULL, sha256 TEXT NOT NULL, added REAL NOT NULL)",
        "CREATE TABLE unaries (id INTEGER PRIMARY KEY, image_id INTEGER NOT NULL REFERENCES images(id) "
        "ON DELETE CASCADE, path TEXT NOT NULL, kind TEXT, added REAL NOT NULL, UNIQUE (image_id, path))",
        "CREATE TABLE revisions (id INTEGER PRIMARY KEY, image_id INTEGER NOT NULL REFERENCES images(id) "
        "ON DELETE CASCADE, parent INTEGER REFERENCES revisions(id), file TEXT NOT NULL UNIQUE, "
        "digest TEXT NOT NULL, method TEXT, preset TEXT, note TEXT NOT NULL DEFAULT '', created REAL NOT NULL)",
        "CREATE INDEX revisions_by_image ON revisions (image_id, id)",
        "CREATE VIEW masks AS SELECT image_id, MAX(id) AS revision_id FROM revisions GROUP BY image_id",
        "CREATE TABLE classes (label INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
    ),
)


class ProjectError(InputError):
    """A catalog that cannot be used (damaged, from a newer version, closed) or a reference to nothing in it."""


@dataclass(frozen=True)
class ImageRecord:
    """An image of the project. ``path`` is absolute; ``width``/``height`` are pixels, upright (EXIF applied)."""

    id: int
    path: Path
    width: int
    height: int
    sha256: str


@dataclass(frozen=True)
class UnarySource:
    """A unary file registered for an image (anything :func:`crfcore.unary_io.load_unary` reads)."""

    id: int
    image_id: int
    path: Path
    kind: str | None


@dataclass(frozen=True)
class Revision:
    """One saved mask.

    Attributes:
        id: revision id, increasing over the whole project.
        image_id: the image it belongs to.
        parent: the image's previous revision, None for its first.
        created: Unix time, seconds.
        method: the refiner that produced it, if any ("convcrf", ...).
        preset: the parameters used, ``{"method": ..., "params": {...}}`` (a preset file's content) or None.
        note: free text ("brush", "revert to 12", ...).
        file: absolute path of its index PNG.
        digest: :func:`mask_digest` of its labels.
    """

    id: int
    image_id: int
    parent: int | None
    created: float
    method: str | None
    preset: dict[str, Any] | None
    note: str
    file: Path
    digest: str


def mask_digest(labels: ArrayLike) -> str:
    """SHA-256 (hex) of ``(H, W)`` integer labels 0..65535: ``sha256(b"H×W;" + labels as little-endian uint16)``."""
    arr = np.asarray(labels)
    return hashlib.sha256(f"{arr.shape[0]}x{arr.shape[1]};".encode() + arr.astype("<u2").tobytes()).hexdigest()


def _damaged(catalog: Path, detail: str) -> ProjectError:
    return ProjectError(
        f"the project catalog {catalog} is damaged ({detail}). Close every program using it, then either salvage "
        f"it with the sqlite3 shell (sqlite3 {catalog.name} '.recover' | sqlite3 recovered.sqlite, then replace "
        f"{catalog.name} with recovered.sqlite) or move it aside to start a new catalog; the mask revisions in "
        f"{catalog.parent / _REVISIONS} are plain index PNGs and stay readable either way.")


class Project:
    """An open project catalog; create or open one with :meth:`Project.open`, and :meth:`close` it (or use ``with``).

    Methods taking ``image`` accept an image id or the image's path (absolute, or relative to the working directory
    when the file is there, else to the project folder). One object may be shared by threads; calls are serialised.
    """

    def __init__(self, folder: Path, connection: sqlite3.Connection) -> None:
        self.folder = folder
        self._db: sqlite3.Connection | None = connection
        self._lock = threading.RLock()
        self._revisions_dir = folder / CATALOG_DIR / _REVISIONS

    @classmethod
    def open(cls, folder: str | os.PathLike) -> Project:
        """Open the project in ``folder``, creating ``folder/.crfstudio/`` on first use and migrating older schemas.

        Runs ``PRAGMA integrity_check`` and removes orphan revision files (see the module docstring).

        Raises:
            FileNotFoundError: ``folder`` does not exist.
            ProjectError: the catalog is damaged (the message gives the fix) or made by a newer CRF Studio.
        """
        root = Path(folder).resolve()
        if not root.is_dir():
            raise FileNotFoundError(f"project folder {root} does not exist; create it (or pick the folder holding "
                                    f"your images) first.")
        (root / CATALOG_DIR / _REVISIONS).mkdir(parents=True, exist_ok=True)
        catalog = root / CATALOG_DIR / _CATALOG
        db = sqlite3.connect(catalog, isolation_level=None, check_same_thread=False, timeout=30.0)
        try:
            for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=FULL"):
                db.execute(f"PRAGMA {pragma}")
            problems = [row[0] for row in db.execute("PRAGMA integrity_check")]
            if problems != ["ok"]:
                raise _damaged(catalog, "; ".join(problems[:3]))
            project = cls(root, db)
            project._migrate(catalog)
            project._recover()
        except sqlite3.DatabaseError as exc:
            db.close()
            raise _damaged(catalog, str(exc)) from exc
        except BaseException:
            db.close()
            raise
        return project

    def _migrate(self, catalog: Path) -> None:
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ProjectError(f"{catalog} has schema version {version}, newer than this CRF Studio's "
                                   f"{SCHEMA_VERSION}; update CRF Studio to open it.")
            for step in _MIGRATIONS[version:]:
                for statement in step:
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _recover(self) -> None:
        with self._write() as db:
            referenced = {row[0] for row in db.execute("SELECT file FROM revisions")}
            orphans = [f for f in self._revisions_dir.iterdir() if f.name not in referenced
                       and (_REVISION.match(f.name) or io.is_temporary(f.name))]
            for orphan in orphans:
                orphan.unlink(missing_ok=True)
        if orphans:
            log.info("%s: removed %d revision file(s) whose save never committed", self.folder, len(orphans))
        missing = sorted(name for name in referenced if not (self._revisions_dir / name).is_file())
        if missing:
            log.warning("%s: %d revision file(s) are missing (deleted outside CRF Studio?): %s; revert those "
                        "images to another revision.", self.folder, len(missing), ", ".join(missing[:5]))

    def close(self) -> None:
        """Close the catalog (idempotent). Everything saved is already committed."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise ProjectError(f"the project {self.folder} is closed; open it again with Project.open(folder).")
        return self._db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding the catalog's write lock from its start (``BEGIN IMMEDIATE``)."""
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.in_transaction:  # SQLite may have rolled back already (disk full, I/O error)
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._conn().execute(sql, args).fetchall()

    def _key(self, path: str | os.PathLike) -> str:
        """The stored form of a path: relative to the project folder (POSIX) when inside it, else absolute.

        A relative ``path`` is taken from the working directory when a file is there, else from the project folder.
        """
        p = Path(path)
        if not p.is_absolute():
            p = Path.cwd() / p if (Path.cwd() / p).exists() else self.folder / p
        p = p.resolve()
        try:
            return p.relative_to(self.folder).as_posix()
        except ValueError:
            return str(p)

    def _path(self, key: str) -> Path:
        return self.folder / key if not Path(key).is_absolute() else Path(key)

    def add_images(self, paths: Iterable[str | os.PathLike]) -> list[int]:
        """Register images (each decoded once to check it and read its upright size); returns their ids, in order.

        An image already in the project keeps its id. All are added in one transaction, or none.

        Raises:
            FileNotFoundError, crfcore.io.ImageError: a file that is missing or not a usable image (named).
        """
        found: dict[str, tuple[int, int, str]] = {}
        keys = []
        for path in paths:
            key = self._key(path)
            keys.append(key)
            if key not in found and not self._query("SELECT 1 FROM images WHERE path = ?", (key,)):
                rgb = io.load_image(self._path(key))
                with open(self._path(key), "rb") as handle:
                    found[key] = (rgb.shape[1], rgb.shape[0], hashlib.file_digest(handle, "sha256").hexdigest())
        with self._write() as db:
            for key, (width, height, sha) in found.items():
                db.execute("INSERT OR IGNORE INTO images (path, width, height, sha256, added) VALUES (?, ?, ?, ?, ?)",
                           (key, width, height, sha, time.time()))
            ids = {key: db.execute("SELECT id FROM images WHERE path = ?", (key,)).fetchone()[0] for key in keys}
        return [ids[key] for key in keys]

    def images(self) -> list[ImageRecord]:
        """Every image of the project, in the order added."""
        rows = self._query("SELECT id, path, width, height, sha256 FROM images ORDER BY id")
        return [ImageRecord(i, self._path(p), w, h, s) for i, p, w, h, s in rows]

    def image(self, image: int | str | os.PathLike) -> ImageRecord:
        """The record of an image given by id or path; :class:`ProjectError` if it is not in the project."""
        if isinstance(image, bool) or not isinstance(image, (int, np.integer, str, os.PathLike)):
            raise TypeError(f"image must be an image id (int) or a path, got {type(image).__name__}.")
        if isinstance(image, (int, np.integer)):
            rows = self._query("SELECT id, path, width, height, sha256 FROM images WHERE id = ?", (int(image),))
        else:
            rows = self._query("SELECT id, path, width, height, sha256 FROM images WHERE path = ?",
                               (self._key(image),))
        if not rows:
            raise ProjectError(f"image {image!s} is not in the project {self.folder}; add it with "
                               f"add_images([...]) first.")
        i, p, w, h, s = rows[0]
        return ImageRecord(i, self._path(p), w, h, s)

    def add_unary(self, image: int | str | os.PathLike, path: str | os.PathLike, *, kind: str | None = None) -> int:
        """Register a unary source file for ``image`` (``kind`` as in ``load_unary``, None = detect); returns its id.

        Registering the same file again updates its kind and keeps its id.
        """
        record = self.image(image)
        key = self._key(path)
        if not self._path(key).exists():
            raise FileNotFoundError(f"unary {self._path(key)} does not exist; check the path.")
        with self._write() as db:
            db.execute("INSERT INTO unaries (image_id, path, kind, added) VALUES (?, ?, ?, ?) ON CONFLICT "
                       "(image_id, path) DO UPDATE SET kind = excluded.kind", (record.id, key, kind, time.time()))
            return db.execute("SELECT id FROM unaries WHERE image_id = ? AND path = ?", (record.id, key)).fetchone()[0]

    def unaries(self, image: int | str | os.PathLike) -> list[UnarySource]:
        """The unary sources registered for ``image``, in the order added."""
        record = self.image(image)
        rows = self._query("SELECT id, path, kind FROM unaries WHERE image_id = ? ORDER BY id", (record.id,))
        return [UnarySource(i, record.id, self._path(p), k) for i, p, k in rows]

    def save_mask(self, image: int | str | os.PathLike, labels: ArrayLike, *, preset: Any = None,
                  method: str | None = None, note: str = "") -> int:
        """Save ``labels`` as the image's new mask revision (one transaction); returns the revision id.

        The PNG is written and made durable before the row pointing to it is committed; when this returns, the
        revision survives a crash of the process or the machine.

        Args:
            image: image id or path.
            labels: ``(H, W)`` integer class indices 0..65535 (255 = void by convention), the image's size.
            preset: the parameters used: a params dataclass (``crfcore.params``), a preset dict
                ``{"method": ..., "params": {...}}``, or None.
            method: the refiner name; taken from ``preset`` when omitted.
            note: free text shown in the history.

        Raises:
            ProjectError: unknown image. ValueError: labels of the wrong shape, dtype or range; a preset that is not
            JSON-able.
        """
        record = self.image(image)
        arr = np.asarray(labels)
        if arr.shape != (record.height, record.width):
            raise ValueError(f"labels have shape {arr.shape} but image {record.path.name} is {record.height}×"
                             f"{record.width} (H×W); a mask must match its image pixel for pixel.")
        method, preset_text = _preset_json(preset, method)
        if not isinstance(note, str):
            raise TypeError(f"note must be a str, got {type(note).__name__}.")
        with self._write() as db:
            rid = db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM revisions").fetchone()[0]
            parent = db.execute("SELECT MAX(id) FROM revisions WHERE image_id = ?", (record.id,)).fetchone()[0]
            name = f"r{rid:06d}.png"
            target = self._revisions_dir / name
            try:
                io.save_mask(target, arr)  # validates dtype and range first; durable (folder synced) on return
                digest = mask_digest(arr)
                db.execute("INSERT INTO revisions (id, image_id, parent, file, digest, method, preset, note, created)"
                           " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (rid, record.id, parent, name, digest, method, preset_text, note, time.time()))
            except BaseException:
                target.unlink(missing_ok=True)
                raise
        return rid

    def revisions(self, image: int | str | os.PathLike) -> list[Revision]:
        """The image's revisions, oldest first (the last is the current mask)."""
        return self._revisions("WHERE image_id = ? ORDER BY id", (self.image(image).id,))

    def revision(self, revision: int) -> Revision:
        """The revision with this id; :class:`ProjectError` if there is none."""
        found = self._revisions("WHERE id = ?", (int(revision),))
        if not found:
            raise ProjectError(f"revision {revision} does not exist in {self.folder}; list them with revisions().")
        return found[0]

    def latest_revision(self, image: int | str | os.PathLike) -> Revision | None:
        """The image's current revision, or None if no mask was saved yet."""
        found = self._revisions("WHERE image_id = ? ORDER BY id DESC LIMIT 1", (self.image(image).id,))
        return found[0] if found else None

    def _revisions(self, where: str, args: Sequence[Any]) -> list[Revision]:
        rows = self._query("SELECT id, image_id, parent, created, method, preset, note, file, digest FROM revisions "
                           + where, args)
        return [Revision(i, im, par, cr, me, json.loads(pr) if pr else None, no, self._revisions_dir / f, d)
                for i, im, par, cr, me, pr, no, f, d in rows]

    def load_revision(self, revision: int | Revision) -> np.ndarray:
        """The labels of a revision, ``(H, W)`` int64, checked against the digest stored when it was saved.

        Raises:
            ProjectError: no such revision, or its file is missing or no longer holds the saved mask.
        """
        rev = revision if isinstance(revision, Revision) else self.revision(revision)
        fix = f"revert image {rev.image_id} to another revision (Project.revert)"
        try:
            labels = io.load_mask(rev.file)
        except (FileNotFoundError, io.ImageError) as exc:
            raise ProjectError(f"revision {rev.id}'s file cannot be read ({exc}); {fix}.") from exc
        if mask_digest(labels) != rev.digest:
            raise ProjectError(f"revision {rev.id}'s file {rev.file} does not hold the mask that was saved (checksum "
                               f"mismatch: changed outside CRF Studio?); {fix}.")
        return labels

    def latest_mask(self, image: int | str | os.PathLike) -> np.ndarray | None:
        """The image's current mask, ``(H, W)`` int64, or None if none was saved yet."""
        rev = self.latest_revision(image)
        return None if rev is None else self.load_revision(rev)

    def revert(self, image: int | str | os.PathLike, revision: int) -> int:
        """Make an earlier revision's labels the image's current mask, as a new revision; returns its id."""
        record = self.image(image)
        rev = self.revision(revision)
        if rev.image_id != record.id:
            raise ProjectError(f"revision {rev.id} belongs to image {rev.image_id}, not to {record.path.name} "
                               f"(image {record.id}); pick one of revisions({record.id}).")
        return self.save_mask(record.id, self.load_revision(rev), preset=rev.preset, method=rev.method,
                              note=f"revert to {rev.id}")

    def verify(self) -> list[str]:
        """Decode every revision file and compare it with its stored digest; returns one line per problem."""
        problems = []
        for rev in self._revisions("ORDER BY id", ()):
            try:
                self.load_revision(rev)
            except ProjectError as exc:
                problems.append(str(exc))
        return problems

    @property
    def classes(self) -> list[str]:
        """Class names by label: ``classes[k]`` names label k. Empty until set."""
        return [name for _, name in self._query("SELECT label, name FROM classes ORDER BY label")]

    @classes.setter
    def classes(self, names: Sequence[str]) -> None:
        names = list(names)
        bad = [n for n in names if not isinstance(n, str) or not n.strip()]
        if bad:
            raise ValueError(f"class names must be non-empty strings, got {bad[0]!r}.")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"class names must be unique; {', '.join(map(repr, repeated))} appear more than once.")
        with self._write() as db:
            db.execute("DELETE FROM classes")
            db.executemany("INSERT INTO classes (label, name) VALUES (?, ?)", list(enumerate(names)))


def _preset_json(preset: Any, method: str | None) -> tuple[str | None, str | None]:
    """``(method, JSON text)`` of a preset given as a params dataclass, a preset dict or None."""
    if preset is None:
        return method, None
    if isinstance(preset, dict):
        data = preset
    else:
        methods = [m for m, cls in P.PARAMS_BY_METHOD.items() if isinstance(preset, cls)]
        if not methods:
            raise TypeError(f"preset must be a params dataclass (crfcore.params), a preset dict or None, got "
                            f"{type(preset).__name__}.")
        data = {"method": method or methods[0], "params": P.to_dict(preset)}
    try:
        text = json.dumps(data, sort_keys=True)
    except TypeError as exc:
        raise ValueError(f"preset must be JSON-able ({exc}); pass crfcore.params.to_dict(params).") from exc
    given = data.get("method") if isinstance(data.get("method"), str) else None
    return method or given, text
