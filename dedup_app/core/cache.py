"""The embedding cache: SQLite (WAL) in the user's data folder, keyed by path, size, mtime and model id.

Two tables: ``files`` holds what does not depend on the model (content hash, size in pixels, EXIF facts, the keep
evidence of :mod:`dedup_app.core.keep`, or the reason the file could not be read), ``embeddings`` one float16 vector
per (path, model). A row is used only while
the file's size and modification time still match; a changed file loses its embeddings. Every batch is committed,
so a scan killed halfway keeps its work and the next scan resumes.

The cache is disposable, but the path it is given may not be: before anything is written the file is checked.
A folder, a file that is not an SQLite database (a photo, a document), or another program's SQLite database is
refused with :class:`CacheError` and left exactly as it was; a cache that cannot be written raises
:class:`CacheReadOnlyError`. Only a damaged SQLite file (a crash mid-write on a broken disk) is moved aside (renamed
``NAME.corrupt-TIME``, never deleted) and a fresh cache started, also when the damage only shows in the middle of
a scan ("database disk image is malformed"): the scan then goes on with the new, empty cache. A stored vector of
the wrong length is treated as not cached.

Each stored vector has an ``id`` that SQLite never hands out again (``AUTOINCREMENT``): a changed file's new vector
gets a new id, so the persistent vector index (:mod:`dedup_app.core.vector_index`) tells what changed by comparing
id sets. The ``uid`` in ``meta`` is drawn afresh whenever the embeddings table starts empty (a new cache, one moved
aside, a schema rebuild), so an index built on another cache's ids is never mistaken for this one's.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sqlite3
import stat
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from dedup_app.core.files import FileEntry, describe_os_error
from dedup_app.core.imageio import ImageInfo
from dedup_app.core.keep import KeepEvidence
from dedup_app.core.resources import user_data_file

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_CHUNK = 500  # SQLite host-parameter batches
_OPEN_ATTEMPTS = 5
#: ``PRAGMA application_id`` of a dedup-app cache ("ddup"), stored in the file header at offset 68
APPLICATION_ID = 0x64647570
_SQLITE_MAGIC = b"SQLite format 3\x00"
_OUR_TABLES = frozenset({"meta", "files", "embeddings", "pair_checks"})

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path BLOB PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    content_hash TEXT,
    width INTEGER,
    height INTEGER,
    format TEXT,
    exif_datetime TEXT,
    camera TEXT,
    error TEXT,
    updated REAL NOT NULL,
    frames INTEGER,
    quality REAL,
    converted INTEGER,
    grey INTEGER,
    content REAL,
    sharpness REAL,
    contrast REAL,
    brightness REAL,
    colourfulness REAL
);
CREATE TABLE IF NOT EXISTS embeddings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path BLOB NOT NULL,
    model_id TEXT NOT NULL,
    vector BLOB NOT NULL,
    UNIQUE (path, model_id)
);
CREATE INDEX IF NOT EXISTS embeddings_model ON embeddings (model_id);
CREATE TABLE IF NOT EXISTS pair_checks (
    a TEXT NOT NULL,
    b TEXT NOT NULL,
    method TEXT NOT NULL,
    inliers INTEGER NOT NULL,
    PRIMARY KEY (a, b, method)
) WITHOUT ROWID;
"""

#: The embeddings table before it had ids that are never reused (the persistent vector index keys on them).
_OLD_EMBEDDINGS = "PRIMARY KEY (path, model_id)"
_MIGRATE_EMBEDDINGS = """
ALTER TABLE embeddings RENAME TO embeddings_old;
DROP INDEX IF EXISTS embeddings_model;
{schema}
INSERT INTO embeddings (path, model_id, vector) SELECT path, model_id, vector FROM embeddings_old ORDER BY rowid;
DROP TABLE embeddings_old;
"""


