"""One generic worker that runs a core generator on its own thread.

The job is a callable taking a :class:`CancelToken` and returning a progress generator (see
``dedup_app.core.progress``). Progress reports come back through a signal, which Qt queues to the receiver's (UI)
thread; when the thread has ended (``finished``), ``outcome`` says how, with the result or the error and its
traceback. The worker never touches a widget, and errors are never swallowed: the window shows them in one dialog
and the log.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any

from PySide6.QtCore import QThread, Signal

from dedup_app.core.progress import Cancelled, CancelToken, Job

log = logging.getLogger(__name__)


class Worker(QThread):
    """Runs ``job(cancel_token)`` to completion on a thread; ``cancel()`` stops it at its next progress point."""

    progress = Signal(object)  # Progress

    def __init__(self, job: Job, name: str = "job", min_interval: float = 0.05) -> None:
        super().__init__()
        self.job = job
        self.name = name
        self.token = CancelToken()
        self.min_interval = min_interval  # progress signals are throttled: the UI needs ~20 per second at most
        self.setObjectName(f"worker-{name}")
        #: after the thread finished: "succeeded", "failed" or "cancelled", with the result or the error
        self.outcome: str | None = None
        self.result: Any = None
        self.error: tuple[str, str] | None = None

    def cancel(self) -> None:
        """Ask the job to stop at its next progress report (thread-safe)."""
        self.token.cancel()

    def run(self) -> None:  # runs on the worker thread
        last_time, last_stage = 0.0, None
        try:
            gen = self.job(self.token)
            while True:
                try:
                    report = next(gen)
                except StopIteration as stop:
                    self.outcome, self.result = "succeeded", stop.value
                    return
                now = time.monotonic()
                if now - last_time >= self.min_interval or report.stage != last_stage or report.done == report.total:
                    self.progress.emit(report)
                    last_time, last_stage = now, report.stage
        except Cancelled:
            self.outcome = "cancelled"
        except Exception as exc:
            log.exception("%s failed", self.name)
            self.outcome, self.error = "failed", (f"{type(exc).__name__}: {exc}", traceback.format_exc())
