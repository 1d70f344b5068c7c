"""Python's cyclic garbage collector runs on the GUI thread only.

The collector runs on whatever thread happens to allocate when its thresholds are crossed. When that is a worker
thread (loading a change head builds hundreds of torch modules), it can free Qt objects that belong to the GUI
thread (a dialog or a widget left in a reference cycle), and Qt then crashes the process. Seen here as a
segmentation fault in the Changes tab's worker while "Garbage-collecting".

The fix used by calibre (``calibre.gui2.GarbageCollector``) and recommended for PyQt/PySide applications: turn
automatic collection off while the window runs and collect from a timer on the GUI thread, with the same
generational thresholds. Reference counting still frees everything that is not in a cycle at once.

At a million files two more things matter. A regroup on a pool thread allocates hundreds of thousands of objects a
second; a collection on the UI thread would walk them all while the user waits, so collection pauses while one
runs (:func:`pause`: the groups, members and dicts it builds hold no cycles). And once a large result is shown,
:func:`settle` moves what is alive into the permanent generation (``gc.freeze``, as Instagram does after start-up),
so later collections walk only what was allocated since, not the million records.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer

INTERVAL_MS = 1000
#: :func:`settle` freezes what is alive once a result of at least this many files is shown.
LARGE = 50_000


class MainThreadGarbageCollector(QObject):
    """Disables automatic collection and collects, by generation, from a timer on the thread it was made on."""

    def __init__(self, parent: QObject, interval_ms: int = INTERVAL_MS) -> None:
        super().__init__(parent)
        self.thresholds = gc.get_threshold()
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.check)
        self.paused = 0  # regroups running on a pool thread
        gc.disable()
        self.timer.start(interval_ms)

    def check(self) -> None:
        """Collect the generations whose counts crossed their thresholds, oldest first (as CPython would); not while
        a regroup runs (:func:`pause`)."""
        if self.paused:
            return
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


def pause() -> None:
    """No collection on the UI thread until :func:`resume` (a regroup is running on a pool thread)."""
    if _installed is not None:
        _installed.paused += 1


def resume() -> None:
    """The regroup :func:`pause` was called for is over."""
    if _installed is not None and _installed.paused:
        _installed.paused -= 1


def settle(files: int) -> bool:
    """After a result of ``files`` files is shown: freeze what is alive when that is at least :data:`LARGE` (see
    the module's text); returns whether it did."""
    if files < LARGE:
        return False
    gc.freeze()
    return True
