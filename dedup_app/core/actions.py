"""Removing duplicates safely: to the system trash or to a folder, file by file, with undo.

Nothing is ever deleted permanently. Each action returns an :class:`ActionRecord` listing where every file went,
which :func:`undo` uses to put them back. A file that vanished or cannot be moved gets a clear reason and the rest
proceed. On Linux (freedesktop trash) files sent to the trash are found again through their ``.trashinfo``
entries; on other systems undoing a trash action is refused with a message pointing at the system Trash.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from dedup_app.core.files import FileError, describe_os_error
from dedup_app.core.progress import CancelToken, Progress

TRASH = "trash"
MOVE = "move"


@dataclass(frozen=True)
class Moved:
    """One file an action moved: from where, and to where (``None`` when the system trash does not say)."""

    source: str
    destination: str | None


@dataclass
class ActionRecord:
    """What one action did: its kind, the files it moved, the ones it could not, and when."""

    kind: str
    moved: list[Moved] = field(default_factory=list)
    failed: list[FileError] = field(default_factory=list)
    when: float = field(default_factory=time.time)

    @property
    def sources(self) -> list[str]:
        """Original paths of the files that were moved."""
        return [m.source for m in self.moved]


def default_trash(path: str) -> None:
    """Send one file to the system trash (send2trash)."""
    from send2trash import send2trash

    send2trash(path)


def _unique_destination(folder: Path, name: str) -> Path:
    """``folder/name``, or ``name (1)``, ``name (2)``, ... when taken (nothing is ever overwritten)."""
    target = folder / name
    stem, suffix = os.path.splitext(name)
    n = 1
    while target.exists() or target.is_symlink():
        target = folder / f"{stem} ({n}){suffix}"
        n += 1
    return target


def _check_source(path: str) -> str | None:
    if not os.path.lexists(path):
        return "file no longer exists (moved or deleted outside dedup-app)"
    parent = os.path.dirname(os.path.abspath(path))
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"read-only location: no permission to remove files from {parent}"
    return None


def trash_files(
    paths: Sequence[str],
    trash: Callable[[str], None] = default_trash,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, ActionRecord]:
    """Send ``paths`` to the trash one by one; yields progress; a failure is recorded and the rest go on.

    On cancel, the files already trashed stay trashed (and are in the returned record, so they can be undone).
    """
    record = ActionRecord(TRASH)
    for k, path in enumerate(paths, 1):
        if cancel is not None and cancel.cancelled:
            break
        problem = _check_source(path)
        if problem is None:
            started = time.time()
            try:
                trash(path)
                record.moved.append(Moved(path, find_in_trash(path, since=started - 2)))
            except OSError as exc:
                problem = f"could not move to the trash: {describe_os_error(exc)}"
            except Exception as exc:  # send2trash raises its own types on some platforms
                problem = f"could not move to the trash: {exc}"
        if problem is not None:
            record.failed.append(FileError(path, problem))
        yield Progress("Moving to trash", k, len(paths))
    return record


def move_files(
    paths: Sequence[str], destination: str | os.PathLike[str], cancel: CancelToken | None = None
) -> Generator[Progress, None, ActionRecord]:
    """Move ``paths`` into ``destination`` (created if needed), renaming on name clashes; never overwrites."""
    record = ActionRecord(MOVE)
    dest = Path(destination)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        record.failed = [FileError(p, f"cannot create {dest}: {describe_os_error(exc)}") for p in paths]
        return record
    for k, path in enumerate(paths, 1):
        if cancel is not None and cancel.cancelled:
            break
        problem = _check_source(path)
        if problem is None:
            target = _unique_destination(dest, os.path.basename(path))
            try:
                shutil.move(path, target)
                record.moved.append(Moved(path, str(target)))
            except OSError as exc:
                problem = f"could not move to {dest}: {describe_os_error(exc)}"
        if problem is not None:
            record.failed.append(FileError(path, problem))
        yield Progress("Moving files", k, len(paths))
    return record


def undo(record: ActionRecord) -> Generator[Progress, None, ActionRecord]:
    """Put the files of ``record`` back where they were. Returns a record of what was restored and what failed.

    A file is not restored over a new file that took its place; it is reported instead.
    """
    restored = ActionRecord(f"undo-{record.kind}")
    for k, item in enumerate(record.moved, 1):
        problem = None
        location = item.destination
        if location is None:
            problem = (
                "restoring from the trash is not supported on this system; restore it from the Trash"
                if not sys.platform.startswith("linux")
                else "not found in the trash any more"
            )
        elif os.path.lexists(item.source):
            problem = "a file with this name exists again at the original place; not overwritten"
        elif not os.path.lexists(location):
            problem = f"no longer at {location}"
        if problem is None:
            try:
                os.makedirs(os.path.dirname(item.source) or ".", exist_ok=True)
                shutil.move(location, item.source)  # type: ignore[arg-type]
                if record.kind == TRASH:
                    _remove_trashinfo(Path(location))  # type: ignore[arg-type]
                restored.moved.append(Moved(location, item.source))  # type: ignore[arg-type]
            except OSError as exc:
                problem = f"could not restore: {describe_os_error(exc)}"
        if problem is not None:
            restored.failed.append(FileError(item.source, problem))
        yield Progress("Restoring", k, len(record.moved))
    return restored


# ------------------------------------------------------------------------------- freedesktop trash (Linux)


def _trash_dirs(path: str) -> list[Path]:
    """Trash folders the freedesktop spec allows for ``path``: the home trash, then the volume's."""
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    dirs = [Path(data_home) / "Trash"]
    mount = os.path.abspath(path)
    while not os.path.ismount(mount) and os.path.dirname(mount) != mount:
        mount = os.path.dirname(mount)
    uid = os.getuid() if hasattr(os, "getuid") else 0
    dirs += [Path(mount) / ".Trash" / str(uid), Path(mount) / f".Trash-{uid}"]
    return dirs


def find_in_trash(original: str, since: float = 0.0) -> str | None:
    """Where a file trashed from ``original`` now lies (newest matching ``.trashinfo``), or ``None``.

    Only for the freedesktop trash (Linux and BSDs); elsewhere returns ``None``.
    """
    if sys.platform in ("darwin", "win32"):
        return None
    original_abs = os.path.abspath(original)
    stem = os.path.splitext(os.path.basename(original))[0]
    best: tuple[float, Path] | None = None
    for trash_dir in _trash_dirs(original):
        info_dir = trash_dir / "info"
        if not info_dir.is_dir():
            continue
        topdir = trash_dir.parent if trash_dir.name != str(os.getuid()) else trash_dir.parent.parent
        for info in info_dir.glob(f"{_glob_escape(stem)}*.trashinfo"):
            try:
                stat = info.stat()
                fields = dict(
                    line.split("=", 1) for line in info.read_text(errors="replace").splitlines() if "=" in line
                )
            except OSError:
                continue
            recorded = unquote(fields.get("Path", ""), errors="surrogateescape")
            absolute = recorded if os.path.isabs(recorded) else os.path.join(topdir, recorded)
            if os.path.abspath(absolute) != original_abs or stat.st_mtime < since:
                continue
            if best is None or stat.st_mtime >= best[0]:
                best = (stat.st_mtime, trash_dir / "files" / info.name[: -len(".trashinfo")])
    return str(best[1]) if best else None


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _remove_trashinfo(trashed: Path) -> None:
    info = trashed.parent.parent / "info" / (trashed.name + ".trashinfo")
    with contextlib.suppress(OSError):  # a stale info entry is harmless: the trash shows nothing for it
        info.unlink()
