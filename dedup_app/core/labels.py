"""The label store: pairs the user marked "duplicate" or "not duplicate", and change masks the user painted on
before/after pairs, kept by content hash.

Labels are the user's work and the training data of the fine-tuning steps, so they live in their own SQLite file
(``labels.sqlite3`` in the user data folder), apart from the disposable embedding cache. A pair is keyed by the
two files' content hashes (ordered), so a label survives renames and moves; the last paths are kept for display
and for training from images that still exist. A painted change mask is keyed by the before and the after file's
content hashes (in that order: before/after is not symmetric) and kept as a PNG, on the before image's pixel grid.

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
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from dedup_app.core.cache import is_corrupt, move_aside
from dedup_app.core.files import describe_os_error
from dedup_app.core.resources import user_data_file
from dedup_app.core.units import count_of

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
_MASK_SCHEMA = """
CREATE TABLE IF NOT EXISTS change_masks (
    hash_before TEXT NOT NULL,
    hash_after TEXT NOT NULL,
    path_before BLOB NOT NULL,
    path_after BLOB NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    mask_png BLOB NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (hash_before, hash_after)
);
"""
_MASK_COLUMNS = "hash_before, hash_after, path_before, path_after, width, height, mask_png, created"
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


class DamagedMaskError(ValueError):
    """A stored change mask whose PNG cannot be decoded to its recorded size."""


@dataclass(frozen=True)
class ChangeMaskLabel:
    """A change mask painted on a before/after pair: the PNG as stored, decoded on demand (:meth:`mask`)."""

    before: LabelledFile
    after: LabelledFile
    width: int
    height: int
    png: bytes = field(repr=False)
    created: float

    def mask(self) -> np.ndarray:
        """The mask, uint8 ``height`` x ``width``, 255 changed and 0 unchanged. Raises :class:`DamagedMaskError`."""
        return decode_mask(self.png, (self.height, self.width))


def encode_mask(mask: np.ndarray) -> bytes:
    """A mask (any non-zero value is changed) as a 1-bit PNG: a 1024 x 1024 label of a few shapes is a few KB."""
    import cv2

    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"a change mask is a non-empty 2-D array, not one of shape {mask.shape}")
    binary = np.where(mask != 0, np.uint8(255), np.uint8(0))
    ok, buf = cv2.imencode(".png", binary, [cv2.IMWRITE_PNG_BILEVEL, 1])
    if not ok:
        raise ValueError("the change mask could not be encoded as PNG")
    return bytes(buf.tobytes())


def decode_mask(png: bytes, shape: tuple[int, int]) -> np.ndarray:
    """The uint8 0/255 mask of :func:`encode_mask`'s PNG, checked to be ``shape`` (height, width); raises
    :class:`DamagedMaskError` when it cannot be read (PNG checksums catch damaged bytes) or has another size."""
    import cv2

    arr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE) if png else None
    if arr is None:
        raise DamagedMaskError("the stored change mask cannot be decoded (damaged)")
    if arr.shape != tuple(shape):
        raise DamagedMaskError(f"the stored change mask is {arr.shape[1]} x {arr.shape[0]}, not "
                               f"{shape[1]} x {shape[0]} as recorded")  # fmt: skip
    return np.where(arr > 127, np.uint8(255), np.uint8(0))


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
            conn.execute(_MASK_SCHEMA)  # files from before painted masks get the table here
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
        rows = _read_rows(path, timeout / 2)  # a lock that blocked writing may also block reading
        self.saved = False
        if rows.unreadable is None:
            self.warning = (f"The labels file {path} cannot be written ({problem}). Its {rows.counted()} are "
                            f"used, but labels you make now are kept only until you quit.{rows.lost()}")  # fmt: skip
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
            rows = _read_rows(path, timeout, check_masks=True)
            self.saved = False
            self.warning = (f"The labels file {path} is damaged ({reason}) and cannot be moved aside "
                            f"({describe_os_error(err)}). {rows.counted()} could be read from it; labels you "
                            f"make now are kept only until you quit.{rows.lost()}")  # fmt: skip
            return self._in_memory(rows)
        rows = _read_rows(aside, timeout, check_masks=True)
        kept = f" with the {rows.counted()} that could still be read" if rows.labels or rows.masks else ""
        try:
            conn = self._init(sqlite3.connect(path, check_same_thread=False, timeout=timeout))
        except (_Damaged, sqlite3.Error) as err:
            self.saved = False
            self.warning = (
                f"The labels file {path} was damaged ({reason}) and has been moved to {aside}, but a "
                f"new one cannot be started ({err}). Labels you make now are kept only until you quit.{rows.lost()}"
            )
            return self._in_memory(rows)
        _insert(conn, rows)
        self.warning = (
            f"The labels file {path} was damaged ({reason}). It has been moved to {aside} and a new one started{kept}."
            + rows.lost()
        )
        return conn

    @classmethod
    def _in_memory(cls, rows: _Salvaged) -> sqlite3.Connection:
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

    # -- painted change masks -----------------------------------------------------------------------------------

    def put_change_mask(self, before: LabelledFile, after: LabelledFile, mask: np.ndarray) -> ChangeMaskLabel:
        """Keep the change mask painted on a before/after pair (replacing an earlier one of the same pair).

        ``mask`` is on the before image's pixel grid (height x width); any non-zero value is changed. An empty mask
        is a label too: "nothing changed here". Returns what was stored."""
        png = encode_mask(mask)
        height, width = mask.shape
        stored = ChangeMaskLabel(before, after, int(width), int(height), png, time.time())
        row = (before.content_hash, after.content_hash, os.fsencode(before.path), os.fsencode(after.path),
               stored.width, stored.height, png, stored.created)  # fmt: skip
        with self._lock, self._conn:
            self._conn.execute(f"INSERT OR REPLACE INTO change_masks ({_MASK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               row)  # fmt: skip
        return stored

    def change_mask_label(self, hash_before: str, hash_after: str) -> ChangeMaskLabel | None:
        """The stored change mask of a pair (not decoded), or ``None``."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_MASK_COLUMNS} FROM change_masks WHERE hash_before = ? AND hash_after = ?",
                (hash_before, hash_after),
            ).fetchone()
        return _mask_label(row) if row else None

    def change_mask(self, hash_before: str, hash_after: str) -> np.ndarray | None:
        """The painted change mask of a pair (uint8, 255 changed), or ``None``. Raises :class:`DamagedMaskError`."""
        stored = self.change_mask_label(hash_before, hash_after)
        return None if stored is None else stored.mask()

    def change_masks(self) -> list[ChangeMaskLabel]:
        """Every painted change mask, oldest first (PNG bytes: decode one at a time with ``mask()``)."""
        with self._lock:
            rows = self._conn.execute(f"SELECT {_MASK_COLUMNS} FROM change_masks ORDER BY created, rowid").fetchall()
        return [_mask_label(row) for row in rows]

    def change_mask_count(self) -> int:
        """How many pairs have a painted change mask."""
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM change_masks").fetchone()[0])

    def move_change_mask(self, before: LabelledFile, after: LabelledFile) -> bool:
        """Record new paths for a pair's mask (its files were renamed or moved); whether there was one."""
        with self._lock, self._conn:
            cursor = self._conn.execute(
                "UPDATE change_masks SET path_before = ?, path_after = ? WHERE hash_before = ? AND hash_after = ?",
                (os.fsencode(before.path), os.fsencode(after.path), before.content_hash, after.content_hash),
            )
        return cursor.rowcount > 0

    def remove_change_mask(self, hash_before: str, hash_after: str) -> bool:
        """Forget the painted change mask of a pair; whether there was one."""
        with self._lock, self._conn:
            cursor = self._conn.execute(
                "DELETE FROM change_masks WHERE hash_before = ? AND hash_after = ?", (hash_before, hash_after)
            )
        return cursor.rowcount > 0


