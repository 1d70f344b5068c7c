"""Python's cyclic garbage collector runs on the GUI thread only.

The collector runs on whatever thread happens to allocate when its thresholds are crossed. When that is a worker
thread (loading a change head builds hundreds of torch modules), it can free Qt objects that belong to the GUI
thread (a dialog or a widget left in a reference cycle), and Qt then crashes the process. Seen here as a
segmentation fault in the Changes tab's worker while "Garbage-collecting".

The fix used by calibre (``calibre.gui2.GarbageCollector``) and recommended for PyQt/PySide applications: turn
automatic collection off while the window runs and collect from a timer on the GUI thread, with the same
generational thresholds. Reference counting still frees everything that is not in a cycle at once.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer

INTERVAL_MS = 1000


class MainThreadGarbageCollector(QObject):
    """Disables automatic collection and collects, by generation, from a timer on the thread it was made on."""

    def __init__(self, parent: QObject, interval_ms: int = INTERVAL_MS) -> None:
        super().__init__(parent)
        self.thresholds = gc.get_threshold()
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.check)
        gc.disable()
        self.timer.start(interval_ms)

    def check(self) -> None:
        """Collect the generations whose counts crossed their thresholds, oldest first (as CPython would)."""
        counts = gc.get_count()
        for generation in (2, 1, 0):
            if counts[generation] > self.thresholds[generation]:
                gc.collect(generation)
                return

    def stop(self) -> None:
        """Give collection back to the interpreter (when the window closes)."""
        self.timer.stop()
        gc.enable()


_installed: MainThreadGarbageCollector | None = None
_users: set[int] = set()


def install(app: QObject, user: object) -> MainThreadGarbageCollector:
    """Collect on ``app``'s thread for as long as ``user`` (a window) needs it; see :func:`release`."""
    global _installed
    if _installed is None:
        _installed = MainThreadGarbageCollector(app)
    _users.add(id(user))
    return _installed


def release(user: object) -> None:
    """``user`` is done (its window closed): the last one gives collection back to the interpreter. Safe twice."""
    global _installed
    _users.discard(id(user))
    if not _users and _installed is not None:
        _installed.stop()
        _installed.deleteLater()
        _installed = None
