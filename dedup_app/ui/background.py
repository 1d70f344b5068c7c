"""Short background computations (decoding a thumbnail, aligning two pictures, regrouping) on a thread pool.

``BackgroundCalls.submit(fn, callback)`` runs ``fn()`` on a pool thread and calls ``callback(result, error)`` on
the thread that owns the object (the UI thread), through a queued signal. Long, cancellable jobs use
:class:`dedup_app.ui.worker.Worker` instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

log = logging.getLogger(__name__)

Callback = Callable[[Any, BaseException | None], None]


class _Call(QRunnable):
    def __init__(self, fn: Callable[[], Any], callback: Callback, relay: BackgroundCalls) -> None:
        super().__init__()
        self.fn, self.callback, self.relay = fn, callback, relay

    def run(self) -> None:  # on a pool thread: never touch widgets here, never let an error vanish
        try:
            result = self.fn()
        except Exception as exc:
            self.relay.done.emit(self.callback, None, exc)
            return
        self.relay.done.emit(self.callback, result, None)


class BackgroundCalls(QObject):
    """A thread pool whose results come back, one callback each, on this object's thread."""

    done = Signal(object, object, object)  # callback, result, error

    def __init__(self, threads: int = 1, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(threads)
        self.done.connect(self._deliver)

    def submit(self, fn: Callable[[], Any], callback: Callback) -> None:
        """Run ``fn()`` in the pool; ``callback(result, None)`` or ``callback(None, error)`` follows here."""
        self.pool.start(_Call(fn, callback, self))

    def shutdown(self, timeout_ms: int = -1) -> None:
        """Drop queued calls and wait for the running ones (at exit)."""
        self.pool.clear()
        self.pool.waitForDone(timeout_ms)

    @staticmethod
    def _deliver(callback: Callback, result: Any, error: BaseException | None) -> None:
        callback(result, error)
