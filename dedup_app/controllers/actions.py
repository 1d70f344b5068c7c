"""Trash, move and undo for the window: which files are gone, and an undo stack that loses nothing.

An action's record stays on the undo stack until its files are back. Undo works on the newest record without
taking it off first: files that were restored leave it, files that could not be restored stay on it with the
reason (a name taken again, a file missing from the trash), so the user can fix the cause and undo again. Files
the system trash does not give back (macOS, Windows: there is no interface for it) are listed with where they are,
and the list can be saved. A job that was refused or failed changes nothing here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field

from dedup_app.core.actions import (
    TRASH,
    ActionRecord,
    default_trash,
    move_files,
    trash_files,
    trash_location_hint,
    undo,
)
from dedup_app.core.files import FileError
from dedup_app.core.progress import CancelToken, Job, Progress
from dedup_app.core.units import count_of


@dataclass(frozen=True)
class Outcome:
    """What to tell the user after an action or an undo: a status line, the files that failed (with reasons) and
    the record they can save as a list."""

    message: str
    failures: list[FileError] = field(default_factory=list)
    failure_title: str = ""
    record: ActionRecord | None = None


class ActionsController:
    """The files trashed or moved since the last scan (left out of the groups) and the undo stack."""

    def __init__(self, trash: Callable[[str], None] = default_trash) -> None:
        self.trash = trash
        #: paths no longer where the scan found them (trashed, moved, or vanished meanwhile)
        self.removed: set[str] = set()
        self.undo_stack: list[ActionRecord] = []

    def scan_finished(self) -> None:
        """A new scan sees the folders as they are: nothing is 'removed' any more (the undo stack stays)."""
        self.removed.clear()

    # -- trash and move -----------------------------------------------------------------------------------------

    def trash_job(self, paths: Sequence[str]) -> Job:
        """The job sending ``paths`` to the trash (run it on the worker, then pass its record to :meth:`done`)."""
        paths, trash = list(paths), self.trash
        return lambda cancel: trash_files(paths, trash, cancel)

    def move_job(self, paths: Sequence[str], destination: str) -> Job:
        """The job moving ``paths`` into ``destination``."""
        paths = list(paths)
        return lambda cancel: move_files(paths, destination, cancel)

    def done(self, record: ActionRecord) -> Outcome:
        """An action finished (also after Cancel: the record lists what was done)."""
        if record.moved:
            self.undo_stack.append(record)
        self.removed.update(record.sources)
        self.removed.update(f.path for f in record.failed if not os.path.lexists(f.path))  # gone meanwhile
        what = "moved to the trash" if record.kind == TRASH else "moved"
        message = f"{count_of(len(record.moved), 'file')} {what}."
        unknown = [m for m in record.moved if m.destination is None]
        if unknown:  # the system trash keeps them, but does not say where: undo cannot bring them back
            message += (f" {count_of(len(unknown), 'file')} can be restored from {trash_location_hint()} only "
                        "(Undo lists them).")  # fmt: skip
        elif record.moved:
            message += " Undo with Ctrl+Z."
        failures = record.failed
        title = f"{count_of(len(failures), 'file')} could not be {what}" if failures else ""
        return Outcome(message, failures, title, record)

    # -- undo ---------------------------------------------------------------------------------------------------

    @property
    def can_undo(self) -> bool:
        return bool(self.undo_stack)

    def undo_job(self) -> Job | None:
        """The job restoring the newest record's files, or None when there is nothing to undo. The record stays on
        the stack until :meth:`undo_done` knows what came back."""
        if not self.undo_stack:
            return None
        record = self.undo_stack[-1]

        def job(cancel: CancelToken) -> Generator[Progress, None, tuple[ActionRecord, ActionRecord]]:
            restored = yield from undo(record, cancel)
            return record, restored

        return job

    def undo_done(self, outcome: tuple[ActionRecord, ActionRecord]) -> Outcome:
        """Take the restored files off the record; keep those that can still come back for another try."""
        record, restored = outcome
        back = {m.destination for m in restored.moved if m.destination}
        self.removed.difference_update(back)
        failed = {f.path: f for f in restored.failed}
        # files the system trash will never give back to us are listed now, not kept for a retry that cannot work
        remaining = [m for m in record.moved if m.source not in back and m.destination is not None]
        if record in self.undo_stack:
            at = self.undo_stack.index(record)
            if remaining:
                self.undo_stack[at] = ActionRecord(record.kind, remaining, [], record.when)
            else:
                del self.undo_stack[at]
        message = f"{count_of(len(back), 'file')} restored."
        if remaining:
            message += f" {count_of(len(remaining), 'file')} still to restore: fix what the list says, then Undo again."
        title = f"{count_of(len(failed), 'file')} could not be restored" if failed else ""
        return Outcome(message, list(failed.values()), title, record)
