"""The label store: pairs the user marked "duplicate" or "not duplicate", kept by content hash.

Labels are the user's work and the training data of the fine-tuning step, so they live in their own SQLite file
(``labels.sqlite3`` in the user data folder), apart from the disposable embedding cache. A pair is keyed by the
two files' content hashes (ordered), so a label survives renames and moves; the last paths are kept for display
and for training from images that still exist.

A labels file that cannot be used never stops the app; :attr:`LabelStore.warning` then says what happened, for the
window to show once and the ``train`` command to print. A damaged file (not an SQLite database, or failing SQLite's
quick check) is moved aside (renamed ``NAME.corrupt-TIME``, never deleted) and a fresh one started with the labels
that could still be read from it. A file that is locked by another program (for longer than a short wait), cannot be
written or cannot be opened at all (a folder, no permission) is left alone: its labels are read into memory if they
can be, and labels made in this session are kept only until the app quits (:attr:`LabelStore.saved` is false).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from dedup_app.core.cache import is_corrupt, move_aside
from dedup_app.core.files import describe_os_error
from dedup_app.core.resources import user_data_file

log = logging.getLogger(__name__)

DUPLICATE = "duplicate"
NOT_DUPLICATE = "not_duplicate"
LABELS = (DUPLICATE, NOT_DUPLICATE)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    hash_a TEXT NOT NULL,
    hash_b TEXT NOT NULL,
    label TEXT NOT NULL CHECK (label IN ('duplicate', 'not_duplicate')),
    path_a BLOB NOT NULL,
    path_b BLOB NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (hash_a, hash_b)
);
"""
_COLUMNS = "hash_a, hash_b, label, path_a, path_b, created"
#: seconds to wait for another program's lock on the labels file: a label written by a second window passes, a
#: program holding the file for longer does not freeze the start (SQLite's default here was 30 s)
BUSY_TIMEOUT_S = 2.0


class _Damaged(Exception):
    """The labels file failed SQLite's quick check."""


def default_labels_path() -> Path:
    """``<user data dir>/dedup-app/labels.sqlite3`` (platformdirs)."""
    return user_data_file("labels.sqlite3")


@dataclass(frozen=True)
class LabelledFile:
    """One side of a labelled pair: its content hash and the path it had when labelled."""

    content_hash: str
    path: str


@dataclass(frozen=True)
class Label:
    """A labelled pair."""

    a: LabelledFile
    b: LabelledFile
    label: str
    created: float


def _ordered(a: LabelledFile, b: LabelledFile) -> tuple[LabelledFile, LabelledFile]:
    return (a, b) if a.content_hash <= b.content_hash else (b, a)