#: Columns of ``files`` added after schema 1 shipped, with their types: an older cache gains them (empty) when opened,
#: keeping its rows and embeddings. ``frames``: page count (empty: 1); the rest: :class:`KeepEvidence` (empty: unknown).
_ADDED_COLUMNS = (
    ("frames", "INTEGER"),
    ("quality", "REAL"),
    ("converted", "INTEGER"),
    ("grey", "INTEGER"),
    ("content", "REAL"),
    ("sharpness", "REAL"),
    ("contrast", "REAL"),
    ("brightness", "REAL"),
    ("colourfulness", "REAL"),
)
#: The keep evidence columns, in the order of :class:`KeepEvidence`'s fields.
_EVIDENCE_COLUMNS = tuple(name for name, _ in _ADDED_COLUMNS[1:])
_FACTS = "f.width, f.height, f.format, f.exif_datetime, f.camera, f.frames, " + ", ".join(
    f"f.{c}" for c in _EVIDENCE_COLUMNS
)


def _info(row: Sequence[Any]) -> ImageInfo | None:
    """An :class:`ImageInfo` from the columns of :data:`_FACTS`; None for a file that was never read."""
    w, h, fmt, when, camera, frames, *evidence = row
    if w is None:
        return None
    known = None
    if any(v is not None for v in evidence):
        q, converted, grey, *rest = evidence
        known = KeepEvidence(
            q,
            None if converted is None else bool(converted),
            None if grey is None else bool(grey),
            *rest,
        )
    return ImageInfo(w, h, fmt or "unknown", when, camera, frames or 1, known)


def _evidence_values(info: ImageInfo | None) -> tuple[Any, ...]:
    ev = info.evidence if info is not None else None
    if ev is None:
        return (None,) * len(_EVIDENCE_COLUMNS)
    flags = (None if v is None else int(v) for v in (ev.converted, ev.grey))
    return (ev.quality, *flags, ev.content, ev.sharpness, ev.contrast, ev.brightness, ev.colourfulness)


def default_cache_path() -> Path:
    """``<user data dir>/dedup-app/cache.sqlite3`` (platformdirs)."""
    return user_data_file("cache.sqlite3")


class CacheError(Exception):
    """The cache path cannot be used, and it is not ours to replace: a folder, a file that is not a dedup-app cache,
    or a path that cannot be opened. Nothing was changed on disk. The message names the path and the reason."""


class CacheReadOnlyError(CacheError):
    """The cache file, or the folder it is in or would be created in, cannot be written."""


def is_corrupt(exc: sqlite3.Error) -> bool:
    """Whether an SQLite error means a damaged database file (not a lock, a full disk or a read-only file)."""
    name = getattr(exc, "sqlite_errorname", None)
    if name:
        return str(name).startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
    return type(exc) is sqlite3.DatabaseError


