"""The installed PySide6 keeps Python's reference counts of None, True and False.

PySide6-Essentials 6.12.0 dropped one reference to ``None`` on every call of a method that returns void, and one to
``True`` / ``False`` on calls returning bool, on Python 3.11 (3.12 made those objects immortal, which hides it):
after a few thousand such calls (scrolling a long list is enough) the process died with "Fatal Python error:
none_dealloc". pyproject.toml excludes that release; this test catches a release like it.
"""

from __future__ import annotations

import sys

from PySide6.QtWidgets import QScrollBar

CALLS = 500


def test_void_and_bool_calls_keep_the_reference_counts(qtbot) -> None:  # type: ignore[no-untyped-def]
    bar = QScrollBar()
    qtbot.addWidget(bar)
    bar.setRange(0, CALLS)
    before = sys.getrefcount(None), sys.getrefcount(True), sys.getrefcount(False)
    for value in range(CALLS):
        bar.setValue(value)  # returns void
        bar.isSliderDown()  # returns bool (False)
        bar.isEnabled()  # returns bool (True)
    after = sys.getrefcount(None), sys.getrefcount(True), sys.getrefcount(False)
    # a few references may come or go with what Python itself allocates; a lost one per call is hundreds
    assert all(abs(a - b) < CALLS // 10 for a, b in zip(after, before, strict=True)), (before, after)
