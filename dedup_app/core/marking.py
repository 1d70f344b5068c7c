"""Which file of a group to keep and which to mark for removal.

One rule picks the file to keep in every group (the likeliest original, by default; or the highest resolution,
largest file, oldest, newest, or a file in a reference folder); every other member is marked, except files in
reference folders, which are never marked, multi-page files, and near-duplicates below :data:`SURE_SIMILARITY`, which
are left for the user to review.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np

from dedup_app.core.duplicates import DuplicateGroup, keep_order, similarities_to_members
from dedup_app.core.keep import keep_ranking
from dedup_app.core.scan import ImageRecord

#: Orders the members of a group, the file to keep first (indices into the sequence given).
Ranking = Callable[[Sequence[ImageRecord]], list[int]]


def _by_key(key: Callable[[ImageRecord], tuple[object, ...]]) -> Ranking:
    """A ranking by a sort key of each file alone."""
    return lambda members: sorted(range(len(members)), key=lambda i: key(members[i]))


#: Auto-mark rules: name -> (label for people, ranking of a group's members, the file to keep first). "best" (the
#: default) keeps the likeliest original (:func:`dedup_app.core.keep.keep_ranking`); "reference" keeps a file in a
#: reference folder, the likeliest original among them, or of the group when none is in one.
RULES: dict[str, tuple[str, Ranking]] = {
    "best": ("Keep the original (best quality)", keep_ranking),
    "resolution": ("Keep the highest resolution", _by_key(keep_order)),
    "largest": ("Keep the largest file", _by_key(lambda r: (-r.size, -r.pixels, r.mtime_ns, r.path))),
    "oldest": ("Keep the oldest", _by_key(lambda r: (r.mtime_ns, -r.pixels, -r.size, r.path))),
    "newest": ("Keep the newest", _by_key(lambda r: (-r.mtime_ns, -r.pixels, -r.size, r.path))),
    "reference": ("Keep files in reference folders", keep_ranking),
}

#: The rule of the window (until the user picks another) and of the command line's reports.
DEFAULT_RULE = "best"


#: Near-duplicates less similar than this to their group's representative are not marked automatically. Between
#: the threshold (0.83) and here the model also joins different photos of one subject (another viewpoint, the
#: next shot of a burst: UKBench viewpoints score 0.88-0.95), so those files are left for review, unticked.
#: Most resized, recompressed and cropped copies score above it (benchmarks/neardup.py, docs/benchmarks.md).
SURE_SIMILARITY = 0.95


def review_paths(group: DuplicateGroup, sure: float = SURE_SIMILARITY) -> frozenset[str]:
    """Files of a near-duplicate group less similar than ``sure`` to its representative (byte copies of it
    excepted): perhaps other photos of one subject, to look at before removing. Reports and the command line flag
    them; the window leaves them unticked."""
    if group.kind == "exact":
        return frozenset()
    rep = group.keep.content_hash
    return frozenset(m.image.path for m in group.members[1:] if m.similarity < sure and m.image.content_hash != rep)


def in_folders(path: str, folders: Sequence[str]) -> bool:
    """Whether ``path`` lies inside one of ``folders`` (compared as absolute, normalised paths)."""
    p = os.path.normcase(os.path.abspath(path))
    for folder in folders:
        f = os.path.join(os.path.normcase(os.path.abspath(folder)), "")
        if p.startswith(f):
            return True
    return False


@dataclass(frozen=True, slots=True)
class Marks:
    """The outcome of a rule on one group: the file kept, the files marked for removal, and the files left unmarked
    for the user to review (similar, but not surely the same picture)."""

    keep: str
    marked: frozenset[str]
    unsure: frozenset[str] = frozenset()

    @property
    def review(self) -> bool:
        """Whether some files of the group wait for the user's decision."""
        return bool(self.unsure)


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
    rank = RULES[rule][1]
    pool = list(members)
    if rule == "reference":
        refs = [m for m in members if _is_ref(m.path, reference_folders, references)]
        pool = refs or pool
    return pool[rank(pool)[0]]


def mark_group(
    group: DuplicateGroup,
    rule: str,
    reference_folders: Sequence[str] = (),
    references: Collection[str] | None = None,
    sure: float = 0.0,
) -> Marks:
    """Keep one file by ``rule``; mark every other member that is not in a reference folder.

    In a near-duplicate group, a member less similar than ``sure`` to the kept file is left unmarked, in
    ``unsure`` (a group without stored vectors knows only similarities to its representative: then a member is
    sure when both it and the kept file are that close to the representative). Byte copies are always sure.
    """
    return mark_groups([group], rule, reference_folders, references, sure)[0]


def mark_groups(
    groups: Sequence[DuplicateGroup],
    rule: str,
    reference_folders: Sequence[str] = (),
    references: Collection[str] | None = None,
    sure: float = 0.0,
) -> list[Marks]:
    """:func:`mark_group` of each of ``groups``, the similarities to the kept files worked out for all of them at
    once (:func:`~dedup_app.core.duplicates.similarities_to_members`: a pool thread marking a million files this
    way leaves the window its interpreter lock)."""
    keeps = [_keep_index(group, rule, reference_folders, references) for group in groups]
    to_keep = similarities_to_members(groups, keeps)
    return [_marks(group, k, sims, reference_folders, references, sure)
            for group, k, sims in zip(groups, keeps, to_keep, strict=True)]  # fmt: skip


def _keep_index(group: DuplicateGroup, rule: str, folders: Sequence[str], references: Collection[str] | None) -> int:
    images = [m.image for m in group.members]
    return images.index(choose_keep(images, rule, folders, references))


def _marks(
    group: DuplicateGroup,
    keep_index: int,
    to_keep: np.ndarray,
    reference_folders: Sequence[str],
    references: Collection[str] | None,
    sure: float,
) -> Marks:
    images = [m.image for m in group.members]
    keep = images[keep_index]
    to_rep = group.similarities_to(0) if np.isnan(to_keep).any() else to_keep  # only without stored vectors
    marked: set[str] = set()
    unsure: set[str] = set()
    for k, r in enumerate(images):
        if r.path == keep.path or _is_ref(r.path, reference_folders, references):
            continue
        if r.info.frames > 1 and r.content_hash != keep.content_hash:
            continue  # a multi-page file matched by its first page may hold pages found nowhere else
        close = to_keep[k] >= sure if not np.isnan(to_keep[k]) else min(to_rep[k], to_rep[keep_index]) >= sure
        if group.kind == "exact" or close:
            marked.add(r.path)
        else:
            unsure.add(r.path)
    return Marks(keep.path, frozenset(marked), frozenset(unsure))


def _is_ref(path: str, folders: Sequence[str], known: Collection[str] | None) -> bool:
    return path in known if known is not None else in_folders(path, folders)
