"""Progress reports and cancellation for long-running core work.

Long work in the core is a generator: it yields :class:`Progress` after each unit of work (a batch, a file) and
checks a :class:`CancelToken` there. The CLI drives such a generator with a progress bar, the GUI with a worker
thread; both use :func:`drive` to get the generator's return value.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


class Cancelled(Exception):
    """Raised inside a core generator when its cancel token was set; work committed so far is kept."""


class CancelToken:
    """A thread-safe flag a UI thread sets and a worker checks at each progress point."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the work to stop at its next check."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`Cancelled` if :meth:`cancel` was called."""
        if self._event.is_set():
            raise Cancelled()


@dataclass(frozen=True)
class Progress:
    """One progress report: which stage, how far, and an optional human-readable message.

    ``total`` is ``None`` while the amount of work is not known yet (walking folders).
    """

    stage: str
    done: int
    total: int | None = None
    message: str = ""

    @property
    def fraction(self) -> float | None:
        """Completed fraction in [0, 1], or ``None`` when the total is unknown."""
        if not self.total:
            return None
        return min(1.0, self.done / self.total)


ProgressGen = Generator[Progress, None, T]

#: Long work as the window and the command line run it: a callable taking a cancel token and returning a progress
#: generator whose return value is the result.
Job = Callable[[CancelToken], Generator[Progress, None, Any]]


def drive(gen: ProgressGen[T], on_progress: Callable[[Progress], None] | None = None) -> T:
    """Run a progress generator to the end, passing each report to ``on_progress``; return its result."""
    while True:
        try:
            report = next(gen)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        if on_progress is not None:
            on_progress(report)
