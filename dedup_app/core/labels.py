"""The label store: pairs the user marked "duplicate" or "not duplicate", kept by content hash.

Labels are the user's work and the training data of the fine-tuning step, so they live in their own SQLite file
(``labels.sqlite3`` in the user data folder), apart from the disposable embedding cache. A pair is keyed by the
two files' content hashes (ordered), so a label survives renames and moves; the last paths are kept for display
and for training from images that still exist.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from dedup_app.core.resources import user_data_file

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
    """Read and write pair labels; ``":memory:"`` for a throwaway store."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        target = default_labels_path() if path is None else path
        self.path = str(target)
        if str(target) != ":memory:":
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(str(target), check_same_thread=False, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)
        self._conn.commit()

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
                "SELECT hash_a, path_a, hash_b, path_b, label, created FROM labels ORDER BY created"
            ).fetchall()
        return [
            Label(LabelledFile(ha, os.fsdecode(pa)), LabelledFile(hb, os.fsdecode(pb)), lab, c)
            for ha, pa, hb, pb, lab, c in rows
        ]
