"""The label store on real SQLite files: a group's labels written all or nothing; a damaged, locked or
unopenable labels file never stops the start."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from dedup_app.core.labels import DUPLICATE, NOT_DUPLICATE, LabelledFile, LabelStore


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


def labelled(store: LabelStore, n: int = 3) -> list[tuple[str, str, str]]:
    """Label ``n`` pairs; returns them as (hash_a, hash_b, label)."""
    for k in range(n):
        store.put_pair(LabelledFile(f"a{k}", f"/p/a{k}.jpg"), LabelledFile(f"b{k}", f"/p/b{k}.jpg"), DUPLICATE)
    return [(f"a{k}", f"b{k}", DUPLICATE) for k in range(n)]


def rows_of(store: LabelStore) -> list[tuple[str, str, str]]:
    return sorted((lab.a.content_hash, lab.b.content_hash, lab.label) for lab in store.all_labels())


def test_a_file_that_is_not_a_database_is_moved_aside_and_a_new_one_started(tmp_path: Path) -> None:
    db = tmp_path / "labels.sqlite3"
    db.write_bytes(b"not a database, but somebody's work" * 200)
    store = LabelStore(db)
    (aside,) = tmp_path.glob("labels.sqlite3.corrupt-*")
    assert aside.read_bytes() == b"not a database, but somebody's work" * 200  # kept, never deleted
    assert store.warning is not None and str(db) in store.warning and str(aside) in store.warning
    assert store.saved
    labelled(store, 1)
    store.close()
    again = LabelStore(db)
    assert again.warning is None and len(again.all_labels()) == 1
    again.close()


def _smash_page_of(db: Path, name: str) -> None:
    with sqlite3.connect(db) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        (page,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()
    conn.close()
    with open(db, "r+b") as f:
        f.seek((page - 1) * page_size + 8)
        f.write(bytes(range(256)) * ((page_size - 8) // 256))


def test_a_damaged_file_is_moved_aside_keeping_the_labels_that_can_be_read(tmp_path: Path) -> None:
    """A broken index page (the table itself intact): the file is moved aside and every label carried over."""
    db = tmp_path / "labels.sqlite3"
    store = LabelStore(db)
    expected = labelled(store, 5)
    store.close()
    _smash_page_of(db, "sqlite_autoindex_labels_1")
    store = LabelStore(db)
    assert list(tmp_path.glob("labels.sqlite3.corrupt-*")), "the damaged file was not kept aside"
    assert store.warning is not None and "damaged" in store.warning and "5 labels" in store.warning
    assert rows_of(store) == expected and store.saved
    store.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    conn.close()


def hold_lock(db: Path, journal: str = "wal") -> sqlite3.Connection:
    """Another program's connection holding the write lock (``BEGIN EXCLUSIVE``) on ``db``."""
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute(f"PRAGMA journal_mode={journal}")
    other.execute("BEGIN EXCLUSIVE")
    return other


def test_a_locked_file_neither_freezes_nor_stops_the_start(tmp_path: Path) -> None:
    """Another program holds the write lock for good: the store opens in seconds (not SQLite's 30 s), with the
    file's labels, and new labels work for the session, said not to be saved."""
    db = tmp_path / "labels.sqlite3"
    store = LabelStore(db)
    expected = labelled(store, 2)
    store.close()
    other = hold_lock(db)
    try:
        started = time.monotonic()
        store = LabelStore(db)
        store.put_pair(LabelledFile("n1", "/p/n1.jpg"), LabelledFile("n2", "/p/n2.jpg"), NOT_DUPLICATE)
        assert time.monotonic() - started < 10
        assert store.warning is not None and str(db) in store.warning and "locked" in store.warning
        assert "kept only until you quit" in store.warning and not store.saved
        assert rows_of(store) == sorted([*expected, ("n1", "n2", NOT_DUPLICATE)])
        store.close()
    finally:
        other.rollback()
        other.close()
    again = LabelStore(db)
    assert again.warning is None and rows_of(again) == expected
    again.close()


def test_a_file_locked_against_reading_too_opens_empty_in_memory(tmp_path: Path) -> None:
    """In SQLite's rollback-journal mode an exclusive lock also keeps readers out."""
    db = tmp_path / "labels.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE labels (x)")
    conn.close()
    other = hold_lock(db, "delete")
    try:
        started = time.monotonic()
        store = LabelStore(db)
        assert time.monotonic() - started < 10
        assert store.warning is not None and str(db) in store.warning and "locked" in store.warning
        assert not store.saved and store.all_labels() == []
        labelled(store, 1)
        assert len(store.all_labels()) == 1
        store.close()
    finally:
        other.rollback()
        other.close()


def test_a_short_lock_is_waited_for(tmp_path: Path) -> None:
    """A lock held for a moment (another window writing a label) is not a reason to leave the file."""
    db = tmp_path / "labels.sqlite3"
    LabelStore(db).close()
    other = hold_lock(db)
    threading.Timer(0.3, other.rollback).start()
    store = LabelStore(db)
    assert store.warning is None and store.saved
    store.close()
    other.close()


@pytest.mark.parametrize("case", ["folder", "parent is a file", "no permission"])
def test_a_path_that_cannot_be_opened_is_named_and_the_store_works_in_memory(case: str, tmp_path: Path) -> None:
    db = tmp_path / "labels.sqlite3"
    if case == "folder":
        db.mkdir()
        (db / "keep.txt").write_text("mine")
        words = "is a folder"
    elif case == "parent is a file":
        (tmp_path / "data").write_text("a file where the folder should be")
        db = tmp_path / "data" / "labels.sqlite3"
        words = "cannot be made"
    else:
        if os.geteuid() == 0:
            pytest.skip("root reads every file")
        LabelStore(db).close()
        db.chmod(0)
        words = "permission"
    store = LabelStore(db)
    assert store.warning is not None and str(db) in store.warning and words in store.warning, store.warning
    assert not store.saved
    labelled(store, 1)
    assert len(store.all_labels()) == 1
    store.close()
    if case == "folder":
        assert [p.name for p in db.iterdir()] == ["keep.txt"]


def test_train_from_app_says_the_labels_file_was_damaged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dedup_app.cli import main

    db = tmp_path / "labels.sqlite3"
    db.write_bytes(b"\x00garbage" * 100)
    code = main(["train", "--from-app", "--labels-db", str(db), "--epochs", "1", "--no-progress"])
    err = capsys.readouterr().err
    (aside,) = tmp_path.glob("labels.sqlite3.corrupt-*")
    assert f"warning: The labels file {db} was damaged" in err and str(aside) in err
    assert code == 2 and "too little data" in err  # the fresh store is empty: nothing to train on, said so