def _mask_label(row: Sequence[Any]) -> ChangeMaskLabel:
    """A ``change_masks`` row (in ``_MASK_COLUMNS`` order) as a :class:`ChangeMaskLabel`."""
    hb, ha, pb, pa, width, height, png, created = row
    before, after = LabelledFile(str(hb), os.fsdecode(pb)), LabelledFile(str(ha), os.fsdecode(pa))
    return ChangeMaskLabel(before, after, int(width), int(height), bytes(png), float(created))


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


@dataclass
class _Salvaged:
    """What could be read from a labels file that cannot be used as it is."""

    labels: list[tuple[object, ...]] = field(default_factory=list)
    masks: list[tuple[object, ...]] = field(default_factory=list)
    unreadable: str | None = None  # why nothing could be read; None when the file was read
    masks_lost: int = 0  # painted masks that were there but could not be read whole
    masks_cut: bool = False  # reading the masks stopped at a damaged row: how many more there were is unknown

    def counted(self) -> str:
        """'5 labels', or '5 labels and 2 painted change masks'."""
        return f"{len(self.labels):,} labels" + (f" and {count_of(len(self.masks), 'painted change mask')}"
                                                 if self.masks else "")  # fmt: skip

    def lost(self) -> str:
        """A sentence (with a leading space) on painted masks that could not be kept, or ''."""
        if self.masks_cut:
            return (" The painted change masks " + (f"after the first {len(self.masks):,} " if self.masks else "")
                    + "could not be read and are not kept.")  # fmt: skip
        if self.masks_lost:
            verb = "is" if self.masks_lost == 1 else "are"
            return f" {count_of(self.masks_lost, 'painted change mask')} could not be read and {verb} not kept."
        return ""


