"""One job at a time on the worker thread, for the whole window.

The runner starts a :class:`~dedup_app.ui.worker.Worker` for a core job, tells the model service (and the change-head
service) that a job runs (a switch waits for it), hands progress to whoever listens, and when the thread has ended
calls the job's success callback on the UI thread, or reports its error or cancellation. While the model is still
loading at start-up, a job asked for waits its turn instead of being refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal

from dedup_app.controllers.models import ChangeHeadService, ModelService, SwitchResult
from dedup_app.core.progress import Job
from dedup_app.ui.worker import Worker

log = logging.getLogger(__name__)

PRELOAD = "model"  # the start-up load of the model
SWITCH = "switch"  # dropping the old model's embeddings after a switch
#: short jobs the app starts by itself: a job the user asks for meanwhile waits its turn instead of being refused
QUEUE_BEHIND = (PRELOAD, SWITCH)


class JobRunner(QObject):
    """Runs jobs one at a time. Signals: ``started(text)``, ``progress(report)``, ``failed(title, message,
    details)``, ``message(text)`` for the status bar, ``finished(name)`` after the callbacks, and
    ``switched(SwitchResult)`` when a model switch that waited for the job was carried out, and
    ``change_head_switched(SwitchResult)`` when a change-head switch that waited was."""

    started = Signal(str)
    progress = Signal(object)
    failed = Signal(str, str, str)
    message = Signal(str)
    finished = Signal(str)
    switched = Signal(object)
    change_head_switched = Signal(object)

    def __init__(
        self, models: ModelService, parent: QObject | None = None, change_heads: ChangeHeadService | None = None
    ) -> None:
        super().__init__(parent)
        self.models = models
        self.change_heads = change_heads
        self.worker: Worker | None = None
        self._pending: tuple[str, Job, Callable[[Any], None], str] | None = None

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def run(self, name: str, job: Job, on_success: Callable[[Any], None], text: str) -> bool:
        """Start ``job`` on the worker. While the model loads or switches it waits its turn (True); with another
        job running it is refused (False, and the status bar says why)."""
        if self.worker is not None:
            if self.worker.name in QUEUE_BEHIND and self._pending is None:
                self._pending = (name, job, on_success, text)
                self.message.emit(f"{text} starts as soon as the model is ready")
                return True
            self.message.emit("Busy: wait for the current job to finish, or cancel it (Esc)")
            return False
        worker = Worker(job, name)
        self.worker = worker
        self.models.job_started(name)
        if self.change_heads is not None:
            self.change_heads.job_started(name)
        worker.progress.connect(self.progress)
        worker.finished.connect(lambda: self._done(worker, on_success, text))
        self.started.emit(text + "…")
        worker.start()
        return True

    def cancel(self) -> None:
        """Ask the running job to stop at its next progress point."""
        if self.worker is not None:
            self.worker.cancel()

    def _done(self, worker: Worker, on_success: Callable[[Any], None], text: str) -> None:
        """On the UI thread once the worker thread has ended: the runner is idle again before results land."""
        worker.wait()
        if self.worker is worker:
            self.worker = None
        switch = self.models.job_finished()
        head_switch = self.change_heads.job_finished() if self.change_heads is not None else None
        try:
            if worker.outcome == "succeeded":
                on_success(worker.result)
            elif worker.outcome == "failed" and worker.error is not None:
                self.failed.emit(f"{text} failed", *worker.error)
            elif worker.outcome == "cancelled":
                self.message.emit(f"{text} cancelled; what was done so far is kept")
        finally:  # also when showing the result failed: a switch that waited is never lost
            worker.deleteLater()
            self.finished.emit(worker.name)
            pending, self._pending = self._pending, None
            if head_switch is not None:
                self.change_head_switched.emit(head_switch)
            if switch is not None:
                self.apply_switch(switch)  # first: a scan that waited must use the new model
            if pending is not None and worker.outcome == "succeeded":
                self.run(*pending)

    def apply_switch(self, switch: SwitchResult) -> None:
        """Announce a model switch and drop the old model's cached embeddings on the worker."""
        self.switched.emit(switch)
        if switch.job is not None:

            def dropped(count: int) -> None:
                self.message.emit(f"{switch.message} ({count:,} cached embeddings of {switch.old} dropped)")

            self.run(SWITCH, switch.job, dropped, "Switching models")

    def shutdown(self) -> None:
        """Stop the running job (at its next batch; loading the model cannot be interrupted) and wait for it."""
        self._pending = None
        if self.worker is not None:
            self.worker.cancel()
            self.worker.wait()
