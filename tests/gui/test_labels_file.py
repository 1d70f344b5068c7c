"""The window starts over a labels file that cannot be used, and labels work for the session."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from dedup_app.core.labels import NOT_DUPLICATE, LabelledFile

pytestmark = pytest.mark.gui


@pytest.mark.parametrize("case", ["damaged", "locked", "folder"])
def test_the_window_starts_whatever_the_labels_file(case: str, qtbot, make_window, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "labels.sqlite3"
    other = None
    if case == "damaged":
        db.write_bytes(b"\x13\x37 not a database" * 64)
    elif case == "folder":
        db.mkdir()
    else:  # rollback-journal mode: another program's exclusive lock keeps even readers out
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("CREATE TABLE t (x)")
        other.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        window = make_window(db)
        assert time.monotonic() - started < 15
        labels = window.ctx.labels
        assert labels.warning is not None and str(db) in labels.warning  # for the window to show once
        qtbot.waitUntil(lambda: str(db) in window.statusBar().currentMessage())  # and it does
        assert labels.saved == (case == "damaged")  # a fresh file replaces a damaged one; else memory only
        a, b = (f"{tmp_path}/{n}.jpg" for n in "ab")
        labels.put_pair(LabelledFile("ha", a), LabelledFile("hb", b), NOT_DUPLICATE)
        assert labels.not_duplicate_pairs() == {frozenset({"ha", "hb"})}
    finally:
        if other is not None:
            other.rollback()
            other.close()