def _read_table(conn: sqlite3.Connection, table: str, columns: str) -> tuple[list[tuple[object, ...]], str | None]:
    """The rows of one table up to the first damaged one, and the error that stopped the reading (or None)."""
    rows: list[tuple[object, ...]] = []
    try:
        cursor = conn.execute(f"SELECT {columns} FROM {table}")
        while (row := cursor.fetchone()) is not None:
            rows.append(tuple(row))
    except sqlite3.Error as exc:
        return rows, str(exc)
    return rows, None


def _read_rows(path: Path, timeout: float, check_masks: bool = False) -> _Salvaged:
    """The label and painted-mask rows that can be read from ``path`` without writing to it (each table up to its
    first damaged row). ``check_masks`` (a damaged file) also drops masks whose PNG no longer decodes."""
    try:
        conn = sqlite3.connect(f"{Path(os.path.abspath(path)).as_uri()}?mode=ro", uri=True, timeout=timeout)
    except (sqlite3.Error, ValueError) as exc:
        return _Salvaged(unreadable=str(exc))
    try:
        labels, label_error = _read_table(conn, "labels", _COLUMNS)
        masks, mask_error = _read_table(conn, "change_masks", _MASK_COLUMNS)
    finally:
        conn.close()
    if mask_error is not None and mask_error.startswith("no such table"):
        mask_error = None  # a file from before painted masks
    out = _Salvaged(labels, masks, masks_cut=mask_error is not None)
    if not labels and not masks and label_error is not None:
        out.unreadable = label_error
    if check_masks:
        out.masks = []
        for row in masks:
            try:
                _mask_label(row).mask()
            except (DamagedMaskError, TypeError, ValueError):
                out.masks_lost += 1
                continue
            out.masks.append(row)
    return out


def _insert(conn: sqlite3.Connection, rows: _Salvaged) -> None:
    """Copy label and mask rows read from another file, skipping any that do not fit the tables."""
    with conn:
        for table, columns, batch in (("labels", _COLUMNS, rows.labels), ("change_masks", _MASK_COLUMNS, rows.masks)):
            marks = ", ".join("?" * len(columns.split(",")))
            for row in batch:
                try:
                    conn.execute(f"INSERT OR REPLACE INTO {table} ({columns}) VALUES ({marks})", row)
                except sqlite3.Error:
                    continue
