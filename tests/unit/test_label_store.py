"""The label store on real SQLite files: a group's labels written all or nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dedup_app.core.labels import DUPLICATE, LabelledFile, LabelStore


def test_a_group_is_labelled_all_or_nothing(tmp_path: Path) -> None:
    """The second pair of a group fails to be written (here a trigger refuses it, as a full disk would): the first
    pair must not stay behind, or a group ends up half labelled."""
    db = tmp_path / "labels.sqlite3"
    store = LabelStore(db)
    with sqlite3.connect(db) as other:
        other.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON labels WHEN NEW.hash_b = 'h3' "
            "BEGIN SELECT RAISE(ABORT, 'no room left'); END"
        )
    other.close()
    group = [LabelledFile(h, f"/p/{h}.jpg") for h in ("h1", "h2", "h3")]  # pairs h1-h2, h1-h3 (refused), h2-h3
    with pytest.raises(sqlite3.IntegrityError, match="no room left"):
        store.put_group(group, DUPLICATE)
    assert store.all_labels() == []
    store.close()
    with sqlite3.connect(db) as again:
        assert again.execute("SELECT count(*) FROM labels").fetchone() == (0,)
    again.close()
