"""Finding image files under the folders the user gave, without tripping over what real disks hold.

Unreadable folders, symlink loops, dangling links, FIFOs and undecodable file names are all things a scan meets
on real collections; they become :class:`FileError` entries (or are skipped, for non-image files) and the walk
goes on. The same file reached twice (hard links, symlinks, overlapping roots) is listed once.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

#: File name extensions (lower case, with the dot) the scanner treats as images.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif",
        ".png", ".apng",
        ".webp",
        ".bmp", ".dib",
        ".tif", ".tiff",
        ".gif",
        ".heic", ".heif", ".hif", ".avif",
        ".ppm", ".pgm", ".pbm", ".pnm",
        ".tga",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class FileEntry:
    """An image file found by the walk, with the ``stat`` facts the cache is keyed by."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class FileError:
    """A path the scan could not use, and why, in words a user understands."""

    path: str
    error: str


def describe_os_error(exc: OSError) -> str:
    """A short reason for an ``OSError``: 'permission denied', 'no such file', ... ."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "no such file or folder (it may have been moved or deleted)"
    if exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def walk_images(
    roots: Iterable[str | os.PathLike[str]],
    extensions: frozenset[str] = IMAGE_EXTENSIONS,
    follow_symlinks: bool = True,
) -> Iterator[FileEntry | FileError]:
    """Yield every image file under ``roots`` (files or folders), and a :class:`FileError` per problem met.

    Folders are visited depth-first in sorted order, so results are stable between runs. Directory symlinks are
    followed when ``follow_symlinks`` is true, but a folder already visited (by ``(device, inode)``) is not entered
    again, which breaks symlink loops. A file already listed under another path is not listed again.
    """
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()

    def file_entry(path: str, st: os.stat_result) -> FileEntry | FileError | None:
        if not stat.S_ISREG(st.st_mode):
            return None  # FIFOs, sockets, devices: never open them
        key = (st.st_dev, st.st_ino)
        if key in seen_files:
            return None
        seen_files.add(key)
        return FileEntry(path, st.st_size, st.st_mtime_ns)

    def walk_dir(top: str) -> Iterator[FileEntry | FileError]:
        stack = [top]
        while stack:
            folder = stack.pop()
            try:
                st = os.stat(folder)
            except OSError as exc:
                yield FileError(folder, f"cannot open folder: {describe_os_error(exc)}")
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen_dirs:
                continue  # a symlink loop or a folder reached twice
            seen_dirs.add(key)
            try:
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                yield FileError(folder, f"cannot read folder: {describe_os_error(exc)}")
                continue
            subdirs: list[str] = []
            for entry in entries:
                try:
                    is_link = entry.is_symlink()
                    if entry.is_dir(follow_symlinks=follow_symlinks):
                        subdirs.append(entry.path)
                        continue
                    if os.path.splitext(entry.name)[1].lower() not in extensions:
                        continue
                    if is_link and not follow_symlinks:
                        continue
                    st_file = entry.stat(follow_symlinks=True)
                except FileNotFoundError:
                    if entry.is_symlink():
                        yield FileError(entry.path, "broken symbolic link")
                    continue
                except OSError as exc:
                    yield FileError(entry.path, f"cannot read file information: {describe_os_error(exc)}")
                    continue
                result = file_entry(entry.path, st_file)
                if result is not None:
                    yield result
            stack.extend(reversed(subdirs))

    for root in roots:
        root_str = os.fspath(root)
        try:
            st_root = os.stat(root_str)
        except OSError as exc:
            yield FileError(root_str, f"cannot open: {describe_os_error(exc)}")
            continue
        if stat.S_ISDIR(st_root.st_mode):
            yield from walk_dir(root_str)
        elif stat.S_ISREG(st_root.st_mode):
            result = file_entry(root_str, st_root)
            if result is not None:
                yield result
        else:
            yield FileError(root_str, "not a regular file or folder")


def display_path(path: str) -> str:
    """``path`` made printable: undecodable bytes shown as ``\\xNN`` escapes."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")