class LabelStore:
    """Read and write pair labels; ``":memory:"`` for a throwaway store.

    Opening never fails because of the file (see the module's description): ``warning`` is then a sentence naming
    the file and what was done about it, and ``saved`` tells whether labels made now are written to ``path``.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, busy_timeout: float = BUSY_TIMEOUT_S) -> None:
        target = default_labels_path() if path is None else path
        self.path = str(target)
        self.warning: str | None = None
        self.saved = True
        self._lock = threading.RLock()
        if self.path == ":memory:":
            self._conn = self._init(sqlite3.connect(":memory:", check_same_thread=False))
        else:
            self._conn = self._open(Path(target), busy_timeout)
        if self.warning:
            log.warning("%s", self.warning)

    # -- opening ------------------------------------------------------------------------------------------------

    @staticmethod
    def _init(conn: sqlite3.Connection) -> sqlite3.Connection:
        """WAL mode, a quick check (raises :class:`_Damaged`), the table; closes ``conn`` on any failure."""
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            check = conn.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                raise _Damaged("; ".join(str(row[0]) for row in check[:3]))
            conn.execute("BEGIN IMMEDIATE")  # the write lock, within the busy timeout: a locked file fails here
            conn.execute(_SCHEMA)
            conn.commit()
            return conn
        except BaseException:
            conn.close()
            raise

    def _open(self, path: Path, timeout: float) -> sqlite3.Connection:
        """The file's database; or, if it is damaged, a fresh one; or, if it cannot be written, a copy in memory."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return self._init(sqlite3.connect(path, check_same_thread=False, timeout=timeout))
        except (_Damaged, sqlite3.DatabaseError) as exc:
            if isinstance(exc, _Damaged) or is_corrupt(exc):
                return self._replace_damaged(path, exc, timeout)
            problem = _describe(path, exc)
        except OSError as exc:  # the folder cannot be made: a file in its place, no permission
            problem = f"its folder cannot be made: {describe_os_error(exc)}"
        rows, unreadable = _read_rows(path, timeout / 2)  # a lock that blocked writing may also block reading
        self.saved = False
        if unreadable is None:
            self.warning = (f"The labels file {path} cannot be written ({problem}). Its {len(rows):,} labels are "
                            "used, but labels you make now are kept only until you quit.")  # fmt: skip
        else:
            self.warning = (f"The labels file {path} cannot be opened ({problem}). Labels you make now are kept "
                            "only until you quit.")  # fmt: skip
        return self._in_memory(rows)

    def _replace_damaged(self, path: Path, exc: BaseException, timeout: float) -> sqlite3.Connection:
        """Move a damaged file aside and start a fresh one with the labels that can still be read from it."""
        reason = str(exc) or "damaged"
        try:
            aside = move_aside(path)
        except OSError as err:
            rows, _ = _read_rows(path, timeout)
            self.saved = False
            self.warning = (f"The labels file {path} is damaged ({reason}) and cannot be moved aside "
                            f"({describe_os_error(err)}). {len(rows):,} labels could be read from it; labels you "
                            "make now are kept only until you quit.")  # fmt: skip
            return self._in_memory(rows)
        rows, _ = _read_rows(aside, timeout)
        kept = f" with the {len(rows):,} labels that could still be read" if rows else ""
        try:
            conn = self._init(sqlite3.connect(path, check_same_thread=False, timeout=timeout))
        except (_Damaged, sqlite3.Error) as err:
            self.saved = False
            self.warning = (
                f"The labels file {path} was damaged ({reason}) and has been moved to {aside}, but a "
                f"new one cannot be started ({err}). Labels you make now are kept only until you quit."
            )
            return self._in_memory(rows)
        _insert(conn, rows)
        self.warning = (
            f"The labels file {path} was damaged ({reason}). It has been moved to {aside} and a new one started{kept}."
        )
        return conn

    @classmethod
    def _in_memory(cls, rows: Sequence[tuple[object, ...]]) -> sqlite3.Connection:
        conn = cls._init(sqlite3.connect(":memory:", check_same_thread=False))
        _insert(conn, rows)
        return conn

    # -- labels -------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._conn.close()

    def put_pair(self, a: LabelledFile, b: LabelledFile, label: str) -> None:
        """Label one pair (replacing an earlier label of the same pair). Identical content is not a pair."""
        self._put([(a, b)], label)

    def put_group(self, files: Iterable[LabelledFile], label: str) -> int:
        """Label every pair of distinct contents among ``files`` in one transaction; returns how many pairs."""
        unique = list({f.content_hash: f for f in files}.values())
        pairs = list(combinations(unique, 2))
        self._put(pairs, label)
        return len(pairs)

    def _put(self, pairs: Sequence[tuple[LabelledFile, LabelledFile]], label: str) -> None:
        if label not in LABELS:
            raise ValueError(f"label must be one of {LABELS}, not {label!r}")
        now = time.time()
        rows = []
        for a, b in pairs:
            if a.content_hash == b.content_hash:
                continue
            a, b = _ordered(a, b)
            rows.append((a.content_hash, b.content_hash, label, os.fsencode(a.path), os.fsencode(b.path), now))
        if not rows:
            return
        with self._lock, self._conn:  # one transaction: committed together, or rolled back together
            self._conn.executemany(
                "INSERT OR REPLACE INTO labels (hash_a, hash_b, label, path_a, path_b, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

    def remove(self, hash_a: str, hash_b: str) -> None:
        """Forget the label of one pair (undo)."""
        a, b = sorted((hash_a, hash_b))
        with self._lock:
            self._conn.execute("DELETE FROM labels WHERE hash_a = ? AND hash_b = ?", (a, b))
            self._conn.commit()

    def get(self, hash_a: str, hash_b: str) -> str | None:
        """The label of a pair, or ``None``."""
        a, b = sorted((hash_a, hash_b))
        with self._lock:
            row = self._conn.execute("SELECT label FROM labels WHERE hash_a = ? AND hash_b = ?", (a, b)).fetchone()
        return row[0] if row else None

    def not_duplicate_pairs(self) -> set[frozenset[str]]:
        """Content-hash pairs the user said are not duplicates (never grouped again)."""
        with self._lock:
            rows = self._conn.execute("SELECT hash_a, hash_b FROM labels WHERE label = ?", (NOT_DUPLICATE,))
            return {frozenset(r) for r in rows}

    def counts(self) -> dict[str, int]:
        """Number of pairs per label."""
        out = dict.fromkeys(LABELS, 0)
        with self._lock:
            for label, n in self._conn.execute("SELECT label, count(*) FROM labels GROUP BY label"):
                out[label] = int(n)
        return out

    def all_labels(self) -> list[Label]:
        """Every label, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT hash_a, path_a, hash_b, path_b, label, created FROM labels ORDER BY created, rowid"
            ).fetchall()
        return [
            Label(LabelledFile(ha, os.fsdecode(pa)), LabelledFile(hb, os.fsdecode(pb)), lab, c)
            for ha, pa, hb, pb, lab, c in rows
        ]


def _describe(path: Path, exc: sqlite3.Error) -> str:
    """Why the labels file could not be opened for writing, in words (SQLite's own messages say little)."""
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return "another program is using it: database is locked"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as err:
        return describe_os_error(err)
    if st is not None and stat.S_ISDIR(st.st_mode):
        return "it is a folder, not a file"
    if st is not None and not os.access(path, os.R_OK):
        return "no permission to read it"
    if name.startswith("SQLITE_READONLY") or (st is not None and not os.access(path, os.W_OK)):
        return "it is read-only"
    if not os.access(path.parent, os.W_OK):
        return f"its folder {path.parent} is read-only"
    return str(exc)


def _read_rows(path: Path, timeout: float) -> tuple[list[tuple[object, ...]], str | None]:
    """The label rows that can be read from ``path`` without writing to it (up to the first damaged one), and why
    none could be read (``None`` when the file was read)."""
    try:
        conn = sqlite3.connect(f"{Path(os.path.abspath(path)).as_uri()}?mode=ro", uri=True, timeout=timeout)
    except (sqlite3.Error, ValueError) as exc:
        return [], str(exc)
    rows: list[tuple[object, ...]] = []
    try:
        cursor = conn.execute(f"SELECT {_COLUMNS} FROM labels")
        while (row := cursor.fetchone()) is not None:
            rows.append(tuple(row))
    except sqlite3.Error as exc:
        return rows, None if rows else str(exc)
    finally:
        conn.close()
    return rows, None


def _insert(conn: sqlite3.Connection, rows: Sequence[tuple[object, ...]]) -> None:
    """Copy label rows read from another file, skipping any that do not fit the table."""
    with conn:
        for row in rows:
            try:
                conn.execute(f"INSERT OR REPLACE INTO labels ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", row)
            except sqlite3.Error:
                continue
