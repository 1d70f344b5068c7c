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
    sent: list[str] = []
    started = time.time()
    try:
        for k, path in enumerate(paths, 1):
            if cancel is not None and cancel.cancelled:
                break
            problem = _check_source(path)
            if problem is None:
                try:
                    trash(path)
                    sent.append(path)
                except OSError as exc:
                    problem = f"could not move to the trash: {describe_os_error(exc)}"
                except Exception as exc:  # send2trash raises its own types on some platforms
                    problem = f"could not move to the trash: {exc}"
            if problem is not None:
                record.failed.append(FileError(path, problem))
            yield Progress("Moving to trash", k, len(paths))
    finally:  # where each file went is looked up once for the whole action: one pass over each trash folder
        found = find_many_in_trash(sent, since=started - 2)
        record.moved = [Moved(path, found.get(os.path.abspath(path))) for path in sent]
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


def trash_location_hint() -> str:
    """Where the system keeps trashed files, in the words of this platform's file manager."""
    if sys.platform == "darwin":
        return "the Trash (Finder)"
    if sys.platform == "win32":
        return "the Recycle Bin"
    return "the trash"


def undo(record: ActionRecord, cancel: CancelToken | None = None) -> Generator[Progress, None, ActionRecord]:
    """Put the files of ``record`` back where they were. Returns a record of what was restored (``moved``: from
    where it lay to its original place) and what could not be, with the reason (``failed``, by original path).

    A file is never restored over a new file that took its place; it is reported, saying where it still lies. On
    cancel the files restored so far are in the returned record (the rest were not tried).
    """
    restored = ActionRecord(f"undo-{record.kind}")
    for k, item in enumerate(record.moved, 1):
        if cancel is not None and cancel.cancelled:
            break
        problem = None
        location = item.destination
        if location is None:
            problem = (
                f"dedup-app cannot put files back from {trash_location_hint()} on this system: restore it from there"
                if not sys.platform.startswith("linux")
                else "not found in the trash any more (emptied, or restored by hand)"
            )
        elif os.path.lexists(item.source):
            problem = f"a file with this name exists again at the original place (not overwritten); still at {location}"
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
                problem = f"could not restore from {location}: {describe_os_error(exc)}"
        if problem is not None:
            restored.failed.append(FileError(item.source, problem))
        yield Progress("Restoring", k, len(record.moved))
    return restored


def write_record_csv(path: str | os.PathLike[str], record: ActionRecord) -> None:
    """The files of one action as CSV (original path, where it is now, and the problem if any), so a user can find
    and restore them by hand or with a script. Written atomically."""
    import csv

    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        writer = csv.writer(f)
        writer.writerow(["original_path", "now_at", "problem"])
        for m in record.moved:
            writer.writerow([m.source, m.destination or trash_location_hint(), ""])
        for e in record.failed:
            writer.writerow([e.path, "", e.error])
    os.replace(tmp, target)


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
    return find_many_in_trash([original], since).get(os.path.abspath(original))


def find_many_in_trash(originals: Sequence[str], since: float = 0.0) -> dict[str, str]:
    """For each of ``originals`` found in the freedesktop trash, where it now lies (keyed by absolute original
    path; the newest entry wins). Each trash folder is listed once, whatever the number of files, and only entries
    whose names could belong to one of them (send2trash's ``name 2.ext`` or GIO's ``name.2.ext``) are read."""
    if sys.platform in ("darwin", "win32") or not originals:
        return {}
    wanted = {os.path.abspath(p) for p in originals}
    prefixes = tuple({_trash_prefix(p) for p in wanted})
    best: dict[str, tuple[float, Path]] = {}
    folders = {os.path.dirname(p) for p in wanted}
    trash_dirs = dict.fromkeys(d for folder in sorted(folders) for d in _trash_dirs(folder))  # without repeats
    for trash_dir in trash_dirs:
        topdir = trash_dir.parent if trash_dir.name != str(os.getuid()) else trash_dir.parent.parent
        try:
            entries = [e for e in os.scandir(trash_dir / "info") if e.name.endswith(".trashinfo")]
        except OSError:
            continue
        for entry in entries:
            if not entry.name.startswith(prefixes):
                continue
            try:
                mtime = entry.stat().st_mtime
                if mtime < since:
                    continue
                text = Path(entry.path).read_text(errors="replace")
            except OSError:
                continue
            fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
            recorded = unquote(fields.get("Path", ""), errors="surrogateescape")
            original = os.path.abspath(recorded if os.path.isabs(recorded) else os.path.join(topdir, recorded))
            if original in wanted and (original not in best or mtime >= best[original][0]):
                best[original] = (mtime, trash_dir / "files" / entry.name[: -len(".trashinfo")])
    return {original: str(location) for original, (_, location) in best.items()}


def _trash_prefix(path: str) -> str:
    """The part of a file name every trash entry for it starts with: up to the first dot (GIO numbers copies as
    ``name.2.ext``, send2trash as ``name 2.ext``)."""
    return os.path.basename(path).split(".", 1)[0]


def _remove_trashinfo(trashed: Path) -> None:
    info = trashed.parent.parent / "info" / (trashed.name + ".trashinfo")
    with contextlib.suppress(OSError):  # a stale info entry is harmless: the trash shows nothing for it
        info.unlink()
