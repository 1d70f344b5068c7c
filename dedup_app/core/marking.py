"""Which file of a group to keep and which to mark for removal.

One rule picks the file to keep in every group (highest resolution, largest file, oldest, newest, or a file in a
reference folder); every other member is marked, except files in reference folders, which are never marked, and
except in near-duplicate groups below :data:`SURE_SIMILARITY`, which are left for the user to review.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from dedup_app.core.duplicates import DuplicateGroup, keep_order
from dedup_app.core.scan import ImageRecord

#: Auto-mark rules: name -> (label for people, sort key putting the file to keep first).
RULES: dict[str, tuple[str, Callable[[ImageRecord], tuple[object, ...]]]] = {
    "resolution": ("Keep the highest resolution", keep_order),
    "largest": ("Keep the largest file", lambda r: (-r.size, -r.pixels, r.mtime_ns, r.path)),
    "oldest": ("Keep the oldest", lambda r: (r.mtime_ns, -r.pixels, -r.size, r.path)),
    "newest": ("Keep the newest", lambda r: (-r.mtime_ns, -r.pixels, -r.size, r.path)),
    "reference": ("Keep files in reference folders", keep_order),
}


#: Near-duplicate groups whose lowest similarity is below this are not marked automatically. Between the
#: threshold (0.83) and here the model also joins different photos of one subject (another viewpoint, the next
#: shot of a burst: UKBench viewpoints score 0.88-0.95), so those groups are shown for review, nothing ticked.
#: Resized, recompressed and cropped copies score above it (benchmarks/neardup.py, docs/benchmarks.md).
SURE_SIMILARITY = 0.95


def in_folders(path: str, folders: Sequence[str]) -> bool:
    """Whether ``path`` lies inside one of ``folders`` (compared as absolute, normalised paths)."""
    p = os.path.normcase(os.path.abspath(path))
    for folder in folders:
        f = os.path.join(os.path.normcase(os.path.abspath(folder)), "")
        if p.startswith(f):
            return True
    return False


@dataclass(frozen=True)
class Marks:
    """The outcome of a rule on one group: the file kept, the files marked for removal, and whether the group was
    left unmarked for the user to review (similar, but not surely the same picture)."""

    keep: str
    marked: frozenset[str]
    review: bool = False


def choose_keep(
    members: Sequence[ImageRecord],
    rule: str,
    reference_folders: Sequence[str] = (),
    references: Collection[str] | None = None,
) -> ImageRecord:
    """The member to keep under ``rule``. With the ``reference`` rule, files in reference folders come first.

    ``references`` may give the paths already known to be inside reference folders (saves re-checking them).
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; known: {', '.join(RULES)}")
    key = RULES[rule][1]
    pool = list(members)
    if rule == "reference":
        refs = [m for m in members if _is_ref(m.path, reference_folders, references)]
        pool = refs or pool
    return min(pool, key=key)


def mark_group(
    group: DuplicateGroup,
    rule: str,
    reference_folders: Sequence[str] = (),
    references: Collection[str] | None = None,
    sure: float = 0.0,
) -> Marks:
    """Keep one file by ``rule``; mark every other member that is not in a reference folder.

    A near-duplicate group whose lowest similarity is below ``sure`` gets its keep suggestion but no marks
    (``review`` is set); exact copies are always sure.
    """
    images = [m.image for m in group.members]
    keep = choose_keep(images, rule, reference_folders, references)
    if group.kind != "exact" and group.min_similarity < sure:
        return Marks(keep.path, frozenset(), review=True)
    marked = frozenset(
        r.path
        for r in images
        if r.path != keep.path
        and not _is_ref(r.path, reference_folders, references)
        # a multi-page file (TIFF, GIF, WebP) matched by its first page may hold pages found nowhere else
        and (r.info.frames <= 1 or r.content_hash == keep.content_hash)
    )
    return Marks(keep.path, marked)


def _is_ref(path: str, folders: Sequence[str], known: Collection[str] | None) -> bool:
    return path in known if known is not None else in_folders(path, folders)
