"""The embedding cache: SQLite (WAL) in the user's data folder, keyed by path, size, mtime and model id.

Two tables: ``files`` holds what does not depend on the model (content hash, size in pixels, EXIF facts, or the
reason the file could not be read), ``embeddings`` one float16 vector per (path, model). A row is used only while
the file's size and modification time still match; a changed file loses its embeddings. Every batch is committed,
so a scan killed halfway keeps its work and the next scan resumes. A cache file that is not a database (a crash
mid-write on a broken disk, or junk) is moved aside and a fresh one started: the cache is disposable, never fatal.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dedup_app.core.files import FileEntry
from dedup_app.core.imageio import ImageInfo
from dedup_app.core.resources import user_data_file

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_CHUNK = 500  # SQLite host-parameter batches

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
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS embeddings (
    path BLOB NOT NULL,
    model_id TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (path, model_id)
);
CREATE INDEX IF NOT EXISTS embeddings_model ON embeddings (model_id);
"""


def default_cache_path() -> Path:
    """``<user data dir>/dedup-app/cache.sqlite3`` (platformdirs)."""
    return user_data_file("cache.sqlite3")


@dataclass(frozen=True)
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


def _key(path: str) -> bytes:
    return os.fsencode(path)


def _chunks(items: Sequence[bytes], n: int = _CHUNK) -> Iterator[Sequence[bytes]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


class EmbeddingCache:
    """SQLite-backed cache of file facts and embeddings. ``":memory:"`` gives a throwaway in-memory cache.

    Safe to hand from one thread to another (one lock around the connection); not meant for concurrent writers
    in several processes beyond what SQLite's WAL mode already allows.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None and str(path) != ":memory:" else None
        if path is None:
            self.path = default_cache_path()
        self._lock = threading.RLock()
        self._conn = self._connect()

    # -- opening ------------------------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self.path is None:
            return self._init(sqlite3.connect(":memory:", check_same_thread=False))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._init(sqlite3.connect(self.path, check_same_thread=False, timeout=30))
        except sqlite3.DatabaseError as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.warning("cache %s is unreadable (%s); moved to %s and starting a new one", self.path, exc, aside)
            for suffix in ("", "-wal", "-shm"):
                src = Path(str(self.path) + suffix)
                if src.exists():
                    os.replace(src, Path(str(aside) + suffix))
            return self._init(sqlite3.connect(self.path, check_same_thread=False, timeout=30))

    @staticmethod
    def _init(conn: sqlite3.Connection) -> sqlite3.Connection:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            version_row = None
            has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
            if has_meta:
                version_row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if version_row is not None and int(version_row[0]) != SCHEMA_VERSION:
                # An old or newer layout: the cache is disposable, so start it again rather than migrate.
                log.info("cache schema %s != %s: rebuilding the cache", version_row[0], SCHEMA_VERSION)
                conn.executescript("DROP TABLE IF EXISTS files; DROP TABLE IF EXISTS embeddings;")
            conn.executescript(_SCHEMA)
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            conn.commit()
            conn.execute("SELECT count(*) FROM files").fetchone()  # touches the pages: fails fast if corrupt
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        """Commit and close the connection."""
        with self._lock:
            self._conn.commit()
            self._conn.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------------------------------

    def lookup(self, entries: Iterable[FileEntry], model_id: str | None) -> dict[str, CachedFile]:
        """Rows for the given files that still match their size and mtime, with the model's vector if cached."""
        wanted = {_key(e.path): e for e in entries}
        found: dict[str, CachedFile] = {}
        keys = list(wanted)
        with self._lock:
            for chunk in _chunks(keys):
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    "SELECT f.path, f.size, f.mtime_ns, f.content_hash, f.width, f.height, f.format, "
                    "f.exif_datetime, f.camera, f.error, e.vector FROM files f "
                    "LEFT JOIN embeddings e ON e.path = f.path AND e.model_id = ? "
                    f"WHERE f.path IN ({marks})",
                    (model_id or "", *chunk),
                ).fetchall()
                for key, size, mtime, digest, w, h, fmt, when, camera, error, blob in rows:
                    entry = wanted[key]
                    if size != entry.size or mtime != entry.mtime_ns:
                        continue
                    info = ImageInfo(w, h, fmt or "unknown", when, camera) if w is not None else None
                    vector = np.frombuffer(blob, dtype=np.float16) if blob is not None else None
                    found[entry.path] = CachedFile(size, mtime, digest, info, error, vector)
        return found

    def count(self, model_id: str | None = None) -> int:
        """Number of cached files, or of embeddings for ``model_id``."""
        with self._lock:
            if model_id is None:
                return int(self._conn.execute("SELECT count(*) FROM files").fetchone()[0])
            return int(
                self._conn.execute("SELECT count(*) FROM embeddings WHERE model_id = ?", (model_id,)).fetchone()[0]
            )

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
        with self._lock:
            old = self._conn.execute("SELECT size, mtime_ns FROM files WHERE path = ?", (key,)).fetchone()
            if old is not None and (old[0], old[1]) != (entry.size, entry.mtime_ns):
                self._conn.execute("DELETE FROM embeddings WHERE path = ?", (key,))
            self._conn.execute(
                "INSERT OR REPLACE INTO files (path, size, mtime_ns, content_hash, width, height, format, "
                "exif_datetime, camera, error, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
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
                ),
            )

    def put_embedding(self, path: str, model_id: str, vector: np.ndarray) -> None:
        """Store one embedding (as float16) for a file already recorded with :meth:`put_file`."""
        blob = np.ascontiguousarray(vector, dtype=np.float16).tobytes()
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO embeddings (path, model_id, vector) VALUES (?, ?, ?)",
                (_key(path), model_id, blob),
            )

    def commit(self) -> None:
        """Make everything written so far durable."""
        with self._lock:
            self._conn.commit()

    def purge_missing(self, roots: Iterable[str], seen: set[str]) -> int:
        """Forget cached files under ``roots`` that the walk did not see and that no longer exist. Returns count."""
        seen_keys = {_key(p) for p in seen}
        stale: list[bytes] = []
        with self._lock:
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

    def delete_model(self, model_id: str) -> int:
        """Drop every embedding of one model (after switching models). Returns how many were dropped."""
        with self._lock:
            cur = self._conn.execute("DELETE FROM embeddings WHERE model_id = ?", (model_id,))
            self._conn.commit()
            return cur.rowcount