def move_aside(path: Path) -> Path:
    """Rename a damaged SQLite file (and its -wal and -shm files) to ``NAME.corrupt-TIME`` (``-2``, ``-3``... if
    taken) and return that name; never deletes. Raises ``OSError`` if it cannot be renamed."""
    stem = f"{path.name}.corrupt-{int(time.time())}"
    aside, n = path.with_name(stem), 1
    while any(Path(str(aside) + s).exists() for s in ("", "-wal", "-shm")):
        n += 1
        aside = path.with_name(f"{stem}-{n}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            os.replace(src, Path(str(aside) + suffix))
    return aside


def _is_read_only(exc: sqlite3.Error) -> bool:
    return str(getattr(exc, "sqlite_errorname", "") or "").startswith("SQLITE_READONLY") or "readonly" in str(exc)


@dataclass(frozen=True, slots=True)
class CachedFile:
    """What the cache knows about one file at the size and mtime it was cached with."""

    size: int
    mtime_ns: int
    content_hash: str | None
    info: ImageInfo | None
    error: str | None
    vector: np.ndarray | None

    def matches(self, entry: FileEntry) -> bool:
        """Whether this row still describes the file on disk."""
        return self.size == entry.size and self.mtime_ns == entry.mtime_ns


@dataclass(frozen=True)
class IndexedFile:
    """The file a stored vector belongs to, as cached."""

    path: str
    size: int
    mtime_ns: int
    content_hash: str | None
    info: ImageInfo | None


def _stack(rows: list[tuple[Any, ...]], dim: int | None) -> tuple[tuple[np.ndarray, np.ndarray], int | None]:
    """``(id, blob)`` rows as ``(ids, float16 matrix)``, leaving out blobs of another length than ``dim``."""
    if dim is None:
        dim = len(rows[0][1]) // 2
    good = [r for r in rows if isinstance(r[1], bytes) and len(r[1]) == 2 * dim]
    ids = np.array([r[0] for r in good], dtype=np.int64)
    matrix = np.frombuffer(b"".join(r[1] for r in good), dtype=np.float16).reshape(len(good), dim)
    return (ids, matrix), dim


def _key(path: str) -> bytes:
    return os.fsencode(path)


def _chunks(items: Sequence[_T], n: int = _CHUNK) -> Iterator[Sequence[_T]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


class EmbeddingCache:
    """SQLite-backed cache of file facts and embeddings. ``":memory:"`` gives a throwaway in-memory cache.

    Safe to hand from one thread to another (one lock around the connection); not meant for concurrent writers
    in several processes beyond what SQLite's WAL mode already allows.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        """Open (or create) the cache at ``path``; ``None`` is :func:`default_cache_path`, ``":memory:"`` none.

        Raises :class:`CacheError` for a path that is not a dedup-app cache or cannot be opened, and
        :class:`CacheReadOnlyError` for one that cannot be written; then nothing on disk was changed (except a missing
        parent folder, which is created first).
        """
        if path is not None and os.fspath(path) == "":
            raise CacheError("the cache path is empty (use ':memory:' for no cache)")
        self.path = Path(path) if path is not None and str(path) != ":memory:" else None
        if path is None:
            self.path = default_cache_path()
        self._lock = threading.RLock()
        self._conn = self._connect()

    # -- opening ------------------------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self.path is None:
            return self._init(sqlite3.connect(":memory:", check_same_thread=False))
        app_id = self._check_path(self.path)
        try:
            for attempt in range(_OPEN_ATTEMPTS):
                conn = self._open()
                try:
                    self._check_ours(conn, app_id)
                except BaseException:
                    conn.close()
                    raise
                try:
                    return self._init(conn)
                except sqlite3.OperationalError as exc:
                    # another process creating or converting the same new cache at this moment: SQLite can
                    # answer "locked" at once there, without its busy timeout, so wait a little and try again
                    if "locked" not in str(exc) or attempt == _OPEN_ATTEMPTS - 1:
                        raise
                    time.sleep(0.2 * (attempt + 1))
            raise AssertionError("unreachable")
        except sqlite3.DatabaseError as exc:
            if not is_corrupt(exc):
                raise self._open_error(exc) from None
            self._move_aside(exc)
            try:
                return self._init(self._open())
            except sqlite3.Error as again:
                raise self._open_error(again) from None

    @staticmethod
    def _check_path(path: Path) -> int:
        """Refuse what must not be opened as a cache; returns the header's application id (0 if none or new).

        Reads at most the 100-byte header, writes nothing (a missing parent folder is created).
        """
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        except OSError as exc:  # a parent that is a file, a folder without permission, ...
            raise CacheError(f"cache {path} cannot be opened: {describe_os_error(exc)}") from None
        if st is None:
            folder = path.parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CacheError(f"cache {path} cannot be created: folder {folder}: {describe_os_error(exc)}") from None
            if not os.access(folder, os.W_OK):
                raise CacheReadOnlyError(f"cache {path} cannot be created: folder {folder} is read-only")
            return 0
        if stat.S_ISDIR(st.st_mode):
            raise CacheError(f"cache {path} is a folder, not a cache file")
        if not stat.S_ISREG(st.st_mode):
            raise CacheError(f"cache {path} is not a regular file")
        app_id = 0
        if st.st_size > 0:  # an empty file is what an interrupted first open leaves: SQLite starts it afresh
            try:
                with open(path, "rb") as f:
                    header = f.read(100)
            except OSError as exc:
                raise CacheError(f"cache {path} cannot be read: {describe_os_error(exc)}") from None
            if not header.startswith(_SQLITE_MAGIC):
                raise CacheError(f"cache {path} is not a dedup-app cache (not an SQLite database); left unchanged")
            app_id = int.from_bytes(header[68:72], "big") if len(header) >= 72 else 0
        if not os.access(path, os.W_OK):
            raise CacheReadOnlyError(f"cache {path} is read-only (no write permission)")
        if not os.access(path.parent, os.W_OK):
            raise CacheReadOnlyError(f"cache {path} is read-only: its folder {path.parent} is not writable")
        return app_id

    def _check_ours(self, conn: sqlite3.Connection, app_id: int) -> None:
        """Raise :class:`CacheError` unless the database is a dedup-app cache (or empty). Only reads the schema."""
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        names = {n for n in names if not n.startswith("sqlite_")}
        if app_id == APPLICATION_ID or (app_id == 0 and not names):
            return
        if app_id == 0 and "meta" in names and names <= _OUR_TABLES:
            try:
                marked = conn.execute("SELECT 1 FROM meta WHERE key='schema_version'").fetchone()
            except sqlite3.OperationalError:  # a ``meta`` table of another shape
                marked = None
            if marked:
                return
        raise CacheError(
            f"cache {self.path} is another program's SQLite database, not a dedup-app cache; left unchanged"
        )

    def _open(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, check_same_thread=False, timeout=30)  # type: ignore[arg-type]

    def _open_error(self, exc: sqlite3.Error) -> CacheError:
        if _is_read_only(exc):
            return CacheReadOnlyError(f"cache {self.path} is read-only ({exc})")
        return CacheError(f"cache {self.path} cannot be opened: {exc}")

    def _move_aside(self, exc: BaseException) -> None:
        """Rename a damaged cache (and its -wal and -shm files) to ``NAME.corrupt-TIME``; never deletes."""
        assert self.path is not None
        try:
            aside = move_aside(self.path)
        except OSError as err:
            raise CacheError(
                f"cache {self.path} is damaged ({exc}) and cannot be moved aside: {describe_os_error(err)}"
            ) from None
        log.warning("cache %s is damaged (%s); moved to %s and starting a new one", self.path, exc, aside)

    @staticmethod
    def _init(conn: sqlite3.Connection) -> sqlite3.Connection:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            version_row = None
            has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
            if has_meta:
                version_row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if version_row is not None and version_row[0] != str(SCHEMA_VERSION):
                # An old or newer layout: the cache is disposable, so start it again rather than migrate.
                log.info("cache schema %s != %s: rebuilding the cache", version_row[0], SCHEMA_VERSION)
                conn.executescript("DROP TABLE IF EXISTS files; DROP TABLE IF EXISTS embeddings;")
            row = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='embeddings'").fetchone()
            if row is not None and _OLD_EMBEDDINGS in row[0]:  # give the vectors stable ids, keeping them
                conn.executescript("BEGIN;" + _MIGRATE_EMBEDDINGS.format(schema=_SCHEMA) + "COMMIT;")
            fresh = row is None
            conn.executescript(_SCHEMA)
            has_uid = conn.execute("SELECT 1 FROM meta WHERE key='uid'").fetchone() is not None
            if fresh or not has_uid:
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('uid', ?)", (uuid.uuid4().hex,))
            columns = {row[1] for row in conn.execute("PRAGMA table_info(files)")}
            for name, kind in _ADDED_COLUMNS:  # added after schema 1 shipped: rows and embeddings kept, facts unknown
                if name not in columns:
                    conn.execute(f"ALTER TABLE files ADD COLUMN {name} {kind}")
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            conn.commit()
            conn.execute("SELECT count(*) FROM files").fetchone()  # touches the pages: fails fast if corrupt
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    def _guarded(self, work: Callable[[], _T]) -> _T:
        """Run ``work`` under the lock. If it finds the database damaged, move the file aside, start a fresh cache
        and run ``work`` once more on it: a damaged cache costs its contents, never the scan."""
        with self._lock:
            try:
                return work()
            except sqlite3.DatabaseError as exc:
                if self.path is None or not is_corrupt(exc):
                    raise
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._move_aside(exc)
                try:
                    self._conn = self._init(self._open())
                except sqlite3.Error as again:
                    raise self._open_error(again) from None
                return work()

    def close(self) -> None:
        """Commit and close the connection."""
        with self._lock:
            try:
                self._conn.commit()
            except sqlite3.DatabaseError as exc:
                if not is_corrupt(exc):
                    raise
                log.warning("cache %s: the last changes could not be saved (%s)", self.path, exc)
            finally:
                self._conn.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------------------------------

    def lookup(
        self,
        entries: Sequence[FileEntry],
        model_id: str | None,
        dim: int | None = None,
        into: np.ndarray | None = None,
    ) -> dict[str, CachedFile]:
        """Rows for the given files that still match their size and mtime, with the model's vector if cached.

        A stored vector of the wrong length (``dim`` float16 values; without ``dim``, the length most vectors of
        the lookup have) is left out: that file counts as not embedded and is read again. With ``into`` (float16,
        a row per entry, ``dim`` wide) each vector is copied to its entry's row and ``vector`` is that row: a scan
        of a million files then holds one matrix instead of a million stored blobs and arrays over them.
        """
        if into is not None and (dim is None or into.shape != (len(entries), dim) or into.dtype != np.float16):
            raise ValueError("lookup into a matrix needs dim and a float16 row of that width per entry")
        wanted = {_key(e.path): (k, e) for k, e in enumerate(entries)}
        keys = list(wanted)

        def read(chunk: Sequence[bytes]) -> list[tuple[Any, ...]]:
            marks = ",".join("?" * len(chunk))
            return self._conn.execute(  # type: ignore[no-any-return]
                f"SELECT f.path, f.size, f.mtime_ns, f.content_hash, f.error, e.vector, {_FACTS} FROM files f "
                "LEFT JOIN embeddings e ON e.path = f.path AND e.model_id = ? "
                f"WHERE f.path IN ({marks})",
                (model_id or "", *chunk),
            ).fetchall()

        def parts() -> Iterator[tuple[bool, list[tuple[Any, ...]]]]:
            """Each chunk's rows, and whether the cache was found damaged and started afresh while it was read
            (then what earlier chunks gave is gone too)."""
            for chunk in _chunks(keys, _CHUNK):
                conn = self._conn
                rows = self._guarded(functools.partial(read, chunk))
                yield self._conn is not conn, rows

        # a chunk of rows at a time, each turned into CachedFile at once: at a million files the raw rows of all
        # of them (twenty Python objects each) were 1.4 GB on top of what is kept
        chunks: Iterable[tuple[bool, list[tuple[Any, ...]]]] = parts()
        expected: int | None = 2 * dim if dim is not None else None
        if dim is None:  # the length most vectors of the lookup have: all rows first
            rows: list[tuple[Any, ...]] = []
            for afresh, part in chunks:
                if afresh:
                    rows.clear()
                rows += part
            lengths = Counter(len(r[5]) for r in rows if isinstance(r[5], bytes) and r[5])
            expected = lengths.most_common(1)[0][0] if lengths else None
            chunks = [(False, rows)]
        found: dict[str, CachedFile] = {}
        bad = 0
        for afresh, part in chunks:
            if afresh:
                found.clear()
                bad = 0
            for key, size, mtime, digest, error, blob, *facts in part:
                row, entry = wanted.get(key, (-1, None))
                if entry is None or size != entry.size or mtime != entry.mtime_ns:
                    continue
                vector = None
                if blob is not None:
                    if isinstance(blob, bytes) and len(blob) == expected and len(blob) % 2 == 0:
                        vector = np.frombuffer(blob, dtype=np.float16)
                        if into is not None:
                            into[row] = vector
                            vector = into[row]
                    else:
                        bad += 1
                found[entry.path] = CachedFile(size, mtime, digest, _info(facts), error, vector)
        if bad:
            log.warning("cache %s: %d stored vectors have the wrong length; those files are read again", self.path, bad)
        return found

    def count(self, model_id: str | None = None) -> int:
        """Number of cached files, or of embeddings for ``model_id``."""

        def work() -> int:
            if model_id is None:
                return int(self._conn.execute("SELECT count(*) FROM files").fetchone()[0])
            return int(
                self._conn.execute("SELECT count(*) FROM embeddings WHERE model_id = ?", (model_id,)).fetchone()[0]
            )

        return self._guarded(work)

    def uid(self) -> str:
        """This cache's identity: drawn afresh whenever its embeddings table starts empty, so vector ids from two
        caches (or from before a cache was moved aside) are never taken for each other."""
        return str(self._guarded(lambda: self._conn.execute("SELECT value FROM meta WHERE key='uid'").fetchone()[0]))

    def embedding_ids(self, model_id: str) -> np.ndarray:
        """The ids of every stored vector of ``model_id``, ascending (int64)."""
        rows = self._guarded(
            lambda: self._conn.execute(
                "SELECT id FROM embeddings WHERE model_id = ? ORDER BY id", (model_id,)
            ).fetchall()
        )
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def iter_vectors(
        self, model_id: str, ids: np.ndarray | None = None, dim: int | None = None, chunk: int = 65_536
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The stored vectors of ``model_id`` as ``(ids, float16 matrix)`` chunks: all of them, or those of ``ids``.
        Vectors of another length than ``dim`` (default: the first one's) are left out."""
        if ids is None:
            last = 0
            while True:
                rows = self._guarded(
                    lambda last=last: self._conn.execute(  # type: ignore[misc]
                        "SELECT id, vector FROM embeddings WHERE model_id = ? AND id > ? ORDER BY id LIMIT ?",
                        (model_id, last, chunk),
                    ).fetchall()
                )
                if not rows:
                    return
                last = rows[-1][0]
                out, dim = _stack(rows, dim)
                yield out
        else:
            wanted = [int(i) for i in np.asarray(ids).ravel()]
            for start in range(0, len(wanted), _CHUNK):
                part = wanted[start : start + _CHUNK]
                marks = ",".join("?" * len(part))
                rows = self._guarded(
                    lambda part=part, marks=marks: self._conn.execute(  # type: ignore[misc]
                        f"SELECT id, vector FROM embeddings WHERE model_id = ? AND id IN ({marks})", (model_id, *part)
                    ).fetchall()
                )
                if rows:
                    out, dim = _stack(rows, dim)
                    yield out

    def ids_under(self, model_id: str, roots: Iterable[str]) -> np.ndarray:
        """Ids of ``model_id``'s vectors of files under the given folders (or those files themselves), ascending."""
        found: list[int] = []
        for root in roots:
            path = os.path.abspath(root)
            exact = _key(path)
            prefix = _key(os.path.join(path, ""))
            upper = prefix[:-1] + bytes([prefix[-1] + 1])
            found += [
                r[0]
                for r in self._guarded(
                    lambda exact=exact, prefix=prefix, upper=upper: self._conn.execute(  # type: ignore[misc]
                        "SELECT id FROM embeddings WHERE model_id = ? AND (path = ? OR (path >= ? AND path < ?))",
                        (model_id, exact, prefix, upper),
                    ).fetchall()
                )
            ]
        return np.unique(np.array(found, dtype=np.int64))

    def files_of(self, model_id: str, ids: Iterable[int]) -> dict[int, IndexedFile]:
        """For vector ids: the files they belong to, as cached (ids no longer stored are left out)."""
        wanted = [int(i) for i in ids]
        out: dict[int, IndexedFile] = {}
        for start in range(0, len(wanted), _CHUNK):
            part = wanted[start : start + _CHUNK]
            marks = ",".join("?" * len(part))
            rows = self._guarded(
                lambda part=part, marks=marks: self._conn.execute(  # type: ignore[misc]
                    f"SELECT e.id, f.path, f.size, f.mtime_ns, f.content_hash, {_FACTS} FROM embeddings e "
                    f"JOIN files f ON f.path = e.path WHERE e.model_id = ? AND e.id IN ({marks})",
                    (model_id, *part),
                ).fetchall()
            )
            for vid, key, size, mtime, digest, *facts in rows:
                out[vid] = IndexedFile(os.fsdecode(key), size, mtime, digest, _info(facts))
        return out

    # -- writing ------------------------------------------------------------------------------------------------

    def put_file(
        self,
        entry: FileEntry,
        content_hash: str | None,
        info: ImageInfo | None = None,
        error: str | None = None,
    ) -> None:
        """Record a file's facts (or the reason it failed). Embeddings of an older version of it are dropped."""
        key = _key(entry.path)
        row = (
            key,
            entry.size,
            entry.mtime_ns,
            content_hash,
            info.width if info else None,
            info.height if info else None,
            info.format if info else None,
            info.exif_datetime if info else None,
            info.camera if info else None,
            error,
            time.time(),
            info.frames if info else None,
            *_evidence_values(info),
        )

        def work() -> None:
            old = self._conn.execute("SELECT size, mtime_ns FROM files WHERE path = ?", (key,)).fetchone()
            if old is not None and (old[0], old[1]) != (entry.size, entry.mtime_ns):
                self._conn.execute("DELETE FROM embeddings WHERE path = ?", (key,))
            self._conn.execute(
                "INSERT OR REPLACE INTO files (path, size, mtime_ns, content_hash, width, height, format, "
                f"exif_datetime, camera, error, updated, frames, {', '.join(_EVIDENCE_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(row))})",
                row,
            )

        self._guarded(work)

    def put_embedding(self, path: str, model_id: str, vector: np.ndarray) -> None:
        """Store one embedding (as float16) for a file already recorded with :meth:`put_file`."""
        blob = np.ascontiguousarray(vector, dtype=np.float16).tobytes()
        self._guarded(
            lambda: self._conn.execute(
                "INSERT OR REPLACE INTO embeddings (path, model_id, vector) VALUES (?, ?, ?)",
                (_key(path), model_id, blob),
            )
        )

    def pair_checks(self, method: str, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """Stored geometric-check results (inlier counts) of content-hash pairs by ``method``; a pair is found in
        either order, and comes back keyed as asked."""
        wanted = {(min(a, b), max(a, b)): (a, b) for a, b in pairs}

        def read() -> list[tuple[str, str, int]]:
            rows: list[tuple[str, str, int]] = []
            firsts = sorted({a for a, _ in wanted})
            for chunk in _chunks(firsts):
                marks = ",".join("?" * len(chunk))
                rows += self._conn.execute(
                    f"SELECT a, b, inliers FROM pair_checks WHERE method = ? AND a IN ({marks})", (method, *chunk)
                ).fetchall()
            return rows

        return {wanted[(a, b)]: int(n) for a, b, n in self._guarded(read) if (a, b) in wanted}

    def put_pair_checks(self, method: str, results: Iterable[tuple[str, str, int]]) -> None:
        """Store geometric-check results ``(content hash, content hash, inliers)`` of ``method``."""
        rows = [(min(a, b), max(a, b), method, int(n)) for a, b, n in results]
        self._guarded(lambda: self._conn.executemany("INSERT OR REPLACE INTO pair_checks VALUES (?, ?, ?, ?)", rows))

    def commit(self) -> None:
        """Make everything written so far durable."""
        self._guarded(lambda: self._conn.commit())

    def purge_missing(self, roots: Iterable[str], seen: set[str]) -> int:
        """Forget cached files under ``roots`` that the walk did not see and that no longer exist. Returns count."""
        seen_keys = {_key(p) for p in seen}
        roots = list(roots)

        def work() -> int:
            stale: list[bytes] = []
            for root in roots:
                prefix = _key(os.path.join(os.path.abspath(root), ""))
                upper = prefix[:-1] + bytes([prefix[-1] + 1])
                for (key,) in self._conn.execute(
                    "SELECT path FROM files WHERE path >= ? AND path < ?", (prefix, upper)
                ):
                    if key not in seen_keys and not os.path.lexists(os.fsdecode(key)):
                        stale.append(key)
            for chunk in _chunks(stale):
                marks = ",".join("?" * len(chunk))
                self._conn.execute(f"DELETE FROM embeddings WHERE path IN ({marks})", chunk)
                self._conn.execute(f"DELETE FROM files WHERE path IN ({marks})", chunk)
            self._conn.commit()
            return len(stale)

        return self._guarded(work)

    def delete_model(self, model_id: str) -> int:
        """Drop every embedding of one model (after switching models). Returns how many were dropped."""

        def work() -> int:
            cur = self._conn.execute("DELETE FROM embeddings WHERE model_id = ?", (model_id,))
            self._conn.commit()
            return cur.rowcount

        return self._guarded(work)
